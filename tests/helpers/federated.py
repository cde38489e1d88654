"""Clients' private data for federated tests: Gaussian-blob tasks drawn per (client, round)."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from tests.helpers.learners import FEATURES, WAYS
from tests.helpers.tasks import make_classification_task


class ClientBlobs(LightningDataModule):
    """3-way tasks of one client; client ``p`` holds ``10 * (p + 1)`` examples (clients differ in size)."""

    def __init__(self, partition: int, server_round: int, batches: int = 4) -> None:
        super().__init__()
        self.num_examples = 10 * (partition + 1)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(1000 * server_round + partition)
        self.tasks = [make_classification_task(2, WAYS, 2, 3, FEATURES) for _ in range(batches)]
        torch.random.set_rng_state(generator_state)

    def _loader(self) -> DataLoader:
        return DataLoader(self.tasks, batch_size=None)

    train_dataloader = test_dataloader = _loader
