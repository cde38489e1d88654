"""pFedMe: the local step (K proximal steps for each task's theta, then w towards the thetas) by hand;
evaluation personalises from w; training on fabricated tasks."""

import copy

import pytest
import torch
from torch import nn

from lit_meta.algorithms import PFedMe
from lit_meta.models import MLP
from tests.helpers.personalised import fit
from tests.helpers.tasks import make_classification_task


def _theta(model: nn.Module, x, y, steps: int, lr: float, lam: float) -> nn.Module:
    """``steps`` steps of SGD on CE(theta; x, y) + lam / 2 ||theta - w||^2 from w = ``model``, by hand."""
    theta = copy.deepcopy(model)
    for _ in range(steps):
        theta.zero_grad()
        nn.functional.cross_entropy(theta(x), y).backward()
        with torch.no_grad():
            for p, w in zip(theta.parameters(), model.parameters()):
                p.sub_(lr * (p.grad + lam * (p - w)))
    return theta


def test_one_local_step_moves_w_towards_the_tasks_personalised_models():
    torch.manual_seed(0)
    learner = PFedMe(MLP(4, (8,), 3), lam=15.0, personal_lr=0.02, personal_steps=3, lr=0.01)
    w = copy.deepcopy(learner.backbone)
    task = make_classification_task(2, 3, 2, 3)
    fit(learner, [task], 1)
    thetas = [
        _theta(w, torch.cat([sx, qx]), torch.cat([sy, qy]), steps=3, lr=0.02, lam=15.0) for sx, sy, qx, qy in zip(*task)
    ]
    for got, old, *personal in zip(learner.backbone.parameters(), w.parameters(), *(t.parameters() for t in thetas)):
        expected = old - 0.01 * torch.stack([15.0 * (old - p) for p in personal]).mean(0)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(got, old)


def test_evaluation_personalises_from_w_with_the_proximal_steps_on_the_support_set():
    torch.manual_seed(1)
    learner = PFedMe(MLP(4, (8,), 3), lam=15.0, personal_lr=0.03)
    task = make_classification_task(2, 3, 2, 3)
    predictions = learner.evaluate_episode(task, steps=4)
    for i in range(2):
        theta = _theta(learner.backbone, task.support_x[i], task.support_y[i], steps=4, lr=0.03, lam=15.0)
        torch.testing.assert_close(predictions[i], theta(task.query_x[i]).detach(), rtol=1e-5, atol=1e-6)
    expected = torch.stack([learner.backbone(q) for q in task.query_x]).detach()
    torch.testing.assert_close(learner.evaluate_episode(task, steps=0), expected)


def test_pfedme_personalises_on_fabricated_tasks():
    torch.manual_seed(3)
    tasks = [make_classification_task(4, 3, 3, 4) for _ in range(40)]
    test_task = make_classification_task(20, 3, 3, 5)
    learner = PFedMe(MLP(4, (16,), 3), lam=15.0, personal_lr=0.05, personal_steps=5, lr=0.05, eval_inner_steps=5)
    before = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    fit(learner, tasks, 40)
    after = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    assert after > max(before, 0.6), (before, after)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"lam": 0.0}, ValueError, r"Expected `lam` > 0, but got 0\.0\."),
        ({"personal_lr": -1}, ValueError, r"Expected `personal_lr` > 0, but got -1\."),
        ({"personal_steps": 0}, ValueError, r"Expected `personal_steps` >= 1, but got 0\."),
        ({"lr": float("nan")}, ValueError, r"Expected a finite `lr`, but got nan\."),
        ({"personal_steps": 2.0}, TypeError, r"Expected `personal_steps` to be int, but got float 2\.0\."),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        PFedMe(**{"backbone": MLP(4, (8,), 3), **arguments})
