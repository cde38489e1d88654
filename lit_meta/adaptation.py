"""Rapid fine-tuning: a meta-trained learner adapted to a user's few labelled examples."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_meta.evaluation import EpisodicLearner, evaluation_mode
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_int, check_type


class AdaptedLearner:
    """A learner adapted to one support set; predicts new inputs of the same classes.

    Built by :meth:`MetaLearner.adapt`. Every call adapts afresh from the meta-learned weights (for
    gradient-based learners, ``steps`` inner steps on the support set; for metric-based ones, the
    prototypes or attention of the support set), then predicts the inputs as the query set of that
    task. BatchNorm without running statistics (lit-meta's backbones) normalises a query batch by
    itself, so predict inputs in batches like the training queries, not one at a time.

    Args:
        learner: a meta-trained learner.
        support_x: ``(Ns, *input_shape)`` support inputs.
        support_y: ``(Ns,)`` labels (every class ``0 .. ways-1`` must appear), or ``(Ns, *out)``
            regression targets.
        steps: adaptation steps; ``None`` uses the learner's ``eval_inner_steps``.
    """

    def __init__(
        self, learner: EpisodicLearner, support_x: Tensor, support_y: Tensor, steps: int | None = None
    ) -> None:
        check_type("support_x", support_x, Tensor)
        check_type("support_y", support_y, Tensor)
        if len(support_y) != len(support_x):
            raise ValueError(f"Expected one target per support input ({len(support_x)}), but got {len(support_y)}.")
        if learner.is_classifier:
            if support_y.dim() != 1 or support_y.dtype != torch.long:
                raise ValueError(
                    f"Expected `support_y` to be {len(support_x)} integer labels (one per support input), but got "
                    f"a {support_y.dtype} tensor of shape {tuple(support_y.shape)}."
                )
            classes = support_y.unique().tolist()
            if len(classes) < 2 or classes != list(range(len(classes))):
                raise ValueError(
                    f"Expected support labels 0 .. ways-1 with ways >= 2, each present, but got labels {classes}."
                )
            learner.check_ways("the number of support classes", len(classes))
            self.ways: int | None = len(classes)
        else:
            self.ways = None
        if steps is not None:
            check_positive_int("steps", steps, minimum=0)
        _check_input_channels(learner, support_x)
        self.learner, self.steps = learner, steps
        self.support_x, self.support_y = support_x.to(learner.device), support_y.to(learner.device)

    def predict_proba(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Class probabilities ``(N, ways)`` of inputs ``x`` ``(N, *input_shape)``, in batches of
        ``batch_size`` queries (``None``: all at once). Classification only."""
        if self.ways is None:
            raise ValueError(
                f"Expected a classification learner for predict_proba, but got loss {self.learner.loss!r}; use predict."
            )
        return self._outputs(x, batch_size).softmax(-1)

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Predicted classes ``(N,)`` (classification) or outputs ``(N, *out)`` (regression) of inputs
        ``x`` ``(N, *input_shape)``."""
        outputs = self._outputs(x, batch_size)
        return outputs.argmax(-1) if self.ways is not None else outputs

    def _outputs(self, x: Tensor, batch_size: int | None) -> Tensor:
        check_type("x", x, Tensor)
        _check_input_channels(self.learner, x)
        if x.shape[1:] != self.support_x.shape[1:]:
            raise ValueError(
                f"Expected inputs of shape {tuple(self.support_x.shape[1:])} like the support set, but got "
                f"{tuple(x.shape[1:])}."
            )
        size = len(x) if batch_size is None else batch_size
        check_positive_int("batch_size", size)
        return torch.cat([self._adapted_outputs(x[i : i + size]) for i in range(0, len(x), size)])

    def _adapted_outputs(self, x: Tensor) -> Tensor:
        x = x.to(self.learner.device)
        # The query targets are not used: only their shape matters.
        unknown = self.support_y.new_zeros(1, len(x), *self.support_y.shape[1:])
        task = Task(self.support_x[None], self.support_y[None], x[None], unknown)
        with evaluation_mode(self.learner):
            return self.learner.evaluate_episode(task, steps=self.steps)[0]


def _check_input_channels(learner: nn.Module, x: Tensor) -> None:
    """A clear error for images whose channel count differs from the learner's first convolution."""
    conv = next((m for m in learner.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and (x.dim() != 4 or x.shape[1] != conv.in_channels):
        raise ValueError(
            f"Expected images of shape (N, {conv.in_channels}, H, W) ({conv.in_channels} channel(s), as the model's "
            f"first convolution), but got shape {tuple(x.shape)}."
        )
