"""The maths of each algorithm against independent references: prototypes, Meta-SGD's learning
rates, ANIL's frozen body, Reptile's interpolation."""

import copy

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from lit_meta.algorithms import ANIL, MAML, MetaSGD, PrototypicalNetworks, Reptile
from lit_meta.algorithms.reptile import annealed
from lit_meta.functional import gradient_surrogate, prototype_logits, prototypes, reptile_displacement
from lit_meta.models import CNN4, MLP
from lit_meta.tasks import Task
from tests.conftest import make_classification_task
from tests.helpers import BlobsDataModule


# ---- Prototypical Networks --------------------------------------------------------------------------
def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    support = torch.randn(2, 6, 3)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    query = torch.randn(2, 4, 3)
    centres = prototypes(support, labels, 3)
    logits = prototype_logits(query, centres)
    for b in range(2):
        for k in range(3):
            expected = support[b][labels[b] == k].mean(0)
            torch.testing.assert_close(centres[b, k], expected)
            for i in range(4):
                assert logits[b, i, k].item() == pytest.approx(-((query[b, i] - expected) ** 2).sum().item(), rel=1e-5)


def test_cosine_logits_are_scaled_cosine_similarities():
    query, centres = torch.randn(1, 2, 3), torch.randn(1, 4, 3)
    logits = prototype_logits(query, centres, "cosine", scale=10.0)
    expected = 10.0 * nn.functional.cosine_similarity(query[0, :, None], centres[0, None], dim=-1)
    torch.testing.assert_close(logits[0], expected)


def test_unknown_distance_raises():
    with pytest.raises(ValueError, match=r"Expected `distance` to be one of 'euclidean', 'cosine', but got 'l1'\."):
        PrototypicalNetworks(MLP(4, (8,), 3), distance="l1")


def test_protonet_episode_is_the_prototype_rule_on_the_backbone_features():
    backbone = MLP(4, (8,), 3)
    learner = PrototypicalNetworks(backbone)
    task = make_classification_task(num_tasks=2, ways=3)
    logits = learner.evaluate_episode(task)
    for b in range(2):
        embedded = backbone.features(torch.cat([task.support_x[b], task.query_x[b]]))
        support, query = embedded[:6], embedded[6:]
        centres = torch.stack([support[task.support_y[b] == k].mean(0) for k in range(3)])
        torch.testing.assert_close(logits[b], -(torch.cdist(query, centres) ** 2), rtol=1e-4, atol=1e-4)


def test_protonet_trains_with_more_ways_than_it_tests():
    learner = PrototypicalNetworks(MLP(4, (8,), 3))
    wide, narrow = make_classification_task(ways=7), make_classification_task(ways=3)
    assert learner.episode(wide, training=True).shape == (2, 21, 7)
    assert learner.evaluate_episode(narrow).shape == (2, 9, 3)


# ---- Meta-SGD --------------------------------------------------------------------------------------
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
    Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(learner, BlobsDataModule())
    assert all((lr != 0.1).any() for lr in learner.maml.lrs)


# ---- ANIL ------------------------------------------------------------------------------------------
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


# ---- Reptile ---------------------------------------------------------------------------------------
def test_reptile_step_is_the_hand_computed_interpolation():
    torch.manual_seed(5)
    backbone = MLP(4, (8,), 3)
    theta = copy.deepcopy(backbone)
    data = BlobsDataModule(batches=1, meta_batch_size=3)
    learner = Reptile(backbone, inner_lr=0.3, inner_steps=4, epsilon=0.5, anneal=False)
    Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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
    trainer = Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(learner, BlobsDataModule())
    assert trainer.global_step == 3
    assert trainer.callback_metrics["train/epsilon"].item() == pytest.approx(1 / 3)


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


# ---- memory and precision switches of the MAML family ---------------------------------------------


def training_step_gradient(learner, task):
    """The meta-gradient the training step leaves in ``.grad``, and the loss it reports."""
    learner.zero_grad()
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here: Lightning's logging warns and skips
        loss = learner.training_step(task, 0)
    loss.backward()
    return [p.grad.clone() for p in learner.parameters()], loss.detach()


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


class _Scaler:
    """Stands in for the precision plugin's GradScaler under `16-mixed` (CUDA only)."""

    def get_scale(self) -> float:
        return 1024.0

    def is_enabled(self) -> bool:
        return True


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
