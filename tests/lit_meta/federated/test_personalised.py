"""The personalised FL baselines federated in process: 4 Synthetic devices, 2 rounds; personal weights
stay on their device and only the shared ones reach the server."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from flwr.serverapp.strategy import FedAvg

from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import Ditto, FedRep, PerFedAvg, PFedMe
from lit_meta.federated import (
    FederatedRun,
    InProcessGrid,
    MetaClient,
    RunSettings,
    client_app,
    federate,
    learner_arrays,
)
from lit_meta.federated.records import load_arrays
from lit_meta.models import MLP
from tests.helpers.trainers import quiet_trainer

DIM, CLASSES = 60, 10


class EveryDeviceTrainsAndTests:
    """Synthetic devices that each train and evaluate (no ``role``: a client of role ``"both"``), so the
    personal weights of a device that trained are what its evaluation uses."""

    def __init__(self, federation: SyntheticFederation) -> None:
        self.federation = federation

    def __call__(self, partition_id: int, server_round: int):
        return self.federation(partition_id, server_round)


def _mlp() -> MLP:
    return MLP(DIM, (8,), CLASSES)


LEARNERS = {
    "perfedavg_fo": (lambda: PerFedAvg(_mlp(), alpha=0.1, beta=0.05, variant="fo"), []),
    "perfedavg_hf": (
        lambda: PerFedAvg(_mlp(), alpha=0.1, beta=0.05, variant="hf", hessian_batch="other_task"),
        [],
    ),
    "ditto": (lambda: Ditto(_mlp(), lam=0.1, lr=0.1, eval_inner_steps=2), ["personal_model.*"]),
    "fedrep": (lambda: FedRep(_mlp(), head_steps=1, lr=0.1, eval_inner_steps=2), ["*head*"]),
    "pfedme": (lambda: PFedMe(_mlp(), personal_steps=2, lr=0.05, eval_inner_steps=2), []),
}


def _federate(name: str):
    torch.manual_seed(0)
    build, personal = LEARNERS[name]
    learner = build()
    federation = SyntheticFederation(num_devices=4, test_fraction=0.0, meta_batch_size=2, test_tasks=2)
    client = MetaClient(learner, EveryDeviceTrainsAndTests(federation), local_steps=2, personal=personal)
    grid = InProcessGrid(client_app(client), 4)
    strategy = FedAvg(min_train_nodes=4, min_available_nodes=4, min_evaluate_nodes=4)
    result = federate(grid, learner, strategy, RunSettings(rounds=2, local_steps=2, personal=client.personal))
    return learner, grid, result, federation, list(client.personal)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_two_rounds_on_four_devices_keep_the_personal_weights_on_the_devices(name):
    learner, grid, result, _, personal = _federate(name)
    initial = {k: v.numpy() for k, v in learner_arrays(learner).items()}
    arrays = {k: v.numpy() for k, v in result.arrays.items()}
    assert set(arrays) == set(initial) - set(personal)  # only the shared weights reach the server
    assert any(not np.array_equal(arrays[k], initial[k]) for k in arrays)  # and they trained
    replies = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert len(replies) == 8 and all(set(r.content.array_records["arrays"]).isdisjoint(personal) for r in replies)
    assert set(result.evaluate_metrics_clientapp) == {1, 2}
    assert 0.0 <= result.evaluate_metrics_clientapp[2]["accuracy"] <= 1.0
    states = [context.state for context in grid._contexts.values()]
    if not personal:
        assert all("personal" not in state for state in states)
        return
    kept = [{k: v.numpy() for k, v in state["personal"].items()} for state in states]
    assert all(set(k) == set(personal) for k in kept)
    changed = [k for k in personal if k.endswith("weight")]
    for k in changed:  # each device trained its own, and kept it
        assert all(not np.array_equal(device[k], initial[k]) for device in kept)
        assert all(not np.array_equal(kept[0][k], device[k]) for device in kept[1:])


def _test_accuracy(learner, datamodule) -> float:
    """What a client's evaluation reports: the mean query accuracy over its test tasks."""
    learner.record_test_curves(learner.eval_inner_steps)
    quiet_trainer().test(learner, datamodule=datamodule, verbose=False)
    return learner.test_curves()[-1].double().mean().item()


def test_a_ditto_device_that_trained_evaluates_its_own_personal_model():
    learner, grid, result, federation, personal = _federate("ditto")
    assert personal == [k for k in learner_arrays(learner) if k.startswith("personal_model.")]
    shared = [k for k in learner_arrays(learner) if k not in personal]
    states = {context.node_config["partition-id"]: context.state for context in grid._contexts.values()}
    assert all(state["personal"]["personal_model.trained"].numpy() == 1.0 for state in states.values())
    device = copy.deepcopy(learner)
    load_arrays(device, result.arrays, absent=personal)  # the round's global model ...
    unseen = copy.deepcopy(device)  # ... as a device that never trained holds it
    load_arrays(device, states[0]["personal"], absent=shared)  # ... and device 0's personal model
    assert device.personal_trained and not unseen.personal_trained
    task = next(iter(federation(0, 2).test_dataloader()))
    assert not torch.allclose(device.evaluate_episode(task), unseen.evaluate_episode(task))
    # Device 0's reported accuracy in round 2 is that of its own v_k, adapted on its support sets.
    reported = result.rounds[2]["clients"][0]["accuracy"]
    assert reported == pytest.approx(_test_accuracy(device, federation(0, 2)), abs=1e-9)


@pytest.mark.parametrize(
    ("name", "personal", "averaged"),
    [
        ("ditto", [], "['personal_model.trained', 'personal_model.network.features.0.weight']"),
        ("fedrep", ["backbone.head.*"], "['head_trained']"),
    ],
)
def test_a_federation_that_would_average_what_the_method_keeps_on_each_client_is_refused(name, personal, averaged):
    """Ditto without its personal model kept (FedAvg would average the personal models) is not Ditto."""
    learner = LEARNERS[name][0]()
    with pytest.raises(ValueError, match=rf"^Expected `personal` to keep {type(learner).__name__}'s own weights on "):
        MetaClient(learner, EveryDeviceTrainsAndTests(None), personal=personal)
    with pytest.raises(
        ValueError, match=rf"but got {re.escape(str(personal))}, which would average {re.escape(averaged)}"
    ):
        FederatedRun(learner, SyntheticFederation(num_devices=4), FedAvg(), personal=personal)
    MetaClient(learner, EveryDeviceTrainsAndTests(None), personal=LEARNERS[name][1])  # as the configs federate it
