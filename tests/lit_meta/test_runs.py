"""Runs never overwrite one another (lit_meta.runs): a new run into an existing run's folder is refused,
``--ckpt_path last`` resumes only this run's checkpoint, checkpoints are written atomically, and a
folder or disk that cannot be written is one line."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_meta.files import atomic_torch_save
from lit_meta.runs import AtomicCheckpointIO, run_fingerprint
from tests.helpers import ROOT
from tests.helpers.learners import FEATURES, WAYS
from tests.lit_meta.test_checkpoints import one_line_exit

CONFIG = {
    "seed_everything": 0,
    "model": {
        "class_path": "lit_meta.algorithms.MAML",
        "init_args": {
            "backbone": {
                "class_path": "lit_meta.models.MLP",
                "init_args": {"in_features": FEATURES, "hidden": [8], "out_features": WAYS},
            },
            "loss": "cross_entropy",
            "inner_lr": 0.1,
            "eval_inner_steps": 1,
        },
    },
    "data": {"class_path": "tests.helpers.learners.BlobsDataModule"},
    "trainer": {
        "max_steps": 2,
        "limit_val_batches": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"filename": "last"}}],
    },
    "test_after_fit": "none",
}


def config_file(folder: Path, name: str = "run", inner_lr: float = 0.1) -> str:
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    config["model"]["init_args"]["inner_lr"] = inner_lr
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def fit(config: str, logs: Path, *options: str) -> None:
    from lit_meta.cli import main

    main(["fit", f"--config={config}", f"--trainer.logger.init_args.save_dir={logs}", *options])


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_a_new_run_into_an_existing_runs_folder_is_refused_unless_told_to_overwrite(tmp_path, capsys):
    config = config_file(tmp_path)
    fit(config, tmp_path / "logs", "--trainer.logger.init_args.version=mine")
    run = tmp_path / "logs" / "mine"
    before = hashes(run)
    assert "checkpoints/last.ckpt" in before
    again = ["fit", f"--config={config}", f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}"]
    code, line = one_line_exit(capsys, [*again, "--trainer.logger.init_args.version=mine"])
    assert code == 2
    assert line.startswith("lit-meta fit: error: Expected a new version folder for a new run, but got ")
    assert hashes(run) == before
    fit(
        config,
        tmp_path / "logs",
        "--trainer.logger.init_args.version=mine",
        "--overwrite=true",
        "--trainer.max_steps=1",
    )
    assert step_of(run / "checkpoints" / "last.ckpt") == 1
    assert len(list(run.glob("events.out.tfevents*"))) == 1  # the old run's files are gone, not mixed in


def test_resuming_last_takes_this_runs_checkpoint_not_the_newest_in_the_folder(tmp_path):
    logs = tmp_path / "logs"
    mine, other = config_file(tmp_path, "mine", 0.1), config_file(tmp_path, "other", 0.2)
    fit(mine, logs)  # version_0
    fit(other, logs)  # version_1, newer: what `--ckpt_path last` used to take
    others = hashes(logs / "version_1")
    fit(mine, logs, "--ckpt_path=last", "--trainer.max_steps=3")
    assert step_of(logs / "version_0" / "checkpoints" / "last.ckpt") == 3
    assert hashes(logs / "version_1") == others
    assert not (logs / "version_2").exists()


def test_two_runs_of_one_configuration_in_a_folder_are_not_resumed_by_guess(tmp_path, capsys):
    logs, config = tmp_path / "logs", config_file(tmp_path)
    fit(config, logs)
    fit(config, logs)
    before = hashes(logs)
    resume = ["fit", f"--config={config}", f"--trainer.logger.init_args.save_dir={logs}", "--ckpt_path=last"]
    code, line = one_line_exit(capsys, [*resume, "--trainer.max_steps=3"])
    assert code == 2
    assert "Expected one run of this configuration to resume under" in line
    assert "version_0, version_1" in line
    assert hashes(logs) == before


def test_a_named_version_holding_another_runs_checkpoint_is_not_resumed(tmp_path, capsys):
    logs = tmp_path / "logs"
    fit(config_file(tmp_path, "other", 0.2), logs, "--trainer.logger.init_args.version=shared")
    before = hashes(logs)
    mine = config_file(tmp_path, "mine", 0.1)
    resume = ["fit", f"--config={mine}", f"--trainer.logger.init_args.save_dir={logs}", "--ckpt_path=last"]
    code, line = one_line_exit(capsys, [*resume, "--trainer.logger.init_args.version=shared"])
    assert code == 2
    assert "of another run (fingerprint" in line
    assert hashes(logs) == before


def test_the_fingerprint_is_the_learner_the_data_and_the_seed_not_where_data_lives():
    model, data = CONFIG["model"], {"class_path": "d.D", "init_args": {"ways": 5, "data_dir": "/a"}}
    same = run_fingerprint(model, {"class_path": "d.D", "init_args": {"ways": 5, "data_dir": "/b"}}, 0)
    assert run_fingerprint(model, data, 0) == same
    assert run_fingerprint(model, {"class_path": "d.D", "init_args": {"ways": 20}}, 0) != same
    assert run_fingerprint(model, data, 1) != same
    assert run_fingerprint(model, data, True) == run_fingerprint(model, data, None)  # a random seed is no identity


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left") as info:
        atomic_torch_save({"step": 2}, path)
    assert info.value.filename == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_an_unwritable_log_folder_is_one_line_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    config = config_file(tmp_path)
    logs = tmp_path / "a_file" / "logs"
    code, line = one_line_exit(capsys, ["fit", f"--config={config}", f"--trainer.logger.init_args.save_dir={logs}"])
    assert code == 2
    assert line == (
        f"lit-meta fit: error: Expected the log folder (`trainer.logger.init_args.save_dir`) "
        f"'{logs}' to be writable, but got: Not a directory."
    )


FULL_DISK = """
import resource, signal, sys
import tests.helpers.learners  # the config's data, imported before the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from lit_meta.cli import main
main(sys.argv[2:])
"""


def test_a_full_disk_during_a_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    logs, config = tmp_path / "logs", config_file(tmp_path)
    fit(config, logs, "--trainer.logger.init_args.version=run")
    last = logs / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    args = ["fit", f"--config={config}", f"--trainer.logger.init_args.save_dir={logs}"]
    args += ["--trainer.logger.init_args.version=run", "--ckpt_path=last", "--trainer.max_steps=4"]
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(len(before) // 2), *args], cwd=ROOT, capture_output=True, text=True
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert lines[-1].startswith(f"lit-meta fit: error: Expected to write '{last}', but got: File too large;")
    assert not any("Traceback" in line for line in lines)
    assert last.read_bytes() == before
