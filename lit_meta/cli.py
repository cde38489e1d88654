"""The ``lit-meta`` command: LightningCLI's subcommands (:mod:`lit_meta.meta_cli`), ``adapt``,
``federate``, ``tune``, ``new`` (an example project to copy and own, :mod:`lit_meta.new_cli`) and
``install-learn2learn`` (:mod:`lit_meta.learn2learn_build`).

Nothing heavy is imported before the subcommand is known: ``lit-meta install-learn2learn`` runs where
learn2learn is not installed yet, and a subcommand whose extra is missing says so in one line.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from lit_meta.extras import MissingExtraError, shadowing_note

if TYPE_CHECKING:
    from lit_meta.meta_cli import MetaCLI, make_cli

__all__ = ["MetaCLI", "main", "make_cli", "run"]

#: The subcommands that are not LightningCLI's, and the module whose ``main(argv)`` runs each.
COMMANDS = {
    "adapt": "lit_meta.adapt_cli",
    # Flower is needed to federate and Optuna to tune, not to meta-learn (the `federated`, `tune` extras).
    "federate": "lit_meta.federated.cli",
    "tune": "lit_meta.tuning.cli",
    "new": "lit_meta.new_cli",
    "install-learn2learn": "lit_meta.learn2learn_build",
}


def __getattr__(name: str) -> Any:
    # `from lit_meta.cli import MetaCLI` still works; the import of Lightning waits until then.
    if name in ("MetaCLI", "make_cli"):
        from lit_meta import meta_cli

        return getattr(meta_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-meta`` console script: LightningCLI's subcommands, plus ``adapt``
    (:mod:`lit_meta.adapt_cli`), ``federate`` (:mod:`lit_meta.federated.cli`), ``tune``
    (:mod:`lit_meta.tuning.cli`) and ``new`` (:mod:`lit_meta.new_cli`).

    The working directory goes first on ``sys.path``, as ``python -m`` puts it: a config names the
    user's own modules by class path (``my_learner.MyLearner`` for ``./my_learner.py``).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    run(args)


def run(args: list[str] | None = None) -> MetaCLI | None:
    """:func:`main`, returning the finished CLI (its ``trainer``, ``model``, ``datamodule``);
    ``None`` for ``adapt``, ``federate``, ``tune`` and ``new``. ``args``: the command line without the program
    (``None``: ``sys.argv``). A configuration mistake exits with status 2."""
    argv = sys.argv[1:] if args is None else args
    command = argv[0] if argv else None
    try:
        if command in COMMANDS:
            __import__(COMMANDS[command], fromlist=["main"]).main(argv[1:])
            return None
        from lit_meta.meta_cli import MetaCLI, make_cli
    except MissingExtraError as err:  # learn2learn, Flower or Optuna not installed: what to install
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        _exit_with(command, str(err))
    subcommand = argv[0] if argv[:1] and argv[0] in MetaCLI.subcommands() else None
    from lit_meta._cli_errors import CommandLineError, raised_while_configuring
    from lit_meta.files import cannot_write, write_failure

    try:
        return make_cli(args)
    except CommandLineError as err:
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        _exit_with(subcommand, str(err) + shadowing_note(str(err)))
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
    import torch

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
