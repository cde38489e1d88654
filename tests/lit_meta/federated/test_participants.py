"""Participant evaluation: training clients evaluated on their own local test data with their personal
state, pooled apart from the unseen test clients, whose figures stay as they are."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import MAML
from lit_meta.federated import (
    FederatedData,
    FederatedRun,
    FederationError,
    InProcessGrid,
    MetaClient,
    RunSettings,
    client_app,
    federate,
    learner_arrays,
)
from lit_meta.federated.data import EVALUATION, PARTICIPANT
from lit_meta.federated.grid import set_task_identity
from lit_meta.federated.records import load_arrays
from lit_meta.federated.roles import known_roles
from lit_meta.functional import pooled_mean_ci95
from lit_meta.models import MLP
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build
from tests.helpers.trainers import quiet_trainer

HELD_OUT = ("accuracy", "accuracy-ci95", "test-tasks", "eval-failures", "clients")


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Messages made here, outside a grid, take their run id from Flower's task identity."""
    set_task_identity(1)


def _learner() -> MAML:
    torch.manual_seed(0)
    return MAML(MLP(60, (8,), 10), inner_lr=0.1, first_order=True, eval_inner_steps=2)


def _federation() -> SyntheticFederation:
    """6 devices: 0-3 train, 4 and 5 are held out."""
    return SyntheticFederation(num_devices=6, test_fraction=1 / 3, meta_batch_size=2, test_tasks=3)


def _fedavg() -> FedAvg:
    return FedAvg(min_train_nodes=4, min_evaluate_nodes=2, min_available_nodes=2)


def _run(tmp_path, version: str, evaluate_participants: float):
    run = FederatedRun(
        _learner(),
        _federation(),
        _fedavg(),
        rounds=2,
        local_steps=2,
        evaluate_participants=evaluate_participants,
        log_dir=str(tmp_path),
        version=version,
    )
    return run.run()


def test_participants_are_pooled_apart_and_the_held_out_figures_stay_as_they_are(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lit_meta.federated.outputs"):
        outputs = _run(tmp_path, "participants", 1.0)
    plain = _run(tmp_path, "plain", 0.0)
    for record, without in zip(outputs.records, plain.records):
        assert {key: record[key] for key in HELD_OUT} == {key: without[key] for key in HELD_OUT}
        assert not any(key.startswith("participants") for key in without)
        assert sorted(record["participants"]) == [0, 1, 2, 3]  # every training device, no held-out one
        assert record["participants-tasks"] == 12 and record["participants-eval-failures"] == 0
        assert record["participants-trained"] == 4  # every device trains every round here
        figures = record["participants"].values()
        assert record["participants-accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in figures]))
        assert record["participants-accuracy-ci95"] > 0
    # Evaluating the participants changes nothing the rounds compute.
    last = [torch.load(o.checkpoint_path(), weights_only=False)["state_dict"] for o in (outputs, plain)]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])
    result = json.loads((tmp_path / "participants" / "federated_result.json").read_text())
    assert result["settings"]["evaluate_participants"] == 1.0
    assert sorted(result["participants"]) == ["0", "1", "2", "3"] and sorted(result["clients"]) == ["4", "5"]
    assert result["participants"]["2"]["round"] == 2
    assert "participants" not in json.loads((tmp_path / "plain" / "federated_result.json").read_text())
    (events,) = (tmp_path / "participants").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"federated/participants-accuracy", "federated/participants-accuracy-ci95"} <= set(scalars)
    assert {"federated/participant_0/accuracy", "federated/client_4/accuracy"} <= set(scalars)
    accuracy, ci95 = outputs.records[-1]["participants-accuracy"], outputs.records[-1]["participants-accuracy-ci95"]
    assert f"participants accuracy {accuracy:.4f} +- {ci95:.4f}" in caplog.text


