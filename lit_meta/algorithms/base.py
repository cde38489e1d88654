"""The contract every meta-learner follows.

:class:`MetaLearner` owns the Lightning steps, the losses and the logging. An algorithm implements one
hook, :meth:`MetaLearner.episode`: adapt to the support set of each task in a meta-batch and predict
its queries. Everything else (meta-loss, ``train/loss``, ``val/acc``, meta-test curves, ``predict``)
is built on that hook.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import CatMetric, MeanMetric

from lit_meta.adaptation import AdaptedLearner
from lit_meta.evaluation import task_curves
from lit_meta.functional import LOSSES, task_accuracies, task_losses
from lit_meta.seeding import key_seed, seed_streams
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of, check_positive_int

Loss = Literal["mse", "cross_entropy"]


class MetaLearner(LightningModule, ABC):
    """Base class of the lit-meta algorithms.

    A batch is a :class:`~lit_meta.tasks.Task`: a meta-batch of ``B`` tasks with support
    ``(B, Ns, ...)`` and query ``(B, Nq, ...)`` tensors. The meta-loss is the mean over tasks of the
    query loss after adaptation.

    Subclasses implement :meth:`episode` and pass their own constructor arguments through; the base
    class validates the shared ones and calls ``save_hyperparameters`` so every argument is logged.

    Args:
        loss: ``"cross_entropy"`` for classification (predictions are logits ``(B, Nq, ways)``) or
            ``"mse"`` for regression.
        eval_inner_steps: adaptation steps during validation, test and predict.
        optimizer: the outer-loop (meta) optimizer, called with the learner's parameters.
        lr_scheduler: optional schedule of the meta learning rate, stepped after every meta-batch
            (meta-training is counted in steps; epochs are arbitrary here).
    """

    def __init__(
        self,
        loss: Loss,
        eval_inner_steps: int,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        check_one_of("loss", loss, LOSSES)
        check_positive_int("eval_inner_steps", eval_inner_steps, minimum=0)
        self.loss = loss
        self.eval_inner_steps = eval_inner_steps
        self._optimizer_factory = optimizer
        self._scheduler_factory = lr_scheduler
        with warnings.catch_warnings():
            # Under LightningCLI a backbone is stored as its config; from Python, as the module object
            # itself, so that `load_from_checkpoint(path)` rebuilds the learner in both cases.
            warnings.filterwarnings("ignore", message=r"Attribute .* is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in ("loss", "acc")}
        )
        # The meta-test's per-task metric after 0..K steps; compute() gathers every rank's tasks.
        self.test_curve = CatMetric()
        self._test_curve_steps: int | None = None
        self._stream_seed: int | None = None  # the seed of the training steps' streams, set when fit starts
        # What training minimises per task, given query predictions (None: the query loss), and where
        # the training steps log (None: here); a module that trains this learner as a part sets both
        # through `train_as_part` (MetaDistillation).
        self.objective: Callable[[Tensor, Task], Tensor] | None = None
        self._log_through: Callable[..., None] | None = None
        # Under a `Trainer(barebones=True)`, which refuses `self.log`, the last value of each name (see `log`).
        self.barebones_logged: dict[str, Any] = {}

    @property
    def is_classifier(self) -> bool:
        return self.loss == "cross_entropy"

    @property
    def max_ways(self) -> int | None:
        """The most classes a task may have: the backbone's output size for learners that classify
        through its head (MAML and its variants, Reptile); ``None`` where any number fits (regression,
        metric-based learners)."""
        return None

    @property
    def personal_weights(self) -> tuple[str, ...]:
        """``fnmatch`` patterns of the weights that, federated, stay on each client for this learner to
        be the method it is (Ditto's personal model, FedRep's head); none by default. A federation
        whose ``personal`` patterns leave any of them to be averaged is refused
        (:func:`~lit_meta.federated.records.personal_names`)."""
        return ()

    @property
    def metric_name(self) -> str:
        """What :meth:`task_metric` measures: ``"accuracy"`` (classification) or ``"mse"``."""
        return "accuracy" if self.is_classifier else "mse"

    @abstractmethod
    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        """Adapt to each task's support set, then predict its query set.

        Args:
            task: a meta-batch of ``B`` tasks.
            training: ``True`` in the meta-training step: the result must carry the meta-gradient.
                ``False`` for evaluation: no meta-gradient is needed (and none should be built).
            steps: adaptation steps; ``None`` means the learner's own setting for ``training``.
                Learners without steps (metric-based ones) treat ``0`` as "support not seen yet".
            every_step: also return the predictions before adaptation and after each step.

        Returns:
            Query predictions ``(B, Nq, *out)``, or ``(steps + 1, B, Nq, *out)`` with ``every_step``
            (index ``k``: after ``k`` steps).
        """

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``(N, D)`` of inputs ``(N, *input_shape)`` by the meta-learned (unadapted) body of
        the network: what its head or metric reads (used by feature distillation)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its embeddings.")

    # ---- composition -----------------------------------------------------------------------------
    def train_as_part(self, objective: Callable[[Tensor, Task], Tensor], log: Callable[..., None]) -> None:
        """Make this learner a part that another module trains, as :class:`MetaDistillation` trains its
        student: the other module's ``training_step`` calls this learner's, which runs unchanged (its
        inner loop, Reptile's manual update, one backward per task) but minimises ``objective``.

        Args:
            objective: ``(predictions (B, Nq, *out), task) -> (B,)`` what training minimises per task,
                in place of the query loss (:meth:`training_losses` returns it).
            log: where this learner's ``self.log`` calls go: the owner's ``LightningModule.log``, as
                Lightning runs the owner's hooks, not this learner's.
        """
        self.objective, self._log_through = objective, log

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, or the owner's where :meth:`train_as_part` set one.

        Under a ``Trainer(barebones=True)`` (the federated client's: Lightning's logging costs about a
        quarter of a small meta-step, and a barebones Trainer refuses it) nothing reaches Lightning:
        the last value of each name is kept, detached, in ``barebones_logged`` (the client trains a fresh
        copy of the learner at each call and reads ``train/loss`` from it after the fit).
        """
        if self._log_through is not None:
            return self._log_through(name, value, *args, **kwargs)
        if getattr(self._trainer, "barebones", False):
            self.barebones_logged[name] = value.detach() if isinstance(value, Tensor) else value
            return None
        return super().log(name, value, *args, **kwargs)

    # ---- metrics -------------------------------------------------------------------------------
    def training_losses(self, predictions: Tensor, task: Task) -> Tensor:
        """``(B,)`` what meta-training minimises for each task, given its query predictions ``(B, Nq, *out)``.

        The query loss after adaptation, or :attr:`objective` where one is set. Every learner's
        training step goes through here (Reptile's inner steps too, with the samples of the step as
        the task's queries).
        """
        if self.objective is not None:
            return self.objective(predictions, task)
        return self.task_losses(predictions, task.query_y)

    def task_losses(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """``(B,)`` loss of each task; see :func:`lit_meta.functional.task_losses`."""
        return task_losses(predictions, targets, self.loss)

    def task_metric(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """``(B,)`` accuracy (classification) or MSE (regression) of each task."""
        if self.is_classifier:
            return task_accuracies(predictions, targets)
        return task_losses(predictions, targets, "mse")

    # ---- Lightning steps ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Before the first step: a task wider than the head fails deep in `cross_entropy` otherwise.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for name in ("ways", "eval_ways"):
            ways = getattr(datamodule, name, None)
            if isinstance(ways, int):
                self.check_ways(f"`data.{name}`", ways)

    def check_ways(self, what: str, ways: int) -> None:
        """Raise ``ValueError`` if tasks of ``ways`` classes are wider than :attr:`max_ways`; ``what``
        names where ``ways`` comes from, e.g. "`data.ways`" or "the number of support classes"."""
        if self.max_ways is not None and ways > self.max_ways:
            raise ValueError(f"Expected {what} <= {self.max_ways} (the backbone's `out_features`), but got {ways}.")

    def training_episode(self, task: Task) -> tuple[Tensor, Tensor]:
        """Meta-train on a meta-batch: its query predictions ``(B, Nq, *out)`` after adaptation and the
        ``(B,)`` losses meta-training minimises (:meth:`training_losses`; MAML's multi-step loss
        weighs in the predictions after every inner step)."""
        predictions = self.episode(task, training=True)
        return predictions, self.training_losses(predictions, task)

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        predictions, losses = self.training_episode(batch)
        return self.log_training(predictions, batch, losses)

    def log_training(self, predictions: Tensor, batch: Task, losses: Tensor | None = None) -> Tensor:
        """Log ``train/loss`` (the mean of :meth:`training_losses`, or of the ``(B,)`` ``losses`` already
        computed) and ``train/acc`` of query predictions ``(B, Nq, *out)``; returns the loss."""
        loss = (self.training_losses(predictions, batch) if losses is None else losses).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_tasks)
        if self.is_classifier:
            accuracy = task_accuracies(predictions.detach(), batch.query_y).mean()
            self.log("train/acc", accuracy, prog_bar=True, batch_size=batch.num_tasks)
        return loss

    def validation_step(self, batch: Task, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: Task, batch_idx: int) -> None:
        if self._test_curve_steps is None:
            self._evaluation_step(batch, "test")
            return
        # One adaptation serves both: the curve 0..K and test/* after eval_inner_steps.
        steps = max(self._test_curve_steps, self.eval_inner_steps)
        losses, metrics = task_curves(self, batch, steps)  # (steps + 1, B)
        self.test_curve.update(metrics[: self._test_curve_steps + 1].T)
        accuracies = metrics[self.eval_inner_steps] if self.is_classifier else None
        self._log_evaluation("test", losses[self.eval_inner_steps], accuracies, batch.num_tasks)

    def on_test_epoch_start(self) -> None:
        self.test_curve.reset()

    def record_test_curves(self, steps: int | None) -> None:
        """Make ``test_step`` also record every test task's metric after ``0..steps`` adaptation steps
        (``None``: stop); read them with :meth:`test_curves`. ``callbacks.MetaTestEvaluation`` does both."""
        if steps is not None:
            check_positive_int("steps", steps, minimum=0)
        self._test_curve_steps = steps

    def test_curves(self) -> Tensor:
        """``(K + 1, T)``: the accuracy (or MSE) of each of the ``T`` test tasks of this test epoch after
        ``0..K`` steps, gathered across ranks (a collective under DDP: call it on every rank)."""
        if self._test_curve_steps is None or self.test_curve.update_count == 0:
            raise RuntimeError(
                "Expected test curves recorded by `record_test_curves` during a test epoch, but got none."
            )
        return self.test_curve.compute().reshape(-1, self._test_curve_steps + 1).T

    def predict_step(self, batch: Task, batch_idx: int) -> Tensor:
        """Adapted query predictions ``(B, Nq, *out)`` (logits for classification)."""
        return self.evaluate_episode(batch)

    def evaluate_episode(self, task: Task, steps: int | None = None, every_step: bool = False) -> Tensor:
        """:meth:`episode` for evaluation: gradients on for the inner loop, detached results.

        Lightning runs evaluation under ``torch.inference_mode``, where no inner loop can take a
        gradient; this switches it off and copies the batch out of inference mode.
        """
        with _adaptation_enabled():
            task = Task(*(t.clone() if t.is_inference() else t for t in task))
            return self.episode(task, training=False, steps=steps, every_step=every_step).detach()

    def _evaluation_step(self, task: Task, stage: str) -> None:
        predictions = self.evaluate_episode(task)
        losses = self.task_losses(predictions, task.query_y)
        accuracies = task_accuracies(predictions, task.query_y) if self.is_classifier else None
        self._log_evaluation(stage, losses, accuracies, task.num_tasks)

    def _log_evaluation(self, stage: str, losses: Tensor, accuracies: Tensor | None, num_tasks: int) -> None:
        """``{stage}/loss`` (and ``{stage}/acc``) from the ``(B,)`` per-task values, averaged over the epoch."""
        self.metrics[f"{stage}_loss"].update(losses)
        self.log(f"{stage}/loss", self.metrics[f"{stage}_loss"], prog_bar=stage == "val", batch_size=num_tasks)
        if accuracies is not None:
            self.metrics[f"{stage}_acc"].update(accuracies)
            self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"], prog_bar=stage == "val", batch_size=num_tasks)

    # ---- rapid fine-tuning ----------------------------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> AdaptedLearner:
        """Adapt to a new task from a few labelled examples.

        Args:
            support_x: ``(Ns, *input_shape)`` inputs, prepared like the training data.
            support_y: ``(Ns,)`` labels ``0 .. ways-1``, every class present (regression: ``(Ns, *out)``).
            steps: adaptation steps; ``None`` uses ``eval_inner_steps``.

        Returns:
            An :class:`~lit_meta.adaptation.AdaptedLearner` with ``predict(x)`` (class indices ``(N,)``,
            or regression outputs) and ``predict_proba(x)`` (``(N, ways)``, classification).
        """
        return AdaptedLearner(self, support_x, support_y, steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The learner's class, refused on resume by another; the seed of the run's random streams.
        record = checkpoint.setdefault("lit_meta", {})
        record["learner"] = _class_path(type(self))
        record["stream_seed"] = self._stream_seed
        # How the datamodule prepared images, so that `lit-meta adapt` prepares a user's images alike.
        datamodule = getattr(self._trainer, "datamodule", None)
        preprocessing = getattr(datamodule, "preprocessing", None)
        if callable(preprocessing) and (found := preprocessing()) is not None:
            record["preprocessing"] = found.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is None or self.trainer.state.fn != "fit":
            return  # weights for evaluation (`lit-meta test`, `load_from_checkpoint`): any learner's state loads
        from lit_meta.checkpoints import check_same_learner  # it imports this module

        record = checkpoint.get("lit_meta", {})
        check_same_learner(type(self), record.get("learner"))
        self._stream_seed = record.get("stream_seed", self._stream_seed)

    def on_fit_start(self) -> None:
        if self._stream_seed is None:  # a new run (a resumed one has its checkpoint's)
            self._stream_seed = torch.initial_seed()  # `seed_everything`'s seed

    def on_train_batch_start(self, batch: Task, batch_idx: int) -> None:
        # Every batch's randomness (Reptile's shuffles, a backbone's dropout) is a pure function of
        # (run, rank, batch): a run resumed from any checkpoint draws what an uninterrupted one would,
        # whatever ran in between (validation, the loaders' own draws). Batches, not optimizer steps,
        # are counted: several batches share a step under gradient accumulation.
        batch = self.trainer.fit_loop.epoch_loop.total_batch_idx
        seed_streams(key_seed((self._stream_seed, self.global_rank, batch)))

    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer_factory(self.parameters())
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def head_size(module: torch.nn.Module) -> int | None:
    """``out_features`` of the last ``nn.Linear`` of ``module`` (its classification head), if any."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else None


@contextmanager
def _adaptation_enabled() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield
