"""A Flower client that wraps any lit-meta learner: meta-train locally, reply with the new weights.

FedMeta (Chen et al., 2018, arXiv:1802.07876): the server sends the meta-learner's weights; each
client meta-trains them on its own tasks (support/query split per task, as in centralised
meta-training) for a few meta-steps and sends them back; the server aggregates. Evaluation adapts the
received meta-learner to the client's own tasks and reports query accuracy. The learner's own
``episode`` does the adapting, so MAML stays second order where the learner is.

A training client asked for a participant evaluation (an ``evaluate`` message whose config says
:data:`~lit_meta.federated.data.EVALUATION` = :data:`~lit_meta.federated.data.PARTICIPANT`) adapts its
personal state, the received weights with the personal ones it keeps, to tasks of its own local test
data (:meth:`~lit_meta.federated.data.FederatedData.participant_tasks`).

Each call trains a new copy of the learner with a lean ``Trainer``
(:func:`~lit_meta.federated.trainer.client_trainer`).

A node is one client (its ``partition-id`` in its node config, its personal weights in its
``Context.state``), or, made with ``pooled=True``, serves whichever client each message names, the
client's personal weights travelling with the message (Flower's simulation behind a
:class:`~lit_meta.federated.pool.ClientPool`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from torch import Tensor

from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.data import EVALUATION, PARTICIPANT
from lit_meta.federated.pool import CLIENT_RECORD, PERSONAL_RECORD
from lit_meta.federated.records import (
    arrays_dtype,
    cast_arrays,
    check_arrays,
    learner_arrays,
    load_arrays,
    only,
    personal_names,
    without,
)
from lit_meta.federated.settings import RunSettings
from lit_meta.federated.trainer import client_trainer
from lit_meta.validation import check_positive_int, check_type


class ProximalTerm(Callback):
    """FedProx's proximal term (Li et al., 2020, arXiv:1812.06127): local training minimises
    ``loss + mu / 2 * ||w - w_global||^2``, so before every optimiser step ``mu * (w - w_global)`` is
    added to each parameter's gradient, pulling a client's weights towards the round's global ones.

    Args:
        mu: the proximal weight (Flower's ``FedProx`` sends it as ``proximal-mu``).
        reference: the round's global weights, by parameter name.
    """

    def __init__(self, mu: float, reference: dict[str, Tensor]) -> None:
        self.mu, self.reference = mu, reference

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: MetaLearner, optimizer: object) -> None:
        for name, param in pl_module.named_parameters():
            if param.grad is not None and name in self.reference:
                param.grad.add_(param.detach() - self.reference[name].to(param), alpha=self.mu)


#: ``data(partition_id, server_round)``: the client's episodic datamodule for that round.
ClientData = Callable[[int, int], LightningDataModule]


class MetaClient:
    """The local work of a federated meta-learning client.

    Args:
        learner: the meta-learner every client starts from (copied, never trained in place).
        data: ``data(partition_id, server_round)`` gives the client's datamodule; its tasks must be
            a function of both so that a run repeats exactly. A ``num_examples`` attribute, if the
            datamodule has one, is the client's data size used to weight its update (else 1). A
            ``role(partition_id)`` method, if it has one (a :class:`~lit_meta.federated.data.FederatedData`
            has), says whether the client trains or is an unseen test client (else it does both); a
            ``participant_tasks(partition_id)`` method, a training client's evaluation on its local
            test data (for participant evaluations).
        local_steps: meta-steps per round, unless the round's config sets ``local-steps``.
        seed: base seed; each (client, round) trains under ``seed + 1000 * round + partition``.
        accelerator: Lightning accelerator of the local ``Trainer``.
        precision: Lightning precision of the local ``Trainer``.
        personal: ``fnmatch`` patterns of weights that never leave the client (partial federation,
            FedPer/FedRep style: ``["*head*"]`` keeps each client's head; see
            :func:`~lit_meta.federated.records.personal_names`). They live in the node's Flower
            ``Context.state`` between rounds, not in files; the server must federate with the same
            patterns.
        pooled: serve whichever client a message names (:data:`~lit_meta.federated.pool.CLIENT_RECORD`),
            its personal weights coming and going with the messages, as behind a
            :class:`~lit_meta.federated.pool.ClientPool`; else this node is the client of its node
            config's ``partition-id``, and keeps its personal weights in its ``Context.state``.
    """

    def __init__(
        self,
        learner: MetaLearner,
        data: ClientData,
        local_steps: int = 10,
        seed: int = 0,
        accelerator: str = "cpu",
        precision: str = "32-true",
        personal: Sequence[str] = (),
        pooled: bool = False,
    ) -> None:
        check_type("learner", learner, MetaLearner)
        check_type("pooled", pooled, bool)
        check_positive_int("local_steps", local_steps)
        check_type("seed", seed, int)
        if not callable(data):
            raise TypeError(
                f"Expected `data` to be a callable (partition_id, server_round), but got {type(data).__name__}."
            )
        names = personal_names(learner, personal)
        self._set(learner, data, local_steps, seed, accelerator, precision, names, pooled)

    @classmethod
    def of_run(
        cls,
        learner: MetaLearner,
        data: ClientData,
        settings: RunSettings,
        accelerator: str = "cpu",
        precision: str = "32-true",
        pooled: bool = False,
    ) -> MetaClient:
        """The client of a run whose ``settings``, learner and data were checked when the run was built
        (:class:`~lit_meta.federated.run.FederatedRun`): its ``local_steps``, ``seed`` and ``personal``
        weights (their resolved names) are the settings', not checked again."""
        client = cls.__new__(cls)
        personal = list(settings.personal)
        client._set(learner, data, settings.local_steps, settings.seed, accelerator, precision, personal, pooled)
        return client

    def _set(
        self,
        learner: MetaLearner,
        data: ClientData,
        local_steps: int,
        seed: int,
        accelerator: str,
        precision: str,
        personal: list[str],
        pooled: bool,
    ) -> None:
        self.learner, self.data, self.local_steps, self.seed = learner, data, local_steps, seed
        self.accelerator, self.precision, self.personal, self.pooled = accelerator, precision, personal, pooled

    def train(self, message: Message, context: Context) -> Message:
        """Meta-train the received weights on this client's tasks; reply with weights and metrics.

        The round's config may set ``local-steps`` and ``proximal-mu`` (FedProx's :class:`ProximalTerm`).
        """
        partition, config = self._partition(message, context), _config(message)
        server_round = int(config.get("server-round", 0))
        steps = int(config.get("local-steps", self.local_steps))
        learner = self._received(message, context)
        datamodule = self.data(partition, server_round)
        seed_everything(self.seed + 1000 * server_round + partition, verbose=False)
        mu = float(config.get("proximal-mu", 0.0))
        callbacks = []
        if mu > 0:
            callbacks.append(ProximalTerm(mu, {k: p.detach().clone() for k, p in learner.named_parameters()}))
        self._trainer(max_steps=steps, callbacks=callbacks).fit(learner, datamodule=datamodule)
        arrays = learner_arrays(learner)
        loss = learner.barebones_logged.get("train/loss")
        received = message.content.array_records["arrays"]
        content = RecordDict()
        if self.personal:  # the personal part stays with this client, for its next round
            if self.pooled:
                content[PERSONAL_RECORD] = only(arrays, self.personal)
            else:
                context.state["personal"] = only(arrays, self.personal)
            arrays = without(arrays, self.personal)
        if arrays_dtype(received) == "float16":  # reply as the server sends: it asked for half the bytes
            arrays = cast_arrays(arrays, "float16")
        check_arrays(arrays, received)  # never send NaN (or an overflow to inf) or a wrong shape
        metrics = MetricRecord(
            {
                "num-examples": int(getattr(datamodule, "num_examples", 1)),
                "train-loss": float(loss) if loss is not None else math.nan,
                "unit-weight": 1,
            }
        )
        content["arrays"], content["metrics"] = arrays, metrics
        return Message(content, reply_to=message)

    def evaluate(self, message: Message, context: Context) -> Message:
        """Adapt the received meta-learner (with this client's personal weights, if it keeps any) to
        each of this client's test tasks, or, in a participant evaluation (the config's
        :data:`~lit_meta.federated.data.EVALUATION`), to its participant tasks on its local test data;
        reply with the mean query accuracy (or MSE), weighted by the number of tasks.

        Raises:
            ValueError: a participant evaluation, but ``data`` has no ``participant_tasks`` or refuses
                this client (answered as an error reply, which the server counts as failed).
        """
        partition, config = self._partition(message, context), _config(message)
        if config.get(EVALUATION) == PARTICIPANT:
            datamodule = _participant_tasks(self.data, partition)
        else:
            datamodule = self.data(partition, int(config.get("server-round", 0)))
        learner = self._received(message, context)
        learner.record_test_curves(learner.eval_inner_steps)
        self._trainer().test(learner, datamodule=datamodule, verbose=False)
        per_task = learner.test_curves()[-1].cpu().double().numpy()
        metric = learner.metric_name
        metrics = MetricRecord(
            {
                "num-examples": int(per_task.size),
                metric: float(per_task.mean()),
                f"{metric}-sq": float(np.square(per_task).mean()),
                "unit-weight": 1,  # the same keys as a training reply, for strategies weighting by it
            }
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=message)

    def query(self, message: Message, context: Context) -> Message:
        """Say which client this node is: its ``partition-id`` and ``role`` (``"train"``, ``"test"``, or
        ``"both"`` when the data has no ``role``), so the server knows whom to train and whom to test."""
        partition = self._partition(message, context)
        role = self.data.role(partition) if hasattr(self.data, "role") else "both"
        return Message(
            RecordDict({"identity": ConfigRecord({"partition-id": partition, "role": role})}), reply_to=message
        )

    def _received(self, message: Message, context: Context) -> MetaLearner:
        """A copy of the learner with the received weights, and this client's personal ones where it
        keeps any (else the given learner's)."""
        learner = copy.deepcopy(self.learner)
        load_arrays(learner, message.content.array_records["arrays"], absent=self.personal)
        if self.personal:
            kept = message.content.array_records if self.pooled else context.state
            key = PERSONAL_RECORD if self.pooled else "personal"
            if key in kept:
                shared = [name for name in learner.state_dict() if name not in self.personal]
                load_arrays(learner, kept[key], absent=shared)
        return learner

    def _partition(self, message: Message, context: Context) -> int:
        """The client this call is for: the message's (pooled) or the node's."""
        if not self.pooled:
            return _partition(context)
        if CLIENT_RECORD not in message.content.config_records:
            raise ValueError(
                f"Expected a pooled message with a `{CLIENT_RECORD}` config record naming its client, but got "
                f"records {sorted(message.content.keys())}."
            )
        return int(message.content.config_records[CLIENT_RECORD]["partition-id"])

    def _trainer(self, **kwargs: object) -> Trainer:
        return client_trainer(self.accelerator, self.precision, **kwargs)


def client_app(client: MetaClient) -> ClientApp:
    """A Flower ``ClientApp`` whose ``train``, ``evaluate`` and ``query`` are ``client``'s."""
    app = ClientApp()
    app.train()(client.train)
    app.evaluate()(client.evaluate)
    app.query()(client.query)
    return app


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError(
            f"Expected a node config with `partition-id`, but got {sorted(context.node_config)} "
            "(start SuperNodes with --node-config 'partition-id=0 num-partitions=4')."
        )
    return int(context.node_config["partition-id"])


def _participant_tasks(data: ClientData, partition: int) -> LightningDataModule:
    """``data.participant_tasks(partition)``, where ``data`` has them."""
    if not callable(getattr(data, "participant_tasks", None)):
        raise ValueError(
            f"Expected `data` with `participant_tasks` to evaluate training client {partition} on its local test "
            f"data, but got {type(data).__name__}, which has none."
        )
    return data.participant_tasks(partition)


def _config(message: Message) -> ConfigRecord:
    """The strategy's config record (Flower's strategies send one), not the pool's."""
    records = [record for key, record in message.content.config_records.items() if key != CLIENT_RECORD]
    return records[0] if records else ConfigRecord()
