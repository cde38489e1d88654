"""FedRep: a shared representation (the body) and a personal head per client."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_meta.algorithms.base import Loss, MetaLearner
from lit_meta.algorithms.metric import split_backbone
from lit_meta.algorithms.personalised import adapt_episode, adapt_task, all_samples
from lit_meta.functional import gradient_surrogate
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int

EVAL_HEADS = ("personal", "new")


class FedRep(MetaLearner):
    """FedRep: clients share the body of the network and keep their own heads; each round a client
    first fits its head to the received body, then trains the body under its head.

    Collins, Hassani, Mokhtari and Shakkottai, "Exploiting Shared Representations for Personalized
    Federated Learning", ICML 2021, algorithm 1. In a round (a client's fit), on the samples of each
    meta-batch (every task's support and query sets together: to a pFL client a task is just data):

    - local steps ``0 .. head_steps - 1`` update the head only, ``h <- h - head_lr * grad_h f(body, h)``,
      the body frozen;
    - the remaining local steps update the body only, ``phi <- phi - lr * grad_phi f(phi, h)``, the head
      frozen.

    The step count restarts with every fit (:meth:`on_fit_start`): each round of ``lit-meta federate``
    is a new fit of ``local_steps`` steps, so ``local_steps`` must exceed ``head_steps`` for the body
    to learn (a warning says when it does not). Federate with ``personal: ["*head*"]`` so that the head
    (``backbone.head.*``) and its flag ``head_trained`` (a float buffer, 1 once the client has trained
    its head) stay in each client's Flower ``Context.state`` and only the body travels (declared by
    :attr:`personal_weights`: a federation that would average them is refused).

    Evaluation (``episode(training=False)``): with the body frozen, a head trained on the support set
    for ``eval_inner_steps`` SGD steps of size ``head_lr``, then predict the queries. The head starts
    from the client's own (``eval_head="personal"``) where it has trained one, else, as always with
    ``eval_head="new"``, from zeros: every class equally likely before the first step (a held-out client
    holds only the initial, random, head).

    Args:
        backbone: a network with a ``features`` body and a linear ``head`` (every model of
            :mod:`lit_meta.models`), ``(N, *input_shape) -> (N, *out)``.
        head_steps: local steps of each fit that train the head (the paper's ``tau_h``, 10 epochs of
            their runs against 1 epoch of the body's).
        lr: SGD step size of the body.
        head_lr: SGD step size of the head, in training and evaluation (``None``: ``lr``).
        eval_inner_steps: head steps on the support set in evaluation.
        eval_head: the head evaluation starts from: ``"personal"`` (the client's trained head, or a new
            one where it has none) or ``"new"`` (a zero head).
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).

    Shape:
        Support ``(B, Ns, *input_shape)``, query ``(B, Nq, *input_shape)`` -> query predictions
        ``(B, Nq, head.out_features)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_steps: int = 5,
        lr: float = 0.01,
        head_lr: float | None = None,
        eval_inner_steps: int = 10,
        eval_head: Literal["personal", "new"] = "personal",
        loss: Loss = "cross_entropy",
    ) -> None:
        check_positive_float("lr", lr)
        super().__init__(loss=loss, eval_inner_steps=eval_inner_steps, optimizer=partial(torch.optim.SGD, lr=lr))
        split_backbone(backbone)  # a `features` body and a linear `head`
        check_positive_int("head_steps", head_steps, minimum=0)
        if head_lr is not None:
            check_positive_float("head_lr", head_lr)
        check_one_of("eval_head", eval_head, EVAL_HEADS)
        self.backbone = backbone
        self.head_steps, self.lr = head_steps, lr
        self.head_lr = lr if head_lr is None else head_lr
        self.eval_head = eval_head
        self.automatic_optimization = False
        self._round_step = 0
        # A float, so that it is one of the weights a client keeps with its head ("*head*" matches it).
        self.register_buffer("head_trained", torch.zeros(()))

    @property
    def max_ways(self) -> int | None:
        return self.backbone.head.out_features if self.is_classifier else None

    @property
    def personal_weights(self) -> tuple[str, ...]:
        """Each client's head and its flag never leave it."""
        return ("backbone.head.*", "head_trained")

    @property
    def body(self) -> nn.Module:
        """The shared representation, ``backbone.features``."""
        return self.backbone.features

    def forward(self, x: Tensor) -> Tensor:
        """The network with this client's head."""
        return self.backbone(x)

    def embed(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._round_step = 0
        max_steps = self.trainer.max_steps
        if 0 <= max_steps <= self.head_steps:
            warnings.warn(
                f"FedRep trains only the head in a fit of {max_steps} steps with `head_steps` {self.head_steps}: "
                f"the body (the shared representation) does not learn. Use more local steps than `head_steps`.",
                stacklevel=1,
            )

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            [
                {"params": list(self.body.parameters()), "lr": self.lr},
                {"params": list(self.backbone.head.parameters()), "lr": self.head_lr},
            ]
        )

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        # FedRep has no meta-gradient: training and evaluation predict alike (training_step trains).
        steps = self.eval_inner_steps if steps is None else steps
        check_positive_int("steps", steps, minimum=0)
        head = self.backbone.head
        start = dict(head.named_parameters())
        if self.eval_head == "new" or not self.head_trained > 0:
            start = {name: torch.zeros_like(p) for name, p in start.items()}
        adapt = partial(adapt_task, head, start, steps=steps, lr=self.head_lr, loss=self.loss)

        def adapt_one(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> list[Tensor]:
            with torch.no_grad():  # the body is frozen: only the head adapts
                support, query = self.embed(support_x), self.embed(query_x)
            return adapt(support, support_y, query, every_step=every_step)

        return adapt_episode(task, adapt_one, every_step)

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        train_head = self._round_step < self.head_steps
        body, head = list(self.body.parameters()), list(self.backbone.head.parameters())
        trained = head if train_head else body
        losses, predictions = [], []
        for i in range(batch.num_tasks):
            data = all_samples(batch, i)
            with torch.no_grad() if train_head else torch.enable_grad():
                features = self.embed(data.query_x[0])
            outputs = self.backbone.head(features)
            losses.append(self.training_losses(outputs[None], data)[0])
            predictions.append(outputs[batch.support_x.shape[1] :].detach())  # on the task's queries
        losses = torch.stack(losses)
        grads = torch.autograd.grad(losses.mean(), trained)
        loss = self.log_training(torch.stack(predictions), batch, losses.detach())
        self.log("train/head_phase", float(train_head), batch_size=batch.num_tasks)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        # The frozen part's gradient is zero, so plain SGD leaves it as it is (zero, not none: under DDP
        # every parameter must take part in the all-reduce).
        everything = body + head
        chosen = {id(p): g for p, g in zip(trained, grads)}
        gradients = [chosen.get(id(p), torch.zeros_like(p)) for p in everything]
        self.manual_backward(gradient_surrogate(everything, gradients, loss))
        optimizer.step()
        if train_head:
            self.head_trained.fill_(1.0)
        self._round_step += 1
        return loss
