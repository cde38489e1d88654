"""Model-Agnostic Meta-Learning on learn2learn's differentiable clones."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lit_meta.algorithms.base import Loss, MetaLearner, head_size
from lit_meta.batch_norm import PerStepBatchNorm, affine_outside_batch_norm, convert_per_step_batch_norm, set_step
from lit_meta.functional import gradient_surrogate, multi_step_loss_weights, sgd_step, task_losses
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int, check_type

if TYPE_CHECKING:
    import learn2learn as l2l  # imported where a clone is made: a command's start does not pay for it

INNER_LOOPS = ("auto", "clone", "batched")
_NORMS = (nn.modules.batchnorm._BatchNorm, PerStepBatchNorm)


class MAML(MetaLearner):
    """MAML: meta-learn an initialisation that a few gradient steps adapt to a new task.

    Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
    ICML 2017. For each task, ``theta'`` = ``theta`` after ``inner_steps`` SGD steps of size
    ``inner_lr`` on the support loss; the meta-loss is the mean query loss at ``theta'``, and its
    gradient flows through the inner steps (second order) or, with ``first_order``, treats the inner
    gradients as constants (FOMAML).

    Evaluation (validation, test, predict) adapts with ``eval_inner_steps`` steps and builds no graph
    for a meta-gradient: the inner loop differentiates each support loss with respect to the fast
    weights only (``create_graph=False``), and the body and the query predictions run under
    ``torch.no_grad()``, so that a task leaves nothing but its predictions once it is adapted.

    Args:
        backbone: the network adapted per task; maps ``(N, *input_shape)`` to ``(N, *out)``
            (logits ``(N, ways)`` for classification).
        inner_lr: step size of the inner loop (``alpha`` in the paper).
        inner_steps: inner steps per task during meta-training (>= 1).
        eval_inner_steps: inner steps per task during validation and test.
        first_order: drop the second-order terms of the meta-gradient (FOMAML).
        inner_loop: ``"clone"`` adapts one learn2learn clone per task (the reference, any module);
            ``"batched"`` adapts all tasks of the meta-batch at once with ``torch.func.vmap``, which
            removes the per-task Python overhead (no BatchNorm running statistics, and no BatchNorm
            under mixed precision); ``"auto"`` is batched on CUDA (where it pays) and clone elsewhere
            or where the module cannot be batched.
        backward_per_task: the memory switch. Each task's meta-gradient is taken as soon as its
            query loss is known, and its graph (the second-order inner loop included) is freed
            before the next task adapts, so peak memory holds one task's graph instead of the
            meta-batch's. The meta-gradient is the same (tasks are independent); what it costs is
            the batched inner loop's parallelism (it runs the clone loop), not recomputation.
        learn_inner_lrs: MAML++'s LSLR: learn one inner learning rate per adapted parameter tensor
            (layer weight or bias) and per step, starting at ``inner_lr``; evaluation uses them too
            (a step beyond ``inner_steps`` uses the last step's). They are learned as logarithms, so
            they stay positive and the meta-optimizer changes them relative to their size: learned
            directly, as in the paper, Adam's steps of 1e-3 sent the sinusoid's rates of 0.01 negative
            and the inner loop to NaN within 300 meta-steps.
        multi_step_loss_steps: MAML++'s MSL: for the first this many meta-steps the meta-loss is a
            weighted sum of the query losses after every inner step, the weights annealed towards the
            last step (:func:`~lit_meta.functional.multi_step_loss_weights`); 0: the last step only.
        first_order_steps: MAML++'s derivative-order annealing: the first this many meta-steps are
            first order, the rest second order (unless ``first_order``).
        per_step_batch_norm: MAML++'s BNWB and BNRS: every BatchNorm of the adapted network gets its
            own weights, biases (and running statistics, where the layer tracks them) for each inner
            step (:class:`~lit_meta.batch_norm.PerStepBatchNorm`); they are meta-learned, not
            adapted. With first-order gradients the rows read by support passes only get no
            meta-gradient.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).
        optimizer: outer-loop optimizer (Adam with lr 1e-3, as in the paper, by default).
        lr_scheduler: optional schedule of the outer learning rate, stepped every meta-batch.

    The four MAML++ options (Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019) are
    off by default and combine freely, with either inner loop, ``backward_per_task``, DDP and mixed
    precision; its fifth, a cosine schedule of the meta learning rate, is ``lr_scheduler``.
    """

    per_weight_lrs = False  # Meta-SGD learns a rate per weight, which LSLR would duplicate

    def __init__(
        self,
        backbone: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        eval_inner_steps: int = 10,
        first_order: bool = False,
        inner_loop: Literal["auto", "clone", "batched"] = "auto",
        backward_per_task: bool = False,
        learn_inner_lrs: bool = False,
        multi_step_loss_steps: int = 0,
        first_order_steps: int = 0,
        per_step_batch_norm: bool = False,
        loss: Loss = "cross_entropy",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(loss=loss, eval_inner_steps=eval_inner_steps, optimizer=optimizer, lr_scheduler=lr_scheduler)
        check_type("backbone", backbone, nn.Module)
        check_positive_float("inner_lr", inner_lr)
        check_positive_int("inner_steps", inner_steps)
        check_type("first_order", first_order, bool)
        check_one_of("inner_loop", inner_loop, INNER_LOOPS)
        check_type("backward_per_task", backward_per_task, bool)
        if inner_loop == "batched":
            _check_batchable(backbone)
            if backward_per_task:
                raise ValueError(
                    "Expected `inner_loop` 'clone' or 'auto' with `backward_per_task` (it adapts one task at a "
                    "time), but got 'batched'."
                )
        check_type("learn_inner_lrs", learn_inner_lrs, bool)
        check_positive_int("multi_step_loss_steps", multi_step_loss_steps, minimum=0)
        check_positive_int("first_order_steps", first_order_steps, minimum=0)
        check_type("per_step_batch_norm", per_step_batch_norm, bool)
        if learn_inner_lrs and self.per_weight_lrs:
            raise ValueError(
                f"Expected `learn_inner_lrs` False for {type(self).__name__} (it learns an inner learning rate "
                f"for every weight already), but got True."
            )
        if per_step_batch_norm and self.per_weight_lrs:
            raise ValueError(
                f"Expected `per_step_batch_norm` False for {type(self).__name__} (its per-weight rates would cover "
                f"the BatchNorm rows, which are not adapted), but got True."
            )
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.inner_loop = inner_loop
        self.backward_per_task = backward_per_task
        self.multi_step_loss_steps = multi_step_loss_steps
        self.first_order_steps = first_order_steps
        self.per_step_batch_norm = per_step_batch_norm
        body, adapted = self.split(backbone)
        if per_step_batch_norm and convert_per_step_batch_norm(adapted, inner_steps + 1) == 0:
            raise ValueError(
                f"Expected BatchNorm layers in the part of the backbone that {type(self).__name__} adapts with "
                f"`per_step_batch_norm`, but got none."
            )
        self._batchable = _is_batchable(backbone)
        self._has_batch_norm = any(isinstance(m, _NORMS) for m in backbone.modules())
        self.body = body
        self.maml = self.wrap(adapted)
        # Meta-learned, never adapted: the per-step BatchNorm rows.
        self._frozen = {
            f"{name}.{p}" if name else p
            for name, layer in adapted.named_modules()
            if isinstance(layer, PerStepBatchNorm)
            for p, _ in layer.named_parameters(recurse=False)
        }
        self._adapted_names = [name for name, _ in adapted.named_parameters() if name not in self._frozen]
        # LSLR: the log of one rate per adapted tensor and step (ParameterDict keys may not hold dots).
        self.log_step_lrs = (
            nn.ParameterDict(
                {
                    _key(name): nn.Parameter(torch.full((inner_steps,), math.log(inner_lr)))
                    for name in self._adapted_names
                }
            )
            if learn_inner_lrs
            else None
        )

    # ---- what a variant changes (ANIL: which part adapts; Meta-SGD: the learner that adapts it) ----
    def split(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        """``(body, adapted)``: the body is meta-learned but never adapted (MAML: no body)."""
        return nn.Identity(), backbone

    def wrap(self, adapted: nn.Module) -> l2l.algorithms.MAML | l2l.algorithms.MetaSGD:
        """The learn2learn learner whose ``clone()``/``adapt()`` run the inner loop."""
        import learn2learn as l2l

        return l2l.algorithms.MAML(adapted, lr=self.inner_lr, first_order=self.first_order)

    def inner_lrs(self, step: int) -> float | dict[str, Tensor]:
        """The step size of inner step ``step`` (0-based): one number, or a tensor per adapted parameter
        name (LSLR: a scalar; Meta-SGD: shaped like the parameter)."""
        if self.log_step_lrs is None:
            return self.inner_lr
        row = min(step, self.inner_steps - 1)
        return {name: self.log_step_lrs[_key(name)][row].exp() for name in self._adapted_names}

    # ---------------------------------------------------------------------------------------------
    @property
    def max_ways(self) -> int | None:
        return head_size(self.maml) if self.is_classifier else None

    def forward(self, x: Tensor) -> Tensor:
        """The meta-learned (unadapted) network: ``(N, *input_shape) -> (N, *out)``."""
        self._set_step(self.maml, 0)
        return self.maml(self.body(x))

    def embed(self, x: Tensor) -> Tensor:
        # MAML's adapted backbone reads its `features`; ANIL's body is the features and adapts the head only.
        self._set_step(self.maml, 0)
        if not isinstance(self.body, nn.Identity):
            return self.body(x).flatten(1)
        features = getattr(self.maml.module, "features", None)
        if not isinstance(features, nn.Module):
            raise NotImplementedError(
                f"{type(self).__name__} embeds with its backbone's `features` module, but "
                f"{type(self.maml.module).__name__} has none."
            )
        return features(x).flatten(1)

    def resolved_inner_loop(self) -> str:
        """``"clone"`` or ``"batched"``: what ``inner_loop`` means on the learner's current device."""
        autocast_norm = self._has_batch_norm and torch.is_autocast_enabled(self.device.type)
        if self.inner_loop == "auto":
            batched = (
                self.device.type == "cuda" and self._batchable and not self.backward_per_task and not autocast_norm
            )
            return "batched" if batched else "clone"
        if self.inner_loop == "batched" and autocast_norm:
            # torch.func's BatchNorm rules fail on the mixed dtypes of autocast (torch 2.14, seen on CPU bf16).
            raise ValueError(
                "Expected no BatchNorm layer with `inner_loop` 'batched' under mixed precision (torch.func cannot "
                "batch BatchNorm under autocast), but the backbone has one. Use inner_loop='clone' or 'auto'."
            )
        return self.inner_loop

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        if steps is None:
            steps = self.inner_steps if training else self.eval_inner_steps
        # Derivative-order annealing: first order for the first `first_order_steps` meta-steps.
        second_order = training and not self.first_order and self.global_step >= self.first_order_steps
        adapt = self._episode_batched if self.resolved_inner_loop() == "batched" else self._episode_clone
        per_step = adapt(task, steps, second_order, every_step, training)
        return torch.stack(per_step) if every_step else per_step[-1]

    def training_episode(self, task: Task) -> tuple[Tensor, Tensor]:
        # While the multi-step loss's schedule runs, the objective weighs the queries after every step.
        if self.multi_step_loss_steps == 0 or self.global_step >= self.multi_step_loss_steps or self.inner_steps == 1:
            return super().training_episode(task)
        weights = multi_step_loss_weights(self.inner_steps, self.global_step, self.multi_step_loss_steps)
        per_step = self.episode(task, training=True, every_step=True)[1:]  # after inner steps 1..S
        losses = [w * self.training_losses(p, task) for w, p in zip(weights.tolist(), per_step) if w > 0]
        return per_step[-1], torch.stack(losses).sum(0)

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        if not self.backward_per_task:
            return super().training_step(batch, batch_idx)
        # All that the optimizer steps: this learner's parameters, and those of a module training it
        # as a part (MetaDistillation's feature projection).
        owner = getattr(self._trainer, "lightning_module", None)
        params = [p for p in (self if owner is None else owner).parameters() if p.requires_grad]
        meta_grads: list[Tensor | None] = [None] * len(params)
        scale, predictions, losses = self._loss_scale(), [], []
        for i in range(batch.num_tasks):
            task = Task(*(t[i : i + 1] for t in batch))
            prediction, task_loss = self.training_episode(task)
            losses.append(task_loss[0])
            # This task's share of the mean query loss, scaled like the outer loss under 16-mixed.
            grads = torch.autograd.grad(losses[-1] * (scale / batch.num_tasks), params, allow_unused=True)
            for j, g in enumerate(grads):
                if g is not None:
                    meta_grads[j] = g / scale if meta_grads[j] is None else meta_grads[j] + g / scale
            predictions.append(prediction.detach())
            losses[-1] = losses[-1].detach()  # this task's graph is freed
        # Lightning's backward of the surrogate puts the meta-gradient into .grad, through the
        # strategy's all-reduce and the precision plugin's scaling like any other loss.
        return gradient_surrogate(
            params, meta_grads, self.log_training(torch.cat(predictions), batch, torch.stack(losses))
        )

    def _episode_clone(
        self, task: Task, steps: int, second_order: bool, every_step: bool, training: bool
    ) -> list[Tensor]:
        """One learn2learn clone per task; returns query predictions ``(B, Nq, *out)`` per recorded step.

        At evaluation (not ``training``) only the support losses have a graph, each freed by its inner
        step: the body and the query predictions run without one, so that one task's activations at a
        time are held, not those of every query prediction of the meta-batch.
        """
        no_graph = nullcontext if training else torch.no_grad

        def adapt_task(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> tuple[Tensor, ...]:
            with no_graph():  # the body is meta-learned, not adapted: computed once, not per step
                support_x, query_x = self.body(support_x), self.body(query_x)
            learner = self.maml.clone()
            predictions = []
            for step in range(steps):
                self._set_step(learner, step)
                if every_step:
                    with no_graph():
                        predictions.append(learner(query_x))
                support_loss = task_losses(learner(support_x)[None], support_y[None], self.loss)[0]
                self._inner_update(learner, support_loss, second_order, step)
            self._set_step(learner, steps)
            with no_graph():
                predictions.append(learner(query_x))
            return tuple(predictions)

        per_task = [adapt_task(*inputs) for inputs in zip(task.support_x, task.support_y, task.query_x)]
        return [torch.stack(step) for step in zip(*per_task)]

    def _inner_update(self, learner: nn.Module, loss: Tensor, second_order: bool, step: int) -> None:
        """One inner step of a learn2learn clone: ``theta <- theta - lr * grad`` on the adapted parameters.

        The step size is :meth:`inner_lrs` of ``step``; per-step BatchNorm rows are not adapted. Under
        float16 autocast, small inner gradients underflow in the backward pass just as outer ones do:
        the support loss is scaled by the precision plugin's current loss scale and the gradients
        unscaled before the step (learn2learn's ``adapt`` has no such option, nor per-tensor rates).
        """
        scale, lrs = self._loss_scale(), self.inner_lrs(step)
        named = dict(learner.module.named_parameters())
        params = [named[name] for name in self._adapted_names]
        grads = torch.autograd.grad(loss * scale, params, retain_graph=second_order, create_graph=second_order)
        steps = {
            name: (g / scale) * (lrs if isinstance(lrs, (int, float)) else lrs[name])
            for name, g in zip(self._adapted_names, grads)
        }
        # learn2learn's differentiable update, here with the step already scaled (rate 1).
        from learn2learn.algorithms.maml import maml_update

        learner.module = maml_update(learner.module, 1.0, [steps.get(n) for n in named])

    def _set_step(self, module: nn.Module, step: int) -> None:
        if self.per_step_batch_norm:
            set_step(module, step)

    def _loss_scale(self) -> float:
        """The float16 loss scale of the trainer's precision plugin; 1 without one (32-bit, bf16)."""
        trainer = self._trainer
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def _episode_batched(
        self, task: Task, steps: int, second_order: bool, every_step: bool, training: bool
    ) -> list[Tensor]:
        """All tasks at once: ``vmap`` over tasks of ``steps`` functional SGD steps.

        At evaluation (not ``training``) it runs under ``torch.no_grad()``: no autograd graph outside the
        inner loop, whose ``torch.func.grad`` ignores an outer ``no_grad`` (as torch.func documents).
        """
        module = self.maml.module
        named = dict(module.named_parameters())
        params = {name: named[name] for name in self._adapted_names}
        fixed = {name: p for name, p in named.items() if name in self._frozen}
        buffers = dict(module.named_buffers())
        loss_name, body, scale = self.loss, self.body, self._loss_scale()

        def run(p: dict[str, Tensor], x: Tensor, step: int) -> Tensor:
            self._set_step(module, step)
            return functional_call(module, ({**p, **fixed}, buffers), (x,))

        def support_loss(p: dict[str, Tensor], x: Tensor, y: Tensor, step: int) -> Tensor:
            # Scaled like the outer loss under float16 autocast (see _inner_update); unscaled below.
            return scale * task_losses(run(p, x, step)[None], y[None], loss_name)[0]

        def adapt_one(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> list[Tensor]:
            support_x, query_x = body(support_x), body(query_x)
            p, predictions = params, []
            for step in range(steps):
                if every_step:
                    predictions.append(run(p, query_x, step))
                grads = grad(support_loss)(p, support_x, support_y, step)
                if scale != 1.0:
                    grads = {name: g / scale for name, g in grads.items()}
                if not second_order:
                    grads = {name: g.detach() for name, g in grads.items()}
                p = sgd_step(p, grads, self.inner_lrs(step))
            predictions.append(run(p, query_x, steps))
            return predictions

        try:
            with affine_outside_batch_norm(module), nullcontext() if training else torch.no_grad():
                return vmap(adapt_one)(task.support_x, task.support_y, task.query_x)
        finally:
            self._set_step(module, 0)


def _key(name: str) -> str:
    return name.replace(".", "-")


def _is_batchable(backbone: nn.Module) -> bool:
    try:
        _check_batchable(backbone)
    except ValueError:
        return False
    return True


def _check_batchable(backbone: nn.Module) -> None:
    for name, layer in backbone.named_modules():
        if isinstance(layer, _NORMS) and layer.track_running_stats:
            raise ValueError(
                f"Expected no BatchNorm running statistics with `inner_loop` 'batched' (one set of "
                f"statistics cannot be updated by all tasks at once), but got layer {name!r} with "
                f"track_running_stats=True. Use track_running_stats=False or inner_loop='clone'."
            )
