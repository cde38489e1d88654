"""Evaluation: adapt each task with 0..K steps and measure the queries after every step.

The one home of this measurement: the meta-test (``MetaLearner.test_step`` under Lightning's test
loop, reported by ``callbacks.MetaTestEvaluation``), the adaptation curves logged during training
(``callbacks.AdaptationCurve``) and the episode figures (``callbacks.EpisodeGrid``) all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor

from lit_meta.functional import mean_ci95
from lit_meta.tasks import Task


class EpisodicLearner(Protocol):
    """What evaluation and adaptation ask of a learner; every :class:`~lit_meta.algorithms.MetaLearner`
    is one. (Typed by this protocol, this module and :mod:`lit_meta.adaptation` need not import the
    learners' module, which imports them.)"""

    training: bool
    eval_inner_steps: int
    loss: str

    @property
    def device(self) -> torch.device: ...

    @property
    def is_classifier(self) -> bool: ...

    def evaluate_episode(self, task: Task, steps: int | None = None, every_step: bool = False) -> Tensor: ...

    def task_losses(self, predictions: Tensor, targets: Tensor) -> Tensor: ...

    def task_metric(self, predictions: Tensor, targets: Tensor) -> Tensor: ...

    def check_ways(self, what: str, ways: int) -> None: ...

    def modules(self) -> Iterator[torch.nn.Module]: ...

    def eval(self) -> torch.nn.Module: ...

    def train(self, mode: bool = True) -> torch.nn.Module: ...


@contextmanager
def evaluation_mode(learner: torch.nn.Module) -> Iterator[None]:
    """``learner.eval()`` inside the block; its training mode is restored afterwards."""
    was_training = learner.training
    learner.eval()
    try:
        yield
    finally:
        learner.train(was_training)


def outside_inference_mode(task: Task) -> Task:
    """A copy of ``task`` usable outside ``torch.inference_mode`` (evaluation batches are inference
    tensors, which no inner loop can differentiate)."""
    with torch.inference_mode(False):
        return Task(*(t.detach().clone() for t in task))


def task_curves(learner: EpisodicLearner, task: Task, steps: int) -> tuple[Tensor, Tensor]:
    """Query loss and metric of each task of one meta-batch after 0, 1, ..., ``steps`` steps.

    Args:
        learner: any meta-learner, in the mode it should be measured in.
        task: a meta-batch of ``B`` tasks on the learner's device.
        steps: the largest number of adaptation steps ``K``.

    Returns:
        ``(losses, metrics)``, each ``(K + 1, B)``: row ``k`` holds the query loss and the accuracy (or
        MSE) of each task after ``k`` steps.
    """
    curve = learner.evaluate_episode(task, steps=steps, every_step=True)  # (K + 1, B, Nq, ...)
    predictions = curve.flatten(0, 1)
    targets = task.query_y.expand(steps + 1, *task.query_y.shape).flatten(0, 1)
    losses = learner.task_losses(predictions, targets).view(steps + 1, -1)
    metrics = learner.task_metric(predictions, targets).view(steps + 1, -1)
    return losses, metrics


def adaptation_curves(learner: EpisodicLearner, tasks: Iterable[Task], steps: int) -> tuple[Tensor, Tensor]:
    """:func:`task_curves` over several meta-batches (moved to the learner's device), in eval mode.

    Returns:
        ``(losses, metrics)``, each ``(K + 1, T)`` for the ``T`` tasks of all meta-batches.
    """
    losses, metrics = [], []
    with evaluation_mode(learner):
        for task in tasks:
            loss, metric = task_curves(learner, move_data_to_device(task, learner.device), steps)
            losses.append(loss)
            metrics.append(metric)
    return torch.cat(losses, dim=1), torch.cat(metrics, dim=1)


def adaptation_curve(learner: EpisodicLearner, tasks: Iterable[Task], steps: int) -> Tensor:
    """``(K + 1, T)``: the accuracy (or MSE) of each task after 0..K steps; see :func:`adaptation_curves`."""
    return adaptation_curves(learner, tasks, steps)[1]


def summarise(values: Tensor) -> dict[str, dict[str, float]]:
    """``{"k": {"mean": ..., "ci95": ...}}`` per row of ``values`` ``(K + 1, T)``: the mean over tasks
    after ``k`` steps and its 95% confidence interval (:func:`lit_meta.functional.mean_ci95`)."""
    summary = {}
    for k, row in enumerate(values):
        mean, ci95 = mean_ci95(row)
        summary[str(k)] = {"mean": mean, "ci95": ci95}
    return summary


def ways_and_shots(task: Task, classification: bool) -> tuple[int | None, int]:
    """``(ways, shots)`` of a meta-batch; regression tasks have no ways and ``shots`` support points."""
    support = task.support_y.shape[1]
    if not classification:
        return None, support
    ways = task.support_y[0].unique().numel()
    return ways, support // ways
