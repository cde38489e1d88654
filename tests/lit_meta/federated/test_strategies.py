"""Inverse-variance aggregation: the weights against hand computation, the strategy on real rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_meta.federated import InProcessGrid, MetaClient, RunSettings, client_app, federate, learner_arrays
from lit_meta.federated.strategies import InverseVarianceFedAvg
from lit_meta.functional import inverse_variance_weights
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build


def test_weights_are_the_normalised_inverse_spreads_about_the_mean_update():
    # Mean update (2, 2); mean squared deviations 1, 1 and 4; inverses 1, 1, 1/4; normalised 4/9, 4/9, 1/9.
    updates = torch.tensor([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0]])
    torch.testing.assert_close(
        inverse_variance_weights(updates), torch.tensor([4.0, 4.0, 1.0]) / 9.0, rtol=1e-5, atol=0.0
    )


def test_an_update_scaled_by_10_counts_least():
    # u, u, 10u: mean 4u, deviations 9|u|^2, 9|u|^2, 36|u|^2, so weights 4/9, 4/9, 1/9.
    update = torch.randn(1, 50)
    weights = inverse_variance_weights(torch.cat([update, update, 10 * update]))
    torch.testing.assert_close(weights, torch.tensor([4.0, 4.0, 1.0]) / 9.0, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("odd", ["stale", "shifted"])
def test_a_stale_or_shifted_update_counts_least(odd):
    # Neither has spread of its own: weighted by its own variance, each took almost all the weight.
    generator = torch.Generator().manual_seed(0)
    honest = torch.randn(1, 200, generator=generator) + 0.1 * torch.randn(3, 200, generator=generator)
    other = torch.zeros(1, 200) if odd == "stale" else torch.full((1, 200), 5.0)
    weights = inverse_variance_weights(torch.cat([honest, other]))
    assert weights[3] < 0.05 and weights[3] == weights.min()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))


def test_identical_updates_and_two_clients_count_alike():
    torch.testing.assert_close(inverse_variance_weights(torch.ones(3, 4)), torch.full((3,), 1 / 3))
    torch.testing.assert_close(inverse_variance_weights(torch.randn(2, 10)), torch.full((2,), 0.5))


def test_weights_need_a_matrix_of_updates():
    with pytest.raises(ValueError, match=r"Expected updates of shape \(clients, parameters\), but got \(3,\)"):
        inverse_variance_weights(torch.ones(3))
    with pytest.raises(ValueError, match=r"Expected `eps` > 0, but got 0.0."):
        inverse_variance_weights(torch.ones(3, 2), eps=0.0)


def test_the_strategy_aggregates_with_the_inverse_variance_weights():
    learner = build("protonet", "classification")
    initial = {k: v.numpy().astype(np.float64) for k, v in learner_arrays(learner).items()}
    grid = InProcessGrid(client_app(MetaClient(learner, ClientBlobs, local_steps=2)), 3)
    strategy = InverseVarianceFedAvg(min_train_nodes=3, min_available_nodes=3, min_evaluate_nodes=3)
    result = federate(grid, learner, strategy, RunSettings(rounds=1, local_steps=2))
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    states = [{k: v.numpy().astype(np.float64) for k, v in r.content.array_records["arrays"].items()} for r in train]
    # Independent re-implementation in float64 numpy: each flattened update's mean squared deviation
    # from the mean update.
    updates = np.stack([np.concatenate([(s[k] - initial[k]).ravel() for k in initial]) for s in states])
    variances = ((updates - updates.mean(0)) ** 2).mean(1)
    weights = 1 / (variances + 1e-6 * variances.mean())
    weights /= weights.sum()
    assert weights.max() / weights.min() > 1.01  # the clients' weights differ: the test can tell
    for name, value in result.arrays.items():
        expected = sum(w * s[name] for w, s in zip(weights, states))
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-7)
