"""Run by tests/datamodules/test_episodic.py: a real 2-process DDP fit on CPU (gloo) that records, per rank, the
training tasks of the first step and every validation task it evaluated, then meta-tests (rank 0
writes meta_test.json for the tasks of both ranks)."""

import json
import os
import sys

import torch
from lightning.pytorch import Callback

from callbacks import MetaTestEvaluation
from datamodules import OmniglotDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import CNN4
from tests.helpers.trainers import quiet_trainer


def fingerprint(task) -> list[list[float]]:
    """One (support sum, query sum) pair per task: tells tasks apart."""
    return torch.stack([task.support_x.flatten(1).sum(1), task.query_x.flatten(1).sum(1)], 1).tolist()


class Recorder(Callback):
    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(fingerprint(batch))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val += fingerprint(batch)

    def on_fit_end(self, trainer, pl_module):
        out = os.path.join(sys.argv[2], f"rank{trainer.global_rank}.json")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        with open(out, "w") as f:
            json.dump({"train": self.train, "val": self.val, "metrics": metrics}, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    data = OmniglotDataModule(
        data_dir=sys.argv[1],
        split="minimal",
        download=False,
        ways=3,
        queries=2,
        meta_batch_size=2,
        train_batches_per_epoch=2,
        val_tasks=7,
        test_tasks=5,
    )
    learner = MAML(CNN4(out_features=3, hidden=8), inner_lr=0.4, eval_inner_steps=1, first_order=True)
    trainer = quiet_trainer(
        sys.argv[2],
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        max_steps=2,
        num_sanity_val_steps=0,
        callbacks=[Recorder(), MetaTestEvaluation(max_steps=1)],
    )
    trainer.fit(learner, data)
    trainer.test(learner, data, verbose=False)  # the meta-test, in Lightning's test loop
