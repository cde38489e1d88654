"""A worker of ``lit-meta tune``: runs trials of one Optuna study until it holds ``n_trials`` of them.

Each trial is an ordinary ``lit-meta fit`` (:func:`lit_meta.meta_cli.make_cli`) of the configs with the
sampled values, logged to TensorBoard as ``<save_dir>/<study>/trial_<n>``, its every validation of the
monitored metric reported to the pruner at its count, 1, 2, 3, ...
(:class:`~lit_meta.tuning.pruning.ValidationPruning`). Its value is the best validation value of the
run (the one ``ModelCheckpoint`` keeps).

How a trial ends: complete, pruned, or failed as expected (:data:`EXPECTED_TRIAL_FAILURES`: out of
memory, or diverged: no finite validation value), and the study goes on; a worker killed mid-trial
is failed and retried by heartbeats (:mod:`~lit_meta.tuning.storage`). Anything else a trial raises
is a bug in the code it runs, or a mistake in the config that only a run shows (a monitored metric
that is never logged): the trial is failed and the worker stops with :class:`TrialError` (the command
shows it and exits), rather than spending the study's budget on trials that all fail alike.

How many trials: the study, not each worker, holds the budget. Before each trial a worker counts the
study's trials (every state; a trial failed because its worker died and retried since counts once)
and starts one only while fewer than ``n_trials`` exist or a retry waits. Workers of one host count
and create under one file lock, so they never overshoot; workers on other hosts share only the
storage. A worker with nothing left to start waits while trials still run elsewhere, in case one
of them dies and comes back as a retry.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from optuna.exceptions import ExperimentalWarning
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from lit_meta._cli_errors import CommandLineError, raised_while_configuring
from lit_meta.meta_cli import make_cli
from lit_meta.tuning.fit_config import overrides
from lit_meta.tuning.pruning import ValidationPruning
from lit_meta.tuning.space import Dimension
from lit_meta.tuning.storage import STORAGE_TIMEOUT, journal_path, open_storage

Sampler = Literal["tpe", "random", "qmc", "gp"]
Pruner = Literal["median", "percentile", "asha", "hyperband", "none"]
Direction = Literal["maximize", "minimize"]


class TrialDiverged(ValueError):
    """A trial whose every validation value was NaN or infinite, or whose gradients were (Lightning's
    ``detect_anomaly``): a failed trial, as expected of some sampled values."""


class TrialConfigError(ValueError):
    """A trial that shows a mistake of the config: the monitored metric is never logged, or no
    validation runs. Every trial would fail alike: the study stops (one line, exit status 2)."""


# A trial that raises one of these is a failed trial and the study goes on: out of memory (of any
# device: `torch.cuda.OutOfMemoryError` is `torch.OutOfMemoryError` since torch 2.5; of the host:
# `MemoryError`), or diverged (no finite validation value, or non-finite gradients under
# `detect_anomaly`). A worker killed mid-trial is failed and retried by heartbeats. Anything else stops
# the study: see `TrialError`.
EXPECTED_TRIAL_FAILURES: tuple[type[Exception], ...] = (torch.cuda.OutOfMemoryError, MemoryError, TrialDiverged)


class TrialError(RuntimeError):
    """What stops a worker: trial ``number`` raised ``error``, which is no expected failure (a bug in the
    code a trial runs, or a mistake of the config). Optuna has failed the trial.

    Attributes:
        number: the trial's number.
        error: what it raised (also the ``__cause__``).
        mistake: whether ``error`` is a mistake of the config (:class:`TrialConfigError`, a
            ``CommandLineError``, or raised by a datamodule's or module's ``setup``), to be shown as
            one line, rather than a bug to be shown with its traceback.
    """

    def __init__(self, number: int, error: BaseException) -> None:
        self.number, self.error = number, error
        self.mistake = isinstance(error, (TrialConfigError, CommandLineError)) or raised_while_configuring(error)
        lines = str(error).strip().splitlines()
        super().__init__(f"trial {number} raised {type(error).__name__}: {lines[0] if lines else '(no message)'}")


@dataclass
class TuneSpec:
    """Everything a worker needs; the arguments of ``lit-meta tune`` (see :mod:`lit_meta.tuning.cli`).

    Args:
        fit_args: the ``lit-meta fit`` arguments of every trial (``--config`` files and overrides).
        space: the searched arguments.
        study: the study's name.
        storage: ``journal:PATH`` or an SQLAlchemy URL.
        n_trials: trials the study ends with, over all workers.
        monitor: the validation metric of the value and of pruning, e.g. ``"val/acc"``.
        direction: ``"maximize"`` or ``"minimize"`` ``monitor``.
        sampler: Optuna's TPE, random, quasi-Monte Carlo or Gaussian-process sampler.
        pruner: Optuna's median, percentile, asynchronous successive halving (``"asha"``) or Hyperband
            pruner, or none.
        pruner_startup: trials the median or percentile pruner completes before it prunes.
        pruner_percentile: the percentile pruner keeps the trials in this top percentile at each validation.
        pruner_min_epochs: validations every trial runs before a pruner may stop it (the first rung of
            ``"asha"`` and ``"hyperband"``); epochs when every epoch validates once.
        seed: the sampler's seed (see :func:`open_study`).
        timeout: seconds after which a worker starts no new trial (``None``: no limit).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat before a trial counts as dead and is retried.
        max_retry: retries of one trial whose worker died.
        storage_timeout: seconds a database storage has to answer a connection.
        extra_fit_args: ``lit-meta fit`` arguments a worker adds (``--num_threads=1`` under ``--workers``).
    """

    fit_args: list[str]
    space: list[Dimension]
    study: str
    storage: str
    n_trials: int
    monitor: str = "val/acc"
    direction: Direction = "maximize"
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    pruner_startup: int = 4
    pruner_percentile: float = 25.0
    pruner_min_epochs: int = 1
    seed: int = 0
    timeout: float | None = None
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    storage_timeout: int = STORAGE_TIMEOUT
    extra_fit_args: list[str] = field(default_factory=list)

    def trial_args(self, number: int, params: dict[str, Any]) -> list[str]:
        """The ``lit-meta fit`` command line (without ``fit``) of trial ``number``."""
        return [
            *self.fit_args,
            *self.extra_fit_args,
            *overrides(params),
            f"--trainer.logger.init_args.name={self.study}",
            f"--trainer.logger.init_args.version=trial_{number}",
            "--test_after_fit=none",  # the meta-test is for the chosen config, not for choosing it
        ]


def make_sampler(name: Sampler, seed: int) -> optuna.samplers.BaseSampler:
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        # Scrambled, so that the seed matters (unscrambled Sobol points are the same for every seed).
        "qmc": lambda: optuna.samplers.QMCSampler(scramble=True, seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[name]()


def make_pruner(name: Pruner, startup: int, percentile: float = 25.0, min_epochs: int = 1) -> optuna.pruners.BasePruner:
    """Optuna's pruner ``name``; ``startup``: trials the median/percentile pruner lets finish first;
    ``percentile``: the share of trials the percentile pruner keeps at each validation (top 25%);
    ``min_epochs``: the validations every trial runs before it may be stopped (its steps are
    validations, counted from 1: :class:`~lit_meta.tuning.pruning.ValidationPruning`; epochs when every
    epoch validates once).

    The median and percentile pruners compare a trial with the *completed* trials only, so the first
    few that complete set every threshold. Successive halving (Li et al., MLSys 2020: ASHA) compares
    it with every trial that reached the same rung, pruned ones included, and keeps the top third:
    rungs after ``min_epochs`` validations, 3 times as many, 9 times.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=min_epochs)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(percentile, n_startup_trials=startup, n_warmup_steps=min_epochs)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(spec: TuneSpec, worker: int = 0, held: int | None = None) -> optuna.Study:
    """The study of ``spec``, created if new; a study of the same name must have the same direction.

    The sampler's seed is drawn from ``spec.seed``, ``worker`` and ``held``, the number of trials the
    study held when the worker was started (``None``: as many as it holds now): reproducible for a
    fresh study, and a worker that joins or restarts later does not repeat the suggestions of the
    first. ``--workers K`` counts once for its K workers, so which of them opens the study first does
    not change their seeds. Workers started at the same moment on two hosts with the same ``--seed``
    would draw alike: give each host its own ``--seed`` (the README says so). The quasi-Monte Carlo
    sampler is the exception: the study keeps its place in one sequence, which every worker must
    scramble alike, so all of them take ``spec.seed``.
    """
    storage = open_storage(
        spec.storage, spec.heartbeat_interval, spec.grace_period, spec.max_retry, timeout=spec.storage_timeout
    )
    sampler = make_sampler(spec.sampler, spec.seed)
    pruner = make_pruner(spec.pruner, spec.pruner_startup, spec.pruner_percentile, spec.pruner_min_epochs)
    try:
        study = optuna.create_study(
            study_name=spec.study,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=spec.direction,
            load_if_exists=True,
        )
    except optuna.exceptions.DuplicatedStudyError:  # another host created it between our check and our create
        study = optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler, pruner=pruner)
    found = study.direction.name.lower()
    if found != spec.direction:
        raise ValueError(
            f"Expected study {spec.study!r} to {spec.direction} `{spec.monitor}`, but it was created to {found} it."
        )
    if held is None:
        held = len(study.get_trials(deepcopy=False))
    if (worker or held) and spec.sampler != "qmc":
        seed = int(np.random.SeedSequence([spec.seed, worker, held]).generate_state(1)[0])
        study.sampler = make_sampler(spec.sampler, seed)
    return study


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials whose worker died and that Optuna enqueued again (``retry_history``)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", ())}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The study's trials as the budget counts them: all, less those that a retry replaced."""
    replaced = retried_numbers(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in replaced)]


