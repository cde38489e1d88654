"""The cost of lit-meta's federated client against a bare Flower ``ClientApp`` doing the same work.

One client's ``train`` call, end to end: receive the global weights, ``--local_steps`` first-order MAML
meta-steps on the client's own tasks, reply with the new weights. Both sides are Flower
``ClientApp`` s called in this process with the same ``Message`` and ``Context``:

- lit-meta: ``client_app(MetaClient(learner, data, ...))``, the app every node of ``lit-meta
  federate`` runs (a copy of the learner, the weights loaded and checked,
  a barebones Lightning ``Trainer``, ``trainer.fit`` for the steps, the weights checked and packed);
- bare: a ``ClientApp`` whose ``train`` loads the weights into plain tensors and runs the same
  FOMAML steps in a plain PyTorch loop (a hand-written MLP forward, ``torch.autograd.grad``, Adam),
  on the same tasks (drawn by the same device datamodule, with no ``Trainer``).

Same model (MLP 60-64-10, one inner step at 0.1, Adam at 3e-3, meta-batch 4: the Synthetic FOMAML
config), same device of Synthetic(0.5, 0.5), same tasks, one thread. The sides alternate call by call;
the table gives the median seconds per call and the ratio lit-meta / bare, and both sides' final
training loss (equal up to floating point: the same computation).

    python benchmarks/federated_client_overhead.py --local_steps 20 --calls 30

``--breakdown`` also times the parts of lit-meta's call (median ms per call; a ``Callback`` and a
wrapped ``Trainer.fit`` take the time stamps) and, outside any client, the learner's own meta-steps
and the bare loop's on the same batches, so the difference between the sides is named item by item.
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
from collections.abc import Iterable
from functools import partial

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from lightning.pytorch import Callback
from torch import Tensor
from torch.func import functional_call

import lit_meta.federated.client as client_module
from datamodules.federated import SyntheticFederation
from lit_meta.algorithms import MAML
from lit_meta.federated import MetaClient, client_app, learner_arrays
from lit_meta.federated.grid import set_task_identity
from lit_meta.models import MLP
from lit_meta.tasks import Task

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


def bare_steps(
    network: torch.nn.Module, params: dict[str, Tensor], tasks: Iterable[Task], prefix: str
) -> tuple[torch.optim.Optimizer, Tensor]:
    """First-order MAML steps in a plain PyTorch loop, one per meta-batch of ``tasks``: the network's
    forward as a pure function of its weights (``torch.func.functional_call``), ``torch.autograd.grad``,
    Adam on ``params`` (the learner's names: ``prefix`` and the network's). Returns the last query loss."""
    names = {n: n.removeprefix(prefix) for n in params}
    optimizer = torch.optim.Adam(params.values(), lr=LR)

    def loss(weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(network, weights, (x,)), y)

    query_loss = torch.tensor(float("nan"))
    for task in tasks:
        weights = {names[n]: p for n, p in params.items()}
        count, losses = task.support_x.shape[0], []
        for b in range(count):  # first-order MAML: the query gradient at the adapted weights
            grads = torch.autograd.grad(loss(weights, task.support_x[b], task.support_y[b]), list(weights.values()))
            fast = {n: (w - INNER_LR * g).detach().requires_grad_() for (n, w), g in zip(weights.items(), grads)}
            query = loss(fast, task.query_x[b], task.query_y[b])
            for p, g in zip(params.values(), torch.autograd.grad(query, list(fast.values()))):
                p.grad = g / count if p.grad is None else p.grad + g / count
            losses.append(query.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        query_loss = torch.stack(losses).mean()
    return optimizer, query_loss


def bare_client_app(data: SyntheticFederation, backbone: torch.nn.Module, prefix: str) -> ClientApp:
    """A Flower ``ClientApp`` training first-order MAML in a plain PyTorch loop (:func:`bare_steps`).
    ``prefix``: what the learner's weight names add to the backbone's."""
    app = ClientApp()
    network = copy.deepcopy(backbone)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        config = message.content.config_records["config"]
        received = message.content.array_records["arrays"]
        params = {n: torch.from_numpy(received[n].numpy().copy()).requires_grad_() for n in received}
        loader = data(int(context.node_config["partition-id"]), int(config["server-round"])).train_dataloader()
        steps = zip(range(int(config["local-steps"])), loader)
        _, query_loss = bare_steps(network, params, (task for _, task in steps), prefix)
        arrays = ArrayRecord({n: p.detach() for n, p in params.items()})
        metrics = MetricRecord({"num-examples": 1, "train-loss": float(query_loss)})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    return app


def train_message(arrays: ArrayRecord, local_steps: int) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "local-steps": local_steps})})
    return Message(content=content, message_type="train", dst_node_id=1000, group_id="1")


class _Clock(Callback):
    """Time stamps of a fit: ``on_train_start``, each batch's start and end."""

    def __init__(self, stamps: dict[str, float]) -> None:
        self.stamps = stamps

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.stamps["train-start"] = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Task, index: int) -> None:
        self.stamps["batch-start"] = time.perf_counter()
        self.stamps.setdefault("first-batch", self.stamps["batch-start"])

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object, batch: Task, index: int
    ) -> None:
        self.stamps["last-batch-end"] = time.perf_counter()
        self.stamps["steps"] = (
            self.stamps.get("steps", 0.0) + self.stamps["last-batch-end"] - self.stamps["batch-start"]
        )


