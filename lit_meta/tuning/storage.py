"""Where a study lives: a journal file (the default) or any SQLAlchemy database, with heartbeats.

Every running trial records a heartbeat; a trial whose heartbeat is older than the grace period (its
worker was killed) is failed by Optuna's :func:`optuna.storages.fail_stale_trials` on the next
worker's turn, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues it again, so the study
loses no trial. Optuna's ``RDBStorage`` has heartbeats (:class:`HeartbeatRDBStorage` also fails a
trial that never beat); its ``JournalStorage`` does not, so :class:`HeartbeatJournalStorage` adds
them as trial system attributes in the same journal.

A database is opened only once it answered: the first connection is made within ``timeout`` seconds
(:data:`STORAGE_TIMEOUT` by default, ``--storage_timeout``), bounded by the driver's own connection
timeout, which also bounds every later connection of the workers (PostgreSQL's libpq waits 2 s at
least), and by a watchdog for drivers whose timeout stops at the TCP connection. A URL of an unknown
dialect or of a driver that is not installed, a refused connection or no answer is one
:class:`StorageError` line, the URL's password masked.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials checks for
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

_HEARTBEAT = "lit_meta:heartbeat"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]

STORAGE_TIMEOUT = 10
"""Seconds a database has to answer a connection (``--storage_timeout``)."""
# The argument of each database driver (as SQLAlchemy names it) that bounds establishing a connection,
# and only that (pg8000's and mysql-connector's timeouts bound every later read too: left out).
_TIMEOUT_ARGUMENTS = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "psycopg2cffi": "connect_timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mariadbconnector": "connect_timeout",
}
# What the drivers say when the server does not answer in time, or refuses the connection.
_NO_ANSWER = ("timeout expired", "timed out")
_REFUSED = "connection refused"


class StorageError(ValueError):
    """A storage that cannot be opened: an unknown dialect or a driver that is not installed, or a
    database that refuses the connection, does not answer in time or refuses what Optuna asks of it."""


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


def masked(url: str) -> str:
    """``url`` with its password as ``***`` (what error messages show)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: mask what looks like `user:password@`
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _driver_error(url: str, reason: str) -> StorageError:
    return StorageError(
        "Expected `storage` 'journal:PATH' or an SQLAlchemy URL of an installed database driver, "
        f"but got {masked(url)!r} ({reason})."
    )


def _driver(url: str) -> str:
    """The name of ``url``'s database driver, once its dialect and driver module are known to load.

    Raises:
        StorageError: not an SQLAlchemy URL, no such dialect, or its driver is not installed.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:
        raise _driver_error(url, f"not an SQLAlchemy URL: {err}") from None
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise _driver_error(url, f"SQLAlchemy has no dialect {parsed.drivername!r}") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise _driver_error(url, f"its driver {err.name or dialect.driver!r} is not installed") from None
    return dialect.driver


def _reason(err: BaseException, timeout: int) -> str:
    """What a database said when connecting (or failing to), in the words of "but got ...": ``no
    answer within N s``, ``: connection refused``, or ``:`` and the first line of its message."""
    text = str(getattr(err, "orig", None) or err)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    first = lines[0].rstrip(".") if lines else type(err).__name__
    if any(mark in text.lower() for mark in _NO_ANSWER):
        return f" no answer within {timeout} s"
    if _REFUSED in text.lower():
        return f": {_REFUSED}"
    return f": {first}"


def _first_connection(url: str, connect_args: dict, timeout: int) -> None:
    """Connect to ``url`` once, within ``timeout`` seconds (and one more for the watchdog).

    Raises:
        StorageError: refused, no answer, or any other error of the connection, in one line.
    """
    engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            with engine.connect():
                pass
        except Exception as err:  # shown as one line below
            failure.append(err)

    # A daemon thread: a driver stuck in a read the timeout does not cover is left behind (the
    # command exits), never waited for.
    thread = threading.Thread(target=connect, name="lit-meta storage connection", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if thread.is_alive():
        raise StorageError(f"Expected a reachable storage at {masked(url)!r}, but got no answer within {timeout} s.")
    engine.dispose()
    if failure:
        raise StorageError(f"Expected a reachable storage at {masked(url)!r}, but got{_reason(failure[0], timeout)}.")


def open_storage(
    url: str, heartbeat_interval: int = 10, grace_period: int = 30, max_retry: int = 3, timeout: int = STORAGE_TIMEOUT
) -> optuna.storages.BaseStorage:
    """The storage of ``url``: ``journal:PATH`` (its folder is created) or an SQLAlchemy URL
    (``postgresql+psycopg2://user@host:port/db``, ``mysql+pymysql://...``), heartbeats and retries on.

    Args:
        url: where the study lives.
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat before a running trial is failed and retried.
        max_retry: how often one trial is retried after its worker died.
        timeout: seconds a database has to answer each connection.

    Raises:
        ValueError: ``url`` is neither ``journal:PATH`` nor an SQLAlchemy URL.
        StorageError: a URL of no installed driver, or a database that refuses, does not answer within
            ``timeout`` seconds or refuses Optuna's tables (one line, the password masked).
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
            f"'postgresql+psycopg2://user@host:5432/db', but got {url!r}."
        )
    driver = _driver(url)
    connect_args = {_TIMEOUT_ARGUMENTS[driver]: timeout} if driver in _TIMEOUT_ARGUMENTS else {}
    _first_connection(url, connect_args, timeout)
    try:
        with warnings.catch_warnings():  # `heartbeat_interval`: experimental since Optuna 2.8, as above
            warnings.simplefilter("ignore", ExperimentalWarning)
            # pool_pre_ping: a worker that outlives a database restart reconnects instead of failing its trial.
            return HeartbeatRDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args},
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry,
            )
    except sqlalchemy.exc.DBAPIError as err:  # reached, but Optuna's tables cannot be created or read
        raise StorageError(
            f"Expected a storage at {masked(url)!r} that Optuna can use, but got{_reason(err, timeout)}."
        ) from None
