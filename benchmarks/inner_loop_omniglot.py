"""Seconds per meta-step of second-order MAML on Omniglot 5-way 1-shot tasks: learn2learn clones vs
the batched (``torch.func.vmap``) inner loop, for meta-batches 4, 16 and 32, optionally under autocast.

CNN-4 (64 filters, max-pool), 28x28 inputs, 1 support and 15 queries per class, 1 inner step at lr
0.4, Adam; random images (timings do not depend on pixel values). Both loops run in one process and
alternate, so machine load hits both. On CUDA the batched path is what ``inner_loop: auto`` picks.

    .venv/bin/python benchmarks/inner_loop_omniglot.py [--device cuda] [--precision 32 bf16 16] [--steps 10]

``--json PATH`` also writes the table as JSON (rewritten after each row: a crash keeps the rows before it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

from lit_meta.algorithms import MAML
from lit_meta.models import CNN4
from lit_meta.tasks import Task

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def seconds_per_step(inner_loop: str, meta_batch: int, device: str, precision: str, steps: int) -> float:
    torch.manual_seed(0)
    learner = MAML(CNN4(1, 5, 64, 4, 28), inner_lr=0.4, inner_loop=inner_loop).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16")
    if precision == "16":  # what Lightning's 16-mixed plugin gives the learner: its loss scale, inner loop included
        learner._loss_scale = lambda: float(scaler.get_scale())
    x = torch.randn(meta_batch, 80, 1, 28, 28, device=device)
    y = torch.arange(5, device=device).repeat(16)[None].expand(meta_batch, -1)
    task = Task(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    autocast = torch.autocast(device, dtype=DTYPES[precision]) if precision in DTYPES else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad()
        with autocast:
            loss = learner.task_losses(learner.episode(task, training=True).float(), task.query_y).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16", "16"])
    parser.add_argument("--meta_batch", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}")
    result = {"torch": torch.__version__, "device": name, "steps": args.steps, "rows": []}
    print("| precision | meta-batch | clone s/step | batched s/step | batched speed-up |")
    print("|---|---:|---:|---:|---:|")
    for precision in args.precision:
        for meta_batch in args.meta_batch:
            row: dict = {"precision": precision, "meta_batch": meta_batch}
            for loop in ("clone", "batched"):
                try:  # a loop the learner refuses (BatchNorm under autocast, batched) is recorded, not fatal
                    row[f"{loop}_s_per_step"] = seconds_per_step(loop, meta_batch, args.device, precision, args.steps)
                except (ValueError, RuntimeError) as err:
                    row[f"{loop}_s_per_step"], row[f"{loop}_error"] = None, str(err).splitlines()[0][:300]
            clone, batched = row["clone_s_per_step"], row["batched_s_per_step"]
            row["batched_speedup"] = clone / batched if clone and batched else None

            def shown(value: float | None) -> str:
                return "refused" if value is None else f"{value:.3f}"

            speedup = "-" if row["batched_speedup"] is None else f"{row['batched_speedup']:.2f}x"
            print(f"| {precision} | {meta_batch} | {shown(clone)} | {shown(batched)} | {speedup} |", flush=True)
            result["rows"].append(row)
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
