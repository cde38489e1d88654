"""A search that runs in seconds: sinusoid MAML with an 8-unit MLP, validated every 5 meta-steps."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """\
seed_everything: 0
num_threads: 1
trainer:
  accelerator: cpu
  max_steps: 20
  check_val_every_n_epoch: 1
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 5
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {save_dir: SAVE_DIR, name: ""}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/loss, mode: min, filename: best}
model:
  class_path: lit_meta.algorithms.MAML
  init_args:
    backbone:
      class_path: lit_meta.models.MLP
      init_args: {in_features: 1, hidden: [8], out_features: 1}
    inner_lr: 0.01
    eval_inner_steps: 2
    loss: mse
    optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.001}
data:
  class_path: datamodules.SinusoidDataModule
  init_args: {meta_batch_size: 4, train_batches_per_epoch: 5, val_tasks: 8, test_tasks: 8}
"""

SPACE = """\
model.init_args.inner_lr: {type: float, low: 1.0e-3, high: 0.1, log: true}
model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("SAVE_DIR", str(tmp_path / "logs")))
    return path


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path
