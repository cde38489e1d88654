"""Many clients on a few nodes (:class:`ClientPool`, the ``simulation`` backend's grid): the same rounds
as one node per client, each client's personal weights kept by the server and travelling with its
messages, and nothing made for a client never sampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from lit_meta.federated import InProcessGrid, MetaClient, RunSettings, client_app, federate, learner_arrays
from lit_meta.federated.grid import FIRST_NODE_ID
from lit_meta.federated.pool import CLIENT_RECORD, PERSONAL_RECORD, ClientPool
from lit_meta.federated.roles import known_roles as known
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import build

CLIENTS, HEAD = 6, ["maml.module.head.weight", "maml.module.head.bias"]


def _run(pooled_nodes: int | None):
    """3 rounds, 3 of 6 clients sampled a round, each keeping its head: on one node per client
    (``None``) or on ``pooled_nodes`` nodes behind a pool. Returns the result, grid and served clients."""
    torch.manual_seed(0)
    learner = build("maml", "classification")
    served: list[int] = []

    def data(partition: int, server_round: int) -> ClientBlobs:
        served.append(partition)
        return ClientBlobs(partition, server_round)

    client = MetaClient(learner, data, local_steps=2, personal=["*head*"], pooled=pooled_nodes is not None)
    if pooled_nodes is None:
        grid = InProcessGrid(client_app(client), CLIENTS)
    else:
        grid = ClientPool(InProcessGrid(client_app(client), pooled_nodes), CLIENTS)
    strategy = FedAvg(fraction_train=0.5, fraction_evaluate=0.5, min_train_nodes=3, min_evaluate_nodes=3)
    settings = RunSettings(rounds=3, local_steps=2, personal=client.personal)
    return federate(grid, learner, strategy, settings), grid, served


def test_a_pool_of_two_nodes_gives_the_rounds_of_one_node_per_client_personal_heads_included():
    direct, direct_grid, direct_served = _run(None)
    pooled, pool, pooled_served = _run(2)
    assert pooled_served == direct_served  # the same clients, rounds and order
    for name, array in direct.arrays.items():
        np.testing.assert_array_equal(pooled.arrays[name].numpy(), array.numpy())
    for server_round, record in direct.rounds.items():
        assert pooled.rounds[server_round]["replies"] == record["replies"]
        assert pooled.rounds[server_round]["clients"] == record["clients"]
    # Each client that trained has its own head, kept by the server, as its node's context keeps it directly.
    contexts = direct_grid._contexts.items()
    kept = {
        node - FIRST_NODE_ID: context.state["personal"] for node, context in contexts if "personal" in context.state
    }
    assert set(pool.states) == set(kept) and len(kept) >= 3
    for partition, state in kept.items():
        for name in HEAD:
            np.testing.assert_array_equal(pool.states[partition][name].numpy(), state[name].numpy())
    # The two nodes served every sampled client; neither holds a client's state.
    assert len(pool.grid._contexts) == 2
    assert all("personal" not in context.state for context in pool.grid._contexts.values())


def test_the_pool_lists_one_node_per_client_and_refuses_others():
    learner = build("protonet", "classification")
    pool = ClientPool(InProcessGrid(client_app(MetaClient(learner, ClientBlobs, pooled=True)), 2), 1000)
    nodes = list(pool.get_node_ids())
    assert (nodes[0], nodes[-1], len(nodes)) == (FIRST_NODE_ID, FIRST_NODE_ID + 999, 1000)
    assert pool.partitions()[FIRST_NODE_ID + 999] == 999
    message = pool.create_message(RecordDict(), "train", FIRST_NODE_ID + 1000, "1")
    with pytest.raises(ValueError, match=r"Expected a node id in \[1000, 2000\), but got 2000\."):
        pool.send_and_receive([message])


def test_a_pooled_client_refuses_a_message_that_names_no_client():
    learner = build("protonet", "classification")
    client = MetaClient(learner, ClientBlobs, pooled=True)
    grid = InProcessGrid(client_app(client), 1)
    [reply] = grid.send_and_receive([grid.create_message(RecordDict(), "query", FIRST_NODE_ID, "1")])
    assert reply.has_error()
    assert f"Expected a pooled message with a `{CLIENT_RECORD}` config record naming its client" in reply.error.reason
    named = RecordDict({CLIENT_RECORD: ConfigRecord({"partition-id": 4})})
    [reply] = grid.send_and_receive([Message(named, FIRST_NODE_ID, "query", group_id="1")])
    assert reply.content.config_records["identity"]["partition-id"] == 4
    assert PERSONAL_RECORD not in reply.content


def test_a_round_of_1000_pooled_clients_builds_the_sampled_clients_data_only():
    torch.manual_seed(0)
    learner = build("protonet", "classification")
    served: list[int] = []

    def data(partition: int, server_round: int) -> ClientBlobs:
        served.append(partition)
        return ClientBlobs(partition, server_round, batches=1)

    pool = ClientPool(InProcessGrid(client_app(MetaClient(learner, data, local_steps=1, pooled=True)), 4), 1000)
    strategy = FedAvg(fraction_train=0.01, fraction_evaluate=0.005, min_train_nodes=2, min_evaluate_nodes=2)
    result = federate(
        pool,
        learner,
        strategy,
        RunSettings(rounds=1, local_steps=1),
        roles=known(pool.partitions(), lambda partition: "both"),
    )
    assert result.rounds[1]["replies"] == 10
    assert len(served) == 10 + 5  # 10 trained, 5 evaluated (a client may do both); no other client's data
    assert len(pool.grid._contexts) == 4  # the Flower nodes; none per client


def test_a_failing_client_replies_with_its_error_from_its_own_virtual_node():
    learner = build("protonet", "classification")

    def data(partition: int, server_round: int) -> ClientBlobs:
        if partition == 3:
            raise OSError("client 3's disk is gone")
        return ClientBlobs(partition, server_round, batches=1)

    pool = ClientPool(InProcessGrid(client_app(MetaClient(learner, data, local_steps=1, pooled=True)), 2), 5)
    content = RecordDict({"arrays": learner_arrays(learner), "config": ConfigRecord({"server-round": 1})})
    messages = [pool.create_message(content, "train", FIRST_NODE_ID + p, "1") for p in (3, 4)]
    failed, trained = pool.send_and_receive(messages)
    assert (failed.metadata.src_node_id, trained.metadata.src_node_id) == (FIRST_NODE_ID + 3, FIRST_NODE_ID + 4)
    assert failed.has_error() and "OSError: client 3's disk is gone" in failed.error.reason
    assert set(trained.content.array_records["arrays"]) == set(learner_arrays(learner))
    assert CLIENT_RECORD not in trained.content
