"""The server side: Flower's strategies run the rounds; :class:`Guarded` keeps bad replies out.

Flower's strategies drop error replies but aggregate whatever else arrives, and a round in which no
reply arrives leaves the model silently unchanged. :class:`Guarded` wraps any strategy (FedAvg,
FedAdam, FedMedian, a DP wrapper, ...) and:

- lets it sample training clients among the nodes that train and evaluation clients among the
  (unseen) test clients only, as each node said when asked (:func:`discover_roles`);
- before it aggregates a round, leaves out, with a logged warning, replies whose weights are
  NaN/infinite or of other keys or shapes than the global model's, and stops the run with
  :class:`FederationError` if fewer than ``min_replies`` usable replies remain;
- leaves out evaluation replies without their metrics or with non-finite ones (a warning, and
  ``eval-failures`` in the round's record) and stops the run if an evaluated round has none left;
- pools the test clients' personalised results into one mean with its 95% CI and keeps each
  client's figure (:attr:`Guarded.rounds`), with the replies, failures and bytes of every round.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.grid import NodeSubset
from lit_meta.federated.records import arrays_dtype, cast_arrays, check_arrays, learner_arrays, personal_names, without
from lit_meta.functional import pooled_mean_ci95
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int, check_type

log = logging.getLogger(__name__)

#: ``on_round(server_round, arrays, record)``: called after every round with the global weights and
#: the round's record (see :attr:`Guarded.rounds`).
RoundHook = Callable[[int, ArrayRecord, dict], None]


class FederationError(RuntimeError):
    """A federation cannot start, or a round could not produce a usable aggregate."""


@dataclass(frozen=True)
class Roles:
    """Which node is which client: ``partition[node_id]`` its partition id; the nodes that train and
    those that evaluate (a node of role ``"both"`` is in each)."""

    partition: dict[int, int]
    train: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)


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
    partition, train, test = {}, [], []
    for node, reply in sorted(answers.items()):
        identity = reply.content.config_records["identity"]
        partition[node] = int(identity["partition-id"])
        _check_role(node, identity["role"])
        if identity["role"] in ("train", "both"):
            train.append(node)
        if identity["role"] in ("test", "both"):
            test.append(node)
    _check_unique_partitions(partition)
    if not train:
        raise FederationError(f"Expected >= 1 training client among the {len(nodes)} nodes, but got none.")
    return Roles(partition, train, test)


ROLES = ("train", "test", "both")


def _check_role(node: int, role: object) -> None:
    if role not in ROLES:
        raise FederationError(
            f"Expected node {node}'s role to be one of {', '.join(map(repr, ROLES))}, but got {role!r}."
        )


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


class Guarded(Strategy):
    """``strategy``, with clients chosen by role and replies checked (see the module docstring).

    Args:
        strategy: any Flower ``Strategy``.
        min_replies: usable training replies a round needs.
        roles: which nodes train and which evaluate; ``None``: every node does both.
        metric: the evaluation metric the clients report (``"accuracy"`` or ``"mse"``).
        evaluate_every: evaluate every this many rounds, and after the last (``last_round``).
        last_round: the run's last round.
        round_offset: rounds done before this run started (a resumed run counts on from there).
        seed: before each round, Python's ``random`` (from which Flower's strategies sample a round's
            clients) is seeded by (``seed``, round), so a resumed run samples as an uninterrupted one.
        transfer: the dtype weights travel in: ``"float16"`` halves the bytes each way; the server
            still aggregates in float32 (replies are cast back before the strategy sees them).
    """

    def __init__(
        self,
        strategy: Strategy,
        min_replies: int = 1,
        roles: Roles | None = None,
        metric: str = "accuracy",
        evaluate_every: int = 1,
        last_round: int | None = None,
        round_offset: int = 0,
        seed: int = 0,
        transfer: Literal["float32", "float16"] = "float32",
    ) -> None:
        check_type("strategy", strategy, Strategy)
        check_one_of("transfer", transfer, ("float32", "float16"))
        check_type("seed", seed, int)
        check_positive_int("min_replies", min_replies)
        check_positive_int("evaluate_every", evaluate_every)
        check_positive_int("round_offset", round_offset, minimum=0)
        check_type("metric", metric, str)
        if last_round is not None:
            check_positive_int("last_round", last_round)
        self.strategy, self.min_replies, self.roles, self.metric = strategy, min_replies, roles, metric
        self.evaluate_every, self.last_round, self.round_offset = evaluate_every, last_round, round_offset
        self.seed, self.transfer = seed, transfer
        self._global: ArrayRecord | None = None
        self._evaluations_sent = 0  # evaluation messages of the current round
        self.rounds: dict[int, dict] = {}  # per (absolute) round: counts, bytes, metrics, per-client results

    def summary(self) -> None:
        self.strategy.summary()

    def _grid(self, grid: Grid, nodes: list[int] | None) -> Grid:
        return grid if self.roles is None or nodes is None else NodeSubset(grid, nodes)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        # Flower's strategies sample clients from Python's `random`; its DP wrappers draw noise from
        # NumPy's global generator: both are seeded per round, so a resumed run draws what an
        # uninterrupted one would.
        random.seed(self.seed * 1_000_003 + server_round)
        np.random.seed((self.seed * 1_000_003 + server_round) % 2**32)
        self._global = arrays
        grid = self._grid(grid, self.roles.train if self.roles else None)
        messages = self._encode(self.strategy.configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {
            "sent": len(messages),
            "bytes-sent": sum(_content_bytes(m) for m in messages),
        }
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        replies = list(replies)
        received = sum(_content_bytes(r) for r in replies if not r.has_error())  # as they travelled
        usable, reasons = [], []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                reasons.append(f"node {node}: {reply.error.reason}")
                continue
            try:
                if len(reply.content.array_records) != 1 or len(reply.content.metric_records) != 1:
                    raise ValueError("Expected one ArrayRecord and one MetricRecord in a reply.")
                check_arrays(next(iter(reply.content.array_records.values())), self._global)
            except ValueError as err:
                log.warning("Round %d: left the reply of node %d out of the aggregate: %s", server_round, node, err)
                reasons.append(f"node {node}: {err}")
                continue
            usable.append(self._decode(reply))
        stats = self.rounds.setdefault(server_round, {"sent": len(replies), "bytes-sent": 0})
        stats.update(
            replies=len(usable),
            failures=stats["sent"] - len(usable),
            **{"bytes-received": received},
        )
        if len(usable) < self.min_replies:
            listed = "; ".join(reasons[:3]) or "no reply arrived before the round timeout"
            raise FederationError(
                f"Expected >= {self.min_replies} usable replies in round {server_round}, but got {len(usable)} "
                f"of {stats['sent']} ({listed})."
            )
        arrays, metrics = self.strategy.aggregate_train(server_round, usable)
        if metrics is not None and "train-loss" in metrics:
            stats["train-loss"] = float(metrics["train-loss"])
        spent = self.strategy.privacy_spent() if hasattr(self.strategy, "privacy_spent") else None
        if spent is not None:  # a DP wrapper with an accountant: the privacy spent so far
            stats.update(epsilon=float(spent.epsilon), delta=float(spent.delta))
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self._evaluations_sent = 0
        if server_round % self.evaluate_every and server_round != self.last_round:
            return []
        if self.roles is not None and not self.roles.test:
            return []
        grid = self._grid(grid, self.roles.test if self.roles else None)
        messages = self._encode(self.strategy.configure_evaluate(server_round, arrays, config, grid))
        self._evaluations_sent = len(messages)
        return messages

    def _encode(self, messages: Iterable[Message]) -> list[Message]:
        """The strategy's messages, their weights cast to the ``transfer`` dtype."""
        messages, cast = list(messages), {}
        if self.transfer != "float32":
            for message in messages:
                for key, record in message.content.array_records.items():
                    if id(record) not in cast:  # the strategy sends one record to every client: cast it once
                        cast[id(record)] = cast_arrays(record, self.transfer)
                    message.content[key] = cast[id(record)]
        return messages

    def _decode(self, reply: Message) -> Message:
        """``reply`` with its weights in float32, the precision the strategy aggregates in."""
        for key, record in reply.content.array_records.items():
            if arrays_dtype(record) != "float32":
                reply.content[key] = cast_arrays(record, "float32")
        return reply

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        replies = list(replies)
        if not self._evaluations_sent:  # Flower asks every round; this one evaluated nothing
            return None
        clients, usable, reasons = {}, [], []
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    raise ValueError(reply.error.reason)
                figures = self._evaluation(reply)
            except ValueError as err:
                log.warning("Round %d: left the evaluation of node %d out: %s", server_round, node, err)
                reasons.append(f"node {node}: {err}")
                continue
            clients[self.roles.partition[node] if self.roles else node] = figures
            usable.append(reply)
        record = self.rounds.setdefault(server_round, {})
        record["eval-failures"] = self._evaluations_sent - len(usable)
        if not usable:  # never a round without its result, as Flower would give
            listed = "; ".join(reasons[:3]) or "no reply arrived before the round timeout"
            raise FederationError(
                f"Expected >= 1 usable evaluation reply in round {server_round}, but got 0 of "
                f"{self._evaluations_sent} ({listed})."
            )
        ordered = [clients[c] for c in sorted(clients)]
        mean, ci95 = pooled_mean_ci95(
            [c[self.metric] for c in ordered], [c[f"{self.metric}-sq"] for c in ordered], [c["tasks"] for c in ordered]
        )
        record.update(
            {self.metric: mean, f"{self.metric}-ci95": ci95, "test-tasks": sum(c["tasks"] for c in ordered)},
            clients={c: {"tasks": v["tasks"], self.metric: v[self.metric]} for c, v in sorted(clients.items())},
        )
        return self.strategy.aggregate_evaluate(server_round, usable)

    def _evaluation(self, reply: Message) -> dict[str, float]:
        """A test client's summary (tasks, mean and mean square of the metric), checked.

        Raises:
            ValueError: the reply lacks the metrics, or holds a count < 1 or a non-finite value.
        """
        records = reply.content.metric_records
        keys = ("num-examples", self.metric, f"{self.metric}-sq")
        if "metrics" not in records or any(key not in records["metrics"] for key in keys):
            raise ValueError(f"Expected an evaluation reply with metrics {', '.join(keys)}, but got another reply.")
        metrics = records["metrics"]
        figures = {"tasks": int(metrics["num-examples"]), **{key: float(metrics[key]) for key in keys[1:]}}
        if figures["tasks"] < 1:
            raise ValueError(f"Expected >= 1 evaluated tasks, but got {figures['tasks']}.")
        if not all(math.isfinite(v) for v in figures.values()):
            raise ValueError(f"Expected finite evaluation metrics, but got {figures}.")
        return figures


