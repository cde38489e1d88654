"""LightningCLI over every MetaLearner and LightningDataModule: ``lit-meta fit|validate|test|predict``
(dispatched by :mod:`lit_meta.cli`, and run once per trial by ``lit-meta tune``)."""

from __future__ import annotations

import os
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.model_helpers import is_overridden

from lit_meta._cli_errors import CommandLineError, parser_message, root_cause
from lit_meta._imports import import_subclass
from lit_meta.algorithms.base import MetaLearner
from lit_meta.checkpoints import check_same_learner, config_class_paths, read_checkpoint, trusted_modules
from lit_meta.files import check_writable_folder
from lit_meta.runs import AtomicCheckpointIO, RunIdentity, check_new_run, resume_version, run_fingerprint
from lit_meta.validation import check_positive_int


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

    def __init__(self, *args: Any, trainer_defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # Every checkpoint records the run's fingerprint, set once the config is parsed.
        self.run_identity = RunIdentity()
        defaults = dict(trainer_defaults or {})
        defaults["callbacks"] = [*defaults.get("callbacks", []), self.run_identity]
        super().__init__(*args, trainer_defaults=defaults, **kwargs)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI rebuilds the model from the checkpoint's hyper-parameters, importing every class
        # they name: the checkpoint is read and its classes checked against lit-meta's allow-list
        # first (the user's own config and `--trust` add theirs). A `fit` that resumes a checkpoint of
        # another learner than its config names is refused.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if config is not None:
            self.run_identity.fingerprint = run_fingerprint(
                _as_dict(config.get("model")), _as_dict(config.get("data")), config.get("seed_everything")
            )
        if ckpt_path and Path(ckpt_path).is_file():
            trusted = [*trusted_modules(config.get("trust") or ()), *config_class_paths(_as_dict(config))]
            try:
                written = read_checkpoint(ckpt_path, "`--ckpt_path`", trusted).get("hyper_parameters", {})
            except (ValueError, FileNotFoundError) as err:
                raise CommandLineError(str(err)) from err
            if subcommand == "fit":
                try:
                    check_same_learner(config.model.class_path, written.get("_class_path"))
                except ValueError as err:
                    raise CommandLineError(str(err)) from err
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Checkpoints written atomically, unless the config brings its own checkpoint writer.
        config = self.config_init.get(self.subcommand) if self.subcommand else self.config_init
        plugins = kwargs.get("plugins", (config or {}).get("trainer", {}).get("plugins"))
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

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
            "--trust",
            type=list[str] | None,
            default=None,
            help="modules (prefixes) of your own classes a `--ckpt_path` checkpoint may name, e.g. [my_learners]; "
            "lit-meta's, torch.optim's and torch.nn's are always trusted, and so are the classes your config names",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="`fit` into the version folder of an existing run: empty it first (otherwise refused)",
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
                check_positive_int("num_threads", threads)
            except ValueError as err:
                raise CommandLineError(str(err)) from err
            torch.set_num_threads(threads)
        trainer = config.get("trainer")
        if self.subcommand == "fit" and trainer is not None:
            try:
                _check_log_folder(trainer.get("logger"))
                if config.get("ckpt_path") == "last":
                    resume_version(trainer.get("logger"), self.run_identity.fingerprint)
                # DDP ranks started by rank 0 find its new folder: they neither refuse nor empty it.
                if _first_process():
                    check_new_run(
                        trainer.get("logger"), resuming=bool(config.get("ckpt_path")), overwrite=config.overwrite
                    )
            except ValueError as err:
                raise CommandLineError(str(err)) from err
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


def _first_process() -> bool:
    """Whether this is the process a user started, not a DDP rank Lightning launched from it (those have
    ``LOCAL_RANK``/``NODE_RANK`` > 0 in their environment)."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK"))


def _check_log_folder(logger: Any) -> None:
    """A read-only or impossible log folder is refused before the first step (not at the first checkpoint)."""
    init_args = getattr(logger, "init_args", None) if not isinstance(logger, dict) else logger.get("init_args")
    if init_args is not None and init_args.get("save_dir") is not None:
        check_writable_folder(init_args["save_dir"], "the log folder (`trainer.logger.init_args.save_dir`)")


def _as_dict(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


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
