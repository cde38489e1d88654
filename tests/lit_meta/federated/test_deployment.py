"""``lit-meta federate`` on Flower's deployment runtime: a SuperLink and two SuperNodes started as
separate processes on 127.0.0.1 (insecure mode, free ports), the app of ``configs/federated/flower_app``."""

from __future__ import annotations

import json

import torch

from tests.helpers import ROOT
from tests.helpers.fabricate import omniglot_zip
from tests.helpers.flower_deployment import flwr_run, local_deployment

CONFIGS = ROOT / "configs" / "federated" / "omniglot"


def test_a_superlink_and_two_supernodes_run_the_federated_app(tmp_path):
    data = tmp_path / "data"
    for archive in ("images_background_small1", "images_background_small2"):  # 1 training, 1 test client
        omniglot_zip(str(data), archive, alphabets=1, characters=6)
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(
        f"rounds: 1\nlocal_steps: 2\nevaluate_every: 1\nlog_dir: {tmp_path / 'logs'}\nversion: deployed\n"
        "strategy:\n  init_args: {min_train_nodes: 1, min_evaluate_nodes: 1, min_available_nodes: 1}\n"
        "data:\n  init_args:\n    data:\n      init_args:\n"
        f"        {{data_dir: {data}, ways: 3, meta_batch_size: 1, test_tasks: 3}}\n"
    )
    config = ",".join(str(p) for p in (CONFIGS / "base.yaml", CONFIGS / "protonet.yaml", overrides))
    nodes = [f"partition-id={i} num-partitions=2" for i in range(2)]
    with local_deployment(tmp_path, nodes) as env:
        status = flwr_run(ROOT / "configs" / "federated" / "flower_app", f"config='{config}' nodes=2", env, tmp_path)
    assert status.startswith("finished:completed"), (tmp_path / "flwr_run.log").read_text()[-3000:]
    run = tmp_path / "logs" / "deployed"
    result = json.loads((run / "federated_result.json").read_text())
    assert result["settings"]["clients"] == {"0": "train", "1": "test"}
    assert [(r["round"], r["replies"]) for r in result["rounds"]] == [(1, 1)]
    assert result["rounds"][-1]["test-tasks"] == 3  # the test client evaluated after the last round
    assert torch.load(run / "checkpoints" / "last.ckpt")["federated"]["round"] == 1
