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

from lit_meta.tuning.report import format_table, short_names, trial_rows, write_csv
from lit_meta.tuning.storage import HeartbeatJournalStorage, open_storage
from lit_meta.tuning.study import EpochsDone, TuneSpec, best_value, counted, make_pruner, open_study

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


def test_a_retry_is_not_stale_for_its_predecessors_old_heartbeat(tmp_path):
    storage = open_storage(f"journal:{tmp_path}/s/study.log", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(1.3)
    _fail_stale(study)
    retry = study.ask()  # the retry runs now, its system attributes (the old heartbeat too) copied
    assert retry.number == 1 and "retry_history" in study.get_trials()[1].system_attrs
    _fail_stale(study)  # another worker's turn, before the retry's first beat
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]


def test_a_database_trial_that_never_beat_is_failed_and_retried(tmp_path):
    # Its worker died between `ask()` and the first heartbeat: Optuna's RDBStorage alone would keep it
    # running forever, and the other workers waiting for it.
    storage = open_storage(f"sqlite:///{tmp_path}/study.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    silent, beating = study.ask(), study.ask()
    time.sleep(1.3)
    storage.record_heartbeat(beating._trial_id)
    _fail_stale(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert silent.number == 0 and study.get_trials()[2].system_attrs["retry_history"] == [0]


def test_a_worker_draws_the_same_whether_or_not_another_worker_created_a_trial_first(tmp_path):
    # --workers K counts the study's trials once (`held`) and passes it to every worker.
    def first_draw(name: str, other_worker_first: bool) -> float:
        spec = TuneSpec(fit_args=[], space=[], study=name, storage=f"journal:{tmp_path}/{name}.log", n_trials=4)
        if other_worker_first:
            open_study(spec, worker=1, held=0).ask().suggest_float(KEY, 1e-3, 1.0)
        return open_study(spec, worker=0, held=0).ask().suggest_float(KEY, 1e-3, 1.0)

    assert first_draw("alone", False) == first_draw("second", True)
    spec = TuneSpec(fit_args=[], space=[], study="second", storage=f"journal:{tmp_path}/second.log", n_trials=4)
    assert open_study(spec, worker=0).ask().suggest_float(KEY, 1e-3, 1.0) != first_draw("third", False)


def test_quasi_monte_carlo_workers_share_one_scrambled_sequence(tmp_path):
    def draws(name: str, workers: list[int], seed: int = 0) -> list[float]:
        spec = TuneSpec(fit_args=[], space=[], study=name, storage=f"journal:{tmp_path}/{name}.log", n_trials=4)
        spec.sampler, spec.seed = "qmc", seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return [open_study(spec, w, held=0).ask().suggest_float(KEY, 1e-3, 1.0) for w in workers]

    # Two workers take the next points of the sequence one worker would have drawn, and --seed matters.
    assert draws("one", [0, 0, 0]) == draws("three", [0, 1, 2]) != draws("other", [0, 0, 0], seed=1)


def test_asha_judges_a_trial_at_its_first_validation_against_every_trial_that_reached_it():
    # Through EpochsDone, as the pruning callback reports (epoch 0 for the first validation).
    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", startup=0))
    first_validation = []
    for value in (0.5, 0.7, 0.6, 0.4, 0.8, 0.3):
        trial = EpochsDone(study.ask())
        trial.report(value, step=0)
        first_validation.append(trial.should_prune())
        study.tell(trial.number, state=TrialState.PRUNED)  # none completes: ASHA needs no completed trial
    # The first two (fewer than 3 so far) go on when the best yet; then the top third of all so far.
    assert first_validation == [False, False, True, True, False, True]
    assert study.trials[0].intermediate_values == {1: 0.5}  # stored at epochs done, not at epoch 0


@pytest.mark.parametrize("name", ["median", "percentile", "asha"])
def test_no_pruner_stops_a_trial_before_min_epochs(name):
    study = optuna.create_study(direction="maximize", pruner=make_pruner(name, startup=1, min_epochs=2))
    for value in (0.9, 0.9):  # two good trials: one completed, one past the first rung
        trial = EpochsDone(study.ask())
        trial.report(value, step=0)
        trial.report(value, step=1)
        assert not trial.should_prune()
        study.tell(trial.number, value)
    worse = EpochsDone(study.ask())
    worse.report(0.1, step=0)  # after 1 epoch: too early
    assert not worse.should_prune()
    worse.report(0.1, step=1)  # after 2
    assert worse.should_prune()


def test_counted_from_zero_the_first_validation_would_be_no_rung():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", startup=0))
    pruned = []
    for value in (0.5, 0.7, 0.6, 0.4, 0.8, 0.3):
        trial = study.ask()
        trial.report(value, step=0)  # what the callback reports without EpochsDone
        pruned.append(trial.should_prune())
        study.tell(trial, state=TrialState.PRUNED)
    assert not any(pruned)


@pytest.mark.parametrize(
    ("values", "direction", "expected"),
    [
        ([float("nan"), 0.5, 0.7], "maximize", 0.7),
        ([0.5, float("nan")], "maximize", 0.5),
        ([2.0, 1.0], "minimize", 1.0),
    ],
)
def test_a_trials_value_is_its_best_finite_validation(values, direction, expected):
    assert best_value(values, direction, "val/acc") == expected


def test_a_trial_without_a_finite_validation_fails():
    with pytest.raises(ValueError, match=r"Expected a finite `val/acc` in some validation, but got \[nan, inf\]\."):
        best_value([float("nan"), float("inf")], "maximize", "val/acc")
    with pytest.raises(ValueError, match=r"Expected at least one validation of `val/acc`, but the trial ran none\."):
        best_value([], "maximize", "val/acc")


def test_column_headings_tell_parameters_with_one_last_name_apart():
    keys = ["model.init_args.lr", "model.init_args.optimizer.init_args.lr", "model.init_args.inner_steps"]
    assert short_names(keys) == ["model.init_args.lr", "optimizer.init_args.lr", "inner_steps"]


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
