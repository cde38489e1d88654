"""Seconds per meta-step: lit-meta's MAML under a Lightning Trainer vs a plain learn2learn loop.

Same model (CNN-4, 64 filters, strided), data (Omniglot minimal split, 5-way 1-shot, 5 queries per
class, the same `OmniglotDataModule` loader), settings (second-order MAML, inner lr 0.4, 1 inner step,
Adam at 1e-3, meta-batch 8) and process. The plain loop is learn2learn's own example written out:
clone, adapt, query loss, backward, step. The two alternate in rounds so that machine load hits both.

    .venv/bin/python benchmarks/framework_overhead.py [--data_dir ../shared/data/omniglot] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import learn2learn as l2l
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from datamodules import OmniglotDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import CNN4

WARMUP = 3


def datamodule(data_dir: str, steps: int) -> OmniglotDataModule:
    return OmniglotDataModule(
        data_dir=data_dir,
        split="minimal",
        download=False,
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=8,
        train_batches_per_epoch=steps + WARMUP,
    )


def backbone() -> CNN4:
    torch.manual_seed(0)
    return CNN4(1, 5, 64, 4, 28, downsample="stride")


def plain_learn2learn(data_dir: str, steps: int) -> float:
    """Seconds per step of the hand-written learn2learn loop."""
    maml = l2l.algorithms.MAML(backbone(), lr=0.4, first_order=False)
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
    data = datamodule(data_dir, steps)
    data.setup("fit")
    for i, task in enumerate(data.train_dataloader()):
        if i == WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad()
        meta_loss = 0.0
        for support_x, support_y, query_x, query_y in zip(*task):
            learner = maml.clone()
            learner.adapt(F.cross_entropy(learner(support_x), support_y))
            meta_loss = meta_loss + F.cross_entropy(learner(query_x), query_y)
        (meta_loss / task.num_tasks).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


class _Clock(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds_per_step = (time.perf_counter() - self.start) / (trainer.global_step - WARMUP)


def lit_meta(data_dir: str, steps: int, log_dir: str) -> float:
    """Seconds per step of ``Trainer.fit`` (TensorBoard logging on, as in a real run)."""
    clock = _Clock()
    learner = MAML(backbone(), inner_lr=0.4, inner_steps=1, first_order=False, inner_loop="clone")
    Trainer(
        max_steps=steps + WARMUP,
        limit_val_batches=0,
        logger=TensorBoardLogger(log_dir),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    ).fit(learner, datamodule(data_dir, steps))
    return clock.seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/omniglot")
    parser.add_argument("--steps", type=int, default=40, help="timed meta-steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} steps")
    plain, lit = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.rounds):
            plain.append(plain_learn2learn(args.data_dir, args.steps))
            lit.append(lit_meta(args.data_dir, args.steps, log_dir))
    print("| loop | s/step per round | median s/step |")
    print("|---|---|---:|")
    for name, values in (("plain learn2learn", plain), ("lit-meta MAML (Trainer)", lit)):
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {statistics.median(values):.3f} |")
    print(f"\noverhead: {100 * (statistics.median(lit) / statistics.median(plain) - 1):+.1f}% per meta-step")


if __name__ == "__main__":
    main()
