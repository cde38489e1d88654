"""A figure of one validation episode, adapted, logged to TensorBoard during meta-training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks._logging import add_figure, require_meta_learner, tensorboard_loggers
from callbacks.plotting import plot_episode_predictions
from lit_meta.algorithms.base import MetaLearner
from lit_meta.evaluation import evaluation_mode, outside_inference_mode
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_int, check_type

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_episode(learner: MetaLearner, task: Task, max_images: int = 25) -> Figure:
    """Draw the first task of ``task`` before and after adaptation.

    The learner adapts with its ``eval_inner_steps`` (in eval mode; its mode is restored). What is drawn
    depends on the data:

    * classification, image inputs ``(B, N, C, H, W)``: the support images titled by label, then the
      query images titled ``"pred P / true T"`` (green: correct, red: wrong); each image is min-max
      rescaled, 1 channel in gray, 3 in RGB (other counts: the first channel);
    * classification, other inputs: a scatter of the first two input features, support as large stars
      coloured by label, queries coloured by predicted class with a red edge when wrong;
    * regression, 1-D inputs ``(B, N, 1)``: the support points, the queries' true targets as a line
      sorted by ``x``, and the predictions before adaptation (0 steps) and after;
    * regression, other inputs: predicted against true query targets, with the identity line.

    Args:
        learner: any meta-learner.
        task: a meta-batch; only its first task is drawn.
        max_images: at most this many support and this many query images in an image grid.

    Returns:
        A :class:`matplotlib.figure.Figure` (not registered with ``pyplot``; nothing to close).
    """
    check_type("learner", learner, MetaLearner)
    check_positive_int("max_images", max_images)
    steps = learner.eval_inner_steps
    first = outside_inference_mode(Task(*(t[:1] for t in task)))
    with torch.inference_mode(False), evaluation_mode(learner):
        first = move_data_to_device(first, learner.device)
        curve = learner.evaluate_episode(first, steps=steps, every_step=True)  # (steps + 1, 1, Nq, ...)
    before, after = curve[0, 0].float().cpu(), curve[-1, 0].float().cpu()
    one = Task(*(t[0].cpu() for t in first))
    return plot_episode_predictions(one, before, after, steps, learner.is_classifier, max_images)


class EpisodeGrid(Callback):
    """Log a figure of one validation episode, adapted, every ``every_n_epochs`` validation runs.

    The episode is the first task of the first validation batch (the sanity check excluded); the figure
    is :func:`plot_episode`'s, logged as ``episode`` on every
    :class:`~lightning.pytorch.loggers.TensorBoardLogger` at ``trainer.global_step`` (nothing is drawn
    without one). Under DDP only global rank 0 draws, from its own first batch.

    Args:
        every_n_epochs: draw every this many validation runs.
        max_images: at most this many support and this many query images in an image grid.
    """

    def __init__(self, every_n_epochs: int = 1, max_images: int = 25) -> None:
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("max_images", max_images)
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self._validations = 0
        self._task: Task | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, max_images=self.max_images)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking and batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero:
            self._task = Task(*(t[:1] for t in Task(*batch)))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        task, self._task = self._task, None
        if task is None or self._validations % self.every_n_epochs or not tensorboard_loggers(trainer):
            return
        learner = require_meta_learner(pl_module, "EpisodeGrid")
        add_figure(trainer, "episode", plot_episode(learner, task, self.max_images))

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = int(state_dict.get("validations", 0))
