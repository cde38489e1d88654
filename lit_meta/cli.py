"""The ``lit-meta`` command: LightningCLI over every MetaLearner and LightningDataModule."""

from __future__ import annotations

import importlib
import sys

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_meta._checks import _check_positive_int
from lit_meta.algorithms.base import MetaLearner


class MetaCLI(LightningCLI):
    """``lit-meta {fit,validate,test,predict} --config CONFIG.yaml`` (and ``lit-meta adapt``, see :func:`main`).

    Models are any :class:`~lit_meta.algorithms.MetaLearner` subclass and data any
    ``LightningDataModule`` (``class_path`` in the config). Runs log to TensorBoard under
    ``lightning_logs/`` by default. ``num_threads`` sets torch's intra-op threads: small networks
    (the sinusoid MLP) train fastest on one thread, as their operations are too small to split.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--num_threads", type=int | None, default=None,
                            help="torch intra-op threads (default: torch's choice)")  # fmt: skip

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("num_threads")
        if threads is not None:
            _check_positive_int("num_threads", threads)
            torch.set_num_threads(threads)
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("enable_progress_bar") is False and trainer.get("callbacks"):
            # `--trainer.enable_progress_bar false` on a config that lists a progress bar (ours do):
            # the flag wins, instead of Lightning's error about the contradiction.
            trainer["callbacks"] = [c for c in trainer["callbacks"] if not _is_progress_bar(c)]


def _is_progress_bar(callback: object) -> bool:
    class_path = getattr(callback, "class_path", None) or type(callback).__module__ + "." + type(callback).__qualname__
    return import_subclass(class_path, ProgressBar) is not None


def import_subclass(class_path: object, base: type) -> type | None:
    """The class named ``"package.module.Name"`` if it is a subclass of ``base``; ``None`` otherwise
    (not a class path, not importable, or another class)."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) and issubclass(found, base) else None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-meta`` console script: LightningCLI's subcommands, plus ``adapt``
    (:mod:`lit_meta.adapt_cli`)."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["adapt"]:
        from lit_meta.adapt_cli import main as adapt_main

        adapt_main(argv[1:])
        return
    MetaCLI(
        MetaLearner,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
            },
        },
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
