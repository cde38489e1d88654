"""Meta-test results: accuracy (or MSE) after 0..K adaptation steps, with 95% confidence intervals."""

from __future__ import annotations

import json
import os
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from callbacks._logging import require_meta_learner
from lit_meta.evaluation import summarise, ways_and_shots
from lit_meta.files import atomic_open
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_int


class MetaTestEvaluation(Callback):
    """Report Lightning's test loop as a meta-test: the metric after every step count ``0..K``.

    While ``trainer.test`` runs, the learner's ``test_step`` adapts each fixed test task with
    ``0..K`` steps and collects every task's query metric after every step
    (:meth:`MetaLearner.record_test_curves`; gathered across ranks under DDP). When the test epoch
    ends this callback reports, per step count, the mean over test tasks and the 95% confidence
    interval (``1.96 * std / sqrt(T)``), logs them as ``meta_test/<metric>_step<k>`` and writes
    ``meta_test.json`` into the run's log folder::

        {"metric": "mse" | "accuracy", "num_tasks": T, "ways": N (null for regression), "shots": K,
         "tasks": what the datamodule drew them from (e.g. {"within": "alphabet", "alphabets": [...]}),
         "steps": {"0": {"mean": ..., "ci95": ...}, "1": {...}, ...}, "checkpoint": path or null}

    ``lit-meta fit`` runs the test loop on the best checkpoint when training ends
    (``trainer.test(ckpt_path="best")``; ``--test_after_fit``), as few-shot papers report; from
    Python, call ``trainer.test(learner, datamodule, ckpt_path="best")`` after ``fit``.

    Args:
        max_steps: the largest step count ``K``; ``None`` uses the learner's ``eval_inner_steps``.
        filename: name of the JSON file written in ``trainer.log_dir``.

    Attributes:
        results: the last results written (the JSON above), or ``None``.
    """

    def __init__(self, max_steps: int | None = None, filename: str = "meta_test.json") -> None:
        if max_steps is not None:
            check_positive_int("max_steps", max_steps, minimum=0)
        self.max_steps = max_steps
        self.filename = filename
        self.results: dict[str, Any] | None = None
        self._shape: tuple[int | None, int] | None = None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        learner = require_meta_learner(pl_module, "MetaTestEvaluation")
        learner.record_test_curves(learner.eval_inner_steps if self.max_steps is None else self.max_steps)
        self._shape = None

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._shape is None:
            self._shape = ways_and_shots(Task(*batch), pl_module.is_classifier)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = pl_module.test_curves()  # (K + 1, T), every rank's tasks
        ways, shots = self._shape if self._shape is not None else (None, 0)
        self.results = {
            "metric": pl_module.metric_name,
            "num_tasks": values.shape[1],
            "ways": ways,
            "shots": shots,
            "tasks": _eval_tasks(trainer),
            "steps": summarise(values),
            "checkpoint": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
        }
        self._report(trainer, self.results)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.record_test_curves(None)

    def _report(self, trainer: Trainer, results: dict[str, Any]) -> None:
        metric = results["metric"]
        scalars = {f"meta_test/{metric}_step{k}": v["mean"] for k, v in results["steps"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, self.filename)
        with atomic_open(path) as f:  # a kill mid-write leaves the previous results whole
            json.dump(results, f, indent=2)
        scale, unit = (100.0, "%") if metric == "accuracy" else (1.0, "")
        source = results["checkpoint"] or "the weights in memory"
        shape = f"{results['ways']}-way {results['shots']}-shot" if results["ways"] else f"{results['shots']}-shot"
        lines = [f"Meta-test {metric} of {source} over {results['num_tasks']} tasks, {shape} (mean +- 95% CI):"]
        lines += [
            f"  {k:>3} steps: {v['mean'] * scale:.4f}{unit} +- {v['ci95'] * scale:.4f}{unit}"
            for k, v in results["steps"].items()
        ]
        rank_zero_info("\n".join(lines) + f"\nWritten to {path}")


def _eval_tasks(trainer: Trainer) -> dict[str, Any] | None:
    """What the test tasks were drawn from (e.g. within one alphabet), where the datamodule says."""
    describe = getattr(getattr(trainer, "datamodule", None), "eval_tasks", None)
    return describe() if callable(describe) else None
