"""Run by tests/lit_meta/test_distributed.py: one meta-training step of every learner in
``tests.helpers.learners.CASES`` under a real 2-process DDP run on CPU (gloo).

Usage: ``python tests/helpers/ddp_meta_gradient.py OUT_DIR``. Lightning's subprocess launcher re-runs this
script for rank 1 at the first ``fit``; every later ``fit`` reuses the two processes and their
process group, so the loop below runs in both processes, case by case, in the same order.

Each case starts from the same initial weights on both ranks (seeded build) and sees a fixed
meta-batch of ``META_BATCH`` tasks, of which rank ``r`` holds tasks ``[r*B/2, (r+1)*B/2)``. Each rank
writes ``OUT_DIR/<name>_<kind>_rank<r>.pt`` with the initial weights, the tasks it trained on, the
gradients right before the optimizer step (already averaged across ranks by DDP) and the weights after
the step; a case that raised writes ``<name>_<kind>_rank<r>.err`` with the traceback instead.
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import timedelta

import torch
from lightning.pytorch import Callback, LightningDataModule
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from lit_meta.algorithms import MetaLearner
from lit_meta.tasks import Task
from tests.helpers.learners import CASES, FEATURES, WAYS, build
from tests.helpers.tasks import make_classification_task, make_regression_task
from tests.helpers.trainers import quiet_trainer

META_BATCH = 4
INIT_SEED, DATA_SEED = 0, 1


def initial_learner(name: str, kind: str) -> MetaLearner:
    """The learner every rank (and the single-process reference) starts from."""
    torch.manual_seed(INIT_SEED)
    return build(name, kind)


def meta_batch(kind: str) -> Task:
    """The fixed meta-batch of ``META_BATCH`` tasks the ranks share out."""
    state = torch.random.get_rng_state()
    torch.manual_seed(DATA_SEED)
    if kind == "classification":
        task = make_classification_task(META_BATCH, WAYS, 2, 3, FEATURES)
    else:
        task = make_regression_task(META_BATCH, 5, 4)
    torch.random.set_rng_state(state)
    return task


def shard(task: Task, rank: int, world_size: int) -> Task:
    """Rank ``rank``'s contiguous share of the meta-batch."""
    per_rank = task.num_tasks // world_size
    return Task(*(t[rank * per_rank : (rank + 1) * per_rank] for t in task))


class ShardedTasks(LightningDataModule):
    """One training batch: this rank's share of ``task`` (the whole of it in a single process)."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def train_dataloader(self) -> DataLoader:
        local = shard(self.task, self.trainer.global_rank, self.trainer.world_size)
        return DataLoader([local], batch_size=None)


class Capture(Callback):
    """The tasks seen, the gradients the optimizer steps with, and the weights after the step."""

    def __init__(self) -> None:
        self.batch = self.grads = self.weights = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = Task(*(t.clone() for t in batch))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Automatic optimisation: called after backward, so DDP has all-reduced the gradients. Manual
        # optimisation (Reptile): called inside `optimizer.step()`, after `manual_backward`.
        self.grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def one_step(learner: MetaLearner, task: Task, root: str, **trainer_kwargs) -> Capture:
    """One meta-training step of ``learner`` on ``task`` (sharded across ranks under DDP)."""
    capture = Capture()
    quiet_trainer(
        root,
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[capture],
        **trainer_kwargs,
    ).fit(learner, ShardedTasks(task))
    return capture


def main(out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a small machine
    rank = None
    for name, kind in CASES:
        stem = os.path.join(out_dir, f"{name}_{kind}")
        learner = initial_learner(name, kind)
        init = {n: p.detach().clone() for n, p in learner.named_parameters()}
        strategy = DDPStrategy(timeout=timedelta(seconds=120))
        try:
            capture = one_step(learner, meta_batch(kind), out_dir, strategy=strategy, devices=2, accelerator="cpu")
        except Exception:  # noqa: BLE001  -- recorded for the test to report, then on to the next case
            rank = strategy.global_rank
            with open(f"{stem}_rank{rank}.err", "w") as f:
                f.write(traceback.format_exc())
            continue
        rank = strategy.global_rank
        record = {
            "rank": rank,
            "world_size": strategy.world_size,
            "init": init,
            "batch": capture.batch,
            "grads": capture.grads,
            "weights": capture.weights,
        }
        torch.save(record, f"{stem}_rank{rank}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # both ranks have written everything before rank 0 exits


if __name__ == "__main__":
    main(sys.argv[1])
