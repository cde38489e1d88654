"""The in-process grid on its own, with trivial client apps: contexts made on first use, the deadline
of an exchange, calls side by side, busy nodes."""

from __future__ import annotations

import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from lit_meta.federated import InProcessGrid

HANG = 30.0  # seconds a hanging node waits unless released: far beyond every timeout here


def _messages(grid: InProcessGrid, partitions: list[int]) -> list[Message]:
    return [grid.create_message(RecordDict(), "train", 1000 + p, "1") for p in partitions]


def _app(calls: list[int], hanging: set[int] = frozenset(), release: threading.Event | None = None):
    """A client app that records its partition id and replies at once (or, for ``hanging``, after
    ``release`` is set)."""

    def app(message: Message, context) -> Message:
        partition = context.node_config["partition-id"]
        calls.append(partition)
        if partition in hanging:
            release.wait(HANG)
        context.state["calls"] = ConfigRecord({"n": context.state.get("calls", ConfigRecord({"n": 0}))["n"] + 1})
        return Message(RecordDict({"echo": ConfigRecord({"partition": partition})}), reply_to=message)

    return app


def _partitions(replies) -> list[int]:
    return [r.content.config_records["echo"]["partition"] for r in replies]


def _end_hanging_calls(release: threading.Event) -> None:
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("node-"):
            thread.join(HANG)


def test_a_nodes_context_is_made_on_its_first_message_and_kept():
    calls: list[int] = []
    grid = InProcessGrid(_app(calls), 1000)
    assert len(grid.get_node_ids()) == 1000 and grid._contexts == {}
    for _ in range(2):
        assert _partitions(grid.send_and_receive(_messages(grid, [7, 993]))) == [7, 993]
    assert sorted(grid._contexts) == [1007, 1993]  # the 998 others cost nothing
    assert grid.context(1007).state["calls"]["n"] == 2  # context.state persists across exchanges
    assert grid.partitions()[1993] == 993
    with pytest.raises(ValueError, match=r"Expected a node id in \[1000, 2000\), but got 2000\."):
        grid.context(2000)


def test_one_worker_calls_in_order_and_the_timeout_bounds_the_whole_exchange():
    calls, release = [], threading.Event()
    grid = InProcessGrid(_app(calls, hanging={1}, release=release), 4)
    start = time.monotonic()
    try:
        replies = grid.send_and_receive(_messages(grid, [0, 1, 2, 3]), timeout=1.0)
        elapsed = time.monotonic() - start
    finally:
        _end_hanging_calls(release)
    assert _partitions(replies) == [0]
    assert calls == [0, 1]  # nodes 2 and 3 came after the deadline: no call
    assert elapsed < HANG / 2  # a bound on a hang, not a speed


def test_workers_run_calls_side_by_side_and_use_the_replies_before_the_deadline():
    calls, release = [], threading.Event()
    grid = InProcessGrid(_app(calls, hanging={1}, release=release), 4, workers=4)
    start = time.monotonic()
    try:
        replies = grid.send_and_receive(_messages(grid, [0, 1, 2, 3]), timeout=1.0)
        elapsed = time.monotonic() - start
    finally:
        _end_hanging_calls(release)
    assert _partitions(replies) == [0, 2, 3]  # in the order sent
    assert sorted(calls) == [0, 1, 2, 3]
    assert elapsed < HANG / 2


def test_workers_really_run_at_once():
    # Three calls that can only end together: with three workers they all reply.
    barrier = threading.Barrier(3, timeout=HANG)

    def app(message: Message, context) -> Message:
        barrier.wait()
        return Message(
            RecordDict({"echo": ConfigRecord({"partition": context.node_config["partition-id"]})}), reply_to=message
        )

    grid = InProcessGrid(app, 3, workers=3)
    assert _partitions(grid.send_and_receive(_messages(grid, [0, 1, 2]), timeout=HANG)) == [0, 1, 2]


def test_no_more_calls_start_than_there_are_workers():
    calls, release = [], threading.Event()
    grid = InProcessGrid(_app(calls, hanging={0, 1}, release=release), 4, workers=2)
    try:
        replies = grid.send_and_receive(_messages(grid, [0, 1, 2, 3]), timeout=1.0)
    finally:
        _end_hanging_calls(release)
    assert replies == [] and sorted(calls) == [0, 1]


def test_a_node_whose_call_outlived_the_deadline_gets_no_message_until_it_ends(caplog):
    calls, release = [], threading.Event()
    grid = InProcessGrid(_app(calls, hanging={1}, release=release), 2, workers=2)
    try:
        assert _partitions(grid.send_and_receive(_messages(grid, [0, 1]), timeout=1.0)) == [0]
        with caplog.at_level("WARNING", logger="lit_meta.federated.grid"):
            assert _partitions(grid.send_and_receive(_messages(grid, [1]), timeout=1.0)) == []
    finally:
        _end_hanging_calls(release)
    assert "Node 1001 is still busy with an earlier message" in caplog.text
    assert calls == [0, 1]  # no second call beside the first
    calls.clear()
    assert _partitions(grid.send_and_receive(_messages(grid, [1]), timeout=HANG)) == [1]  # free again
    assert calls == [1]


def test_a_raising_node_replies_with_an_error():
    def app(message, context):
        raise RuntimeError("disk full")

    grid = InProcessGrid(app, 1)
    (reply,) = grid.send_and_receive(_messages(grid, [0]), timeout=HANG)
    assert reply.has_error() and reply.error.reason == "RuntimeError: disk full"


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"num_nodes": 0}, ValueError, r"Expected `num_nodes` >= 1, but got 0\."),
        ({"num_nodes": 2, "workers": 0}, ValueError, r"Expected `workers` >= 1, but got 0\."),
        ({"num_nodes": 2, "workers": 1.5}, TypeError, r"Expected `workers` to be int, but got float 1.5\."),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        InProcessGrid(lambda message, context: message, **arguments)
