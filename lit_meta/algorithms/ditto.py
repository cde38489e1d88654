"""Ditto: a global model trained as FedAvg trains it, and a personal model kept near it."""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lit_meta.algorithms.base import Loss
from lit_meta.algorithms.personalised import BackboneLearner, adapt_episode, adapt_task, all_samples
from lit_meta.functional import gradient_surrogate, proximal_gradients
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_positive_int


class PersonalModel(nn.Module):
    """A client's personal network and whether the client has trained it yet.

    Args:
        network: the personal network (Ditto's ``v_k``), shaped like the global one.

    Attributes:
        trained: a float buffer, 0 until the client's first local training, then 1. A float, so that
            it is one of the learner's weights (``lit_meta.federated.records.learner_arrays`` keeps
            floating-point entries) and stays on the client with the network it describes.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("trained", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class Ditto(BackboneLearner):
    """Ditto: each client trains the global model with FedAvg's local SGD and, beside it, a personal
    model regularised towards the global one.

    Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through Personalization",
    ICML 2021, algorithm 1. Every local step, on the samples of the meta-batch (each task's support and
    query sets together: to a pFL client a task is just data):

    - the global copy ``w <- w - lr * grad f_k(w)`` (FedAvg's local solver);
    - the personal model ``v <- v - personal_lr * (grad f_k(v) + lam * (v - w_t))``, where ``w_t`` is
      the global model the round started from (:meth:`on_fit_start` keeps a copy;
      :func:`~lit_meta.functional.proximal_gradients`).

    Only ``w`` may leave the client: federate with ``personal: ["personal_model.*"]`` so that ``v``
    (``personal_model.network.*``) and its flag ``personal_model.trained`` stay in each client's
    Flower ``Context.state`` between rounds (without the pattern FedAvg would average the personal
    models too, which is not Ditto: :attr:`personal_weights` declares them, and a federation that would
    average them is refused). A client's first training starts ``v`` from the global model it
    received (the flag says which clients have trained), not from the initial weights.

    Evaluation (``episode(training=False)``): the client's ``v`` (or, for a client that never trained,
    e.g. a held-out one, the global model) after ``eval_inner_steps`` of the same proximal steps on
    the support set, anchored at the current global model; then predict the queries.

    Args:
        backbone: the network, ``(N, *input_shape) -> (N, *out)``; the personal model is a copy.
        lam: Ditto's ``lambda`` >= 0, the pull of the personal model towards the global one (the paper
            tries {0.01, 0.1, 1, 2}; 0: local training only).
        lr: SGD step size of the global model's local training.
        personal_lr: SGD step size of the personal model (``None``: ``lr``), in training and evaluation.
        eval_inner_steps: proximal steps on the support set in evaluation.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).

    Shape:
        Support ``(B, Ns, *input_shape)``, query ``(B, Nq, *input_shape)`` -> query predictions
        ``(B, Nq, *out)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        lam: float = 0.1,
        lr: float = 0.01,
        personal_lr: float | None = None,
        eval_inner_steps: int = 5,
        loss: Loss = "cross_entropy",
    ) -> None:
        super().__init__(backbone, lr, eval_inner_steps, loss)
        check_positive_float("lam", lam, allow_zero=True)
        if personal_lr is not None:
            check_positive_float("personal_lr", personal_lr)
        self.personal_model = PersonalModel(copy.deepcopy(backbone))
        self.lam, self.lr = lam, lr
        self.personal_lr = lr if personal_lr is None else personal_lr
        self.automatic_optimization = False
        self._round_global: dict[str, Tensor] | None = None  # w_t, set when a fit starts

    @property
    def personal_weights(self) -> tuple[str, ...]:
        """The personal model and its flag never leave a client."""
        return ("personal_model.*",)

    @property
    def personal_trained(self) -> bool:
        """Whether this client's personal model has been trained (else evaluation starts from ``w``)."""
        return bool(self.personal_model.trained > 0)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.personal_trained:  # a client's first round: v starts from the global model received
            self.personal_model.network.load_state_dict(self.backbone.state_dict())
        self._round_global = {name: p.detach().clone() for name, p in self.backbone.named_parameters()}

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(
            [
                {"params": list(self.backbone.parameters()), "lr": self.lr},
                {"params": list(self.personal_model.network.parameters()), "lr": self.personal_lr},
            ]
        )

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        # Ditto has no meta-gradient: training and evaluation predict alike (training_step trains).
        steps = self.eval_inner_steps if steps is None else steps
        check_positive_int("steps", steps, minimum=0)
        anchor = dict(self.backbone.named_parameters())
        source = self.personal_model.network if self.personal_trained else self.backbone
        start = dict(source.named_parameters())
        adapt = partial(
            adapt_task,
            self.personal_model.network,
            start,
            steps=steps,
            lr=self.personal_lr,
            loss=self.loss,
            anchor=anchor,
            lam=self.lam,
        )
        return adapt_episode(task, lambda sx, sy, qx: adapt(sx, sy, qx, every_step=every_step), every_step)

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        if self._round_global is None:
            raise RuntimeError("Expected `on_fit_start` to keep the round's global model, but got none.")
        global_params = list(self.backbone.parameters())
        personal = dict(self.personal_model.network.named_parameters())
        global_losses, personal_losses, predictions = [], [], []
        for i in range(batch.num_tasks):
            data = all_samples(batch, i)
            global_losses.append(self.training_losses(self.backbone(data.query_x[0])[None], data)[0])
            outputs = self.personal_model.network(data.query_x[0])
            personal_losses.append(self.training_losses(outputs[None], data)[0])
            predictions.append(outputs[batch.support_x.shape[1] :].detach())  # on the task's queries
        global_loss, personal_losses = torch.stack(global_losses).mean(), torch.stack(personal_losses)
        global_grads = torch.autograd.grad(global_loss, global_params)
        grads = torch.autograd.grad(personal_losses.mean(), list(personal.values()))
        # The personal model's objective adds lam / 2 ||v - w_t||^2 (w_t: the round's global model).
        proximal = proximal_gradients(personal, dict(zip(personal, grads)), self._round_global, self.lam)
        loss = self.log_training(torch.stack(predictions), batch, personal_losses.detach())
        self.log("train/global_loss", global_loss.detach(), batch_size=batch.num_tasks)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        # Through backward, so that Lightning's strategy averages and its precision plugin scales.
        params = global_params + list(personal.values())
        self.manual_backward(gradient_surrogate(params, [*global_grads, *proximal.values()], loss))
        optimizer.step()
        self.personal_model.trained.fill_(1.0)
        return loss
