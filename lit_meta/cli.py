"""The ``lit-meta`` command: LightningCLI's subcommands (:mod:`lit_meta.meta_cli`), ``adapt``,
``federate`` and ``tune``."""

from __future__ import annotations

import os
import sys

from lit_meta._cli_errors import CommandLineError, raised_while_configuring
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


def _exit_with(subcommand: str | None, message: str) -> None:
    """The one line a user needs (set ``LIT_META_TRACEBACK=1`` for the traceback), exit status 2."""
    sys.stderr.write(f"lit-meta{' ' + subcommand if subcommand else ''}: error: {message}\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
