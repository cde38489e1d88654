"""The settings of a federation's rounds, validated once, when the settings object is built."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from lit_meta.validation import (
    check_one_of,
    check_positive_float,
    check_positive_int,
    check_type,
    check_unit_interval,
)

Transfer = Literal["float32", "float16"]


@dataclass(frozen=True)
class RunSettings:
    """How a federation's rounds run (what :func:`~lit_meta.federated.server.federate` and
    :class:`~lit_meta.federated.guarded.Guarded` read): checked here, once, and nowhere else.

    Args:
        rounds: the run's last round (a resumed run counts on from ``start_round``).
        local_steps: meta-steps each training client runs per round (sent in each round's config).
        min_replies: usable training replies a round needs, else the run stops.
        round_timeout: seconds the server waits for the replies of one exchange (a round's training,
            then its evaluation); replies later than that are not used.
        evaluate_every: evaluate on the test clients every this many rounds, and after the last.
        evaluate_participants: the share of the training clients (those of role ``"train"``) also
            evaluated at each evaluation, on their own local test data with their personal state
            (:meth:`~lit_meta.federated.data.FederatedData.participant_tasks`), in [0, 1]; 0: none.
            At least one when > 0; a sample of ``round(evaluate_participants * n)``, seeded by
            (``seed``, round).
        seed: before each round, Python's ``random`` (from which Flower's strategies sample a round's
            clients) and NumPy's global generator (from which its DP wrappers draw noise) are seeded
            by (``seed``, round), so a resumed run samples as an uninterrupted one.
        transfer: the dtype weights travel in: ``"float16"`` halves the bytes each way; the server
            still aggregates in float32 (replies are cast back before the strategy sees them).
        personal: the names of the weights the clients keep (partial federation, as
            :func:`~lit_meta.federated.records.personal_names` resolves them): only the others travel.
        start_round: rounds done before this run started (a resumed run's); < ``rounds``.

    Raises:
        ValueError, TypeError: a setting out of its range or of another type (one line each).
    """

    rounds: int
    local_steps: int
    min_replies: int = 1
    round_timeout: float = 3600.0
    evaluate_every: int = 1
    evaluate_participants: float = 0.0
    seed: int = 0
    transfer: Transfer = "float32"
    personal: Sequence[str] = ()
    start_round: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "local_steps", "min_replies", "evaluate_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("round_timeout", self.round_timeout)
        check_unit_interval("evaluate_participants", self.evaluate_participants)
        check_type("seed", self.seed, int)
        check_one_of("transfer", self.transfer, ("float32", "float16"))
        check_type("personal", self.personal, (list, tuple))
        for name in self.personal:
            check_type("personal", name, str)
        object.__setattr__(self, "personal", tuple(self.personal))
        check_positive_int("start_round", self.start_round, minimum=0)
        if self.start_round >= self.rounds:
            raise ValueError(
                f"Expected `rounds` > {self.start_round}, the rounds already done (`start_round`), but got "
                f"{self.rounds}."
            )

    def evaluates(self, server_round: int) -> bool:
        """Whether round ``server_round`` (counted from the run's first) evaluates on the test clients."""
        return server_round % self.evaluate_every == 0 or server_round == self.rounds

    def participants(self, candidates: Sequence[int], server_round: int) -> list[int]:
        """The training clients (of the partition ids ``candidates``) evaluated in round ``server_round``:
        a sample of ``max(1, round(evaluate_participants * len(candidates)))``, sorted, drawn from a
        generator seeded by (``seed``, round) alone, so every runtime samples the same clients whatever
        its node ids, and Flower's sample of the test clients is left as it is; none where
        ``evaluate_participants`` is 0."""
        if not self.evaluate_participants or not candidates:
            return []
        count = min(max(1, round(self.evaluate_participants * len(candidates))), len(candidates))
        return sorted(random.Random(f"participants/{self.seed}/{server_round}").sample(sorted(candidates), count))

    def record(self) -> dict[str, Any]:
        """The settings as a run records them (``federated_result.json``, checkpoints): plain data,
        ``personal`` as a list; without ``start_round``, which is where a run was resumed, not a setting."""
        record = asdict(self)
        record["personal"] = list(self.personal)
        del record["start_round"]
        return record
