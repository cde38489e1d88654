"""lit_meta.evaluation and the confidence interval: curves over 0..K steps against the learner's own
predictions, a hand-computed CI, and a short sinusoid run that the curve shows adapting."""

import math

import pytest
import torch

from datamodules import SinusoidDataModule
from lit_meta.algorithms import MAML
from lit_meta.evaluation import adaptation_curve
from lit_meta.functional import mean_ci95, pooled_mean_ci95
from lit_meta.models import MLP
from tests.helpers.learners import BlobsDataModule, build
from tests.helpers.trainers import quiet_trainer


def test_mean_ci95_by_hand():
    mean, ci = mean_ci95(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # std (n - 1) = sqrt(5/3); 1.96 * std / sqrt(4)
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert mean_ci95(torch.tensor([0.7])) == (pytest.approx(0.7), 0.0)
    with pytest.raises(ValueError, match="Expected at least 1 value to average, but got 0"):
        mean_ci95(torch.tensor([]))


def test_pooled_mean_ci95_equals_mean_ci95_of_the_pooled_values():
    torch.manual_seed(0)
    groups = [torch.rand(n, dtype=torch.float64) for n in (3, 7, 1, 12)]  # clients of different sizes
    summaries = [(g.mean(), (g**2).mean(), g.numel()) for g in groups]
    pooled = pooled_mean_ci95(*(torch.tensor(column) for column in zip(*summaries)))
    expected = mean_ci95(torch.cat(groups))
    assert pooled == (pytest.approx(expected[0], rel=1e-12), pytest.approx(expected[1], rel=1e-9))
    # By hand: groups {1, 3} and {2}: mean 2, unbiased variance 1, ci 1.96 * sqrt(1 / 3).
    mean, ci = pooled_mean_ci95(torch.tensor([2.0, 2.0]), torch.tensor([5.0, 4.0]), torch.tensor([2, 1]))
    assert (mean, ci) == (pytest.approx(2.0), pytest.approx(1.96 * math.sqrt(1 / 3)))
    with pytest.raises(ValueError, match="Expected one mean, mean square and count per group, but got 2, 1 and 2"):
        pooled_mean_ci95(torch.tensor([1.0, 2.0]), torch.tensor([1.0]), torch.tensor([1, 1]))


def test_adaptation_curve_of_classifier_is_per_task_accuracy():
    learner = build("maml", "classification")
    tasks = BlobsDataModule(batches=2, meta_batch_size=3).tasks
    curve = adaptation_curve(learner, tasks, steps=2)
    assert curve.shape == (3, 6)
    # Row k, task t: accuracy of the predictions after k steps, recomputed here.
    predictions = learner.evaluate_episode(tasks[1], steps=1)
    expected = (predictions.argmax(-1) == tasks[1].query_y).float().mean(1)
    torch.testing.assert_close(curve[1, 3:], expected)
    assert ((curve >= 0) & (curve <= 1)).all()


@pytest.mark.slow
def test_short_run_reduces_sinusoid_mse_far_below_zero_steps():
    torch.manual_seed(0)
    learner = MAML(MLP(), inner_lr=0.01, loss="mse", inner_loop="batched")
    data = SinusoidDataModule(meta_batch_size=25, train_batches_per_epoch=1000, test_tasks=100)
    data.setup("test")
    untrained = adaptation_curve(learner, data.test_dataloader(), steps=10).mean(1)
    quiet_trainer(
        max_steps=1000,
        limit_val_batches=0,
    ).fit(learner, data)
    trained = adaptation_curve(learner, data.test_dataloader(), steps=10).mean(1)
    # Meta-training makes the 10-step MSE far lower than both the 0-step MSE and an untrained model's.
    assert trained[10] < 0.5 * trained[0]
    assert trained[10] < 0.6 * untrained[10]
