"""Per-FedAvg: FO is first-order MAML with outer SGD; HF is second-order MAML with the Hessian on D'';
the HF direction against an explicit float64 Hessian; training and evaluation on fabricated tasks."""

import copy
from functools import partial

import pytest
import torch
from torch.func import functional_call

from lit_meta.algorithms import MAML, PerFedAvg
from lit_meta.models import MLP
from lit_meta.tasks import Task
from tests.helpers.personalised import fit as _fit
from tests.helpers.tasks import make_classification_task


def test_fo_takes_the_same_step_as_first_order_maml_with_outer_sgd():
    # configs/federated/synthetic/perfedavg_fo.yaml is MAML with exactly these settings.
    torch.manual_seed(0)
    backbone = MLP(4, (8,), 3)
    tasks = [make_classification_task(3, 3, 2, 4) for _ in range(2)]
    per_fedavg = PerFedAvg(copy.deepcopy(backbone), alpha=0.3, beta=0.05, variant="fo")
    maml = MAML(
        copy.deepcopy(backbone),
        inner_lr=0.3,
        inner_steps=1,
        first_order=True,
        inner_loop="clone",
        optimizer=partial(torch.optim.SGD, lr=0.05),
    )
    _fit(per_fedavg, tasks, 2)
    _fit(maml, tasks, 2)
    for a, b in zip(per_fedavg.backbone.parameters(), maml.maml.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(backbone.parameters(), per_fedavg.backbone.parameters()))


def _direction(learner, task: Task) -> list[torch.Tensor]:
    learner.zero_grad()
    learner.training_episode(task)[1].mean().backward()
    return [p.grad.clone() for p in learner.parameters()]


def test_hf_with_the_hessian_on_the_support_set_is_second_order_maml():
    torch.manual_seed(1)
    backbone = MLP(4, (8,), 3, activation="tanh")
    task = make_classification_task(3, 3, 2, 4)
    learner = PerFedAvg(copy.deepcopy(backbone), alpha=0.3, variant="hf", hessian_batch="other_task")
    # D'' = D (and D' the whole query set): Per-FedAvg HF's direction is MAML's meta-gradient.
    learner.split_query = lambda t, i: (t.query_x[i], t.query_y[i], t.support_x[i], t.support_y[i])
    maml = MAML(copy.deepcopy(backbone), inner_lr=0.3, inner_steps=1, first_order=False, inner_loop="clone")
    for a, b in zip(_direction(learner, task), _direction(maml, task)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # With its own D'' (another task's support) it differs.
    other = PerFedAvg(copy.deepcopy(backbone), alpha=0.3, variant="hf", hessian_batch="other_task")
    assert any(not torch.allclose(a, b) for a, b in zip(_direction(other, task), _direction(maml, task)))


def test_hf_direction_is_the_hand_computed_one_with_an_explicit_float64_hessian():
    torch.manual_seed(2)
    model = MLP(3, (4,), 3, activation="tanh").double()
    task = make_classification_task(2, 3, 2, 2, features=3)
    task = Task(task.support_x.double(), task.support_y, task.query_x.double(), task.query_y)
    alpha = 0.2
    learner = PerFedAvg(copy.deepcopy(model), alpha=alpha, variant="hf")  # D' even queries, D'' odd ones
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def unflatten(flat):
        out, start = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return out

    def loss(flat, x, y):
        return torch.nn.functional.cross_entropy(functional_call(model, unflatten(flat), (x,)), y)

    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    sx, sy, qx, qy = (t[0] for t in task)
    w_tmp = w - alpha * torch.func.grad(loss)(w, sx, sy)
    g = torch.func.grad(loss)(w_tmp, qx[0::2], qy[0::2])
    hessian = torch.autograd.functional.hessian(lambda f: loss(f, qx[1::2], qy[1::2]), w)
    expected = g - alpha * hessian @ g

    direction, predictions, query_loss = learner.local_direction(task, 0)
    torch.testing.assert_close(torch.cat([direction[n].flatten() for n in names]), expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(query_loss, loss(w_tmp, qx[0::2], qy[0::2]))
    assert predictions.shape == (len(qx), 3)


def test_the_hessian_batch_is_another_tasks_support_or_the_other_half_of_the_queries():
    task = make_classification_task(3, 3, 2, 2)
    other = PerFedAvg(MLP(4, (8,), 3), variant="hf", hessian_batch="other_task")
    for i in range(3):
        qx, qy, hx, hy = other.split_query(task, i)
        assert torch.equal(qx, task.query_x[i]) and torch.equal(hx, task.support_x[(i + 1) % 3])
    split = PerFedAvg(MLP(4, (8,), 3), variant="hf")
    qx, qy, hx, hy = split.split_query(task, 1)
    assert torch.equal(qx, task.query_x[1][0::2]) and torch.equal(hx, task.query_x[1][1::2])
    assert set(qy.tolist()) == set(hy.tolist()) == {0, 1, 2}  # every class in both halves
    single = Task(*(t[:1] for t in task))
    assert torch.equal(other.split_query(single, 0)[2], task.query_x[0][1::2])  # one task: split its queries
    one_query = Task(task.support_x, task.support_y, task.query_x[:, :1], task.query_y[:, :1])
    with pytest.raises(ValueError, match=r"Expected >= 2 queries per task to split into D' and D'' .* but got 1\."):
        split.training_episode(one_query)


def test_per_fedavg_trains_and_personalises_on_fabricated_tasks():
    torch.manual_seed(3)
    tasks = [make_classification_task(4, 3, 3, 4) for _ in range(60)]
    test_task = make_classification_task(20, 3, 3, 5)
    for variant in ("fo", "hf"):
        learner = PerFedAvg(MLP(4, (16,), 3), alpha=0.1, beta=0.2, variant=variant, eval_inner_steps=1)
        before = learner.evaluate_episode(test_task)
        before_accuracy = (before.argmax(-1) == test_task.query_y).float().mean()
        _fit(learner, tasks, 60)
        after = learner.evaluate_episode(test_task)
        accuracy = (after.argmax(-1) == test_task.query_y).float().mean()
        assert accuracy > max(before_accuracy, 0.6), (variant, before_accuracy, accuracy)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"alpha": 0.0}, ValueError, r"Expected `alpha` > 0, but got 0\.0\."),
        ({"beta": -1.0}, ValueError, r"Expected `beta` > 0, but got -1\.0\."),
        ({"variant": "so"}, ValueError, r"Expected `variant` to be one of 'fo', 'hf', but got 'so'\."),
        (
            {"hessian_batch": "resample"},
            ValueError,
            r"Expected `hessian_batch` to be one of 'query_split', 'other_task', but got 'resample'\.",
        ),
        ({"eval_inner_steps": -1}, ValueError, r"Expected `eval_inner_steps` >= 0, but got -1\."),
        ({"backbone": "mlp"}, TypeError, r"Expected `backbone` to be Module, but got str 'mlp'\."),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        PerFedAvg(**{"backbone": MLP(4, (8,), 3), **arguments})
