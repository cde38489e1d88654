"""The ``lit-meta`` command: LightningCLI's subcommands (:mod:`lit_meta.meta_cli`), ``adapt``,
``federate`` and ``tune``."""

from __future__ import annotations

import os
import sys

import torch

from lit_meta._cli_errors import CommandLineError, raised_while_configuring
from lit_meta.files import cannot_write, write_failure
from lit_meta.meta_cli import MetaCLI, make_cli

__all__ = ["MetaCLI", "main", "make_cli", "run"]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-meta`` console script: LightningCLI's subcommands, plus ``adapt``
    (:mod:`lit_meta.adapt_cli`), ``federate`` (:mod:`lit_meta.federated.cli`) and ``tune``
    (:mod:`lit_meta.tuning.cli`)."""
    run(args)


def run(args: list[str] | None = None) -> MetaCLI | None:
    """:func:`main`, returning the finished CLI (its ``trainer``, ``model``, ``datamodule``);
    ``None`` for ``adapt``, ``federate`` and ``tune``. ``args``: the command line without the program
    (``None``: ``sys.argv``). A configuration mistake exits with status 2."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["adapt"]:
        from lit_meta.adapt_cli import main as adapt_main

        adapt_main(argv[1:])
        return None
    if argv[:1] == ["federate"]:
        # Imported here only: Flower is needed to federate, not to meta-learn (the `federated` extra).
        from lit_meta.federated.cli import main as federate_main

        federate_main(argv[1:])
        return None
    if argv[:1] == ["tune"]:
        # Imported here only: Optuna is needed to tune, not to meta-learn (the `tune` extra).
        from lit_meta.tuning.cli import main as tune_main

        tune_main(argv[1:])
        return None
    subcommand = argv[0] if argv[:1] and argv[0] in MetaCLI.subcommands() else None
    try:
        return make_cli(args)
    except CommandLineError as err:
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        _exit_with(subcommand, str(err))
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Data missing, or not fitting the configuration, found in `setup` before the first step.
        if not raised_while_configuring(err) or os.environ.get("LIT_META_TRACEBACK"):
            raise
        _exit_with(subcommand, str(err))
    except OSError as err:
        # A checkpoint or result that could not be written (a full disk, a folder made read-only):
        # the previous file is intact (lit_meta.files), the run stops with one line.
        failure = write_failure(err)
        if failure is None or os.environ.get("LIT_META_TRACEBACK"):
            raise
        _exit_with(subcommand, cannot_write(failure), status=1)
    except RuntimeError as err:
        # Under DDP a process that died (killed, out of memory) breaks the others' next collective.
        if not lost_peer(err) or os.environ.get("LIT_META_TRACEBACK"):
            raise
        rank = os.environ.get("LOCAL_RANK", "0")
        _exit_with(
            subcommand,
            f"Expected every DDP process to keep running, but rank {rank} lost its peers ({_first_line(err)}); "
            "another process stopped (see its log). Resume the run with `--ckpt_path last`.",
            status=1,
        )


# What torch.distributed's backends say when the other end of a collective is gone.
_PEER_LOST = (
    "Connection reset by peer",
    "Connection closed by peer",
    "gloo/transport",
    "NCCL communicator was aborted",
)


def lost_peer(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the group died."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and any(text in str(err) for text in _PEER_LOST)
    )


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200]


def _exit_with(subcommand: str | None, message: str, status: int = 2) -> None:
    """The one line a user needs (set ``LIT_META_TRACEBACK=1`` for the traceback); exit status 2 for
    a configuration mistake."""
    sys.stderr.write(f"lit-meta{' ' + subcommand if subcommand else ''}: error: {message}\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
