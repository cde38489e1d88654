"""The clients of a federation, cut from any episodic datamodule.

Training clients hold disjoint parts of the datamodule's training split; **unseen test clients**
hold parts of its test split (classes no training client has, as FedMeta evaluates: Chen et al.,
2018, arXiv:1802.07876). A client's tasks are drawn from its own part only, keyed by (client,
round), so a federated run repeats exactly.

Schemes (``scheme``):
    - ``"groups"``: one client per group of classes, the group being a class name's parent path.
      For Omniglot (``"<archive>/<alphabet>/<character>"``) that is one client per alphabet, the
      natural non-IID split; on ``split: minimal`` the five alphabets of
      ``images_background_small1`` train and the three of ``images_background_small2`` that small1
      lacks (Japanese (katakana), Sanskrit, Tagalog) are the unseen test clients. With
      ``splits_per_group: G`` each training group is cut further into G clients by sample order:
      for Omniglot, whose files are ordered by drawer, groups of 20 / G drawers.
    - ``"pooled"``: one training client holding the whole training split (the centralised run of
      the same learner, on the same unseen test clients as ``"groups"``: the upper bound).
    - ``"dirichlet"``: label skew (Hsu et al., 2019, arXiv:1909.06335): each class's samples are
      spread over ``train_clients`` (test split: ``test_clients``) clients in proportions drawn from
      Dirichlet(``alpha``); a client keeps the classes of which it holds at least ``shots +
      queries`` samples. Small ``alpha``: each client sees few classes; large: nearly IID.

Local test data (``local_test_fraction`` > 0, off by default): each training client holds out the last
``ceil(local_test_fraction * n_c)`` of its ``n_c`` samples of each class (in sample order: for
Omniglot, whose files are ordered by drawer, ``local_test_fraction: 0.25`` keeps drawers 1-15 of each
character for training and holds out drawers 16-20) and trains on the rest only. Its participant
evaluation (:meth:`ClientPartition.participant_tasks`, personalised FL's evaluation of the clients
that train) draws ``eval_ways``-way tasks from its classes: ``eval_shots`` support samples of each
class from its training part and ``min(eval_queries, fewest held-out samples of a class)`` query
samples of each (5 for Omniglot at 0.25) from its held-out ones, keyed by (eval seed, client, task).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.episodic import (
    SPLIT_IDS,
    EpisodicDataModule,
    TaskKey,
    batches_done,
    check_split,
    labels_to_indices,
    rank_share_batches,
)
from datamodules.synthetic import SyntheticDevices
from lit_meta.federated.data import FederatedData
from lit_meta.images import ImagePreprocessing
from lit_meta.seeding import key_seed
from lit_meta.tasks import Task
from lit_meta.validation import (
    check_one_of,
    check_positive_float,
    check_positive_int,
    check_type,
    check_unit_interval,
)

Role = Literal["train", "test"]
#: The split id in the keys of participant evaluation tasks, beside ``SPLIT_IDS``' 0, 1, 2.
PARTICIPANT_SPLIT_ID = 3


def class_groups(class_names: Sequence[str]) -> dict[str, list[int]]:
    """``{group: [class indices]}``, a class's group being its name up to the last ``/`` (Omniglot's
    ``"<archive>/<alphabet>"``; a rotated copy ``".../character01 (rotated 90)"`` stays in its alphabet)."""
    groups: dict[str, list[int]] = {}
    for label, name in enumerate(class_names):
        groups.setdefault(name.rsplit("/", 1)[0] if "/" in name else name, []).append(label)
    return groups


def dirichlet_split(labels: Sequence[int], clients: int, alpha: float, seed: int) -> list[list[int]]:
    """Sample indices of each of ``clients`` clients: every class's samples, in a seeded random order,
    cut in proportions drawn from Dirichlet(``alpha``) over the clients (Hsu et al., 2019)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for _, indices in sorted(labels_to_indices(labels).items()):
        order = rng.permutation(indices)
        cuts = np.floor(np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(order)).astype(int)
        for client, share in enumerate(np.split(order, cuts)):
            parts[client] += share.tolist()
    return [sorted(part) for part in parts]


