"""Federated meta-learners against the personalised-FL baselines, each evaluated the same way.

Every method is a ``lit-meta federate`` run of the benchmark's base config with one method config
stacked on it, one thread, the same clients, rounds, sampling and seed. Each run's final round is
evaluated on every held-out client (personalised accuracy after adapting on its few local examples,
FedMeta's unseen clients) and, where the benchmark asks for it, on a sample of the participating
clients (their own local test data, after adapting with their personal state): mean and 95% CI over
the tasks, from the run's ``federated_result.json``. ``--jobs`` runs go side by side (one per core).

    python benchmarks/federated_personalised.py --benchmark synthetic --jobs 2 --output personalised.json
    python benchmarks/federated_personalised.py --benchmark omniglot --methods protonet perfedavg_fo
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Per benchmark: the base configs and arguments every method shares, and the methods (label, the
#: method's config file in the benchmark's folder, its own arguments).
BENCHMARKS: dict[str, dict] = {
    "synthetic": {
        "folder": "configs/federated/synthetic",
        "base": [
            "--data.init_args.alpha",
            "0.5",
            "--data.init_args.beta",
            "0.5",
            "--strategy.init_args.fraction_train",
            "0.0125",  # 10 of the 800 training devices a round
            "--strategy.init_args.fraction_evaluate",
            "1.0",  # every one of the 200 held-out devices, at the end
            "--rounds",
            "100",
            "--evaluate_every",
            "100",
            "--evaluate_participants",
            "0.125",  # 100 of the 800 training devices, at the end
        ],
        "methods": {
            "fomaml": ("FedMeta, first-order MAML", []),
            "maml": ("FedMeta, MAML (second order)", ["--model.init_args.first_order", "false"]),
            "perfedavg_fo": ("Per-FedAvg (FO)", []),
            "perfedavg_hf": ("Per-FedAvg (HF)", []),
            "ditto": ("Ditto", []),
            "fedrep": ("FedRep", []),
            "pfedme": ("pFedMe", []),
            "fedavg": ("FedAvg + fine-tuning", []),
        },
    },
    "omniglot": {
        "folder": "configs/federated/omniglot",
        "base": [],
        "methods": {
            "protonet": ("FedMeta, ProtoNets", []),
            "maml": ("FedMeta, MAML (second order)", []),
            "perfedavg_fo": ("Per-FedAvg (FO)", []),
            "perfedavg_hf": ("Per-FedAvg (HF)", []),
            "ditto": ("Ditto", []),
            "fedrep": ("FedRep", []),
            "pfedme": ("pFedMe", []),
            "supervised": ("FedAvg + nearest class mean", []),
        },
    },
}
# The 50 drawer-split Omniglot clients (10 per training alphabet), 20% of them a round. A client holds
# 2 of the 20 drawers of each of its alphabet's characters (2 images a class), so its training tasks are
# 1-shot with 1 query a class; the unseen test clients (whole alphabets) keep their 15 queries.
BENCHMARKS["omniglot50"] = {
    **BENCHMARKS["omniglot"],
    "base": [
        "--data.init_args.splits_per_group",
        "10",
        "--data.init_args.data.init_args.queries",
        "1",
        "--strategy.init_args.fraction_train",
        "0.2",
        "--strategy.init_args.min_train_nodes",
        "10",
    ],
}


def config_files(benchmark: dict, method: str) -> list[str]:
    folder = benchmark["folder"]
    method_file = "fomaml.yaml" if method == "maml" and folder.endswith("synthetic") else f"{method}.yaml"
    return ["--config", f"{folder}/base.yaml", "--config", f"{folder}/{method_file}"]


def run_method(benchmark: dict, method: str, logs: str, extra: list[str]) -> dict:
    """One ``lit-meta federate`` run; its final round's figures."""
    label, own = benchmark["methods"][method]
    command = [
        sys.executable,
        "-c",
        "import sys; from lit_meta.cli import main; main(sys.argv[1:])",
        "federate",
        *config_files(benchmark, method),
        *benchmark["base"],
        *own,
        *extra,
        "--num_threads",
        "1",
        "--log_dir",
        logs,
        "--version",
        method,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIT_META_DATA": os.environ.get("LIT_META_DATA", "../shared/data")}
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    if done.returncode:
        return {"method": method, "label": label, "error": done.stderr.strip().splitlines()[-1:]}
    with open(os.path.join(logs, method, "federated_result.json")) as f:
        result = json.load(f)
    last = result["rounds"][-1]
    metric = "accuracy" if "accuracy" in last else "mse"
    return {
        "method": method,
        "label": label,
        "rounds": last["round"],
        "wall_seconds": wall,
        "held_out": last.get(metric),
        "held_out_ci95": last.get(f"{metric}-ci95"),
        "participants": last.get(f"participants-{metric}"),
        "participants_ci95": last.get(f"participants-{metric}-ci95"),
        "command": " ".join(command[4:]),
    }


def percent(mean: float | None, ci: float | None) -> str:
    return "–" if mean is None else f"{100 * mean:.2f} ± {100 * (ci or 0):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="synthetic")
    parser.add_argument("--methods", nargs="+", default=None, help="default: all of the benchmark's")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (one per core)")
    parser.add_argument("--log_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="-- then more `lit-meta federate` arguments")
    options = parser.parse_args()
    benchmark = BENCHMARKS[options.benchmark]
    methods = options.methods or list(benchmark["methods"])
    unknown = sorted(set(methods) - set(benchmark["methods"]))
    if unknown:
        parser.error(f"Expected methods of {options.benchmark} ({', '.join(benchmark['methods'])}), but got {unknown}.")
    extra = options.extra[1:] if options.extra[:1] == ["--"] else options.extra
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        logs = options.log_dir or scratch
        with ThreadPoolExecutor(options.jobs) as pool:
            rows = list(pool.map(lambda m: run_method(benchmark, m, logs, extra), methods))
    print(f"Benchmark {options.benchmark}; {options.jobs} runs side by side, one thread each.")
    print("| method | held-out clients | participating clients | rounds | wall |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['label']} | failed: {' '.join(row['error'])} | | | |")
            continue
        print(
            f"| {row['label']} | {percent(row['held_out'], row['held_out_ci95'])} | "
            f"{percent(row['participants'], row['participants_ci95'])} | {row['rounds']} | "
            f"{row['wall_seconds']:.0f} s |"
        )
    print(f"Wall time: {(time.monotonic() - start) / 60:.1f} min.")
    if options.output:
        with open(options.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
