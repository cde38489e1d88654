"""Diagnostics of adaptation during meta-training: curves over adaptation steps, episode figures and a
progress bar that shows the episode shape.

The figures need ``matplotlib``; it is imported only when a figure is drawn, so the callbacks can be
imported (and the scalars logged) without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from callbacks.meta_test import adaptation_curves
from lit_meta._checks import _check_one_of, _check_positive_int, _check_type
from lit_meta.algorithms.base import MetaLearner
from lit_meta.functional import mean_ci95, task_accuracies
from lit_meta.tasks import Task

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["AdaptationCurve", "EpisodeGrid", "MetaProgressBar", "plot_adaptation_curves", "plot_episode"]

_METRIC_LABELS = {"accuracy": "query accuracy", "mse": "query MSE"}


# ---- shared helpers ---------------------------------------------------------------------------------
def _new_figure(**kwargs: Any) -> Figure:
    """A figure bound to no GUI backend (no ``pyplot``): safe on headless machines and in threads."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is installed with lit-meta
        raise ImportError("Drawing adaptation figures needs matplotlib: `pip install matplotlib`.") from err
    return Figure(**kwargs)


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def _tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _add_figure(trainer: Trainer, tag: str, figure: Figure) -> None:
    for logger in _tensorboard_loggers(trainer):
        logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)


def _plain(task: Task) -> Task:
    """A copy of ``task`` usable outside ``torch.inference_mode`` (validation batches are inference tensors)."""
    with torch.inference_mode(False):
        return Task(*(t.detach().clone() for t in task))


def _require_meta_learner(pl_module: LightningModule, owner: str) -> MetaLearner:
    if not isinstance(pl_module, MetaLearner):
        raise TypeError(f"Expected a lit_meta MetaLearner for {owner}, but got {type(pl_module).__name__}.")
    return pl_module


def _loss_and_metric_curves(learner: MetaLearner, tasks: Iterable[Task], steps: int) -> tuple[Tensor, Tensor]:
    """:func:`~callbacks.meta_test.adaptation_curves` in eval mode, on the CPU."""
    was_training = learner.training
    learner.eval()
    try:
        losses, metrics = adaptation_curves(learner, tasks, steps)
    finally:
        learner.train(was_training)
    return losses.cpu(), metrics.cpu()


