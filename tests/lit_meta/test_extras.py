"""A part used without its extra, or a package shadowed by a user's folder, is one line saying what to do
(lit_meta.extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LIT_META = str(Path(sys.executable).parent / "lit-meta")


@pytest.mark.parametrize(
    ("missing", "command", "extra"),
    [("flwr", "federate", "federated"), ("optuna", "tune", "tune"), ("sqlalchemy", "tune", "tune")],
)
def test_a_subcommand_without_its_extra_is_one_line_naming_the_extra(missing, command, extra):
    code = f"import sys; sys.modules[{missing!r}] = None; from lit_meta.cli import main; main([{command!r}, '--help'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"lit-meta {command}: error: Expected the `{extra}` extra for "
        + ("federated meta-learning (lit_meta.federated, `lit-meta federate`)" if extra == "federated" else
           "hyper-parameter search (lit_meta.tuning, `lit-meta tune`)")
        + f", but {missing!r} is not installed (pip install 'lit-meta[{extra}]')."
    ]  # fmt: skip


def test_importing_the_federated_datamodule_without_flower_names_the_extra():
    code = "import sys; sys.modules['flwr'] = None; import datamodules.federated"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "MissingExtraError: Expected the `federated` extra" in result.stderr.strip().splitlines()[-1]


def test_a_users_datamodules_folder_that_shadows_lit_metas_is_named(tmp_path):
    (tmp_path / "datamodules").mkdir()
    (tmp_path / "datamodules" / "__init__.py").write_text("# the user's own package of the same name\n")
    config = ROOT / "configs" / "sinusoid_maml.yaml"
    result = subprocess.run(
        [LIT_META, "fit", "--config", str(config), "--trainer.max_steps=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("lit-meta fit: error: ")
    assert f"(`datamodules` was imported from '{tmp_path / 'datamodules' / '__init__.py'}', which shadows" in lines[0]
