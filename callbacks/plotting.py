"""Figures of adaptation: curves over adaptation steps and one episode before and after adapting.

Plain matplotlib on tensors, no Lightning: the callbacks log these figures, and scripts and notebooks
draw them from saved curves. ``matplotlib`` is imported only when a figure is drawn; figures are bound
to no GUI backend (no ``pyplot``), so they are safe on headless machines and in threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lit_meta.functional import mean_ci95, task_accuracies
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRIC_LABELS = {"accuracy": "query accuracy", "mse": "query MSE"}


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
    check_one_of("metric_name", metric_name, tuple(METRIC_LABELS))
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
    ax.set_ylabel(METRIC_LABELS[metric_name])
    ax.set_title(f"Adaptation on {num_tasks} validation tasks (mean, 95% CI)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(title="training step", fontsize="small", title_fontsize="small")
    return figure


def plot_episode_predictions(
    task: Task, before: Tensor, after: Tensor, steps: int, classifier: bool, max_images: int = 25
) -> Figure:
    """Draw one task with its query predictions before and after ``steps`` adaptation steps.

    Args:
        task: one task (no meta-batch dimension): support ``(Ns, ...)``, query ``(Nq, ...)``.
        before: query predictions before adaptation ``(Nq, *out)`` (logits for classification).
        after: query predictions after adaptation ``(Nq, *out)``.
        steps: the adaptation steps of ``after``, for the titles.
        classifier: classification (logits) or regression (outputs).
        max_images: at most this many support and this many query images in an image grid.

    Returns:
        A :class:`matplotlib.figure.Figure`; what it shows is described in
        :func:`callbacks.episode_grid.plot_episode`.
    """
    if classifier:
        if task.query_x.dim() == 4:
            return _plot_image_episode(task, after, steps, max_images)
        return _plot_vector_episode(task, after, steps)
    if task.query_x.shape[1:] == (1,) and after.numel() == task.query_y.numel() == task.query_x.shape[0]:
        return _plot_regression_episode(task, before, after, steps)
    return _plot_regression_scatter(task, after, steps)


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
