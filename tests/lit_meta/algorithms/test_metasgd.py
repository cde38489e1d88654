"""Meta-SGD: the learning-rate gradient in closed form, and learned learning rates."""

import pytest
import torch
from torch import nn

from lit_meta.algorithms import MetaSGD
from lit_meta.models import MLP
from lit_meta.tasks import Task
from tests.helpers.learners import BlobsDataModule
from tests.helpers.trainers import quiet_trainer


def test_meta_sgd_learning_rate_gradient_in_closed_form():
    """One step, one task: w' = w - alpha * g_s, so dL_q/dalpha = -g_s * dL_q/dw' (element-wise)."""
    torch.manual_seed(3)
    model = nn.Linear(2, 1)
    learner = MetaSGD(model, inner_lr=0.1, loss="mse")
    task = Task(torch.randn(1, 4, 2), torch.randn(1, 4, 1), torch.randn(1, 3, 2), torch.randn(1, 3, 1))
    loss = learner.task_losses(learner.episode(task, training=True), task.query_y).mean()
    loss.backward()

    weights = [p.detach().clone().requires_grad_() for p in model.parameters()]
    support_loss = ((task.support_x[0] @ weights[0].T + weights[1] - task.support_y[0]) ** 2).mean()
    g_support = torch.autograd.grad(support_loss, weights)
    adapted = [(w - 0.1 * g).detach().requires_grad_() for w, g in zip(weights, g_support)]
    query_loss = ((task.query_x[0] @ adapted[0].T + adapted[1] - task.query_y[0]) ** 2).mean()
    g_query = torch.autograd.grad(query_loss, adapted)
    for lr, gs, gq in zip(learner.maml.lrs, g_support, g_query):
        torch.testing.assert_close(lr.grad, -gs * gq)


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
def test_meta_sgd_learning_rates_are_learned(inner_loop):
    learner = MetaSGD(MLP(4, (8,), 3), inner_lr=0.1, inner_loop=inner_loop)
    quiet_trainer(
        max_steps=2,
        limit_val_batches=0,
    ).fit(learner, BlobsDataModule())
    assert all((lr != 0.1).any() for lr in learner.maml.lrs)
