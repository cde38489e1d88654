"""Supervised transfer: a head over every training class, then a new classifier per task."""

from __future__ import annotations

import pytest
import torch

from lit_meta.algorithms import SupervisedTransfer
from lit_meta.functional import linear_probe_logits
from lit_meta.models import MLP
from lit_meta.tasks import Task


def test_one_step_of_the_linear_probe_by_hand():
    support = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1 task, 2 samples, 2 features)
    labels = torch.tensor([[0, 1]])
    query = torch.tensor([[[3.0, 1.0]]])
    curve = linear_probe_logits(support, labels, query, ways=2, steps=1, lr=0.5)
    assert torch.equal(curve[0], torch.zeros(1, 1, 2))  # before any step: every class equally likely
    # From zero weights the softmax is uniform: dL/dW = X^T (1/2 - Y) / N, dL/db = mean(1/2 - Y),
    # with one-hot Y = [[1, 0], [0, 1]].
    residual = torch.tensor([[-0.5, 0.5], [0.5, -0.5]])
    weight = -0.5 * support[0].T @ residual / 2
    bias = -0.5 * residual.mean(0)
    torch.testing.assert_close(curve[1, 0], query[0] @ weight + bias)


def test_the_linear_probe_separates_a_separable_support_set():
    torch.manual_seed(0)
    centres = torch.randn(4, 8) * 3
    support = (centres.repeat_interleave(5, 0) + 0.1 * torch.randn(20, 8))[None]
    labels = torch.arange(4).repeat_interleave(5)[None]
    logits = linear_probe_logits(support, labels, support, ways=4, steps=200, lr=0.5)[-1]
    assert torch.equal(logits.argmax(-1), labels)


def test_training_labels_beyond_the_head_are_refused():
    learner = SupervisedTransfer(MLP(4, (8,), 3))
    task = Task(torch.randn(1, 3, 4), torch.tensor([[0, 1, 2]]), torch.randn(1, 3, 4), torch.tensor([[0, 1, 7]]))
    with pytest.raises(ValueError, match=r"Expected training labels in \[0, 3\) \(the head's `out_features`: set"):
        learner.episode(task, training=True)


def test_training_logits_cover_every_training_class_and_evaluation_the_tasks_ways():
    learner = SupervisedTransfer(MLP(4, (8,), 10), adapt="finetune", finetune_steps=4)
    task = Task(
        torch.randn(2, 3, 4), torch.tensor([[0, 1, 2]] * 2), torch.randn(2, 6, 4), torch.tensor([[0, 1, 2] * 2] * 2)
    )
    assert learner.episode(task, training=True).shape == (2, 6, 10)
    assert learner.evaluate_episode(task).shape == (2, 6, 3)
    assert learner.evaluate_episode(task, every_step=True).shape == (5, 2, 6, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adapt": "knn"}, "Expected `adapt` to be one of 'ncm', 'finetune'"),
        ({"finetune_lr": 0.0}, "Expected `finetune_lr` > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SupervisedTransfer(MLP(4, (8,), 3), **kwargs)
