"""The ``lit-meta`` command: LightningCLI over every MetaLearner and LightningDataModule."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from lit_meta.algorithms.base import MetaLearner


class MetaCLI(LightningCLI):
    """``lit-meta {fit,validate,test,predict} --config CONFIG.yaml``.

    Models are any :class:`~lit_meta.algorithms.MetaLearner` subclass and data any
    ``LightningDataModule`` (``class_path`` in the config). Runs log to TensorBoard under
    ``lightning_logs/`` by default.
    """


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lit-meta`` console script."""
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
