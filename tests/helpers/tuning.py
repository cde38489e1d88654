"""Running ``lit-meta tune`` from tests: the command line of the tiny search, and its subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def tune_command(config: Path, space: Path, study: str, *more: str) -> list[str]:
    """``lit-meta tune`` of the tiny search, minimising the validation MSE, as a subprocess command."""
    return [
        sys.executable,
        "-m",
        "lit_meta.cli",
        "tune",
        f"--config={config}",
        f"--search={space}",
        f"--study={study}",
        "--monitor=val/loss",
        "--direction=minimize",
        *more,
    ]


def run_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_tune(command: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
