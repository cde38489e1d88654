"""Fixed task batches and a quiet fit, for the tests of the personalised FL baselines."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_meta.algorithms import MetaLearner
from lit_meta.tasks import Task
from tests.helpers.trainers import quiet_trainer


class FixedTasks(LightningDataModule):
    """The given meta-batches, in order, for training and testing."""

    def __init__(self, tasks: list[Task]) -> None:
        super().__init__()
        self.tasks = tasks

    def _loader(self) -> DataLoader:
        return DataLoader(self.tasks, batch_size=None)

    train_dataloader = test_dataloader = _loader


def fit(learner: MetaLearner, tasks: list[Task], steps: int) -> None:
    """``steps`` training steps of ``learner`` on ``tasks`` (one meta-batch a step), no validation."""
    quiet_trainer(max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0).fit(learner, FixedTasks(tasks))
