"""Personalised accuracy of the unseen test clients against rounds, from ``federated_result.json`` files.

    python benchmarks/federated_figure.py --output docs/images/federated_accuracy.png \\
        "FedMeta ProtoNets=lightning_logs/protonet/federated_result.json" \\
        "centralised ProtoNets=lightning_logs/protonet_centralised/federated_result.json"

Each run is ``label=path``; x is the meta-steps all training clients ran (rounds x clients x local
steps), so federated and centralised runs of equal compute line up; the band is the 95% CI over the
test tasks.
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="label=path/to/federated_result.json")
    parser.add_argument("--output", required=True)
    parser.add_argument("--title", default="Omniglot minimal: unseen test clients, 5-way 1-shot")
    parser.add_argument("--target", type=float, default=None, help="a target accuracy (%%), drawn as a dashed line")
    options = parser.parse_args()
    figure, axes = plt.subplots(figsize=(7.0, 4.6))
    for run in options.runs:
        label, path = run.split("=", 1)
        with open(path) as f:
            result = json.load(f)
        rounds = [r for r in result["rounds"] if "accuracy" in r]
        trainers = sum(role in ("train", "both") for role in result["settings"]["clients"].values())
        per_round = result["settings"]["local_steps"] * trainers  # meta-steps of all clients in a round
        x = [r["round"] * per_round for r in rounds]
        y = [100 * r["accuracy"] for r in rounds]
        ci = [100 * r["accuracy-ci95"] for r in rounds]
        (line,) = axes.plot(x, y, marker="o", markersize=3, label=label)
        axes.fill_between(
            x, [a - c for a, c in zip(y, ci)], [a + c for a, c in zip(y, ci)], alpha=0.2, color=line.get_color()
        )
    if options.target is not None:
        axes.axhline(options.target, color="grey", linestyle="--", linewidth=1, label=f"{options.target:g}%")
    axes.set_xlabel("meta-steps of all training clients")
    axes.set_ylabel("personalised test accuracy (%)")
    axes.set_title(options.title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(options.output, dpi=120)
    print(f"Written to {options.output}")


if __name__ == "__main__":
    main()
