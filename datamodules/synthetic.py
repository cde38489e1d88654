"""Synthetic(alpha, beta): the many-device federated benchmark of FedProx, generated on demand.

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous Networks"
(FedProx), MLSys 2020, arXiv:1812.06127, section 5.1, after Shamir, Srebro and Zhang (2014). Device
``k`` holds a softmax-regression problem of its own; ``alpha`` controls how much the devices' models
differ, ``beta`` how much their inputs do:

- ``u_k ~ N(0, alpha^2)`` and ``B_k ~ N(0, beta^2)`` (standard deviations ``alpha`` and ``beta``, as
  the reference script's ``np.random.normal(0, alpha, NUM_USER)``);
- the model ``W_k`` (``dim x classes``) and ``b_k`` (``classes``): entries ``~ N(u_k, 1)``;
- the input mean ``v_k`` (``dim``): entries ``~ N(B_k, 1)``;
- inputs ``x ~ N(v_k, Sigma)``, ``Sigma`` diagonal with ``Sigma_jj = j^(-1.2)``, ``j = 1..dim``;
- labels ``y = argmax(softmax(x W_k + b_k))``;
- ``n_k = floor(lognormal(4, 2)) + 50`` samples (a power law: a few devices hold most samples).

IID variant (``iid=True``, the reference's iid branch): one global ``W``, ``b`` with entries
``~ N(0, 1)`` for every device, and ``v_k = B_k * ones`` (``Synthetic-IID`` is ``iid=True`` with
``beta=0``). The defaults ``dim=60``, ``classes=10`` are the paper's.

Device ``k``'s data is a pure function of ``(seed, k)`` (its own ``numpy`` stream), so a device is
built when it is first used, whatever the number of devices: this draws from the **same
distribution** as the reference script (``FedProx/data/synthetic_*/generate_synthetic.py``), **not
the same numbers** (that script draws every device from one global stream, in one pass).

:class:`SyntheticFederation` is the federation of ``lit-meta federate`` on it (FedMeta, Chen et al.,
2018, arXiv:1802.07876: a device is a task; its support set is a few of its own samples, its query
set others; held-out devices only adapt and report).

A training device's samples are split once, by position, into a local training part and a local test
part (:func:`local_test_size`): it trains on the first only; its participant evaluation (personalised
FL's: Per-FedAvg, Ditto, FedRep and pFedMe report each participating client's model on its own
held-out data) adapts on support sets from its training part and scores query sets from its local
test part. A held-out device has no such split: its tasks draw from all its samples.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.episodic import EpisodeSampler, batches_done, rank_and_world, rank_share_batches
from lit_meta.algorithms.metric import MetricLearner
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_positive_int, check_type, check_unit_interval

#: The sample counts of the reference: ``floor(lognormal(mean, sigma)) + MIN_SAMPLES``.
SIZE_MEAN, SIZE_SIGMA, MIN_SAMPLES = 4.0, 2.0, 50
#: The exponent of the input covariance's diagonal, ``Sigma_jj = j ** -COVARIANCE_DECAY``.
COVARIANCE_DECAY = 1.2
# The first entry after the seed in the key of every stream, one per kind, so no two kinds share a
# stream (never 0: numpy's SeedSequence pads keys with zeros, so (s, 0) and (s,) would be one stream).
_DEVICE, _GLOBAL_MODEL, _TRAIN_TASKS, _TEST_TASKS, _PARTICIPANT_TASKS = 1, 2, 3, 4, 5
_TRAIN_BATCHES_PER_EPOCH = 1000  # a client's local steps are its Trainer's max_steps; this only sizes an epoch

Role = Literal["train", "test"]


def _stream(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


class DeviceModel(NamedTuple):
    """What device ``k`` of Synthetic(alpha, beta) draws before its samples (see the module docstring).

    Attributes:
        size: ``n_k``, its number of samples.
        u: ``u_k``, the mean of its model's entries (drawn in the IID variant too, where it is unused).
        input_shift: ``B_k``, the mean of its input mean's entries.
        input_mean: ``v_k``, ``(dim,)``.
        weight: ``W_k``, ``(dim, classes)`` (the global ``W`` in the IID variant).
        bias: ``b_k``, ``(classes,)`` (the global ``b`` in the IID variant).
    """

    size: int
    u: float
    input_shift: float
    input_mean: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def _check_generator(alpha: float, beta: float, iid: bool, seed: int, dim: int, classes: int) -> None:
    check_positive_float("alpha", alpha, allow_zero=True)
    check_positive_float("beta", beta, allow_zero=True)
    check_type("iid", iid, bool)
    check_positive_int("seed", seed, minimum=0)
    check_positive_int("dim", dim)
    check_positive_int("classes", classes, minimum=2)


def device_size(k: int, seed: int = 0) -> int:
    """``n_k = floor(lognormal(4, 2)) + 50``, the number of samples of device ``k`` (Li et al., 2020),
    without drawing anything else: the first draw of the device's stream."""
    check_positive_int("k", k, minimum=0)
    check_positive_int("seed", seed, minimum=0)
    return int(_stream(seed, _DEVICE, k).lognormal(SIZE_MEAN, SIZE_SIGMA)) + MIN_SAMPLES


