"""Many simulated clients on a few Flower nodes: :class:`ClientPool`.

Flower's simulation runtime (1.42) makes one SuperNode per client: it registers every node and its
``Context`` before round 1 and polls every node's message queue ten times a second, so its cost grows
with the number of clients whether they are sampled or not (measured in
``benchmarks/federated_scale.py``: 0.62 s a round at 10 clients, 1.38 s at 1,000, and 10,000 clients
did not start). :class:`ClientPool` keeps the clients virtual, as FL simulators do: the strategy sees
one node per client (``FIRST_NODE_ID + partition``, as on the in-process grid, so the server knows the
roles from the data), and each message goes to one of a few Flower nodes with the client it is for
(:data:`CLIENT_RECORD`). A client's state between rounds (what a SuperNode keeps in its
``Context.state``: the weights it keeps personal) stays with the server and travels with that
client's messages (:data:`PERSONAL_RECORD`), so a round costs the clients it samples and the state of
the clients that trained, never the others.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from lit_meta.federated.grid import FIRST_NODE_ID, ExchangeGrid
from lit_meta.validation import check_positive_int

#: The config record of a pooled message: ``{"partition-id": i}``, the client the node serves for it.
CLIENT_RECORD = "lit-meta.client"
#: The array record of a pooled message and of its reply with the weights that client keeps personal.
PERSONAL_RECORD = "lit-meta.personal"


class ClientPool(ExchangeGrid):
    """``num_clients`` virtual nodes over the Flower nodes of ``grid``.

    Args:
        grid: a Flower runtime's grid (the simulation's), whose nodes run a
            :class:`~lit_meta.federated.client.MetaClient` made with ``pooled=True``.
        num_clients: the clients (partitions ``0 .. num_clients - 1``).

    A message to virtual node ``FIRST_NODE_ID + i`` goes to a node of ``grid`` (in turn, so the
    messages of one exchange are spread over every node) with ``{"partition-id": i}`` and client
    ``i``'s state; its reply comes back from virtual node ``FIRST_NODE_ID + i``, its new state kept
    here. A reply that does not arrive within the exchange's ``timeout`` leaves the client's state as
    it was; and unlike the in-process grid's busy nodes, such a client may be sampled again while its
    late call still runs on another node, starting from that earlier state.
    """

    def __init__(self, grid: Grid, num_clients: int) -> None:
        check_positive_int("num_clients", num_clients)
        self.grid, self.num_clients = grid, num_clients
        self.states: dict[int, ArrayRecord] = {}  # by partition id: the personal weights of clients that trained

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def get_node_ids(self) -> Iterable[int]:
        return list(range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_clients))

    def partitions(self) -> dict[int, int]:
        """``{virtual node id: partition id}``: known without a message."""
        return {FIRST_NODE_ID + i: i for i in range(self.num_clients)}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """The replies, from the virtual nodes, that arrived within ``timeout`` seconds."""
        nodes = sorted(self.grid.get_node_ids())
        if not nodes:
            raise RuntimeError("Expected >= 1 Flower node to run the pooled clients, but got none.")
        sent: dict[str, tuple[Message, Message, int]] = {}  # by group id: (virtual message, the one sent, partition)
        for index, message in enumerate(messages):
            partition = self._partition(message.metadata.dst_node_id)
            # A reply, an error one included, carries its message's group id: made unique per client, it
            # says which client a reply is from, on any grid.
            group = f"{message.metadata.group_id}/client-{partition}"
            if group in sent:
                raise ValueError(f"Expected one message per client in an exchange, but got two for client {partition}.")
            content = RecordDict(dict(message.content))
            content[CLIENT_RECORD] = ConfigRecord({"partition-id": partition})
            state = self.states.get(partition)
            if state is not None:
                content[PERSONAL_RECORD] = state
            pooled = Message(
                content=content,
                message_type=message.metadata.message_type,
                dst_node_id=nodes[index % len(nodes)],
                group_id=group,
                ttl=message.metadata.ttl,
            )
            sent[group] = (message, pooled, partition)
        replies = self.grid.send_and_receive([pooled for _, pooled, _ in sent.values()], timeout=timeout)
        answered = {reply.metadata.group_id: reply for reply in replies}
        arrived = []
        for group, (message, _, partition) in sent.items():
            reply = answered.get(group)
            if reply is None:
                continue
            if reply.has_error():
                arrived.append(Message(reply.error, reply_to=message))
                continue
            content = RecordDict({key: record for key, record in reply.content.items() if key != PERSONAL_RECORD})
            if PERSONAL_RECORD in reply.content:
                self.states[partition] = reply.content[PERSONAL_RECORD]
            arrived.append(Message(content, reply_to=message))
        return arrived

    def _partition(self, node_id: int) -> int:
        partition = node_id - FIRST_NODE_ID
        if not 0 <= partition < self.num_clients:
            raise ValueError(
                f"Expected a node id in [{FIRST_NODE_ID}, {FIRST_NODE_ID + self.num_clients}), but got {node_id}."
            )
        return partition