class _HostLock:
    """An exclusive file lock shared by this host's workers of one study (count-and-create is atomic)."""

    def __init__(self, spec: TuneSpec) -> None:
        journal = journal_path(spec.storage)
        if journal is not None:
            path = journal.with_name(journal.name + ".workers.lock")  # not `.lock`: Optuna's own journal lock
        else:
            digest = hashlib.sha1(f"{spec.storage}|{spec.study}".encode()).hexdigest()[:16]
            path = Path(tempfile.gettempdir()) / f"lit-meta-tune-{digest}.lock"
        self._file = open(path, "a")  # noqa: SIM115 (held for the worker's life)
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._file, fcntl.LOCK_UN)


class EpochsDone:
    """A trial whose values are reported at 0-based epochs ``e`` and stored at step ``e + 1``, the epochs
    done: a recorded per-epoch curve replayed as the tune command reports it (``benchmarks/
    pruning_replay.py``), since with one validation per epoch the ``k``-th validation is the ``k``-th
    epoch (:class:`~lit_meta.tuning.pruning.ValidationPruning` reports by validation count). Optuna's
    rung-based pruners start at step ``min_resource >= 1``; counted from 0 their first rung would be the
    second validation. Everything else is the trial's own.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    def report(self, value: float, step: int) -> None:
        self._trial.report(value, step + 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class TrialProgress(Callback):
    """Records a trial's steps run and every validation value of ``monitor`` (the trial's value is the best)."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.values: list[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise TrialConfigError(
                f"Expected the monitored `{self.monitor}` among the logged metrics, but got {logged}."
            )
        self.values.append(float(value))
        self.trial.set_user_attr("steps", trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trial.set_user_attr("steps", trainer.global_step)


def best_value(values: Sequence[float], direction: str, monitor: str) -> float:
    """A trial's value: the best of its validations' ``values`` that is finite (as ``ModelCheckpoint``,
    NaN is never the best; Python's ``max`` would return it or not depending on where it stands).

    Raises:
        TrialConfigError: no validation ran (the config never validates).
        TrialDiverged: none gave a finite value.
    """
    if not values:
        raise TrialConfigError(f"Expected at least one validation of `{monitor}`, but the trial ran none.")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise TrialDiverged(f"Expected a finite `{monitor}` in some validation, but got {list(values)}.")
    return max(finite) if direction == "maximize" else min(finite)


# What autograd's anomaly detection (`Trainer(detect_anomaly=True)`) says of a NaN gradient.
_ANOMALY = "returned nan values"


def objective(spec: TuneSpec, lock: _HostLock | None = None):
    """The function Optuna optimises: one ``lit-meta fit`` per trial, its best validation value.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        TrialDiverged: or another of :data:`EXPECTED_TRIAL_FAILURES`: a failed trial.
        TrialError: anything else the trial raised (a bug, a mistake of the config), as its cause.
    """

    def run(trial: optuna.Trial) -> float:
        if lock is not None:
            lock.release()  # the trial exists: other workers of this host may count and create now
        params = {dim.key: dim.suggest(trial) for dim in spec.space}
        progress = TrialProgress(trial, spec.monitor)
        pruning = ValidationPruning(trial, spec.monitor)
        try:
            with warnings.catch_warnings():  # LightningCLI warns when `args` are given from within a command
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                make_cli(["fit", *spec.trial_args(trial.number, params)], callbacks=[progress, pruning])
            return best_value(progress.values, spec.direction, spec.monitor)
        except (optuna.TrialPruned, *EXPECTED_TRIAL_FAILURES):
            raise
        except RuntimeError as err:
            if _ANOMALY in str(err):
                raise TrialDiverged(f"Expected finite gradients, but got: {str(err).splitlines()[0]}") from err
            raise TrialError(trial.number, err) from err
        except Exception as err:
            raise TrialError(trial.number, err) from err

    return run


class _ShownElsewhere(logging.Filter):
    """Optuna logs a failed trial's error with its traceback: the command shows a :class:`TrialError`'s
    itself, and a divergence needs none; their warning stays, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (TrialError, TrialDiverged)):
            record.exc_info, record.exc_text = None, None
        return True


def work(spec: TuneSpec, worker: int = 0, held: int | None = None) -> None:
    """Run trials of ``spec``'s study until it holds ``spec.n_trials`` (or ``spec.timeout`` passes);
    ``worker``: this worker's index among those ``--workers`` started, ``held``: the trials the study
    held when they were started (with ``worker``, its sampler's seed: see :func:`open_study`).

    Raises:
        TrialError: a trial raised what is no expected failure; it is failed and this worker stops.
    """
    study = open_study(spec, worker, held)
    lock = _HostLock(spec)
    started = time.monotonic()
    func = objective(spec, lock)
    log = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    shown_elsewhere = _ShownElsewhere()
    log.addFilter(shown_elsewhere)
    try:
        _work(spec, study, lock, func, started)
    finally:
        log.removeFilter(shown_elsewhere)


def _work(spec: TuneSpec, study: optuna.Study, lock: _HostLock, func: Any, started: float) -> None:
    while spec.timeout is None or time.monotonic() - started < spec.timeout:
        lock.acquire()
        try:
            with warnings.catch_warnings():  # experimental since Optuna 2.9; optimize() itself calls it
                warnings.simplefilter("ignore", ExperimentalWarning)
                fail_stale_trials(study)  # a dead worker's trial becomes a retry waiting to run
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if len(counted(trials)) >= spec.n_trials and not waiting:
                if not any(t.state == TrialState.RUNNING for t in trials):
                    return
                lock.release()
                time.sleep(min(spec.heartbeat_interval, 2))  # a trial running elsewhere may die and come back
                continue
            # The lock is released by the objective once Optuna has created the trial.
            study.optimize(func, n_trials=1, catch=EXPECTED_TRIAL_FAILURES, gc_after_trial=True)
        finally:
            lock.release()