# ---- adaptation curves --------------------------------------------------------------------------------
def plot_adaptation_curves(history: Sequence[tuple[int, Tensor]], metric_name: str) -> Figure:
    """Metric against adaptation steps, one line per evaluation, coloured by training step.

    Each line is the mean over tasks with its 95% confidence interval
    (:func:`lit_meta.functional.mean_ci95`) as a band. Save it with ``fig.savefig("curve.png")``.

    Args:
        history: ``(global_step, values)`` pairs in training order, ``values`` of shape
            ``(steps + 1, T)``: the metric of ``T`` tasks after ``0..steps`` adaptation steps (as kept in
            :attr:`AdaptationCurve.history`).
        metric_name: ``"accuracy"`` or ``"mse"``: the y-axis label.

    Returns:
        A :class:`matplotlib.figure.Figure` (not registered with ``pyplot``; nothing to close).

    Raises:
        ValueError: if ``history`` is empty or ``metric_name`` is unknown.
    """
    _check_one_of("metric_name", metric_name, tuple(_METRIC_LABELS))
    if len(history) == 0:
        raise ValueError("Expected at least 1 curve in `history`, but got 0.")
    figure = _new_figure(figsize=(6.0, 4.0), dpi=100, layout="constrained")
    ax = figure.subplots()
    cmap = _colormap("viridis")
    steps = [int(step) for step, _ in history]
    low, high = min(steps), max(steps)
    # Label at most 10 lines (evenly spaced, always the first and the last) to keep the legend readable.
    labelled = {round(i * (len(history) - 1) / 9) for i in range(10)} if len(history) > 10 else set(range(len(history)))
    for index, (step, values) in enumerate(history):
        stats = [mean_ci95(row) for row in values]
        means = torch.tensor([m for m, _ in stats])
        cis = torch.tensor([c for _, c in stats])
        x = torch.arange(len(stats))
        colour = cmap(0.85 * ((step - low) / (high - low) if high > low else 1.0))
        ax.plot(
            x.numpy(),
            means.numpy(),
            marker="o",
            markersize=3,
            color=colour,
            label=f"step {step}" if index in labelled else None,
        )
        ax.fill_between(x.numpy(), (means - cis).numpy(), (means + cis).numpy(), color=colour, alpha=0.2, linewidth=0)
    num_tasks = history[-1][1].shape[1]
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(_METRIC_LABELS[metric_name])
    ax.set_title(f"Adaptation on {num_tasks} validation tasks (mean, 95% CI)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(title="training step", fontsize="small", title_fontsize="small")
    return figure


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
    evaluation uses the weights present when ``fit`` ends: list this callback before a
    ``MetaTestEvaluation(checkpoint="best")``, which loads other weights there.

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
        _check_positive_int("every_n_epochs", every_n_epochs)
        _check_positive_int("num_tasks", num_tasks)
        if max_steps is not None:
            _check_positive_int("max_steps", max_steps, minimum=0)
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
                tasks.append(_plain(Task(*(t.cpu() for t in task))))
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
        learner = _require_meta_learner(pl_module, "AdaptationCurve")
        steps = learner.eval_inner_steps if self.max_steps is None else self.max_steps
        with torch.inference_mode(False):
            losses, metrics = _loss_and_metric_curves(learner, self.fixed_tasks(trainer), steps)
        self.history.append((trainer.global_step, metrics))
        scalars = {f"adaptation/loss_step{k}": row.mean().item() for k, row in enumerate(losses)}
        scalars |= {f"adaptation/{learner.metric_name}_step{k}": row.mean().item() for k, row in enumerate(metrics)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        if _tensorboard_loggers(trainer):
            _add_figure(trainer, "adaptation/curve", plot_adaptation_curves(self.history, learner.metric_name))
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


# ---- episode figures ------------------------------------------------------------------------------------
def plot_episode(learner: MetaLearner, task: Task, max_images: int = 25) -> Figure:
    """Draw the first task of ``task`` before and after adaptation.

    The learner adapts with its ``eval_inner_steps`` (in eval mode; its mode is restored). What is drawn
    depends on the data:

    * classification, image inputs ``(B, N, C, H, W)``: the support images titled by label, then the
      query images titled ``"pred P / true T"`` (green: correct, red: wrong); each image is min-max
      rescaled, 1 channel in gray, 3 in RGB (other counts: the first channel);
    * classification, other inputs: a scatter of the first two input features, support as large stars
      coloured by label, queries coloured by predicted class with a red edge when wrong;
    * regression, 1-D inputs ``(B, N, 1)``: the support points, the queries' true targets as a line
      sorted by ``x``, and the predictions before adaptation (0 steps) and after;
    * regression, other inputs: predicted against true query targets, with the identity line.

    Args:
        learner: any meta-learner.
        task: a meta-batch; only its first task is drawn.
        max_images: at most this many support and this many query images in an image grid.

    Returns:
        A :class:`matplotlib.figure.Figure` (not registered with ``pyplot``; nothing to close).
    """
    _check_type("learner", learner, MetaLearner)
    _check_positive_int("max_images", max_images)
    steps = learner.eval_inner_steps
    first = _plain(Task(*(t[:1] for t in task)))
    with torch.inference_mode(False):
        first = move_data_to_device(first, learner.device)
        was_training = learner.training
        learner.eval()
        try:
            curve = learner.evaluate_episode(first, steps=steps, every_step=True)  # (steps + 1, 1, Nq, ...)
        finally:
            learner.train(was_training)
    before, after = curve[0, 0].float().cpu(), curve[-1, 0].float().cpu()
    one = Task(*(t[0].cpu() for t in first))
    if learner.is_classifier:
        if one.query_x.dim() == 4:
            return _plot_image_episode(one, after, steps, max_images)
        return _plot_vector_episode(one, after, steps)
    if one.query_x.shape[1:] == (1,) and after.numel() == one.query_y.numel() == one.query_x.shape[0]:
        return _plot_regression_episode(one, before, after, steps)
    return _plot_regression_scatter(one, after, steps)


def _steps(steps: int) -> str:
    return f"{steps} step" if steps == 1 else f"{steps} steps"


def _show_image(ax: Axes, image: Tensor) -> None:
    image = image.float()
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).numpy())
    else:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)


