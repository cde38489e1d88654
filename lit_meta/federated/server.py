"""The server's rounds: :func:`federate` runs a guarded Flower strategy on any grid (inside a Flower
``ServerApp`` on Flower's runtimes, as :meth:`~lit_meta.federated.run.FederatedRun.serve` does)."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.guarded import Guarded
from lit_meta.federated.records import learner_arrays, without
from lit_meta.federated.roles import Roles, check_strategy, discover_roles
from lit_meta.federated.settings import RunSettings
from lit_meta.validation import check_positive_int

#: ``on_round(server_round, arrays, record)``: called after every round with the global weights and
#: the round's record (see :attr:`Guarded.rounds <lit_meta.federated.guarded.Guarded>`).
RoundHook = Callable[[int, ArrayRecord, dict], None]


def federate(
    grid: Grid,
    learner: MetaLearner,
    strategy: Strategy,
    settings: RunSettings,
    *,
    roles: Roles | None = None,
    initial_arrays: ArrayRecord | None = None,
    on_round: RoundHook | None = None,
    expected_nodes: int | None = None,
) -> Result:
    """Run rounds ``settings.start_round + 1 .. settings.rounds`` of ``strategy`` on ``grid`` from
    ``learner``'s weights.

    Training clients get ``train`` messages, test clients ``evaluate`` ones, and with
    ``settings.evaluate_participants`` a sample of the training clients too, on their local test data
    (:class:`Guarded`). Each
    round's sample is seeded by (``settings.seed``, round), so a resumed run (``start_round > 0``,
    ``learner`` holding round ``start_round``'s weights) goes on as an uninterrupted one would.

    Args:
        grid: the grid of the nodes (the in-process grid, or a Flower runtime's).
        learner: the meta-learner (its weights are the initial global ones).
        strategy: any Flower strategy.
        settings: the rounds' settings.
        roles: which node is which client; ``None``: ask every node first
            (:func:`~lit_meta.federated.roles.discover_roles`, within ``round_timeout`` and at most 600 s).
        initial_arrays: the global weights to start from, exactly as the server held them (a resumed
            run's); default: ``learner``'s, without the ``settings.personal`` ones.
        on_round: called after every round (see :data:`RoundHook`).
        expected_nodes: when asking the nodes, first wait for this many to connect.

    Returns:
        Flower's ``Result``: the final ``arrays`` and the metrics of every round; its ``rounds`` are
        :attr:`Guarded.rounds <lit_meta.federated.guarded.Guarded>`.

    Raises:
        ValueError: the strategy cannot sample the clients there are, or no client of role ``"train"``
            is there to evaluate with ``settings.evaluate_participants``.
        FederationError: a node did not say which client it is, a round had fewer than
            ``min_replies`` usable replies, or an evaluated round had no usable evaluation reply.
    """
    if expected_nodes is not None:
        check_positive_int("expected_nodes", expected_nodes)
    if roles is None:
        roles = discover_roles(grid, expected_nodes, timeout=min(settings.round_timeout, 600.0))
    check_strategy(strategy, roles)
    guarded = Guarded(strategy, settings, roles, learner.metric_name)

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0 and on_round is not None:
            absolute = server_round + settings.start_round
            on_round(absolute, arrays, guarded.rounds.get(absolute, {}))

    result = guarded.start(
        grid,
        initial_arrays if initial_arrays is not None else without(learner_arrays(learner), settings.personal),
        num_rounds=settings.rounds - settings.start_round,
        timeout=settings.round_timeout,
        train_config=ConfigRecord({"local-steps": settings.local_steps}),
        evaluate_fn=after_round,
    )
    result.rounds = guarded.rounds  # lit-meta's per-round records, beside Flower's metrics
    return result
