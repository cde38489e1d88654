"""A checkpoint from elsewhere never runs code (lit_meta.checkpoints): every class it names is checked
against the allow-list before anything is imported, pickled objects are never loaded, and every bad
file is one line on stderr with exit status 2, in every command that reads one."""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from lit_meta.algorithms.checkpoints import load_learner
from lit_meta.checkpoints import TRUSTED_MODULES_ENV, read_checkpoint, resolve_class
from lit_meta.cli import main
from lit_meta.models import MLP
from tests.helpers.checkpoints import task_folders
from tests.helpers.learners import FEATURES, WAYS, teacher_checkpoint

# The learner and data of `teacher_checkpoint(3, "cross_entropy")`, as `lit-meta test` is given them.
MODEL = [
    "--model=lit_meta.algorithms.MAML",
    f"--model.backbone={{'class_path': 'lit_meta.models.MLP', 'init_args': {{'in_features': {FEATURES}, "
    f"'hidden': [16], 'out_features': {WAYS}}}}}",
    "--model.loss=cross_entropy",
    "--model.inner_lr=0.1",
    "--data=tests.helpers.learners.BlobsDataModule",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
# A module on the import path whose import leaves a marker: refused means never imported.
EVIL_MODULE = "import pathlib, os\npathlib.Path(os.environ['MARKER']).write_text('imported')\nclass Learner: pass\n"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """A file that only an executed payload creates; `evilmod` (on sys.path) creates it when imported."""
    path = tmp_path / "MARKER"
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    monkeypatch.setenv("MARKER", str(path))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    return path


def tampered(tmp_path: Path, name: str, change) -> str:
    """A copy of a real checkpoint (plain data: it passes `weights_only=True`) with ``change`` applied to
    its hyper-parameters."""
    checkpoint = torch.load(teacher_checkpoint(WAYS, "cross_entropy"), weights_only=True)
    checkpoint = copy.deepcopy(checkpoint)
    change(checkpoint["hyper_parameters"])
    path = tmp_path / f"{name}.ckpt"
    torch.save(checkpoint, path)
    return str(path)


def _os_system(h):
    h["optimizer"] = {"class_path": "os.system", "init_args": {"command": f"touch {os.environ['MARKER']}"}}


PAYLOADS = {
    "optimizer_os_system": (_os_system, "'os.system'"),
    "learner_module": (lambda h: h.update(_class_path="evilmod.Learner"), "'evilmod.Learner'"),
    "backbone_module": (lambda h: h.update(backbone={"class_path": "evilmod.Learner"}), "'evilmod.Learner'"),
    "callable_string": (lambda h: h.update(optimizer="evilmod.Learner"), "'evilmod.Learner'"),
    "instantiator": (lambda h: h.update(_instantiator="evilmod.Learner"), "'evilmod.Learner'"),
    "subprocess": (
        lambda h: h.update(
            lr_scheduler={"class_path": "subprocess.Popen", "init_args": {"args": ["touch", os.environ["MARKER"]]}}
        ),
        "'subprocess.Popen'",
    ),
    # inside lit_meta, but not a class of the allowed kinds: never called
    "lit_meta_function": (lambda h: h.update(optimizer={"class_path": "lit_meta.cli.main"}), "'lit_meta.cli.main'"),
}


def one_line_exit(capsys, command: list[str]) -> tuple[int, str]:
    """Run ``lit-meta <command>`` in this process; its exit status and its whole stderr (must be one line)."""
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return exit_info.value.code, lines[0]


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("command", ["test", "fit", "adapt"])
def test_a_checkpoint_naming_code_to_run_is_refused_before_any_import(payload, command, marker, tmp_path, capsys):
    change, named = PAYLOADS[payload]
    path = tampered(tmp_path, payload, change)
    if command == "adapt":
        support, query = task_folders(tmp_path / "task")
        args = ["adapt", "--ckpt_path", path, "--support", str(support), "--query", str(query)]
    else:
        args = [command, *MODEL, f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", f"--ckpt_path={path}"]
    code, line = one_line_exit(capsys, args)
    assert code == 2
    assert line.startswith(f"lit-meta {command}: error: Expected ")
    assert named in line
    assert not marker.exists()
    assert "evilmod" not in sys.modules
    assert not (tmp_path / "logs").exists()  # refused before the run began


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"Expected `--ckpt_path` in '.*bad.ckpt', but got an empty file\."),
        (b"hello world" * 10, r"Expected `--ckpt_path` of plain tensors and data in '.*bad.ckpt', but could not read"),
        ("truncated", r"Expected `--ckpt_path` of plain tensors and data in '.*bad.ckpt', but could not read"),
        ([1, 2, 3], r"Expected `--ckpt_path` \(a dictionary\) in '.*bad.ckpt', but got a list\."),
    ],
    ids=["empty", "garbage", "truncated", "not_a_dict"],
)
def test_a_bad_checkpoint_file_is_one_line(content, message, tmp_path, capsys):
    path = tmp_path / "bad.ckpt"
    if content == "truncated":
        whole = Path(teacher_checkpoint(WAYS, "cross_entropy")).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    code, line = one_line_exit(capsys, ["test", *MODEL, f"--ckpt_path={path}"])
    assert code == 2
    assert line.startswith("lit-meta test: error: ")
    assert re.search(message, line), line


