"""Aggregation strategies Flower does not have, as small ``Strategy`` subclasses."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from lit_meta.functional import inverse_variance_weights


class InverseVarianceFedAvg(FedAvg):
    """FedAvg whose client weights are the inverse variances of their updates
    (:func:`lit_meta.functional.inverse_variance_weights`) instead of their data sizes.

    The new global weights are ``sum_i w_i * theta_i`` over the replies' weights ``theta_i``. Metrics
    are aggregated as FedAvg does (weighted by ``weighted_by_key``). Arguments: those of ``FedAvg``.
    """

    _global: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays  # the updates are measured against it
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [message.content for message in valid]
        states = [next(iter(content.array_records.values())).to_torch_state_dict() for content in contents]
        reference = self._global.to_torch_state_dict()  # set by configure_train of the same round
        names = list(reference)
        updates = torch.stack(
            [torch.cat([(state[n].double() - reference[n].double()).flatten() for n in names]) for state in states]
        )
        weights = inverse_variance_weights(updates)
        aggregate = {
            n: Array(
                sum(w * state[n].double() for w, state in zip(weights.tolist(), states)).to(reference[n].dtype).numpy()
            )
            for n in names
        }
        return ArrayRecord(aggregate), self.train_metrics_aggr_fn(contents, self.weighted_by_key)
