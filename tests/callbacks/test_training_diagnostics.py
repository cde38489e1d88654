from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from callbacks import AdaptationCurve, EpisodeGrid, MetaProgressBar, plot_adaptation_curves, plot_episode
from datamodules import SinusoidDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import CNN4
from lit_meta.tasks import Task
from tests.helpers.learners import CASES, FEATURES, WAYS, BlobsDataModule, build
from tests.helpers.tasks import make_classification_task
from tests.helpers.trainers import quiet_trainer


def _data(kind: str):
    if kind == "regression":
        return SinusoidDataModule(
            meta_batch_size=2, train_batches_per_epoch=2, val_tasks=4, test_tasks=4, eval_queries=5
        )
    return BlobsDataModule(batches=2, meta_batch_size=2)


def _fit(learner, data, tmp_path, callbacks, **kwargs) -> Trainer:
    # 2 meta-batches per epoch, 2 epochs: validation after steps 2 and 4 (plus one sanity-check batch).
    options = dict(
        max_epochs=2,
        max_steps=4,
        num_sanity_val_steps=1,
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    trainer = Trainer(callbacks=callbacks, **options)
    trainer.fit(learner, data)
    return trainer


def _events(trainer: Trainer) -> EventAccumulator:
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("name, kind", CASES)
def test_curves_and_episode_are_logged_to_tensorboard(name, kind, tmp_path):
    learner = build(name, kind)
    curve = AdaptationCurve(num_tasks=4, max_steps=2)
    trainer = _fit(learner, _data(kind), tmp_path, [curve, EpisodeGrid()])

    metric = "mse" if kind == "regression" else "accuracy"
    assert learner.metric_name == metric
    events = _events(trainer)
    scalars = set(events.Tags()["scalars"])
    for k in range(3):
        for key in (f"adaptation/loss_step{k}", f"adaptation/{metric}_step{k}"):
            assert key in scalars
            assert [e.step for e in events.Scalars(key)] == [2, 4]  # no sanity-check point; fit end deduplicated
    assert "adaptation/loss_step3" not in scalars
    assert {"adaptation/curve", "episode"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("episode")] == [2, 4]

    assert [step for step, _ in curve.history] == [2, 4]
    assert all(values.shape == (3, 4) for _, values in curve.history)
    if kind == "classification" and learner.eval_inner_steps == 1:  # metric-based: nothing after seeing the support
        torch.testing.assert_close(curve.history[-1][1][1], curve.history[-1][1][2])
    assert learner.training  # the learner's mode is restored


def test_step_values_equal_the_learners_own_metric_on_the_first_val_tasks(tmp_path):
    learner = build("maml", "classification")
    data = BlobsDataModule(batches=3, meta_batch_size=2)
    curve = AdaptationCurve(num_tasks=3, max_steps=2)  # 3 tasks: the second batch is trimmed to 1 task
    trainer = _fit(learner, data, tmp_path, [curve], limit_train_batches=2, limit_val_batches=1)
    assert trainer.global_step == 4
    events = _events(trainer)

    # The final evaluation (step 4) used the final weights; recompute on the datamodule's first 3 tasks.
    tasks = [data.tasks[0], Task(*(t[:1] for t in data.tasks[1]))]
    learner.eval()
    for k in (0, 2):
        predictions = [learner.evaluate_episode(task, steps=k) for task in tasks]
        accuracy = torch.cat([learner.task_metric(p, t.query_y) for p, t in zip(predictions, tasks)]).mean()
        loss = torch.cat([learner.task_losses(p, t.query_y) for p, t in zip(predictions, tasks)]).mean()
        assert events.Scalars(f"adaptation/accuracy_step{k}")[-1].step == 4
        assert events.Scalars(f"adaptation/accuracy_step{k}")[-1].value == pytest.approx(accuracy.item(), abs=1e-6)
        assert events.Scalars(f"adaptation/loss_step{k}")[-1].value == pytest.approx(loss.item(), rel=1e-5)
        assert curve.history[-1][1][k].mean().item() == pytest.approx(accuracy.item(), abs=1e-6)
    # The validation loader has 2 meta-batches but only 1 is validated: the curve's tasks come from the loader itself.
    assert curve.history[-1][1].shape == (3, 3)


def test_every_n_epochs_and_the_evaluation_at_fit_end(tmp_path):
    learner = build("anil", "classification")
    curve, grid = AdaptationCurve(every_n_epochs=2, num_tasks=2), EpisodeGrid(every_n_epochs=2)
    # Validation after steps 2, 4 and 6: evaluated at the 2nd (step 4); fit end adds step 6.
    trainer = _fit(learner, _data("classification"), tmp_path, [curve, grid], max_epochs=3, max_steps=6)
    events = _events(trainer)
    assert [step for step, _ in curve.history] == [4, 6]
    assert curve.history[0][1].shape == (learner.eval_inner_steps + 1, 2)  # max_steps=None: eval_inner_steps
    assert [e.step for e in events.Scalars("adaptation/accuracy_step2")] == [4, 6]  # written after the logger closed
    assert [e.step for e in events.Images("adaptation/curve")] == [4, 6]
    assert [e.step for e in events.Images("episode")] == [4]
    assert curve.state_dict()["validations"] == 3


class _FreshValTasks(BlobsDataModule):
    """Validation tasks drawn anew on every call of ``val_dataloader``."""

    def val_dataloader(self) -> DataLoader:
        return DataLoader([make_classification_task(2, WAYS, 2, 3, FEATURES) for _ in range(3)], batch_size=None)


def test_the_same_tasks_are_used_every_time():
    data = _FreshValTasks()
    first, second = next(iter(data.val_dataloader())), next(iter(data.val_dataloader()))
    assert not torch.equal(first.query_x, second.query_x)  # the loader itself changes

    curve = AdaptationCurve(num_tasks=5, max_steps=1)
    trainer = SimpleNamespace(datamodule=data, loggers=[], global_step=0)
    tasks = curve.fixed_tasks(trainer)
    assert [t.num_tasks for t in tasks] == [2, 2, 1]
    again = curve.fixed_tasks(trainer)
    for a, b in zip(tasks, again, strict=True):
        for x, y in zip(a, b):
            assert torch.equal(x, y)

    learner = build("maml", "classification")
    losses_1, metrics_1 = curve.evaluate(trainer, learner)
    losses_2, metrics_2 = curve.evaluate(trainer, learner)
    assert losses_1.shape == metrics_1.shape == (2, 5)
    torch.testing.assert_close(losses_1, losses_2)
    torch.testing.assert_close(metrics_1, metrics_2)
    assert len(curve.history) == 2


def test_history_is_saved_and_restored_and_plotted():
    curve = AdaptationCurve(num_tasks=2)
    curve.history = [(10, torch.tensor([[0.3, 0.4], [0.5, 0.7]])), (20, torch.tensor([[0.3, 0.5], [0.8, 0.9]]))]
    restored = AdaptationCurve(num_tasks=2)
    restored.load_state_dict(curve.state_dict())
    assert [s for s, _ in restored.history] == [10, 20]
    torch.testing.assert_close(restored.history[1][1], curve.history[1][1])
    assert curve.state_key != AdaptationCurve(num_tasks=3).state_key

    figure = plot_adaptation_curves(restored.history, "accuracy")
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["step 10", "step 20"]
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([0.4, 0.85])  # means over tasks
    assert ax.get_ylabel() == "query accuracy"
    with pytest.raises(ValueError, match=r"Expected at least 1 curve in `history`, but got 0\."):
        plot_adaptation_curves([], "mse")
    with pytest.raises(ValueError, match=r"Expected `metric_name` to be one of 'accuracy', 'mse', but got 'acc'\."):
        plot_adaptation_curves(curve.history, "acc")


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_episode_of_image_task(channels):
    learner = MAML(
        CNN4(in_channels=channels, out_features=3, hidden=4, blocks=1, image_size=8),
        inner_lr=0.1,
        loss="cross_entropy",
        eval_inner_steps=1,
    )
    labels = torch.arange(3).repeat_interleave(2)[None]  # 3 ways, 2 shots and 2 queries per class
    task = Task(torch.randn(1, 6, channels, 8, 8), labels, torch.randn(1, 6, channels, 8, 8), labels.clone())
    figure = plot_episode(learner, task, max_images=5)
    assert isinstance(figure, Figure)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 5 + 5  # max_images support and max_images query images
    predictions = learner.evaluate_episode(task)[0].argmax(-1).tolist()
    truth = labels[0].tolist()
    # Wrong predictions first, then round-robin over the classes: every class shows before any repeats.
    order = [j for j in range(6) if predictions[j] != truth[j]] + [j for j in range(6) if predictions[j] == truth[j]]
    seen: dict[int, int] = {}
    rank = {}
    for j in order:
        rank[j] = seen.get(truth[j], 0)
        seen[truth[j]] = rank[j] + 1
    expected = sorted(order, key=lambda j: (rank[j], truth[j]))[:5]
    queries = [ax for ax in shown if ax.get_title().startswith("pred")]
    assert [ax.get_title() for ax in queries] == [f"pred {predictions[j]} / true {truth[j]}" for j in expected]
    assert {truth[j] for j in expected} == {0, 1, 2}
    colours = [ax.title.get_color() for ax in queries]
    assert colours == ["green" if predictions[j] == truth[j] else "red" for j in expected]
    image = shown[0].images[0].get_array()
    assert image.min() == pytest.approx(0.0) and image.max() == pytest.approx(1.0)  # min-max rescaled
    assert image.shape == ((8, 8) if channels == 1 else (8, 8, 3))


def test_plot_episode_of_vector_task():
    learner = build("protonet", "classification")
    task = BlobsDataModule(batches=1).tasks[0]
    figure = plot_episode(learner, task)
    ax = figure.axes[0]
    queries, support = ax.collections
    assert len(support.get_offsets()) == task.support_x.shape[1]
    assert len(queries.get_offsets()) == task.query_x.shape[1]
    wrong = learner.evaluate_episode(task)[0].argmax(-1) != task.query_y[0]
    edges = queries.get_edgecolors()
    assert [tuple(e) == (1.0, 0.0, 0.0, 1.0) for e in edges] == wrong.tolist()


def test_plot_episode_of_sinusoid_task():
    learner = build("maml", "regression")
    data = SinusoidDataModule(val_tasks=2, eval_queries=7)
    task = data.fixed_tasks("val")
    figure = plot_episode(learner, task)
    ax = figure.axes[0]
    true, before, after = ax.get_lines()
    order = torch.argsort(task.query_x[0, :, 0])
    assert list(true.get_xdata()) == pytest.approx(task.query_x[0, order, 0].tolist())
    assert list(true.get_ydata()) == pytest.approx(task.query_y[0, order, 0].tolist())
    unadapted = learner.evaluate_episode(Task(*(t[:1] for t in task)), steps=0)[0, order, 0]
    adapted = learner.evaluate_episode(Task(*(t[:1] for t in task)))[0, order, 0]
    assert list(before.get_ydata()) == pytest.approx(unadapted.tolist(), abs=1e-6)
    assert list(after.get_ydata()) == pytest.approx(adapted.tolist(), abs=1e-6)
    assert len(ax.collections[0].get_offsets()) == task.support_x.shape[1]


@pytest.mark.parametrize("kind, episode", [("classification", "3w2s"), ("regression", "k=10")])
def test_progress_bar_shows_tasks_and_episode(kind, episode, tmp_path):
    learner = build("maml", kind)
    bar = MetaProgressBar()
    trainer = quiet_trainer(
        tmp_path,
        max_steps=1,
        limit_val_batches=0,
        callbacks=[bar],
        enable_progress_bar=True,
        accelerator="cpu",
    )
    assert bar.get_metrics(trainer, learner).get("tasks") is None  # nothing seen yet
    trainer.fit(learner, _data(kind))
    metrics = bar.get_metrics(trainer, learner)
    assert metrics["tasks"] == 2
    assert metrics["episode"] == episode
    assert "train/loss" in metrics


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AdaptationCurve(every_n_epochs=0), r"Expected `every_n_epochs` >= 1, but got 0\."),
        (lambda: AdaptationCurve(num_tasks=0), r"Expected `num_tasks` >= 1, but got 0\."),
        (lambda: AdaptationCurve(max_steps=-1), r"Expected `max_steps` >= 0, but got -1\."),
        (lambda: EpisodeGrid(every_n_epochs=0), r"Expected `every_n_epochs` >= 1, but got 0\."),
        (lambda: EpisodeGrid(max_images=0), r"Expected `max_images` >= 1, but got 0\."),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
    with pytest.raises(TypeError, match=r"Expected `every_n_epochs` to be int, but got float 1\.5\."):
        AdaptationCurve(every_n_epochs=1.5)
