"""Stragglers: a fifth of each round's sampled clients reply after the round timeout; does every round
still end on time, and does the model learn as well?

Synthetic(0.5, 0.5) (``configs/federated/synthetic/base.yaml``, 1,000 devices: 800 train, 200 held
out), FedMeta FOMAML (``configs/federated/synthetic/fomaml.yaml``), 10 training devices sampled a
round, the in-process grid running ``--client_workers`` (10) clients side by side. Two runs of the same
seed, so the same devices are sampled each round:

- ``honest``: every client replies as soon as it is done;
- ``delayed``: in each round a deterministic ``--fraction`` (20%) of the sampled clients (drawn from
  the round's sample by a generator seeded by the round) trains, then sleeps ``--delay`` x
  ``round_timeout`` before replying: the server never gets their reply (``late``), and they stay busy,
  so a delayed device sampled again in the next round gets no message there either.

The runs evaluate nothing during the rounds (``fraction_evaluate: 0``, ``evaluate_participants: 0``):
afterwards each run's final
global meta-learner is evaluated on all 200 held-out devices by the same client app, one after
another with no timeout, and pooled over their tasks (mean and 95% CI, as the server pools them).

Per round and run: the training exchange's seconds (``train-seconds``: from the messages leaving to
the aggregation), the round's (``round-seconds``: sampling, exchange, aggregation), the wall time
from the previous round's end (its checkpoint written; round 1: from the start of the server's side,
the clients' roles read first) and the replies used and late. Printed as a markdown
table; ``--output`` writes everything as JSON.

    python benchmarks/federated_stragglers.py --rounds 20 --round_timeout 5 --output stragglers.json

Everything after ``--`` is appended to both runs' ``lit-meta federate`` command line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

from lit_meta.federated import InProcessGrid, client_app, learner_arrays  # noqa: E402
from lit_meta.federated.cli import parse  # noqa: E402
from lit_meta.federated.grid import FIRST_NODE_ID  # noqa: E402
from lit_meta.functional import pooled_mean_ci95  # noqa: E402

CONFIGS = ROOT / "configs" / "federated" / "synthetic"
TRAIN_DEVICES = 800  # of base.yaml's 1,000 (test_fraction 0.2)


def command_line(options: argparse.Namespace, log_dir: str, version: str) -> list[str]:
    return [
        "--config", str(CONFIGS / "base.yaml"),
        "--config", str(CONFIGS / "fomaml.yaml"),
        "--data.init_args.alpha", "0.5",
        "--data.init_args.beta", "0.5",
        "--strategy.init_args.fraction_train", str((options.sampled + 0.5) / TRAIN_DEVICES),
        "--strategy.init_args.fraction_evaluate", "0.0",
        "--evaluate_participants", "0.0",
        "--rounds", str(options.rounds),
        "--round_timeout", str(options.round_timeout),
        "--client_workers", str(options.client_workers),
        "--log_dir", log_dir,
        "--version", version,
        *options.federate,
    ]  # fmt: skip


def run(options: argparse.Namespace, log_dir: str, delayed: bool) -> dict:
    """One run; its per-round records and the final held-out accuracy."""
    federated = parse(command_line(options, log_dir, "delayed" if delayed else "honest"))
    chosen: dict[int, set[int]] = {}  # per round: the nodes whose training reply comes late
    release = threading.Event()
    sample = federated.strategy.configure_train

    def configure_train(server_round, arrays, config, grid):  # noqa: ANN001, ANN202 - Flower's signature
        messages = list(sample(server_round, arrays, config, grid))
        nodes = sorted(m.metadata.dst_node_id for m in messages)
        late = round(options.fraction * len(nodes)) if delayed else 0
        chosen[server_round] = set(random.Random(server_round).sample(nodes, late))
        return messages

    federated.strategy.configure_train = configure_train  # records each round's sample

    def wrap(app):  # noqa: ANN001, ANN202
        def call(message: Message, context) -> Message:  # noqa: ANN001
            reply = app(message, context)
            if message.metadata.message_type == "train":
                server_round = int(message.content.config_records["config"]["server-round"])
                if context.node_id in chosen.get(server_round, ()):
                    release.wait(options.delay * options.round_timeout)  # trained, then replies too late
            return reply

        return call

    start = time.monotonic()
    try:
        outputs = federated.run(wrap_client_app=wrap)
    finally:
        release.set()  # the calls still sleeping end now
    wall = time.monotonic() - start
    accuracy, ci95, tasks = evaluate(federated, outputs.learner)
    return {
        "delayed": delayed,
        "wall_seconds": round(wall, 2),
        "delayed_nodes": {str(r): sorted(nodes) for r, nodes in chosen.items()},
        "rounds": outputs.records,
        "accuracy": accuracy,
        "accuracy_ci95": ci95,
        "test_tasks": tasks,
    }


def evaluate(federated, learner) -> tuple[float, float, int]:  # noqa: ANN001
    """The pooled accuracy of ``learner`` adapted to each held-out device's tasks (every device, one
    after another, no timeout), as the server pools the test clients' replies."""
    data = federated.data
    held_out = [k for k in range(data.num_clients) if data.role(k) == "test"]
    grid = InProcessGrid(client_app(federated.client()), data.num_clients)
    content = {"arrays": learner_arrays(learner), "config": ConfigRecord({"server-round": federated.settings.rounds})}
    messages = [grid.create_message(RecordDict(content), "evaluate", FIRST_NODE_ID + k, "final") for k in held_out]
    replies = list(grid.send_and_receive(messages))
    failed = [r.error.reason for r in replies if r.has_error()]
    if failed or len(replies) != len(held_out):
        raise SystemExit(
            f"The final evaluation failed on {len(held_out) - len(replies) + len(failed)} devices: {failed[:3]}"
        )
    metrics = [r.content.metric_records["metrics"] for r in replies]
    mean, ci95 = pooled_mean_ci95(
        [m["accuracy"] for m in metrics], [m["accuracy-sq"] for m in metrics], [m["num-examples"] for m in metrics]
    )
    return mean, ci95, int(sum(m["num-examples"] for m in metrics))


