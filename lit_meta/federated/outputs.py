"""What a federated run writes after every round, in one TensorBoard version folder (``<log_dir>/<version>/``):

- TensorBoard scalars under ``federated/``: the aggregated training loss, the pooled personalised
  accuracy (or MSE) of the unseen test clients with its 95% CI and each client's figure
  (``client_<id>/``), the same of the training clients evaluated on their local test data where a
  run asks for it (``participants-*``, ``participant_<id>/``), the replies used, late and failed, the
  bytes sent to and received from the clients, the seconds;
- ``checkpoints/round_<r>.ckpt`` and ``checkpoints/last.ckpt``
  (:func:`~lit_meta.federated.checkpoint.round_checkpoint`);
- ``federated_result.json``: the run's settings, every round's record and each test client's last
  result (``clients``), and each evaluated training client's (``participants``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy
from lightning.pytorch.loggers import TensorBoardLogger

from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.checkpoint import round_checkpoint, save_checkpoint
from lit_meta.federated.data import FederatedData
from lit_meta.federated.records import load_arrays
from lit_meta.files import atomic_open

log = logging.getLogger(__name__)


class RunOutputs:
    """Writes TensorBoard scalars, a checkpoint and ``federated_result.json`` after every round (the
    ``on_round`` of :func:`~lit_meta.federated.server.federate`).

    Args:
        learner: the federation's learner (copied; its class and hyper-parameters go into checkpoints).
        data: the clients (their image preprocessing goes into checkpoints, for ``lit-meta adapt``).
        strategy: the server's strategy (its optimiser state goes into checkpoints).
        log_dir: TensorBoard's save folder.
        version: the version folder's name (default: TensorBoard's next ``version_<n>``).
        settings: the run's settings, recorded in checkpoints and ``federated_result.json``.
        records: rounds already recorded (a resumed run's).
        personal: the weights the clients keep (absent from the server's arrays).
    """

    def __init__(
        self,
        learner: MetaLearner,
        data: FederatedData,
        strategy: Strategy,
        log_dir: str,
        version: str | None,
        settings: dict[str, Any],
        records: list[dict] | None = None,
        personal: Sequence[str] = (),
    ) -> None:
        self.learner, self.strategy, self.settings = copy.deepcopy(learner), strategy, settings
        self.personal = list(personal)
        self.preprocessing = data.preprocessing()
        self.logger = TensorBoardLogger(save_dir=log_dir, name="", version=version, default_hp_metric=False)
        self.dir = self.logger.log_dir
        self.records = list(records or [])
        self.metric = learner.metric_name
        self.started = time.monotonic()

    def checkpoint_path(self, server_round: int | None = None) -> str:
        name = "last.ckpt" if server_round is None else f"round_{server_round:04d}.ckpt"
        return os.path.join(self.dir, "checkpoints", name)

    def __call__(self, server_round: int, arrays: ArrayRecord, record: dict) -> None:
        record = {"round": server_round, "seconds": round(time.monotonic() - self.started, 2), **record}
        self.records.append(record)
        self._log(server_round, record)
        load_arrays(self.learner, arrays, absent=self.personal)
        checkpoint = round_checkpoint(
            self.learner, server_round, arrays, self.strategy, self.settings, self.preprocessing
        )
        save_checkpoint(checkpoint, (self.checkpoint_path(server_round), self.checkpoint_path()))
        self.write_result()
        shown = "".join(
            f" {label}{self.metric} {record[key]:.4f} +- {record[key + '-ci95']:.4f}"
            for label, key in (("", self.metric), ("participants ", f"participants-{self.metric}"))
            if key in record
        )
        log.info(
            "Round %d: %d/%d replies (%d late, %d failed) in %.1f s, train loss %.4f%s",
            server_round,
            record.get("replies", 0),
            record.get("sent", 0),
            record.get("late", 0),
            record.get("failures", 0),
            record.get("round-seconds", float("nan")),
            record.get("train-loss", float("nan")),
            shown,
        )

    def _log(self, server_round: int, record: dict) -> None:
        scalars = {
            f"federated/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "round"
        }
        for client, figures in record.get("clients", {}).items():
            scalars[f"federated/client_{client}/{self.metric}"] = figures[self.metric]
        for client, figures in record.get("participants", {}).items():
            scalars[f"federated/participant_{client}/{self.metric}"] = figures[self.metric]
        self.logger.log_metrics(scalars, step=server_round)
        self.logger.save()

    def write_result(self) -> str:
        """``federated_result.json``: settings, rounds, and each client's latest result (test clients'
        under ``clients``, evaluated training clients' under ``participants``); its path."""
        latest: dict[str, dict[str, dict]] = {"clients": {}, "participants": {}}
        for record in self.records:
            for key, figures in latest.items():
                figures.update({str(c): {"round": record["round"], **v} for c, v in record.get(key, {}).items()})
        path = os.path.join(self.dir, "federated_result.json")
        result = {"settings": self.settings, "rounds": self.records, "clients": latest["clients"]}
        if latest["participants"]:
            result["participants"] = latest["participants"]
        with atomic_open(path) as f:
            json.dump(result, f, indent=2)
        return path
