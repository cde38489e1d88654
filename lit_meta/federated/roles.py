"""Which node is which client: its partition id and role, checked once before round 1.

A federation's nodes train (``"train"``), are unseen test clients that only adapt and report
(``"test"``), or do both (``"both"``). Where only the nodes know (Flower's simulation and deployment
runtimes, whose node ids are Flower's), :func:`discover_roles` asks each of them (a Flower ``query``
message); where the server knows which partition each node holds (the in-process grid),
:func:`known_roles` reads the roles from the data, without a message. Either way the same checks
apply, and :func:`check_strategy` then refuses a strategy that would wait for more nodes than there are.

:func:`role_summary` is what a run records of its clients (counts and a digest, whatever their
number), and what a resumed run compares.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from flwr.app import RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from lit_meta.federated.errors import FederationError

#: The roles a client may have.
ROLES = ("train", "test", "both")


@dataclass(frozen=True)
class Roles:
    """Which node is which client: ``partition[node_id]`` its partition id; the nodes that train and
    those that evaluate (a node of role ``"both"`` is in each)."""

    partition: dict[int, int]
    train: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)

    @property
    def participants(self) -> list[int]:
        """The nodes that train and are no test client (role ``"train"``): those a run may also evaluate
        on their local test data (``evaluate_participants``); a node of role ``"both"`` is evaluated
        as a test client."""
        test = set(self.test)
        return [node for node in self.train if node not in test]


def discover_roles(grid: Grid, expected_nodes: int | None = None, timeout: float = 600.0) -> Roles:
    """Ask every node which client it is (a Flower ``query`` message).

    Args:
        grid: the run's grid.
        expected_nodes: wait (up to ``timeout``) until this many nodes are connected, as SuperNodes
            of a deployment connect one by one.
        timeout: seconds to wait for the nodes and for their answers.

    Raises:
        FederationError: too few nodes connected, a node did not answer, a node gave an unknown role,
            two nodes claimed one partition id, or no node trains.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < (expected_nodes or 1):
        if time.monotonic() > deadline:
            raise FederationError(
                f"Expected {expected_nodes} connected nodes within {timeout:g} s, but got {len(nodes)}."
            )
        time.sleep(0.5)
    messages = [grid.create_message(RecordDict(), "query", node, "roles") for node in nodes]
    replies = list(grid.send_and_receive(messages, timeout=max(deadline - time.monotonic(), 1.0)))
    answers = {r.metadata.src_node_id: r for r in replies if not r.has_error()}
    if len(answers) < len(nodes):
        silent = sorted(set(nodes) - set(answers))
        reasons = "; ".join(f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error())
        raise FederationError(
            f"Expected every node to say which client it is, but got no answer from {len(silent)} of "
            f"{len(nodes)} ({reasons or 'timeout'})."
        )
    identities = {}
    for node, reply in answers.items():
        identity = reply.content.config_records["identity"]
        identities[node] = (int(identity["partition-id"]), identity["role"])
    return _roles(identities)


def known_roles(partitions: Mapping[int, int], role: Callable[[int], str]) -> Roles:
    """The roles of nodes whose partitions the server knows (``partitions[node_id]``, as
    :meth:`~lit_meta.federated.grid.InProcessGrid.partitions` gives them), read from the data
    (``role(partition_id)``, a :class:`~lit_meta.federated.data.FederatedData`'s): no message, the
    checks of :func:`discover_roles`.

    Raises:
        FederationError: a role is unknown, two nodes hold one partition id, or no node trains.
    """
    return _roles({node: (partition, role(partition)) for node, partition in partitions.items()})


def _roles(identities: Mapping[int, tuple[int, object]]) -> Roles:
    """``Roles`` of ``{node: (partition id, role)}``, checked."""
    partition, train, test = {}, [], []
    for node, (client, role) in sorted(identities.items()):
        partition[node] = client
        if role not in ROLES:
            raise FederationError(
                f"Expected node {node}'s role to be one of {', '.join(map(repr, ROLES))}, but got {role!r}."
            )
        if role in ("train", "both"):
            train.append(node)
        if role in ("test", "both"):
            test.append(node)
    _check_unique_partitions(partition)
    if not train:
        raise FederationError(f"Expected >= 1 training client among the {len(identities)} nodes, but got none.")
    return Roles(partition, train, test)


def _check_unique_partitions(partition: dict[int, int]) -> None:
    """Two nodes claiming one partition id (two SuperNodes started with the same ``partition-id``)
    would train on the same data and share one client's evaluation record."""
    nodes_of: dict[int, list[int]] = {}
    for node, client in partition.items():
        nodes_of.setdefault(client, []).append(node)
    for client, nodes in sorted(nodes_of.items()):
        if len(nodes) > 1:
            raise FederationError(
                f"Expected one node per partition id, but got {len(nodes)} nodes ({', '.join(map(str, nodes))}) "
                f"with partition id {client}."
            )


def check_strategy(strategy: Strategy, roles: Roles) -> None:
    """Fail (``ValueError``) before round 1 where ``strategy`` would wait forever: Flower's
    ``sample_nodes`` waits, without a timeout, for ``max(min_available_nodes, min_*_nodes)`` nodes."""
    inner = strategy
    while hasattr(inner, "strategy") and isinstance(inner.strategy, Strategy):  # DP wrappers
        inner = inner.strategy
    available = getattr(inner, "min_available_nodes", 0)
    for kind, nodes, attribute in (
        ("train", roles.train, "min_train_nodes"),
        ("test", roles.test, "min_evaluate_nodes"),
    ):
        needed = max(available, getattr(inner, attribute, 0))
        if kind == "test" and (not nodes or getattr(inner, "fraction_evaluate", 1.0) == 0):
            continue
        if needed > len(nodes):
            raise ValueError(
                f"Expected `min_available_nodes` and `{attribute}` of {type(inner).__name__} <= {len(nodes)} "
                f"{kind} clients, but got {needed}."
            )


def role_summary(roles: Sequence[str] | Mapping[str, str]) -> dict[str, int | str]:
    """What a run records of its clients: how many have each role, and the sha256 of the roles in
    partition order (one line each), so that two runs of the same clients have the same summary,
    whatever their number (a list of 100,000 roles would take 1.8 MB in every checkpoint).

    Args:
        roles: every client's role, by partition id: a sequence, or the ``{"0": "train", ...}`` of
            the checkpoints written before summaries (summarised alike, for resume).
    """
    if isinstance(roles, Mapping):
        roles = [roles[str(i)] for i in range(len(roles))]
    counts = Counter(roles)
    digest = hashlib.sha256("".join(f"{role}\n" for role in roles).encode()).hexdigest()
    return {**{role: counts[role] for role in ROLES if counts[role]}, "sha256": digest}
