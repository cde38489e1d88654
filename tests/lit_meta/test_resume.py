"""Training that survives a kill: `lit-meta fit --ckpt_path last` after a SIGKILL continues the same
run, to final weights bitwise equal to an uninterrupted run's; a checkpoint of another learner or of
other episodes is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from datamodules import SinusoidDataModule
from lit_meta.algorithms import MetaSGD
from lit_meta.cli import run
from lit_meta.models import MLP
from tests.helpers import ROOT
from tests.helpers.fabricate import minimal_omniglot

# 10 steps in epochs of 4, validation every epoch, `last.ckpt` every 3 steps: a kill after step 5 resumes
# from step 3 (mid-epoch 0), one after step 8 from step 6 (mid-epoch 1, after a validation). (A checkpoint
# written after an epoch's last step but before its validation resumes without that validation, by
# Lightning's design; lit-meta's configs write `last.ckpt` after each validation, where it cannot arise.)
CALLBACKS = [
    {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"filename": "last", "every_n_train_steps": 3},
    },
    {"class_path": "callbacks.AdaptationCurve", "init_args": {"num_tasks": 2, "max_steps": 2}},
]
TRAINER = {
    "accelerator": "cpu",
    "max_steps": 10,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 1,
}
SCHEDULE = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 10}}


def omniglot_config(data_dir: str) -> dict:
    """Reptile (its inner loop shuffles with torch's global stream, its step size anneals), fabricated Omniglot."""
    return {
        "model": {
            "class_path": "lit_meta.algorithms.Reptile",
            "init_args": {
                "backbone": {"class_path": "lit_meta.models.CNN4", "init_args": {"out_features": 3, "hidden": 4}},
                "inner_lr": 0.1,
                "inner_steps": 2,
                "inner_batch_size": 2,  # mini-batches of the support set, in a random order
                "eval_inner_steps": 1,
            },
        },
        "data": {
            "class_path": "datamodules.OmniglotDataModule",
            "init_args": {
                "data_dir": data_dir,
                "split": "minimal",
                "download": False,
                "ways": 3,
                "queries": 2,
                "meta_batch_size": 2,
                "train_batches_per_epoch": 4,
                "val_tasks": 2,
                "test_tasks": 2,
            },
        },
    }


def sinusoid_config(data_dir: str) -> dict:
    """Second-order MAML on sinusoids (the training stream keyed by step, not a running generator)."""
    return {
        "model": {
            "class_path": "lit_meta.algorithms.MAML",
            "init_args": {
                "backbone": {
                    "class_path": "lit_meta.models.MLP",
                    "init_args": {"in_features": 1, "hidden": [8], "out_features": 1},
                },
                "inner_lr": 0.01,
                "eval_inner_steps": 2,
                "loss": "mse",
                "lr_scheduler": SCHEDULE,
            },
        },
        "data": {
            "class_path": "datamodules.SinusoidDataModule",
            "init_args": {"meta_batch_size": 3, "train_batches_per_epoch": 4, "val_tasks": 2, "test_tasks": 2},
        },
    }


CONFIGS = {"omniglot": omniglot_config, "sinusoid": sinusoid_config}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return minimal_omniglot(str(tmp_path_factory.mktemp("omniglot")))


def write_config(path: Path, config: dict, save_dir: Path, kill_at: int | None = None, rank: int | None = None) -> Path:
    kill = {"class_path": "tests.helpers.kill.KillAt", "init_args": {"step": kill_at, "rank": rank}}
    callbacks = CALLBACKS + ([kill] if kill_at else [])
    full = {
        "seed_everything": 0,
        "num_threads": 1,
        "test_after_fit": "none",
        "trainer": {
            **TRAINER,
            "callbacks": callbacks,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(save_dir), "name": ""},
            },
        },
        **config,
    }
    path.write_text(yaml.safe_dump(full))
    return path


