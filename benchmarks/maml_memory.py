"""Peak memory of a second-order MAML meta-step with and without ``backward_per_task``.

Omniglot-sized tasks (5-way 1-shot, 15 queries per class, 28x28) through CNN-4 (64 filters, max-pool),
second-order, 5 inner steps, random images (memory does not depend on pixel values). Each setting
runs in a fresh subprocess: on CUDA the peak is ``torch.cuda.max_memory_allocated``; on CPU it is the
growth of the process's peak resident memory over its state before the first step.

``backward_per_task`` takes each task's meta-gradient before the next task adapts, so one task's
second-order graph is alive at a time instead of the meta-batch's.

    .venv/bin/python benchmarks/maml_memory.py [--device cpu|cuda] [--meta_batch 4 16 32]

``--json PATH`` also writes the table as JSON (rewritten after each row: a crash keeps the rows before it).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch


def measure(device: str, meta_batch: int, backward_per_task: bool) -> dict:
    from lit_meta.algorithms import MAML
    from lit_meta.models import CNN4
    from lit_meta.tasks import Task

    torch.manual_seed(0)
    learner = MAML(
        CNN4(1, 5, 64, 4, 28), inner_lr=0.4, inner_steps=5, backward_per_task=backward_per_task, inner_loop="clone"
    ).to(device)
    x = torch.randn(meta_batch, 80, 1, 28, 28, device=device)
    y = torch.arange(5, device=device).repeat(16)[None].expand(meta_batch, -1)
    task = Task(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: logging is skipped
        learner.training_step(task, 0).backward()  # what Lightning runs: the step, then backward
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_mib": peak / 2**20, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--meta_batch", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.device, int(args.child[0]), args.child[1] == "1")))
        return
    print(f"torch {torch.__version__}, device {args.device}")
    output = {"torch": torch.__version__, "device": args.device, "rows": []}
    print("| meta-batch | backward_per_task | peak memory (MiB) | seconds per meta-step |")
    print("|---:|---|---:|---:|")
    for meta_batch in args.meta_batch:
        for per_task in (False, True):
            command = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--child",
                str(meta_batch),
                str(int(per_task)),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:  # an out-of-memory child is a row with its error, not the end of the table
                error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:300]
                print(f"| {meta_batch} | {per_task} | failed: {error} | |", flush=True)
                output["rows"].append({"meta_batch": meta_batch, "backward_per_task": per_task, "error": error})
            else:
                result = json.loads(done.stdout.splitlines()[-1])
                print(f"| {meta_batch} | {per_task} | {result['peak_mib']:.0f} | {result['seconds']:.2f} |", flush=True)
                output["rows"].append({"meta_batch": meta_batch, "backward_per_task": per_task, **result})
            if args.json:
                Path(args.json).write_text(json.dumps(output, indent=2) + "\n")


if __name__ == "__main__":
    main()
