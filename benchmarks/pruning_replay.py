"""How often a pruner meets issue 14's three bars, replayed on the learning curves of unpruned searches.

One pruned search is one draw: whether its best trial survives depends on which configurations the
sampler proposes and in what order they report. This script estimates the chance over many draws
without training anything. It reads the validation curves of every trial of one or more unpruned
studies (``tune_pruning.py``'s ``none2`` journals), then, ``--resamples`` times, draws ``--n_trials``
of those curves without replacement, in random order, and replays them through the pruner exactly
as ``lit-meta tune`` builds it (``lit_meta.tuning.study.make_pruner``; values reported at the
validation count 1, 2, 3, ..., as the tune command's pruning callback does, which is the epochs done
when every epoch validates once, as in those searches). A trial pruned at its k-th validation
has run k of its epochs. A draw meets the bars when at least 40% of its trials are pruned, it runs at
most half the epochs of the same trials unpruned, and its best completed trial is within 1 point of
the best of the same trials unpruned.

What a replay leaves out: a sampler that learns from pruned trials (TPE) proposes other
configurations than it did in the unpruned search, and two workers report in an interleaved order.
With ``--sampler qmc`` the proposals do not depend on pruning, so a replay of one study in its own
order (``--in_order``) is that search, up to the interleaving.

Example (the unpruned searches that ``tune_pruning.py --out OUT_i`` wrote, as in ``benchmarks/RESULTS.md``):
    python benchmarks/pruning_replay.py OUT_1/none2.log OUT_2/none2.log ... --n_trials 16 32 \\
        --pruner percentile:2:25 median:2 asha
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from lit_meta.tuning.storage import open_storage  # noqa: E402
from lit_meta.tuning.study import EpochsDone, Pruner, make_pruner  # noqa: E402

Curve = list[float]


def load_curves(journal: str) -> list[Curve]:
    """The validation values of every complete trial of the one study in ``journal``, by epoch."""
    storage = open_storage(f"journal:{journal}")
    summaries = optuna.get_all_study_summaries(storage)
    if len(summaries) != 1:
        raise ValueError(f"Expected one study in the journal {journal!r}, but got {len(summaries)}.")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    return [[t.intermediate_values[k] for k in sorted(t.intermediate_values)] for t in trials]


def parse_pruner(text: str) -> dict:
    """``name[:startup[:percentile[:min_epochs]]]``, the tune command's ``--pruner``, ``--pruner_startup``,
    ``--pruner_percentile`` and ``--pruner_min_epochs`` (its defaults: 4, 25, 1)."""
    name, *rest = text.split(":")
    if name not in typing.get_args(Pruner) or len(rest) > 3:
        raise ValueError(
            f"Expected `pruner` name[:startup[:percentile[:min_epochs]]], name one of "
            f"{typing.get_args(Pruner)}, but got {text!r}."
        )
    values = [*rest, None, None, None][:3]
    return {
        "name": name,
        "startup": int(values[0] or 4),
        "percentile": float(values[1] or 25.0),
        "min_epochs": int(values[2] or 1),
    }


def replay(curves: list[Curve], pruner: dict) -> dict:
    """One search of ``curves`` in this order under ``pruner``: what the tune command would record."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(**pruner))
    pruned, epochs, kept = 0, 0, []
    for curve in curves:
        trial = study.ask()
        for epoch, value in enumerate(curve):
            EpochsDone(trial).report(value, epoch)  # as the pruning callback reports, through the tune command
            epochs += 1
            if trial.should_prune():
                pruned += 1
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            kept.append(max(curve))
            study.tell(trial, max(curve))
    best = max(max(curve) for curve in curves)
    gap = 100 * (max(kept) - best) if kept else float("-inf")
    steps = epochs / sum(len(curve) for curve in curves)
    return {"pruned": pruned / len(curves), "steps": steps, "gap": gap}


def meets(result: dict) -> dict[str, bool]:
    pruned, steps, gap = result["pruned"] >= 0.4, result["steps"] <= 0.5, result["gap"] >= -1.0
    return {"pruned": pruned, "steps": steps, "gap": gap, "all": pruned and steps and gap}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("journals", nargs="+", help="journal files of unpruned studies")
    parser.add_argument("--n_trials", type=int, nargs="+", default=[16])
    parser.add_argument("--pruner", nargs="+", default=["percentile:2:25", "median:2", "asha", "hyperband"])
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in_order", action="store_true", help="also replay each study alone, in trial order")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    pruners = {text: parse_pruner(text) for text in args.pruner}
    studies = {journal: load_curves(journal) for journal in args.journals}
    pool = [curve for curves in studies.values() for curve in curves]
    if max(args.n_trials) > len(pool):
        raise ValueError(f"Expected `n_trials` <= {len(pool)} curves in the journals, but got {max(args.n_trials)}.")
    rows = []
    for text, pruner in pruners.items():
        if args.in_order:
            for journal, curves in studies.items():
                result = replay(curves, pruner)
                rows.append({"pruner": text, "study": journal, **result, "meets": meets(result)["all"]})
                print(json.dumps(rows[-1]), flush=True)
        for n in args.n_trials:
            rng = random.Random(args.seed)
            results = [replay(rng.sample(pool, n), pruner) for _ in range(args.resamples)]
            checks = [meets(result) for result in results]
            rows.append(
                {
                    "pruner": text,
                    "n_trials": n,
                    "resamples": args.resamples,
                    **{f"p_{bar}": sum(c[bar] for c in checks) / len(checks) for bar in checks[0]},
                    "mean_steps": sum(r["steps"] for r in results) / len(results),
                    "mean_gap": sum(r["gap"] for r in results) / len(results),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return {"curves": len(pool), "rows": rows}


if __name__ == "__main__":
    main()
