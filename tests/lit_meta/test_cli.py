"""The `lit-meta` command: every config runs, every argument is visible, bad values are named."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ProgressBar
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import datamodules.omniglot
from datamodules.episodic import EpisodicDataModule
from lit_meta.algorithms import MAML
from lit_meta.cli import MetaCLI, run
from tests.helpers import ROOT
from tests.helpers.configs import DISTILL_STACKS, STACKED, TUNE_SEARCHES
from tests.helpers.fabricate import minimal_omniglot, omniglot_zip
from tests.helpers.fabricate_vision import mini_imagenet

CONFIG_DIR = ROOT / "configs"
FEDERATED = (CONFIG_DIR / "federated").resolve()


def is_component(path: Path) -> bool:
    """A file that a config names by path as one value (a backbone): a ``class_path`` at its top level."""
    return "class_path" in (yaml.safe_load(path.read_text()) or {})


def find_experiments() -> dict[str, list[Path]]:
    """Every experiment of configs/, by name: the files to pass, in order, as repeated ``--config``.

    A YAML file directly in configs/ is a whole experiment. A folder with a base.yaml is a family:
    base.yaml is shared; every other file is an experiment stacked on base.yaml, except components
    (see :func:`is_component`) and 5-shot add-ons: ``ALGO_5shot.yaml`` is stacked on base.yaml and
    ``ALGO_5w1s.yaml``, the experiment ``ALGO_5w5s``.
    """
    add_ons = {CONFIG_DIR / stack[-1] for stack in STACKED.values()}
    experiments = {path.stem: [path] for path in sorted(CONFIG_DIR.glob("*.yaml")) if path not in add_ons}
    for base in sorted(CONFIG_DIR.glob("*/base.yaml")):
        family = base.parent
        for path in sorted(family.glob("*.yaml")):
            if path == base or is_component(path) or path in add_ons:
                continue
            if path.stem.endswith("_5shot"):
                algorithm = path.stem.removesuffix("_5shot")
                experiments[f"{family.name}/{algorithm}_5w5s"] = [base, family / f"{algorithm}_5w1s.yaml", path]
            else:
                experiments[f"{family.name}/{path.stem}"] = [base, path]
    for name, (stack, _) in TUNE_SEARCHES.items():
        experiments[name] = [CONFIG_DIR / path for path in stack]
    for name, stack in (DISTILL_STACKS | STACKED).items():
        experiments[name] = [CONFIG_DIR / path for path in stack]
    return experiments


EXPERIMENTS = find_experiments()
OMNIGLOT_MAML = EXPERIMENTS["omniglot/maml_5w1s"]


def config_args(stack: list[Path]) -> list[str]:
    return [arg for path in stack for arg in ("--config", str(path))]


def run_cli(*args: str) -> MetaCLI | None:
    return run(list(args))


def test_there_are_configs():
    assert EXPERIMENTS, "configs/ holds no YAML"
    assert {name.split("/")[0] for name in EXPERIMENTS} >= {"omniglot", "omniglot_standard", "miniimagenet"}


def named_files(path: Path) -> set[Path]:
    """The YAML files that ``path`` names as values (resolved next to it), and those they name."""

    def values(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from values(value)
        elif isinstance(node, list):
            for value in node:
                yield from values(value)
        else:
            yield node

    named = set()
    for value in values(yaml.safe_load(path.read_text())):
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            target = (path.parent / value).resolve()
            named |= {target} | named_files(target)
    return named


def test_every_config_file_is_used_by_an_experiment():
    used = set()
    for name, stack in EXPERIMENTS.items():
        missing = [str(path.relative_to(ROOT)) for path in stack if not path.exists()]
        assert not missing, f"{name} stacks missing files: {missing}"
        for path in stack:
            used |= {path.resolve()} | named_files(path)
    files = {path.resolve() for path in CONFIG_DIR.rglob("*") if path.suffix in (".yaml", ".yml")}
    # `lit-meta federate` configs: each is run by tests/lit_meta/federated/test_cli.py.
    files = {path for path in files if FEDERATED not in path.parents}
    used |= {(CONFIG_DIR / space).resolve() for _, space in TUNE_SEARCHES.values()}
    assert sorted(str(path.relative_to(ROOT)) for path in files - used) == []


def merged(first, second):
    """``second`` over ``first``, mappings key by key, as repeated ``--config`` files merge."""
    if isinstance(first, dict) and isinstance(second, dict):
        return {**first, **{key: merged(first.get(key), value) for key, value in second.items()}}
    return second


def small_data_for(stack: list[Path], folder: Path, monkeypatch) -> list[str]:
    """Overrides that point a config stack at small fabricated data in the same format as the real one."""
    data = {}
    for path in stack:
        data = merged(data, yaml.safe_load(path.read_text()).get("data", {}))
    overrides = ["--data.meta_batch_size=2"]
    model = {}
    for path in stack:
        model = merged(model, yaml.safe_load(path.read_text()).get("model", {}))
    if (model.get("init_args") or {}).get("eval_inner_steps", 0) > 10:
        # Reptile's 50 evaluation steps on 84x84 images took half a minute of a one-step smoke run.
        overrides.append("--model.eval_inner_steps=10")
    if data["class_path"].endswith("OmniglotDataModule"):
        split = data["init_args"]["split"]
        if split == "standard":
            # 48 fabricated characters stand in for the 1,623 real ones: 6 train (x4 rotated), 20 val, 22 test.
            monkeypatch.setattr(datamodules.omniglot, "STANDARD_TRAIN", 6)
            monkeypatch.setattr(datamodules.omniglot, "STANDARD_VAL", 20)
            for archive in ("images_background", "images_evaluation"):
                omniglot_zip(str(folder), archive, alphabets=2, characters=12)
        else:  # within one alphabet, 20-way tasks need 20 characters in an alphabet
            minimal_omniglot(str(folder), characters=20 if data["init_args"].get("eval_within_alphabet") else 12)
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


@pytest.mark.parametrize("stack", [pytest.param(stack, id=name) for name, stack in EXPERIMENTS.items()])
def test_config_runs_with_fast_dev_run(stack, tmp_path, monkeypatch):
    overrides = small_data_for(stack, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)  # runs log under ./lightning_logs
    common = [*config_args(stack), "--trainer.accelerator", "cpu", *overrides]
    # Two training and validation steps; one for mini-ImageNet, whose CNN-4 on 84x84 images takes
    # most of the suite's time on CPU (up to 50 s a config with two).
    steps = 1 if stack[0].parent.name == "miniimagenet" else 2
    teacher_stack = [path for path in stack if path.parent.name != "distill"]
    if teacher_stack != stack:  # a student: one meta-training step of its teacher (the stack before distill/) first
        teacher = ["--trainer.max_steps=1", "--data.train_batches_per_epoch=1", "--trainer.check_val_every_n_epoch=1"]
        teacher.append("--test_after_fit=none")
        run_cli("fit", *config_args(teacher_stack), "--trainer.accelerator", "cpu", *overrides, *teacher)
        common.append(f"--model.init_args.teacher_ckpt={next(tmp_path.rglob('last.ckpt'))}")
    cli = run_cli("fit", *common, "--trainer.fast_dev_run", str(steps))
    assert cli.trainer.global_step == steps
    assert {"train/loss", "val/loss"} <= set(cli.trainer.logged_metrics)


def test_print_config_of_a_stack_resolves_every_episode_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *config_args(EXPERIMENTS["omniglot/protonet_20w1s"]), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    data = config["data"]
    assert data["class_path"] == "datamodules.OmniglotDataModule"
    # The Omniglot datamodule passes the episode arguments on through **kwargs; all of them are listed.
    parameters = inspect.signature(EpisodicDataModule.__init__).parameters.values()
    episode_arguments = {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    assert episode_arguments <= set(data["init_args"])
    # base.yaml's values, the experiment's file over them, the backbone file it names.
    assert data["init_args"]["data_dir"] is None and data["init_args"]["shots"] == 1  # the user data folder
    assert data["init_args"]["ways"] == 40 and data["init_args"]["eval_ways"] == 20
    assert config["trainer"]["check_val_every_n_epoch"] == 2 and config["trainer"]["max_steps"] == 2000
    assert config["model"]["init_args"]["backbone"]["init_args"]["downsample"] == "maxpool"


def test_print_config_shows_the_maml_plus_plus_options_off_by_default_and_on_in_its_config(capsys):
    options = {"learn_inner_lrs", "multi_step_loss_steps", "first_order_steps", "per_step_batch_norm"}
    shown = {}
    for name in ("omniglot/maml_5w1s", "omniglot/maml_plus_plus_5w1s"):
        with pytest.raises(SystemExit):
            run_cli("fit", *config_args(EXPERIMENTS[name]), "--print_config")
        model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
        shown[name] = {option: model[option] for option in options}
    assert shown["omniglot/maml_5w1s"] == dict.fromkeys(options, False) | {
        "multi_step_loss_steps": 0,
        "first_order_steps": 0,
    }
    assert shown["omniglot/maml_plus_plus_5w1s"] == {
        "learn_inner_lrs": True,
        "multi_step_loss_steps": 500,
        "first_order_steps": 500,
        "per_step_batch_norm": True,
    }


def test_disabling_the_progress_bar_drops_the_configs_progress_bar(tmp_path, monkeypatch):
    overrides = small_data_for(OMNIGLOT_MAML, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    # The config lists callbacks.MetaProgressBar; Lightning alone would refuse the combination.
    cli = run_cli(
        "fit",
        *config_args(OMNIGLOT_MAML),
        *overrides,
        "--trainer.fast_dev_run",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert cli.trainer.global_step == 1
    assert not any(isinstance(callback, ProgressBar) for callback in cli.trainer.callbacks)


def test_validate_subcommand_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli("validate", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--trainer.fast_dev_run", "1")
    assert cli.trainer.global_step == 0 and "val/loss" in cli.trainer.logged_metrics


def test_print_config_shows_every_maml_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(ROOT / "configs" / "sinusoid_maml.yaml"), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model = config["model"]["init_args"]
    # Every constructor argument, the MAML++ options included (read from the signature).
    arguments = {name for name in inspect.signature(MAML.__init__).parameters if name != "self"}
    assert set(model) == arguments and "learn_inner_lrs" in arguments
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
        ("--num_threads=0", "Expected `num_threads` >= 1, but got 0."),
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
    overrides = small_data_for(OMNIGLOT_MAML, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *config_args(OMNIGLOT_MAML), *overrides, "--data.ways=6", "--trainer.fast_dev_run=1")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == "lit-meta fit: error: Expected `data.ways` <= 5 (the backbone's `out_features`), but got 6."


def test_evaluation_ways_are_checked_too(tmp_path, monkeypatch, capsys):
    overrides = small_data_for(OMNIGLOT_MAML, tmp_path / "data", monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_cli("validate", *config_args(OMNIGLOT_MAML), *overrides, "--data.eval_ways=7", "--trainer.fast_dev_run=1")
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


@pytest.mark.parametrize(
    "code",
    [
        "import lit_meta.algorithms",
        "import datamodules",
        "from lit_meta.cli import main; main(['fit', '--help'])",
    ],
)
def test_without_learn2learn_one_line_says_how_to_install_it(code):
    code = f"import sys; sys.modules['learn2learn'] = None; {code}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "Expected learn2learn 0.2.0, but it is not installed: run `lit-meta install-learn2learn`" in result.stderr
    if "main(" in code:
        assert result.returncode == 2 and result.stderr.startswith("lit-meta fit: error: Expected learn2learn")
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_package_imports_and_the_installer_runs_without_learn2learn():
    code = (
        "import sys; sys.modules['learn2learn'] = None; import lit_meta; "
        "from lit_meta.cli import main; main(['install-learn2learn', '--help'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Build learn2learn 0.2.0 for this Python" in result.stdout
