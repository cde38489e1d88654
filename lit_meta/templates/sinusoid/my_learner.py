"""Your own learner: MAML in a few lines, to change into your algorithm.

Train it from this folder: ``lit-meta fit --config my_learner.yaml``. A learner implements one hook,
:meth:`episode` (see ``lit_meta.algorithms.MetaLearner``); the losses, logging, validation, meta-test
and checkpoints come with the base class.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.func import functional_call

from lit_meta import Task
from lit_meta.algorithms import MetaLearner


class MyLearner(MetaLearner):
    """MAML (Finn et al., 2017): a few SGD steps on each task's support set, from initial weights
    meta-learned so that those steps fit the task's queries.

    Args:
        backbone: the network, e.g. ``lit_meta.models.MLP``.
        inner_lr: the learning rate of the steps on the support set.
        inner_steps: steps in meta-training.
        eval_inner_steps: steps in validation and test.
        optimizer: the meta-optimizer of the initial weights.
        lr_scheduler: optional schedule of the meta learning rate, stepped every meta-batch.
    """

    def __init__(
        self,
        backbone: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        eval_inner_steps: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(loss="mse", eval_inner_steps=eval_inner_steps, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.backbone, self.inner_lr, self.inner_steps = backbone, inner_lr, inner_steps

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        steps = (self.inner_steps if training else self.eval_inner_steps) if steps is None else steps
        per_task = []
        for support_x, support_y, query_x in zip(task.support_x, task.support_y, task.query_x):
            weights = dict(self.backbone.named_parameters())
            curve = [functional_call(self.backbone, weights, (query_x,))] if every_step else []
            for _ in range(steps):
                support_loss = self.task_losses(
                    functional_call(self.backbone, weights, (support_x,))[None], support_y[None]
                )
                # The meta-gradient flows through these steps in training (second order): `create_graph`.
                grads = torch.autograd.grad(support_loss.sum(), list(weights.values()), create_graph=training)
                weights = {name: w - self.inner_lr * g for (name, w), g in zip(weights.items(), grads)}
                if every_step:
                    curve.append(functional_call(self.backbone, weights, (query_x,)))
            per_task.append(torch.stack(curve) if every_step else functional_call(self.backbone, weights, (query_x,)))
        # (B, Nq, 1) query predictions, or (steps + 1, B, Nq, 1) after 0..steps steps.
        return torch.stack(per_task, dim=1 if every_step else 0)
