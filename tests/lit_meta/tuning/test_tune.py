"""`lit-meta tune` end to end: two worker processes on a real PostgreSQL server and the exported best
config, a worker killed mid-trial on a journal file and restarted, and mistakes refused before any
trial. (Two workers on one journal file: the searches of benchmarks/tune_pruning.py.)"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from lit_meta.cli import run
from lit_meta.tuning.storage import open_storage
from lit_meta.tuning.study import counted
from tests.helpers import postgres
from tests.helpers.tuning import run_env, run_tune, tune_command


def _study(name, storage):
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def _check_finished(study, n_trials):
    """``n_trials`` trials counted, all finished, numbers and parameter sets each once."""
    trials = counted(study.get_trials())
    assert len(trials) == n_trials
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.FAIL] == n_trials, states
    assert len({t.number for t in trials}) == n_trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials
    return trials


def test_a_worker_killed_mid_trial_is_retried_by_the_restarted_one(tiny_config, space_file, tmp_path):
    storage = f"journal:{tmp_path}/studies/k.log"
    command = tune_command(
        tiny_config, space_file, "k", "--n_trials=3", "--pruner=none", "--heartbeat=1", "--grace=2",
        f"--storage={storage}", "--trainer.max_steps=100",
    )  # fmt: skip
    worker = subprocess.Popen(
        command, cwd=tmp_path, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
        try:
            trials = _study("k", storage).get_trials()
        except KeyError:  # the study does not exist yet
            continue
        victim = next(
            (t for t in trials if t.number == 1 and t.state == TrialState.RUNNING and "steps" in t.user_attrs), None
        )
    assert victim is not None, "trial 1 never ran"
    os.kill(worker.pid, signal.SIGKILL)  # mid-trial: it has validated at least once
    worker.wait()
    assert _study("k", storage).get_trials()[1].state == TrialState.RUNNING  # stuck, until a worker notices
    run_tune(command, cwd=tmp_path)
    every = _study("k", storage).get_trials()
    trials = _check_finished(_study("k", storage), 3)
    assert every[1].state == TrialState.FAIL and 1 not in {t.number for t in trials}
    retry = next(t for t in trials if t.system_attrs.get("retry_history") == [1])
    assert retry.state == TrialState.COMPLETE and retry.params == every[1].params


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL 15 binaries are not installed")
def test_two_workers_on_a_postgresql_server_finish_the_study_and_the_best_config_reproduces_it(
    tiny_config, space_file, tmp_path
):
    with postgres.postgres_server() as url:
        result = run_tune(
            tune_command(
                tiny_config, space_file, "pg", "--n_trials=4", "--workers=2", "--pruner_startup=2", f"--storage={url}"
            ),
            cwd=tmp_path,
        )
        trials = _check_finished(_study("pg", url), 4)
    # Each trial is an ordinary fit with its own TensorBoard version; the table lists every trial.
    assert sorted(p.name for p in (tmp_path / "logs" / "pg").iterdir()) == [f"trial_{t.number}" for t in trials]
    with (tmp_path / "studies" / "pg.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    assert all(int(r["steps"]) == 20 for r in rows if r["state"] == "COMPLETE")
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"best trial {best.number}: val/loss = {best.value:.4f}" in result.stdout
    # `lit-meta fit --config best.yaml` runs as is and reaches the best trial's validation value.
    cli = run(["fit", f"--config={tmp_path / 'studies' / 'pg_best.yaml'}", "--trainer.logger.init_args.version=again"])
    assert cli.trainer.checkpoint_callback.best_model_score.item() == pytest.approx(best.value, rel=1e-6)


def test_a_bad_search_space_is_refused_before_any_trial(tiny_config, tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("model.init_args.inner_lrr: {type: float, low: 0.01, high: 0.1}\n")
    result = subprocess.run(
        tune_command(tiny_config, space, "bad", "--n_trials=2"),
        cwd=tmp_path,
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "lit-meta tune: error: Expected a search key that names an argument of the config, but got "
        "`model.init_args.inner_lrr` (did you mean `model.init_args.inner_lr`?)."
    )
    assert not (tmp_path / "studies").exists()


def test_a_failed_worker_still_leaves_the_table_and_exits_1(tiny_config, space_file, tmp_path, monkeypatch, capsys):
    # Its trial may have been retried and the study finished by the others: the table is written all the same.
    from lit_meta.tuning import cli as tune_cli

    def died(argv, spec, workers):
        raise tune_cli.WorkerError("worker 1 exited with status -9")

    monkeypatch.setattr(tune_cli, "_spawn_workers", died)
    monkeypatch.chdir(tmp_path)
    storage = f"journal:{tmp_path}/studies/died.log"
    with pytest.raises(SystemExit) as exit_info:
        tune_cli.main(
            tune_command(tiny_config, space_file, "died", "--n_trials=2", "--workers=2", f"--storage={storage}")[4:]
        )
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().endswith("error: worker 1 exited with status -9")
    assert (tmp_path / "studies" / "died.csv").is_file()


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ("--pruner_min_epochs=0", r"Expected `pruner_min_epochs` >= 1, but got 0\."),
        ("--pruner_percentile=0", r"Expected 0 < `pruner_percentile` <= 100, but got 0\.0\."),
        ("--pruner_startup=-1", r"Expected `pruner_startup` >= 0, but got -1\."),
    ],
)
def test_a_bad_pruner_option_is_refused(option, match, space_file):
    from lit_meta.tuning import cli as tune_cli

    argv = ["--config=c.yaml", f"--search={space_file}", "--study=s", "--n_trials=2", option]
    with pytest.raises(ValueError, match=match):
        tune_cli.parse(argv)
