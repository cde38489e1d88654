"""Meta-test evaluation: accuracy (or MSE) after 0..N adaptation steps, with 95% confidence intervals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_meta._checks import _check_one_of, _check_positive_int
from lit_meta.algorithms.base import MetaLearner
from lit_meta.functional import mean_ci95
from lit_meta.tasks import Task


def adaptation_curves(learner: MetaLearner, tasks: Iterable[Task], steps: int) -> tuple[Tensor, Tensor]:
    """Per-task query loss and metric after 0, 1, ..., ``steps`` adaptation steps.

    Args:
        learner: any meta-learner.
        tasks: meta-batches of evaluation tasks (moved to the learner's device here).
        steps: the largest number of steps.

    Returns:
        ``(losses, metrics)``, each ``(steps + 1, T)``: row ``k`` holds the query loss and the accuracy
        (or MSE) of each of the ``T`` tasks after ``k`` steps.
    """
    losses, metrics = [], []
    for task in tasks:
        task = move_data_to_device(task, learner.device)
        curve = learner.evaluate_episode(task, steps=steps, every_step=True)  # (steps + 1, B, Nq, ...)
        predictions = curve.flatten(0, 1)
        targets = task.query_y.expand(steps + 1, *task.query_y.shape).flatten(0, 1)
        losses.append(learner.task_losses(predictions, targets).view(steps + 1, -1))
        metrics.append(learner.task_metric(predictions, targets).view(steps + 1, -1))
    return torch.cat(losses, dim=1), torch.cat(metrics, dim=1)


def adaptation_curve(learner: MetaLearner, tasks: Iterable[Task], steps: int) -> Tensor:
    """``(steps + 1, T)``: the accuracy (or MSE) of each task after 0..``steps`` steps; see
    :func:`adaptation_curves`."""
    return adaptation_curves(learner, tasks, steps)[1]


def _gather_tasks(pl_module: LightningModule, values: Tensor) -> Tensor:
    """Concatenate the ``(steps + 1, T_rank)`` values of every rank (ranks may hold unequal shares)."""
    if pl_module.trainer is None or pl_module.trainer.world_size == 1:
        return values
    counts = pl_module.all_gather(torch.tensor(values.shape[1], device=values.device))
    padded = torch.zeros(values.shape[0], int(counts.max()), device=values.device, dtype=values.dtype)
    padded[:, : values.shape[1]] = values
    gathered = pl_module.all_gather(padded)  # (world, steps + 1, max T_rank)
    return torch.cat([g[:, : int(n)] for g, n in zip(gathered, counts)], dim=1)


def _ways_and_shots(task: Task, classification: bool) -> tuple[int | None, int]:
    """``(ways, shots)`` of a meta-batch; regression tasks have no ways and ``shots`` support points."""
    support = task.support_y.shape[1]
    if not classification:
        return None, support
    ways = task.support_y[0].unique().numel()
    return ways, support // ways


class MetaTestEvaluation(Callback):
    """Evaluate on the datamodule's fixed test tasks after 0..N adaptation steps.

    Runs at the end of ``fit`` and of ``test``. At the end of ``fit`` it first loads the weights of the
    best checkpoint of the trainer's ``ModelCheckpoint`` (model selection on validation tasks, as
    few-shot papers report), unless ``checkpoint="last"`` or no best checkpoint exists. In ``test``
    it evaluates the weights the test loop was given (``--ckpt_path``). For every step count it reports
    the mean over test tasks and the 95% confidence interval (``1.96 * std / sqrt(T)``), logs them as
    ``meta_test/<metric>_step<k>`` and writes ``meta_test.json`` into the run's log folder::

        {"metric": "mse" | "accuracy", "num_tasks": T, "ways": N (null for regression), "shots": K,
         "steps": {"0": {"mean": ..., "ci95": ...}, "1": {...}, ...}, "checkpoint": path or null}

    Args:
        max_steps: the largest step count; ``None`` uses the learner's ``eval_inner_steps``.
        after_fit: also evaluate when ``fit`` ends.
        checkpoint: at the end of ``fit``, evaluate the ``"best"`` checkpoint or the ``"last"`` weights.
        filename: name of the JSON file written in ``trainer.log_dir``.
    """

    def __init__(
        self,
        max_steps: int | None = None,
        after_fit: bool = True,
        checkpoint: Literal["best", "last"] = "best",
        filename: str = "meta_test.json",
    ) -> None:
        if max_steps is not None:
            _check_positive_int("max_steps", max_steps, minimum=0)
        _check_one_of("checkpoint", checkpoint, ("best", "last"))
        self.checkpoint = checkpoint
        self.max_steps = max_steps
        self.after_fit = after_fit
        self.filename = filename
        self.results: dict[str, Any] | None = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.after_fit or trainer.fast_dev_run:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if self.checkpoint == "best" and best:
            checkpoint = trainer.strategy.load_checkpoint(best)
            pl_module.load_state_dict(checkpoint["state_dict"])
            self.evaluate(trainer, pl_module, checkpoint=best)
        else:
            self.evaluate(trainer, pl_module, checkpoint=None)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.evaluate(trainer, pl_module, checkpoint=trainer.ckpt_path)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule, checkpoint: str | None = None) -> dict[str, Any]:
        """Evaluate ``pl_module`` as it is now; ``checkpoint`` only names where its weights came from."""
        if not isinstance(pl_module, MetaLearner):
            raise TypeError(
                f"Expected a lit_meta MetaLearner for MetaTestEvaluation, but got {type(pl_module).__name__}."
            )
        datamodule = trainer.datamodule
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        steps = pl_module.eval_inner_steps if self.max_steps is None else self.max_steps
        shapes: list[tuple[int | None, int]] = []

        def tasks() -> Iterator[Task]:
            for task in loader:
                shapes.append(_ways_and_shots(task, pl_module.is_classifier))
                yield task

        was_training = pl_module.training
        pl_module.eval()
        try:
            # Under DDP each rank evaluates its share of the fixed tasks (the datamodules split them).
            values = _gather_tasks(pl_module, adaptation_curve(pl_module, tasks(), steps))
        finally:
            pl_module.train(was_training)
        results = {
            "metric": pl_module.metric_name,
            "num_tasks": values.shape[1],
            "ways": shapes[0][0],
            "shots": shapes[0][1],
            "steps": {},
            "checkpoint": None if checkpoint is None else str(checkpoint),
        }
        for k, row in enumerate(values):
            mean, ci95 = mean_ci95(row)
            results["steps"][str(k)] = {"mean": mean, "ci95": ci95}
        self.results = results
        self._report(trainer, results)
        return results

    def _report(self, trainer: Trainer, results: dict[str, Any]) -> None:
        metric = results["metric"]
        scalars = {f"meta_test/{metric}_step{k}": v["mean"] for k, v in results["steps"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, self.filename)
            with open(path, "w") as f:
                json.dump(results, f, indent=2)
            scale, unit = (100.0, "%") if metric == "accuracy" else (1.0, "")
            source = results["checkpoint"] or "the final weights"
            shape = f"{results['ways']}-way {results['shots']}-shot" if results["ways"] else f"{results['shots']}-shot"
            lines = [f"Meta-test {metric} of {source} over {results['num_tasks']} tasks, {shape} (mean +- 95% CI):"]
            lines += [
                f"  {k:>3} steps: {v['mean'] * scale:.4f}{unit} +- {v['ci95'] * scale:.4f}{unit}"
                for k, v in results["steps"].items()
            ]
            rank_zero_info("\n".join(lines) + f"\nWritten to {path}")
