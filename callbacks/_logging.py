"""What the callbacks share: the TensorBoard loggers of a trainer, and the learner check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_meta.algorithms.base import MetaLearner

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def add_figure(trainer: Trainer, tag: str, figure: Figure) -> None:
    for logger in tensorboard_loggers(trainer):
        logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)


def require_meta_learner(pl_module: LightningModule, owner: str) -> MetaLearner:
    if not isinstance(pl_module, MetaLearner):
        raise TypeError(f"Expected a lit_meta MetaLearner for {owner}, but got {type(pl_module).__name__}.")
    return pl_module
