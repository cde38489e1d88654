"""Sinusoid regression, the toy task distribution of the MAML paper."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.episodic import (
    EpisodeSampler,
    ResumableEpisodes,
    batches_done,
    rank_and_world,
    rank_share_batches,
)
from lit_meta import Task, split_support_query
from lit_meta.seeding import key_seed
from lit_meta.validation import check_positive_int, check_range, check_type


def sample_sinusoid_tasks(
    num_tasks: int,
    num_points: int,
    generator: torch.Generator,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> tuple[Tensor, Tensor]:
    """Draw tasks ``y = A sin(x - phi)`` with ``A``, ``phi`` and the inputs ``x`` uniform.

    Finn et al. (2017), section 5.1: ``A ~ U[0.1, 5.0]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``.

    Args:
        num_tasks: ``B``, tasks to draw.
        num_points: ``N``, points per task.
        generator: the random stream (one call advances it).
        amplitude, phase, x_range: ``(low, high)`` of each uniform distribution.

    Returns:
        ``x`` and ``y``, each ``(B, N, 1)``.
    """

    def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(shape, generator=generator)

    amplitudes = uniform((num_tasks, 1, 1), amplitude)
    phases = uniform((num_tasks, 1, 1), phase)
    x = uniform((num_tasks, num_points, 1), x_range)
    return x, amplitudes * torch.sin(x - phases)


class _KeyedStream(Dataset):
    """The meta-batch of a training key ``(seed, rank, step)``, drawn from a generator seeded by the key
    alone: step ``s`` holds the same tasks in every run, interrupted and resumed or not."""

    def __init__(self, sample: Callable[[torch.Generator], Task]) -> None:
        self.sample = sample

    def __getitem__(self, key: tuple[int, ...]) -> Task:
        return self.sample(torch.Generator().manual_seed(key_seed(key)))


class _FixedTasks(Dataset):
    """A fixed task set; an "index" is the tuple of task indices of one meta-batch."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __getitem__(self, indices: tuple[int, ...]) -> Task:
        return Task(*(t[list(indices)] for t in self.task))


class SinusoidDataModule(ResumableEpisodes, LightningDataModule):
    """Few-shot sinusoid regression (Finn et al., 2017, section 5.1); nothing to download.

    Training tasks are drawn afresh for every step: those of meta-batch ``s`` (counted over the run)
    on rank ``r`` from a generator seeded by ``(seed, r, s)``, so data-parallel ranks draw different
    tasks and a run resumed from a checkpoint sees those an uninterrupted run would. Validation and
    test use fixed task sets drawn from ``eval_seed``: the same tasks in every run whatever ``seed`` is.

    Args:
        shots: support points per training task (K in the paper).
        queries: query points per training task.
        eval_shots: support points per validation/test task.
        eval_queries: query points per validation/test task.
        meta_batch_size: tasks per batch.
        train_batches_per_epoch: meta-batches in one training epoch.
        val_tasks: size of the fixed validation set.
        test_tasks: size of the fixed test set.
        amplitude: ``(low, high)`` of the uniform amplitude.
        phase: ``(low, high)`` of the uniform phase.
        x_range: ``(low, high)`` of the uniform inputs.
        seed: seed of the training task stream.
        eval_seed: seed of the validation and test task sets.
    """

    def __init__(
        self,
        shots: int = 10,
        queries: int = 10,
        eval_shots: int = 5,
        eval_queries: int = 100,
        meta_batch_size: int = 25,
        train_batches_per_epoch: int = 1000,
        val_tasks: int = 100,
        test_tasks: int = 600,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        seed: int = 0,
        eval_seed: int = 1234,
    ) -> None:
        super().__init__()
        for name in (
            "shots",
            "queries",
            "eval_shots",
            "eval_queries",
            "meta_batch_size",
            "train_batches_per_epoch",
            "val_tasks",
            "test_tasks",
        ):
            check_positive_int(name, locals()[name])
        for name in ("amplitude", "phase", "x_range"):
            check_range(name, locals()[name])
        check_type("seed", seed, int)
        check_type("eval_seed", eval_seed, int)
        self.save_hyperparameters()

    def _sample(self, num_tasks: int, shots: int, queries: int, generator: torch.Generator) -> Task:
        hp = self.hparams
        x, y = sample_sinusoid_tasks(num_tasks, shots + queries, generator, hp.amplitude, hp.phase, hp.x_range)
        return split_support_query(x, y, shots, queries)

    def fixed_tasks(self, stage: str) -> Task:
        """The fixed ``"val"`` or ``"test"`` task set (the same tensors on every call and in every run)."""
        hp = self.hparams
        num_tasks, offset = (hp.val_tasks, 0) if stage == "val" else (hp.test_tasks, 1)
        generator = torch.Generator().manual_seed(hp.eval_seed + offset)
        return self._sample(num_tasks, hp.eval_shots, hp.eval_queries, generator)

    def training_episodes(self) -> dict[str, int]:
        """The shape of the training episodes, which a resumed run must share with its checkpoint."""
        hp = self.hparams
        return {"shots": hp.shots, "queries": hp.queries, "meta_batch_size": hp.meta_batch_size}

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams

        def keys() -> list[tuple[int, ...]]:  # read when an epoch starts: the rank and the batches done
            rank, start = rank_and_world(self.trainer)[0], batches_done(self.trainer)
            return [(hp.seed, rank, step) for step in range(start, start + hp.train_batches_per_epoch)]

        stream = _KeyedStream(lambda generator: self._sample(hp.meta_batch_size, hp.shots, hp.queries, generator))
        return DataLoader(stream, sampler=EpisodeSampler(keys, hp.train_batches_per_epoch), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._fixed_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._fixed_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._fixed_loader("test")

    def _fixed_loader(self, stage: str) -> DataLoader:
        tasks = self.fixed_tasks(stage)
        batches = rank_share_batches(
            range(tasks.num_tasks), self.hparams.meta_batch_size, *rank_and_world(self.trainer)
        )
        return DataLoader(_FixedTasks(tasks), sampler=EpisodeSampler(lambda: batches, len(batches)), batch_size=None)
