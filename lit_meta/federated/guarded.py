"""Any Flower strategy, its clients chosen by role and its replies checked: :class:`Guarded`.

Flower's strategies drop error replies but aggregate whatever else arrives, and a round in which no
reply arrives leaves the model silently unchanged. :class:`Guarded` wraps any strategy (FedAvg,
FedAdam, FedMedian, a DP wrapper, ...) and:

- lets it sample training clients among the nodes that train and evaluation clients among the
  (unseen) test clients only (:class:`~lit_meta.federated.roles.Roles`), Python's and NumPy's
  generators seeded per round;
- sends the weights in the run's ``transfer`` dtype and casts the replies back to float32 before
  the strategy aggregates them;
- before it aggregates a round, leaves out, with a logged warning, replies whose weights are
  NaN/infinite or of other keys or shapes than the global model's, and stops the run with
  :class:`~lit_meta.federated.errors.FederationError` if fewer than ``min_replies`` usable replies
  remain;
- leaves out evaluation replies without their metrics or with non-finite ones (a warning, and
  ``eval-failures`` in the round's record) and stops the run if an evaluated round has none left;
- pools the test clients' personalised results into one mean with its 95% CI and keeps each
  client's figure (:attr:`Guarded.rounds`), with the replies used, the late and failed ones, the
  bytes and the seconds of every round;
- with ``evaluate_participants`` > 0, also sends ``evaluate`` messages (their config saying
  :data:`~lit_meta.federated.data.EVALUATION` = :data:`~lit_meta.federated.data.PARTICIPANT`) to a
  seeded sample of the training clients, which evaluate their personal state on their own local test
  data, and pools those results apart (``participants-*``), leaving the test clients' as they are.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from lit_meta.federated.data import EVALUATION, PARTICIPANT
from lit_meta.federated.errors import FederationError
from lit_meta.federated.grid import NodeSubset
from lit_meta.federated.records import arrays_dtype, cast_arrays, check_arrays
from lit_meta.federated.roles import Roles
from lit_meta.federated.settings import RunSettings
from lit_meta.functional import pooled_mean_ci95
from lit_meta.validation import check_type

log = logging.getLogger(__name__)


class Guarded(Strategy):
    """``strategy``, with clients chosen by role and replies checked (see the module docstring).

    Args:
        strategy: any Flower ``Strategy``.
        settings: the run's settings (``min_replies``, ``evaluate_every``, ``evaluate_participants``,
            ``rounds``, ``start_round``, ``seed``, ``transfer``).
        roles: which nodes train and which evaluate; ``None``: every node does both.
        metric: the evaluation metric the clients report (``"accuracy"`` or ``"mse"``).

    Raises:
        ValueError: ``evaluate_participants`` > 0 but no node has role ``"train"`` (a node of role
            ``"both"`` is evaluated as a test client).

    Attributes:
        rounds: per round (counted from the run's first, a resumed run's included): ``sent``,
            ``replies`` (used in the aggregate), ``late`` (no reply before the round timeout),
            ``failures`` (an error reply, or one left out by the checks), ``bytes-sent``,
            ``bytes-received``, ``train-seconds`` (the training exchange), ``round-seconds`` (the
            round, its evaluation included), ``train-loss``, and in evaluated rounds the pooled metric,
            its 95% CI, ``test-tasks``, ``eval-failures`` and each test client's figure (``clients``);
            where training clients were evaluated too, the same of theirs apart: ``participants-<metric>``,
            ``participants-<metric>-ci95``, ``participants-tasks``, ``participants-eval-failures``,
            ``participants`` (each one's figure, by partition id) and ``participants-trained`` (how many
            of them had a training reply aggregated in this run before: the others hold only the initial
            personal state; a resumed run counts from its resumption).
    """

    def __init__(
        self, strategy: Strategy, settings: RunSettings, roles: Roles | None = None, metric: str = "accuracy"
    ) -> None:
        check_type("strategy", strategy, Strategy)
        check_type("settings", settings, RunSettings)
        check_type("metric", metric, str)
        self.strategy, self.settings, self.roles, self.metric = strategy, settings, roles, metric
        if settings.evaluate_participants and (roles is None or not roles.participants):
            raise ValueError(
                f"Expected >= 1 training client of role 'train' to evaluate with `evaluate_participants` "
                f"{settings.evaluate_participants}, but got none (a client of role 'both' is evaluated as a test "
                "client)."
            )
        self._global: ArrayRecord | None = None
        self._evaluations_sent = 0  # test clients' evaluation messages of the current round
        self._participants: set[int] = set()  # the nodes of the training clients evaluated this round
        self._trained: set[int] = set()  # the nodes whose training reply entered an aggregate
        self._started = self._sent = 0.0  # when the current round started, when its training messages left
        self.rounds: dict[int, dict] = {}

    def summary(self) -> None:
        self.strategy.summary()

    def _grid(self, grid: Grid, nodes: list[int] | None) -> Grid:
        return grid if self.roles is None or nodes is None else NodeSubset(grid, nodes)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._started = time.monotonic()
        server_round += self.settings.start_round
        # Flower's strategies sample clients from Python's `random`; its DP wrappers draw noise from
        # NumPy's global generator: both are seeded per round, so a resumed run draws what an
        # uninterrupted one would.
        random.seed(self.settings.seed * 1_000_003 + server_round)
        np.random.seed((self.settings.seed * 1_000_003 + server_round) % 2**32)
        self._global = arrays
        grid = self._grid(grid, self.roles.train if self.roles else None)
        messages = self._encode(self.strategy.configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {
            "sent": len(messages),
            "bytes-sent": sum(_content_bytes(m) for m in messages),
        }
        self._sent = time.monotonic()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.settings.start_round
        replies = list(replies)
        exchange = time.monotonic() - self._sent
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
        self._trained.update(reply.metadata.src_node_id for reply in usable)
        stats = self.rounds.setdefault(server_round, {"sent": len(replies), "bytes-sent": 0})
        stats.update(
            {
                "replies": len(usable),
                "late": max(stats["sent"] - len(replies), 0),
                "failures": len(replies) - len(usable),
                "bytes-received": received,
                "train-seconds": round(exchange, 3),
            }
        )
        if len(usable) < self.settings.min_replies:
            listed = "; ".join(reasons[:3]) or "no reply arrived before the round timeout"
            raise FederationError(
                f"Expected >= {self.settings.min_replies} usable replies in round {server_round}, but got "
                f"{len(usable)} of {stats['sent']} ({listed})."
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
        server_round += self.settings.start_round
        self._evaluations_sent, self._participants = 0, set()
        if not self.settings.evaluates(server_round):
            return []
        messages = []
        if self.roles is None or self.roles.test:
            test_grid = self._grid(grid, self.roles.test if self.roles else None)
            messages = list(self.strategy.configure_evaluate(server_round, arrays, config, test_grid))
            self._evaluations_sent = len(messages)
        if self.settings.evaluate_participants:
            nodes = {self.roles.partition[node]: node for node in self.roles.participants}
            chosen = [nodes[client] for client in self.settings.participants(list(nodes), server_round)]
            content = RecordDict(
                {"arrays": arrays, "config": ConfigRecord({"server-round": server_round, EVALUATION: PARTICIPANT})}
            )
            messages += [
                Message(content=content, dst_node_id=node, message_type=MessageType.EVALUATE) for node in chosen
            ]
            self._participants = set(chosen)
        return self._encode(messages)

    def _encode(self, messages: Iterable[Message]) -> list[Message]:
        """The strategy's messages, their weights cast to the ``transfer`` dtype."""
        messages, cast = list(messages), {}
        if self.settings.transfer != "float32":
            for message in messages:
                for key, record in message.content.array_records.items():
                    if id(record) not in cast:  # the strategy sends one record to every client: cast it once
                        cast[id(record)] = cast_arrays(record, self.settings.transfer)
                    message.content[key] = cast[id(record)]
        return messages

    def _decode(self, reply: Message) -> Message:
        """``reply`` with its weights in float32, the precision the strategy aggregates in."""
        for key, record in reply.content.array_records.items():
            if arrays_dtype(record) != "float32":
                reply.content[key] = cast_arrays(record, "float32")
        return reply

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.settings.start_round
        replies = list(replies)
        record = self.rounds.setdefault(server_round, {})
        record["round-seconds"] = round(time.monotonic() - self._started, 3)
        tested = [r for r in replies if r.metadata.src_node_id not in self._participants]
        if self._participants:  # the training clients' own figures, apart from the test clients'
            evaluated = [r for r in replies if r.metadata.src_node_id in self._participants]
            pooled, _ = self._pool(server_round, evaluated, len(self._participants))
            record.update({f"participants-{key}": value for key, value in pooled.items() if key != "clients"})
            record["participants"] = pooled["clients"]
            record["participants-trained"] = len(self._participants & self._trained)
        if not self._evaluations_sent:  # Flower asks every round; this one evaluated no test client
            return None
        pooled, usable = self._pool(server_round, tested, self._evaluations_sent, "test-")
        record.update(pooled)
        return self.strategy.aggregate_evaluate(server_round, usable)

    def _pool(
        self, server_round: int, replies: list[Message], sent: int, tasks: str = ""
    ) -> tuple[dict, list[Message]]:
        """The pooled figures of ``replies`` to ``sent`` evaluation messages (the metric, its 95% CI,
        ``<tasks>tasks``, ``eval-failures`` and each client's figure, ``clients``) and the usable replies.

        Raises:
            FederationError: no reply is usable.
        """
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
        if not usable:  # never a round without its result, as Flower would give
            listed = "; ".join(reasons[:3]) or "no reply arrived before the round timeout"
            kind = "" if tasks else "participant "
            raise FederationError(
                f"Expected >= 1 usable {kind}evaluation reply in round {server_round}, but got 0 of {sent} ({listed})."
            )
        ordered = [clients[c] for c in sorted(clients)]
        mean, ci95 = pooled_mean_ci95(
            [c[self.metric] for c in ordered], [c[f"{self.metric}-sq"] for c in ordered], [c["tasks"] for c in ordered]
        )
        pooled = {
            self.metric: mean,
            f"{self.metric}-ci95": ci95,
            f"{tasks}tasks": sum(c["tasks"] for c in ordered),
            "eval-failures": sent - len(usable),
            "clients": {c: {"tasks": v["tasks"], self.metric: v[self.metric]} for c, v in sorted(clients.items())},
        }
        return pooled, usable

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