def fit_process(config: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lit-meta fit --config CONFIG ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "lit_meta.cli", "fit", f"--config={config}", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def same(a, b) -> bool:
    """``a == b`` for nested dicts, lists and tensors (tensors bitwise)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def final_state(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """The final weights and adaptation-curve state of each uninterrupted run."""
    out = {}
    for name, make in CONFIGS.items():
        root = tmp_path_factory.mktemp(f"full_{name}")
        cli = run(["fit", f"--config={write_config(root / 'c.yaml', make(data_dir), root / 'logs')}"])
        curve = next(c for c in cli.trainer.callbacks if type(c).__name__ == "AdaptationCurve")
        out[name] = (final_state(cli), curve.state_dict())
    return out


@pytest.mark.parametrize(("name", "kill_at"), [("omniglot", 5), ("sinusoid", 8)])
def test_a_run_killed_mid_training_resumes_to_bitwise_equal_weights(name, kill_at, data_dir, uninterrupted, tmp_path):
    config = CONFIGS[name](data_dir)
    killed = write_config(tmp_path / "killed.yaml", config, tmp_path / "logs", kill_at=kill_at)
    result = fit_process(killed, cwd=tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    saved = torch.load(tmp_path / "logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3 * ((kill_at - 1) // 3)  # the latest checkpoint before the kill

    # The same command line with `--ckpt_path last`: the same run folder, its last checkpoint.
    config_path = write_config(tmp_path / "c.yaml", config, tmp_path / "logs")
    cli = run(["fit", f"--config={config_path}", "--ckpt_path=last"])
    assert cli.trainer.global_step == TRAINER["max_steps"] and cli.trainer.logger.version == "version_0"
    weights, curve = uninterrupted[name]
    resumed = final_state(cli)
    assert resumed.keys() == weights.keys()
    for key in weights:
        assert torch.equal(resumed[key], weights[key]), f"{key} differs after resuming"
    resumed_curve = next(c for c in cli.trainer.callbacks if type(c).__name__ == "AdaptationCurve").state_dict()
    assert same(resumed_curve, curve), "the adaptation-curve history differs after resuming"


@pytest.fixture(scope="module")
def sinusoid_checkpoint(data_dir, tmp_path_factory):
    """A ``last.ckpt`` of sinusoid MAML after 3 steps, and its config."""
    root = tmp_path_factory.mktemp("short")
    config = sinusoid_config(data_dir)
    path = write_config(root / "c.yaml", config, root / "logs")
    run(["fit", f"--config={path}", "--trainer.max_steps=3"])
    return root / "logs" / "version_0" / "checkpoints" / "last.ckpt", path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "--model.class_path=lit_meta.algorithms.MetaSGD",
            "Expected a checkpoint of lit_meta.algorithms.MetaSGD to resume this run, but got one of "
            "lit_meta.algorithms.MAML.",
        ),
        (
            "--data.init_args.shots=5",
            "Expected a checkpoint written for training episodes shots=5, queries=10, meta_batch_size=3 to resume "
            "this run, but got one for shots=10, queries=10, meta_batch_size=3; resume with the episodes it was "
            "written for, or start a new run.",
        ),
    ],
)
def test_resuming_from_a_checkpoint_of_another_learner_or_other_episodes_is_refused(
    sinusoid_checkpoint, override, message, tmp_path, capsys
):
    checkpoint, config = sinusoid_checkpoint
    logs = f"--trainer.logger.init_args.save_dir={tmp_path}"
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", f"--config={config}", override, f"--ckpt_path={checkpoint}", logs])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"lit-meta fit: error: {message}"


def test_a_learner_resuming_another_learners_checkpoint_from_python_is_refused(sinusoid_checkpoint):
    checkpoint, _ = sinusoid_checkpoint
    learner = MetaSGD(MLP(in_features=1, hidden=[8], out_features=1), inner_lr=0.01, loss="mse")
    trainer = Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"Expected a checkpoint of lit_meta\.algorithms\.metasgd\.MetaSGD to resume "):
        trainer.fit(learner, SinusoidDataModule(meta_batch_size=3), ckpt_path=checkpoint)


def test_evaluating_a_checkpoint_on_other_episodes_is_not_a_resume(sinusoid_checkpoint, tmp_path):
    checkpoint, config = sinusoid_checkpoint
    logs = f"--trainer.logger.init_args.save_dir={tmp_path}"
    cli = run(["test", f"--config={config}", "--data.init_args.shots=5", f"--ckpt_path={checkpoint}", logs])
    assert "test/loss" in cli.trainer.callback_metrics


def test_a_ddp_rank_that_dies_stops_the_other_with_a_clear_error_and_the_run_resumes(data_dir, tmp_path):
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=6"]
    killed = write_config(tmp_path / "killed.yaml", sinusoid_config(data_dir), tmp_path / "logs", kill_at=4, rank=1)
    started = time.monotonic()
    result = fit_process(killed, *ddp, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert elapsed < 120, f"rank 0 took {elapsed:.0f} s to stop"
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("lit-meta fit: error: Expected every DDP process to keep running, but rank 0 lost its peers (")
    )
    assert result.stderr.strip().endswith("Resume the run with `--ckpt_path last`.")
    config = write_config(tmp_path / "c.yaml", sinusoid_config(data_dir), tmp_path / "logs")
    resumed = fit_process(config, *ddp, "--ckpt_path=last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    checkpoints = sorted((tmp_path / "logs" / "version_0" / "checkpoints").glob("last*.ckpt"), key=os.path.getmtime)
    assert torch.load(checkpoints[-1], weights_only=True)["global_step"] == 6
