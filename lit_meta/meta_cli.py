"""LightningCLI over every MetaLearner and LightningDataModule: ``lit-meta fit|validate|test|predict``
(dispatched by :mod:`lit_meta.cli`, and run once per trial by ``lit-meta tune``)."""

from __future__ import annotations

from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_meta._checks import _check_positive_int
from lit_meta._cli_errors import CommandLineError, parser_message, root_cause
from lit_meta._imports import import_subclass
from lit_meta.algorithms.base import MetaLearner


class MetaCLI(LightningCLI):
    """``lit-meta {fit,validate,test,predict} --config CONFIG.yaml`` (the other subcommands: :func:`lit_meta.cli.main`).

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

    def _parse_ckpt_path(self) -> None:
        # LightningCLI rebuilds the model from the checkpoint's hyper-parameters. That is what `test`
        # wants; a `fit` that resumes a checkpoint of another learner than its config names is refused.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand == "fit" and ckpt_path and Path(ckpt_path).is_file():
            written = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
            check_same_learner(self.config.fit.model.class_path, written.get("_class_path"))
        super()._parse_ckpt_path()

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
        if self.subcommand == "fit" and config.get("ckpt_path") == "last" and trainer is not None:
            resume_logger_version(trainer.get("logger"))
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


def check_same_learner(configured: str, written: str | None) -> None:
    """Raise ``CommandLineError`` if a checkpoint written by learner ``written`` (a class path; ``None``:
    not recorded) would resume a run whose config names learner ``configured``."""
    if written is None:
        return
    if import_subclass(configured, object) is not import_subclass(written, object):
        raise CommandLineError(
            f"Expected a checkpoint of {configured} (`model.class_path`) to resume this run, but got one of {written}."
        )


def resume_logger_version(logger: Any) -> None:
    """``fit --ckpt_path last`` continues the same run: a TensorBoard or CSV logger without a version
    takes that of the latest run under its folder holding a ``last*.ckpt`` (where Lightning's
    ``ModelCheckpoint`` looks for it), instead of starting ``version_<n+1>`` with no checkpoint in it."""
    class_path = getattr(logger, "class_path", "") or ""
    if not class_path.endswith(("TensorBoardLogger", "CSVLogger")) or logger.init_args.get("version") is not None:
        return
    root = Path(logger.init_args.get("save_dir") or "lightning_logs") / (logger.init_args.get("name") or "")
    runs = [
        (ckpt.stat().st_mtime, run.name)
        for run in root.glob("version_*")
        for ckpt in run.glob("checkpoints/last*.ckpt")
    ]
    if runs:
        logger.init_args.version = max(runs)[1]


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


def make_cli(args: list[str] | None, callbacks: Sequence[Callback] = (), cli_class: type[MetaCLI] = MetaCLI) -> MetaCLI:
    """The ``lit-meta`` LightningCLI of ``args``, run; errors are raised, not turned into an exit.

    Args:
        args: the command line without the program, e.g. ``["fit", "--config", "a.yaml"]``.
        callbacks: callbacks added to the ``Trainer`` beside the config's (``lit-meta tune`` adds
            its pruning callback this way).
        cli_class: :class:`MetaCLI` or a subclass.
    """
    return cli_class(
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
            # Not parser defaults: LightningCLI adds these to the config's callbacks.
            **({"callbacks": list(callbacks)} if callbacks else {}),
        },
        parser_kwargs={"exit_on_error": False},
        args=args,
        auto_configure_optimizers=False,
    )
