"""Few-shot classification episodes on learn2learn's ``MetaDataset`` / ``Taskset`` and task transforms.

:class:`EpisodicDataModule` turns labelled datasets (one per split) into meta-batches of N-way K-shot
tasks. A subclass only says how to build each split's dataset (:meth:`EpisodicDataModule.build_split`).

How tasks are chosen (in the main process, by :class:`EpisodeSampler`) and how they are built (in
any process, by :class:`_MetaBatches`) are kept apart: a task is a pure function of its key, so the
same key gives the same task in every run, process and worker count.

- Training: the meta-batch of batch number ``s`` (counted over the whole run) on rank ``r`` holds the
  tasks keyed ``(seed, r, s, b)``. Ranks draw different tasks; a run resumed from a checkpoint starts
  at its batch count and sees the tasks an uninterrupted run would.
- Validation/test: a fixed set of ``val_tasks`` / ``test_tasks`` tasks keyed ``(eval_seed, split, i)``;
  under DDP rank ``r`` takes tasks ``r, r + W, r + 2W, ...``: each task is evaluated exactly once.

learn2learn's transforms draw from Python's global ``random``; :meth:`_Episodes.draw` seeds it from the
key and restores it afterwards.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import learn2learn as l2l
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from datamodules.augmentation import AffineWarp
from lit_meta import Task, split_support_query
from lit_meta.images import ImagePreprocessing
from lit_meta.seeding import key_seed
from lit_meta.validation import check_positive_int, check_type

SPLITS = ("train", "val", "test")
#: Each split's number in the keys of its tasks (evaluation tasks are keyed by (eval seed, split, index)).
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

TaskKey = tuple[int, ...]
# Appended to a training task's key for the seeds of its augmentation and of its group.
_AUGMENT_STREAM, _GROUP_STREAM = 1, 2


def labels_to_indices(labels: Sequence[int]) -> dict[int, list[int]]:
    """``{label: [sample indices]}``, the bookkeeping ``MetaDataset`` would otherwise build by loading
    every sample once."""
    mapping: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        mapping.setdefault(int(label), []).append(index)
    return mapping


def check_split(split: str, class_sizes: dict[str, int], ways: int, per_class: int) -> None:
    """Fail early, naming the split, the class and the numbers, if no task can be drawn.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_sizes: ``{class name: number of samples}`` of the split.
        ways: classes per task.
        per_class: samples needed per class (``shots + queries``).
    """
    if ways > len(class_sizes):
        raise ValueError(f"Expected `ways` <= {len(class_sizes)} classes in split {split!r}, but got {ways}.")
    for name, size in class_sizes.items():
        if size < per_class:
            raise ValueError(
                f"Expected >= {per_class} images (`shots` + `queries`) in class {name!r} of split {split!r}, "
                f"but got {size}."
            )


def eligible_groups(split: str, class_groups: Sequence[str], ways: int) -> dict[str, list[int]]:
    """``{group: its class labels}`` of the groups of ``split`` with at least ``ways`` classes (the others
    cannot give a task; they are named in the log), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for label, group in enumerate(class_groups):
        groups.setdefault(group, []).append(label)
    eligible = {group: classes for group, classes in groups.items() if len(classes) >= ways}
    if not eligible:
        largest = max(groups, key=lambda g: len(groups[g]))
        raise ValueError(
            f"Expected a group with >= {ways} classes (`ways`) for tasks within one group in split {split!r}, "
            f"but got at most {len(groups[largest])} (in {largest!r})."
        )
    skipped = [f"{group} ({len(classes)})" for group, classes in groups.items() if group not in eligible]
    if skipped:
        rank_zero_info(f"Split {split!r}: {ways}-way tasks within one group skip {', '.join(skipped)}.")
    return eligible


def image_digests(dataset: Dataset) -> list[bytes]:
    """A content digest of every sample's image (``dataset[i][0]``), as the model would see it."""
    return [
        hashlib.blake2b(np.ascontiguousarray(dataset[i][0]).tobytes(), digest_size=16).digest()
        for i in range(len(dataset))
    ]


