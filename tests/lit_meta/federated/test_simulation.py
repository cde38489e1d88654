"""``lit-meta federate --backend simulation``: the same apps on Flower's simulation runtime (Ray),
one CPU per client, give the in-process run's result."""

from __future__ import annotations

import json

import torch

from tests.lit_meta.federated.test_cli import federate


def test_two_rounds_on_flowers_simulation_runtime_match_the_in_process_run(data_dir, tmp_path):
    federate(data_dir, tmp_path, "--version=ray", "--backend=simulation", "--num_cpus=2")
    federate(data_dir, tmp_path, "--version=local")
    rounds = json.loads((tmp_path / "ray" / "federated_result.json").read_text())["rounds"]
    assert [(r["round"], r["replies"], r["test-tasks"]) for r in rounds] == [(1, 2, 6), (2, 2, 6)]
    ray, local = (torch.load(tmp_path / v / "checkpoints" / "last.ckpt")["state_dict"] for v in ("ray", "local"))
    # The same seeds and tasks: Ray's worker processes compute what this process does.
    assert all(torch.allclose(ray[k], local[k], rtol=1e-5, atol=1e-6) for k in local)