class Payload:
    """Unpickling this runs a command: only `weights_only=False` would."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


def test_a_pickle_payload_never_runs(marker, tmp_path):
    path = tmp_path / "pickled.ckpt"
    checkpoint = torch.load(teacher_checkpoint(WAYS, "cross_entropy"), weights_only=True)
    torch.save({**checkpoint, "federated": {"settings": Payload()}}, path)
    with pytest.raises(ValueError, match=r"it holds pickled objects, which lit-meta never loads"):
        read_checkpoint(path)
    assert not marker.exists()


class UsersBackbone(MLP):
    """A user's own backbone class, outside lit-meta."""


def test_a_users_own_class_loads_only_when_trusted(tmp_path, monkeypatch):
    def users_backbone(h):
        h["backbone"]["class_path"] = f"{__name__}.UsersBackbone"

    path = tampered(tmp_path, "users", users_backbone)
    with pytest.raises(ValueError, match=rf"but got '{__name__}.UsersBackbone', which was not imported"):
        load_learner(path)
    learner, _ = load_learner(path, trusted=["tests.lit_meta"])  # `--trust tests.lit_meta`
    assert any(type(m) is UsersBackbone for m in learner.modules())
    monkeypatch.setenv(TRUSTED_MODULES_ENV, "unrelated, tests")  # the setting
    learner, _ = load_learner(path)
    assert any(type(m) is UsersBackbone for m in learner.modules())


def test_the_allow_list_checks_prefixes_by_module_not_by_text():
    assert resolve_class("torch.optim.Adam") is torch.optim.Adam
    assert resolve_class("torch.nn.Linear") is torch.nn.Linear
    for class_path in ("torch.optimx.Adam", "lit_meta_evil.Learner", "torch.load"):
        with pytest.raises(ValueError, match=rf"but got '{class_path}', which was not imported"):
            resolve_class(class_path)
    with pytest.raises(ValueError, match=r"Expected 'torch.nn.functional.relu' .* class, but got function\."):
        resolve_class("torch.nn.functional.relu")
    with pytest.raises(ValueError, match=r"Expected a class path 'package.module.Name'.*but got 'os.system; ls'"):
        resolve_class("os.system; ls")


def test_a_class_the_users_own_config_names_is_trusted_in_that_command(tmp_path, capsys):
    def users_backbone(h):
        h["backbone"]["class_path"] = f"{__name__}.UsersBackbone"

    path = tampered(tmp_path, "users", users_backbone)
    logs = f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}"
    code, line = one_line_exit(capsys, ["test", *MODEL, logs, f"--ckpt_path={path}"])
    assert code == 2 and f"but got '{__name__}.UsersBackbone', which was not imported" in line
    named = [a.replace("lit_meta.models.MLP", f"{__name__}.UsersBackbone") for a in MODEL]
    main(["test", *named, logs, f"--ckpt_path={path}"])  # the config names it: the user's choice
    main(["test", *MODEL, logs, f"--ckpt_path={path}", "--trust=[tests.lit_meta]"])


def test_a_data_pickle_from_elsewhere_is_read_as_data_only(marker, tmp_path):
    import pickle

    import numpy as np

    from lit_meta.checkpoints import load_plain_pickle

    labels = {"label_specific": np.arange(3), "label_specific_str": ["a", "b"], "n": np.int64(3)}
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps(labels))
    with path.open("rb") as f:
        loaded = load_plain_pickle(f)
    assert loaded.keys() == labels.keys() and loaded["label_specific"].tolist() == [0, 1, 2]
    path.write_bytes(pickle.dumps({"label_specific": Payload()}))
    with path.open("rb") as f, pytest.raises(pickle.UnpicklingError, match=r"it names posix\.system"):
        load_plain_pickle(f)
    assert not marker.exists()
