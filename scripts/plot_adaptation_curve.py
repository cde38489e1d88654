"""Draw the adaptation curves an ``AdaptationCurve`` callback stored in a checkpoint, as a PNG.

python scripts/plot_adaptation_curve.py lightning_logs/maml_5w1s/checkpoints/last.ckpt curve.png
"""

from __future__ import annotations

import argparse

import torch

from callbacks import plot_adaptation_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("output")
    options = parser.parse_args()
    checkpoint = torch.load(options.checkpoint, map_location="cpu", weights_only=True)
    states = [state for key, state in checkpoint.get("callbacks", {}).items() if key.startswith("AdaptationCurve")]
    if not states or not states[0]["history"]:
        raise SystemExit(f"{options.checkpoint}: no AdaptationCurve history in this checkpoint.")
    metric = "accuracy" if checkpoint["hyper_parameters"].get("loss", "cross_entropy") == "cross_entropy" else "mse"
    plot_adaptation_curves(states[0]["history"], metric).savefig(options.output, dpi=120)
    print(f"{len(states[0]['history'])} curves written to {options.output}")


if __name__ == "__main__":
    main()
