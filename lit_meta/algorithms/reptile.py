"""Reptile: move the initialisation towards the weights each task's fine-tuning reaches."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_meta.algorithms.base import Loss, MetaLearner, head_size
from lit_meta.functional import gradient_surrogate, reptile_displacement, sgd_step, task_losses
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_positive_int, check_type


def annealed(epsilon: float, step: int, total_steps: int) -> float:
    """Outer step size decayed linearly from ``epsilon`` at step 0 to 0 at ``total_steps`` (Nichol et al., 2018)."""
    return epsilon * max(0.0, 1.0 - step / total_steps)


class Reptile(MetaLearner):
    """Reptile: fine-tune a copy of the weights on each task, then step the weights towards the copies.

    Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", arXiv 2018 (algorithm 2).
    For each task of the meta-batch, ``phi_i`` = the weights after ``inner_steps`` SGD steps of size
    ``inner_lr`` on minibatches of its samples (support and query together: in training, a task is
    just data);
    then ``theta <- theta + epsilon * mean_i(phi_i - theta)``. No gradient flows through the inner
    loop. The outer step runs as an SGD step of size ``epsilon`` along the pseudo-gradient
    ``theta - mean_i(phi_i)`` (manual optimisation), which is the same update.

    Evaluation fine-tunes on the support set for ``eval_inner_steps`` steps and predicts the queries.

    Args:
        backbone: the network fine-tuned per task, ``(N, *input_shape) -> (N, *out)``.
        inner_lr: SGD step size of the inner loop.
        inner_steps: inner steps per task in meta-training.
        eval_inner_steps: fine-tuning steps in validation, test and predict.
        inner_batch_size: samples per inner step in meta-training, taken in a random order from the
            task (the paper's minibatches: with ``None``, every step sees all the task's samples, and
            Reptile's update loses the between-minibatch gradient terms that make it generalise,
            Nichol et al., section 5).
        epsilon: outer step size (1 moves the weights onto the mean of the fine-tuned ones).
        anneal: decay ``epsilon`` linearly to 0 over the run (``trainer.estimated_stepping_batches``),
            as in the paper.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).

    Shape:
        Support ``(B, Ns, *input_shape)``, query ``(B, Nq, *input_shape)`` -> query predictions
        ``(B, Nq, *out)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: int = 10,
        inner_batch_size: int | None = None,
        epsilon: float = 1.0,
        anneal: bool = True,
        loss: Loss = "cross_entropy",
    ) -> None:
        check_positive_float("epsilon", epsilon)
        super().__init__(loss=loss, eval_inner_steps=eval_inner_steps, optimizer=partial(torch.optim.SGD, lr=epsilon))
        check_type("backbone", backbone, nn.Module)
        check_positive_float("inner_lr", inner_lr)
        check_positive_int("inner_steps", inner_steps)
        if inner_batch_size is not None:
            check_positive_int("inner_batch_size", inner_batch_size)
        check_type("anneal", anneal, bool)
        self.backbone = backbone
        self.inner_lr, self.inner_steps, self.inner_batch_size = inner_lr, inner_steps, inner_batch_size
        self.epsilon, self.anneal = epsilon, anneal
        self.automatic_optimization = False

    @property
    def max_ways(self) -> int | None:
        return head_size(self.backbone) if self.is_classifier else None

    def forward(self, x: Tensor) -> Tensor:
        """The meta-learned (not fine-tuned) network."""
        return self.backbone(x)

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone.features(x).flatten(1)

    def fine_tune(
        self,
        x: Tensor,
        y: Tensor,
        steps: int,
        query_x: Tensor | None = None,
        every_step: bool = False,
        batch_size: int | None = None,
        support: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[dict[str, Tensor], list[Tensor]]:
        """SGD on one task's samples ``x (N, ...)``, ``y (N, ...)`` from the current weights.

        Args:
            x: the inputs to fit, with their targets ``y``.
            steps: SGD steps.
            query_x: inputs to predict after fine-tuning (and before every step with ``every_step``).
            every_step: record the predictions on ``query_x`` before every step too.
            batch_size: samples per step, drawn in a fresh random order, one pass after another
                (``None``: all samples every step).
            support: in meta-training, the task's support set ``(Ns, ...)``, ``(Ns, ...)``: each step
                then minimises :meth:`training_losses` of the step's samples as that task's queries
                (the plain loss, or a distillation objective). ``None``: the plain loss.

        Returns:
            The fine-tuned weights by name (detached), and the predictions on ``query_x``: the final
            one, or ``steps + 1`` with ``every_step``.
        """
        weights = {name: p.detach().requires_grad_() for name, p in self.backbone.named_parameters()}
        if batch_size is not None:  # enough random passes over the samples for all the steps
            passes = math.ceil(steps * batch_size / len(x))
            order = torch.cat([torch.randperm(len(x), device=x.device) for _ in range(passes)])
        predictions = []
        for step in range(steps):
            if every_step and query_x is not None:
                predictions.append(functional_call(self.backbone, weights, (query_x,)).detach())
            batch = slice(None) if batch_size is None else order[step * batch_size : (step + 1) * batch_size]
            outputs = functional_call(self.backbone, weights, (x[batch],))
            if support is None:
                loss = task_losses(outputs[None], y[batch][None], self.loss)[0]
            else:
                step_task = Task(support[0][None], support[1][None], x[batch][None], y[batch][None])
                loss = self.training_losses(outputs[None], step_task)[0]
            grads = dict(zip(weights, torch.autograd.grad(loss, list(weights.values()))))
            weights = {name: p.detach().requires_grad_() for name, p in sgd_step(weights, grads, self.inner_lr).items()}
        if query_x is not None:
            predictions.append(functional_call(self.backbone, weights, (query_x,)).detach())
        return {name: p.detach() for name, p in weights.items()}, predictions

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        # The fine-tuned predictions carry no meta-gradient: Reptile's outer step is not a backward pass.
        if steps is None:
            steps = self.inner_steps if training else self.eval_inner_steps
        per_task = [
            self.fine_tune(sx, sy, steps, qx, every_step)[1]
            for sx, sy, qx in zip(task.support_x, task.support_y, task.query_x)
        ]
        curve = torch.stack([torch.stack(step) for step in zip(*per_task)])  # (steps + 1 or 1, B, Nq, *out)
        return curve if every_step else curve[-1]

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        adapted, predictions = [], []
        for sx, sy, qx, qy in zip(*batch):
            x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
            weights, (prediction,) = self.fine_tune(
                x, y, self.inner_steps, query_x=qx, batch_size=self.inner_batch_size, support=(sx, sy)
            )
            adapted.append(weights)
            predictions.append(prediction)
        optimizer = self.optimizers()
        epsilon = self.epsilon
        if self.anneal:
            epsilon = annealed(self.epsilon, self.global_step, self.trainer.estimated_stepping_batches)
        for group in optimizer.param_groups:
            group["lr"] = epsilon
        loss = self.log_training(torch.stack(predictions), batch)
        # An SGD step of size epsilon along -mean_i(phi_i - theta) is Reptile's update; going through
        # backward lets Lightning's strategy average it across processes and its precision plugin
        # scale and unscale it.
        named = list(self.backbone.named_parameters())
        pseudo_grads = [-reptile_displacement(w.detach(), [phi[name] for phi in adapted]) for name, w in named]
        optimizer.zero_grad()
        self.manual_backward(gradient_surrogate([w for _, w in named], pseudo_grads, loss))
        optimizer.step()
        self.log("train/epsilon", epsilon, batch_size=batch.num_tasks)
        return loss
