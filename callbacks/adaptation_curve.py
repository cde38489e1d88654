"""How adaptation improves over meta-training: curves over adaptation steps on fixed validation tasks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from callbacks._logging import add_figure, require_meta_learner, tensorboard_loggers
from callbacks.plotting import plot_adaptation_curves
from lit_meta.evaluation import adaptation_curves, outside_inference_mode
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_int


class AdaptationCurve(Callback):
    """Track how adaptation improves over meta-training, on a fixed set of validation tasks.

    Every ``every_n_epochs`` validation runs (the sanity check excluded), and once more when ``fit``
    ends (unless the last run was at the same global step, or under ``fast_dev_run``), the learner
    adapts to each task for ``0, 1, ..., K`` steps (``K = max_steps``) and the query loss and metric
    are measured after every step. The tasks are the first ``num_tasks`` tasks of the datamodule's
    ``val_dataloader()``, read once and cached, so every evaluation uses the same tasks (the learner
    runs in eval mode, and its mode is restored afterwards).

    Logged through every logger in ``trainer.loggers`` at ``trainer.global_step``:

    * ``adaptation/loss_step{k}``: mean query loss over the tasks after ``k`` steps;
    * ``adaptation/{metric}_step{k}``: mean query ``accuracy`` (classifiers) or ``mse`` (regression).

    On every :class:`~lightning.pytorch.loggers.TensorBoardLogger` it also logs the figure
    ``adaptation/curve`` (:func:`plot_adaptation_curves`): the metric against adaptation steps with a
    95% confidence band, one line per evaluation so far, coloured by training step.

    Metric-based learners (Prototypical, Matching Networks) have no inner loop: step 0 is the
    prediction before the support set is seen (uniform logits) and every later step equals step 1.

    Under DDP only global rank 0 evaluates, on its own share of the validation tasks (this is a
    diagnostic, not a result; use :class:`~callbacks.MetaTestEvaluation` for those). The final
    evaluation uses the weights present when ``fit`` ends (the meta-test then loads the best ones in
    Lightning's test loop).

    The curves are kept in :attr:`history` and saved in checkpoints.

    Args:
        every_n_epochs: evaluate every this many validation runs.
        num_tasks: validation tasks to evaluate (the first ones of the validation loader).
        max_steps: the largest number of adaptation steps ``K``; ``None`` uses the learner's
            ``eval_inner_steps``.

    Attributes:
        history: ``(global_step, values)`` per evaluation, ``values`` ``(K + 1, num_tasks)``: the metric of
            each task after ``0..K`` steps, on the CPU.
    """

    def __init__(self, every_n_epochs: int = 1, num_tasks: int = 32, max_steps: int | None = None) -> None:
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("num_tasks", num_tasks)
        if max_steps is not None:
            check_positive_int("max_steps", max_steps, minimum=0)
        self.every_n_epochs = every_n_epochs
        self.num_tasks = num_tasks
        self.max_steps = max_steps
        self.history: list[tuple[int, Tensor]] = []
        self._validations = 0
        self._tasks: list[Task] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_epochs=self.every_n_epochs, num_tasks=self.num_tasks, max_steps=self.max_steps
        )

    # ---- the fixed tasks ----
    def fixed_tasks(self, trainer: Trainer) -> list[Task]:
        """The first ``num_tasks`` validation tasks as CPU meta-batches; read on the first call, then cached.

        Raises:
            RuntimeError: if the trainer has neither a datamodule nor validation dataloaders.
        """
        if self._tasks is None:
            loader = _validation_loader(trainer)
            if loader is None:
                raise RuntimeError(
                    "AdaptationCurve needs validation tasks: a datamodule with `val_dataloader()` or `val_dataloaders`."
                )
            tasks, count = [], 0
            for batch in loader:
                task = Task(*batch)
                task = Task(*(t[: self.num_tasks - count] for t in task))  # trim the last batch
                tasks.append(outside_inference_mode(Task(*(t.cpu() for t in task))))
                count += task.num_tasks
                if count >= self.num_tasks:
                    break
            if count == 0:
                raise RuntimeError("AdaptationCurve found no validation tasks: the validation dataloader is empty.")
            self._tasks = tasks
        return self._tasks

    # ---- evaluation ----
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Tensor, Tensor]:
        """Measure the curves now, append the metric curve to :attr:`history` and log them.

        Returns:
            ``(losses, metrics)``, each ``(K + 1, T)``: per-task query loss and metric after ``0..K`` steps.
        """
        learner = require_meta_learner(pl_module, "AdaptationCurve")
        steps = learner.eval_inner_steps if self.max_steps is None else self.max_steps
        with torch.inference_mode(False):
            losses, metrics = (c.cpu() for c in adaptation_curves(learner, self.fixed_tasks(trainer), steps))
        self.history.append((trainer.global_step, metrics))
        scalars = {f"adaptation/loss_step{k}": row.mean().item() for k, row in enumerate(losses)}
        scalars |= {f"adaptation/{learner.metric_name}_step{k}": row.mean().item() for k, row in enumerate(metrics)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        if tensorboard_loggers(trainer):
            add_figure(trainer, "adaptation/curve", plot_adaptation_curves(self.history, learner.metric_name))
        return losses, metrics

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_epochs == 0 and trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        if self.history and self.history[-1][0] == trainer.global_step:
            return  # no optimizer step since the last evaluation: the same weights
        if self._tasks is None and _validation_loader(trainer) is None:
            rank_zero_warn("AdaptationCurve: no validation tasks to evaluate at the end of fit; skipped.")
            return
        self.evaluate(trainer, pl_module)
        # Lightning closes the loggers before `on_fit_end`: write out what was logged since.
        for logger in trainer.loggers:
            logger.save()  # flushes TensorBoard's writer

    # ---- checkpointing ----
    def state_dict(self) -> dict[str, Any]:
        return {"history": [(step, values.clone()) for step, values in self.history], "validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(int(step), values) for step, values in state_dict.get("history", [])]
        self._validations = int(state_dict.get("validations", 0))


def _validation_loader(trainer: Trainer) -> Iterable[Any] | None:
    datamodule = trainer.datamodule
    if datamodule is not None and hasattr(datamodule, "val_dataloader"):
        return datamodule.val_dataloader()
    loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders
