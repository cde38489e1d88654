"""Inverse-variance aggregation: the weights against hand computation, the strategy on real rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_meta.federated import InProcessGrid, MetaClient, client_app, federate, learner_arrays
from lit_meta.federated.strategies import InverseVarianceFedAvg
from lit_meta.functional import inverse_variance_weights
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build


def test_weights_are_the_normalised_inverse_variances():
    # Variances (over entries, population): 1 and 4, so inverses 1 and 1/4, normalised 0.8 and 0.2.
    updates = torch.tensor([[1.0, -1.0], [2.0, -2.0]])
    torch.testing.assert_close(inverse_variance_weights(updates, eps=0.0), torch.tensor([0.8, 0.2]))


def test_an_update_scaled_by_10_gets_a_hundredth_of_the_weight():
    update = torch.randn(1, 50)
    weights = inverse_variance_weights(torch.cat([update, update, 10 * update]), eps=0.0)
    torch.testing.assert_close(weights, torch.tensor([100.0, 100.0, 1.0]) / 201.0)


def test_weights_need_a_matrix_of_updates():
    with pytest.raises(ValueError, match=r"Expected updates of shape \(clients, parameters\), but got \(3,\)"):
        inverse_variance_weights(torch.ones(3))


def test_the_strategy_aggregates_with_the_inverse_variance_weights():
    learner = build("protonet", "classification")
    initial = {k: v.numpy().astype(np.float64) for k, v in learner_arrays(learner).items()}
    grid = InProcessGrid(client_app(MetaClient(learner, ClientBlobs, local_steps=2)), 3)
    strategy = InverseVarianceFedAvg(min_train_nodes=3, min_available_nodes=3, min_evaluate_nodes=3)
    result = federate(grid, learner, strategy, rounds=1, local_steps=2)
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    states = [{k: v.numpy().astype(np.float64) for k, v in r.content.array_records["arrays"].items()} for r in train]
    # Independent re-implementation in float64 numpy: variance of each flattened update.
    variances = [np.concatenate([(s[k] - initial[k]).ravel() for k in initial]).var() for s in states]
    weights = np.array([1 / (v + 1e-12) for v in variances])
    weights /= weights.sum()
    for name, value in result.arrays.items():
        expected = sum(w * s[name] for w, s in zip(weights, states))
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-7)
