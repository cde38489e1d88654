"""Running ``lit-meta tune`` from tests: the command line of the tiny search, its subprocess, and tiny
learners whose trials break (a bug in the learner's code, a loss that diverges)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from torch import Tensor

from lit_meta.algorithms import MAML
from tests.helpers import ROOT


class BuggyMAML(MAML):
    """MAML whose training step has a bug: a ``TypeError`` (the kind a config mistake raises too)."""

    def training_step(self, batch, batch_idx: int) -> Tensor:
        raise TypeError("boom: a bug in the learner's training step")


class DivergingMAML(MAML):
    """MAML whose every loss is NaN, as a learning rate far too large leaves it."""

    def task_losses(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return super().task_losses(predictions, targets) * float("nan")


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