def check_disjoint(
    split: str,
    digests: Sequence[bytes],
    labels: Sequence[int],
    class_names: Sequence[str],
    train: dict[bytes, str],
) -> None:
    """Fail, naming the classes and the count, if a class of ``split`` shares an image with a training class.

    Args:
        split: ``"val"`` or ``"test"``.
        digests: the content digest of each sample of ``split``.
        labels: the class index of each sample.
        class_names: ``class_names[label]`` names a class.
        train: ``{digest: training class name}`` of every training image.
    """
    shared: dict[tuple[str, str], int] = {}
    for digest, label in zip(digests, labels):
        if digest in train:
            pair = (class_names[label], train[digest])
            shared[pair] = shared.get(pair, 0) + 1
    if shared:
        classes = {name for name, _ in shared}
        listed = ", ".join(f"{name!r} with {other!r} ({count})" for (name, other), count in list(shared.items())[:5])
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise ValueError(
            f"Expected the classes of split {split!r} to share no image with those of split 'train', but got "
            f"{len(classes)} classes sharing {sum(shared.values())} images: {listed}{more}."
        )


def rank_and_world(trainer: object | None) -> tuple[int, int]:
    """``(global rank, world size)`` of ``trainer``; ``(0, 1)`` without one."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def batches_done(trainer: object | None) -> int:
    """Training batches the run of ``trainer`` has consumed, over all epochs (restored from a
    checkpoint on resume, so a resumed stream carries on where the checkpoint left it); 0 without one."""
    if trainer is None:
        return 0
    return trainer.fit_loop.epoch_loop.batch_progress.total.ready


def is_fitting(trainer: object | None) -> bool:
    """Whether ``trainer`` is in ``fit`` (a checkpoint restored then resumes a training run)."""
    return trainer is not None and trainer.state.fn == "fit"


def check_resumed_episodes(saved: dict[str, object] | None, current: dict[str, object]) -> None:
    """Refuse to resume a run from a checkpoint written for other training episodes.

    Args:
        saved: the episode shape the checkpoint was written for (``None``: not recorded, accepted).
        current: the episode shape of this run, e.g. ``{"ways": 5, "shots": 1, ...}``.
    """
    if saved is not None and dict(saved) != current:

        def text(shape: dict[str, object]) -> str:
            return ", ".join(f"{k}={v}" for k, v in shape.items())

        raise ValueError(
            f"Expected a checkpoint written for training episodes {text(current)} to resume this run, but got one "
            f"for {text(dict(saved))}; resume with the episodes it was written for, or start a new run."
        )


class ResumableEpisodes:
    """Mixin of a datamodule: its checkpoint state is the shape of its training episodes
    (``training_episodes()``), and resuming a ``fit`` from a checkpoint of another shape is refused."""

    trainer: object | None

    def training_episodes(self) -> dict[str, int]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, object]:
        return {"training_episodes": self.training_episodes()}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        if is_fitting(self.trainer):
            check_resumed_episodes(state_dict.get("training_episodes"), self.training_episodes())


def rank_share_batches(items: Sequence, batch_size: int, rank: int, world: int) -> list[tuple]:
    """Rank ``rank``'s share of a fixed evaluation set, in meta-batches of ``batch_size``.

    Rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``, so every item is evaluated exactly once
    (ranks may get one item more or less: nothing is padded or repeated).
    """
    mine = list(items[rank::world])
    return [tuple(mine[i : i + batch_size]) for i in range(0, len(mine), batch_size)]


class _Episodes:
    """N-way (K+Q)-shot tasks of one labelled dataset, through learn2learn's task transforms."""

    def __init__(
        self,
        dataset: Dataset,
        labels: Sequence[int],
        ways: int,
        shots: int,
        queries: int,
        global_labels: bool = False,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        meta = l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices(labels))
        transforms = [
            l2l.data.transforms.NWays(meta, n=ways),
            l2l.data.transforms.KShots(meta, k=shots + queries),
            l2l.data.transforms.LoadData(meta),
        ]
        if not global_labels:
            transforms += [l2l.data.transforms.RemapLabels(meta), l2l.data.transforms.ConsecutiveLabels(meta)]
        self.taskset = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1)
        self.ways, self.shots, self.queries, self.global_labels = ways, shots, queries, global_labels
        self.augment = augment

    def draw(self, key: TaskKey) -> tuple[Tensor, Tensor, Tensor | None]:
        """The samples of the task of ``key``, not yet split: images ``(N, ...)``, labels ``(N,)`` in
        ``[0, ways)``, and (``global_labels``) the dataset label of each of those ``ways`` classes, else ``None``."""
        state = random.getstate()
        random.seed(key_seed(key))
        try:
            x, y = self.taskset[0]  # num_tasks=-1: a fresh description from the seeded transforms
        finally:
            random.setstate(state)
        y = torch.as_tensor(y)
        if self.augment is not None:  # drawn from the key too: the same task in every run
            x = self.augment(x, torch.Generator().manual_seed(key_seed((*key, _AUGMENT_STREAM))))
        if not self.global_labels:
            return x, y, None
        # Split on each class's rank among the task's classes; the dataset labels are put back after.
        classes, local = torch.unique(y, return_inverse=True)
        return x, local, classes

    def task(self, key: TaskKey) -> Task:
        """The task of ``key``: support ``(1, ways*shots, ...)``, query ``(1, ways*queries, ...)``."""
        return self.tasks([key])

    def tasks(self, keys: Sequence[TaskKey]) -> Task:
        """The meta-batch of ``keys``: support ``(B, ways*shots, ...)``, query ``(B, ways*queries, ...)``."""
        return split_drawn([self.draw(key) for key in keys], self.shots, self.queries, self.ways)


