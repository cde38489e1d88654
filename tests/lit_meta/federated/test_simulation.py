"""The same ServerApp and ClientApp on Flower's simulation runtime (Ray), one CPU per client."""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from lit_meta.federated import MetaClient, client_app, learner_arrays, server_app
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build


def test_two_rounds_on_flowers_simulation_runtime():
    learner = build("protonet", "classification")
    before = {k: v.numpy() for k, v in learner_arrays(learner).items()}
    results = []
    strategy = FedAvg(min_train_nodes=2, min_available_nodes=2, min_evaluate_nodes=2)
    run_simulation(
        server_app(learner, strategy, rounds=2, local_steps=2, on_result=results.append),
        client_app(MetaClient(learner, ClientBlobs, local_steps=2)),
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    (result,) = results
    assert set(result.train_metrics_clientapp) == {1, 2}
    assert 0.0 <= result.evaluate_metrics_clientapp[2]["accuracy"] <= 1.0
    after = {k: v.numpy() for k, v in result.arrays.items()}
    assert any(not np.array_equal(after[k], before[k]) for k in before)
