"""What a federated round costs as the number of clients grows, with 10 of them sampled per round.

Synthetic(0.5, 0.5) (``datamodules.federated.SyntheticFederation``): N training devices, 10 of them
sampled a round (FedAvg), 10 more held out and evaluated after the last round only; FOMAML on an MLP
60-64-10 (the Synthetic FOMAML config), 10 local meta-steps, one thread. Each row is one run in its own
process: the in-process grid (``backend: in_process``) and Flower's simulation on Ray (``backend:
simulation``, one CPU). Per row:

- seconds per round: the median of rounds 2 .. R-1 (round 1 pays the first calls' warm-up, round R
  the evaluation), from the run's own records;
- setup: from the start of the run to the end of round 1, less one round (building the clients,
  asking every node its role);
- server aggregation: the strategy's ``aggregate_train`` per round (median);
- peak RSS: the resident memory of the run's process and every process it started (Ray's), sampled
  every 0.1 s.

    python benchmarks/federated_scale.py --devices 10 100 1000 10000 --backends in_process simulation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLED, HELD_OUT = 10, 10


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # a worker that just ended
            pass
    return total


def worker(devices: int, backend: str, rounds: int, local_steps: int) -> dict:
    """One run; returns its figures (run in a process of its own)."""
    import torch
    from flwr.serverapp.strategy import FedAvg

    from datamodules.federated import SyntheticFederation
    from lit_meta.algorithms import MAML
    from lit_meta.federated import FederatedRun
    from lit_meta.models import MLP

    class TimedFedAvg(FedAvg):
        """FedAvg that records how long each aggregation takes."""

        seconds: list[float] = []

        def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            result = super().aggregate_train(server_round, replies)
            self.seconds.append(time.perf_counter() - start)
            return result

    torch.set_num_threads(1)
    torch.manual_seed(0)
    total = devices + HELD_OUT
    data = SyntheticFederation(num_devices=total, test_fraction=HELD_OUT / total, alpha=0.5, beta=0.5, seed=0)
    learner = MAML(
        MLP(60, (64,), 10),
        inner_lr=0.1,
        inner_steps=1,
        eval_inner_steps=5,
        first_order=True,
        optimizer=partial(torch.optim.Adam, lr=3e-3),
    )
    strategy = TimedFedAvg(
        fraction_train=(SAMPLED + 0.5) / devices,  # int(fraction x devices) = 10
        fraction_evaluate=1.0,
        min_train_nodes=2,
        min_evaluate_nodes=2,
        min_available_nodes=2,
    )
    with tempfile.TemporaryDirectory() as logs:
        run = FederatedRun(
            learner,
            data,
            strategy,
            rounds=rounds,
            local_steps=local_steps,
            backend=backend,
            evaluate_every=rounds,
            num_cpus=1,
            log_dir=logs,
        )
        start = time.monotonic()
        outputs = run.run()
        wall = time.monotonic() - start
    seconds = [record["seconds"] for record in outputs.records]
    per_round = [b - a for a, b in zip(seconds, seconds[1:])]
    middle = per_round[:-1]  # rounds 2 .. R-1
    return {
        "devices": devices,
        "backend": backend,
        "rounds": rounds,
        "round_seconds": statistics.median(middle),
        "round_seconds_all": per_round,
        "setup_seconds": seconds[0] - statistics.median(middle),
        "aggregation_seconds": statistics.median(strategy.seconds),
        "wall_seconds": wall,
        "replies": [record.get("replies") for record in outputs.records],
        "accuracy": outputs.records[-1].get("accuracy"),
    }


def measure(devices: int, backend: str, rounds: int, local_steps: int) -> dict:
    """Run :func:`worker` in a child process, sampling the resident memory of its process tree."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--devices",
        str(devices),
        "--backends",
        backend,
        "--rounds",
        str(rounds),
        "--local_steps",
        str(local_steps),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.1)
    out, err = child.communicate()
    if child.returncode:  # a row that failed is a result too (e.g. the roles not asked in time)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return {"devices": devices, "backend": backend, "error": lines[-1] if lines else f"exit {child.returncode}"}
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--backends", nargs="+", default=["in_process", "simulation"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local_steps", type=int, default=10)
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(worker(options.devices[0], options.backends[0], options.rounds, options.local_steps)))
        return
    rows, start = [], time.monotonic()
    for backend in options.backends:
        for devices in options.devices:
            rows.append(measure(devices, backend, options.rounds, options.local_steps))
            row = rows[-1]
            if "error" in row:
                print(f"{backend} N={devices}: failed: {row['error']}", file=sys.stderr)
                continue
            print(
                f"{backend} N={devices}: {row['round_seconds']:.2f} s/round, setup {row['setup_seconds']:.1f} s, "
                f"aggregation {row['aggregation_seconds'] * 1000:.1f} ms, peak {row['peak_rss_mib']:.0f} MiB",
                file=sys.stderr,
            )
    print(f"{SAMPLED} sampled per round, {options.local_steps} local steps, {options.rounds} rounds a run; one thread.")
    print("| backend | N | s / round | vs N = first | setup (s) | aggregation (ms) | peak RSS (MiB) | vs N = first |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for backend in options.backends:
        own = [row for row in rows if row["backend"] == backend and "error" not in row]
        for row in rows:
            if row["backend"] != backend:
                continue
            if "error" in row:
                print(f"| {backend} | {row['devices']:,} | failed: {row['error']} | | | | | |")
                continue
            print(
                f"| {backend} | {row['devices']:,} | {row['round_seconds']:.2f} | "
                f"{row['round_seconds'] / own[0]['round_seconds']:.2f}x | {row['setup_seconds']:.1f} | "
                f"{row['aggregation_seconds'] * 1000:.1f} | {row['peak_rss_mib']:.0f} | "
                f"{row['peak_rss_mib'] - own[0]['peak_rss_mib']:+.0f} |"
            )
    print(f"Wall time: {(time.monotonic() - start) / 60:.1f} min.")
    if options.output:
        with open(options.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
