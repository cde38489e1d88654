"""Matching Networks: the attention maths against hand-written loops, episode shapes, gradients, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_meta.algorithms.matching import FullContextEmbedding, MatchingNetworks, cosine_attention, matching_log_probs
from lit_meta.models import CNN4, MLP
from lit_meta.tasks import Task
from tests.helpers.tasks import make_classification_task

WAYS = 3


def image_task(num_tasks: int = 2, ways: int = WAYS, shots: int = 2, queries: int = 3) -> Task:
    def part(n: int):
        y = torch.arange(ways).repeat_interleave(n).expand(num_tasks, -1)
        return torch.randn(num_tasks, ways * n, 1, 8, 8) + y[..., None, None, None].float(), y

    return Task(*part(shots), *part(queries))


def small_cnn() -> CNN4:
    return CNN4(in_channels=1, out_features=WAYS, hidden=4, blocks=2, image_size=8)


# ---- pure functions ------------------------------------------------------------------------------
def test_cosine_attention_matches_loop_reference():
    query, support = torch.randn(2, 3, 5), torch.randn(2, 4, 5)
    expected = torch.empty(2, 3, 4)
    for b in range(2):
        for i in range(3):
            sims = torch.stack([F.cosine_similarity(query[b, i], support[b, j], dim=0) for j in range(4)])
            expected[b, i] = torch.exp(sims) / torch.exp(sims).sum()
    # Scaling the embeddings must not matter: cosine, not dot product.
    got = cosine_attention(3.0 * query, 0.5 * support)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 3))


def test_matching_log_probs_sums_attention_per_class():
    attention = torch.randn(2, 5, 6).softmax(-1)
    support_y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    log_probs = matching_log_probs(attention, support_y, WAYS)
    expected = torch.zeros(2, 5, WAYS)
    for b in range(2):
        for i in range(6):
            expected[b, :, support_y[b, i]] += attention[b, :, i]
    torch.testing.assert_close(log_probs.exp(), expected)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 5))


def test_one_shot_query_equal_to_a_support_sample_gets_its_class():
    support_y = torch.tensor([[2, 0, 3, 1]])
    support = torch.randn(1, 4, 6)
    order = torch.tensor([3, 1, 0, 2, 1])
    query = support[:, order]  # query j is exactly support sample order[j]
    log_probs = matching_log_probs(cosine_attention(query, support), support_y, 4)
    assert torch.equal(log_probs.argmax(-1), support_y[:, order])


def test_class_without_support_sample_has_finite_log_prob():
    attention = torch.full((1, 2, 2), 0.5)
    log_probs = matching_log_probs(attention, torch.tensor([[0, 1]]), ways=3)
    assert torch.isfinite(log_probs).all()
    assert (log_probs[..., 2] < -80).all()


def test_full_context_embedding_matches_per_task_per_query_loop():
    dim, steps = 5, 3
    fce = FullContextEmbedding(dim, steps)
    query, support = torch.randn(2, 3, dim), torch.randn(2, 4, dim)
    f, g = fce(query, support)
    assert f.shape == (2, 3, dim) and g.shape == (2, 4, dim)
    for b in range(2):
        out, _ = fce.support_lstm(support[b : b + 1])  # one task, one sequence
        g_ref = out[0, :, :dim] + out[0, :, dim:] + support[b]
        torch.testing.assert_close(g[b], g_ref)
        for q in range(3):
            f_prime = query[b, q]
            h, c = f_prime, torch.zeros(dim)
            for _ in range(steps):
                weights = torch.softmax(torch.stack([h @ g_ref[i] for i in range(4)]), 0)
                readout = sum(weights[i] * g_ref[i] for i in range(4))
                h, c = fce.query_cell(torch.cat([f_prime, readout])[None], (h[None], c[None]))
                h, c = h[0] + f_prime, c[0]
            torch.testing.assert_close(f[b, q], h)


# ---- the learner ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fce", [False, True])
def test_episode_shapes_and_every_step(fce):
    learner = MatchingNetworks(MLP(4, (8,), WAYS), fce=fce, fce_steps=2)
    task = make_classification_task(num_tasks=2, ways=WAYS, shots=2, queries=3)
    predictions = learner.episode(task, training=True)
    assert predictions.shape == (2, WAYS * 3, WAYS)
    assert predictions.requires_grad
    torch.testing.assert_close(predictions.exp().sum(-1), torch.ones(2, WAYS * 3))

    curve = learner.episode(task, training=False, steps=3, every_step=True)
    assert curve.shape == (4, 2, WAYS * 3, WAYS)
    assert not curve.requires_grad
    torch.testing.assert_close(curve[0], torch.full_like(curve[0], -math.log(WAYS)))
    for step in range(1, 4):
        torch.testing.assert_close(curve[step], predictions.detach())
    assert not torch.allclose(curve[1], curve[0])
    torch.testing.assert_close(learner.episode(task, training=False, steps=0), curve[0])
    assert learner.episode(task, training=False, every_step=True).shape == (2, 2, WAYS * 3, WAYS)


@pytest.mark.parametrize("fce", [False, True])
def test_cnn_episode_embeds_each_task_on_its_own(fce):
    # CNN4's BatchNorm uses batch statistics: a task's prediction must not depend on the other tasks.
    learner = MatchingNetworks(small_cnn(), fce=fce, fce_steps=2)
    task = image_task(num_tasks=3)
    with torch.inference_mode():
        predictions = learner.evaluate_episode(task)
    assert predictions.shape == (3, WAYS * 3, WAYS)
    alone = learner.evaluate_episode(Task(*(t[1:2] for t in task)))
    torch.testing.assert_close(predictions[1:2], alone)


def test_loss_is_the_negative_log_likelihood():
    learner = MatchingNetworks(MLP(4, (8,), WAYS), fce=True)
    task = make_classification_task()
    log_probs = learner.episode(task, training=True)
    nll = -log_probs.gather(-1, task.query_y[..., None]).squeeze(-1).mean(1)
    torch.testing.assert_close(learner.task_losses(log_probs, task.query_y), nll)


def test_gradients_reach_backbone_and_fce_and_head_is_not_a_parameter():
    backbone = MLP(4, (8,), WAYS)
    learner = MatchingNetworks(backbone, fce=True, fce_steps=2)
    task = make_classification_task()
    learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
    names = [name for name, _ in learner.named_parameters()]
    assert any(name.startswith("features.") for name in names)
    assert any(name.startswith("fce.support_lstm.") and name.endswith("_reverse") for name in names)
    assert any(name.startswith("fce.query_cell.") for name in names)
    assert not any("head" in name for name in names)
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_few_meta_steps_reduce_the_loss():
    learner = MatchingNetworks(MLP(4, (8,), WAYS))
    optimizer = learner.configure_optimizers()
    task = make_classification_task(num_tasks=4)
    losses = []
    for _ in range(30):
        loss = learner.task_losses(learner.episode(task, training=True), task.query_y).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01


# ---- errors --------------------------------------------------------------------------------------
def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"Expected `fce_steps` >= 1, but got 0\."):
        MatchingNetworks(MLP(4, (8,), WAYS), fce=True, fce_steps=0)
    with pytest.raises(TypeError, match=r"Expected `fce` to be bool, but got str 'yes'\."):
        MatchingNetworks(MLP(4, (8,), WAYS), fce="yes")
    with pytest.raises(TypeError, match=r"Expected `backbone` to be Module"):
        MatchingNetworks("cnn4")
    with pytest.raises(
        TypeError, match=r"Expected `backbone` to have a `features` module and a linear `head`.*but got Sequential"
    ):
        MatchingNetworks(nn.Sequential(nn.Linear(4, 3)))


def test_embedding_size_mismatch_and_negative_steps_raise():
    backbone = MLP(4, (8,), WAYS)
    backbone.head = nn.Linear(5, WAYS)
    task = make_classification_task()
    with pytest.raises(ValueError, match=r"Expected `backbone.features` to output 5 features .*but got 8\."):
        MatchingNetworks(backbone).episode(task, training=True)
    with pytest.raises(ValueError, match=r"Expected `steps` >= 0, but got -1\."):
        MatchingNetworks(MLP(4, (8,), WAYS)).episode(task, training=False, steps=-1)


def test_cosine_scale_sharpens_the_attention():
    query, support = torch.randn(1, 2, 5), torch.randn(1, 4, 5)
    cosines = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
    torch.testing.assert_close(cosine_attention(query, support, scale=10.0), (10.0 * cosines).softmax(-1))
    assert cosine_attention(query, support, 10.0).max() > cosine_attention(query, support).max()
    with pytest.raises(ValueError, match=r"Expected `cosine_scale` > 0, but got 0\."):
        MatchingNetworks(MLP(4, (8,), 3), cosine_scale=0)


def test_learned_scale_starts_at_cosine_scale_and_gets_a_gradient():
    learner = MatchingNetworks(MLP(4, (8,), WAYS), cosine_scale=10.0, learn_scale=True)
    assert learner.cosine_scale.item() == 10.0
    assert any(p is learner.cosine_scale for p in learner.parameters())
    task = make_classification_task()
    learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
    assert learner.cosine_scale.grad is not None and learner.cosine_scale.grad.abs() > 0
    with pytest.raises(TypeError, match=r"Expected `learn_scale` to be bool, but got str 'yes'\."):
        MatchingNetworks(MLP(4, (8,), WAYS), learn_scale="yes")
