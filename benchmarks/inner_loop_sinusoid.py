"""Meta-training steps per second of sinusoid MAML: learn2learn clone loop vs the batched inner loop.

Same model (MLP 1-40-40-1), data and settings as configs/sinusoid_maml.yaml (one second-order inner
step, Adam); only the inner loop and the meta-batch size change. Measures the bare step (episode,
backward, Adam) without Lightning, then the same inside a Lightning Trainer, all in one process.

    .venv/bin/python benchmarks/inner_loop_sinusoid.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning.pytorch import Callback, Trainer

from datamodules import SinusoidDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import MLP


def bare_rate(inner_loop: str, meta_batch_size: int, seconds: float) -> float:
    learner = MAML(MLP(), loss="mse", inner_loop=inner_loop)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    data = SinusoidDataModule(meta_batch_size=meta_batch_size, train_batches_per_epoch=10**6)
    batches = iter(data.train_dataloader())

    def step() -> None:
        task = next(batches)
        optimizer.zero_grad()
        learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
        optimizer.step()

    for _ in range(5):
        step()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps / (time.perf_counter() - start)


class _Clock(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 5:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.rate = (trainer.global_step - 5) / (time.perf_counter() - self.start)


def lightning_rate(inner_loop: str, meta_batch_size: int, steps: int) -> float:
    clock = _Clock()
    Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    ).fit(
        MAML(MLP(), loss="mse", inner_loop=inner_loop),
        SinusoidDataModule(meta_batch_size=meta_batch_size, train_batches_per_epoch=steps),
    )
    return clock.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window of each bare measurement")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| inner loop | meta-batch | steps/s (bare) | steps/s (Lightning) | tasks/s (Lightning) |")
    print("|---|---:|---:|---:|---:|")
    for meta_batch_size in (25, 100):
        for inner_loop in ("clone", "batched"):
            bare = bare_rate(inner_loop, meta_batch_size, args.seconds)
            lit = lightning_rate(inner_loop, meta_batch_size, steps=max(20, int(bare * args.seconds)))
            print(
                f"| {inner_loop} | {meta_batch_size} | {bare:.1f} | {lit:.1f} | {lit * meta_batch_size:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
