"""``lit-meta federate --backend simulation``: the same apps on Flower's simulation runtime (Ray),
one CPU per client, give the in-process run's result, the training clients' participant evaluations
(on their held-out drawers) and their personal weights (kept by the server's client pool, travelling
with each client's messages to whichever Flower node serves it) included."""

from __future__ import annotations

import json

import pytest
import torch

from tests.lit_meta.federated.test_cli import federate


def test_two_rounds_on_flowers_simulation_runtime_match_the_in_process_run(data_dir, tmp_path):
    participants = (
        "--data.init_args.local_test_fraction=0.25",
        "--evaluate_participants=1.0",
        '--personal=["features.13.*"]',  # each client's last BatchNorm is its own (FedBN-style)
    )
    federate(data_dir, tmp_path, *participants, "--version=ray", "--backend=simulation", "--num_cpus=2")
    federate(data_dir, tmp_path, *participants, "--version=local")
    rounds = json.loads((tmp_path / "ray" / "federated_result.json").read_text())["rounds"]
    assert [(r["round"], r["replies"], r["test-tasks"], r["participants-tasks"]) for r in rounds] == [
        (1, 2, 6, 6),
        (2, 2, 6, 6),
    ]
    local = json.loads((tmp_path / "local" / "federated_result.json").read_text())["rounds"]
    for remote, here in zip(rounds, local):  # the clients sampled, and their figures
        for key in ("clients", "participants"):
            assert remote[key].keys() == here[key].keys()
            assert all(remote[key][c]["accuracy"] == pytest.approx(here[key][c]["accuracy"]) for c in here[key])
    ray, local = (torch.load(tmp_path / v / "checkpoints" / "last.ckpt")["state_dict"] for v in ("ray", "local"))
    # The same seeds and tasks: Ray's worker processes compute what this process does.
    assert all(torch.allclose(ray[k], local[k], rtol=1e-5, atol=1e-6) for k in local)
