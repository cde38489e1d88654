"""The `lit-meta` command: every config runs, every argument is visible, bad values are named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import datamodules.omniglot

from lit_meta.cli import main
from tests.fabricate import minimal_omniglot, omniglot_zip
from tests.fabricate_vision import mini_imagenet

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def run_cli(*args: str) -> None:
    main(list(args))


def test_there_are_configs():
    assert CONFIGS, "configs/ holds no YAML"


def small_data_for(config: Path, folder: Path, monkeypatch) -> list[str]:
    """Overrides that point a config at small fabricated data in the same format as the real one."""
    data = yaml.safe_load(config.read_text())["data"]
    overrides = ["--data.meta_batch_size=2"]
    if data["class_path"].endswith("OmniglotDataModule"):
        split = data["init_args"]["split"]
        if split == "standard":
            # 48 fabricated characters stand in for the 1,623 real ones: 6 train (x4 rotated), 20 val, 22 test.
            monkeypatch.setattr(datamodules.omniglot, "STANDARD_TRAIN", 6)
            monkeypatch.setattr(datamodules.omniglot, "STANDARD_VAL", 20)
            for archive in ("images_background", "images_evaluation"):
                omniglot_zip(str(folder), archive, alphabets=2, characters=12)
        else:
            minimal_omniglot(str(folder), characters=12)
    elif data["class_path"].endswith("MiniImageNetDataModule"):
        mini_imagenet(str(folder), classes=6, images=20)
        overrides.append("--data.ways=5")  # Prototypical Networks train 30-way; 6 fabricated classes per split
    else:
        return overrides
    return overrides + [f"--data.data_dir={folder}", "--data.download=false", "--data.val_tasks=2", "--data.test_tasks=2"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_runs_with_fast_dev_run(config, tmp_path, monkeypatch):
    overrides = small_data_for(config, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)  # runs log under ./lightning_logs
    common = ["--config", str(config), "--trainer.accelerator", "cpu", *overrides]
    # Two training and validation steps; one for mini-ImageNet, whose ResNet-12 on 84x84 images takes
    # most of the suite's time on CPU (up to 50 s a config with two).
    steps = "1" if config.name.startswith("miniimagenet") else "2"
    run_cli("fit", *common, "--trainer.fast_dev_run", steps)


def test_disabling_the_progress_bar_drops_the_configs_progress_bar(tmp_path, monkeypatch):
    config = ROOT / "configs" / "omniglot_maml_minimal_5w1s.yaml"
    overrides = small_data_for(config, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    # The config lists callbacks.MetaProgressBar; Lightning alone would refuse the combination.
    run_cli("fit", "--config", str(config), *overrides, "--trainer.fast_dev_run", "1", "--trainer.enable_progress_bar", "false")


def test_validate_subcommand_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("validate", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--trainer.fast_dev_run", "1")


def test_print_config_shows_every_maml_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model = config["model"]["init_args"]
    assert set(model) == {"backbone", "inner_lr", "inner_steps", "eval_inner_steps", "first_order", "inner_loop", "backward_per_task", "loss",
                          "optimizer", "lr_scheduler"}
    assert model["optimizer"]["init_args"]["lr"] == 0.001
    assert {"shots", "queries", "eval_shots", "meta_batch_size", "seed"} <= set(config["data"]["init_args"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("--data.shots=-3", r"Expected `shots` >= 1, but got -3\."),
        ("--model.inner_steps=0", r"Expected `inner_steps` >= 1, but got 0\."),
    ],
)
def test_bad_values_stop_with_the_argument_and_value(override, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=match):
        run_cli("fit", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), override, "--trainer.fast_dev_run", "1")


def test_unknown_loss_name_is_refused_by_the_parser(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--model.loss=l1")
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert 'Parser key "loss"' in err and "Got value: l1" in err


def test_fit_then_test_write_meta_test_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(ROOT / "configs" / "sinusoid_maml.yaml"),
              "--data.train_batches_per_epoch=5", "--data.val_tasks=4", "--data.test_tasks=30",
              "--data.eval_queries=10"]  # fmt: skip
    run_cli("fit", *common, "--trainer.max_steps=10", "--trainer.check_val_every_n_epoch=1")  # 2 validations
    fit_dir = tmp_path / "lightning_logs" / "version_0"
    results = json.loads((fit_dir / "meta_test.json").read_text())
    assert results["metric"] == "mse" and results["num_tasks"] == 30 and results["shots"] == 5
    assert list(results["steps"]) == [str(k) for k in range(11)]
    assert all(set(v) == {"mean", "ci95"} and v["ci95"] > 0 for v in results["steps"].values())
    assert (fit_dir / "hparams.yaml").exists() and list(fit_dir.glob("events.out.tfevents.*"))

    checkpoints = fit_dir / "checkpoints"
    assert {path.name for path in checkpoints.glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    # last.ckpt is the end of the run, whichever validation was best
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 10
    checkpoint = checkpoints / "best.ckpt"
    run_cli("test", *common, "--data.eval_shots=10", f"--ckpt_path={checkpoint}")
    results_10 = json.loads((tmp_path / "lightning_logs" / "version_1" / "meta_test.json").read_text())
    assert results_10["shots"] == 10 and results_10["num_tasks"] == 30


def test_console_script_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "lit-meta"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("fit", "validate", "test", "predict"))


def test_import_without_learn2learn_says_how_to_install():
    code = "import sys; sys.modules['learn2learn'] = None; import lit_meta"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "lit-meta needs learn2learn 0.2.0, which is not installed" in result.stderr
    assert "make setup" in result.stderr
