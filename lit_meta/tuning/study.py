"""A worker of ``lit-meta tune``: runs trials of one Optuna study until it holds ``n_trials`` of them.

Each trial is an ordinary ``lit-meta fit`` (:func:`lit_meta.meta_cli.make_cli`) of the configs with the
sampled values, logged to TensorBoard as ``<save_dir>/<study>/trial_<n>``, with Optuna's Lightning
pruning callback on the monitored metric (at epochs counted from 1: :class:`EpochsDone`). Its value is
the best validation value of the run (the one ``ModelCheckpoint`` keeps).

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
from lightning.pytorch import Callback, LightningModule, Trainer
from optuna.exceptions import ExperimentalWarning
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from lit_meta.meta_cli import make_cli
from lit_meta.tuning.fit_config import overrides
from lit_meta.tuning.space import Dimension
from lit_meta.tuning.storage import journal_path, open_storage

Sampler = Literal["tpe", "random", "qmc", "gp"]
Pruner = Literal["median", "percentile", "asha", "hyperband", "none"]
Direction = Literal["maximize", "minimize"]


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
        pruner_min_epochs: epochs every trial trains before a pruner may stop it (the first rung of
            ``"asha"`` and ``"hyperband"``).
        seed: the sampler's seed (see :func:`open_study`).
        timeout: seconds after which a worker starts no new trial (``None``: no limit).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat before a trial counts as dead and is retried.
        max_retry: retries of one trial whose worker died.
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
    ``min_epochs``: the epochs every trial trains before it may be stopped.

    The median and percentile pruners compare a trial with the *completed* trials only, so the first
    few that complete set every threshold. Successive halving (Li et al., MLSys 2020: ASHA) compares
    it with every trial that reached the same rung, pruned ones included, and keeps the top third:
    rungs after ``min_epochs`` epochs, 3 times as many, 9 times (:class:`EpochsDone` counts from 1).
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
    storage = open_storage(spec.storage, spec.heartbeat_interval, spec.grace_period, spec.max_retry)
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
    """A trial as Optuna's Lightning pruning callback sees it: a value reported at epoch ``e`` (0-based,
    the callback's step) is stored at step ``e + 1``, the epochs done. Optuna's rung-based pruners start
    at step ``min_resource >= 1``; counted from 0 their first rung would be the second validation.
    Everything else is the trial's own.
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
            raise ValueError(f"Expected the monitored `{self.monitor}` among the logged metrics, but got {logged}.")
        self.values.append(float(value))
        self.trial.set_user_attr("steps", trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trial.set_user_attr("steps", trainer.global_step)


def best_value(values: Sequence[float], direction: str, monitor: str) -> float:
    """A trial's value: the best of its validations' ``values`` that is finite (as ``ModelCheckpoint``,
    NaN is never the best; Python's ``max`` would return it or not depending on where it stands).

    Raises:
        ValueError: no validation ran, or none gave a finite value.
    """
    if not values:
        raise ValueError(f"Expected at least one validation of `{monitor}`, but the trial ran none.")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise ValueError(f"Expected a finite `{monitor}` in some validation, but got {list(values)}.")
    return max(finite) if direction == "maximize" else min(finite)


def objective(spec: TuneSpec, lock: _HostLock | None = None):
    """The function Optuna optimises: one ``lit-meta fit`` per trial, its best validation value."""

    def run(trial: optuna.Trial) -> float:
        if lock is not None:
            lock.release()  # the trial exists: other workers of this host may count and create now
        params = {dim.key: dim.suggest(trial) for dim in spec.space}
        progress = TrialProgress(trial, spec.monitor)
        pruning = PyTorchLightningPruningCallback(EpochsDone(trial), monitor=spec.monitor)
        with warnings.catch_warnings():  # LightningCLI warns when `args` are given from within a command
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            make_cli(["fit", *spec.trial_args(trial.number, params)], callbacks=[progress, pruning])
        return best_value(progress.values, spec.direction, spec.monitor)

    return run


def work(spec: TuneSpec, worker: int = 0, held: int | None = None) -> None:
    """Run trials of ``spec``'s study until it holds ``spec.n_trials`` (or ``spec.timeout`` passes);
    ``worker``: this worker's index among those ``--workers`` started, ``held``: the trials the study
    held when they were started (with ``worker``, its sampler's seed: see :func:`open_study`)."""
    study = open_study(spec, worker, held)
    lock = _HostLock(spec)
    started = time.monotonic()
    func = objective(spec, lock)
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
            study.optimize(func, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            lock.release()
