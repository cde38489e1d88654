"""Reptile: the outer step is the hand-computed interpolation; annealing; minibatches."""

import copy

import pytest
import torch
from torch import nn

from lit_meta.algorithms import Reptile
from lit_meta.algorithms.reptile import annealed
from lit_meta.functional import reptile_displacement
from lit_meta.models import MLP
from tests.helpers.learners import BlobsDataModule
from tests.helpers.trainers import quiet_trainer


def test_reptile_step_is_the_hand_computed_interpolation():
    torch.manual_seed(5)
    backbone = MLP(4, (8,), 3)
    theta = copy.deepcopy(backbone)
    data = BlobsDataModule(batches=1, meta_batch_size=3)
    learner = Reptile(backbone, inner_lr=0.3, inner_steps=4, epsilon=0.5, anneal=False)
    quiet_trainer(
        max_steps=1,
        limit_val_batches=0,
    ).fit(learner, data)

    task = data.tasks[0]
    adapted = []
    for b in range(3):  # each task: plain SGD on a copy, on support and query together
        phi = copy.deepcopy(theta)
        optimizer = torch.optim.SGD(phi.parameters(), lr=0.3)
        x, y = torch.cat([task.support_x[b], task.query_x[b]]), torch.cat([task.support_y[b], task.query_y[b]])
        for _ in range(4):
            optimizer.zero_grad()
            nn.functional.cross_entropy(phi(x), y).backward()
            optimizer.step()
        adapted.append(list(phi.parameters()))
    for i, (old, new) in enumerate(zip(theta.parameters(), backbone.parameters())):
        expected = old + 0.5 * torch.stack([phi[i] - old for phi in adapted]).mean(0)
        torch.testing.assert_close(new, expected.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(new, old)


def test_reptile_displacement_and_annealing():
    weight = torch.tensor([1.0, 2.0])
    displacement = reptile_displacement(weight, [torch.tensor([2.0, 2.0]), torch.tensor([0.0, 4.0])])
    torch.testing.assert_close(displacement, torch.tensor([0.0, 1.0]))
    assert [annealed(1.0, step, 4) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_reptile_anneals_epsilon_over_the_run():
    learner = Reptile(MLP(4, (8,), 3), inner_steps=1, epsilon=1.0)
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
    )
    trainer.fit(learner, BlobsDataModule())
    assert trainer.global_step == 3
    assert trainer.callback_metrics["train/epsilon"].item() == pytest.approx(1 / 3)


def test_reptile_minibatches_cover_the_task_in_random_passes():
    torch.manual_seed(6)
    learner = Reptile(MLP(4, (8,), 3), inner_lr=0.3, inner_steps=3)
    x, y = torch.randn(6, 4), torch.arange(3).repeat(2)
    seen = []
    original = learner.backbone.forward
    learner.backbone.forward = lambda inputs: (seen.append(inputs.clone()), original(inputs))[1]
    learner.fine_tune(x, y, steps=3, batch_size=4)
    batches = [b for b in seen if len(b) == 4]
    assert len(batches) == 3  # 12 samples drawn: two passes over the 6, each in its own order
    drawn = torch.cat(batches)
    for chunk in (drawn[:6], drawn[6:]):
        assert sorted(chunk.sum(1).tolist()) == sorted(x.sum(1).tolist())
    with pytest.raises(ValueError, match=r"Expected `inner_batch_size` >= 1, but got 0\."):
        Reptile(MLP(4, (8,), 3), inner_batch_size=0)
