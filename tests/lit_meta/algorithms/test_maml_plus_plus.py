"""MAML++'s options of the MAML family against references that share no code with the learner."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lit_meta.algorithms import ANIL, MAML, MetaSGD
from lit_meta.batch_norm import PerStepBatchNorm
from lit_meta.functional import multi_step_loss_weights
from lit_meta.models import CNN4, MLP
from lit_meta.tasks import Task
from tests.helpers.tasks import make_regression_task

STEPS = 3
# The rates' keys in the order of the MLP's tensors (a ParameterDict sorts its keys).
KEYS = ["features-0-weight", "features-0-bias", "head-weight", "head-bias"]


def at_meta_step(learner: MAML, step: int) -> MAML:
    """The learner as a Trainer would show it after ``step`` optimizer steps (only ``global_step`` is read)."""
    learner._trainer = SimpleNamespace(global_step=step)
    return learner


def objective_gradient(learner: MAML, task: Task) -> tuple[torch.Tensor, list[torch.Tensor]]:
    learner.zero_grad()
    _, losses = learner.training_episode(task)
    losses.mean().backward()
    return losses.detach(), [p.grad.clone() for p in learner.parameters()]


def reference(weights, log_lrs, task, loss_weights, second_order):
    """MAML++ (LSLR and the multi-step loss) for an MLP 1-3-1 (ReLU), written out in float64.

    ``log_lrs[i][k]`` is the log of the rate of tensor ``i`` (w1, b1, w2, b2) at step ``k``; the
    objective is ``mean_tasks sum_k loss_weights[k] * query_loss(after k + 1 steps)``.
    """
    leaves = [w.detach().double().requires_grad_() for w in weights]
    log_lrs = log_lrs.detach().double().requires_grad_()

    def net(params, x):
        a1, c1, a2, c2 = params
        return torch.relu(x @ a1.T + c1) @ a2.T + c2

    objective = []
    for sx, sy, qx, qy in zip(*(t.double() for t in task)):
        params, total = leaves, 0.0
        for k in range(len(loss_weights)):
            support_loss = ((net(params, sx) - sy) ** 2).mean()
            grads = torch.autograd.grad(support_loss, params, create_graph=second_order)
            params = [p - log_lrs[i, k].exp() * g for i, (p, g) in enumerate(zip(params, grads))]
            total = total + loss_weights[k] * ((net(params, qx) - qy) ** 2).mean()
        objective.append(total)
    objective = torch.stack(objective)
    grads = torch.autograd.grad(objective.mean(), [*leaves, log_lrs])
    return objective.float(), [g.float() for g in grads[:-1]], grads[-1].float()


def maml_plus_plus(inner_loop: str, **options) -> MAML:
    torch.manual_seed(0)
    learner = MAML(
        MLP(1, (3,), 1),
        inner_lr=0.1,
        inner_steps=STEPS,
        loss="mse",
        inner_loop=inner_loop,
        learn_inner_lrs=True,
        **options,
    )
    with torch.no_grad():  # distinct rates for every tensor and step, so a mixed-up index shows
        for i, key in enumerate(KEYS):
            learner.log_step_lrs[key].copy_(torch.log(torch.tensor([0.05, 0.1, 0.2]) * (1 + 0.25 * i)))
    return learner


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("meta_step", [0, 5])
def test_lslr_and_multi_step_loss_match_the_hand_written_objective_and_gradient(inner_loop, first_order, meta_step):
    learner = at_meta_step(maml_plus_plus(inner_loop, first_order=first_order, multi_step_loss_steps=10), meta_step)
    task = make_regression_task(num_tasks=3)
    # The schedule by hand (S = 3): 1/3 each at first; half-way the earlier ones are 1/6, the last 2/3.
    loss_weights = [1 / 3, 1 / 3, 1 / 3] if meta_step == 0 else [1 / 6, 1 / 6, 2 / 3]
    log_lrs = torch.stack([learner.log_step_lrs[key] for key in KEYS])
    weights = [p for n, p in learner.named_parameters() if not n.startswith("log_step_lrs")]
    expected_losses, expected_grads, expected_lr_grads = reference(
        weights, log_lrs, task, loss_weights, second_order=not first_order
    )
    losses, grads = objective_gradient(learner, task)
    torch.testing.assert_close(losses, expected_losses, rtol=1e-5, atol=1e-6)
    names = [n for n, _ in learner.named_parameters()]
    by_name = dict(zip(names, grads))
    for name, want in zip(
        [
            "maml.module.features.0.weight",
            "maml.module.features.0.bias",
            "maml.module.head.weight",
            "maml.module.head.bias",
        ],
        expected_grads,
    ):
        torch.testing.assert_close(by_name[name], want, rtol=1e-4, atol=1e-6)
    got_lr_grads = torch.stack([by_name[f"log_step_lrs.{key}"] for key in KEYS])
    torch.testing.assert_close(got_lr_grads, expected_lr_grads, rtol=1e-4, atol=1e-6)
    assert (expected_lr_grads.abs() > 0).all()  # every rate learns, first order too (the step is linear in it)


def test_multi_step_loss_weights_follow_the_papers_schedule():
    torch.testing.assert_close(multi_step_loss_weights(5, 0, 100), torch.full((5,), 0.2, dtype=torch.float64))
    # At 40%: earlier weights 0.2 - 0.4 / 5 = 0.12, the last 0.2 + 0.4 * 4 / 5 = 0.52.
    torch.testing.assert_close(
        multi_step_loss_weights(5, 40, 100), torch.tensor([0.12] * 4 + [0.52], dtype=torch.float64)
    )
    # Near the end the earlier ones stop at 0.03 / 5 and the last one at 1 - 4 * 0.006.
    torch.testing.assert_close(
        multi_step_loss_weights(5, 99, 100), torch.tensor([0.006] * 4 + [0.976], dtype=torch.float64)
    )
    torch.testing.assert_close(
        multi_step_loss_weights(5, 100, 100), torch.tensor([0.0] * 4 + [1.0], dtype=torch.float64)
    )
    for step in range(0, 120, 7):
        assert multi_step_loss_weights(4, step, 100).sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0, 10), r"Expected `steps` >= 1, but got 0\."),
        ((3, -1, 10), r"Expected `meta_step` >= 0, but got -1\."),
        ((3, 0, 0), r"Expected `anneal_steps` >= 1, but got 0\."),
    ],
)
def test_multi_step_loss_weights_refuse_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        multi_step_loss_weights(*args)


def test_multi_step_loss_ends_with_its_schedule():
    task = make_regression_task(num_tasks=2)
    plain = maml_plus_plus("clone")
    annealed = at_meta_step(maml_plus_plus("clone", multi_step_loss_steps=10), 10)
    torch.testing.assert_close(objective_gradient(annealed, task), objective_gradient(plain, task))


@pytest.mark.parametrize("inner_loop", ["clone", "batched"])
def test_derivative_order_annealing_is_first_order_then_second(inner_loop):
    task = make_regression_task(num_tasks=2)
    first = objective_gradient(maml_plus_plus(inner_loop, first_order=True), task)[1]
    second = objective_gradient(maml_plus_plus(inner_loop), task)[1]
    assert max((a - b).abs().max() for a, b in zip(first, second)) > 1e-4
    for step, expected in ((0, first), (19, first), (20, second)):
        got = objective_gradient(at_meta_step(maml_plus_plus(inner_loop, first_order_steps=20), step), task)[1]
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_learned_rates_are_the_evaluation_rates_and_the_last_serves_later_steps():
    learner = maml_plus_plus("clone")
    task = make_regression_task(num_tasks=2)
    # Evaluation with 5 steps = 3 steps at the learned rates, then two more at the third's, by hand.
    log_lrs = torch.stack([learner.log_step_lrs[key] for key in KEYS]).detach()
    params = [p.detach().requires_grad_() for n, p in learner.named_parameters() if not n.startswith("log")]
    expected = []
    for sx, sy, qx, _ in zip(*task):
        weights = params
        for k in range(5):
            support = ((torch.relu(sx @ weights[0].T + weights[1]) @ weights[2].T + weights[3] - sy) ** 2).mean()
            grads = torch.autograd.grad(support, weights)
            weights = [w - log_lrs[i, min(k, 2)].exp() * g for i, (w, g) in enumerate(zip(weights, grads))]
        expected.append(torch.relu(qx @ weights[0].T + weights[1]) @ weights[2].T + weights[3])
    torch.testing.assert_close(learner.evaluate_episode(task, steps=5), torch.stack(expected).detach())


def cnn(**options) -> MAML:
    torch.manual_seed(0)
    backbone = CNN4(in_channels=1, out_features=3, hidden=4, blocks=2, image_size=8)
    return MAML(backbone, inner_lr=0.3, inner_steps=2, **options)


def image_task(num_tasks: int = 2) -> Task:
    generator = torch.Generator().manual_seed(3)
    return Task(
        torch.randn(num_tasks, 3, 1, 8, 8, generator=generator),
        torch.arange(3).expand(num_tasks, -1),
        torch.randn(num_tasks, 6, 1, 8, 8, generator=generator),
        torch.arange(3).repeat(2).expand(num_tasks, -1),
    )


NORM_PARAMETERS = {"features.1.weight", "features.1.bias", "features.5.weight", "features.5.bias"}


def test_per_step_batch_norm_starts_as_the_shared_one_and_splits_its_gradient_by_step():
    """Rows start equal to the shared BatchNorm: a learner with one shared, non-adapted BatchNorm gives the
    same objective, and the rows' meta-gradients sum to the shared layer's (each row is the shared
    parameter as read by one step)."""
    task = image_task()
    shared, per_step = cnn(), cnn(per_step_batch_norm=True)
    shared._frozen = NORM_PARAMETERS  # meta-learned, not adapted, like the rows (the clone loop reads these)
    shared._adapted_names = [n for n in shared._adapted_names if n not in NORM_PARAMETERS]
    shared_losses, shared_grads = objective_gradient(shared, task)
    losses, grads = objective_gradient(per_step, task)
    torch.testing.assert_close(losses, shared_losses)
    by_name = dict(zip([n for n, _ in shared.named_parameters()], shared_grads))
    for name, grad in zip([n for n, _ in per_step.named_parameters()], grads):
        if name.removeprefix("maml.module.") in NORM_PARAMETERS:  # (steps + 1, C) rows
            assert grad.shape == (3, 4)
            torch.testing.assert_close(grad.sum(0), by_name[name], rtol=1e-4, atol=1e-6)
            assert (grad.abs().sum(1) > 0).all()  # every row learns (second order)
        else:
            torch.testing.assert_close(grad, by_name[name], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(losses, objective_gradient(cnn(), task)[0])  # adapting the shared one differs


def test_per_step_batch_norm_rows_are_meta_learned_not_adapted():
    learner = cnn(per_step_batch_norm=True)
    assert learner._frozen == NORM_PARAMETERS
    with torch.no_grad():  # a row that differs shows in the step that reads it, and only there
        learner.maml.module.features[1].weight[2].mul_(3.0)
    task = image_task()
    curve = learner.evaluate_episode(task, steps=2, every_step=True)
    reference = cnn(per_step_batch_norm=True).evaluate_episode(task, steps=2, every_step=True)
    torch.testing.assert_close(curve[:2], reference[:2])
    assert not torch.allclose(curve[2], reference[2])


@pytest.mark.parametrize("algorithm", [MAML, MetaSGD])
def test_clone_and_batched_loops_give_the_same_maml_plus_plus_objective_and_gradient(algorithm):
    options = {"multi_step_loss_steps": 10}
    if algorithm is MAML:  # Meta-SGD has its own rates and would adapt the rows
        options |= {"learn_inner_lrs": True, "per_step_batch_norm": True}
    task = image_task()
    results = {}
    for inner_loop in ("clone", "batched"):
        torch.manual_seed(0)
        backbone = CNN4(in_channels=1, out_features=3, hidden=4, blocks=2, image_size=8)
        results[inner_loop] = objective_gradient(
            algorithm(backbone, inner_lr=0.3, inner_steps=2, inner_loop=inner_loop, **options), task
        )
    torch.testing.assert_close(results["clone"][0], results["batched"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results["clone"][1], results["batched"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_backward_per_task_gives_the_maml_plus_plus_meta_gradient():
    options = {"per_step_batch_norm": True, "multi_step_loss_steps": 10, "learn_inner_lrs": True}
    task = image_task(3)
    expected = objective_gradient(cnn(**options), task)[1]
    learner = cnn(backward_per_task=True, **options)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer: Lightning's logging warns and skips
        learner.training_step(task, 0).backward()
    for a, b in zip(expected, [p.grad for p in learner.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_steps_beyond_the_rows_normalise_with_the_last_row():
    # Evaluation may run more steps than training: a step past the rows uses the last one.
    torch.manual_seed(0)
    layer = PerStepBatchNorm(4, rows=3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 4))
        layer.bias.copy_(torch.randn(3, 4))
    x = torch.randn(6, 4, 2, 2)
    outputs = {}
    for step in (1, 2, 5):
        layer.step = step
        outputs[step] = layer(x)
    torch.testing.assert_close(outputs[5], outputs[2])
    assert not torch.allclose(outputs[5], outputs[1])


def test_a_converted_batch_norm_keeps_its_momentum_and_dtype_and_refuses_what_rows_cannot_hold():
    norm = nn.BatchNorm2d(3, momentum=0.0).double()
    layer = PerStepBatchNorm.from_batch_norm(norm, rows=2)
    assert layer.momentum == 0.0 and layer.weight.dtype == layer.running_mean.dtype == torch.float64
    assert layer(torch.randn(4, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"Expected BatchNorm layers with affine parameters .*affine=False\)\."):
        PerStepBatchNorm.from_batch_norm(nn.BatchNorm2d(3, affine=False), rows=2)
    with pytest.raises(ValueError, match=r"Expected a BatchNorm `momentum` .*, but got None \(a cumulative average\)"):
        PerStepBatchNorm.from_batch_norm(nn.BatchNorm2d(3, momentum=None), rows=2)


def test_per_step_running_statistics_are_kept_per_step_and_used_in_evaluation():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    learner = MAML(backbone, inner_lr=0.3, inner_steps=2, per_step_batch_norm=True, inner_loop="clone")
    norm = learner.maml.module[1]
    assert isinstance(norm, PerStepBatchNorm) and norm.running_mean.shape == (3, 4)
    learner.train()
    learner.training_episode(image_task())
    # Each step normalised other activations (the network changed between steps): three distinct rows.
    means = norm.running_mean
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    assert not torch.equal(means, torch.zeros(3, 4))
    # In eval mode the rows' statistics normalise: moving them changes the predictions.
    learner.eval()
    before = learner.evaluate_episode(image_task())
    norm.running_mean.add_(1.0)
    assert not torch.allclose(learner.evaluate_episode(image_task()), before)
    with pytest.raises(ValueError, match=r"Expected no BatchNorm running statistics with `inner_loop` 'batched'"):
        MAML(backbone, inner_steps=2, per_step_batch_norm=True, inner_loop="batched")


def test_a_per_step_learner_reloads_with_its_rows_and_rates():
    learner = cnn(per_step_batch_norm=True, learn_inner_lrs=True)
    with torch.no_grad():
        learner.log_step_lrs["head-weight"].add_(0.5)
        learner.maml.module.features[1].bias[1].add_(0.25)
    options = {k: v for k, v in learner.hparams.items() if k != "backbone"}
    torch.manual_seed(1)  # other initial weights: everything comes from the state dict
    reloaded = MAML(CNN4(in_channels=1, out_features=3, hidden=4, blocks=2, image_size=8), **options)
    reloaded.load_state_dict(learner.state_dict())  # strict: the same rows and rates
    task = image_task()
    torch.testing.assert_close(reloaded.evaluate_episode(task), learner.evaluate_episode(task))


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: MetaSGD(MLP(4, (8,), 3), learn_inner_lrs=True),
            ValueError,
            r"Expected `learn_inner_lrs` False for MetaSGD",
        ),
        (
            lambda: ANIL(CNN4(hidden=4, blocks=2, image_size=8), per_step_batch_norm=True),
            ValueError,
            r"Expected BatchNorm layers in the part of the backbone that ANIL adapts with `per_step_batch_norm`",
        ),
        (
            lambda: MAML(MLP(4, (8,), 3), multi_step_loss_steps=-1),
            ValueError,
            r"Expected `multi_step_loss_steps` >= 0, but got -1\.",
        ),
        (
            lambda: MAML(MLP(4, (8,), 3), first_order_steps=2.5),
            TypeError,
            r"Expected `first_order_steps` to be int, but got float 2\.5\.",
        ),
        (lambda: MAML(MLP(4, (8,), 3), learn_inner_lrs="yes"), TypeError, r"Expected `learn_inner_lrs` to be bool"),
    ],
)
def test_bad_options_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_rates_are_learned_in_log_space_from_inner_lr():
    learner = MAML(MLP(4, (8,), 3), inner_lr=0.4, inner_steps=2, learn_inner_lrs=True)
    assert set(learner.log_step_lrs) == {"features-0-weight", "features-0-bias", "head-weight", "head-bias"}
    for rates in learner.inner_lrs(0).values():
        assert rates.item() == pytest.approx(0.4)
    assert all(v.shape == (2,) and v[0].item() == pytest.approx(math.log(0.4)) for v in learner.log_step_lrs.values())
