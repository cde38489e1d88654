"""A whole run on many generated clients: only the sampled ones cost anything; its own arguments."""

from __future__ import annotations

import pytest
import torch
from flwr.serverapp.strategy import FedAvg

import datamodules.synthetic as synthetic
import lit_meta.federated.grid as grid_module
from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import MAML
from lit_meta.federated import FederatedRun
from lit_meta.models import MLP


def _learner() -> MAML:
    torch.manual_seed(0)
    return MAML(MLP(60, (8,), 10), inner_lr=0.1, first_order=True, eval_inner_steps=1)


def _strategy(train: int, evaluate: int, train_devices: int, test_devices: int) -> FedAvg:
    """FedAvg sampling ``train`` of the training devices and ``evaluate`` of the held-out ones."""
    return FedAvg(
        fraction_train=(train + 0.5) / train_devices,
        fraction_evaluate=(evaluate + 0.5) / test_devices,
        min_train_nodes=2,
        min_evaluate_nodes=2,
        min_available_nodes=2,
    )


def test_a_run_of_1000_clients_builds_only_the_sampled_ones(tmp_path, monkeypatch, caplog):
    generated, built, contexts, calls = [], [], [], []
    generate = synthetic.synthetic_device
    monkeypatch.setattr(
        synthetic, "synthetic_device", lambda k, *a, **kw: (generated.append(k), generate(k, *a, **kw))[1]
    )
    build = SyntheticFederation.__call__
    monkeypatch.setattr(SyntheticFederation, "__call__", lambda self, p, r: (built.append(p), build(self, p, r))[1])
    make = grid_module.Context
    monkeypatch.setattr(grid_module, "Context", lambda **kw: (contexts.append(kw["node_id"]), make(**kw))[1])

    def recording(app):
        def call(message, context):
            calls.append((message.metadata.message_type, context.node_config["partition-id"]))
            return app(message, context)

        return call

    data = SyntheticFederation(num_devices=1000, test_tasks=2, meta_batch_size=2)  # 800 train, 200 held out
    run = FederatedRun(
        _learner(),
        data,
        _strategy(3, 2, 800, 200),
        rounds=2,
        local_steps=1,
        client_workers=2,  # Lightning trainers in two threads at once
        log_dir=str(tmp_path),
        version="run",
    )
    with caplog.at_level("INFO", logger="lit_meta.federated.outputs"):
        outputs = run.run(wrap_client_app=recording)
    trained = [p for kind, p in calls if kind == "train"]
    evaluated = [p for kind, p in calls if kind == "evaluate"]
    assert len(calls) == len(trained) + len(evaluated) == 10  # no `query`: the server knew the roles
    assert max(trained) < 800 <= min(evaluated)
    used = {p for _, p in calls}
    assert set(built) == set(generated) == used  # no other device's datamodule or data was built ...
    assert sorted(contexts) == sorted(1000 + p for p in used)  # ... nor its Flower Context
    assert [(r["sent"], r["replies"], r["late"], r["failures"]) for r in outputs.records] == [(3, 3, 0, 0)] * 2
    assert "Round 2: 3/3 replies (0 late, 0 failed) in " in caplog.text
    assert outputs.settings["clients"]["train"] == 800 and outputs.settings["client_workers"] == 2


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"client_workers": 0}, r"Expected `client_workers` >= 1, but got 0\."),
        (
            {"client_workers": 2, "backend": "simulation"},
            r"Expected `client_workers` 1 with backend 'simulation' \(Ray runs `num_cpus` clients at a time\), "
            r"but got 2\.",
        ),
        ({"rounds": 0}, r"Expected `rounds` >= 1, but got 0\."),
        ({"personal": ["*classifier*"]}, r"Expected `personal` pattern '\*classifier\*' to match weights of MAML"),
    ],
)
def test_bad_run_arguments_are_refused(arguments, match, tmp_path):
    data = SyntheticFederation(num_devices=10)
    with pytest.raises(ValueError, match=match):
        FederatedRun(_learner(), data, _strategy(2, 1, 8, 2), log_dir=str(tmp_path), **arguments)