def device_sizes(devices: Sequence[int] | int, seed: int = 0) -> np.ndarray:
    """``(len(devices),)`` the sample counts of ``devices`` (or of devices ``0 .. devices - 1``), as
    :func:`device_size` gives each (about 15 microseconds a device)."""
    ids = range(devices) if isinstance(devices, int) else devices
    return np.array([device_size(k, seed) for k in ids], dtype=np.int64)


def _device(
    k: int, alpha: float, beta: float, iid: bool, seed: int, dim: int, classes: int
) -> tuple[DeviceModel, np.random.Generator]:
    """Device ``k``'s model and its stream, positioned where its samples are drawn."""
    rng = _stream(seed, _DEVICE, k)
    size = int(rng.lognormal(SIZE_MEAN, SIZE_SIGMA)) + MIN_SAMPLES
    u = float(rng.normal(0.0, alpha))
    shift = float(rng.normal(0.0, beta))
    if iid:
        model = _stream(seed, _GLOBAL_MODEL)
        weight, bias = model.normal(0.0, 1.0, (dim, classes)), model.normal(0.0, 1.0, classes)
        mean = np.full(dim, shift)
    else:
        mean = rng.normal(shift, 1.0, dim)
        weight, bias = rng.normal(u, 1.0, (dim, classes)), rng.normal(u, 1.0, classes)
    return DeviceModel(size, u, shift, mean, weight, bias), rng


def device_model(
    k: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    iid: bool = False,
    seed: int = 0,
    dim: int = 60,
    classes: int = 10,
) -> DeviceModel:
    """Device ``k``'s sample count, input mean and linear model, as :func:`synthetic_device` draws them.

    Args: those of :func:`synthetic_device`.

    Returns:
        A :class:`DeviceModel`.
    """
    check_positive_int("k", k, minimum=0)
    _check_generator(alpha, beta, iid, seed, dim, classes)
    return _device(k, alpha, beta, iid, seed, dim, classes)[0]