class Relabelled(Dataset):
    """Samples ``indices`` of ``dataset``, their labels mapped through ``labels`` (``dataset[indices[i]]``'s
    image with label ``labels[i]``)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], labels: Sequence[int]) -> None:
        self.dataset, self.indices, self.labels = dataset, list(indices), list(labels)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.dataset[self.indices[index]][0], self.labels[index]


@dataclass(frozen=True)
class ClientShare:
    """What one client holds: its ``name``, ``role`` and the samples (indices into its split) it owns."""

    name: str
    role: Role
    indices: list[int]


def _relabel(
    split: tuple[Dataset, Sequence[int], Sequence[str]],
    indices: Sequence[int],
    min_per_class: int,
    keep_labels: bool = False,
) -> tuple[Dataset, list[int], list[str]]:
    """The client's labelled dataset: its classes holding >= ``min_per_class`` of ``indices``,
    relabelled 0..n-1 (``keep_labels``: with their labels in the whole split, for global labels)."""
    dataset, labels, class_names = split
    by_class = labels_to_indices([labels[i] for i in indices])
    kept = [label for label, members in sorted(by_class.items()) if len(members) >= min_per_class]
    new = {label: label if keep_labels else n for n, label in enumerate(kept)}
    chosen = [i for i in indices if labels[i] in new]
    relabelled = [new[labels[i]] for i in chosen]
    names = list(class_names) if keep_labels else [class_names[label] for label in kept]
    return Relabelled(dataset, chosen, relabelled), relabelled, names


class LocalTestEpisodes:
    """A training client's participant tasks: ``ways`` of its classes, and of each ``shots`` support
    samples from its local training part and ``queries`` query samples from its local test part, all
    drawn without replacement by a generator seeded by the task's key; labels ``0 .. ways - 1`` in
    the order the classes were drawn.

    Args:
        dataset: the split's dataset (``dataset[i]`` is ``(image, label)``).
        train: each class's training samples (indices into ``dataset``).
        test: each class's local test samples.
        ways: classes per task (only classes with >= ``shots`` training and >= ``queries`` local test
            samples are drawn).
        shots: support samples per class.
        queries: query samples per class.
    """

    def __init__(
        self,
        dataset: Dataset,
        train: dict[int, list[int]],
        test: dict[int, list[int]],
        ways: int,
        shots: int,
        queries: int,
    ) -> None:
        self.dataset, self.ways, self.shots, self.queries = dataset, ways, shots, queries
        self.classes = [c for c in sorted(train) if len(train[c]) >= shots and len(test.get(c, ())) >= queries]
        self.train, self.test = {c: train[c] for c in self.classes}, {c: test[c] for c in self.classes}

    def tasks(self, keys: Sequence[tuple[int, ...]]) -> Task:
        """The meta-batch of ``keys``: support ``(B, ways*shots, ...)``, query ``(B, ways*queries, ...)``."""
        parts: list[list[Tensor]] = [[], [], [], []]  # support x, support y, query x, query y
        for key in keys:
            rng = np.random.default_rng(key_seed(key))
            support, query = [], []
            for c in rng.choice(len(self.classes), self.ways, replace=False):
                chosen = self.classes[c]
                support.append(rng.choice(self.train[chosen], self.shots, replace=False))
                query.append(rng.choice(self.test[chosen], self.queries, replace=False))
            for x, y, drawn, count in ((0, 1, support, self.shots), (2, 3, query, self.queries)):
                parts[x].append(torch.stack([self.dataset[int(i)][0] for i in np.concatenate(drawn)]))
                parts[y].append(torch.arange(self.ways).repeat_interleave(count))
        return Task(*(torch.stack(part) for part in parts))


class ClientEpisodes(EpisodicDataModule):
    """One client's N-way K-shot tasks, drawn only from the samples it holds.

    Built by :class:`ClientPartition` (not from a config): the episode shape, meta-batch size and
    seeds are the partitioned datamodule's. Training tasks are keyed by (seed, client, round, rank,
    step, task) and evaluation tasks by (eval seed, split, client, task): another client or round
    draws other training tasks; the evaluation tasks of a client are the same every round. With
    ``participant`` (a training client's participant evaluation), its test tasks are those episodes',
    keyed by (eval seed, ``PARTICIPANT_SPLIT_ID``, client, task).

    Attributes:
        num_examples: training samples the client holds (FedAvg weights its update by it).
    """

    def __init__(
        self,
        base: EpisodicDataModule,
        client: int,
        server_round: int,
        share: ClientShare,
        split: tuple[Dataset, list[int], list[str]],
        participant: LocalTestEpisodes | None = None,
    ) -> None:
        super().__init__(
            ways=base.ways,
            shots=base.shots,
            queries=base.queries,
            eval_ways=base.eval_ways,
            eval_shots=base.eval_shots,
            eval_queries=base.eval_queries,
            meta_batch_size=base.meta_batch_size,
            train_batches_per_epoch=base.train_batches_per_epoch,
            val_tasks=base.num_tasks["val"],
            test_tasks=base.num_tasks["test"],
            num_workers=base.num_workers,
            seed=base.seed,
            eval_seed=base.eval_seed,
            global_labels=base.global_labels,
        )
        self.base, self.client, self.server_round, self.share = base, client, server_round, share
        self.participant = participant
        self._own = {share.role: split}
        self.num_examples = len(split[1]) if share.role == "train" else 0

    def build_split(self, split: str) -> tuple[Dataset, list[int], list[str]]:
        role = "train" if split == "train" else "test"
        if role not in self._own:
            raise ValueError(
                f"Expected client {self.client} ({self.share.name!r}) to hold {role} data for split {split!r}, "
                f"but it is a {self.share.role} client."
            )
        return self._own[role]

    def setup(self, stage: str) -> None:
        # A client trains without validating: the federation evaluates on its test clients.
        if stage == "fit":
            self.episodes("train")
        else:
            super().setup(stage)

    def split_digests(self, dataset: Dataset) -> None:
        return None  # the partitioned datamodule's own splits passed its overlap guard

    def _build_episodes(self, split: str) -> object:
        if self.participant is not None and split != "train":
            return self.participant
        return super()._build_episodes(split)

    def preprocessing(self) -> ImagePreprocessing | None:
        return self.base.preprocessing()

    def _train_batches(self) -> list[tuple[TaskKey, ...]]:
        rank, _ = self._rank_and_world()
        start = batches_done(self.trainer)
        return [
            tuple((self.seed, self.client, self.server_round, rank, step, b) for b in range(self.meta_batch_size))
            for step in range(start, start + self.train_batches_per_epoch)
        ]

    def _eval_batches(self, split: str) -> list[tuple[TaskKey, ...]]:
        kind = PARTICIPANT_SPLIT_ID if self.participant is not None else SPLIT_IDS[split]
        keys = [(self.eval_seed, kind, self.client, i) for i in range(self.num_tasks[split])]
        return rank_share_batches(keys, self.meta_batch_size, *self._rank_and_world())


class ClientPartition(FederatedData):
    """The clients of a federation cut from ``data``'s training and test splits (see the module docstring).

    Partition ids ``0 .. num_train_clients - 1`` are training clients, the next ``num_test_clients``
    the unseen test clients. ``partition(partition_id, server_round)`` is that client's
    :class:`ClientEpisodes` for the round (what :class:`~lit_meta.federated.MetaClient` asks for).

    Args:
        data: the episodic datamodule to partition (its episode shape applies to every client).
        scheme: ``"groups"``, ``"pooled"`` or ``"dirichlet"``.
        splits_per_group: ``"groups"``: training clients per group, cut by sample order.
        train_clients: ``"dirichlet"``: number of training clients.
        test_clients: ``"dirichlet"``: number of test clients.
        alpha: ``"dirichlet"``: concentration; > 0.
        seed: seed of the Dirichlet draws.
        local_test_fraction: the share of each class of a training client held out as its local test
            data (its last samples, at least one), in [0, 1); 0: none, and no participant evaluation.
    """

    def __init__(
        self,
        data: EpisodicDataModule,
        scheme: Literal["groups", "pooled", "dirichlet"] = "groups",
        splits_per_group: int = 1,
        train_clients: int = 10,
        test_clients: int = 3,
        alpha: float = 0.5,
        seed: int = 0,
        local_test_fraction: float = 0.0,
    ) -> None:
        check_type("data", data, EpisodicDataModule)
        check_one_of("scheme", scheme, ("groups", "pooled", "dirichlet"))
        for name, value in (
            ("splits_per_group", splits_per_group),
            ("train_clients", train_clients),
            ("test_clients", test_clients),
        ):
            check_positive_int(name, value)
        check_positive_float("alpha", alpha)
        check_type("seed", seed, int)
        check_unit_interval("local_test_fraction", local_test_fraction)
        if local_test_fraction == 1:
            raise ValueError("Expected `local_test_fraction` < 1 (a training client trains on the rest), but got 1.")
        self.data, self.scheme, self.splits_per_group = data, scheme, splits_per_group
        self.train_clients, self.test_clients, self.alpha, self.seed = train_clients, test_clients, alpha, seed
        self.local_test_fraction = local_test_fraction
        self._shares: list[ClientShare] | None = None
        self._splits: dict[int, tuple[Dataset, list[int], list[str]]] = {}
        self._participants: dict[int, LocalTestEpisodes] = {}

    # ---- who the clients are ----------------------------------------------------------------------
    def shares(self) -> list[ClientShare]:
        """Every client's share, training clients first (loads the data once)."""
        if self._shares is None:
            self.data.prepare_data()
            self.data.episodes("test")  # the datamodule's own checks: task shape, train/test overlap
            train = self._cut("train", self.train_clients, self.splits_per_group)
            test = self._cut("test", self.test_clients, 1)
            self._shares = train + test
            for partition_id in range(len(self._shares)):
                self._client_split(partition_id)  # every client can draw its tasks, checked before round 1
                if self.local_test_fraction and self._shares[partition_id].role == "train":
                    self._participant_episodes(partition_id)  # and its participant tasks
            for role, shares in (("train", train), ("test", test)):
                listed = ", ".join(f"{s.name} ({len(s.indices)})" for s in shares)
                rank_zero_info(f"Federated {role} clients ({len(shares)}, samples): {listed}.")
        return self._shares

    def _cut(self, split: str, clients: int, splits_per_group: int) -> list[ClientShare]:
        role: Role = "train" if split == "train" else "test"
        _, labels, class_names = self.data.split_data(split)
        if self.scheme == "dirichlet":
            seed = self.seed + SPLIT_IDS[split]
            return [
                ClientShare(f"{role} client {c}", role, part)
                for c, part in enumerate(dirichlet_split(labels, clients, self.alpha, seed))
            ]
        if self.scheme == "pooled" and role == "train":
            return [ClientShare("pooled training data", role, list(range(len(labels))))]
        by_class = labels_to_indices(labels)
        shares = []
        for group, members in class_groups(class_names).items():
            per_class = [np.array_split(by_class[label], splits_per_group) for label in members]
            for g in range(splits_per_group):
                name = group if splits_per_group == 1 else f"{group} [{g + 1}/{splits_per_group}]"
                shares.append(ClientShare(name, role, sorted(int(i) for chunks in per_class for i in chunks[g])))
        return shares

    def _local_parts(self, partition_id: int) -> tuple[list[int], dict[int, list[int]]]:
        """A training client's samples it trains on, and each class's samples it holds out (its last
        ``ceil(local_test_fraction * n_c)``; none without ``local_test_fraction``)."""
        share = self._shares[partition_id]
        if not self.local_test_fraction or share.role != "train":
            return share.indices, {}
        labels = self.data.split_data("train")[1]
        train, test = [], {}
        for indices in _grouped(share.indices, labels):  # a class's samples in sample order (Omniglot's: by drawer)
            held_out = max(1, math.ceil(self.local_test_fraction * len(indices) - 1e-9))
            train += indices[: len(indices) - held_out]
            test[labels[indices[0]]] = indices[len(indices) - held_out :]
        return sorted(train), test

    def _participant_episodes(self, partition_id: int) -> LocalTestEpisodes:
        if partition_id not in self._participants:
            share = self._shares[partition_id]
            train, test = self._local_parts(partition_id)
            dataset, labels, _ = self.data.split_data("train")
            by_class = {labels[members[0]]: members for members in _grouped(train, labels)}
            ways, shots, queries = self.data.task_shape("test")
            queries = min([queries, *(len(held) for held in test.values())])
            episodes = LocalTestEpisodes(dataset, by_class, test, ways, shots, queries)
            if len(episodes.classes) < ways:
                raise ValueError(
                    f"Expected client {partition_id} ({share.name}) to hold >= {ways} classes (`eval_ways`) with >= "
                    f"{shots} training and {queries} local test samples each for its participant tasks, but got "
                    f"{len(episodes.classes)}."
                )
            self._participants[partition_id] = episodes
        return self._participants[partition_id]

    def _client_split(self, partition_id: int) -> tuple[Dataset, list[int], list[str]]:
        if partition_id not in self._splits:
            share = self._shares[partition_id]
            split = "train" if share.role == "train" else "test"
            ways, shots, queries = self.data.task_shape(split)
            keep = self.data.global_labels and split == "train"  # a supervised head over every training class
            indices = self._local_parts(partition_id)[0]
            dataset, labels, class_names = _relabel(self.data.split_data(split), indices, shots + queries, keep)
            sizes = {class_names[label]: len(members) for label, members in labels_to_indices(labels).items()}
            check_split(f"{split} of client {partition_id} ({share.name})", sizes, ways, shots + queries)
            self._splits[partition_id] = dataset, labels, class_names
        return self._splits[partition_id]

    @property
    def num_clients(self) -> int:
        return len(self.shares())

    @property
    def num_train_clients(self) -> int:
        return sum(share.role == "train" for share in self.shares())

    @property
    def num_test_clients(self) -> int:
        return sum(share.role == "test" for share in self.shares())

    def role(self, partition_id: int) -> Role:
        """``"train"`` or ``"test"``: what the client of ``partition_id`` does."""
        return self._share(partition_id).role

    def _share(self, partition_id: int) -> ClientShare:
        shares = self.shares()
        if not isinstance(partition_id, int) or not 0 <= partition_id < len(shares):
            raise ValueError(
                f"Expected a `partition-id` in [0, {len(shares)}) ({self.num_train_clients} training and "
                f"{self.num_test_clients} test clients), but got {partition_id!r}."
            )
        return shares[partition_id]

    def __call__(self, partition_id: int, server_round: int) -> ClientEpisodes:
        share = self._share(partition_id)
        return ClientEpisodes(self.data, partition_id, server_round, share, self._client_split(partition_id))

    def participant_tasks(self, partition_id: int) -> ClientEpisodes:
        """Training client ``partition_id``'s participant evaluation (see the module docstring): its
        :class:`ClientEpisodes` whose ``test_tasks`` test tasks are :class:`LocalTestEpisodes`' on its
        held-out samples, the same every round.

        Raises:
            ValueError: ``local_test_fraction`` is 0, or ``partition_id`` is no training client.
        """
        if not self.local_test_fraction:
            raise ValueError(
                "Expected `local_test_fraction` > 0 (training clients holding local test data) to evaluate "
                "participants, but got 0."
            )
        share = self._share(partition_id)
        if share.role != "train":
            raise ValueError(
                f"Expected a training client for a participant evaluation, but got client {partition_id} "
                f"({share.name}), an unseen test client."
            )
        split = self._client_split(partition_id)
        return ClientEpisodes(self.data, partition_id, 0, share, split, self._participant_episodes(partition_id))

    def preprocessing(self) -> ImagePreprocessing | None:
        return self.data.preprocessing()


def _grouped(indices: Sequence[int], labels: Sequence[int]) -> list[list[int]]:
    """``indices`` grouped by their labels, in label order."""
    return [
        [indices[m] for m in members] for _, members in sorted(labels_to_indices([labels[i] for i in indices]).items())
    ]


class SyntheticFederation(SyntheticDevices, FederatedData):
    """:class:`SyntheticDevices` as the clients of ``lit-meta federate`` (a
    :class:`~lit_meta.federated.data.FederatedData`); its arguments are those of :class:`SyntheticDevices`."""
