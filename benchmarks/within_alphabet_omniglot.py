"""One-shot recognition within one alphabet (Lake et al., 2015): accuracy per alphabet of checkpoints.

For each checkpoint, the test accuracy (600 fixed tasks per alphabet, mean and 95% CI) of N-way
1-shot tasks whose characters all come from one alphabet of ``images_background_small2`` absent from
the training archive small1: Japanese (katakana) (47 characters), Sanskrit (42) and Tagalog (17; its
20-way row uses all 17), 20-way and 5-way, and the mean error over the three alphabets. The tasks
are those of ``OmniglotDataModule(eval_within_alphabet=True, eval_alphabets=[A])``.

    .venv/bin/python benchmarks/within_alphabet_omniglot.py --data_dir ../shared/data/omniglot \
        --checkpoint NAME=PATH [--checkpoint NAME=PATH ...] [--tasks 600] [--ways 20 5]
"""

from __future__ import annotations

import argparse

import torch

from datamodules import OmniglotDataModule
from lit_meta.algorithms.checkpoints import load_learner
from lit_meta.evaluation import adaptation_curve
from lit_meta.functional import mean_ci95

ALPHABETS = {"Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/omniglot")
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH, repeated")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--ways", type=int, nargs="+", default=[20, 5])
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)

    print(f"Omniglot minimal, 1-shot within one alphabet, {args.tasks} test tasks per alphabet (mean ± 95% CI)")
    header = " | ".join(f"{a} {w}-way" for w in args.ways for a in ALPHABETS)
    print(f"| checkpoint | {header} | " + " | ".join(f"mean error {w}-way" for w in args.ways) + " |")
    print("|---" * (1 + len(args.ways) * (len(ALPHABETS) + 1)) + "|")
    for name, path in checkpoints.items():
        learner, _ = load_learner(path)
        cells, errors = [], {w: [] for w in args.ways}
        for ways in args.ways:
            for alphabet, size in ALPHABETS.items():
                data = OmniglotDataModule(
                    data_dir=args.data_dir,
                    split="minimal",
                    download=False,
                    eval_ways=min(ways, size),
                    eval_shots=1,
                    eval_queries=15,
                    test_tasks=args.tasks,
                    eval_within_alphabet=True,
                    eval_alphabets=[alphabet],
                )
                data.setup("test")
                accuracies = adaptation_curve(learner, data.test_dataloader(), learner.eval_inner_steps)[-1]
                mean, ci95 = mean_ci95(accuracies)
                cells.append(f"{100 * mean:.2f}% ± {100 * ci95:.2f}" + (f" ({size}-way)" if size < ways else ""))
                errors[ways].append(1 - mean)
        means = [f"{100 * sum(e) / len(e):.2f}%" for e in errors.values()]
        print(f"| {name} | " + " | ".join(cells + means) + " |", flush=True)


if __name__ == "__main__":
    main()
