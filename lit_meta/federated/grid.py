"""A Flower ``Grid`` that runs each node's real ``ClientApp`` in this process, one message at a time.

Flower's runtimes (simulation on Ray, a SuperLink with SuperNodes) deliver messages between
processes. For tests and small runs the same ``ServerApp``, strategies and ``ClientApp`` can run
without them: :class:`InProcessGrid` calls ``client_app(message, context)`` for each message, in
order, so a run is deterministic for a seed and takes milliseconds of overhead per message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

log = logging.getLogger(__name__)

#: Flower's node id of the server side (``flwr.common.constant.SUPERLINK_NODE_ID``).
SERVER_NODE_ID = 1
_ERROR_CODE = 0  # Flower's `ErrorCode.UNKNOWN`: the ClientApp raised


def set_task_identity(run_id: int, node_id: int = SERVER_NODE_ID, task_id: int = 1) -> None:
    """Set what Flower's runtimes set before a ``ServerApp`` runs: a ``Message`` takes its run, node
    and task ids from ``flwr.supercore.task_identity.TaskIdentity`` (an internal API of Flower 1.42;
    the one place lit-meta touches it)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


class InProcessGrid(Grid):
    """Nodes ``0 .. num_nodes - 1`` (partition ids), each running ``client_app`` in this process.

    Args:
        client_app: a Flower ``ClientApp`` (or any ``(Message, Context) -> Message`` callable).
        num_nodes: how many nodes (SuperNodes) there are.
        node_config: ``node_config(partition_id)``, the node's config; default
            ``{"partition-id": i, "num-partitions": num_nodes}`` as Flower's simulation sets it.
        run_id: the run's id.

    A node whose ``ClientApp`` raises replies with an error message (as a SuperNode does); one that
    takes longer than the ``timeout`` of :meth:`send_and_receive` gives no reply (its call is left
    to finish in a daemon thread), and until that call ends the node is busy: it gets no further
    message (as if it were offline), so a late call never runs beside another node's. Each node
    keeps one ``Context``, so ``context.state`` persists across rounds as on a SuperNode.
    """

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        num_nodes: int,
        node_config: Callable[[int], dict] | None = None,
        run_id: int = 1,
    ) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        config = node_config or (lambda i: {"partition-id": i, "num-partitions": num_nodes})
        # Node ids as Flower draws them are random 64-bit integers; here they are fixed for repeatability.
        self._contexts = {
            1000 + i: Context(run_id=run_id, node_id=1000 + i, node_config=config(i), state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }
        self.replies: list[Message] = []  # every reply, in order (for inspection)
        self._late: dict[int, threading.Thread] = {}  # nodes whose call outlived its timeout
        set_task_identity(run_id)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid delivers messages only through `send_and_receive`.")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid delivers messages only through `send_and_receive`.")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Each message's reply, in order; ``timeout`` bounds each node's call (the nodes run one after
        another here, where Flower's runtimes run them side by side and bound the whole exchange)."""
        replies = []
        for message in messages:
            reply = self._deliver(message, timeout)
            if reply is not None:
                replies.append(reply)
        self.replies += replies
        return replies

    def _deliver(self, message: Message, timeout: float | None) -> Message | None:
        node = message.metadata.dst_node_id
        context = self._contexts[node]
        late = self._late.get(node)
        if late is not None and late.is_alive():
            log.warning("Node %d is still busy with an earlier message: it gets none this time.", node)
            return None
        self._late.pop(node, None)
        outcome: list[Message] = []

        def call() -> None:
            try:
                outcome.append(self.client_app(message, context))
            except Exception as err:  # a failing client is the server's to handle, as on a SuperNode
                outcome.append(
                    Message(Error(code=_ERROR_CODE, reason=f"{type(err).__name__}: {err}"), reply_to=message)
                )

        worker = threading.Thread(target=call, daemon=True, name=f"node-{context.node_id}")
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self._late[node] = worker
        return outcome[0] if outcome else None


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
