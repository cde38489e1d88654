"""A callback that kills its own process with SIGKILL after a given training step: a pre-empted node,
an out-of-memory kill (nothing is flushed, no hook runs)."""

import os
import signal

from lightning.pytorch import Callback


class KillAt(Callback):
    """SIGKILL this process when ``trainer.global_step`` reaches ``step`` (on rank ``rank`` only, if given)."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), signal.SIGKILL)
