"""The Synthetic configs of the personalised FL baselines run with ``lit-meta federate``; the FedAvg one is
plain local SGD. (The Omniglot ones are run by test_cli.py's test_every_federated_config_runs_a_round.)"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from torch import nn

from lit_meta.algorithms import Reptile
from lit_meta.cli import main
from lit_meta.models import MLP
from tests.helpers import ROOT
from tests.helpers.personalised import fit
from tests.helpers.tasks import make_classification_task

CONFIGS = ROOT / "configs" / "federated" / "synthetic"
# Each config and what makes it tiny beyond the common overrides.
PERSONALISED = {
    "fedavg": [],
    "perfedavg_fo": [],
    "perfedavg_hf": [],
    "ditto": [],
    "fedrep": ["--model.init_args.head_steps=1"],  # of the 2 local steps: the body trains too
    "pfedme": ["--model.init_args.personal_steps=2"],
}


@pytest.mark.parametrize("name", sorted(PERSONALISED))
def test_lit_meta_federate_runs_the_personalised_config_on_10_devices(name, tmp_path):
    main(
        [
            "federate",
            "--config",
            str(CONFIGS / "base.yaml"),
            "--config",
            str(CONFIGS / f"{name}.yaml"),
            "--data.init_args.num_devices=10",  # 8 train, 2 held out
            "--data.init_args.test_tasks=2",
            "--data.init_args.meta_batch_size=2",
            "--model.init_args.backbone.init_args.hidden=[8]",
            "--model.init_args.eval_inner_steps=2",
            "--strategy.init_args.fraction_train=0.25",  # 2 devices a round
            "--strategy.init_args.fraction_evaluate=1.0",
            "--rounds=1",
            "--local_steps=2",
            f"--log_dir={tmp_path}",
            "--version=run",
            *PERSONALISED[name],
        ]
    )
    result = json.loads((tmp_path / "run" / "federated_result.json").read_text())
    (record,) = result["rounds"]
    assert (record["sent"], record["replies"], record["test-tasks"]) == (2, 2, 4)
    assert 0.0 <= record["accuracy"] <= 1.0
    # The weights each device keeps: Ditto's personal model and flag, FedRep's head, none for the others.
    personal = result["settings"]["personal"]
    kept = {"ditto": ("personal_model.",), "fedrep": ("backbone.head.", "head_trained")}
    if name in kept:
        assert personal and all(entry.startswith(kept[name]) for entry in personal), personal
    else:
        assert personal == []


def test_the_fedavg_config_is_plain_local_sgd_on_every_sample():
    init = yaml.safe_load((CONFIGS / "fedavg.yaml").read_text())["model"]["init_args"]
    assert (init["inner_steps"], init["epsilon"], init["anneal"], init["inner_batch_size"]) == (1, 1.0, False, None)
    torch.manual_seed(0)
    backbone = MLP(4, (8,), 3)
    reference = copy.deepcopy(backbone)
    lr = init["inner_lr"]
    options = {k: init[k] for k in ("inner_lr", "inner_steps", "inner_batch_size", "epsilon", "anneal")}
    learner = Reptile(backbone, **options)
    task = make_classification_task(3, 3, 2, 4)
    fit(learner, [task], 1)
    losses = [
        nn.functional.cross_entropy(reference(torch.cat([sx, qx])), torch.cat([sy, qy]))
        for sx, sy, qx, qy in zip(*task)
    ]
    torch.stack(losses).mean().backward()
    for got, p in zip(backbone.parameters(), reference.parameters()):
        torch.testing.assert_close(got, (p - lr * p.grad).detach(), rtol=1e-5, atol=1e-6)
