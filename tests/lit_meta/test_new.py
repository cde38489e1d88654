"""`lit-meta new DIR --example NAME`: example projects a user copies and owns. Each writes its files,
refuses a folder that holds files, its configs parse and stay equal to the repository's configs they
were made from, and the skeleton learners train by class path from inside the new folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_meta.cli import main, run
from lit_meta.new_cli import EXAMPLES, template_files
from tests.helpers import ROOT
from tests.helpers.fabricate import minimal_omniglot

TEMPLATES = ROOT / "lit_meta" / "templates"
CONFIGS = ROOT / "configs"
# Every config of a template and the repository's config it was made from (its included files inlined).
SOURCES = {
    "sinusoid": {"sinusoid_maml.yaml": "sinusoid_maml.yaml"},
    "omniglot": {"base.yaml": "omniglot/base.yaml", "protonet_5w1s.yaml": "omniglot/protonet_5w1s.yaml"},
    "federated": {"base.yaml": "federated/omniglot/base.yaml", "protonet.yaml": "federated/omniglot/protonet.yaml"},
    "tune": {
        "base.yaml": "omniglot/base.yaml",
        "fomaml_5w1s.yaml": "omniglot/fomaml_5w1s.yaml",
        "omniglot_fomaml.yaml": "tune/omniglot_fomaml.yaml",
        "fomaml_space.yaml": "tune/fomaml_space.yaml",
    },
}
# What a user's copy changes on purpose: it downloads missing data (this repository's machines have no network).
CHANGES = {"download": True}
OWN = {
    "sinusoid": {"my_learner.py", "my_learner.yaml", "README.md"},
    "omniglot": {"my_learner.py", "my_learner.yaml", "README.md"},
    "federated": {"my_learner.py", "my_learner.yaml", "README.md"},
    "tune": {"my_learner.py", "my_learner.yaml", "my_learner_space.yaml", "README.md"},
}
SINUSOID_CONFIGS = ("my_learner.yaml", "sinusoid_maml.yaml")
FAST_FIT = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--test_after_fit=none"]


@pytest.fixture
def fresh_my_learner(monkeypatch):
    """Each example has its own `my_learner` module: none imported before or after the test."""
    monkeypatch.delitem(sys.modules, "my_learner", raising=False)
    yield
    sys.modules.pop("my_learner", None)


def new(folder: Path, example: str) -> Path:
    main(["new", str(folder), "--example", example])
    return folder


def resolved(path: Path):
    """The YAML of ``path`` with every file it names by relative path (a backbone) inlined."""

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (path.parent / value).is_file():
            return resolved(path.parent / value)
        return value

    return walk(yaml.safe_load(path.read_text()))


def changed(value):
    """``value`` with the keys of :data:`CHANGES` set as a user's copy sets them."""
    if isinstance(value, dict):
        return {key: CHANGES[key] if key in CHANGES else changed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [changed(item) for item in value]
    return value


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_new_writes_the_example_and_prints_the_next_commands(example, tmp_path, capsys):
    folder = new(tmp_path / "a" / "project", example)  # parents made too
    expected = set(SOURCES[example]) | OWN[example]
    assert {path.name for path in folder.iterdir()} == expected
    for name in expected:
        assert (folder / name).read_bytes() == template_files(example)[name].read_bytes()
    out = capsys.readouterr().out
    assert all(str(folder / name) in out for name in expected)
    readme = (folder / "README.md").read_text()
    for command in EXAMPLES[example].commands:
        assert command in out and command in readme, command
    assert set(template_files(example)) == expected  # what the package ships, nothing else (no __pycache__)


def test_the_configs_of_the_templates_are_the_repositorys():
    for example, sources in SOURCES.items():
        for name, source in sources.items():
            template = yaml.safe_load((TEMPLATES / example / name).read_text())
            assert template == changed(resolved(CONFIGS / source)), f"{example}/{name} differs from configs/{source}"
        # Every config of a template has a source, or is the user's own (my_learner*).
        configs = {p.name for p in (TEMPLATES / example).glob("*.yaml")}
        assert configs == set(sources) | {name for name in OWN[example] if name.endswith(".yaml")}, example
    # The sinusoid learner's config is the whole sinusoid run (it stacks on nothing) but for the model.
    mine, maml = (yaml.safe_load((TEMPLATES / "sinusoid" / name).read_text()) for name in SINUSOID_CONFIGS)
    assert mine.pop("model")["class_path"] == "my_learner.MyLearner"
    del maml["model"]
    assert mine == maml
    # The metric skeleton is one file in the package, written where the examples classify images.
    learners = {template_files(example)["my_learner.py"].read_text() for example in ("omniglot", "federated", "tune")}
    assert learners == {(TEMPLATES / "omniglot" / "my_learner.py").read_text()}


def test_an_existing_folder_with_files_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["new", str(tmp_path), "--example", "sinusoid"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "lit-meta new: error: Expected a new or empty folder for the example, "
        f"but got '{tmp_path}', which holds files.\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    new(tmp_path / "empty", "sinusoid")  # an empty folder is fine
    assert (tmp_path / "empty" / "my_learner.py").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["x", "--example", "cifar"],
            "Expected `--example` to be one of sinusoid, omniglot, federated, tune, but got 'cifar'.",
        ),
        ([], "The following arguments are required: DIR."),
    ],
)
def test_command_line_mistakes_are_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["new", *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"lit-meta new: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def print_config(capsys, command: str, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        run([command, *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("example", "stacks"),
    [
        ("sinusoid", [["sinusoid_maml.yaml"], ["my_learner.yaml"]]),
        ("omniglot", [["base.yaml", "protonet_5w1s.yaml"], ["base.yaml", "my_learner.yaml"]]),
        ("tune", [["base.yaml", "fomaml_5w1s.yaml", "omniglot_fomaml.yaml"], ["base.yaml", "my_learner.yaml"]]),
    ],
)
def test_the_fit_configs_parse_from_the_new_folder(example, stacks, tmp_path, capsys, monkeypatch, fresh_my_learner):
    folder = new(tmp_path / "project", example)
    capsys.readouterr()
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for stack in stacks:
        config = print_config(capsys, "fit", *(arg for name in stack for arg in ("--config", name)))
        expected = "my_learner.MyLearner" if "my_learner.yaml" in stack else config["model"]["class_path"]
        assert config["model"]["class_path"] == expected
        if example != "sinusoid":  # no folder named: the user data folder
            assert config["data"]["init_args"]["data_dir"] is None and config["data"]["init_args"]["download"]


