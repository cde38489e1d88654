"""The Lightning ``Trainer`` of a client's call: :func:`client_trainer`, built for each ``train`` and
``evaluate`` message, and so kept lean.

- ``barebones=True``: no logger, checkpoints, progress bar, model summary or sanity check, and no
  Lightning logging: a learner's ``self.log`` (``train/loss``, ``train/acc``: about a quarter of a
  small meta-step through Lightning's result collection) keeps the last value of each name in
  ``barebones_logged`` instead (:meth:`~lit_meta.algorithms.base.MetaLearner.log`).
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import Trainer

#: Lightning's loggers of its per-``Trainer`` information (devices, barebones mode): the rank-zero
#: messages go to whichever of ``lightning.pytorch`` and ``pytorch_lightning`` was imported last.
QUIET_LOGGERS = ("lightning.pytorch", "pytorch_lightning")


def client_trainer(accelerator: str, precision: str, **kwargs: Any) -> Trainer:
    """A barebones ``Trainer`` on one device of ``accelerator`` that never validates (see the module
    docstring); ``kwargs`` are more ``Trainer`` arguments (``max_steps``, ``callbacks``)."""
    for name in QUIET_LOGGERS:  # no banner per call
        logging.getLogger(name).setLevel(logging.WARNING)
    return Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        barebones=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )
