"""What the personalised federated learning baselines share: a learner of one backbone trained by SGD,
gradient steps on one task's support set from given weights (plain or proximal), and a task's samples
as plain training data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_meta.algorithms.base import Loss, MetaLearner, head_size
from lit_meta.functional import proximal_sgd_step, sgd_step, task_losses
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_type


class BackboneLearner(MetaLearner):
    """A learner of one ``backbone`` (a ``features`` body and a ``head``, as :mod:`lit_meta.models`
    build them) whose weights the server federates, trained by SGD: what Per-FedAvg, Ditto and pFedMe
    share.

    Args:
        backbone: the network, ``(N, *input_shape) -> (N, *out)``.
        lr: the SGD step size of the learner's optimiser.
        eval_inner_steps: adaptation steps in evaluation.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).
        lr_name: the name ``lr`` has in the subclass's arguments (in error messages).
    """

    def __init__(self, backbone: nn.Module, lr: float, eval_inner_steps: int, loss: Loss, lr_name: str = "lr") -> None:
        check_positive_float(lr_name, lr)
        super().__init__(loss=loss, eval_inner_steps=eval_inner_steps, optimizer=partial(torch.optim.SGD, lr=lr))
        check_type("backbone", backbone, nn.Module)
        self.backbone = backbone

    @property
    def max_ways(self) -> int | None:
        return head_size(self.backbone) if self.is_classifier else None

    def forward(self, x: Tensor) -> Tensor:
        """The federated (global, not personalised) network."""
        return self.backbone(x)

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone.features(x).flatten(1)


def adapt_task(
    module: nn.Module,
    start: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    steps: int,
    lr: float,
    loss: str,
    anchor: Mapping[str, Tensor] | None = None,
    lam: float = 0.0,
    every_step: bool = False,
    through: bool = False,
) -> list[Tensor]:
    """Gradient steps on one task's support loss from the weights ``start``, then predict its queries.

    Each step is ``theta <- theta - lr * grad f(theta; support)``, or with an ``anchor`` the proximal
    step ``theta <- theta - lr * (grad f + lam * (theta - anchor))``
    (:func:`~lit_meta.functional.proximal_sgd_step`). ``module`` runs with ``start`` in place of its
    parameters of those names (the others, and its buffers, are its own).

    Args:
        module: the network; maps ``(N, *input_shape)`` to ``(N, *out)``.
        start: the adapted weights' starting values by parameter name of ``module``.
        support_x: ``(Ns, *input_shape)`` with targets ``support_y`` ``(Ns, ...)``.
        query_x: ``(Nq, *input_shape)``.
        steps: gradient steps (>= 0).
        lr: step size.
        loss: ``"cross_entropy"`` or ``"mse"``.
        anchor: the proximal centre by name (``None``: plain steps).
        lam: the proximal weight.
        every_step: also predict before every step.
        through: keep the path from ``start`` to the adapted weights in the graph, with each step's
            gradient a constant (first order), so the predictions carry a first-order meta-gradient;
            otherwise nothing is differentiable and the predictions are detached.

    Returns:
        The query predictions ``(Nq, *out)``: after the last step, or after ``0..steps`` steps with
        ``every_step``.
    """

    def run(weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(module, dict(weights), (x,))

    def fresh(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: p.detach().requires_grad_() for name, p in weights.items()}

    weights = dict(start) if through else fresh(start)
    predictions = []
    for _ in range(steps):
        if every_step:
            predictions.append(run(weights, query_x))
        support_loss = task_losses(run(weights, support_x)[None], support_y[None], loss)[0]
        grads = dict(zip(weights, torch.autograd.grad(support_loss, list(weights.values()))))
        if anchor is None:
            weights = sgd_step(weights, grads, lr)
        else:
            weights = proximal_sgd_step(weights, grads, anchor, lr, lam)
        if not through:
            weights = fresh(weights)
    predictions.append(run(weights, query_x))
    return predictions if through else [p.detach() for p in predictions]


def adapt_episode(task: Task, adapt_one: Callable[[Tensor, Tensor, Tensor], list[Tensor]], every_step: bool) -> Tensor:
    """Run ``adapt_one(support_x, support_y, query_x) -> list of (Nq, *out)`` on each task of the
    meta-batch; returns ``(B, Nq, *out)``, or ``(steps + 1, B, Nq, *out)`` with ``every_step``."""
    per_task = [adapt_one(sx, sy, qx) for sx, sy, qx in zip(task.support_x, task.support_y, task.query_x)]
    curve = torch.stack([torch.stack(step) for step in zip(*per_task)])
    return curve if every_step else curve[-1]


def all_samples(task: Task, i: int) -> Task:
    """Task ``i`` of a meta-batch as plain training data (a task is just data to a pFL client): a
    one-task :class:`Task` whose queries are all its samples, support and query together (Reptile's
    convention, so that :meth:`~lit_meta.algorithms.MetaLearner.training_losses` applies)."""
    x = torch.cat([task.support_x[i], task.query_x[i]])
    y = torch.cat([task.support_y[i], task.query_y[i]])
    return Task(task.support_x[i][None], task.support_y[i][None], x[None], y[None])
