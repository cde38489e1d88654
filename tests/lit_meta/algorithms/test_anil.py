"""ANIL: only the head adapts, on fixed features; the meta-gradient reaches the body."""

import copy

import torch
from torch import nn

from lit_meta.algorithms import ANIL
from lit_meta.models import MLP
from tests.helpers.tasks import make_classification_task


def test_anil_adapts_only_the_head_on_fixed_features():
    torch.manual_seed(4)
    backbone = MLP(4, (8,), 3)
    learner = ANIL(backbone, inner_lr=0.5, eval_inner_steps=3)
    body_before = [p.detach().clone() for p in backbone.features.parameters()]
    task = make_classification_task(num_tasks=2)
    logits = learner.evaluate_episode(task)

    for b in range(2):  # reference: three SGD steps on the head alone, on features computed once
        head = copy.deepcopy(backbone.head)
        optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
        features = backbone.features(task.support_x[b]).detach()
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(head(features), task.support_y[b]).backward()
            optimizer.step()
        torch.testing.assert_close(logits[b], head(backbone.features(task.query_x[b])).detach())
    for before, after in zip(body_before, backbone.features.parameters()):
        assert torch.equal(before, after)


def test_anil_meta_gradient_reaches_the_body():
    learner = ANIL(MLP(4, (8,), 3), inner_lr=0.5)
    task = make_classification_task()
    learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.body.parameters())
