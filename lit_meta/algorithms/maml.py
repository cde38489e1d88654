"""Model-Agnostic Meta-Learning on learn2learn's differentiable clones."""

from __future__ import annotations

from typing import Literal

import learn2learn as l2l
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lit_meta._checks import _check_one_of, _check_positive_float, _check_positive_int, _check_type
from lit_meta.algorithms.base import Loss, MetaLearner
from lit_meta.functional import sgd_step, task_losses
from lit_meta.tasks import Task

INNER_LOOPS = ("clone", "batched")


class MAML(MetaLearner):
    """MAML: meta-learn an initialisation that a few gradient steps adapt to a new task.

    Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
    ICML 2017. For each task, ``theta'`` = ``theta`` after ``inner_steps`` SGD steps of size
    ``inner_lr`` on the support loss; the meta-loss is the mean query loss at ``theta'``, and its
    gradient flows through the inner steps (second order) or, with ``first_order``, treats the inner
    gradients as constants (FOMAML).

    Evaluation (validation, test, predict) adapts with ``eval_inner_steps`` steps and never builds a
    second-order graph.

    Args:
        backbone: the network adapted per task; maps ``(N, *input_shape)`` to ``(N, *out)``
            (logits ``(N, ways)`` for classification).
        inner_lr: step size of the inner loop (``alpha`` in the paper).
        inner_steps: inner steps per task during meta-training (>= 1).
        eval_inner_steps: inner steps per task during validation and test.
        first_order: drop the second-order terms of the meta-gradient (FOMAML).
        inner_loop: ``"clone"`` adapts one learn2learn clone per task (the reference, any module);
            ``"batched"`` adapts all tasks of the meta-batch at once with ``torch.func.vmap``, which
            removes the per-task Python overhead (fast for small networks; no BatchNorm running
            statistics).
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).
        optimizer: outer-loop optimizer (Adam with lr 1e-3, as in the paper, by default).
        lr_scheduler: optional schedule of the outer learning rate, stepped every meta-batch.
    """

    def __init__(
        self,
        backbone: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        eval_inner_steps: int = 10,
        first_order: bool = False,
        inner_loop: Literal["clone", "batched"] = "clone",
        loss: Loss = "cross_entropy",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(loss=loss, eval_inner_steps=eval_inner_steps, optimizer=optimizer, lr_scheduler=lr_scheduler)
        _check_type("backbone", backbone, nn.Module)
        _check_positive_float("inner_lr", inner_lr)
        _check_positive_int("inner_steps", inner_steps)
        _check_type("first_order", first_order, bool)
        _check_one_of("inner_loop", inner_loop, INNER_LOOPS)
        if inner_loop == "batched":
            _check_batchable(backbone)
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.inner_loop = inner_loop
        body, adapted = self.split(backbone)
        self.body = body
        self.maml = self.wrap(adapted)

    # ---- what a variant changes (ANIL: which part adapts; Meta-SGD: the learner that adapts it) ----
    def split(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        """``(body, adapted)``: the body is meta-learned but never adapted (MAML: no body)."""
        return nn.Identity(), backbone

    def wrap(self, adapted: nn.Module) -> l2l.algorithms.MAML | l2l.algorithms.MetaSGD:
        """The learn2learn learner whose ``clone()``/``adapt()`` run the inner loop."""
        return l2l.algorithms.MAML(adapted, lr=self.inner_lr, first_order=self.first_order)

    def inner_lrs(self) -> float | dict[str, Tensor]:
        """The inner step size: one number, or one tensor per adapted parameter (Meta-SGD)."""
        return self.inner_lr

    # ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """The meta-learned (unadapted) network: ``(N, *input_shape) -> (N, *out)``."""
        return self.maml(self.body(x))

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        if steps is None:
            steps = self.inner_steps if training else self.eval_inner_steps
        second_order = training and not self.first_order
        adapt = self._episode_batched if self.inner_loop == "batched" else self._episode_clone
        per_step = adapt(task, steps, second_order, every_step)
        return torch.stack(per_step) if every_step else per_step[-1]

    def _episode_clone(self, task: Task, steps: int, second_order: bool, every_step: bool) -> list[Tensor]:
        """One learn2learn clone per task; returns query predictions ``(B, Nq, *out)`` per recorded step."""
        per_task = []
        for support_x, support_y, query_x in zip(task.support_x, task.support_y, task.query_x):
            support_x, query_x = self.body(support_x), self.body(query_x)  # computed once, not per step
            learner = self.maml.clone()
            predictions = []
            for _ in range(steps):
                if every_step:
                    predictions.append(learner(query_x))
                support_loss = task_losses(learner(support_x)[None], support_y[None], self.loss)[0]
                learner.adapt(support_loss, first_order=not second_order)
            predictions.append(learner(query_x))
            per_task.append(predictions)
        return [torch.stack(step) for step in zip(*per_task)]

    def _episode_batched(self, task: Task, steps: int, second_order: bool, every_step: bool) -> list[Tensor]:
        """All tasks at once: ``vmap`` over tasks of ``steps`` functional SGD steps."""
        module = self.maml.module
        params = dict(module.named_parameters())
        buffers = dict(module.named_buffers())
        loss_name, inner_lrs, body = self.loss, self.inner_lrs(), self.body

        def support_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return task_losses(functional_call(module, (p, buffers), (x,))[None], y[None], loss_name)[0]

        def adapt_one(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> list[Tensor]:
            support_x, query_x = body(support_x), body(query_x)
            p, predictions = params, []
            for _ in range(steps):
                if every_step:
                    predictions.append(functional_call(module, (p, buffers), (query_x,)))
                grads = grad(support_loss)(p, support_x, support_y)
                if not second_order:
                    grads = {name: g.detach() for name, g in grads.items()}
                p = sgd_step(p, grads, inner_lrs)
            predictions.append(functional_call(module, (p, buffers), (query_x,)))
            return predictions

        return vmap(adapt_one)(task.support_x, task.support_y, task.query_x)


def _check_batchable(backbone: nn.Module) -> None:
    for name, layer in backbone.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            raise ValueError(
                f"Expected no BatchNorm running statistics with `inner_loop` 'batched' (one set of "
                f"statistics cannot be updated by all tasks at once), but got layer {name!r} with "
                f"track_running_stats=True. Use track_running_stats=False or inner_loop='clone'."
            )
