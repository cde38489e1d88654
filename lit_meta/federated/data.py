"""The contract between a federation and its clients' data.

:class:`FederatedData` says how many clients there are, which of them train and which are unseen
test clients, and gives each client's datamodule for a round. ``datamodules.federated.ClientPartition``
implements it for any episodic datamodule; ``lit-meta federate`` takes any subclass by class path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from lightning.pytorch import LightningDataModule

from lit_meta.images import ImagePreprocessing

Role = Literal["train", "test", "both"]


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

    def preprocessing(self) -> ImagePreprocessing | None:
        """How an image file becomes a model input (recorded in checkpoints for ``lit-meta adapt``)."""
        return None
