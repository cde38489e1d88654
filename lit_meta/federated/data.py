"""The contract between a federation and its clients' data.

:class:`FederatedData` says how many clients there are, which of them train and which are unseen
test clients, and gives each client's datamodule for a round. ``datamodules.federated.ClientPartition``
implements it for any episodic datamodule; ``lit-meta federate`` takes any subclass by class path.

Where the training clients also hold local test data, never trained on (a training client's own
held-out samples, as personalised FL evaluates the clients that train), :meth:`FederatedData.participant_tasks`
gives a training client's evaluation tasks on it: a run with ``evaluate_participants`` > 0 asks for
them with an ``evaluate`` message whose config says :data:`EVALUATION` = :data:`PARTICIPANT`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from lightning.pytorch import LightningDataModule

from lit_meta.images import ImagePreprocessing

Role = Literal["train", "test", "both"]

#: The key of an ``evaluate`` message's config that says which evaluation it asks for: absent (an
#: unseen test client's, on its own tasks) or :data:`PARTICIPANT`.
EVALUATION = "evaluation"
#: A training client's evaluation on its local test data (:meth:`FederatedData.participant_tasks`).
PARTICIPANT = "participant"


class FederatedData(ABC):
    """The clients of a federation, numbered by partition id ``0 .. num_clients - 1``."""

    @property
    @abstractmethod
    def num_clients(self) -> int:
        """How many clients (nodes) the federation has."""

    @abstractmethod
    def role(self, partition_id: int) -> Role:
        """``"train"`` (meta-trains, sends updates), ``"test"`` (an unseen client: only adapts and
        reports) or ``"both"``."""

    @abstractmethod
    def __call__(self, partition_id: int, server_round: int) -> LightningDataModule:
        """The client's datamodule for ``server_round``; its tasks a function of both arguments."""

    def participant_tasks(self, partition_id: int) -> LightningDataModule:
        """A training client's evaluation on its own local test data: a datamodule whose test tasks
        take their support sets from the client's training samples and their query sets from its
        local test samples, which it never trains on; the same tasks every round. The client adapts
        its personal state (the received weights and the personal ones it keeps) to each.

        The default holds no local test data and refuses; a subclass whose training clients hold some
        overrides it.

        Raises:
            ValueError: the data holds no local test data, or ``partition_id`` is not a training client.
        """
        raise ValueError(
            f"Expected data whose training clients hold local test data (`participant_tasks`) to evaluate "
            f"participants, but got {type(self).__name__}, which holds none."
        )

    def preprocessing(self) -> ImagePreprocessing | None:
        """How an image file becomes a model input (recorded in checkpoints for ``lit-meta adapt``)."""
        return None
