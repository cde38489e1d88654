"""Small learners and data for tests: every algorithm, built the same way."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_meta.algorithms import (
    ANIL,
    MAML,
    MatchingNetworks,
    MetaLearner,
    MetaSGD,
    PrototypicalNetworks,
    Reptile,
    SupervisedTransfer,
)
from lit_meta.models import MLP
from tests.helpers.tasks import make_classification_task

WAYS, FEATURES = 3, 4


def _mlp(out: int) -> MLP:
    return MLP(FEATURES if out == WAYS else 1, (8,), out)


# Every algorithm in lit_meta.algorithms, built by (output size, loss). A new algorithm must be added
# here: tests/lit_meta/algorithms/test_contract.py fails until it is.
LEARNERS = {
    "maml": lambda out, loss: MAML(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "maml_batched": lambda out, loss: MAML(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "maml_per_task": lambda out, loss: MAML(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, backward_per_task=True
    ),
    "fomaml": lambda out, loss: MAML(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, first_order=True),
    "metasgd": lambda out, loss: MetaSGD(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "metasgd_batched": lambda out, loss: MetaSGD(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "anil": lambda out, loss: ANIL(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "anil_batched": lambda out, loss: ANIL(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "reptile": lambda out, loss: Reptile(_mlp(out), inner_lr=0.1, inner_steps=2, loss=loss, eval_inner_steps=2),
    "protonet": lambda out, loss: PrototypicalNetworks(_mlp(out)),
    "protonet_cosine": lambda out, loss: PrototypicalNetworks(_mlp(out), distance="cosine"),
    "matching": lambda out, loss: MatchingNetworks(_mlp(out)),
    "matching_fce": lambda out, loss: MatchingNetworks(_mlp(out), fce=True, fce_steps=2),
    "supervised": lambda out, loss: SupervisedTransfer(_mlp(out)),
    "supervised_finetune": lambda out, loss: SupervisedTransfer(_mlp(out), adapt="finetune", finetune_steps=3),
}

# Metric-based and supervised-transfer learners classify; they have no regression form.
CLASSIFIERS_ONLY = {"protonet", "protonet_cosine", "matching", "matching_fce", "supervised", "supervised_finetune"}

CASES = [
    (name, kind)
    for name in sorted(LEARNERS)
    for kind in ("regression", "classification")
    if kind == "classification" or name not in CLASSIFIERS_ONLY
]


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