def _content_bytes(message: Message) -> int:
    """Bytes of the weights a message carries (its ``ArrayRecord`` s)."""
    return sum(record.count_bytes() for record in message.content.array_records.values())


def federate(
    grid: Grid,
    learner: MetaLearner,
    strategy: Strategy,
    rounds: int,
    local_steps: int,
    min_replies: int = 1,
    round_timeout: float = 3600.0,
    seed: int = 0,
    evaluate_every: int = 1,
    start_round: int = 0,
    initial_arrays: ArrayRecord | None = None,
    expected_nodes: int | None = None,
    on_round: RoundHook | None = None,
    transfer: Literal["float32", "float16"] = "float32",
    personal: Sequence[str] = (),
) -> Result:
    """Run rounds ``start_round + 1 .. rounds`` of ``strategy`` on ``grid`` from ``learner``'s weights.

    First every node is asked which client it is (:func:`discover_roles`): training clients get
    ``train`` messages, test clients ``evaluate`` ones. ``seed`` seeds Python's ``random``, from
    which Flower's strategies sample the clients of a round, once per round (:class:`Guarded`), so a
    resumed run (``start_round > 0``, ``learner`` holding round ``start_round``'s weights) goes on as
    an uninterrupted one would. ``initial_arrays`` (default: ``learner``'s weights) are the global
    weights to start from, exactly as the server held them (a resumed run's). ``transfer``:
    the dtype weights travel in (see :class:`Guarded`). ``personal``: the ``fnmatch`` patterns of the
    weights the clients keep (partial federation; the same as the clients'): only the others travel.

    Returns:
        Flower's ``Result``: the final ``arrays`` and the metrics of every round.

    Raises:
        ValueError: the strategy cannot sample the clients there are.
        FederationError: a node did not say which client it is, a round had fewer than
            ``min_replies`` usable replies, or an evaluated round had no usable evaluation reply.
    """
    check_positive_int("rounds", rounds)
    check_positive_int("local_steps", local_steps)
    check_type("seed", seed, int)
    check_positive_int("start_round", start_round, minimum=0)
    check_positive_float("round_timeout", round_timeout)
    if expected_nodes is not None:
        check_positive_int("expected_nodes", expected_nodes)
    if start_round >= rounds:
        raise ValueError(f"Expected `start_round` < {rounds} rounds, but got {start_round}.")
    names = personal_names(learner, personal) if personal else []
    roles = discover_roles(grid, expected_nodes, timeout=min(round_timeout, 600.0))
    check_strategy(strategy, roles)
    guarded = Guarded(
        strategy, min_replies, roles, learner.metric_name, evaluate_every, rounds, start_round, seed, transfer
    )

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0 and on_round is not None:
            absolute = server_round + start_round
            on_round(absolute, arrays, guarded.rounds.get(absolute, {}))

    result = guarded.start(
        grid,
        initial_arrays if initial_arrays is not None else without(learner_arrays(learner), names),
        num_rounds=rounds - start_round,
        timeout=round_timeout,
        train_config=ConfigRecord({"local-steps": local_steps}),
        evaluate_fn=after_round,
    )
    result.rounds = guarded.rounds  # lit-meta's per-round records, beside Flower's metrics
    return result


def server_app(
    learner: MetaLearner,
    strategy: Strategy,
    rounds: int,
    local_steps: int,
    min_replies: int = 1,
    on_result: Callable[[Result], None] | None = None,
    **options: object,
) -> ServerApp:
    """A Flower ``ServerApp`` running :func:`federate` (for Flower's simulation and deployment runtimes);
    ``on_result`` receives the final ``Result``; ``options`` are :func:`federate`'s other arguments."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: object) -> None:
        result = federate(grid, learner, strategy, rounds, local_steps, min_replies, **options)
        if on_result is not None:
            on_result(result)

    return app
