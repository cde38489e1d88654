"""The cost of lit-meta's federated client against a bare Flower ``ClientApp`` doing the same work.

One client's ``train`` call, end to end: receive the global weights, ``--local_steps`` first-order MAML
meta-steps on the client's own tasks, reply with the new weights. Both sides are Flower
``ClientApp`` s called in this process with the same ``Message`` and ``Context``:

- lit-meta: ``client_app(MetaClient(learner, data, ...))``, the app every node of ``lit-meta
  federate`` runs (a copy of the learner, a Lightning ``Trainer``, ``trainer.fit`` for the steps, the
  weights checked and packed);
- bare: a ``ClientApp`` whose ``train`` loads the weights into plain tensors and runs the same
  FOMAML steps in a plain PyTorch loop (a hand-written MLP forward, ``torch.autograd.grad``, Adam),
  on the same tasks (drawn by the same device datamodule, with no ``Trainer``).

Same model (MLP 60-64-10, one inner step at 0.1, Adam at 3e-3, meta-batch 4: the Synthetic FOMAML
config), same device of Synthetic(0.5, 0.5), same tasks, one thread. The sides alternate call by call;
the table gives the median seconds per call and the ratio lit-meta / bare, and both sides' final
training loss (equal up to floating point: the same computation).

    python benchmarks/federated_client_overhead.py --local_steps 20 --calls 30
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import pstats
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor
from torch.func import functional_call

from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import MAML
from lit_meta.federated import MetaClient, client_app, learner_arrays
from lit_meta.federated.grid import set_task_identity
from lit_meta.models import MLP

INNER_LR, LR = 0.1, 3e-3


def make_learner(hidden: tuple[int, ...], inner_loop: str) -> MAML:
    torch.manual_seed(0)
    return MAML(
        MLP(60, hidden, 10),
        inner_lr=INNER_LR,
        inner_steps=1,
        eval_inner_steps=5,
        first_order=True,
        inner_loop=inner_loop,
        optimizer=partial(torch.optim.Adam, lr=LR),
    )


def bare_client_app(data: SyntheticFederation, backbone: torch.nn.Module, prefix: str) -> ClientApp:
    """A Flower ``ClientApp`` training first-order MAML in a plain PyTorch loop: the backbone's
    forward as a pure function of its weights (``torch.func.functional_call``), ``torch.autograd.grad``,
    Adam. ``prefix``: what the learner's weight names add to the backbone's."""
    app = ClientApp()
    network = copy.deepcopy(backbone)

    def loss(weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(network, weights, (x,)), y)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        config = message.content.config_records["config"]
        received = message.content.array_records["arrays"]
        params = {n: torch.from_numpy(received[n].numpy().copy()).requires_grad_() for n in received}
        names = {n: n.removeprefix(prefix) for n in params}
        optimizer = torch.optim.Adam(params.values(), lr=LR)
        loader = data(int(context.node_config["partition-id"]), int(config["server-round"])).train_dataloader()
        query_loss = torch.tensor(float("nan"))
        for _, task in zip(range(int(config["local-steps"])), loader):
            weights = {names[n]: p for n, p in params.items()}
            tasks, losses = task.support_x.shape[0], []
            for b in range(tasks):  # first-order MAML: the query gradient at the adapted weights
                grads = torch.autograd.grad(loss(weights, task.support_x[b], task.support_y[b]), list(weights.values()))
                fast = {n: (w - INNER_LR * g).detach().requires_grad_() for (n, w), g in zip(weights.items(), grads)}
                query = loss(fast, task.query_x[b], task.query_y[b])
                for p, g in zip(params.values(), torch.autograd.grad(query, list(fast.values()))):
                    p.grad = g / tasks if p.grad is None else p.grad + g / tasks
                losses.append(query.detach())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            query_loss = torch.stack(losses).mean()
        arrays = ArrayRecord({n: p.detach() for n, p in params.items()})
        metrics = MetricRecord({"num-examples": 1, "train-loss": float(query_loss)})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    return app


def train_message(arrays: ArrayRecord, local_steps: int) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "local-steps": local_steps})})
    return Message(content=content, message_type="train", dst_node_id=1000, group_id="1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local_steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64], help="the MLP's hidden widths")
    parser.add_argument(
        "--inner_loop", default="batched", choices=["batched", "clone"], help="lit-meta's MAML inner loop"
    )
    parser.add_argument("--calls", type=int, default=30, help="calls per side (after 3 warm-up calls each)")
    parser.add_argument("--device", type=int, default=0, help="the Synthetic device the client is")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of lit-meta's calls")
    parser.add_argument("--sort", default="cumulative", help="the profile's sort key")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    options = parser.parse_args()
    torch.set_num_threads(1)
    set_task_identity(1)
    data = SyntheticFederation(num_devices=1000, alpha=0.5, beta=0.5, seed=0)
    learner = make_learner(tuple(options.hidden), options.inner_loop)
    sides = {
        "lit-meta": client_app(MetaClient(learner, data, options.local_steps, seed=0)),
        "bare": bare_client_app(data, learner.maml.module, prefix="maml.module."),
    }
    arrays = learner_arrays(learner)
    context = Context(1, 1000, {"partition-id": options.device, "num-partitions": 1000}, RecordDict(), {})
    times: dict[str, list[float]] = {side: [] for side in sides}
    losses: dict[str, float] = {}
    profiler = cProfile.Profile() if options.profile else None
    for call in range(options.calls + 3):
        for side in sides if call % 2 == 0 else reversed(list(sides)):
            message = train_message(arrays, options.local_steps)
            if profiler is not None and side == "lit-meta" and call >= 3:
                profiler.enable()
            start = time.perf_counter()
            reply = sides[side](message, context)
            elapsed = time.perf_counter() - start
            if profiler is not None:
                profiler.disable()
            if reply.has_error():
                raise SystemExit(f"{side}: {reply.error.reason}")
            losses[side] = float(reply.content.metric_records["metrics"]["train-loss"])
            if call >= 3:
                times[side].append(elapsed)
    median = {side: statistics.median(t) for side, t in times.items()}
    ratio = median["lit-meta"] / median["bare"]
    widths = "-".join(map(str, [60, *options.hidden, 10]))
    print(f"One client's train call, {options.local_steps} FOMAML meta-steps (MLP {widths}, meta-batch 4), one thread:")
    print("| side | s / call (median) | range | final train loss |")
    print("|---|---:|---:|---:|")
    for side, t in times.items():
        print(f"| {side} | {median[side]:.4f} | {min(t):.4f}–{max(t):.4f} | {losses[side]:.4f} |")
    print(f"| lit-meta / bare | {ratio:.2f} | | |")
    if profiler is not None:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(options.sort).print_stats(40)
        profiler.dump_stats("/tmp/client.prof")
        print(stream.getvalue())
    if options.output:
        with open(options.output, "w") as f:
            json.dump(
                {
                    "local_steps": options.local_steps,
                    "hidden": options.hidden,
                    "seconds": times,
                    "median": median,
                    "ratio": ratio,
                },
                f,
            )


if __name__ == "__main__":
    main()
