"""The ``lit-meta`` command: LightningCLI over every MetaLearner and LightningDataModule."""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_meta._checks import _check_positive_int
from lit_meta._cli_errors import CommandLineError, parser_message, raised_while_configuring, root_cause
from lit_meta._imports import import_subclass
from lit_meta.algorithms.base import MetaLearner


class MetaCLI(LightningCLI):
    """``lit-meta {fit,validate,test,predict} --config CONFIG.yaml`` (and ``lit-meta adapt``, see :func:`main`).

    Models are any :class:`~lit_meta.algorithms.MetaLearner` subclass and data any
    ``LightningDataModule`` (``class_path`` in the config). Runs log to TensorBoard under
    ``lightning_logs/`` by default. ``num_threads`` sets torch's intra-op threads: small networks
    (the sinusoid MLP) train fastest on one thread, as their operations are too small to split.
    ``fit`` ends with Lightning's test loop on the best checkpoint (``--test_after_fit``), where
    ``callbacks.MetaTestEvaluation`` reports the meta-test.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            options = [o for action in _all_actions(parser) for o in action.option_strings]
            raise CommandLineError(parser_message(str(err), options)) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            # A constructor refused a value (`--data.shots 0`): its own message is the one line.
            raise CommandLineError(str(root_cause(err))) from err

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--num_threads", type=int | None, default=None, help="torch intra-op threads (default: torch's choice)"
        )
        parser.add_argument(
            "--test_after_fit",
            type=Literal["best", "last", "none"],
            default="best",
            help="after `fit`, run the test loop (the meta-test) on the best checkpoint, the last weights, or not",
        )

    def after_fit(self) -> None:
        # The meta-test runs in Lightning's own test loop, on the checkpoint model selection chose.
        choice = self.config[self.subcommand].get("test_after_fit", "best")
        if choice == "none" or self.trainer.fast_dev_run or not is_overridden("test_dataloader", self.datamodule):
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        ckpt_path = "best" if choice == "best" and best else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("num_threads")
        if threads is not None:
            try:
                _check_positive_int("num_threads", threads)
            except ValueError as err:
                raise CommandLineError(str(err)) from err
            torch.set_num_threads(threads)
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("enable_progress_bar") is False and trainer.get("callbacks"):
            # `--trainer.enable_progress_bar false` on a config that lists a progress bar (ours do):
            # the flag wins, instead of Lightning's error about the contradiction.
            trainer["callbacks"] = [c for c in trainer["callbacks"] if not _is_progress_bar(c)]


class LogDirConfig(SaveConfigCallback):
    """Saves the run's config into its log folder, and nowhere when there is no logger (Lightning's
    callback would write ``config.yaml`` into the working directory then)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.loggers:
            super().setup(trainer, pl_module, stage)


def _all_actions(parser: Any) -> list[Any]:
    """The actions of ``parser`` and of its subcommands' parsers."""
    actions = list(parser._actions)
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else ():
            actions += sub._actions
    return actions


def _is_progress_bar(callback: object) -> bool:
    class_path = getattr(callback, "class_path", None) or type(callback).__module__ + "." + type(callback).__qualname__
    return import_subclass(class_path, ProgressBar) is not None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-meta`` console script: LightningCLI's subcommands, plus ``adapt``
    (:mod:`lit_meta.adapt_cli`) and ``federate`` (:mod:`lit_meta.federated.cli`)."""
    run(args)


def run(args: list[str] | None = None) -> MetaCLI | None:
    """:func:`main`, returning the finished CLI (its ``trainer``, ``model``, ``datamodule``);
    ``None`` for ``adapt`` and ``federate``. ``args``: the command line without the program (``None``: ``sys.argv``).
    A configuration mistake exits with status 2."""
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
    subcommand = argv[0] if argv[:1] and argv[0] in MetaCLI.subcommands() else None
    try:
        return MetaCLI(
            MetaLearner,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LogDirConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
                },
            },
            parser_kwargs={"exit_on_error": False},
            args=args,
            auto_configure_optimizers=False,
        )
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
