"""Rapid fine-tuning: a meta-trained learner adapted to a user's few labelled examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lit_meta._checks import _check_positive_int, _check_type
from lit_meta.tasks import Task

if TYPE_CHECKING:
    from lit_meta.algorithms.base import MetaLearner


class AdaptedLearner:
    """A learner adapted to one support set; predicts new inputs of the same classes.

    Built by :meth:`MetaLearner.adapt`. Every call adapts afresh from the meta-learned weights (for
    gradient-based learners, ``steps`` inner steps on the support set; for metric-based ones, the
    prototypes or attention of the support set), then predicts the inputs as the query set of that
    task. BatchNorm without running statistics (lit-meta's backbones) normalises a query batch by
    itself, so predict inputs in batches like the training queries, not one at a time.

    Args:
        learner: a meta-trained classification learner.
        support_x: ``(Ns, *input_shape)`` support inputs.
        support_y: ``(Ns,)`` labels; every class ``0 .. ways-1`` must appear.
        steps: adaptation steps; ``None`` uses the learner's ``eval_inner_steps``.
    """

    def __init__(self, learner: MetaLearner, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> None:
        if not learner.is_classifier:
            raise ValueError(f"Expected a classification learner (loss 'cross_entropy') to adapt, but got loss {learner.loss!r}.")
        _check_type("support_x", support_x, Tensor)
        _check_type("support_y", support_y, Tensor)
        if support_y.dim() != 1 or support_y.dtype != torch.long or len(support_y) != len(support_x):
            raise ValueError(
                f"Expected `support_y` to be {len(support_x)} integer labels (one per support input), but got "
                f"a {support_y.dtype} tensor of shape {tuple(support_y.shape)}."
            )
        classes = support_y.unique().tolist()
        if len(classes) < 2 or classes != list(range(len(classes))):
            raise ValueError(f"Expected support labels 0 .. ways-1 with ways >= 2, each present, but got labels {classes}.")
        if steps is not None:
            _check_positive_int("steps", steps, minimum=0)
        _check_input_channels(learner, support_x)
        self.learner, self.steps, self.ways = learner, steps, len(classes)
        self.support_x, self.support_y = support_x.to(learner.device), support_y.to(learner.device)

    def predict_proba(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Class probabilities ``(N, ways)`` of inputs ``x`` ``(N, *input_shape)``, in batches of
        ``batch_size`` queries (``None``: all at once)."""
        _check_type("x", x, Tensor)
        _check_input_channels(self.learner, x)
        if x.shape[1:] != self.support_x.shape[1:]:
            raise ValueError(f"Expected inputs of shape {tuple(self.support_x.shape[1:])} like the support set, but got {tuple(x.shape[1:])}.")
        size = len(x) if batch_size is None else batch_size
        _check_positive_int("batch_size", size)
        return torch.cat([self._probabilities(x[i : i + size]) for i in range(0, len(x), size)])

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Predicted classes ``(N,)`` of inputs ``x`` ``(N, *input_shape)``."""
        return self.predict_proba(x, batch_size).argmax(-1)

    def _probabilities(self, x: Tensor) -> Tensor:
        x = x.to(self.learner.device)
        unknown = torch.zeros(1, len(x), dtype=torch.long, device=x.device)  # query labels are not used
        task = Task(self.support_x[None], self.support_y[None], x[None], unknown)
        was_training = self.learner.training
        self.learner.eval()
        try:
            logits = self.learner.evaluate_episode(task, steps=self.steps)[0]
        finally:
            self.learner.train(was_training)
        return logits.softmax(-1)


def _check_input_channels(learner: nn.Module, x: Tensor) -> None:
    """A clear error for images whose channel count differs from the learner's first convolution."""
    conv = next((m for m in learner.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and (x.dim() != 4 or x.shape[1] != conv.in_channels):
        raise ValueError(
            f"Expected images of shape (N, {conv.in_channels}, H, W) ({conv.in_channels} channel(s), as the model's "
            f"first convolution), but got shape {tuple(x.shape)}."
        )
