"""What pruning saves in a ``lit-meta tune`` search, and what a second worker adds (issue 14).

Runs the same search (same configs, search space, sampler and seed) three times, each in its own
study on a journal file under ``--out``, one training per core:

    - ``none2``: no pruning, 2 workers;
    - ``<pruner>2``: pruning, 2 workers;
    - ``<pruner>1``: pruning, 1 worker (the speed-up of 2 workers over 1);

then ``lit-meta fit --config best.yaml`` of the pruned 2-worker search, to check that the exported
config reproduces its best trial. Prints one JSON object (also written to ``--out/summary.json``):
wall time, trials by state, meta-steps run, best value of each search.

Example (Omniglot minimal 5-way 1-shot, first-order MAML, 16 trials of 500 meta-steps):
    python benchmarks/tune_pruning.py --n_trials 16 --pruner median -- \\
        --config configs/omniglot/base.yaml --config configs/omniglot/fomaml_5w1s.yaml \\
        --config configs/tune/omniglot_fomaml.yaml --search configs/tune/fomaml_space.yaml

Everything after ``--`` goes to ``lit-meta tune`` (configs, ``--search``, fit overrides).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optuna.trial import TrialState  # noqa: E402

from lit_meta.tuning.storage import open_storage  # noqa: E402
from lit_meta.tuning.study import counted  # noqa: E402

LIT_META = [sys.executable, "-c", "import sys; from lit_meta.cli import main; main(sys.argv[1:])"]


def search(name: str, pruner: str, workers: int, args: argparse.Namespace, tune_args: list[str]) -> dict:
    import optuna

    storage = f"journal:{args.out}/{name}.log"
    command = [
        *LIT_META, "tune", *tune_args, f"--study={name}", f"--storage={storage}", f"--n_trials={args.n_trials}",
        f"--workers={workers}", f"--pruner={pruner}", f"--seed={args.seed}", f"--monitor={args.monitor}",
        f"--table={args.out}/{name}.csv", f"--export={args.out}/{name}_best.yaml",
        f"--trainer.logger.init_args.save_dir={args.out}/logs",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    trials = counted(optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials())
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    return {
        "study": name,
        "pruner": pruner,
        "workers": workers,
        "seconds": round(seconds, 1),
        "trials": len(trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "steps": sum(t.user_attrs.get("steps", 0) for t in trials),
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
    }


def reproduce(name: str, args: argparse.Namespace) -> float:
    """The best validation value of ``lit-meta fit --config <name>_best.yaml``."""
    code = (
        "import sys; from lit_meta.cli import run; "
        "cli = run(sys.argv[1:]); print('BEST', cli.trainer.checkpoint_callback.best_model_score.item())"
    )
    command = [
        sys.executable, "-c", code, "fit", f"--config={args.out}/{name}_best.yaml", "--test_after_fit=none",
        f"--trainer.logger.init_args.save_dir={args.out}/logs", "--trainer.logger.init_args.version=reproduced",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("BEST")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_trials", type=int, default=16)
    parser.add_argument("--pruner", default="median", choices=("median", "percentile", "asha", "hyperband"))
    parser.add_argument("--monitor", default="val/acc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lit-meta-tune-bench"))
    parser.add_argument("--skip", nargs="*", default=[], help="searches not to run: none2, pruned2, pruned1")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, tune_args = parser.parse_args(argv[:split]), argv[split + 1 :]
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for key, (name, pruner, workers) in {
        "none2": ("none2", "none", 2),
        "pruned2": (f"{args.pruner}2", args.pruner, 2),
        "pruned1": (f"{args.pruner}1", args.pruner, 1),
    }.items():
        if key not in args.skip:
            results[key] = search(name, pruner, workers, args, tune_args)
            print(json.dumps(results[key]), flush=True)
    if "pruned2" in results:
        results["pruned2"]["reproduced"] = reproduce(results["pruned2"]["study"], args)
    if {"none2", "pruned2"} <= results.keys():
        a, b = results["none2"], results["pruned2"]
        results["pruned_fraction"] = b["pruned"] / b["trials"]
        results["steps_ratio"] = b["steps"] / a["steps"]
        results["best_gap_points"] = 100 * (a["best_value"] - b["best_value"])
    if {"pruned1", "pruned2"} <= results.keys():
        results["speedup_2_over_1"] = results["pruned1"]["seconds"] / results["pruned2"]["seconds"]
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