def table(options: argparse.Namespace, runs: list[dict]) -> str:
    honest, delayed = runs
    lines = [
        f"Synthetic(0.5, 0.5), FOMAML, {options.sampled} of {TRAIN_DEVICES} devices a round, "
        f"{options.client_workers} client workers, round_timeout {options.round_timeout:g} s; delayed: "
        f"{options.fraction:.0%} of each round's sample replies {options.delay:g} x round_timeout late.",
        "",
        "| round | honest: train s | round s | wall s | replies (late) | delayed: train s | round s | wall s | "
        "replies (late) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    walls = [[b["seconds"] - a["seconds"] for a, b in zip([{"seconds": 0.0}, *r["rounds"]], r["rounds"])] for r in runs]
    for a, b, wall_a, wall_b in zip(honest["rounds"], delayed["rounds"], *walls):
        lines.append(
            f"| {a['round']} | {a['train-seconds']:.2f} | {a['round-seconds']:.2f} | {wall_a:.2f} | "
            f"{a['replies']}/{a['sent']} ({a['late']}) | {b['train-seconds']:.2f} | {b['round-seconds']:.2f} | "
            f"{wall_b:.2f} | {b['replies']}/{b['sent']} ({b['late']}) |"
        )
    bound = 1.1 * options.round_timeout
    slowest = max(walls[1])
    lines += [
        "",
        "| run | held-out accuracy (%) | tasks | slowest round, wall (s) | run wall (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result, wall in zip(("honest", "delayed"), runs, walls):
        lines.append(
            f"| {name} | {100 * result['accuracy']:.2f} ± {100 * result['accuracy_ci95']:.2f} | "
            f"{result['test_tasks']} | {max(wall):.2f} | {result['wall_seconds']:.1f} |"
        )
    difference = 100 * (delayed["accuracy"] - honest["accuracy"])
    lines += [
        "",
        f"Delayed run: slowest round {slowest:.2f} s against round_timeout + 10% = {bound:.2f} s "
        f"({'within' if slowest <= bound else 'OVER'}); accuracy {difference:+.2f} points against the honest run "
        f"({'within' if abs(difference) <= 1 else 'beyond'} 1 point).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--round_timeout", type=float, default=5.0, help="seconds (a few honest rounds)")
    parser.add_argument("--sampled", type=int, default=10, help="training devices sampled a round")
    parser.add_argument("--client_workers", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.2, help="share of each round's sample delayed")
    parser.add_argument("--delay", type=float, default=1.5, help="a delayed reply's sleep, in round timeouts")
    parser.add_argument("--log_dir", default=None, help="keep the runs' folders here (default: a temporary one)")
    parser.add_argument("--output", default=None, help="write the runs' records and results as JSON here")
    parser.add_argument("federate", nargs=argparse.REMAINDER, help="-- then more `lit-meta federate` arguments")
    options = parser.parse_args()
    options.federate = options.federate[1:] if options.federate[:1] == ["--"] else options.federate
    with tempfile.TemporaryDirectory() as scratch:
        log_dir = options.log_dir or scratch
        runs = [run(options, log_dir, delayed) for delayed in (False, True)]
    print(table(options, runs))
    if options.output:
        with open(options.output, "w") as f:
            json.dump({"options": vars(options), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
