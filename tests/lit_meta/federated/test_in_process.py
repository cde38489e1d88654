"""Federated rounds on Flower's real strategies and ClientApp, driven by the in-process grid."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx

from lit_meta.federated import (
    FederationError,
    InProcessGrid,
    MetaClient,
    RunSettings,
    client_app,
    federate,
    learner_arrays,
)
from lit_meta.federated.client import ProximalTerm
from lit_meta.federated.grid import SERVER_NODE_ID
from lit_meta.federated.records import check_arrays
from tests.helpers.federated import ClientBlobs
from tests.helpers.learners import LEARNERS, build

FEDERATED = ["maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "matching"]


def _grid(learner, nodes: int = 4, wrap=None, workers: int = 1) -> InProcessGrid:
    client = MetaClient(learner, ClientBlobs, local_steps=2)
    app = client_app(client)
    return InProcessGrid(wrap(app) if wrap else app, nodes, workers=workers)


def _federate(grid, learner, strategy, on_round=None, **settings):
    """``federate`` with ``RunSettings(**settings)``."""
    return federate(grid, learner, strategy, RunSettings(**settings), on_round=on_round)


def _fedavg(nodes: int, **kwargs) -> FedAvg:
    return FedAvg(min_train_nodes=nodes, min_available_nodes=nodes, min_evaluate_nodes=nodes, **kwargs)


def _arrays(result) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in result.arrays.items()}


@pytest.mark.parametrize("name", FEDERATED)
def test_every_learner_federates_and_changes_its_weights(name):
    learner = build(name, "classification")
    before = {k: v.numpy() for k, v in learner_arrays(learner).items()}
    result = _federate(_grid(learner), learner, _fedavg(4), rounds=2, local_steps=2)
    after = _arrays(result)
    assert after.keys() == before.keys()
    assert any(not np.array_equal(after[k], before[k]) for k in before)
    assert set(result.evaluate_metrics_clientapp) == {1, 2}
    assert 0.0 <= result.evaluate_metrics_clientapp[2]["accuracy"] <= 1.0


def test_same_seed_gives_identical_weights_4_clients_3_rounds():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        learner = build("maml", "classification")
        runs.append(_arrays(_federate(_grid(learner), learner, _fedavg(4), rounds=3, local_steps=2)))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_aggregate_is_the_mean_weighted_by_client_data_size():
    learner = build("protonet", "classification")
    grid = _grid(learner)
    result = _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    sizes = [r.content.metric_records["metrics"]["num-examples"] for r in train]
    assert sorted(sizes) == [10, 20, 30, 40]
    for name, value in _arrays(result).items():
        # Hand-computed weights: client p holds 10 (p + 1) of the 100 examples.
        expected = sum(s / 100 * r.content.array_records["arrays"][name].numpy() for s, r in zip(sizes, train))
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def test_plain_average_weights_every_client_alike():
    learner = build("protonet", "classification")
    grid = _grid(learner)
    result = _federate(grid, learner, _fedavg(4, weighted_by_key="unit-weight"), rounds=1, local_steps=2)
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    for name, value in _arrays(result).items():
        expected = np.mean([r.content.array_records["arrays"][name].numpy() for r in train], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def _failing_node(app, node: int, reply=None):
    """``app``, except that partition ``node`` raises in training (or replies ``reply(message, honest_reply)``)."""

    def wrapped(message: Message, context):
        if context.node_config["partition-id"] == node and message.metadata.message_type == "train":
            if reply is None:
                raise RuntimeError("disk full")
            return reply(message, app(message, context))
        return app(message, context)

    return wrapped


def test_a_raising_client_is_left_out_and_the_rest_are_weighted_exactly():
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _failing_node(app, node=0))
    result = _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    train = [r for r in grid.replies if r.metadata.message_type == "train" and not r.has_error()]
    assert len(train) == 3
    sizes = [r.content.metric_records["metrics"]["num-examples"] for r in train]
    assert sorted(sizes) == [20, 30, 40]
    for name, value in _arrays(result).items():
        expected = sum(s / 90 * r.content.array_records["arrays"][name].numpy() for s, r in zip(sizes, train))
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def _poisoned(message: Message, honest: Message) -> Message:
    """A reply whose weights hold a NaN (a client with a diverged inner loop or a tampered update)."""
    arrays = honest.content.array_records["arrays"]
    state = arrays.to_torch_state_dict()
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": honest.content.metric_records["metrics"]})
    return Message(content, reply_to=message)


def test_nan_weights_are_left_out_of_the_aggregate_with_a_warning(caplog):
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _failing_node(app, node=3, reply=_poisoned))
    with caplog.at_level("WARNING", logger="lit_meta.federated.guarded"):
        result = _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    assert all(np.isfinite(v).all() for v in _arrays(result).values())
    assert "left the reply of node 1003 out of the aggregate: Expected finite weights" in caplog.text


def test_a_round_without_a_usable_reply_stops_the_run():
    learner = build("protonet", "classification")

    def broken(app):
        def call(message, context):
            if message.metadata.message_type == "train":
                raise RuntimeError("out of memory")
            return app(message, context)

        return call

    with pytest.raises(
        FederationError, match=r"Expected >= 1 usable replies in round 1, but got 0 of 4 .*out of memory"
    ):
        _federate(_grid(learner, wrap=broken), learner, _fedavg(4), rounds=2, local_steps=2)


def test_a_round_below_min_replies_stops_the_run():
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _failing_node(app, node=1))
    with pytest.raises(FederationError, match=r"Expected >= 4 usable replies in round 1, but got 3 of 4"):
        _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2, min_replies=4)


def test_weights_of_another_shape_are_refused():
    learner = build("protonet", "classification")
    reference = learner_arrays(learner)
    other = learner_arrays(LEARNERS["protonet"](5, "cross_entropy"))
    with pytest.raises(ValueError, match=r"Expected weights `.+` of shape \(8, 4\), but got \(8, 1\)\."):
        check_arrays(other, reference)


def test_weights_that_are_not_floating_point_are_refused():
    reference = learner_arrays(build("protonet", "classification"))
    state = {k: v.to(torch.int64) for k, v in reference.to_torch_state_dict().items()}
    with pytest.raises(ValueError, match=r"Expected floating-point weights `.+`, but got dtype int64\."):
        check_arrays(ArrayRecord(state), reference)


# Seconds a round waits for its replies in the tests with a hanging node: the other clients (side by
# side, `workers=4`) reply well within it even on a loaded machine.
TIMEOUT = 5.0


def _release_hung_nodes(release: threading.Event) -> None:
    """Let the calls that outlived their timeout end: a late call seeds global RNGs, which must not
    happen in the middle of another test."""
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("node-"):
            thread.join(30)


def test_a_client_past_the_round_timeout_gives_no_reply_and_the_round_completes():
    learner = build("protonet", "classification")
    release = threading.Event()

    def hanging(app):
        def wrapped(message, context):
            if context.node_config["partition-id"] == 2 and message.metadata.message_type == "train":
                release.wait(30)
            return app(message, context)

        return wrapped

    grid = _grid(learner, wrap=hanging, workers=4)
    start = time.monotonic()
    try:
        result = _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2, round_timeout=TIMEOUT)
        elapsed = time.monotonic() - start
    finally:
        _release_hung_nodes(release)
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert sorted(r.content.metric_records["metrics"]["num-examples"] for r in train) == [10, 20, 40]
    assert result.arrays is not None
    record = result.rounds[1]
    assert (record["sent"], record["replies"], record["late"], record["failures"]) == (4, 3, 1, 0)
    assert elapsed < 20  # the round did not wait for the node hanging 30 s (a bound on a hang, not a speed)


def test_one_client_failing_every_round_alternately_raising_and_hanging():
    learner = build("protonet", "classification")
    release = threading.Event()

    def faulty(app):
        def wrapped(message, context):
            if context.node_config["partition-id"] == 1 and message.metadata.message_type == "train":
                if message.content.config_records["config"]["server-round"] % 2:
                    raise RuntimeError("disk full")
                release.wait(30)
            return app(message, context)

        return wrapped

    grid, aggregates, seen = _grid(learner, wrap=faulty, workers=4), {}, [0]

    def on_round(server_round, arrays, record):  # the round's aggregate and the replies it came from
        aggregates[server_round] = ({k: v.numpy() for k, v in arrays.items()}, grid.replies[seen[0] :])
        seen[0] = len(grid.replies)

    try:
        result = _federate(grid, learner, _fedavg(4), rounds=2, local_steps=2, round_timeout=TIMEOUT, on_round=on_round)
    finally:
        _release_hung_nodes(release)
    counts = [(result.rounds[r]["replies"], result.rounds[r]["late"], result.rounds[r]["failures"]) for r in (1, 2)]
    assert counts == [(3, 0, 1), (3, 1, 0)]  # raised, then no reply before the deadline
    for server_round in (1, 2):
        aggregate, replies = aggregates[server_round]
        train = [r for r in replies if r.metadata.message_type == "train" and not r.has_error()]
        sizes = [r.content.metric_records["metrics"]["num-examples"] for r in train]
        assert sorted(sizes) == [10, 30, 40]  # client 1 (20 examples) raised, then hung
        errors = [r for r in replies if r.metadata.message_type == "train" and r.has_error()]
        assert len(errors) == (1 if server_round == 1 else 0)  # round 2: no reply at all
        for name, value in aggregate.items():
            expected = sum(s / 80 * r.content.array_records["arrays"][name].numpy() for s, r in zip(sizes, train))
            np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def test_messages_carry_the_task_identity_the_grid_sets():
    grid = InProcessGrid(lambda message, context: message, 1, run_id=7)
    message = grid.create_message(RecordDict(), "query", 1000, group_id="1")
    assert (message.metadata.run_id, message.metadata.src_node_id) == (7, SERVER_NODE_ID)


def test_the_proximal_term_adds_mu_times_the_distance_to_the_global_weights_to_each_gradient():
    module = torch.nn.Linear(2, 1)
    reference = {k: torch.zeros_like(p) for k, p in module.named_parameters()}
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -2.0]]))
        module.bias.fill_(3.0)
    module.weight.grad, module.bias.grad = torch.tensor([[0.5, 0.5]]), torch.tensor([1.0])
    ProximalTerm(mu=0.1, reference=reference).on_before_optimizer_step(None, module, None)
    # By hand: g + mu * (w - w0) = [0.5 + 0.1, 0.5 - 0.2] and 1 + 0.3.
    torch.testing.assert_close(module.weight.grad, torch.tensor([[0.6, 0.3]]))
    torch.testing.assert_close(module.bias.grad, torch.tensor([1.3]))


def _update_size(proximal_mu: float) -> float:
    torch.manual_seed(0)
    learner = build("protonet", "classification")
    before = {k: v.numpy() for k, v in learner_arrays(learner).items()}
    strategy = FedProx(proximal_mu=proximal_mu, min_train_nodes=4, min_available_nodes=4, min_evaluate_nodes=4)
    after = _arrays(_federate(_grid(learner), learner, strategy, rounds=1, local_steps=2))
    return float(sum(np.square(after[k] - before[k]).sum() for k in before))


def test_fedprox_clients_stay_closer_to_the_global_weights():
    assert _update_size(1000.0) < 0.5 * _update_size(0.0)


def test_float16_transfer_halves_the_bytes_and_aggregates_in_float32():
    runs = {}
    for transfer in ("float32", "float16"):
        torch.manual_seed(0)
        learner = build("protonet", "classification")
        result = _federate(_grid(learner), learner, _fedavg(4), rounds=2, local_steps=2, transfer=transfer)
        runs[transfer] = (_arrays(result), result.rounds[2])
    (full, full_round), (half, half_round) = runs["float32"], runs["float16"]
    # Flower counts each entry's dtype and shape too: the weights' own bytes halve exactly.
    weights = 4 * sum(value.nbytes for value in full.values())  # 4 clients
    for key in ("bytes-sent", "bytes-received"):
        assert half_round[key] == full_round[key] - weights // 2
    assert all(value.dtype == np.float32 for value in half.values())  # the global model stays float32
    for name in full:
        np.testing.assert_allclose(half[name], full[name], rtol=0, atol=5e-3)


def test_partial_federation_keeps_each_clients_head_in_its_context_state():
    torch.manual_seed(0)
    learner = build("maml", "classification")
    client = MetaClient(learner, ClientBlobs, local_steps=2, personal=["*head*"])
    grid = InProcessGrid(client_app(client), 4)
    result = _federate(grid, learner, _fedavg(4), rounds=2, local_steps=2, personal=client.personal)
    head = ["maml.module.head.weight", "maml.module.head.bias"]
    assert set(_arrays(result)) == set(learner_arrays(learner)) - set(head)  # only the body travelled
    sent = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert all(set(r.content.array_records["arrays"]).isdisjoint(head) for r in sent)
    heads = [context.state["personal"]["maml.module.head.weight"].numpy() for context in grid._contexts.values()]
    initial = learner.state_dict()["maml.module.head.weight"].numpy()
    assert all(not np.array_equal(h, initial) for h in heads)  # each client trained its own head ...
    assert not np.array_equal(heads[0], heads[1])  # ... and kept it


def test_personal_patterns_that_match_nothing_or_everything_are_refused():
    learner = build("maml", "classification")
    with pytest.raises(ValueError, match=r"Expected `personal` pattern '\*classifier\*' to match weights of MAML"):
        MetaClient(learner, ClientBlobs, personal=["*classifier*"])
    with pytest.raises(ValueError, match=r"Expected `personal` to leave weights to federate, but it matches all"):
        MetaClient(learner, ClientBlobs, personal=["*"])


def test_a_node_that_cannot_say_which_client_it_is_stops_the_run_before_round_1():
    learner = build("protonet", "classification")

    def no_query(app):
        def call(message, context):
            if message.metadata.message_type == "query" and context.node_config["partition-id"] == 2:
                raise RuntimeError("no query handler")
            return app(message, context)

        return call

    grid = _grid(learner, wrap=no_query)
    with pytest.raises(
        FederationError,
        match=r"Expected every node to say which client it is, but got no answer from 1 of 4 "
        r"\(node 1002: RuntimeError: no query handler\)",
    ):
        _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    assert not [r for r in grid.replies if r.metadata.message_type == "train"]


def _answering_role(app, partition: int, role: str):
    """``app``, except that partition ``partition`` says it has role ``role``."""

    def wrapped(message: Message, context):
        reply = app(message, context)
        if message.metadata.message_type == "query" and context.node_config["partition-id"] == partition:
            reply.content.config_records["identity"]["role"] = role
        return reply

    return wrapped


def test_a_node_with_an_unknown_role_stops_the_run_before_round_1():
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _answering_role(app, 1, "Train"))
    with pytest.raises(
        FederationError, match=r"Expected node 1001's role to be one of 'train', 'test', 'both', but got 'Train'\."
    ):
        _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    assert not [r for r in grid.replies if r.metadata.message_type == "train"]


def test_two_nodes_with_one_partition_id_stop_the_run_before_round_1():
    learner = build("protonet", "classification")
    app = client_app(MetaClient(learner, ClientBlobs, local_steps=2))
    grid = InProcessGrid(app, 3, node_config=lambda i: {"partition-id": min(i, 1), "num-partitions": 3})
    with pytest.raises(
        FederationError,
        match=r"Expected one node per partition id, but got 2 nodes \(1001, 1002\) with partition id 1\.",
    ):
        _federate(grid, learner, _fedavg(3), rounds=1, local_steps=2)


def _failing_evaluation(app, nodes: set[int], reply=None):
    """``app``, except that the partitions in ``nodes`` raise in evaluation (or reply ``reply(honest)``)."""

    def wrapped(message: Message, context):
        if context.node_config["partition-id"] in nodes and message.metadata.message_type == "evaluate":
            if reply is None:
                raise RuntimeError("GPU lost")
            return reply(app(message, context))
        return app(message, context)

    return wrapped


def _nan_accuracy(honest: Message) -> Message:
    honest.content.metric_records["metrics"]["accuracy"] = float("nan")
    return honest


def test_an_evaluation_with_a_nan_metric_is_left_out_and_counted(caplog):
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _failing_evaluation(app, {2}, reply=_nan_accuracy))
    with caplog.at_level("WARNING", logger="lit_meta.federated.guarded"):
        result = _federate(grid, learner, _fedavg(4), rounds=1, local_steps=2)
    record = result.rounds[1]
    assert record["eval-failures"] == 1 and sorted(record["clients"]) == [0, 1, 3]
    assert np.isfinite(record["accuracy"])
    assert "left the evaluation of node 1002 out: Expected finite evaluation metrics" in caplog.text


def test_a_round_whose_every_evaluation_fails_stops_the_run():
    learner = build("protonet", "classification")
    grid = _grid(learner, wrap=lambda app: _failing_evaluation(app, {0, 1, 2, 3}))
    with pytest.raises(
        FederationError,
        match=r"Expected >= 1 usable evaluation reply in round 1, but got 0 of 4 \(node \d+: RuntimeError: GPU lost; ",
    ):
        _federate(grid, learner, _fedavg(4), rounds=2, local_steps=2)


def test_a_node_still_busy_past_the_timeout_gets_no_message_until_its_call_ends(caplog):
    learner = build("protonet", "classification")
    release, calls = threading.Event(), []

    def slow(app):
        def wrapped(message, context):
            if context.node_config["partition-id"] == 2 and message.metadata.message_type == "train":
                calls.append(message.content.config_records["config"]["server-round"])
                release.wait(30)  # round 1 only: it is still running in round 2
            return app(message, context)

        return wrapped

    grid = _grid(learner, wrap=slow, workers=4)
    try:
        with caplog.at_level("WARNING", logger="lit_meta.federated.grid"):
            result = _federate(grid, learner, _fedavg(4), rounds=2, local_steps=2, round_timeout=TIMEOUT)
    finally:
        _release_hung_nodes(release)
    assert calls == [1]  # never a second call beside the first
    assert [result.rounds[r]["replies"] for r in (1, 2)] == [3, 3]
    assert "Node 1002 is still busy with an earlier message" in caplog.text


def test_each_round_seeds_the_generators_flower_samples_and_draws_noise_from():
    import random

    from flwr.app import ConfigRecord

    from lit_meta.federated.guarded import Guarded

    learner = build("protonet", "classification")
    grid, arrays = _grid(learner), learner_arrays(learner)
    guarded = Guarded(_fedavg(4), RunSettings(rounds=2, local_steps=1, seed=3))
    draws = []
    for server_round in (1, 1, 2):
        guarded.configure_train(server_round, arrays, ConfigRecord(), grid)
        draws.append((random.random(), float(np.random.rand())))
    assert draws[0] == draws[1] and draws[0][0] != draws[2][0] and draws[0][1] != draws[2][1]
