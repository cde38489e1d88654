"""MAML's meta-gradient against references that share no code with the learner."""

import copy

import pytest
import torch
from torch import nn

from lit_meta.algorithms import ANIL, MAML, MetaSGD
from lit_meta.functional import gradient_surrogate
from lit_meta.models import CNN4, MLP
from lit_meta.tasks import Task
from tests.helpers.tasks import make_classification_task, make_regression_task

INNER_LR = 0.1


def meta_gradient(learner: MAML, task: Task) -> list[torch.Tensor]:
    learner.zero_grad()
    predictions = learner.episode(task, training=True)
    learner.task_losses(predictions, task.query_y).mean().backward()
    return [p.grad.clone() for p in learner.parameters()]


def reference_meta_gradient(
    weights: list[torch.Tensor], task: Task, steps: int, second_order: bool
) -> list[torch.Tensor]:
    """MAML written out by hand for an MLP 1-3-1 (ReLU) with torch.autograd only."""
    w1, b1, w2, b2 = [w.detach().double().requires_grad_() for w in weights]

    def net(params, x):
        a1, c1, a2, c2 = params
        return torch.relu(x @ a1.T + c1) @ a2.T + c2

    query_losses = []
    for sx, sy, qx, qy in zip(*(t.double() for t in task)):
        params = [w1, b1, w2, b2]
        for _ in range(steps):
            support_loss = ((net(params, sx) - sy) ** 2).mean()
            grads = torch.autograd.grad(support_loss, params, create_graph=second_order)
            params = [p - INNER_LR * g for p, g in zip(params, grads)]
        query_losses.append(((net(params, qx) - qy) ** 2).mean())
    meta_loss = torch.stack(query_losses).mean()
    return [g.float() for g in torch.autograd.grad(meta_loss, [w1, b1, w2, b2])]


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_hand_written_maml(inner_loop, first_order, steps):
    learner = MAML(
        MLP(1, (3,), 1),
        inner_lr=INNER_LR,
        inner_steps=steps,
        first_order=first_order,
        inner_loop=inner_loop,
        loss="mse",
    )
    task = make_regression_task(num_tasks=4)
    expected = reference_meta_gradient(list(learner.parameters()), task, steps, second_order=not first_order)
    for got, want in zip(meta_gradient(learner, task), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_second_and_first_order_differ():
    # Guards the test above against a reference that ignores `second_order`.
    task = make_regression_task(num_tasks=2)
    weights = list(MLP(1, (3,), 1).parameters())
    second = reference_meta_gradient(weights, task, 1, second_order=True)
    first = reference_meta_gradient(weights, task, 1, second_order=False)
    assert max((a - b).abs().max() for a, b in zip(second, first)) > 1e-3


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_of_scalar_linear_model_in_closed_form(inner_loop, first_order):
    """f(x) = w x, one task, one step, MSE: everything by hand.

    g = 2 mean(xs (w xs - ys));  w' = w - a g;  dL_q/dw' = 2 mean(xq (w' xq - yq));
    dL_q/dw = dL_q/dw' * (1 - 2 a mean(xs^2))  (second order), or dL_q/dw' (first order).
    """
    model = nn.Linear(1, 1, bias=False)
    learner = MAML(model, inner_lr=INNER_LR, first_order=first_order, inner_loop=inner_loop, loss="mse")
    xs, ys = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, -3.0, 1.5])
    xq, yq = torch.tensor([0.3, 1.2]), torch.tensor([0.8, 2.0])
    task = Task(xs.view(1, 3, 1), ys.view(1, 3, 1), xq.view(1, 2, 1), yq.view(1, 2, 1))
    w = model.weight.item()
    g = 2 * (xs * (w * xs - ys)).mean().item()
    w_adapted = w - INNER_LR * g
    outer = 2 * (xq * (w_adapted * xq - yq)).mean().item()
    expected = outer if first_order else outer * (1 - 2 * INNER_LR * (xs**2).mean().item())
    (got,) = meta_gradient(learner, task)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_classification_meta_gradient_clone_equals_batched():
    torch.manual_seed(1)
    backbone = MLP(4, (8,), 3)
    sx, qx = torch.randn(2, 6, 4), torch.randn(2, 9, 4)
    sy, qy = torch.arange(3).repeat(2).expand(2, -1), torch.arange(3).repeat(3).expand(2, -1)
    task = Task(sx, sy, qx, qy)
    grads = {}
    for inner_loop in ("clone", "batched"):
        learner = MAML(backbone, inner_lr=0.5, inner_steps=2, inner_loop=inner_loop)
        grads[inner_loop] = meta_gradient(learner, task)
    for a, b in zip(grads["clone"], grads["batched"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads["clone"])


def test_evaluation_builds_no_second_order_graph():
    learner = MAML(MLP(1, (3,), 1), loss="mse", eval_inner_steps=2)
    predictions = learner.evaluate_episode(make_regression_task())
    assert predictions.shape == (3, 4, 1)
    assert not predictions.requires_grad
    assert all(p.grad is None for p in learner.parameters())


def training_step_gradient(learner, task):
    """The meta-gradient the training step leaves in ``.grad``, and the loss it reports."""
    learner.zero_grad()
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here: Lightning's logging warns and skips
        loss = learner.training_step(task, 0)
    loss.backward()
    return [p.grad.clone() for p in learner.parameters()], loss.detach()


class _Scaler:
    """Stands in for the precision plugin's GradScaler under `16-mixed` (CUDA only)."""

    def get_scale(self) -> float:
        return 1024.0

    def is_enabled(self) -> bool:
        return True


@pytest.mark.parametrize("algorithm", [MAML, MetaSGD, ANIL])
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_and_clone_meta_gradients_are_equal(algorithm, first_order):
    torch.manual_seed(1)
    backbone = MLP(4, (8,), 3)
    task = make_classification_task(num_tasks=3)
    grads = {}
    for inner_loop in ("clone", "batched"):
        learner = algorithm(backbone, inner_lr=0.5, inner_steps=2, first_order=first_order, inner_loop=inner_loop)
        learner.zero_grad()
        learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
        grads[inner_loop] = [p.grad.clone() for p in learner.parameters()]
    for a, b in zip(grads["clone"], grads["batched"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_surrogate_has_the_value_and_the_gradients_it_is_given():
    a, b, c = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True), torch.ones(1, requires_grad=True)
    surrogate = gradient_surrogate(
        [a, b, c], [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0, 3.0]), None], torch.tensor(7.5)
    )
    assert surrogate.item() == 7.5
    surrogate.backward()
    assert a.grad.tolist() == [1.0, -2.0] and b.grad.tolist() == [0.5, 0.0, 3.0] and c.grad is None
    with pytest.raises(ValueError, match=r"Expected one gradient per parameter \(3\), but got 2\."):
        gradient_surrogate([a, b, c], [None, None], torch.tensor(0.0))