def _plot_image_episode(task: Task, logits: Tensor, steps: int, max_images: int) -> Figure:
    predictions = logits.argmax(-1)
    ways = int(task.support_y.max()) + 1
    accuracy = task_accuracies(logits[None], task.query_y[None]).item()
    n_support, n_query = min(task.support_x.shape[0], max_images), min(task.query_x.shape[0], max_images)
    cols = min(max(n_support, n_query), 10)
    support_rows, query_rows = math.ceil(n_support / cols), math.ceil(n_query / cols)
    figure = _new_figure(figsize=(1.3 * cols, 1.45 * (support_rows + query_rows) + 0.5), dpi=100, layout="constrained")
    axes = figure.subplots(support_rows + query_rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n_support):
        ax = axes[i // cols, i % cols]
        _show_image(ax, task.support_x[i])
        ax.set_title(f"support {int(task.support_y[i])}", fontsize=8)
    # Queries of every class, not the first classes only: take them round-robin across classes, and
    # the wrong ones first, since those are what the picture is for.
    wrong_first = sorted(range(task.query_x.shape[0]), key=lambda j: bool(predictions[j] == task.query_y[j]))
    rank_in_class = {
        j: sum(int(task.query_y[k]) == int(task.query_y[j]) for k in wrong_first[:i]) for i, j in enumerate(wrong_first)
    }
    shown = sorted(wrong_first, key=lambda j: (rank_in_class[j], int(task.query_y[j])))[:n_query]
    for position, j in enumerate(shown):
        ax = axes[support_rows + position // cols, position % cols]
        _show_image(ax, task.query_x[j])
        predicted, true = int(predictions[j]), int(task.query_y[j])
        ax.set_title(f"pred {predicted} / true {true}", fontsize=8, color="green" if predicted == true else "red")
    figure.suptitle(
        f"{ways}-way episode: support (top rows), queries (below); query accuracy {accuracy:.0%} after {_steps(steps)}",
        fontsize=9,
    )
    return figure


def _first_two_features(x: Tensor) -> Tensor:
    x = x.reshape(x.shape[0], -1).float()
    return x[:, :2] if x.shape[1] >= 2 else torch.cat([x, torch.zeros_like(x)], dim=1)


def _plot_vector_episode(task: Task, logits: Tensor, steps: int) -> Figure:
    predictions = logits.argmax(-1)
    wrong = predictions != task.query_y
    accuracy = 1.0 - wrong.float().mean().item()
    cmap = _colormap("tab10")
    support, query = _first_two_features(task.support_x), _first_two_features(task.query_x)
    figure = _new_figure(figsize=(5.5, 4.5), dpi=100, layout="constrained")
    ax = figure.subplots()
    ax.scatter(
        query[:, 0].numpy(),
        query[:, 1].numpy(),
        s=40,
        c=[cmap(int(p) % 10) for p in predictions],
        edgecolors=["red" if w else "none" for w in wrong],
        linewidths=1.5,
        label="query (colour: predicted class; red edge: wrong)",
    )
    ax.scatter(
        support[:, 0].numpy(),
        support[:, 1].numpy(),
        s=220,
        marker="*",
        c=[cmap(int(y) % 10) for y in task.support_y],
        edgecolors="black",
        linewidths=0.8,
        label="support (colour: class)",
    )
    ax.set_xlabel("input feature 0")
    ax.set_ylabel("input feature 1")
    ax.set_title(f"Episode: query accuracy {accuracy:.0%} after {_steps(steps)}", fontsize=10)
    ax.legend(fontsize="small")
    return figure


def _plot_regression_episode(task: Task, before: Tensor, after: Tensor, steps: int) -> Figure:
    x, y = task.query_x[:, 0].float(), task.query_y.reshape(-1).float()
    before, after = before.reshape(-1), after.reshape(-1)
    order = torch.argsort(x)
    mse_before, mse_after = (before - y).pow(2).mean().item(), (after - y).pow(2).mean().item()
    figure = _new_figure(figsize=(6.0, 4.0), dpi=100, layout="constrained")
    ax = figure.subplots()
    ax.plot(x[order].numpy(), y[order].numpy(), color="black", linewidth=1.5, label="true function (query targets)")
    ax.plot(
        x[order].numpy(),
        before[order].numpy(),
        "--",
        color="tab:gray",
        label=f"before adaptation (MSE {mse_before:.3g})",
    )
    ax.plot(
        x[order].numpy(), after[order].numpy(), color="tab:blue", label=f"after {_steps(steps)} (MSE {mse_after:.3g})"
    )
    ax.scatter(
        task.support_x[:, 0].float().numpy(),
        task.support_y.reshape(-1).float().numpy(),
        s=45,
        color="tab:red",
        zorder=3,
        label="support",
    )
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"Episode: {task.support_x.shape[0]}-shot regression", fontsize=10)
    ax.legend(fontsize="small")
    return figure


def _plot_regression_scatter(task: Task, after: Tensor, steps: int) -> Figure:
    true, predicted = task.query_y.reshape(-1).float(), after.reshape(-1).float()
    figure = _new_figure(figsize=(4.5, 4.5), dpi=100, layout="constrained")
    ax = figure.subplots()
    ax.scatter(true.numpy(), predicted.numpy(), s=20)
    low, high = min(true.min().item(), predicted.min().item()), max(true.max().item(), predicted.max().item())
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
    ax.set_xlabel("true query target")
    ax.set_ylabel(f"prediction after {_steps(steps)}")
    ax.set_title(f"Episode: query MSE {(predicted - true).pow(2).mean().item():.3g}", fontsize=10)
    ax.legend(fontsize="small")
    return figure


class EpisodeGrid(Callback):
    """Log a figure of one validation episode, adapted, every ``every_n_epochs`` validation runs.

    The episode is the first task of the first validation batch (the sanity check excluded); the figure
    is :func:`plot_episode`'s, logged as ``episode`` on every
    :class:`~lightning.pytorch.loggers.TensorBoardLogger` at ``trainer.global_step`` (nothing is drawn
    without one). Under DDP only global rank 0 draws, from its own first batch.

    Args:
        every_n_epochs: draw every this many validation runs.
        max_images: at most this many support and this many query images in an image grid.
    """

    def __init__(self, every_n_epochs: int = 1, max_images: int = 25) -> None:
        _check_positive_int("every_n_epochs", every_n_epochs)
        _check_positive_int("max_images", max_images)
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self._validations = 0
        self._task: Task | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, max_images=self.max_images)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking and batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero:
            self._task = Task(*(t[:1] for t in Task(*batch)))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        task, self._task = self._task, None
        if task is None or self._validations % self.every_n_epochs or not _tensorboard_loggers(trainer):
            return
        learner = _require_meta_learner(pl_module, "EpisodeGrid")
        _add_figure(trainer, "episode", plot_episode(learner, task, self.max_images))

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._validations = int(state_dict.get("validations", 0))


