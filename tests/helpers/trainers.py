"""One quiet ``Trainer`` for the tests: no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from lightning.pytorch import Trainer


def quiet_trainer(root=None, **kwargs) -> Trainer:
    """A ``Trainer`` rooted at ``root`` that writes and prints nothing; ``kwargs`` add to (or override)
    those defaults, e.g. ``logger=TensorBoardLogger(root)``."""
    options = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    return Trainer(**{**options, **kwargs})