def split_drawn(drawn: Sequence[tuple[Tensor, Tensor, Tensor | None]], shots: int, queries: int, ways: int) -> Task:
    """One :func:`~lit_meta.tasks.split_support_query` for a meta-batch of drawn tasks (:meth:`_Episodes.draw`),
    their labels made the dataset's where a task carries its classes'."""
    xs, ys, classes = zip(*drawn)
    task = split_support_query(torch.stack(xs), torch.stack(ys), shots, queries, ways)
    if classes[0] is None:
        return task
    classes = torch.stack(classes)  # (B, ways)
    return Task(task.support_x, classes.gather(1, task.support_y), task.query_x, classes.gather(1, task.query_y))


class _GroupedEpisodes:
    """Tasks whose classes all come from one group (an alphabet, a domain): one :class:`_Episodes` per
    group over that group's samples. Task ``i`` of a fixed set (a key ``(seed, split, i)``) comes from
    group ``i mod G``, so every group gets its share; a training task from a group drawn by its key."""

    def __init__(
        self,
        dataset: Dataset,
        labels: Sequence[int],
        groups: dict[str, list[int]],
        fixed_set: bool,
        **options: object,
    ) -> None:
        members = labels_to_indices(labels)
        self.groups, self.fixed_set = list(groups), fixed_set
        self.episodes = []
        for classes in groups.values():
            indices = [i for label in classes for i in members[label]]
            self.episodes.append(_Episodes(Subset(dataset, indices), [labels[i] for i in indices], **options))

    def episodes_of(self, key: TaskKey) -> _Episodes:
        """The group's episodes that the task of ``key`` comes from."""
        index = key[-1] if self.fixed_set else key_seed((*key, _GROUP_STREAM))
        return self.episodes[index % len(self.episodes)]

    def task(self, key: TaskKey) -> Task:
        return self.tasks([key])

    def tasks(self, keys: Sequence[TaskKey]) -> Task:
        first = self.episodes[0]
        drawn = [self.episodes_of(key).draw(key) for key in keys]
        return split_drawn(drawn, first.shots, first.queries, first.ways)


class _MetaBatches(Dataset):
    """Builds the meta-batch of a tuple of task keys (the "index" the sampler yields), split into support
    and query sets at once."""

    def __init__(self, episodes: _Episodes | _GroupedEpisodes) -> None:
        self.episodes = episodes

    def __getitem__(self, keys: tuple[TaskKey, ...]) -> Task:
        return self.episodes.tasks(keys)