@pytest.mark.parametrize("algorithm", [MAML, MetaSGD, ANIL])
@pytest.mark.parametrize("first_order", [False, True])
def test_backward_per_task_gives_the_same_meta_gradient_and_loss(algorithm, first_order):
    torch.manual_seed(2)
    backbone, task = MLP(4, (8,), 3), make_classification_task(num_tasks=3)
    plain = algorithm(backbone, inner_lr=0.5, inner_steps=2, first_order=first_order, inner_loop="clone")
    expected, expected_loss = training_step_gradient(plain, task)
    per_task = algorithm(backbone, inner_lr=0.5, inner_steps=2, first_order=first_order, backward_per_task=True)
    got, loss = training_step_gradient(per_task, task)
    torch.testing.assert_close(loss, expected_loss)
    assert any(g.abs().sum() > 0 for g in got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("algorithm", [MAML, MetaSGD])
@pytest.mark.parametrize("options", [{"inner_loop": "clone"}, {"inner_loop": "batched"}, {"backward_per_task": True}])
def test_scaled_inner_loss_gives_the_unscaled_meta_gradient(algorithm, options, monkeypatch):
    torch.manual_seed(3)
    backbone, task = MLP(4, (8,), 3), make_classification_task(num_tasks=2)
    expected, _ = training_step_gradient(algorithm(backbone, inner_lr=0.5, inner_steps=2, **options), task)
    learner = algorithm(backbone, inner_lr=0.5, inner_steps=2, **options)
    monkeypatch.setattr(learner, "_loss_scale", lambda: _Scaler().get_scale())
    for a, b in zip(expected, training_step_gradient(learner, task)[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_loss_scale_is_read_from_the_precision_plugin():
    learner = MAML(MLP(4, (8,), 3))
    assert learner._loss_scale() == 1.0
    learner._trainer = type("T", (), {"precision_plugin": type("P", (), {"scaler": _Scaler()})()})()
    assert learner._loss_scale() == 1024.0


def test_auto_inner_loop_is_batched_on_cuda_only():
    learner = MAML(MLP(4, (8,), 3))
    assert learner.resolved_inner_loop() == "clone"
    learner._device = torch.device("cuda", 0)  # where the learner says it lives; nothing is moved
    assert learner.resolved_inner_loop() == "batched"
    assert MAML(MLP(4, (8,), 3), backward_per_task=True).resolved_inner_loop() == "clone"


def test_backward_per_task_needs_the_clone_loop():
    with pytest.raises(
        ValueError, match=r"Expected `inner_loop` 'clone' or 'auto' with `backward_per_task`.*but got 'batched'\."
    ):
        MAML(MLP(4, (8,), 3), inner_loop="batched", backward_per_task=True)


def test_batched_loop_with_batch_norm_under_autocast_is_refused_and_auto_falls_back():
    backbone = CNN4(in_channels=1, out_features=3, hidden=4, blocks=2, image_size=8)
    task = Task(
        torch.randn(2, 3, 1, 8, 8),
        torch.arange(3).expand(2, -1),
        torch.randn(2, 6, 1, 8, 8),
        torch.arange(3).repeat(2).expand(2, -1),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(
            ValueError, match=r"Expected no BatchNorm layer with `inner_loop` 'batched' under mixed precision"
        ):
            MAML(backbone, inner_loop="batched").episode(task, training=True)
        assert torch.isfinite(MAML(backbone).episode(task, training=True)).all()  # auto: the clone loop


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
def test_cnn_meta_gradient_with_adapted_batch_norm_matches_autograd_in_float64(inner_loop):
    """Second order through adapted BatchNorm weights: torch.func's batch_norm rule alone is 8e-3 off."""
    generator = torch.Generator().manual_seed(3)
    task = Task(
        torch.randn(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64),
        torch.arange(3).expand(2, -1),
        torch.randn(2, 6, 1, 8, 8, generator=generator, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(2, -1),
    )
    torch.manual_seed(0)
    learner = MAML(
        CNN4(in_channels=1, out_features=3, hidden=4, blocks=2, image_size=8), inner_lr=0.3, inner_steps=2
    ).double()
    learner.inner_loop = inner_loop
    # The reference: each task's two steps by plain autograd on the module's own function.
    network = learner.maml.module
    weights = dict(network.named_parameters())
    query_losses = []
    for sx, sy, qx, qy in zip(*task):
        params = weights
        for _ in range(2):
            support = nn.functional.cross_entropy(torch.func.functional_call(network, params, (sx,)), sy)
            grads = torch.autograd.grad(support, list(params.values()), create_graph=True)
            params = {name: p - 0.3 * g for (name, p), g in zip(params.items(), grads)}
        query_losses.append(nn.functional.cross_entropy(torch.func.functional_call(network, params, (qx,)), qy))
    expected = torch.autograd.grad(torch.stack(query_losses).mean(), list(weights.values()))
    for got, want in zip(meta_gradient(learner, task), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
def test_an_integer_inner_lr_is_a_rate_like_its_float(inner_loop):
    task = make_regression_task(num_tasks=2)
    torch.manual_seed(0)
    as_int = MAML(MLP(1, (3,), 1), inner_lr=1, loss="mse", inner_loop=inner_loop).evaluate_episode(task)
    torch.manual_seed(0)
    as_float = MAML(MLP(1, (3,), 1), inner_lr=1.0, loss="mse", inner_loop=inner_loop).evaluate_episode(task)
    torch.testing.assert_close(as_int, as_float)


def tiny_image_task(num_tasks: int = 2, ways: int = 3, shots: int = 1, queries: int = 4) -> Task:
    generator = torch.Generator().manual_seed(7)
    sy = torch.arange(ways).repeat_interleave(shots).expand(num_tasks, -1)
    qy = torch.arange(ways).repeat_interleave(queries).expand(num_tasks, -1)
    sx = torch.rand(num_tasks, ways * shots, 1, 8, 8, generator=generator)
    return Task(sx, sy, torch.rand(num_tasks, ways * queries, 1, 8, 8, generator=generator), qy)


def reference_evaluation(backbone: nn.Module, adapted: str, task: Task, steps: int, lr: float) -> torch.Tensor:
    """Query logits ``(steps + 1, B, Nq, ways)`` after 0..steps SGD steps on each task's support loss, the
    parameters whose names start with ``adapted`` adapted, in float64 with torch.func and autograd only."""
    backbone = copy.deepcopy(backbone).double()
    params = dict(backbone.named_parameters())
    curves = []
    for sx, sy, qx in zip(task.support_x.double(), task.support_y, task.query_x.double()):
        fast = {name: p.detach().requires_grad_() for name, p in params.items() if name.startswith(adapted)}
        per_step = []
        for step in range(steps + 1):
            per_step.append(torch.func.functional_call(backbone, fast, (qx,)).detach())
            if step == steps:
                break
            loss = nn.functional.cross_entropy(torch.func.functional_call(backbone, fast, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {name: p - lr * g for (name, p), g in zip(fast.items(), grads)}
        curves.append(torch.stack(per_step))
    return torch.stack(curves, dim=1).float()


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
@pytest.mark.parametrize(("algorithm", "adapted"), [(MAML, ""), (ANIL, "head.")])
def test_evaluation_predictions_match_a_hand_written_adaptation(inner_loop, algorithm, adapted):
    torch.manual_seed(0)
    backbone = CNN4(1, 3, 8, 2, 8, downsample="stride")
    learner = algorithm(backbone, inner_lr=0.4, eval_inner_steps=3, inner_loop=inner_loop).eval()
    task = tiny_image_task()
    curve = learner.evaluate_episode(task, every_step=True)
    expected = reference_evaluation(backbone, adapted, task, steps=3, lr=0.4)
    torch.testing.assert_close(curve, expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(curve[0], curve[3])  # the steps moved the predictions
    accuracies = learner.task_metric(curve.flatten(0, 1), task.query_y.repeat(4, 1))
    assert torch.equal(accuracies, learner.task_metric(expected.flatten(0, 1), task.query_y.repeat(4, 1)))


@pytest.mark.parametrize("algorithm", [MAML, ANIL])
def test_evaluation_keeps_nothing_of_the_query_predictions_for_a_backward(algorithm):
    """At evaluation only the support losses are differentiated: no tensor of the query images' forward
    passes (12 queries, against 3 support images) is saved for a backward pass that never comes."""
    torch.manual_seed(0)
    learner = algorithm(CNN4(1, 3, 8, 2, 8, downsample="stride"), inner_lr=0.4, eval_inner_steps=2, inner_loop="clone")
    task = tiny_image_task(ways=3, shots=1, queries=4)
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        learner.eval().evaluate_episode(task, every_step=True)
    assert any(shape[:1] == (3,) for shape in saved)  # the support passes are differentiated
    assert not [shape for shape in saved if shape[:1] == (12,)]