def synthetic_device(
    k: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    iid: bool = False,
    seed: int = 0,
    dim: int = 60,
    classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of device ``k`` of Synthetic(alpha, beta) (Li et al., 2020, section 5.1).

    Draws, from the stream of ``(seed, k)`` alone and in this order: ``n_k = floor(lognormal(4, 2)) +
    50``; ``u_k ~ N(0, alpha^2)``; ``B_k ~ N(0, beta^2)``; then ``v_k ~ N(B_k, I)`` (``dim``),
    ``W_k ~ N(u_k, 1)`` (``dim x classes``) and ``b_k ~ N(u_k, 1)`` (``classes``), or with ``iid``
    ``v_k = B_k * ones`` and the global ``W``, ``b ~ N(0, 1)`` of ``seed``'s own stream; last the
    inputs ``x_i = v_k + Sigma^(1/2) z_i``, ``z_i ~ N(0, I)``, ``Sigma_jj = j^(-1.2)``, and the labels
    ``y_i = argmax(x_i W_k + b_k)`` (the argmax of the softmax). The same distribution as the
    reference script, not the same numbers: it draws all devices from one global stream.

    Args:
        k: the device's index (>= 0).
        alpha: standard deviation of ``u_k`` (how much the devices' models differ); >= 0.
        beta: standard deviation of ``B_k`` (how much their inputs differ); >= 0.
        iid: the reference's IID variant: one global model, ``v_k = B_k * ones``.
        seed: the federation's seed (>= 0).
        dim: input dimension (60 in the paper).
        classes: number of classes (10 in the paper).

    Returns:
        ``x`` float32 ``(n_k, dim)`` and ``y`` int64 ``(n_k,)`` in ``[0, classes)`` (a device may
        lack some classes).
    """
    check_positive_int("k", k, minimum=0)
    _check_generator(alpha, beta, iid, seed, dim, classes)
    model, rng = _device(k, alpha, beta, iid, seed, dim, classes)
    scale = np.arange(1, dim + 1, dtype=np.float64) ** (-COVARIANCE_DECAY / 2)
    x = model.input_mean + rng.standard_normal((model.size, dim)) * scale
    y = np.argmax(x @ model.weight + model.bias, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def local_test_size(size: int, eval_queries: int, local_test_fraction: float) -> int:
    """How many of a training device's ``size`` samples are its local test part (its last ones, never
    trained on): ``max(eval_queries, ceil(local_test_fraction * size))``, so that a participant task's
    ``eval_queries`` query samples always fit."""
    return max(eval_queries, math.ceil(local_test_fraction * size - 1e-9))  # 1e-9: 0.2 * 50 is 10, not 11


class _DeviceTasks(Dataset):
    """The meta-batch of a tuple of task keys: each task ``shots`` support and ``queries`` query samples,
    disjoint, drawn without replacement by a stream seeded by its key: both from the device's first
    ``pool`` samples, or with ``queries_from`` the support from the first ``queries_from`` samples
    and the queries from the rest."""

    def __init__(
        self, x: Tensor, y: Tensor, shots: int, queries: int, pool: int, queries_from: int | None = None
    ) -> None:
        self.x, self.y, self.shots, self.queries = x, y, shots, queries
        self.pool, self.queries_from = pool, queries_from

    def _draw(self, key: tuple[int, ...]) -> np.ndarray:
        stream = _stream(*key)
        if self.queries_from is None:
            return stream.choice(self.pool, self.shots + self.queries, replace=False)
        support = stream.choice(self.queries_from, self.shots, replace=False)
        query = self.queries_from + stream.choice(len(self.y) - self.queries_from, self.queries, replace=False)
        return np.concatenate([support, query])

    def __getitem__(self, keys: tuple[tuple[int, ...], ...]) -> Task:
        chosen = torch.stack([torch.from_numpy(self._draw(key)) for key in keys])
        support, query = chosen[:, : self.shots], chosen[:, self.shots :]
        return Task(self.x[support], self.y[support], self.x[query], self.y[query])


class SyntheticDeviceTasks(LightningDataModule):
    """One device's tasks for one round (built by :class:`SyntheticDevices`, not from a config).

    A batch is a :class:`~lit_meta.tasks.Task` of ``B = meta_batch_size`` tasks: support ``(B, shots,
    dim)`` and query ``(B, queries, dim)`` inputs, labels ``(B, shots)`` and ``(B, queries)`` in
    ``[0, classes)`` (the device's own labels, not renumbered: a task may lack classes). Training
    tasks (a training device's, in ``fit``) are keyed by (seed, device, round, rank, step, task) and
    drawn from its local training part; the ``test_tasks`` evaluation tasks of a device by (eval seed,
    device, task), the same every round: from all its samples, or (``participant``, a training
    device's participant evaluation) the support sets from its local training part and the query sets
    from its local test part.

    Attributes:
        num_examples: the samples of the device's local training part if it trains (FedAvg weights its
            update by it), else 0.
        ways: ``classes``, checked by a learner against its head's outputs (as ``eval_ways``).
    """

    def __init__(self, federation: SyntheticDevices, device: int, server_round: int, participant: bool = False) -> None:
        super().__init__()
        self.federation, self.device, self.server_round = federation, device, server_round
        self.role, self.participant = federation.role(device), participant
        self.ways = self.eval_ways = federation.classes
        self.num_examples = federation.local_split(device)[0] if self.role == "train" else 0

    def setup(self, stage: str) -> None:
        learner = self.trainer.lightning_module if self.trainer is not None else None
        if isinstance(learner, MetricLearner):
            raise ValueError(
                "Expected a learner that classifies through its head over all `classes` (MAML, ANIL, Meta-SGD, "
                f"Reptile) for Synthetic tasks, whose support sets may lack classes, but got {type(learner).__name__} "
                "(a metric learner numbers the classes by its support labels)."
            )
        if stage == "fit" and self.role != "train":
            raise ValueError(
                f"Expected a training device to fit, but got device {self.device}, a held-out test device "
                "(it only adapts and reports)."
            )
        if stage == "fit" and self.participant:
            raise ValueError(
                f"Expected a round's datamodule to fit, but got device {self.device}'s participant evaluation tasks."
            )

    def train_dataloader(self) -> DataLoader:
        fed = self.federation
        train_part = fed.local_split(self.device)[0]

        def batches() -> list[tuple[tuple[int, ...], ...]]:  # read when the epoch starts: rank, batches done
            rank, start = rank_and_world(self.trainer)[0], batches_done(self.trainer)
            return [
                tuple(
                    (fed.seed, _TRAIN_TASKS, self.device, self.server_round, rank, step, b)
                    for b in range(fed.meta_batch_size)
                )
                for step in range(start, start + _TRAIN_BATCHES_PER_EPOCH)
            ]

        sampler = EpisodeSampler(batches, _TRAIN_BATCHES_PER_EPOCH)
        return self._loader(fed.shots, fed.queries, sampler, pool=train_part)

    def test_dataloader(self) -> DataLoader:
        fed = self.federation
        kind = _PARTICIPANT_TASKS if self.participant else _TEST_TASKS
        keys = [(fed.eval_seed, kind, self.device, i) for i in range(fed.test_tasks)]
        batches = rank_share_batches(keys, fed.meta_batch_size, *rank_and_world(self.trainer))
        sampler = EpisodeSampler(lambda: batches, len(batches))
        queries_from = fed.local_split(self.device)[0] if self.participant else None
        return self._loader(fed.eval_shots, fed.eval_queries, sampler, queries_from=queries_from)

    def val_dataloader(self) -> DataLoader:
        """The test tasks (a federated client never validates: its ``Trainer`` runs no validation)."""
        return self.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def _loader(
        self,
        shots: int,
        queries: int,
        sampler: EpisodeSampler,
        pool: int | None = None,
        queries_from: int | None = None,
    ) -> DataLoader:
        x, y = self.federation.device_data(self.device)
        tasks = _DeviceTasks(x, y, shots, queries, len(y) if pool is None else pool, queries_from)
        return DataLoader(tasks, sampler=sampler, batch_size=None)


class SyntheticDevices:
    """Synthetic(alpha, beta) (Li et al., 2020) as federated meta-learning clients, one per device.

    The clients without Flower (``lit-meta federate`` takes :class:`SyntheticFederation`, this class as a
    :class:`~lit_meta.federated.data.FederatedData`).

    Devices ``0 .. num_train - 1`` train; the last ``round(test_fraction * num_devices)`` are held out
    (FedMeta's unseen clients: they never train, they adapt the global meta-learner to their own
    tasks and report). ``federation(k, server_round)`` is device ``k``'s
    :class:`SyntheticDeviceTasks` for the round: a device's samples are generated when it is first
    used (:func:`synthetic_device`), never for all devices, and the last ``cache_devices`` used are
    kept. ``num_clients`` and ``role`` generate nothing.

    A training device of ``n_k`` samples holds out its last ``max(eval_queries, ceil(local_test_fraction
    * n_k))`` as its local test part (:meth:`local_split`): its training tasks draw from the others
    only, and :meth:`participant_tasks` (its participant evaluation, the same every round) takes each
    task's ``eval_shots`` support samples from its training part and ``eval_queries`` query samples
    from its local test part, keyed by (eval seed, device, task).

    Only learners that classify through a head over all ``classes`` fit (MAML, FOMAML, ANIL,
    Meta-SGD, Reptile with ``lit_meta.models.MLP(dim, hidden, classes)``): a device may lack classes
    and a task's support set others, so metric learners (ProtoNets, Matching Networks, supervised
    transfer), which number the classes by the support labels, are refused when a client starts.

    Args:
        num_devices: devices (clients).
        test_fraction: share of the devices held out for testing, in [0, 1); at least one trains.
        local_test_fraction: the share of a training device's samples held out as its local test part
            (at least ``eval_queries`` of them), in [0, 1). The training part of the smallest device
            (50 samples) must still hold ``shots + queries`` (and ``eval_shots``) samples.
        alpha: standard deviation of the devices' model means ``u_k``; >= 0.
        beta: standard deviation of the devices' input shifts ``B_k``; >= 0.
        iid: the IID variant (one global model).
        dim: input dimension.
        classes: number of classes.
        shots: support samples per training task (of the task, not per class).
        queries: query samples per training task.
        eval_shots: support samples per test task (default: ``shots``).
        eval_queries: query samples per test task (default: ``queries``).
        meta_batch_size: tasks per meta-batch (a local meta-step).
        test_tasks: evaluation tasks per test device.
        seed: seed of the devices' data and of the training tasks (>= 0).
        eval_seed: seed of the test tasks (>= 0).
        cache_devices: devices whose samples are kept in memory (least recently used dropped).

    Every device holds at least 50 samples, so ``eval_shots + eval_queries`` may be up to 50, and
    ``shots + queries`` up to 50 less the smallest local test part (with the defaults: 50 - 20 = 30).
    """

    def __init__(
        self,
        num_devices: int = 1000,
        test_fraction: float = 0.2,
        local_test_fraction: float = 0.2,
        alpha: float = 1.0,
        beta: float = 1.0,
        iid: bool = False,
        dim: int = 60,
        classes: int = 10,
        shots: int = 10,
        queries: int = 20,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 4,
        test_tasks: int = 20,
        seed: int = 0,
        eval_seed: int = 1234,
        cache_devices: int = 64,
    ) -> None:
        check_positive_int("num_devices", num_devices)
        check_unit_interval("test_fraction", test_fraction)
        check_unit_interval("local_test_fraction", local_test_fraction)
        if local_test_fraction == 1:
            raise ValueError("Expected `local_test_fraction` < 1 (a training device trains on the rest), but got 1.")
        _check_generator(alpha, beta, iid, seed, dim, classes)
        eval_shots = shots if eval_shots is None else eval_shots
        eval_queries = queries if eval_queries is None else eval_queries
        for name, value in (
            ("shots", shots),
            ("queries", queries),
            ("eval_shots", eval_shots),
            ("eval_queries", eval_queries),
            ("meta_batch_size", meta_batch_size),
            ("test_tasks", test_tasks),
        ):
            check_positive_int(name, value)
        check_positive_int("eval_seed", eval_seed, minimum=0)
        check_positive_int("cache_devices", cache_devices, minimum=0)
        for what, total in (
            ("`shots` + `queries`", shots + queries),
            ("`eval_shots` + `eval_queries`", eval_shots + eval_queries),
        ):
            if total > MIN_SAMPLES:
                raise ValueError(
                    f"Expected {what} <= {MIN_SAMPLES} (the fewest samples a device holds), but got {total}."
                )
        held_out = local_test_size(MIN_SAMPLES, eval_queries, local_test_fraction)
        train_part = MIN_SAMPLES - held_out  # the smallest training part: it grows with a device's samples
        for what, total in (("`shots` + `queries`", shots + queries), ("`eval_shots`", eval_shots)):
            if total > train_part:
                raise ValueError(
                    f"Expected {what} <= {train_part}, the local training part of the smallest device ({MIN_SAMPLES} "
                    f"samples, {held_out} held out: max(`eval_queries`, ceil(`local_test_fraction` * {MIN_SAMPLES}))), "
                    f"but got {total}."
                )
        num_test = round(test_fraction * num_devices)
        if num_test >= num_devices:
            raise ValueError(
                f"Expected `test_fraction` to leave >= 1 training device of {num_devices}, but got {test_fraction} "
                f"({num_test} test devices)."
            )
        self.num_devices, self.num_test_clients = num_devices, num_test
        self.test_fraction, self.alpha, self.beta, self.iid = test_fraction, alpha, beta, iid
        self.local_test_fraction = local_test_fraction
        self.dim, self.classes = dim, classes
        self.shots, self.queries, self.eval_shots, self.eval_queries = shots, queries, eval_shots, eval_queries
        self.meta_batch_size, self.test_tasks = meta_batch_size, test_tasks
        self.seed, self.eval_seed, self.cache_devices = seed, eval_seed, cache_devices
        self._cache: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # a simulation backend ships the federation to its workers
        state = dict(self.__dict__)
        state["_lock"], state["_cache"] = None, OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_clients(self) -> int:
        return self.num_devices

    @property
    def num_train_clients(self) -> int:
        return self.num_devices - self.num_test_clients

    def role(self, partition_id: int) -> Role:
        """``"train"`` for devices ``0 .. num_train_clients - 1``, ``"test"`` for the held-out rest."""
        self._check_device(partition_id)
        return "train" if partition_id < self.num_train_clients else "test"

    def _check_device(self, partition_id: int) -> None:
        if (
            isinstance(partition_id, bool)
            or not isinstance(partition_id, int)
            or not 0 <= partition_id < self.num_devices
        ):
            raise ValueError(
                f"Expected a `partition-id` in [0, {self.num_devices}) ({self.num_train_clients} training and "
                f"{self.num_test_clients} test devices), but got {partition_id!r}."
            )

    def device_data(self, k: int) -> tuple[Tensor, Tensor]:
        """Device ``k``'s samples, ``x`` ``(n_k, dim)`` float32 and ``y`` ``(n_k,)`` int64, generated on
        first use (:func:`synthetic_device`) and kept among the last ``cache_devices`` used."""
        self._check_device(k)
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        x, y = synthetic_device(k, self.alpha, self.beta, self.iid, self.seed, self.dim, self.classes)
        data = torch.from_numpy(x), torch.from_numpy(y)
        if self.cache_devices:
            with self._lock:
                self._cache[k] = data
                while len(self._cache) > self.cache_devices:
                    self._cache.popitem(last=False)
        return data

    def local_split(self, k: int) -> tuple[int, int]:
        """``(training part, local test part)``: how many of training device ``k``'s samples it trains
        on (its first ones) and holds out for its participant evaluation (its last
        :func:`local_test_size`); ``(n_k, 0)`` for a held-out device. Generates nothing."""
        self._check_device(k)
        size = device_size(k, self.seed)
        if self.role(k) != "train":
            return size, 0
        held_out = local_test_size(size, self.eval_queries, self.local_test_fraction)
        return size - held_out, held_out

    def __call__(self, partition_id: int, server_round: int) -> SyntheticDeviceTasks:
        """Device ``partition_id``'s :class:`SyntheticDeviceTasks` for ``server_round``."""
        self._check_device(partition_id)
        check_positive_int("server_round", server_round, minimum=0)
        return SyntheticDeviceTasks(self, partition_id, server_round)

    def participant_tasks(self, partition_id: int) -> SyntheticDeviceTasks:
        """Training device ``partition_id``'s participant evaluation: its :class:`SyntheticDeviceTasks`
        whose ``test_tasks`` test tasks take ``eval_shots`` support samples from its local training
        part and ``eval_queries`` query samples from its local test part, the same every round.

        Raises:
            ValueError: ``partition_id`` is no device, or a held-out one (evaluated on all its samples).
        """
        self._check_device(partition_id)
        if self.role(partition_id) != "train":
            raise ValueError(
                f"Expected a training device for a participant evaluation, but got device {partition_id}, a held-out "
                "test device (its tasks draw from all its samples)."
            )
        return SyntheticDeviceTasks(self, partition_id, 0, participant=True)