# ---- progress bar ---------------------------------------------------------------------------------------
class MetaProgressBar(TQDMProgressBar):
    """The TQDM progress bar with the meta-batch size and the episode shape next to ``train/loss``.

    Adds ``tasks`` (tasks per meta-batch) and ``episode`` to the bar's metrics, read from the last
    training batch: ``"5w1s"`` (ways, shots per class) for classification, ``"k=10"`` (support points
    per task) for regression.

    Args:
        refresh_rate: update the bar every this many batches (0 disables it).
        leave: keep the finished epoch's bar on screen.
    """

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._num_tasks: int | None = None
        self._support_y: Tensor | None = None
        self._classifier = False
        self._episode: str | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        support_y = getattr(batch, "support_y", None)
        if support_y is None:
            return
        self._num_tasks = int(support_y.shape[0])
        # Described lazily in get_metrics: reading the labels synchronises with the GPU.
        self._support_y = support_y[0]
        self._classifier = (
            pl_module.is_classifier if isinstance(pl_module, MetaLearner) else not support_y.is_floating_point()
        )
        self._episode = None

    def _describe_episode(self) -> str | None:
        if self._episode is None and self._support_y is not None:
            labels = self._support_y
            if self._classifier:
                ways = int(labels.max()) + 1
                self._episode = f"{ways}w{labels.shape[0] // ways}s"
            else:
                self._episode = f"k={labels.shape[0]}"
            self._support_y = None
        return self._episode

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float]:
        items = super().get_metrics(trainer, pl_module)
        episode = self._describe_episode()
        if self._num_tasks is not None and episode is not None:
            items["tasks"] = self._num_tasks
            items["episode"] = episode
        return items
