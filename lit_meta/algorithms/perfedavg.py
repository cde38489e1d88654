"""Per-FedAvg: the federated MAML of Fallah, Mokhtari and Ozdaglar, first order or Hessian-free."""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_meta.algorithms.base import Loss
from lit_meta.algorithms.personalised import BackboneLearner, adapt_episode, adapt_task
from lit_meta.functional import (
    gradient_surrogate,
    hessian_vector_product,
    per_fedavg_hf_gradients,
    sgd_step,
    task_losses,
)
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int

VARIANTS = ("fo", "hf")
HESSIAN_BATCHES = ("query_split", "other_task")


class PerFedAvg(BackboneLearner):
    """Per-FedAvg: each client runs MAML's one-step meta-update on its own data; FedAvg averages.

    Fallah, Mokhtari and Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
    Model-Agnostic Meta-Learning Approach", NeurIPS 2020, algorithm 1. One local step on a task of the
    meta-batch, with its support set as the batch ``D`` and its query set as ``D'``:

    - ``w_tmp = w - alpha * grad f(w; D)``;
    - ``"fo"``: ``w <- w - beta * grad f(w_tmp; D')`` (their eq. 8);
    - ``"hf"``: ``w <- w - beta * (I - alpha * H(w; D'')) grad f(w_tmp; D')`` (their eq. 10), with the
      Hessian-vector product computed exactly by double backward
      (:func:`~lit_meta.functional.hessian_vector_product`; the paper's finite difference
      approximates this same product) on a third batch ``D''`` drawn independently of ``D``.

    The meta-batch's ``B`` tasks give ``B`` independent ``(D, D', D'')`` draws whose directions are
    averaged: the same update with a ``B`` times larger stochastic estimate. The step along
    ``-direction`` is an SGD step of size ``beta`` (the learner's optimiser) through Lightning's
    backward (:meth:`training_episode` returns losses whose gradient is the direction), so the
    strategy averages it across processes like any gradient.

    Where this is lit-meta's federated MAML: ``"fo"`` is exactly :class:`~lit_meta.algorithms.MAML`
    with ``first_order=True``, ``inner_steps=1``, ``inner_lr=alpha`` and ``torch.optim.SGD`` at
    ``beta`` as the outer optimiser (configs/federated/synthetic/perfedavg_fo.yaml is that MAML;
    ``tests/lit_meta/algorithms/test_perfedavg.py`` checks the two steps agree). ``"hf"`` is
    second-order MAML (one inner step, outer SGD) except that the Hessian is taken on ``D''`` instead
    of ``D`` (with ``D'' = D`` and ``D'`` the whole query set the two agree; tested too).

    Evaluation (validation, test, predict): ``eval_inner_steps`` SGD steps of size ``alpha`` on the
    support set from ``w`` (the paper's one step, their section 5), then predict the queries.

    Args:
        backbone: the network, ``(N, *input_shape) -> (N, *out)``.
        alpha: the inner (personalisation) step size.
        beta: the outer step size of the local update.
        variant: ``"fo"`` (first order) or ``"hf"`` (Hessian-free, exact Hessian-vector product).
        hessian_batch: where ``"hf"`` finds ``D''`` for task ``i`` of a meta-batch. ``"query_split"``:
            the task's query set is split in two, ``D'`` its even-numbered samples and ``D''`` its
            odd-numbered ones (episodic queries come ordered by class, so with >= 2 queries per class
            both halves hold every class): three disjoint batches of one task, with one labelling, as
            Omniglot's per-task labels need. ``"other_task"``: ``D'`` is the whole query set and ``D''`` the
            support set of task ``i + 1 (mod B)``, independent of ``D`` and ``D'`` where every task of a
            meta-batch comes from one client with the same labels (Synthetic's devices); with ``B = 1``
            it splits the query set. Under DDP each process pairs the tasks of its own share.
        eval_inner_steps: adaptation steps in evaluation.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).

    Shape:
        Support ``(B, Ns, *input_shape)``, query ``(B, Nq, *input_shape)`` -> query predictions
        ``(B, Nq, *out)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        alpha: float = 0.01,
        beta: float = 0.001,
        variant: Literal["fo", "hf"] = "hf",
        hessian_batch: Literal["query_split", "other_task"] = "query_split",
        eval_inner_steps: int = 1,
        loss: Loss = "cross_entropy",
    ) -> None:
        super().__init__(backbone, beta, eval_inner_steps, loss, lr_name="beta")
        check_positive_float("alpha", alpha)
        check_one_of("variant", variant, VARIANTS)
        check_one_of("hessian_batch", hessian_batch, HESSIAN_BATCHES)
        self.alpha, self.beta, self.variant, self.hessian_batch = alpha, beta, variant, hessian_batch

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        # In training, the path from w to the adapted weights stays in the graph with the inner
        # gradients constant: the predictions carry the first-order meta-gradient.
        if steps is None:
            steps = 1 if training else self.eval_inner_steps
        check_positive_int("steps", steps, minimum=0)
        start = dict(self.backbone.named_parameters())
        adapt = partial(adapt_task, self.backbone, start, steps=steps, lr=self.alpha, loss=self.loss, through=training)
        return adapt_episode(task, lambda sx, sy, qx: adapt(sx, sy, qx, every_step=every_step), every_step)

    def split_query(self, task: Task, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Task ``i``'s batches ``D' = (x, y)`` and ``D'' = (x, y)`` (see ``hessian_batch``)."""
        query_x, query_y = task.query_x[i], task.query_y[i]
        if self.variant == "fo":
            return query_x, query_y, query_x[:0], query_y[:0]
        if self.hessian_batch == "other_task" and task.num_tasks > 1:
            j = (i + 1) % task.num_tasks
            return query_x, query_y, task.support_x[j], task.support_y[j]
        if len(query_x) < 2:
            raise ValueError(
                f"Expected >= 2 queries per task to split into D' and D'' (`hessian_batch` "
                f"{self.hessian_batch!r}), but got {len(query_x)}."
            )
        return query_x[0::2], query_y[0::2], query_x[1::2], query_y[1::2]

    def local_direction(self, task: Task, i: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Per-FedAvg's update direction for task ``i`` of the meta-batch (the step is ``-beta`` times it),
        its query predictions ``(Nq, *out)`` at ``w_tmp`` and their training loss on ``D'`` (0-d)."""
        params = dict(self.backbone.named_parameters())

        def run(weights: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.backbone, weights, (x,))

        def leaves(weights: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: p.detach().requires_grad_() for name, p in weights.items()}

        w = leaves(params)
        support_loss = task_losses(run(w, task.support_x[i])[None], task.support_y[i][None], self.loss)[0]
        grads = dict(zip(w, torch.autograd.grad(support_loss, list(w.values()))))
        w_tmp = leaves(sgd_step(w, grads, self.alpha))
        query_x, query_y, hessian_x, hessian_y = self.split_query(task, i)
        predictions = run(w_tmp, task.query_x[i])  # every query, for the logged accuracy
        outer = predictions if len(query_x) == task.query_x.shape[1] else predictions[0::2]
        d_prime = Task(task.support_x[i][None], task.support_y[i][None], query_x[None], query_y[None])
        query_loss = self.training_losses(outer[None], d_prime)[0]
        direction = dict(zip(w_tmp, torch.autograd.grad(query_loss, list(w_tmp.values()))))
        if self.variant == "hf":
            w = leaves(params)
            hessian_loss = task_losses(run(w, hessian_x)[None], hessian_y[None], self.loss)[0]
            products = hessian_vector_product(hessian_loss, w, direction)
            direction = per_fedavg_hf_gradients(direction, products, self.alpha)
        return direction, predictions.detach(), query_loss.detach()

    def training_episode(self, task: Task) -> tuple[Tensor, Tensor]:
        """Query predictions ``(B, Nq, *out)`` at each task's ``w_tmp`` and ``(B,)`` losses whose gradient
        in ``w`` is each task's direction (their value is the loss on ``D'``): their mean's SGD step of
        size ``beta`` is Per-FedAvg's local update, averaged over the tasks."""
        named = dict(self.backbone.named_parameters())
        predictions, surrogates = [], []
        for i in range(task.num_tasks):
            direction, prediction, loss = self.local_direction(task, i)
            surrogates.append(gradient_surrogate(list(named.values()), [direction[n] for n in named], loss))
            predictions.append(prediction)
        return torch.stack(predictions), torch.stack(surrogates)
