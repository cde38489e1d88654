"""pFedMe: personalised models as Moreau envelopes of the clients' losses around the local model."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_meta.algorithms.base import Loss
from lit_meta.algorithms.personalised import BackboneLearner, adapt_episode, adapt_task, all_samples
from lit_meta.functional import gradient_surrogate, moreau_envelope_gradients, proximal_sgd_step
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_positive_int


class PFedMe(BackboneLearner):
    """pFedMe: each client's personalised model is the proximal point of its loss around the local
    model ``w``; ``w`` descends the Moreau envelope.

    Dinh, Tran and Nguyen, "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020,
    algorithm 1. Every local step, on the samples of the meta-batch ``D`` (each task's support and
    query sets together: to a pFL client a task is just data):

    - ``theta`` approximately solves ``min_theta f(theta; D) + lam / 2 ||theta - w||^2`` by
      ``personal_steps`` (their ``K``) gradient steps of size ``personal_lr`` from ``w``
      (:func:`~lit_meta.functional.proximal_sgd_step`);
    - ``w <- w - lr * lam * (w - theta)`` (their ``eta``;
      :func:`~lit_meta.functional.moreau_envelope_gradients`), an SGD step of the learner's optimiser.

    Each of the meta-batch's ``B`` tasks (of one client, in a federation) is one such ``D`` with its
    own ``theta``, and the ``B`` directions are averaged, as a larger batch would be; so a step depends
    on nothing but ``w`` and the batch, and splits across processes exactly. (The authors' code
    warm-starts ``theta`` from the previous local step's; from ``w``, each step shrinks the distance to
    the proximal point by about ``1 - personal_lr * lam`` where ``f`` is flat, 0.55 at the defaults.)

    The server aggregates the clients' ``w`` with the federation's strategy. pFedMe's server-side
    mixing ``w <- (1 - beta) w + beta * mean(w_k)`` is not this learner's: with FedAvg it is left out
    (their ``beta = 1``); Flower's ``FedAvgM`` with ``server_learning_rate=beta`` and
    ``server_momentum=0`` computes exactly it.

    Evaluation (``episode(training=False)``): the personalised ``theta`` of the task, from the
    global ``w`` after ``eval_inner_steps`` of the same proximal steps on the support set; then predict
    the queries.

    Args:
        backbone: the network, ``(N, *input_shape) -> (N, *out)``.
        lam: the regularisation weight ``lambda`` > 0 (15 by default, as in the paper's MNIST runs).
        personal_lr: the step size of ``theta``'s inner steps (the paper's runs: 0.01 - 0.1); keep
            ``personal_lr * (lam + the curvature of f)`` < 2, or the steps diverge (on Synthetic, 0.05
            with ``lam = 15`` lost accuracy from the 10th evaluation step on).
        personal_steps: inner steps ``K`` per local step (the paper's: 5).
        lr: the step size ``eta`` of ``w``.
        eval_inner_steps: inner steps on the support set in evaluation.
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression).

    Shape:
        Support ``(B, Ns, *input_shape)``, query ``(B, Nq, *input_shape)`` -> query predictions
        ``(B, Nq, *out)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        lam: float = 15.0,
        personal_lr: float = 0.03,
        personal_steps: int = 5,
        lr: float = 0.005,
        eval_inner_steps: int = 5,
        loss: Loss = "cross_entropy",
    ) -> None:
        super().__init__(backbone, lr, eval_inner_steps, loss)
        check_positive_float("lam", lam)
        check_positive_float("personal_lr", personal_lr)
        check_positive_int("personal_steps", personal_steps)
        self.lam, self.personal_lr, self.personal_steps, self.lr = lam, personal_lr, personal_steps, lr

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        # Training and evaluation predict alike: training_episode computes the update of w.
        steps = self.eval_inner_steps if steps is None else steps
        check_positive_int("steps", steps, minimum=0)
        w = dict(self.backbone.named_parameters())
        adapt = partial(
            adapt_task,
            self.backbone,
            w,
            steps=steps,
            lr=self.personal_lr,
            loss=self.loss,
            anchor=w,
            lam=self.lam,
        )
        return adapt_episode(task, lambda sx, sy, qx: adapt(sx, sy, qx, every_step=every_step), every_step)

    def personalise(self, task: Task, i: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """``personal_steps`` proximal steps from ``w`` on the samples of task ``i`` of the meta-batch.

        Returns:
            ``theta`` (detached), its query predictions ``(Nq, *out)`` and training loss (0-d), both
            of the last step's ``theta`` (before its update).
        """
        w = {name: p.detach() for name, p in self.backbone.named_parameters()}
        data, theta = all_samples(task, i), w
        for _ in range(self.personal_steps):
            theta = {name: p.detach().requires_grad_() for name, p in theta.items()}
            outputs = functional_call(self.backbone, theta, (data.query_x[0],))
            loss = self.training_losses(outputs[None], data)[0]
            grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
            theta = proximal_sgd_step(theta, grads, w, self.personal_lr, self.lam)
        prediction = outputs[task.support_x.shape[1] :].detach()  # on the task's queries
        return {name: p.detach() for name, p in theta.items()}, prediction, loss.detach()

    def training_episode(self, task: Task) -> tuple[Tensor, Tensor]:
        """Query predictions ``(B, Nq, *out)`` of each task's ``theta`` and ``(B,)`` losses whose
        gradient in ``w`` is pFedMe's direction ``lam * (w - theta_i)`` for each task (their value is the
        training loss); their mean's SGD step of size ``lr`` is pFedMe's update, averaged over the tasks."""
        named = dict(self.backbone.named_parameters())
        predictions, surrogates = [], []
        for i in range(task.num_tasks):
            theta, prediction, loss = self.personalise(task, i)
            direction = moreau_envelope_gradients(named, theta, self.lam)
            surrogates.append(gradient_surrogate(list(named.values()), [direction[n] for n in named], loss))
            predictions.append(prediction)
        return torch.stack(predictions), torch.stack(surrogates)
