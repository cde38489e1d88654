"""Prototypical Networks against hand computations: prototypes, distances, the episode."""

import pytest
import torch
from torch import nn

from lit_meta.algorithms import PrototypicalNetworks
from lit_meta.functional import prototype_logits, prototypes
from lit_meta.models import MLP
from tests.helpers.tasks import make_classification_task


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


def test_unsquared_euclidean_logits_are_negative_distances_in_float64():
    generator = torch.Generator().manual_seed(0)
    query, centres = torch.randn(3, 40, 16, generator=generator), torch.randn(3, 5, 16, generator=generator)
    logits = prototype_logits(query, centres, "euclidean_unsquared")
    expected = -torch.cdist(query.double(), centres.double(), compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(logits.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits**2, -prototype_logits(query, centres, "euclidean"), rtol=1e-5, atol=1e-5)


def test_unsquared_euclidean_gradient_is_finite_where_a_query_is_its_prototype():
    query = torch.tensor([[[1.0, 2.0], [4.0, 2.0]]], requires_grad=True)
    centres = torch.tensor([[[1.0, 2.0], [4.0, 6.0]]])  # the first query sits on the first prototype
    logits = prototype_logits(query, centres, "euclidean_unsquared")
    assert logits.tolist() == [[[0.0, -5.0], [-3.0, -4.0]]]
    logits.sum().backward()
    # d(-||q - c||)/dq = -(q - c) / ||q - c||, and 0 where q = c (as torch.cdist's gradient).
    torch.testing.assert_close(query.grad, torch.tensor([[[0.6, 0.8], [-1.0, 1.0]]]))


@pytest.mark.parametrize("distance", ["euclidean", "euclidean_unsquared", "cosine"])
def test_protonet_scores_queries_by_its_distance(distance):
    backbone = MLP(4, (8,), 3)
    learner = PrototypicalNetworks(backbone, distance=distance)
    task = make_classification_task(num_tasks=2, ways=3)
    logits = learner.evaluate_episode(task)
    for b in range(2):
        embedded = backbone.features(torch.cat([task.support_x[b], task.query_x[b]])).double()
        support, query = embedded[:6], embedded[6:]
        centres = torch.stack([support[task.support_y[b] == k].mean(0) for k in range(3)])
        expected = {
            "euclidean": -(torch.cdist(query, centres) ** 2),
            "euclidean_unsquared": -torch.cdist(query, centres),
            "cosine": 10.0 * nn.functional.cosine_similarity(query[:, None], centres[None], dim=-1),
        }[distance]
        torch.testing.assert_close(logits[b].double(), expected, rtol=1e-4, atol=1e-4)


def test_unknown_distance_raises():
    with pytest.raises(
        ValueError,
        match=r"Expected `distance` to be one of 'euclidean', 'euclidean_unsquared', 'cosine', but got 'l1'\.",
    ):
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
