"""The study's bookkeeping without training: heartbeats on a journal, retries, the budget, the table."""

from __future__ import annotations

import csv
import time
import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState, create_trial

from lit_meta.tuning.report import format_table, trial_rows, write_csv
from lit_meta.tuning.storage import HeartbeatJournalStorage, open_storage
from lit_meta.tuning.study import counted

KEY = "model.init_args.inner_lr"


def _fail_stale(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)


def test_a_journal_trial_whose_heartbeat_stopped_is_failed_and_retried_with_its_parameters(tmp_path):
    storage = open_storage(f"journal:{tmp_path}/s/study.log", heartbeat_interval=1, grace_period=1)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(study_name="s", storage=storage)
    dead, alive = study.ask(), study.ask()
    dead.suggest_float(KEY, 1e-3, 1.0)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(1.3)
    storage.record_heartbeat(alive._trial_id)  # still beating: not stale
    _fail_stale(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.FAIL, 1: TrialState.RUNNING, 2: TrialState.WAITING}
    retry = study.get_trials()[2]
    assert retry.params == study.get_trials()[0].params and retry.system_attrs["retry_history"] == [0]
    assert [t.number for t in counted(study.get_trials())] == [1, 2]  # the dead trial counts once, as its retry


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("studies/x.db", r"Expected `storage` to be 'journal:PATH' or an SQLAlchemy URL"),
        ("journal:", r"with a file name"),
    ],
)
def test_a_storage_that_is_neither_journal_nor_url_is_refused(url, match):
    with pytest.raises(ValueError, match=match):
        open_storage(url)


def _trial(state, number_params, value=None, steps=None, system_attrs=None):
    return create_trial(
        state=state,
        value=value,
        params={KEY: number_params},
        distributions={KEY: FloatDistribution(1e-3, 1.0)},
        user_attrs={"steps": steps} if steps is not None else {},
        system_attrs=system_attrs or {},
        intermediate_values={0: value} if value is not None else None,
    )


def test_the_table_counts_each_trial_once_and_is_written_as_csv(tmp_path):
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.COMPLETE, 0.1, 0.5, steps=20))
    study.add_trial(_trial(TrialState.PRUNED, 0.2, 0.9, steps=5))
    study.add_trial(_trial(TrialState.FAIL, 0.3))
    study.add_trial(
        _trial(TrialState.COMPLETE, 0.3, 0.4, steps=20, system_attrs={"failed_trial": 2, "retry_history": [2]})
    )
    rows = trial_rows(study.get_trials(), [KEY])
    assert [(r["number"], r["state"], r["steps"], r["retry_of"]) for r in rows] == [
        (0, "COMPLETE", 20, None),
        (1, "PRUNED", 5, None),
        (2, "FAIL (retried)", None, None),
        (3, "COMPLETE", 20, 2),
    ]
    assert len(counted(study.get_trials())) == 3
    write_csv(rows, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        read = list(csv.DictReader(f))
    assert [r["state"] for r in read] == ["COMPLETE", "PRUNED", "FAIL (retried)", "COMPLETE"] and read[3][KEY] == "0.3"
    table = format_table(rows).splitlines()
    assert table[0].split() == ["number", "state", "value", "steps", "seconds", "retry_of", "inner_lr"]
    assert table[3].split()[:4] == ["2", "FAIL", "(retried)", "-"]