def test_the_federated_configs_parse_and_the_skeleton_learner_federates(
    tmp_path, capsys, monkeypatch, fresh_my_learner
):
    pytest.importorskip("flwr")
    folder = new(tmp_path / "project", "federated")
    capsys.readouterr()
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for learner in ("protonet.yaml", "my_learner.yaml"):
        config = print_config(capsys, "federate", "--config", "base.yaml", "--config", learner)
        assert config["rounds"] == 10 and config["data"]["init_args"]["data"]["init_args"]["data_dir"] is None
    assert config["model"]["class_path"] == "my_learner.MyLearner"
    # One round of two fabricated alphabets' clients (and two test clients), one local step each.
    data = minimal_omniglot(str(tmp_path / "data"), characters=6)
    clients = [f"--strategy.init_args.{option}=2" for option in ("min_train_nodes", "min_evaluate_nodes")]
    episodes = ["ways=3", "meta_batch_size=1", "test_tasks=2", f"data_dir={data}", "download=false"]
    run(
        ["federate", "--config=base.yaml", "--config=my_learner.yaml", "--rounds=1", "--local_steps=1"]
        + ["--strategy.init_args.min_available_nodes=2", *clients, "--version=smoke"]
        + [f"--data.init_args.data.init_args.{episode}" for episode in episodes]
        + ["--model.init_args.backbone.init_args.hidden=8"]
    )
    result = json.loads((folder / "lightning_logs" / "smoke" / "federated_result.json").read_text())
    assert result["rounds"][0]["replies"] == 2


def test_the_search_spaces_fit_their_configs(tmp_path, capsys, monkeypatch, fresh_my_learner):
    pytest.importorskip("optuna")
    from lit_meta.tuning.fit_config import check_space
    from lit_meta.tuning.space import load_space

    folder = new(tmp_path / "project", "tune")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    for learner, space in (("fomaml_5w1s.yaml", "fomaml_space.yaml"), ("my_learner.yaml", "my_learner_space.yaml")):
        check_space(["--config=base.yaml", f"--config={learner}", "--config=omniglot_fomaml.yaml"], load_space(space))


@pytest.fixture(scope="module")
def sinusoid_project(tmp_path_factory) -> Path:
    """The sinusoid example after two steps of `lit-meta fit` of its skeleton learner, run by the console
    script from inside the folder, with no PYTHONPATH: `my_learner` is imported from the working directory."""
    folder = tmp_path_factory.mktemp("new") / "project"
    done = lit_meta(folder.parent, "new", "project", "--example", "sinusoid")
    assert done.returncode == 0 and "cd project" in done.stdout, done.stderr
    done = lit_meta(folder, "fit", "--config", "my_learner.yaml", *FAST_FIT)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def lit_meta(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    script = Path(sys.executable).parent / "lit-meta"
    return subprocess.run([str(script), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_the_skeleton_learner_trains_from_the_new_folder(sinusoid_project):
    checkpoint = torch.load(
        sinusoid_project / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["_class_path"] == "my_learner.MyLearner"


def test_the_skeleton_learners_checkpoint_meta_tests_from_the_new_folder(sinusoid_project):
    done = lit_meta(
        sinusoid_project,
        "test",
        "--config",
        "my_learner.yaml",
        "--ckpt_path",
        "lightning_logs/version_0/checkpoints/last.ckpt",
        "--trainer.limit_test_batches=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (sinusoid_project / "lightning_logs" / "version_1" / "meta_test.json").is_file()


def test_the_metric_skeleton_learner_trains_on_omniglot(tmp_path, monkeypatch, fresh_my_learner):
    folder = new(tmp_path / "project", "omniglot")
    data = minimal_omniglot(str(tmp_path / "data"), characters=12)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    small = ["--data.ways=3", "--data.eval_ways=3", "--data.val_tasks=2", "--data.test_tasks=2"]
    cli = run(
        ["fit", "--config=base.yaml", "--config=my_learner.yaml", f"--data.data_dir={data}", "--data.download=false"]
        + small
        + ["--model.init_args.backbone.init_args.hidden=8", *FAST_FIT]
    )
    assert type(cli.model).__module__ == "my_learner" and cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.logged_metrics["train/loss"])
