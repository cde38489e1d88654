"""Ditto: the local step of the global and the personal model by hand, the personal flag, evaluation from
the personal or the global model, training on fabricated tasks."""

import copy

import pytest
import torch
from torch import nn

from lit_meta.algorithms import Ditto
from lit_meta.models import MLP
from tests.helpers.personalised import fit as _fit
from tests.helpers.tasks import make_classification_task


def _samples(task, i):
    return torch.cat([task.support_x[i], task.query_x[i]]), torch.cat([task.support_y[i], task.query_y[i]])


def test_one_local_step_moves_w_by_sgd_and_v_by_the_proximal_step_towards_the_rounds_global_model():
    torch.manual_seed(0)
    learner = Ditto(MLP(4, (8,), 3), lam=0.5, lr=0.2, personal_lr=0.3)
    with torch.no_grad():  # a client that trained before: v differs from the global model it receives
        for p in learner.personal_model.network.parameters():
            p.add_(torch.randn_like(p))
        learner.personal_model.trained.fill_(1.0)
    w0, v0 = copy.deepcopy(learner.backbone), copy.deepcopy(learner.personal_model.network)
    tasks = [make_classification_task(2, 3, 2, 3) for _ in range(2)]
    _fit(learner, tasks, 2)

    # By hand, two steps: plain SGD for w; for v, SGD on f + lam / 2 ||v - w0||^2 (w0: the round's start).
    w, v = copy.deepcopy(w0), copy.deepcopy(v0)
    for task in tasks:
        for model, lr in ((w, 0.2), (v, 0.3)):
            model.zero_grad()
            losses = [nn.functional.cross_entropy(model(x), y) for x, y in (_samples(task, i) for i in range(2))]
            torch.stack(losses).mean().backward()
            with torch.no_grad():
                for p, anchor in zip(model.parameters(), w0.parameters()):
                    proximal = 0.5 * (p - anchor) if model is v else 0.0
                    p.sub_(lr * (p.grad + proximal))
    for got, expected in ((learner.backbone, w), (learner.personal_model.network, v)):
        for a, b in zip(got.parameters(), expected.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(learner.personal_model.network.features[0].weight, v0.features[0].weight)


def test_a_clients_first_training_starts_v_from_the_received_global_model_and_marks_it_trained():
    torch.manual_seed(1)
    learner = Ditto(MLP(4, (8,), 3), lam=0.1, lr=0.1)
    with torch.no_grad():  # the received global model is not the initial personal model
        for p in learner.backbone.parameters():
            p.add_(1.0)
    assert not learner.personal_trained
    seen = []
    learner.on_train_start = lambda: seen.append(copy.deepcopy(learner.personal_model.network.state_dict()))
    _fit(learner, [make_classification_task(2, 3, 2, 3)], 1)
    assert learner.personal_trained and learner.personal_model.trained.item() == 1.0
    # At the first step v was w (both moved from there by one step: v with lam * (v - w_t) = 0).
    start = seen[0]
    assert all(torch.equal(start[k], v) for k, v in learner._round_global.items())


def test_evaluation_starts_from_v_once_trained_and_from_w_before():
    torch.manual_seed(2)
    learner = Ditto(MLP(4, (8,), 3), lam=0.1, lr=0.1, eval_inner_steps=2)
    task = make_classification_task(2, 3, 2, 3)
    with torch.no_grad():
        for p in learner.personal_model.network.parameters():
            p.add_(torch.randn_like(p))
    global_outputs = torch.stack([learner.backbone(q) for q in task.query_x]).detach()
    personal_outputs = torch.stack([learner.personal_model(q) for q in task.query_x]).detach()
    torch.testing.assert_close(learner.evaluate_episode(task, steps=0), global_outputs)  # never trained
    learner.personal_model.trained.fill_(1.0)
    torch.testing.assert_close(learner.evaluate_episode(task, steps=0), personal_outputs)
    # One evaluation step by hand: v - personal_lr * (grad f(v; support) + lam (v - w)), w the current global.
    v = copy.deepcopy(learner.personal_model.network)
    nn.functional.cross_entropy(v(task.support_x[0]), task.support_y[0]).backward()
    with torch.no_grad():
        for p, anchor in zip(v.parameters(), learner.backbone.parameters()):
            p.sub_(0.1 * (p.grad + 0.1 * (p - anchor)))
    torch.testing.assert_close(learner.evaluate_episode(task, steps=1)[0], v(task.query_x[0]).detach())


def test_ditto_personalises_on_fabricated_tasks():
    torch.manual_seed(3)
    tasks = [make_classification_task(4, 3, 3, 4) for _ in range(40)]
    test_task = make_classification_task(20, 3, 3, 5)
    learner = Ditto(MLP(4, (16,), 3), lam=0.1, lr=0.1, eval_inner_steps=2)
    before = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    _fit(learner, tasks, 40)
    after = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    assert after > max(before, 0.6), (before, after)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"lam": -0.1}, ValueError, r"Expected `lam` >= 0, but got -0\.1\."),
        ({"lam": float("inf")}, ValueError, r"Expected a finite `lam`, but got inf\."),
        ({"lr": 0.0}, ValueError, r"Expected `lr` > 0, but got 0\.0\."),
        ({"personal_lr": -1.0}, ValueError, r"Expected `personal_lr` > 0, but got -1\.0\."),
        ({"backbone": None}, TypeError, r"Expected `backbone` to be Module, but got NoneType None\."),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        Ditto(**{"backbone": MLP(4, (8,), 3), **arguments})


def test_lambda_zero_is_plain_local_training():
    learner = Ditto(MLP(4, (8,), 3), lam=0.0)
    assert learner.lam == 0.0 and learner.personal_lr == learner.lr == 0.01