def clocked(stamps: dict[str, float]) -> None:
    """Make every client ``Trainer`` of this process stamp ``stamps`` (construction, fit, batches)."""
    build, fit = client_module.client_trainer, pl.Trainer.fit

    def client_trainer(*args: object, callbacks: tuple = (), **kwargs: object) -> pl.Trainer:
        stamps["trainer-start"] = time.perf_counter()
        trainer = build(*args, callbacks=[*callbacks, _Clock(stamps)], **kwargs)
        stamps["trainer-end"] = time.perf_counter()
        return trainer

    def timed_fit(trainer: pl.Trainer, *args: object, **kwargs: object) -> None:
        stamps["fit-start"] = time.perf_counter()
        fit(trainer, *args, **kwargs)
        stamps["fit-end"] = time.perf_counter()

    client_module.client_trainer = client_trainer
    pl.Trainer.fit = timed_fit


def parts(stamps: dict[str, float], start: float, end: float) -> dict[str, float]:
    """The parts of one lit-meta call, in seconds, from its time stamps."""
    return {
        "receive: learner copied, weights loaded, datamodule, seeds": stamps["trainer-start"] - start,
        "Trainer construction": stamps["trainer-end"] - stamps["trainer-start"],
        "fit setup (to on_train_start)": stamps["train-start"] - stamps["fit-start"],
        "epoch start to the first batch": stamps["first-batch"] - stamps["train-start"],
        "steps (batch start to end: the step, its hooks and optimizer)": stamps["steps"],
        "between steps (next batch: data, transfer, loop)": stamps["last-batch-end"]
        - stamps["first-batch"]
        - stamps["steps"],
        "fit teardown": stamps["fit-end"] - stamps["last-batch-end"],
        "reply: weights packed and checked, metrics": end - stamps["fit-end"],
    }


def own_work(data: SyntheticFederation, learner: MAML, device: int, steps: int) -> dict[str, float]:
    """Seconds of the work both sides share, outside any client: drawing ``steps`` batches, and the
    learner's meta-steps (no Lightning) and the bare loop's on them."""
    datamodule = data(device, 1)
    datamodule.trainer = None
    start = time.perf_counter()
    batches = [task for _, task in zip(range(steps), datamodule.train_dataloader())]
    drawn = time.perf_counter()
    model = copy.deepcopy(learner)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    begin = time.perf_counter()
    for task in batches:
        model.training_episode(task)[1].mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    learned = time.perf_counter()
    params = {n: p.detach().clone().requires_grad_() for n, p in learner.named_parameters()}
    bare_steps(copy.deepcopy(learner.maml.module), params, batches, "maml.module.")
    done = time.perf_counter()
    return {
        f"data: {steps} batches drawn": drawn - start,
        "learner's meta-steps, no Lightning": learned - begin,
        "bare loop's meta-steps": done - learned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local_steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64], help="the MLP's hidden widths")
    parser.add_argument(
        "--inner_loop", default="batched", choices=["batched", "clone"], help="lit-meta's MAML inner loop"
    )
    parser.add_argument("--calls", type=int, default=30, help="calls per side (after 3 warm-up calls each)")
    parser.add_argument("--device", type=int, default=0, help="the Synthetic device the client is")
    parser.add_argument("--breakdown", action="store_true", help="time the parts of lit-meta's call too")
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
    stamps: dict[str, float] = {}
    breakdown: dict[str, list[float]] = {}
    if options.breakdown:
        clocked(stamps)
    profiler = cProfile.Profile() if options.profile else None
    for call in range(options.calls + 3):
        for side in sides if call % 2 == 0 else reversed(list(sides)):
            message = train_message(arrays, options.local_steps)
            if profiler is not None and side == "lit-meta" and call >= 3:
                profiler.enable()
            stamps.clear()
            start = time.perf_counter()
            reply = sides[side](message, context)
            end = time.perf_counter()
            if profiler is not None:
                profiler.disable()
            if reply.has_error():
                raise SystemExit(f"{side}: {reply.error.reason}")
            losses[side] = float(reply.content.metric_records["metrics"]["train-loss"])
            if call >= 3:
                times[side].append(end - start)
                if options.breakdown and side == "lit-meta":
                    for item, seconds in parts(stamps, start, end).items():
                        breakdown.setdefault(item, []).append(seconds)
        if options.breakdown and call >= 3:
            for item, seconds in own_work(data, learner, options.device, options.local_steps).items():
                breakdown.setdefault(item, []).append(seconds)
    median = {side: statistics.median(t) for side, t in times.items()}
    ratio = median["lit-meta"] / median["bare"]
    widths = "-".join(map(str, [60, *options.hidden, 10]))
    print(f"One client's train call, {options.local_steps} FOMAML meta-steps (MLP {widths}, meta-batch 4), one thread:")
    print("| side | s / call (median) | range | final train loss |")
    print("|---|---:|---:|---:|")
    for side, t in times.items():
        print(f"| {side} | {median[side]:.4f} | {min(t):.4f}–{max(t):.4f} | {losses[side]:.4f} |")
    print(f"| lit-meta / bare | {ratio:.2f} | | |")
    if breakdown:
        print("\n| lit-meta's call, by part | ms / call (median) |\n|---|---:|")
        for item, seconds in breakdown.items():
            print(f"| {item} | {1000 * statistics.median(seconds):.2f} |")
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
                    "breakdown": {item: statistics.median(seconds) for item, seconds in breakdown.items()},
                },
                f,
            )


if __name__ == "__main__":
    main()
