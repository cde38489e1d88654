"""A progress bar that shows the episode shape of the meta-batch being trained on."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor

from lit_meta.algorithms.base import MetaLearner


class MetaProgressBar(TQDMProgressBar):
    """The TQDM progress bar with the meta-batch size and the episode shape next to ``train/loss``.

    Adds ``tasks`` (tasks per meta-batch) and ``episode`` to the bar's metrics, read from the last
    training batch: ``"5w1s"`` (ways, shots per class) for classification, ``"k=10"`` (support points
    per task) for regression.

    Args:
        refresh_rate: update the bar every this many batches (0 disables it).
        leave: keep the finished epoch's bar on screen.
    """

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._num_tasks: int | None = None
        self._support_y: Tensor | None = None
        self._classifier = False
        self._episode: str | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        support_y = getattr(batch, "support_y", None)
        if support_y is None:
            return
        self._num_tasks = int(support_y.shape[0])
        # Described lazily in get_metrics: reading the labels synchronises with the GPU.
        self._support_y = support_y[0]
        self._classifier = (
            pl_module.is_classifier if isinstance(pl_module, MetaLearner) else not support_y.is_floating_point()
        )
        self._episode = None

    def _describe_episode(self) -> str | None:
        if self._episode is None and self._support_y is not None:
            labels = self._support_y
            if self._classifier:
                ways = int(labels.max()) + 1
                self._episode = f"{ways}w{labels.shape[0] // ways}s"
            else:
                self._episode = f"k={labels.shape[0]}"
            self._support_y = None
        return self._episode

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float]:
        items = super().get_metrics(trainer, pl_module)
        episode = self._describe_episode()
        if self._num_tasks is not None and episode is not None:
            items["tasks"] = self._num_tasks
            items["episode"] = episode
        return items