def test_a_participant_reports_its_personal_model_on_its_local_test_data():
    """A device that keeps its head (partial federation) is evaluated with the global body and its own
    head, on its participant tasks: the figure it reports is that of this model, computed here by hand."""
    learner, federation = _learner(), _federation()
    client = MetaClient(learner, federation, local_steps=2, personal=["*head*"])
    grid = InProcessGrid(client_app(client), 6)
    settings = RunSettings(rounds=2, local_steps=2, personal=client.personal, evaluate_participants=0.5, seed=3)
    roles = known_roles(grid.partitions(), federation.role)
    result = federate(grid, learner, _fedavg(), settings, roles=roles)
    evaluated = result.rounds[2]["participants"]
    assert len(evaluated) == 2 and set(evaluated) <= {0, 1, 2, 3}  # round(0.5 * 4)
    assert sorted(evaluated) == settings.participants([0, 1, 2, 3], 2)
    shared = [name for name in learner_arrays(learner) if name not in client.personal]
    per_task = {}
    for device in evaluated:
        model = copy.deepcopy(learner)
        load_arrays(model, result.arrays, absent=client.personal)  # the round's global body ...
        load_arrays(model, grid.context(1000 + device).state["personal"], absent=shared)  # ... and its own head
        model.record_test_curves(model.eval_inner_steps)
        quiet_trainer().test(model, datamodule=federation.participant_tasks(device), verbose=False)
        per_task[device] = model.test_curves()[-1].double()
        assert evaluated[device]["accuracy"] == pytest.approx(per_task[device].mean().item(), abs=1e-12)
    figures = [per_task[d] for d in sorted(per_task)]
    mean, _ = pooled_mean_ci95(
        [f.mean().item() for f in figures], [f.square().mean().item() for f in figures], [len(f) for f in figures]
    )
    assert result.rounds[2]["participants-accuracy"] == pytest.approx(mean, abs=1e-12)


def test_a_round_whose_every_participant_evaluation_fails_stops_the_run():
    learner, federation = _learner(), _federation()

    def failing(app):
        def call(message, context):
            if message.metadata.message_type == "evaluate" and context.node_config["partition-id"] < 4:
                raise RuntimeError("local test data unreadable")
            return app(message, context)

        return call

    grid = InProcessGrid(failing(client_app(MetaClient(learner, federation, local_steps=1))), 6)
    roles = known_roles(grid.partitions(), federation.role)
    settings = RunSettings(rounds=2, local_steps=1, evaluate_participants=0.5)
    with pytest.raises(
        FederationError,
        match=r"Expected >= 1 usable participant evaluation reply in round 1, but got 0 of 2 \(node 10\d\d: "
        r"RuntimeError: local test data unreadable; ",
    ):
        federate(grid, learner, _fedavg(), settings, roles=roles)


def test_participants_need_clients_that_only_train():
    learner = build("protonet", "classification")
    grid = InProcessGrid(client_app(MetaClient(learner, ClientBlobs, local_steps=1)), 2)  # no roles: "both"
    fedavg = FedAvg(min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2)
    with pytest.raises(
        ValueError,
        match=r"Expected >= 1 training client of role 'train' to evaluate with `evaluate_participants` 0.5, but got "
        r"none \(a client of role 'both' is evaluated as a test client\)\.",
    ):
        federate(grid, learner, fedavg, RunSettings(rounds=1, local_steps=1, evaluate_participants=0.5))
    assert {r.metadata.message_type for r in grid.replies} == {"query"}  # refused before round 1


def test_a_client_whose_data_has_no_local_test_data_refuses_a_participant_evaluation():
    learner = build("protonet", "classification")
    client = MetaClient(learner, ClientBlobs, local_steps=1)
    config = ConfigRecord({"server-round": 1, EVALUATION: PARTICIPANT})
    message = Message(
        content=RecordDict({"arrays": learner_arrays(learner), "config": config}),
        message_type="evaluate",
        dst_node_id=1000,
    )
    context = Context(1, 1000, {"partition-id": 0}, RecordDict(), {})
    with pytest.raises(
        ValueError,
        match=r"Expected `data` with `participant_tasks` to evaluate training client 0 on its local test data, but got "
        r"type, which has none\.",
    ):
        client.evaluate(message, context)


def test_a_run_refuses_participants_where_the_data_has_no_local_test_data(tmp_path):
    class Unsplit(SyntheticFederation):
        participant_tasks = FederatedData.participant_tasks  # the contract's default: none

    run = FederatedRun(
        _learner(), Unsplit(num_devices=6), _fedavg(), rounds=1, evaluate_participants=0.5, log_dir=str(tmp_path)
    )
    with pytest.raises(
        ValueError, match=r"Expected data whose training clients hold local test data .* but got Unsplit"
    ):
        run.run()
    assert not list(tmp_path.rglob("*.ckpt"))
