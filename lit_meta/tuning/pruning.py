"""A trial's pruning: every validation reported to Optuna at its count, 1, 2, 3, ... (not at its epoch).

Optuna's ``PyTorchLightningPruningCallback`` reports at ``step=current_epoch``: with several validations
in one epoch (``--trainer.val_check_interval``; a meta-learning datamodule often has one long epoch),
Optuna keeps the first of that epoch, warns that the step "is already reported" and ignores the
others, so the pruner never sees them. :class:`ValidationPruning` reports the ``k``-th validation of
the run at step ``k`` instead, whatever the epoch: a pruner's steps (``--pruner_min_epochs``, the
rungs of ``asha`` and ``hyperband``) count validations, which are epochs when every epoch validates
once (Lightning's default), as before. Counted from 1: Optuna's rung-based pruners start at step
``min_resource >= 1``.

A trial runs in its worker's process; the callback reports from that process (no DDP trial).
"""

from __future__ import annotations

import optuna
from lightning.pytorch import Callback, LightningModule, Trainer


class ValidationPruning(Callback):
    """Report the monitored value of each validation to ``trial`` at its count, and stop the trial
    (``optuna.TrialPruned``) when its pruner says so.

    Args:
        trial: the running trial.
        monitor: the logged validation metric, e.g. ``"val/acc"``.

    Attributes:
        validations: the validations reported so far (the sanity check is none).
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.validations = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # the trial's progress callback says which metrics were logged
            return
        self.validations += 1
        self.trial.report(float(value), self.validations)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"Pruned at validation {self.validations} (step {trainer.global_step}) with "
                f"{self.monitor} = {float(value):.6g}."
            )
