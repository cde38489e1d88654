"""What `lit-meta tune` tells the user, and when: a storage that refuses or never answers, output paths
that cannot be written (before the first trial, not after the last), a bug in a trial (stops the
study with its traceback) versus a trial that diverges (a failed trial, the study goes on), and the
pruner fed every validation, several in one epoch included."""

from __future__ import annotations

import socket
import subprocess
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lit_meta.tuning import cli as tune_cli
from lit_meta.tuning.report import write_csv
from lit_meta.tuning.storage import open_storage
from tests.helpers.tuning import run_env, tune_command


def _tune(capsys, *argv: str) -> tuple[int, str]:
    """``lit-meta tune`` in this process: its exit status and its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        tune_cli.main(list(argv))
    return exit_info.value.code, capsys.readouterr().err


def _args(config: Path, space: Path, study: str, *more: str) -> list[str]:
    return tune_command(config, space, study, *more)[4:]


def _trials(tmp_path: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(f"journal:{tmp_path}/{study}.log")).get_trials()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# ---- 1, 2: storages that never answer, refuse, or cannot be opened --------------------------------


def test_a_storage_that_accepts_but_never_answers_is_refused_within_its_timeout(tiny_config, space_file, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        silent.listen(8)
        port = silent.getsockname()[1]
        # A hang would outlast the subprocess's limit (TimeoutExpired): the command must give up by itself.
        result = subprocess.run(
            tune_command(
                tiny_config, space_file, "silent", "--n_trials=1", "--storage_timeout=2",
                f"--storage=postgresql+psycopg2://me:secret@127.0.0.1:{port}/db",
            ),  # fmt: skip
            cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert _one_line(result.stderr) == (
        f"lit-meta tune: error: Expected a reachable storage at 'postgresql+psycopg2://me:***@127.0.0.1:{port}/db', "
        "but got no answer within 2 s."
    )


def test_a_refused_storage_is_one_line_without_the_password(tiny_config, space_file, tmp_path):
    port = _closed_port()
    result = subprocess.run(
        tune_command(
            tiny_config, space_file, "refused", "--n_trials=1",
            f"--storage=postgresql+psycopg2://me:secret@127.0.0.1:{port}/db",
        ),  # fmt: skip
        cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert _one_line(result.stderr) == (
        f"lit-meta tune: error: Expected a reachable storage at 'postgresql+psycopg2://me:***@127.0.0.1:{port}/db', "
        "but got: connection refused."
    )


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("foo://x", "but got 'foo://x' (SQLAlchemy has no dialect 'foo')."),
        (
            "mysql+mysqldb://me:secret@127.0.0.1/db",
            "but got 'mysql+mysqldb://me:***@127.0.0.1/db' (its driver 'MySQLdb' is not installed).",
        ),
        ("postgresql+psycopg2://me:secret@127.0.0.1:notaport/db", "but got 'postgresql+psycopg2://me:***@"),
    ],
)
def test_a_storage_url_without_an_installed_driver_is_one_line(
    storage, expected, tiny_config, space_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, stderr = _tune(capsys, *_args(tiny_config, space_file, "s", "--n_trials=1", f"--storage={storage}"))
    assert code == 2
    line = _one_line(stderr)
    assert line.startswith(
        "lit-meta tune: error: Expected `storage` 'journal:PATH' or an SQLAlchemy URL of an installed database driver, "
    )
    assert expected in line and "secret" not in line


def test_the_storage_timeout_must_be_positive(space_file):
    with pytest.raises(ValueError, match=r"Expected `storage_timeout` >= 1, but got 0\."):
        tune_cli.parse(
            ["--config=c.yaml", f"--search={space_file}", "--study=s", "--n_trials=1", "--storage_timeout=0"]
        )


# ---- 3: output paths, checked before the first trial ----------------------------------------------


@pytest.mark.parametrize("option", ["table", "export"])
def test_an_output_under_a_regular_file_is_refused_before_any_trial(
    option, tiny_config, space_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("in the way\n")
    target = tmp_path / "file" / "out.csv"
    code, stderr = _tune(capsys, *_args(tiny_config, space_file, "s", "--n_trials=1", f"--{option}={target}"))
    assert code == 2
    assert _one_line(stderr) == (
        f"lit-meta tune: error: Expected `{option}` in a folder that can be written, but got '{target}' "
        f"('{tmp_path / 'file'}' is not a folder)."
    )
    assert not list(tmp_path.glob("studies/*.log"))  # no study, no trial


def test_an_output_that_is_a_folder_is_refused_before_any_trial(tiny_config, space_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    code, stderr = _tune(capsys, *_args(tiny_config, space_file, "s", "--n_trials=1", "--table=out"))
    assert code == 2
    assert _one_line(stderr) == (
        "lit-meta tune: error: Expected `table` in a folder that can be written, but got 'out' (a folder)."
    )


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0, reason="root writes")
def test_an_output_in_a_read_only_folder_is_refused_before_any_trial(
    tiny_config, space_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, stderr = _tune(capsys, *_args(tiny_config, space_file, "s", "--n_trials=1", f"--export={locked}/b.yaml"))
    assert code == 2
    assert "Expected `export` in a folder that can be written" in _one_line(stderr)


def test_the_table_is_replaced_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old\n")
    write_csv([{"number": 0, "state": "COMPLETE"}], path)
    assert path.read_text().splitlines() == ["number,state", "0,COMPLETE"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


# ---- 4: a bug in a trial stops the study; a trial that diverges is a failed trial -----------------


def _learner(config: Path, class_path: str) -> Path:
    path = config.with_name(f"{class_path.rsplit('.', 1)[-1]}.yaml")
    path.write_text(config.read_text().replace("lit_meta.algorithms.MAML", class_path))
    return path


def test_a_bug_in_a_trial_stops_the_study_with_its_traceback(tiny_config, space_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _learner(tiny_config, "tests.helpers.tuning.BuggyMAML")
    code, stderr = _tune(
        capsys,
        *_args(config, space_file, "bug", "--n_trials=3", "--pruner=none", f"--storage=journal:{tmp_path}/bug.log"),
    )
    assert code == 1, stderr
    assert "Traceback (most recent call last)" in stderr and 'raise TypeError("boom' in stderr
    assert stderr.strip().splitlines()[-1] == (
        "lit-meta tune: error: Expected trials that succeed or fail as expected (out of memory, diverged), "
        "but trial 0 raised TypeError: boom: a bug in the learner's training step; the study stops (traceback above)."
    )
    assert [t.state for t in _trials(tmp_path, "bug")] == [TrialState.FAIL]  # no second trial


def test_a_trial_that_diverges_fails_and_the_study_goes_on(tiny_config, space_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _learner(tiny_config, "tests.helpers.tuning.DivergingMAML")
    code, stderr = _tune(
        capsys,
        *_args(
            config, space_file, "nan", "--n_trials=2", "--pruner=none", "--trainer.max_steps=5",
            f"--storage=journal:{tmp_path}/nan.log",
        ),
    )  # fmt: skip
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "lit-meta tune: error: no trial of study 'nan' completed; see the table above."
    )
    assert [t.state for t in _trials(tmp_path, "nan")] == [TrialState.FAIL, TrialState.FAIL]


def test_a_metric_the_trial_does_not_log_stops_the_study_as_a_mistake(
    tiny_config, space_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = _args(tiny_config, space_file, "m", "--n_trials=3", "--pruner=none", f"--storage=journal:{tmp_path}/m.log")
    code, stderr = _tune(capsys, *[a if a != "--monitor=val/loss" else "--monitor=val/nope" for a in argv])
    assert code == 2 and "Traceback" not in stderr  # the trial ran: Lightning's lines come before
    assert stderr.strip().splitlines()[-1] == (
        "lit-meta tune: error: Expected the monitored `val/nope` among the logged metrics, "
        "but got train/loss, val/loss."
    )
    assert [t.state for t in _trials(tmp_path, "m")] == [TrialState.FAIL]


# ---- 5: the pruner sees every validation --------------------------------------------------------


def test_every_validation_of_one_epoch_is_reported_at_its_count(tiny_config, space_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = _args(
        tiny_config, space_file, "v", "--n_trials=1", "--pruner=none", f"--storage=journal:{tmp_path}/v.log",
        "--data.init_args.train_batches_per_epoch=15", "--trainer.max_steps=15", "--trainer.val_check_interval=5",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tune_cli.main(argv)
    (trial,) = _trials(tmp_path, "v")
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["steps"] == 15
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # three validations, all in epoch 0
    assert trial.value == min(trial.intermediate_values.values())
    assert not [w for w in caught if "already reported" in str(w.message)]
