"""The server side: Flower's strategies run the rounds; :class:`Guarded` keeps bad replies out.

Flower's strategies drop error replies but aggregate whatever else arrives, and a round in which no
reply arrives leaves the model silently unchanged. :class:`Guarded` wraps any strategy (FedAvg,
FedAdam, FedMedian, a DP wrapper, ...) and, before the wrapped strategy aggregates a round:

- leaves out, with a logged warning, replies whose weights are NaN/infinite or of other keys or
  shapes than the global model's;
- stops the run with :class:`FederationError` if fewer than ``min_replies`` usable replies remain.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from lit_meta._checks import _check_positive_int, _check_type
from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.records import check_arrays, learner_arrays

log = logging.getLogger(__name__)


class FederationError(RuntimeError):
    """A round could not produce a usable aggregate."""


class Guarded(Strategy):
    """``strategy``, with replies checked before it aggregates them (see the module docstring).

    Args:
        strategy: any Flower ``Strategy``.
        min_replies: usable training replies a round needs.
    """

    def __init__(self, strategy: Strategy, min_replies: int = 1) -> None:
        _check_type("strategy", strategy, Strategy)
        _check_positive_int("min_replies", min_replies)
        self.strategy, self.min_replies = strategy, min_replies
        self._global: ArrayRecord | None = None
        self.rounds: dict[int, dict[str, int]] = {}  # per round: sent, replies, failures (errors, timeouts, left out)

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {"sent": len(messages)}
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
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
            usable.append(reply)
        stats = self.rounds.setdefault(server_round, {"sent": len(replies)})
        stats.update(replies=len(usable), failures=stats["sent"] - len(usable))
        if len(usable) < self.min_replies:
            listed = "; ".join(reasons[:3]) or "no reply arrived before the round timeout"
            raise FederationError(
                f"Expected >= {self.min_replies} usable replies in round {server_round}, but got {len(usable)} "
                f"of {stats['sent']} ({listed})."
            )
        return self.strategy.aggregate_train(server_round, usable)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, [r for r in replies if not r.has_error()])


def federate(
    grid: Grid,
    learner: MetaLearner,
    strategy: Strategy,
    rounds: int,
    local_steps: int,
    min_replies: int = 1,
    round_timeout: float = 3600.0,
    seed: int = 0,
) -> Result:
    """Run ``rounds`` rounds of ``strategy`` on ``grid`` from ``learner``'s weights.

    ``seed`` seeds Python's ``random``, from which Flower's strategies sample the clients of a round
    (and in which order their updates are summed).

    Returns:
        Flower's ``Result``: the final ``arrays`` and the metrics of every round.

    Raises:
        FederationError: a round had fewer than ``min_replies`` usable replies.
    """
    _check_positive_int("rounds", rounds)
    _check_positive_int("local_steps", local_steps)
    _check_type("seed", seed, int)
    random.seed(seed)
    return Guarded(strategy, min_replies).start(
        grid,
        learner_arrays(learner),
        num_rounds=rounds,
        timeout=round_timeout,
        train_config=ConfigRecord({"local-steps": local_steps}),
    )


def server_app(
    learner: MetaLearner,
    strategy: Strategy,
    rounds: int,
    local_steps: int,
    min_replies: int = 1,
    on_result: Callable[[Result], None] | None = None,
) -> ServerApp:
    """A Flower ``ServerApp`` running :func:`federate` (for Flower's simulation and deployment runtimes);
    ``on_result`` receives the final ``Result``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: object) -> None:
        result = federate(grid, learner, strategy, rounds, local_steps, min_replies)
        if on_result is not None:
            on_result(result)

    return app
