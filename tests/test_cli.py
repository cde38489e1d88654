"""The `lit-meta` command: every config runs, every argument is visible, bad values are named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
    return overrides + [
        f"--data.data_dir={folder}",
        "--data.download=false",
        "--data.val_tasks=2",
        "--data.test_tasks=2",
    ]


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
    run_cli(
        "fit",
        "--config",
        str(config),
        *overrides,
        "--trainer.fast_dev_run",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    )


def test_validate_subcommand_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli("validate", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--trainer.fast_dev_run", "1")


def test_print_config_shows_every_maml_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model = config["model"]["init_args"]
    assert set(model) == {
        "backbone",
        "inner_lr",
        "inner_steps",
        "eval_inner_steps",
        "first_order",
        "inner_loop",
        "backward_per_task",
        "loss",
        "optimizer",
        "lr_scheduler",
    }
    assert model["optimizer"]["init_args"]["lr"] == 0.001
    assert {"shots", "queries", "eval_shots", "meta_batch_size", "seed"} <= set(config["data"]["init_args"])


SINUSOID = str(ROOT / "configs" / "sinusoid_maml.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--data.shots=-3", "Expected `shots` >= 1, but got -3."),
        ("--model.inner_steps=0", "Expected `inner_steps` >= 1, but got 0."),
        ("--model.inner_lr=-1", "Expected `inner_lr` > 0, but got -1.0."),
        ("--model.loss=l1", "Expected `model.loss` to be one of 'mse', 'cross_entropy', but got 'l1'."),
        ("--data.shots=abc", "Expected `data.shots` to be int, but got 'abc'."),
        (
            "--model.inner_lrr=0.1",
            "Expected a parameter of lit_meta.algorithms.MAML, but got `model.inner_lrr` (did you mean "
            "`model.inner_lr`?).",
        ),
        (
            "--trainer.max_stepz=3",
            "Expected known options, but got `--trainer.max_stepz` (did you mean `--trainer.max_steps`?).",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(override, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", SINUSOID, override, "--trainer.fast_dev_run", "1")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"lit-meta fit: error: {message}"


def test_the_whole_stderr_of_a_bad_value_is_at_most_three_lines(tmp_path):
    command = [str(Path(sys.executable).parent / "lit-meta"), "fit", "--config", SINUSOID, "--data.shots", "0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3, result.stderr
    assert lines[-1] == "lit-meta fit: error: Expected `shots` >= 1, but got 0."


def test_more_ways_than_the_backbone_outputs_stops_before_the_first_step(tmp_path, monkeypatch, capsys):
    config = ROOT / "configs" / "omniglot_maml_minimal_5w1s.yaml"
    overrides = small_data_for(config, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(config), *overrides, "--data.ways=6", "--trainer.fast_dev_run=1")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == "lit-meta fit: error: Expected `data.ways` <= 5 (the backbone's `out_features`), but got 6."


def test_evaluation_ways_are_checked_too(tmp_path, monkeypatch, capsys):
    config = ROOT / "configs" / "omniglot_maml_minimal_5w1s.yaml"
    overrides = small_data_for(config, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_cli("validate", "--config", str(config), *overrides, "--data.eval_ways=7", "--trainer.fast_dev_run=1")
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("Expected `data.eval_ways` <= 5 (the backbone's `out_features`), but got 7.")
    )


def test_no_config_is_written_into_the_working_directory_without_a_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli(
        "fit",
        "--config",
        SINUSOID,
        "--trainer.logger=false",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=[]",
        "--data.test_tasks=2",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_config_is_saved_in_the_log_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_cli(
        "fit",
        "--config",
        SINUSOID,
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks=[]",
        "--trainer.logger.init_args.version=run",
        "--data.test_tasks=2",
    )
    assert not (tmp_path / "config.yaml").exists()
    assert (
        yaml.safe_load((tmp_path / "lightning_logs" / "run" / "config.yaml").read_text())["trainer"]["max_steps"] == 2
    )


def test_fit_then_test_write_meta_test_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        "--config",
        str(ROOT / "configs" / "sinusoid_maml.yaml"),
        "--data.train_batches_per_epoch=5",
        "--data.val_tasks=4",
        "--data.test_tasks=30",
        "--data.eval_queries=10",
    ]
    run_cli("fit", *common, "--trainer.max_steps=10", "--trainer.check_val_every_n_epoch=1")  # 2 validations
    fit_dir = tmp_path / "lightning_logs" / "version_0"
    results = json.loads((fit_dir / "meta_test.json").read_text())
    assert results["metric"] == "mse" and results["num_tasks"] == 30 and results["shots"] == 5
    assert list(results["steps"]) == [str(k) for k in range(11)]
    assert all(set(v) == {"mean", "ci95"} and v["ci95"] > 0 for v in results["steps"].values())
    assert (fit_dir / "hparams.yaml").exists() and list(fit_dir.glob("events.out.tfevents.*"))
    # The demo config logs the adaptation curve and a sinusoid episode to TensorBoard.
    events = EventAccumulator(str(fit_dir), size_guidance={"images": 0})
    events.Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    assert {f"adaptation/mse_step{k}" for k in range(11)} <= set(scalars) and "adaptation/loss_step0" in scalars
    assert {"adaptation/curve", "episode"} <= set(images)

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
