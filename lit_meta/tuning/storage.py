"""Where a study lives: a journal file (the default) or any SQLAlchemy database, with heartbeats.

Every running trial records a heartbeat; a trial whose heartbeat is older than the grace period (its
worker was killed) is failed by Optuna's :func:`optuna.storages.fail_stale_trials` on the next
worker's turn, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues it again, so the study
loses no trial. Optuna's ``RDBStorage`` has heartbeats (:class:`HeartbeatRDBStorage` also fails a
trial that never beat); its ``JournalStorage`` does not, so :class:`HeartbeatJournalStorage` adds
them as trial system attributes in the same journal.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials checks for
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

_HEARTBEAT = "lit_meta:heartbeat"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A ``JournalStorage`` whose running trials record heartbeats (as system attributes).

    Args:
        backend: the journal (``JournalFileBackend`` on a local or shared file system).
        heartbeat_interval: seconds between heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a running trial is stale.
        failed_trial_callback: called with each trial failed as stale (Optuna's retry callback).
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int,
        grace_period: int,
        failed_trial_callback: StaleCallback | None = None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.failed_trial_callback = failed_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # A retry inherits its dead predecessor's system attributes, heartbeat included: a trial
            # is alive since its own start at least.
            beats = [trial.system_attrs.get(_HEARTBEAT)]
            if trial.datetime_start is not None:
                beats.append(trial.datetime_start.timestamp())
            last = max((b for b in beats if b is not None), default=None)
            if last is not None and now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.failed_trial_callback


class HeartbeatRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage``, whose stale trials also include running ones that never beat.

    Optuna skips a running trial without a heartbeat row. A worker killed after ``ask()`` created
    its trial but before the first beat (a sampler's fit runs in between) would leave it running
    forever, and every other worker waiting for it at the end of the study. Such a trial is stale
    once its start is older than the grace period (as :class:`HeartbeatJournalStorage` does). It
    reads Optuna's table models, an internal API of Optuna 5 (as ``BaseHeartbeat`` above is), in
    one query beside Optuna's own, once per worker's turn.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import orm

        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        now = datetime.now()  # Optuna writes `datetime_start` as the worker's naive local time
        with _create_scoped_session(self.scoped_session, True) as session:
            running = (
                session.query(models.TrialModel)
                .options(orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.state == TrialState.RUNNING, models.TrialModel.study_id == study_id)
                .all()
            )
            for trial in running:
                started = trial.datetime_start
                if not trial.heartbeats and started is not None and now - started > grace:
                    stale.append(trial.trial_id)
        return stale


def journal_path(storage: str) -> Path | None:
    """The file of a ``journal:PATH`` storage, ``None`` for a database URL."""
    return Path(storage.removeprefix("journal:")) if storage.startswith("journal:") else None


def open_storage(
    url: str, heartbeat_interval: int = 10, grace_period: int = 30, max_retry: int = 3
) -> optuna.storages.BaseStorage:
    """The storage of ``url``: ``journal:PATH`` (its folder is created) or an SQLAlchemy URL
    (``postgresql://user@host:port/db``, ``mysql+pymysql://...``), heartbeats and retries on.

    Args:
        url: where the study lives.
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat before a running trial is failed and retried.
        max_retry: how often one trial is retried after its worker died.
    """
    with warnings.catch_warnings():  # experimental since Optuna 2.8, and what Optuna 5 recommends
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    path = journal_path(url)
    if path is not None:
        if not path.name:
            raise ValueError(f"Expected `storage` 'journal:PATH' with a file name, but got {url!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)
    if "://" not in url:
        raise ValueError(
            "Expected `storage` to be 'journal:PATH' or an SQLAlchemy URL such as "
            f"'postgresql://user@host:5432/db', but got {url!r}."
        )
    # pool_pre_ping: a worker that outlives a database restart reconnects instead of failing its trial.
    return HeartbeatRDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True},
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=retry,
    )
