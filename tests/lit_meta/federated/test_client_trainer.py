"""The client's lean call, a barebones Trainer: the replies are those of Lightning's full Trainer, bit
for bit, and do not depend on the calls the client served before."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from lightning.pytorch import seed_everything

from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import MAML, Ditto
from lit_meta.federated import MetaClient, learner_arrays
from lit_meta.federated.data import EVALUATION, PARTICIPANT
from lit_meta.federated.grid import set_task_identity
from lit_meta.federated.records import load_arrays, without
from lit_meta.federated.trainer import client_trainer
from lit_meta.models import MLP
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build
from tests.helpers.trainers import quiet_trainer


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Messages made here, outside a grid, take their run id from Flower's task identity."""
    set_task_identity(1)


def _synthetic(name: str):
    torch.manual_seed(0)
    if name == "maml_head":  # the batched inner loop, a personal head
        learner = MAML(MLP(60, (8,), 10), inner_lr=0.1, first_order=True, eval_inner_steps=2, inner_loop="batched")
        return learner, ["*head*"]
    return Ditto(MLP(60, (8,), 10), lam=0.1, lr=0.1, eval_inner_steps=2), ["personal_model.*"]  # a round's state


def _message(arrays: ArrayRecord, kind: str, server_round: int, **config) -> Message:
    content = RecordDict(
        {"arrays": arrays, "config": ConfigRecord({"server-round": server_round, "local-steps": 2, **config})}
    )
    return Message(content=content, message_type=kind, dst_node_id=1000)


def _contents(reply: Message) -> tuple[dict, dict]:
    arrays = {n: a.numpy() for record in reply.content.array_records.values() for n, a in record.items()}
    return arrays, dict(reply.content.metric_records["metrics"])


def _assert_same(reply: Message, expected: Message) -> None:
    (arrays, metrics), (expected_arrays, expected_metrics) = _contents(reply), _contents(expected)
    assert arrays.keys() == expected_arrays.keys()
    assert all(np.array_equal(arrays[k], expected_arrays[k]) for k in arrays)
    assert metrics == expected_metrics  # floats compared exactly


# Learners whose fit leaves state on the module: BatchNorm statistics (MAML++), Reptile's manual
# optimisation, FedRep's phase counter, Ditto's round model and personal flag.
@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ("synthetic", "maml_head"),
        ("synthetic", "ditto"),
        ("blobs", "maml_plus_plus"),
        ("blobs", "reptile"),
        ("blobs", "fedrep"),
    ],
)
def test_a_client_replies_as_a_fresh_client_bit_for_bit_two_nodes_alternating(setting, name):
    if setting == "synthetic":
        learner, personal = _synthetic(name)
        data = SyntheticFederation(num_devices=4, test_fraction=0.25, meta_batch_size=2, test_tasks=2)
    else:
        torch.manual_seed(0)
        learner, data = build(name, "classification"), ClientBlobs
        personal = ["*head*"] if name == "fedrep" else []  # FedRep's head never leaves a client
    reused = MetaClient(learner, data, local_steps=2, personal=personal)
    worlds = {world: {p: Context(1, 1000 + p, {"partition-id": p}, RecordDict(), {}) for p in (0, 1)} for world in "ab"}
    arrays = without(learner_arrays(learner), reused.personal)
    for server_round in (1, 2, 3):
        calls = [("train", 0, {}), ("train", 1, {}), ("evaluate", 0, {})]
        if setting == "synthetic":  # device 1's own local test data, with its personal weights
            calls.append(("evaluate", 1, {EVALUATION: PARTICIPANT}))
        for kind, node, config in calls:
            reply = getattr(reused, kind)(_message(arrays, kind, server_round, **config), worlds["a"][node])
            fresh = MetaClient(learner, data, local_steps=2, personal=personal)  # a new copy of `learner`
            expected = getattr(fresh, kind)(_message(arrays, kind, server_round, **config), worlds["b"][node])
            _assert_same(reply, expected)
            if kind == "train":
                trained = reply.content.array_records["arrays"]
        arrays = trained  # the next round starts from node 1's weights
    if personal:
        kept = [{k: v.numpy() for k, v in worlds["a"][p].state["personal"].items()} for p in (0, 1)]
        assert any(not np.array_equal(kept[0][k], kept[1][k]) for k in kept[0])  # each node kept its own
    assert all(torch.equal(a, b) for a, b in zip(learner.state_dict().values(), _synthetic_or_built(setting, name)))


def _synthetic_or_built(setting: str, name: str):
    """The state of the learner as built (the client never trains it in place)."""
    if setting == "synthetic":
        return _synthetic(name)[0].state_dict().values()
    torch.manual_seed(0)
    return build(name, "classification").state_dict().values()


def test_the_reply_is_that_of_lightnings_full_trainer_on_a_fresh_copy():
    """The train loss the client reads from the learner under its barebones Trainer is the one Lightning's
    full Trainer would log (``callback_metrics``), and the weights are the same."""
    learner, _ = _synthetic("maml_head")
    data = SyntheticFederation(num_devices=4, test_fraction=0.25, meta_batch_size=2)
    arrays = learner_arrays(learner)
    reply = MetaClient(learner, data, local_steps=3, seed=5).train(
        _message(arrays, "train", 2, **{"local-steps": 3}), Context(1, 1001, {"partition-id": 1}, RecordDict(), {})
    )
    model = copy.deepcopy(learner)
    load_arrays(model, arrays)
    seed_everything(5 + 1000 * 2 + 1, verbose=False)  # the client's seed of (client 1, round 2)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data(1, 2))
    weights, metrics = _contents(reply)
    assert all(np.array_equal(weights[k], v.numpy()) for k, v in learner_arrays(model).items())
    assert metrics["train-loss"] == float(trainer.callback_metrics["train/loss"])


def test_a_barebones_fit_keeps_the_logged_values_on_the_learner():
    learner, _ = _synthetic("maml_head")
    data = SyntheticFederation(num_devices=4, test_fraction=0.25, meta_batch_size=2)
    trainer = client_trainer("cpu", "32-true", max_steps=2)
    assert trainer.barebones
    trainer.fit(learner, datamodule=data(0, 1))
    assert set(learner.barebones_logged) == {"train/loss", "train/acc"}
    assert not learner.barebones_logged["train/loss"].requires_grad
    learner.barebones_logged.clear()
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(learner, datamodule=data(0, 2))
    assert learner.barebones_logged == {}  # a full Trainer logs through Lightning, as before