class EpisodeSampler(DistributedSampler):
    """Yields the task keys of each meta-batch of this rank.

    A ``DistributedSampler`` so that Lightning leaves it in place: it already splits tasks by rank.
    """

    def __init__(self, batches: Callable[[], list[tuple[TaskKey, ...]]], length: int) -> None:
        # DistributedSampler.__init__ would query torch.distributed; nothing of it is needed here.
        self._batches, self._length = batches, length

    def __iter__(self) -> Iterator[tuple[TaskKey, ...]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:  # the stream is keyed by batch count, not epoch
        pass


class EpisodicDataModule(ResumableEpisodes, LightningDataModule, ABC):
    """Meta-batches of N-way K-shot classification tasks; see the module docstring for sampling.

    A batch is a :class:`~lit_meta.tasks.Task` with support ``(B, ways*shots, C, H, W)`` and query
    ``(B, ways*queries, C, H, W)`` images and their labels in ``[0, ways)``.

    Args:
        ways: classes per training task.
        shots: support images per class in training.
        queries: query images per class in training.
        eval_ways: classes per validation/test task (default: ``ways``).
        eval_shots: support images per class in validation/test (default: ``shots``).
        eval_queries: query images per class in validation/test (default: ``queries``).
        meta_batch_size: tasks per batch (per process under DDP).
        train_batches_per_epoch: training meta-batches per epoch.
        val_tasks: size of the fixed validation task set.
        test_tasks: size of the fixed test task set.
        num_workers: DataLoader worker processes.
        seed: seed of the training task stream.
        eval_seed: seed of the validation and test task sets.
        global_labels: label the samples of training tasks by their class's index in the training
            split instead of ``0..ways-1`` (for :class:`~lit_meta.algorithms.SupervisedTransfer`,
            whose head covers every training class); evaluation tasks keep ``0..ways-1``.
        train_warp: random affine warps of every training image
            (:class:`~datamodules.augmentation.AffineWarp`), drawn from the task's key; ``None``:
            none. Evaluation images are never warped.
    """

    def __init__(
        self,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_ways: int | None = None,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 32,
        train_batches_per_epoch: int = 500,
        val_tasks: int = 200,
        test_tasks: int = 600,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 1234,
        global_labels: bool = False,
        train_warp: AffineWarp | None = None,
    ) -> None:
        super().__init__()
        for name in (
            "ways",
            "shots",
            "queries",
            "meta_batch_size",
            "train_batches_per_epoch",
            "val_tasks",
            "test_tasks",
        ):
            check_positive_int(name, locals()[name])
        for name in ("eval_ways", "eval_shots", "eval_queries"):
            if locals()[name] is not None:
                check_positive_int(name, locals()[name])
        check_positive_int("num_workers", num_workers, minimum=0)
        check_type("seed", seed, int)
        check_type("eval_seed", eval_seed, int)
        check_type("global_labels", global_labels, bool)
        if train_warp is not None:
            check_type("train_warp", train_warp, AffineWarp)
        self.train_warp = train_warp
        self.ways, self.shots, self.queries = ways, shots, queries
        self.eval_ways = ways if eval_ways is None else eval_ways
        self.eval_shots = shots if eval_shots is None else eval_shots
        self.eval_queries = queries if eval_queries is None else eval_queries
        self.meta_batch_size = meta_batch_size
        self.train_batches_per_epoch = train_batches_per_epoch
        self.num_tasks = {"val": val_tasks, "test": test_tasks}
        self.num_workers = num_workers
        self.seed, self.eval_seed, self.global_labels = seed, eval_seed, global_labels
        self._episodes: dict[str, _Episodes | _GroupedEpisodes] = {}
        self._splits: dict[str, tuple[Dataset, Sequence[int], Sequence[str]]] = {}
        self._train_digests: dict[bytes, str] | None = None

    # ---- what a subclass provides ----------------------------------------------------------------
    @abstractmethod
    def build_split(self, split: str) -> tuple[Dataset, Sequence[int], Sequence[str]]:
        """The labelled dataset of ``split`` (``"train"``, ``"val"`` or ``"test"``).

        Returns:
            ``(dataset, labels, class_names)``: ``dataset[i]`` is ``(image (C, H, W), label)``,
            ``labels[i]`` its label without loading it, ``class_names[label]`` a readable name
            (used in error messages).
        """

    def preprocessing(self) -> ImagePreprocessing | None:
        """How an image file becomes a model input, for ``lit-meta adapt``; ``None`` if not from files."""
        return None

    def class_groups(self, split: str) -> Sequence[str] | None:
        """The group of each class of ``split`` (indexed by label) when its tasks must stay within one
        group (Omniglot's ``eval_within_alphabet``); ``None``: tasks draw from every class."""
        return None

    def eval_tasks(self) -> dict[str, object]:
        """What the validation and test tasks are drawn from, recorded in ``meta_test.json``."""
        return {"within": None}

    # ---- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}[stage]
        for split in splits:
            if split not in self._episodes:
                self._episodes[split] = self._build_episodes(split)

    def _build_episodes(self, split: str) -> _Episodes | _GroupedEpisodes:
        dataset, labels, class_names = self.split_data(split)
        ways, shots, queries = self.task_shape(split)
        sizes = {class_names[label]: len(indices) for label, indices in labels_to_indices(labels).items()}
        check_split(split, sizes, ways, shots + queries)
        if split != "train":
            # One hash per image: a test on training images would report memory, not adaptation.
            digests = self.split_digests(dataset)
            train = self._training_digests() if digests is not None else None
            if train is not None:
                check_disjoint(split, digests, labels, class_names, train)
        train = split == "train"
        options = {"global_labels": self.global_labels and train, "augment": self.train_warp if train else None}
        class_groups = self.class_groups(split)
        if class_groups is not None:
            groups = eligible_groups(split, class_groups, ways)
            shape = {"ways": ways, "shots": shots, "queries": queries}
            return _GroupedEpisodes(dataset, labels, groups, fixed_set=not train, **shape, **options)
        return _Episodes(dataset, labels, ways, shots, queries, **options)

    def split_data(self, split: str) -> tuple[Dataset, Sequence[int], Sequence[str]]:
        """Split ``split``'s ``(dataset, labels, class names)``, built once by :meth:`build_split` and kept:
        what episodes are drawn from (a federated partition, ``datamodules.federated``, shares it out)."""
        if split not in self._splits:
            self._splits[split] = self.build_split(split)
        return self._splits[split]

    def split_digests(self, dataset: Dataset) -> list[bytes] | None:
        """Content digests of a split's images for the train/evaluation overlap guard; ``None`` skips it
        (for datasets decoded lazily, whose published class splits are disjoint by construction)."""
        return image_digests(dataset)

    def _training_digests(self) -> dict[bytes, str] | None:
        """``{digest: class name}`` of every training image, computed once (``None``: guard skipped)."""
        if self._train_digests is None:
            dataset, labels, class_names = self.split_data("train")
            digests = self.split_digests(dataset)
            if digests is None:
                return None
            self._train_digests = {d: class_names[label] for d, label in zip(digests, labels)}
        return self._train_digests

    def task_shape(self, split: str) -> tuple[int, int, int]:
        """``(ways, shots, queries)`` of the tasks of ``split``."""
        if split == "train":
            return self.ways, self.shots, self.queries
        return self.eval_ways, self.eval_shots, self.eval_queries

    def episodes(self, split: str) -> _Episodes | _GroupedEpisodes:
        if split not in self._episodes:
            self._episodes[split] = self._build_episodes(split)
        return self._episodes[split]

    def training_episodes(self) -> dict[str, int]:
        """The shape of the training episodes, which a resumed run must share with its checkpoint."""
        return {
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "meta_batch_size": self.meta_batch_size,
        }

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", EpisodeSampler(self._train_batches, self.train_batches_per_epoch))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ---- which tasks ------------------------------------------------------------------------------
    def _rank_and_world(self) -> tuple[int, int]:
        return rank_and_world(self.trainer)

    def _train_batches(self) -> list[tuple[TaskKey, ...]]:
        rank, _ = self._rank_and_world()
        start = batches_done(self.trainer)
        return [
            tuple((self.seed, rank, step, b) for b in range(self.meta_batch_size))
            for step in range(start, start + self.train_batches_per_epoch)
        ]

    def eval_task_keys(self, split: str) -> list[TaskKey]:
        """Keys of this rank's share of the fixed ``split`` tasks (all of them without DDP)."""
        return [key for batch in self._eval_batches(split) for key in batch]

    def _eval_batches(self, split: str) -> list[tuple[TaskKey, ...]]:
        keys = [(self.eval_seed, SPLIT_IDS[split], i) for i in range(self.num_tasks[split])]
        return rank_share_batches(keys, self.meta_batch_size, *self._rank_and_world())

    def _eval_loader(self, split: str) -> DataLoader:
        batches = self._eval_batches(split)
        return self._loader(split, EpisodeSampler(lambda: batches, len(batches)))

    def _loader(self, split: str, sampler: EpisodeSampler) -> DataLoader:
        return DataLoader(
            _MetaBatches(self.episodes(split)),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
