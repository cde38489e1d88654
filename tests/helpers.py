"""Small learners and data for tests: every algorithm, built the same way."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_meta.algorithms import MAML, MetaLearner
from lit_meta.models import MLP
from tests.conftest import make_classification_task

WAYS, FEATURES = 3, 4

# Every algorithm in lit_meta.algorithms, for regression and classification. A new algorithm must be
# added here: tests/test_contract.py fails until it is.
LEARNERS = {
    "maml": lambda out, loss: MAML(MLP(FEATURES if out == WAYS else 1, (8,), out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "maml_batched": lambda out, loss: MAML(MLP(FEATURES if out == WAYS else 1, (8,), out), inner_lr=0.1, loss=loss,
                                           eval_inner_steps=2, inner_loop="batched"),
    "fomaml": lambda out, loss: MAML(MLP(FEATURES if out == WAYS else 1, (8,), out), inner_lr=0.1, loss=loss,
                                     eval_inner_steps=2, first_order=True),
}  # fmt: skip


def build(name: str, task: str) -> MetaLearner:
    """``task``: ``"regression"`` (sinusoid) or ``"classification"`` (Gaussian blobs, 3-way)."""
    return LEARNERS[name](1, "mse") if task == "regression" else LEARNERS[name](WAYS, "cross_entropy")


class BlobsDataModule(LightningDataModule):
    """3-way classification episodes of Gaussian blobs: fixed tasks, fast, no files."""

    def __init__(self, batches: int = 3, meta_batch_size: int = 2) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.tasks = [make_classification_task(meta_batch_size, WAYS, 2, 3, FEATURES) for _ in range(batches)]
        torch.random.set_rng_state(generator_state)

    def _loader(self) -> DataLoader:
        return DataLoader(self.tasks, batch_size=None)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader
