"""lit-meta against the libraries a user would pick instead: easyfsl and learn2learn's own Lightning layer.

Same backbone (CNN-4 as ``lit_meta.models.CNN4`` builds it: 64 filters, BatchNorm without running statistics;
max-pooling for Prototypical Networks, strided convolutions for MAML; the peers get a plain-torch copy of the
same layers, loaded with the same initial weights), same images (Omniglot minimal split as
``OmniglotDataModule`` decodes them: small1 x 4 rotations for training, small2's 106 characters not in small1
for the test), 5-way 1-shot tasks, one thread, one process per side and round (so that each side's peak RSS is
its own), rounds alternating the order of the sides so that machine load hits all of them.

1. Prototypical Networks (15 queries per class, one task per step, Adam 1e-3) vs **easyfsl** (its
   ``PrototypicalNetworks`` and ``TaskSampler``, trained by the plain loop of its README) and vs learn2learn's
   ``LightningPrototypicalNetworks`` (``EpisodicBatcher`` over a learn2learn ``TaskDataset``). Each pair is the
   same model: against easyfsl, which scores by the Euclidean distance (``torch.cdist``), lit-meta runs with
   ``distance="euclidean_unsquared"`` (side ``lit-meta-unsquared``); against learn2learn, which scores by the
   squared distance of Snell et al., with its default ``"euclidean"`` (side ``lit-meta``).
2. Second-order MAML (inner lr 0.4, 1 step in training and 3 at test, 5 queries per class, meta-batch 8, Adam
   1e-3) vs learn2learn's ``LightningMAML`` (meta-batch by ``accumulate_grad_batches``, as its example does).
   Each side reports seconds per meta-step, peak RSS, and the accuracy after training on the **same** 600 test
   tasks (those lit-meta's datamodule draws, handed to the peers as indices into the same images).
   Training tasks are each library's own, seeded identically (easyfsl's and learn2learn's samplers draw
   from Python's ``random``, lit-meta's from per-task keys).
3. Episode sampling: ``OmniglotDataModule``'s training loader (its configured 0 workers) vs learn2learn's
   ``TaskDataset.sample()`` drawn directly over the same dataset, tasks per second.
4. Command start: ``lit-meta fit --help`` vs ``python -c "import lightning.pytorch"`` (median, alternating).

Ratios are lit-meta / peer. The peers live in ``.cache/peers-venv`` (``make bench-peers`` builds it from
``requirements/peers.txt``); without it only lit-meta's side runs. ``--device cuda`` trains and tests parts 1
and 2 on the GPU (every side: models and batches moved there, the clock synchronised before it is read; the
peak GPU memory allocated is reported too) and leaves the docs page alone; parts 3 and 4 are the CPU's.

    make bench-peers
    .venv/bin/python benchmarks/peers.py [--peers_python .cache/peers-venv/bin/python] [--quick] [--rounds 4]
    .venv/bin/python benchmarks/peers.py --device cuda --markdown /tmp/peers-cuda.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import itertools
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".cache" / "peers-venv" / "bin" / "python"
DOCS_PAGE = ROOT / "docs" / "benchmarks" / "peers.md"
BEGIN, END = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"
WAYS, SHOTS, TEST_QUERIES = 5, 1, 15
#: Per algorithm: training queries per class, tasks per meta-step, backbone down-sampling.
ALGORITHMS = {
    "protonet": {"queries": 15, "meta_batch": 1, "downsample": "maxpool"},
    "maml": {"queries": 5, "meta_batch": 8, "downsample": "stride"},
}
MAML_INNER_LR, MAML_TEST_STEPS, LR = 0.4, 3, 1e-3
SIDES = {
    "protonet": ("lit-meta", "lit-meta-unsquared", "easyfsl", "l2l-lightning"),
    "maml": ("lit-meta", "l2l-lightning"),
}
#: Prototypical Networks' distance on each lit-meta side.
DISTANCES = {"lit-meta": "euclidean", "lit-meta-unsquared": "euclidean_unsquared"}
#: The lit-meta side each peer is measured against: the same model, distance included.
LIT_META_SIDE = {"easyfsl": "lit-meta-unsquared", "l2l-lightning": "lit-meta"}
PEER_NAMES = {
    "easyfsl": "easyfsl PrototypicalNetworks + TaskSampler, plain loop",
    "l2l-lightning": "learn2learn Lightning layer + EpisodicBatcher",
}


# ---- the backbone, in plain torch for the peers -------------------------------------------------------------
class PlainCNN4(nn.Module):
    """CNN-4 as ``lit_meta.models.CNN4(1, out_features, 64, 4, 28, downsample)`` builds it, layer for layer, in
    plain torch: the same parameter names (``features.*``, ``head.*``), so that lit-meta's initial weights load
    strictly.

    Args:
        downsample: ``"maxpool"`` or ``"stride"``.
        out_features: classes per task.
    """

    def __init__(self, downsample: str, out_features: int = WAYS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = 1, 28
        for _ in range(4):
            stride = 2 if downsample == "stride" else 1
            layers += [
                nn.Conv2d(channels, 64, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(64, track_running_stats=False),
                nn.ReLU(),
            ]
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            side = (side + 1) // 2 if downsample == "stride" else side // 2
            channels = 64
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64 * side * side, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def lit_meta_backbone(downsample: str) -> nn.Module:
    """lit-meta's CNN-4 with the initial weights every side starts from (seed 0)."""
    from lit_meta.models import CNN4

    torch.manual_seed(0)
    return CNN4(1, WAYS, 64, 4, 28, downsample=downsample)


class BankImages(Dataset):
    """The images of one split as lit-meta's ``ImageClasses`` holds them (uint8, rotated on access).

    ``dataset[i]`` is ``(image (1, 28, 28) float in [0, 1], label)``, the values lit-meta's datamodule gives;
    ``get_labels()`` is the interface easyfsl's ``TaskSampler`` reads.
    """

    def __init__(self, part: dict) -> None:
        self.images, self.sources = part["images"], part["sources"]
        self.rotations, self.labels = part["rotations"], part["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[self.sources[index]]
        if self.rotations[index]:
            image = torch.rot90(image, self.rotations[index], dims=(1, 2))
        return image.float().div_(255.0), self.labels[index]

    def get_labels(self) -> list[int]:
        return self.labels

    def labels_to_indices(self) -> dict[int, list[int]]:
        mapping: dict[int, list[int]] = {}
        for index, label in enumerate(self.labels):
            mapping.setdefault(label, []).append(index)
        return mapping


def fixed_task(dataset: BankImages, tasks: dict, i: int) -> tuple[torch.Tensor, ...]:
    """Test task ``i``: support ``(ways*shots, 1, 28, 28)``, its labels, query images and labels, ordered by class."""

    def images(indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([dataset[int(j)][0] for j in indices])

    return images(tasks["support"][i]), tasks["support_y"][i], images(tasks["query"][i]), tasks["query_y"][i]


def learn2learn_layout(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> tuple:
    """A task as learn2learn's transforms lay it out: each class's support then query samples, class by class."""
    data, labels = [], []
    for c in range(WAYS):
        data += [sx[sy == c], qx[qy == c]]
        labels += [sy[sy == c], qy[qy == c]]
    return torch.cat(data), torch.cat(labels)


# ---- one side's run (in its own process) --------------------------------------------------------------------
def is_lit_meta(side: str) -> bool:
    return side.startswith("lit-meta")


def clock_time(device: str) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def make_clock(base: type) -> type:
    """A callback class (of Lightning ``base.Callback``) timing meta-steps after the warm-up ones."""

    class Clock(base.Callback):
        def __init__(self, warmup: int, device: str) -> None:
            self.warmup, self.device, self.start = warmup, device, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.start is None and trainer.global_step == self.warmup:
                self.start = clock_time(self.device)

        def on_train_end(self, trainer, pl_module) -> None:
            elapsed = clock_time(self.device) - self.start
            self.seconds_per_step = elapsed / (trainer.global_step - self.warmup)

    return Clock


def trainer_options(job: dict) -> dict:
    """What both Lightning sides' trainers share: no validation, checkpoint, progress bar or summary."""
    return {
        "accelerator": "gpu" if job["device"] == "cuda" else "cpu",
        "devices": 1,
        "max_steps": job["steps"],
        "limit_val_batches": 0,
        "log_every_n_steps": min(10, job["steps"]),
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }


def run_lit_meta(job: dict) -> dict:
    """lit-meta: ``Trainer.fit`` on ``OmniglotDataModule``, then ``Trainer.test`` on its 600 test tasks."""
    from lightning import pytorch as lightning
    from lightning.pytorch.loggers import TensorBoardLogger

    from lit_meta.algorithms import MAML, PrototypicalNetworks

    shape = ALGORITHMS[job["algorithm"]]
    data = omniglot(job["data_dir"], shape, job["steps"], job["test_tasks"])
    backbone = lit_meta_backbone(shape["downsample"])
    if job["algorithm"] == "protonet":
        learner = PrototypicalNetworks(backbone, distance=DISTANCES[job["side"]])
    else:
        learner = MAML(
            backbone,
            inner_lr=MAML_INNER_LR,
            inner_steps=1,
            eval_inner_steps=MAML_TEST_STEPS,
            first_order=False,
            inner_loop="clone",
        )
    clock = make_clock(lightning)(job["warmup"], job["device"])
    logger = TensorBoardLogger(job["log_dir"], name=f"{job['side']}-{job['algorithm']}")
    trainer = lightning.Trainer(**trainer_options(job), logger=logger, callbacks=[clock])
    trainer.fit(learner, data)
    result = {"seconds_per_step": clock.seconds_per_step, "training_rss_mib": peak_rss_mib()}
    if job["test"]:
        learner.record_test_curves(learner.eval_inner_steps)  # every test task's accuracy, not only the mean
        trainer.test(learner, data, verbose=False)
        result["accuracies"] = learner.test_curves()[learner.eval_inner_steps].tolist()
    return result


def run_easyfsl(job: dict, bank: dict) -> dict:
    """easyfsl's README: ``TaskSampler`` episodes through a ``DataLoader``, a plain loop with Adam; its
    ``evaluate`` (``process_support_set``, then the queries) on the shared test tasks."""
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler

    random.seed(0)
    torch.manual_seed(0)
    train = BankImages(bank["train"])
    options = {"n_way": WAYS, "n_shot": SHOTS, "n_query": ALGORITHMS["protonet"]["queries"], "n_tasks": job["steps"]}
    result = {}
    try:
        sampler = TaskSampler(train, **options)
    except TypeError as err:  # easyfsl 1.5.0 passes `data_source` to Sampler.__init__; torch 2.14's takes none
        result["notes"] = [
            f"`TaskSampler(...)` fails on torch {torch.__version__}: {type(err).__name__}: {err} (easyfsl 1.5.0 calls "
            "`Sampler.__init__(data_source=None)`); measured with `Sampler.__init__` accepting that argument"
        ]
        Sampler.__init__ = lambda self, data_source=None: None
        try:
            sampler = TaskSampler(train, **options)
        finally:
            del Sampler.__init__
    loader = DataLoader(train, batch_sampler=sampler, num_workers=0, collate_fn=sampler.episodic_collate_fn)
    backbone = PlainCNN4("maxpool")
    backbone.load_state_dict(bank["init"]["maxpool"])
    device = job["device"]
    model = PrototypicalNetworks(backbone.features).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for step, episode in enumerate(loader):
        if step == job["warmup"]:
            start = clock_time(device)
        support_x, support_y, query_x, query_y = (t.to(device) for t in episode[:4])
        optimizer.zero_grad()
        model.process_support_set(support_x, support_y)
        loss = criterion(model(query_x), query_y)
        loss.backward()
        optimizer.step()
    result["seconds_per_step"] = (clock_time(device) - start) / (job["steps"] - job["warmup"])
    result["training_rss_mib"] = peak_rss_mib()
    if job["test"]:
        test, tasks, accuracies = BankImages(bank["test"]), bank["test_tasks"], []
        model.eval()
        with torch.no_grad():
            for i in range(len(tasks["support"])):
                support_x, support_y, query_x, query_y = (t.to(device) for t in fixed_task(test, tasks, i))
                model.process_support_set(support_x, support_y)
                accuracies.append((model(query_x).argmax(1) == query_y).float().mean().item())
        result["accuracies"] = accuracies
    return result


def run_learn2learn_lightning(job: dict, bank: dict) -> dict:
    """learn2learn's ``LightningPrototypicalNetworks`` / ``LightningMAML`` under a ``pytorch_lightning`` Trainer,
    fed by ``EpisodicBatcher`` from a ``TaskDataset`` (NWays, KShots, LoadData, RemapLabels, ConsecutiveLabels),
    as learn2learn's ``examples/vision/lightning/main.py``; tested by the modules' own ``meta_learn``."""
    import learn2learn as l2l
    import pytorch_lightning as pl
    from learn2learn.algorithms import LightningMAML, LightningPrototypicalNetworks
    from learn2learn.utils.lightning import EpisodicBatcher
    from pytorch_lightning.loggers import TensorBoardLogger

    shape = ALGORITHMS[job["algorithm"]]
    random.seed(0)
    torch.manual_seed(0)
    train = BankImages(bank["train"])
    meta = l2l.data.MetaDataset(train, labels_to_indices=train.labels_to_indices())
    transforms = [
        l2l.data.transforms.NWays(meta, n=WAYS),
        l2l.data.transforms.KShots(meta, k=SHOTS + shape["queries"]),
        l2l.data.transforms.LoadData(meta),
        l2l.data.transforms.RemapLabels(meta),
        l2l.data.transforms.ConsecutiveLabels(meta),
    ]
    tasks = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1)
    backbone = PlainCNN4(shape["downsample"])
    backbone.load_state_dict(bank["init"][shape["downsample"]])
    episodes = {"train_ways": WAYS, "train_shots": SHOTS, "train_queries": shape["queries"], "lr": LR}
    episodes.update(test_ways=WAYS, test_shots=SHOTS, test_queries=TEST_QUERIES)
    if job["algorithm"] == "protonet":
        module = LightningPrototypicalNetworks(backbone.features, **episodes)
    else:
        module = LightningMAML(backbone, adaptation_lr=MAML_INNER_LR, adaptation_steps=1, **episodes)
    # One epoch for the whole run, as lit-meta's (learn2learn's example makes every meta-batch an epoch).
    batcher = EpisodicBatcher(tasks, epoch_length=job["steps"] * shape["meta_batch"])
    clock = make_clock(pl)(job["warmup"], job["device"])
    logger = TensorBoardLogger(job["log_dir"], name=f"l2l-{job['algorithm']}")
    trainer = pl.Trainer(
        **trainer_options(job), accumulate_grad_batches=shape["meta_batch"], logger=logger, callbacks=[clock]
    )
    trainer.fit(module, batcher)
    result = {"seconds_per_step": clock.seconds_per_step, "training_rss_mib": peak_rss_mib()}
    if job["test"]:
        test, fixed = BankImages(bank["test"]), bank["test_tasks"]
        if job["algorithm"] == "maml":
            module.adaptation_steps = MAML_TEST_STEPS  # LightningMAML adapts as many steps in training and test
        accuracies = []
        module.to(job["device"])  # Lightning hands the module back on the CPU after fit
        with torch.no_grad():  # as trainer.test with inference_mode=False (its default fails, see the probe)
            for i in range(len(fixed["support"])):
                batch = tuple(t.to(job["device"]) for t in learn2learn_layout(*fixed_task(test, fixed, i)))
                accuracies.append(module.meta_learn(batch, i, WAYS, SHOTS, TEST_QUERIES)[1].item())
        result["accuracies"] = accuracies
        probe = EpisodicBatcher(tasks, test_tasks=FixedTasks(test, fixed), epoch_length=1)
        result["trainer_test"] = probe_trainer_test(pl, module, probe)
    return result


class FixedTasks:
    """The shared test tasks as a learn2learn taskset: ``sample()`` gives the next one in learn2learn's layout."""

    def __init__(self, dataset: BankImages, tasks: dict) -> None:
        self.dataset, self.tasks, self.next = dataset, tasks, 0

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        task = learn2learn_layout(*fixed_task(self.dataset, self.tasks, self.next % len(self.tasks["support"])))
        self.next += 1
        return task


def probe_trainer_test(pl: object, module: object, batcher: object) -> str:
    """Whether ``Trainer.test`` runs the module with the Trainer's defaults (``inference_mode=True``): 'ok', or
    the error and the one learn2learn printed on the way (its ``adapt`` prints a failed ``autograd.grad``)."""
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            trainer.test(module, datamodule=batcher, verbose=False)
    except Exception as err:  # noqa: BLE001 - the error is the finding
        earlier = re.findall(r"^(\w+Error: .+)$", printed.getvalue(), re.M)
        during = f" (after learn2learn printed {earlier[0]})" if earlier else ""
        return f"{type(err).__name__}: {err}".splitlines()[0] + during
    return "ok"


def run_job(job: dict) -> dict:
    """One side's measurement (in whatever process calls it); failures are reported, not raised."""
    torch.set_num_threads(1)
    try:
        if is_lit_meta(job["side"]):
            result = run_lit_meta(job)
        else:
            bank = torch.load(job["bank"], weights_only=False)
            result = {"easyfsl": run_easyfsl, "l2l-lightning": run_learn2learn_lightning}[job["side"]](job, bank)
    except Exception as err:  # noqa: BLE001 - what could not run is part of the result
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
    result["peak_rss_mib"] = peak_rss_mib()
    if job["device"] == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["versions"] = versions()
    return result


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict[str, str]:
    """Versions of the packages that matter here, as installed in this interpreter."""
    found = {"python": platform.python_version()}
    for name in ("torch", "lightning", "pytorch-lightning", "learn2learn", "easyfsl", "pandas"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def child_main(jobs_path: str, result_path: str) -> None:
    jobs = json.loads(Path(jobs_path).read_text())
    Path(result_path).write_text(json.dumps([run_job(job) for job in jobs]))


# ---- the orchestrator (lit-meta's environment) --------------------------------------------------------------
def omniglot(data_dir: str, shape: dict, steps: int, test_tasks: int):
    from datamodules import OmniglotDataModule

    return OmniglotDataModule(
        data_dir=data_dir,
        split="minimal",
        download=False,
        ways=WAYS,
        shots=SHOTS,
        queries=shape["queries"],
        eval_queries=TEST_QUERIES,
        meta_batch_size=shape["meta_batch"],
        train_batches_per_epoch=steps,
        test_tasks=test_tasks,
    )


def make_bank(data_dir: str, test_tasks: int, path: Path) -> dict:
    """Write what the peers share with lit-meta: its decoded images, its test tasks (as indices into them)
    and its initial weights; check that the plain-torch CNN-4 is lit-meta's, output for output."""
    data = omniglot(data_dir, ALGORITHMS["maml"], 1, test_tasks)
    data.setup("fit")
    data.setup("test")

    def part(split: str) -> dict:
        images = data.split_data(split)[0]
        return {
            "images": images.images,
            "sources": images.sources,
            "rotations": images.rotations,
            "labels": images.labels,
        }

    bank = {"train": part("train"), "test": part("test"), "init": {}}
    test = BankImages(bank["test"])
    where = {(test[i][0] * 255).round().to(torch.uint8).numpy().tobytes(): i for i in range(len(test))}

    def indices(images: torch.Tensor) -> list[int]:
        return [where[(x * 255).round().to(torch.uint8).numpy().tobytes()] for x in images]

    fixed = {"support": [], "query": [], "support_y": [], "query_y": []}
    for batch in data.test_dataloader():
        for sx, sy, qx, qy in zip(*batch):
            fixed["support"].append(indices(sx))
            fixed["query"].append(indices(qx))
            fixed["support_y"].append(sy)
            fixed["query_y"].append(qy)
    bank["test_tasks"] = {k: torch.tensor(v) if k in ("support", "query") else torch.stack(v) for k, v in fixed.items()}
    first = next(iter(data.test_dataloader()))
    for mine, theirs in zip(fixed_task(test, bank["test_tasks"], 0), (t[0] for t in first)):
        assert torch.equal(mine, theirs), "the peers' copy of a test task differs from lit-meta's"
    for downsample in ("maxpool", "stride"):
        reference = lit_meta_backbone(downsample)
        copy = PlainCNN4(downsample)
        copy.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(10, 1, 28, 28)
        assert torch.equal(copy(x), reference(x)), f"the peers' CNN-4 ({downsample}) differs from lit-meta's"
        bank["init"][downsample] = reference.state_dict()
    torch.save(bank, path)
    return bank


def run_children(jobs: list[dict], python: str, tmp: Path) -> list[dict]:
    """Run ``jobs`` in one child process of interpreter ``python``; one result per job."""
    jobs_path, result_path = tmp / "jobs.json", tmp / "result.json"
    jobs_path.write_text(json.dumps(jobs))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [python, str(Path(__file__).resolve()), "--child", str(jobs_path), "--result", str(result_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not result_path.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [{"error": f"child exited with {done.returncode}: {tail[0]}"} for _ in jobs]
    return json.loads(result_path.read_text())


def training_jobs(args: argparse.Namespace, sides: list[str], tmp: Path) -> list[dict]:
    """Parts 1 and 2: every (algorithm, side) once per round, the sides' order rotating from round to round. The
    first round trains the full ``--*_steps`` and tests; the others only time ``--timing_steps`` meta-steps (the
    time of a step varies more from process to process than along a run: more processes, better medians)."""
    jobs = []
    for r in range(args.rounds):
        for algorithm in args.algorithms:
            order = [side for side in SIDES[algorithm] if side in sides]
            order = order[r % len(order) :] + order[: r % len(order)]
            for side in order:
                steps = args.steps[algorithm] if r == 0 else min(args.timing_steps, args.steps[algorithm])
                job = {"side": side, "algorithm": algorithm, "round": r, "steps": steps}
                job.update(warmup=args.warmup, test=r == 0, test_tasks=args.test_tasks, data_dir=args.data_dir)
                job["device"] = args.device
                jobs.append({**job, "bank": str(tmp / "bank.pt"), "log_dir": str(tmp / "logs")})
    return jobs


def run_training(args: argparse.Namespace, jobs: list[dict], tmp: Path) -> list[dict]:
    """Each job in its own process (peak RSS per side). ``--quick``: one process per interpreter;
    ``--in_process``: lit-meta's jobs in this one (their RSS is then this process's)."""
    if not args.quick:
        results = []
        for job in jobs:
            result = run_children([job], sys.executable if is_lit_meta(job["side"]) else args.peers_python, tmp)[0]
            results.append(result)
            figures = (
                result.get("error")
                or f"{result['seconds_per_step']:.3f} s/step, peak RSS {result['training_rss_mib']:.0f} MiB after "
                f"training, {result['peak_rss_mib']:.0f} MiB in all"
            )
            print(f"round {job['round'] + 1}, {job['algorithm']}, {job['side']}: {figures}", flush=True)
        return results
    results: dict[int, dict] = {}
    for lit_meta in (True, False):
        mine = [i for i, job in enumerate(jobs) if is_lit_meta(job["side"]) == lit_meta]
        if not mine:
            continue
        if lit_meta and args.in_process:
            threads = torch.get_num_threads()
            try:
                done = [run_job(jobs[i]) for i in mine]
            finally:
                torch.set_num_threads(threads)
        else:
            done = run_children([jobs[i] for i in mine], sys.executable if lit_meta else args.peers_python, tmp)
        results.update(zip(mine, done))
    return [results[i] for i in range(len(jobs))]


def sampling_rates(args: argparse.Namespace) -> dict:
    """Part 3: tasks per second of lit-meta's training loader and of learn2learn's ``TaskDataset.sample()``
    over the same dataset (MAML's task shape), alternating rounds in this process."""
    import learn2learn as l2l

    from datamodules.episodic import labels_to_indices

    shape = ALGORITHMS["maml"]
    data = omniglot(args.data_dir, shape, args.sampling_batches + 1, args.test_tasks)
    data.setup("fit")
    dataset, labels, _ = data.split_data("train")
    meta = l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices(labels))
    transforms = [
        l2l.data.transforms.NWays(meta, n=WAYS),
        l2l.data.transforms.KShots(meta, k=SHOTS + shape["queries"]),
        l2l.data.transforms.LoadData(meta),
        l2l.data.transforms.RemapLabels(meta),
        l2l.data.transforms.ConsecutiveLabels(meta),
    ]
    taskset = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1)
    tasks = args.sampling_batches * shape["meta_batch"]
    lit, peer = [], []
    for r in range(args.rounds):

        def lit_meta_rate() -> float:
            loader = iter(data.train_dataloader())
            next(loader)
            start = time.perf_counter()
            for _ in itertools.islice(loader, args.sampling_batches):
                pass
            return tasks / (time.perf_counter() - start)

        def learn2learn_rate() -> float:
            taskset.sample()
            start = time.perf_counter()
            for _ in range(tasks):
                taskset.sample()
            return tasks / (time.perf_counter() - start)

        for measure in (lit_meta_rate, learn2learn_rate) if r % 2 == 0 else (learn2learn_rate, lit_meta_rate):
            (lit if measure is lit_meta_rate else peer).append(measure())
    return {"lit-meta": lit, "peer": peer, "tasks_per_round": tasks}


def start_times(repeats: int, commands: dict[str, list[str]]) -> dict[str, list[float]]:
    """Part 4: wall seconds of each command, run ``repeats`` times, alternating (order swapped every repeat)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            subprocess.run(commands[name], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    return times


# ---- the report ---------------------------------------------------------------------------------------------
def summarise(runs: list[dict]) -> dict:
    """One side's figures over its rounds: median s/step (and every round's), peak RSS, accuracy ± CI."""
    from lit_meta.functional import mean_ci95

    errors = [run["error"] for run in runs if "error" in run]
    ok = [run for run in runs if "error" not in run]
    summary: dict = {"errors": errors, "versions": runs[0].get("versions", {})}
    if ok:
        per_round = [run["seconds_per_step"] for run in ok]
        summary.update(seconds_per_step=statistics.median(per_round), seconds_per_round=per_round)
        summary["training_rss_mib"] = max(run["training_rss_mib"] for run in ok)
        summary["peak_rss_mib"] = max(run["peak_rss_mib"] for run in ok)
        if all("cuda_peak_mib" in run for run in ok):
            summary["cuda_peak_mib"] = max(run["cuda_peak_mib"] for run in ok)
        tested = [run for run in ok if "accuracies" in run]
        if tested:
            mean, ci = mean_ci95(torch.tensor(tested[0]["accuracies"]))
            summary.update(accuracy=100 * mean, accuracy_ci95=100 * ci, test_tasks=len(tested[0]["accuracies"]))
            if "trainer_test" in tested[0]:
                summary["trainer_test_with_defaults"] = tested[0]["trainer_test"]
    summary["notes"] = sorted({note for run in ok for note in run.get("notes", [])})
    return summary


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """The table: (comparison, figure, lit-meta, peer, lit-meta / peer)."""
    table = []
    for algorithm, peers in report["training"].items():
        for peer, side in peers.items():
            if is_lit_meta(peer):
                continue
            lit = peers.get(LIT_META_SIDE[peer], {"errors": [f"no {LIT_META_SIDE[peer]} side"]})
            name = {"protonet": "Prototypical Networks", "maml": "MAML (2nd order, meta-batch 8)"}[algorithm]
            if algorithm == "protonet":
                name += {"lit-meta": " (squared Euclidean distance)", "lit-meta-unsquared": " (Euclidean distance)"}[
                    LIT_META_SIDE[peer]
                ]
            label = f"{name} vs {PEER_NAMES[peer]}"
            if side.get("errors") and "seconds_per_step" not in side:
                table.append((label, "could not run", fmt_side(lit, "seconds_per_step"), side["errors"][0], "–"))
                continue
            figures = (
                ("s / meta-step", "seconds_per_step"),
                ("peak RSS after training (MiB)", "training_rss_mib"),
                ("peak RSS with the test (MiB)", "peak_rss_mib"),
            ) + ((("peak CUDA memory allocated (MiB)", "cuda_peak_mib"),) if "cuda_peak_mib" in lit else ())
            for figure, key in figures:
                table.append(
                    (label, figure, fmt_side(lit, key), fmt_side(side, key), ratio(lit.get(key), side.get(key)))
                )
            table.append(
                (
                    label,
                    f"test accuracy ({lit.get('test_tasks', '?')} tasks)",
                    fmt_accuracy(lit),
                    fmt_accuracy(side),
                    ratio(lit.get("accuracy"), side.get("accuracy")),
                )
            )
    if "sampling" in report:
        s = report["sampling"]
        lit, peer = statistics.median(s["lit-meta"]), statistics.median(s["peer"])
        table.append(
            (
                "Episode sampling (5-way 1-shot 5-query) vs learn2learn `TaskDataset.sample()`",
                "tasks / s",
                f"{lit:.0f} ({spread(s['lit-meta'], '.0f')})",
                f"{peer:.0f} ({spread(s['peer'], '.0f')})",
                ratio(lit, peer),
            )
        )
    if "start" in report:
        s = report["start"]
        lit, peer = statistics.median(s["lit-meta fit --help"]), statistics.median(s["import lightning.pytorch"])
        table.append(
            (
                'Command start: `lit-meta fit --help` vs `python -c "import lightning.pytorch"`',
                "seconds (median)",
                f"{lit:.2f} ({spread(s['lit-meta fit --help'], '.2f')})",
                f"{peer:.2f} ({spread(s['import lightning.pytorch'], '.2f')})",
                ratio(lit, peer),
            )
        )
    return table


def spread(values: list[float], spec: str) -> str:
    return f"{format(min(values), spec)}–{format(max(values), spec)}" if len(values) > 1 else "1 round"


def fmt_side(side: dict, key: str) -> str:
    value = side.get(key)
    if value is None:
        return side["errors"][0] if side.get("errors") else "–"
    if key == "seconds_per_step":
        return f"{value:.3f} ({spread(side['seconds_per_round'], '.3f')})"
    return f"{value:.0f}"


def fmt_accuracy(side: dict) -> str:
    return f"{side['accuracy']:.2f}% ± {side['accuracy_ci95']:.2f}" if "accuracy" in side else "–"


def markdown(report: dict) -> str:
    header = "| comparison | figure | lit-meta | peer | lit-meta / peer |\n|---|---|---:|---:|---:|\n"
    body = "".join(f"| {' | '.join(row)} |\n" for row in rows(report))
    info = report["run"]
    notes = []
    for algorithm, peers in report["training"].items():
        for side, figures in peers.items():
            notes += [f"{side}, {algorithm}: {note}" for note in figures.get("notes", [])]
            if "trainer_test_with_defaults" in figures:
                probe = figures["trainer_test_with_defaults"]
                notes.append(
                    f"{side}, {algorithm}: `Trainer.test` with the Trainer's defaults (inference mode): {probe}"
                )
    notes_text = "".join(f"- {note}\n" for note in notes)
    return (
        f"Command: {info['command']}; {info['settings']}. Machine: {info['machine']}; wall time "
        f"{info['wall_seconds'] / 60:.1f} min; {info['date']}. Versions: {info['versions']}.\n\n"
        + header
        + body
        + (f"\n{notes_text}" if notes_text else "")
    )


def command(argv: list[str] | None) -> str:
    """The command line that ran this, as the docs show it (``make bench-peers`` where make ran it)."""
    line = " ".join([".venv/bin/python", "benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
    return f"`make bench-peers` (`{line}`)" if os.environ.get("MAKELEVEL") and argv is None else f"`{line}`"


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def write_markdown(path: Path, section: str) -> None:
    """Replace the section between the page's markers (or append one)."""
    text = path.read_text() if path.exists() else "# lit-meta and its peers\n"
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("LIT_META_DATA", ROOT.parent / "shared" / "data")) / "omniglot"
    parser.add_argument("--data_dir", default=str(default_data))
    parser.add_argument("--peers_python", default=str(PEERS_PYTHON), help="the peers' interpreter (make bench-peers)")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where parts 1 and 2 train and test (default cpu)"
    )
    sides, parts = ["lit-meta", "easyfsl", "l2l-lightning"], ["protonet", "maml", "sampling", "start"]
    parser.add_argument("--sides", nargs="+", choices=sides, default=sides)
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--protonet_steps", type=int, default=500)
    parser.add_argument("--maml_steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=5, help="meta-steps not timed")
    parser.add_argument("--rounds", type=int, default=4, help="the first trains and tests, the others time")
    parser.add_argument("--timing_steps", type=int, default=150, help="meta-steps of the rounds after the first")
    parser.add_argument("--test_tasks", type=int, default=600)
    parser.add_argument("--sampling_batches", type=int, default=60, help="meta-batches of 8 tasks timed per round")
    parser.add_argument("--start_repeats", type=int, default=5)
    parser.add_argument(
        "--output", "--json", default=str(ROOT / "lightning_logs" / "bench_peers" / "peers.json"), help="the report"
    )
    parser.add_argument(
        "--markdown", default=None, help=f"page to update (default {DOCS_PAGE}; none with --quick or on cuda)"
    )
    parser.add_argument("--quick", action="store_true", help="a few steps and tasks: a smoke test in seconds")
    parser.add_argument("--in_process", action="store_true", help="lit-meta's side in this process (tests)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.protonet_steps, args.maml_steps, args.warmup, args.rounds = 3, 2, 1, 1
        args.test_tasks, args.sampling_batches, args.start_repeats = 4, 2, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("Expected a CUDA device for `--device cuda`, but got none (torch.cuda.is_available() is False).")
    if args.markdown is None and not args.quick and args.device == "cpu":  # the page's table is the CPU's
        args.markdown = str(DOCS_PAGE)
    args.steps = {"protonet": args.protonet_steps, "maml": args.maml_steps}
    args.algorithms = [a for a in ("protonet", "maml") if a in args.parts]
    return args


def measure(args: argparse.Namespace, sides: list[str]) -> dict:
    """Parts 1 to 4 as ``args`` selects them: the report without its ``run`` section."""
    report: dict = {"training": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.algorithms:
            make_bank(args.data_dir, args.test_tasks, tmp / "bank.pt")
            jobs = training_jobs(args, sides, tmp)
            runs: dict[str, dict[str, list[dict]]] = {}
            for job, result in zip(jobs, run_training(args, jobs, tmp)):
                runs.setdefault(job["algorithm"], {}).setdefault(job["side"], []).append(result)
            report["training"] = {a: {s: summarise(r) for s, r in by_side.items()} for a, by_side in runs.items()}
        if "sampling" in args.parts:
            report["sampling"] = sampling_rates(args)
        if "start" in args.parts:
            lit_meta_cli = str(Path(sys.executable).parent / "lit-meta")
            commands = {
                "lit-meta fit --help": [lit_meta_cli, "fit", "--help"],
                "import lightning.pytorch": [sys.executable, "-c", "import lightning.pytorch"],
            }
            report["start"] = start_times(args.start_repeats, commands)
    return report


def print_table(table: list[tuple[str, ...]]) -> None:
    header = ("comparison", "figure", "lit-meta", "peer", "lit-meta / peer")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> dict:
    """Run the comparisons; print the table; write the JSON report and the docs page's section.

    Args:
        argv: the command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The report written to ``--output`` (empty in a child process).
    """
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.result)
        return {}
    began, threads = time.perf_counter(), torch.get_num_threads()
    sides = ["lit-meta"] + [s for s in args.sides if s != "lit-meta"]
    if len(sides) > 1 and not Path(args.peers_python).exists():
        print(f"no peers' interpreter {args.peers_python} (`make bench-peers` builds it): lit-meta's side only")
        sides = ["lit-meta"]
    if "easyfsl" in sides:  # easyfsl's pair: lit-meta with easyfsl's distance
        sides.insert(1, "lit-meta-unsquared")
    torch.set_num_threads(1)
    try:
        report = measure(args, sides)
    finally:
        torch.set_num_threads(threads)
    found = versions()
    for peers in report["training"].values():
        for side in peers.values():
            found.update(side.get("versions", {}))
    report["run"] = {
        "command": command(argv),
        "settings": (
            f"{args.protonet_steps} Prototypical Networks and {args.maml_steps} MAML meta-steps, then "
            f"{args.rounds - 1} more rounds of {args.timing_steps} steps to time ({args.warmup} warm-up steps not "
            f"timed in each); {args.test_tasks} test tasks; one thread"
            + ("" if args.device == "cpu" else f"; parts 1 and 2 on {args.device}")
        ),
        "machine": machine(),
        "wall_seconds": time.perf_counter() - began,
        "date": datetime.date.today().isoformat(),
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(found.items())),
        "sides": sides,
    }
    print_table(rows(report))
    print(f"wall time {report['run']['wall_seconds']:.0f} s")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    if args.markdown:
        write_markdown(Path(args.markdown), markdown(report))
    return report


if __name__ == "__main__":
    main()
