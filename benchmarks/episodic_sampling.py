"""Tasks per second that OmniglotDataModule delivers vs the rate at which MAML consumes them.

Omniglot 20-way 1-shot 15-query, meta-batch 32, from the real minimal split (train set:
images_background_small1, x4 rotations). Sampling is timed with 0 and 2 DataLoader workers; MAML
(CNN-4, 64 filters, one first-order inner step, learn2learn clones) is timed on the same batches. One
process, one run, so the ratio compares like with like.

    .venv/bin/python benchmarks/episodic_sampling.py --data_dir ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from datamodules import OmniglotDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import CNN4


def sampling_rate(data_dir: str, workers: int, batches: int) -> tuple[float, list]:
    data = OmniglotDataModule(
        data_dir=data_dir,
        split="minimal",
        download=False,
        ways=20,
        shots=1,
        queries=15,
        meta_batch_size=32,
        train_batches_per_epoch=batches + 2,
        num_workers=workers,
    )
    data.setup("fit")
    loader = iter(data.train_dataloader())
    kept = [next(loader) for _ in range(2)]  # worker start-up is not sampling
    start = time.perf_counter()
    for _ in itertools.islice(loader, batches):
        pass
    elapsed = time.perf_counter() - start
    return batches * 32 / elapsed, kept


def consumption_rate(batches: list, steps: int) -> float:
    learner = MAML(CNN4(out_features=20), inner_lr=0.4, first_order=True)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

    def step(task) -> None:
        optimizer.zero_grad()
        learner.task_losses(learner.episode(task, training=True), task.query_y).mean().backward()
        optimizer.step()

    step(batches[0])
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * 32 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/omniglot")
    parser.add_argument("--batches", type=int, default=20, help="meta-batches timed per sampling setting")
    parser.add_argument("--steps", type=int, default=5, help="MAML steps timed")
    args = parser.parse_args()
    rates = {}
    for workers in (0, 2):
        rates[workers], batches = sampling_rate(args.data_dir, workers, args.batches)
    consumed = consumption_rate(batches, args.steps)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; Omniglot 20-way 1-shot 15-query, meta-batch 32"
    )
    print("| what | tasks/s | x MAML's consumption |")
    print("|---|---:|---:|")
    for workers, rate in rates.items():
        print(f"| sampling, {workers} workers | {rate:.0f} | {rate / consumed:.1f}x |")
    print(f"| MAML training step (CNN-4, first-order, 1 inner step) | {consumed:.1f} | 1.0x |")


if __name__ == "__main__":
    main()
