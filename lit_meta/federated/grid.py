"""A Flower ``Grid`` that runs each node's real ``ClientApp`` in this process.

Flower's runtimes (simulation on Ray, a SuperLink with SuperNodes) deliver messages between
processes. For tests and small runs the same ``ServerApp``, strategies and ``ClientApp`` can run
without them: :class:`InProcessGrid` calls ``client_app(message, context)`` for each message, one
after another in the order sent (deterministic for a seed) or up to ``workers`` side by side in
threads, within the exchange's ``timeout`` as Flower's runtimes bound it; milliseconds of overhead per
message, and nothing kept for a node that never got one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from lit_meta.validation import check_positive_int

log = logging.getLogger(__name__)

#: Flower's node id of the server side (``flwr.common.constant.SUPERLINK_NODE_ID``).
SERVER_NODE_ID = 1
#: The node id of partition ``i`` is ``FIRST_NODE_ID + i`` (Flower draws random 64-bit ids; these are
#: fixed for repeatability).
FIRST_NODE_ID = 1000
_ERROR_CODE = 0  # Flower's `ErrorCode.UNKNOWN`: the ClientApp raised


def set_task_identity(run_id: int, node_id: int = SERVER_NODE_ID, task_id: int = 1) -> None:
    """Set what Flower's runtimes set before a ``ServerApp`` runs: a ``Message`` takes its run, node
    and task ids from ``flwr.supercore.task_identity.TaskIdentity`` (an internal API of Flower 1.42;
    the one place lit-meta touches it)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


class ExchangeGrid(Grid):
    """A grid that makes its own messages and delivers them only through ``send_and_receive`` (no
    push and pull: what lit-meta's grids need of Flower's ``Grid`` interface)."""

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id, ttl=ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError(f"{type(self).__name__} delivers messages only through `send_and_receive`.")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError(f"{type(self).__name__} delivers messages only through `send_and_receive`.")


class InProcessGrid(ExchangeGrid):
    """Nodes ``FIRST_NODE_ID + i``, ``i = 0 .. num_nodes - 1`` (node ``i`` holds partition ``i``
    unless ``node_config`` says otherwise), each running ``client_app`` in this process.

    Args:
        client_app: a Flower ``ClientApp`` (or any ``(Message, Context) -> Message`` callable).
        num_nodes: how many nodes (SuperNodes) there are.
        node_config: ``node_config(i)``, the config of the ``i``-th node; default
            ``{"partition-id": i, "num-partitions": num_nodes}`` as Flower's simulation sets it.
        run_id: the run's id.
        workers: node calls that may run side by side (threads) in one exchange. With 1 (the default)
            they run one after another in the order sent, so a run is deterministic for a seed; with
            more, the clients' Lightning trainers share torch's global generators from concurrent
            threads and a run is not bit-reproducible.

    ``timeout`` of :meth:`send_and_receive` bounds the whole exchange, as on Flower's runtimes: a
    reply that arrives before ``start + timeout`` is used; a call still running then gives no reply
    (it is left to finish in a daemon thread), and a call whose turn comes after it is not made (with
    ``workers=1``, every message after a call that outlived the deadline). A node whose call is still
    running is busy: it gets no further message (as if it were offline) until the call ends, so a late
    call never runs beside another of the same node. A node that raises replies with an error message
    (as a SuperNode does). A node's ``Context`` is made when it gets its first message and kept, so
    ``context.state`` persists across rounds as on a SuperNode; a node never sampled costs nothing.
    """

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        num_nodes: int,
        node_config: Callable[[int], dict] | None = None,
        run_id: int = 1,
        workers: int = 1,
    ) -> None:
        check_positive_int("num_nodes", num_nodes)
        check_positive_int("workers", workers)
        self.client_app, self.num_nodes, self.workers, self.run_id = client_app, num_nodes, workers, run_id
        self._run = Run.create_empty(run_id)
        self._config = node_config or (lambda i: {"partition-id": i, "num-partitions": num_nodes})
        self._contexts: dict[int, Context] = {}  # made on a node's first message
        self._busy: set[int] = set()  # nodes whose call is running
        self._lock = threading.Lock()  # guards the contexts and the busy nodes, which late calls change
        self.replies: list[Message] = []  # every reply, in order (for inspection)
        set_task_identity(run_id)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def get_node_ids(self) -> Iterable[int]:
        return list(range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_nodes))

    def partitions(self) -> dict[int, int]:
        """``{node id: partition id}`` as the nodes' configs say: what the server asks the nodes of
        Flower's runtimes, known here without a message."""
        return {FIRST_NODE_ID + i: int(self._config(i)["partition-id"]) for i in range(self.num_nodes)}

    def context(self, node_id: int) -> Context:
        """The ``Context`` of node ``node_id``, made on first use."""
        with self._lock:
            if node_id not in self._contexts:
                index = node_id - FIRST_NODE_ID
                if not 0 <= index < self.num_nodes:
                    raise ValueError(
                        f"Expected a node id in [{FIRST_NODE_ID}, {FIRST_NODE_ID + self.num_nodes}), but got {node_id}."
                    )
                self._contexts[node_id] = Context(
                    run_id=self.run_id,
                    node_id=node_id,
                    node_config=self._config(index),
                    state=RecordDict(),
                    run_config={},
                )
            return self._contexts[node_id]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """The replies that arrived within ``timeout`` seconds of the call (``None``: no limit), in the
        order of ``messages``; up to ``workers`` node calls run at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        messages = list(messages)
        replies: dict[int, Message] = {}  # by position in `messages`
        finished = threading.Condition()
        running: set[int] = set()

        def remaining() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        def call(index: int, message: Message, context: Context) -> None:
            try:
                reply = self.client_app(message, context)
            except Exception as err:  # a failing client is the server's to handle, as on a SuperNode
                reply = Message(Error(code=_ERROR_CODE, reason=f"{type(err).__name__}: {err}"), reply_to=message)
            with self._lock:
                self._busy.discard(context.node_id)
            with finished:
                replies[index] = reply
                running.discard(index)
                finished.notify_all()

        for index, message in enumerate(messages):
            with finished:  # a free worker, before the deadline
                while len(running) >= self.workers and (remaining() is None or remaining() > 0):
                    finished.wait(remaining())
                if len(running) >= self.workers or (deadline is not None and remaining() <= 0):
                    break  # the deadline passed: this message and the rest are not delivered
                node = message.metadata.dst_node_id
                context = self.context(node)
                with self._lock:
                    busy = node in self._busy
                    self._busy.add(node)
                if busy:
                    log.warning("Node %d is still busy with an earlier message: it gets none this time.", node)
                    continue
                running.add(index)
                threading.Thread(target=call, args=(index, message, context), daemon=True, name=f"node-{node}").start()
        with finished:  # the calls under way, until the deadline
            while running and (remaining() is None or remaining() > 0):
                finished.wait(remaining())
            arrived = [replies[index] for index in sorted(replies)]
        self.replies += arrived
        return arrived


class NodeSubset(Grid):
    """``grid`` as seen by a strategy that may only pick ``node_ids`` (a federation's training or its
    test clients): every call goes to ``grid``, but ``get_node_ids`` lists only those nodes."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self.grid, self.node_ids = grid, sorted(node_ids)

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        connected = set(self.grid.get_node_ids())
        return [node for node in self.node_ids if node in connected]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)
