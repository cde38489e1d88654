"""Supervised transfer: train an ordinary classifier, adapt by a new classifier on the support set."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_meta.algorithms.metric import MetricLearner
from lit_meta.functional import linear_probe_logits, prototype_logits, prototypes
from lit_meta.tasks import Task
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int


class SupervisedTransfer(MetricLearner):
    """The baseline meta-learners are measured against: no meta-learning, ordinary supervised
    training of the backbone's head over every training class, then a new classifier per task.

    Training: each training task's query images are a class-balanced mini-batch, labelled by their
    class's index among all training classes (the datamodule's ``global_labels: true``), and the
    loss is cross-entropy over the backbone's ``head`` (``out_features`` >= the training classes).
    Adaptation (``adapt``): ``"ncm"`` classifies a query by its nearest class mean of the support
    embeddings (the strong baseline of Tian et al., "Rethinking Few-Shot Image Classification",
    ECCV 2020), ``"finetune"`` fits a linear head on the frozen support embeddings
    (:func:`~lit_meta.functional.linear_probe_logits`; FedMeta's FedAvg(Meta), Chen et al., 2018).
    Federated with FedAvg, this is the FedAvg baseline of federated meta-learning.

    Args:
        backbone: ``features`` and a linear ``head`` over the training classes.
        adapt: ``"ncm"`` or ``"finetune"``.
        distance: ``"ncm"``'s distance, ``"euclidean"`` or ``"cosine"`` (similarities scaled by 10).
        finetune_steps: ``"finetune"``'s gradient steps (the evaluation's adaptation steps).
        finetune_lr: ``"finetune"``'s step size.
        optimizer: of the training, Adam by default.
        lr_scheduler: optional schedule, stepped every batch.

    Shape:
        Training query logits ``(B, Nq, head.out_features)``; evaluation ``(B, Nq, ways)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        adapt: Literal["ncm", "finetune"] = "ncm",
        distance: Literal["euclidean", "cosine"] = "euclidean",
        finetune_steps: int = 100,
        finetune_lr: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        check_one_of("adapt", adapt, ("ncm", "finetune"))
        check_one_of("distance", distance, ("euclidean", "cosine"))
        check_positive_int("finetune_steps", finetune_steps)
        check_positive_float("finetune_lr", finetune_lr)
        self.head = backbone.head
        self.adapt_by, self.distance = adapt, distance
        self.finetune_steps, self.finetune_lr = finetune_steps, finetune_lr
        if adapt == "finetune":
            self.eval_inner_steps = finetune_steps

    def classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        return prototype_logits(query, prototypes(support, support_y, ways), self.distance, scale=10.0)

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        if training:
            classes = self.head.out_features
            if int(task.query_y.max()) >= classes or int(task.query_y.min()) < 0:
                raise ValueError(
                    f"Expected training labels in [0, {classes}) (the head's `out_features`: set the datamodule's "
                    f"`global_labels: true`), but got labels up to {int(task.query_y.max())}."
                )
            return self.head(self(task.query_x.flatten(0, 1))).unflatten(0, task.query_y.shape)
        if self.adapt_by == "ncm":
            return super().episode(task, training=False, steps=steps, every_step=every_step)
        steps = self.eval_inner_steps if steps is None else steps
        check_positive_int("steps", steps, minimum=0)
        with torch.no_grad():  # the body stays frozen: only the new head learns
            support, query = self.embed_tasks(task)
        ways = int(task.support_y.max()) + 1
        curve = linear_probe_logits(support, task.support_y, query, ways, steps, self.finetune_lr)
        return curve if every_step else curve[-1]  # step 0: zero logits, every class equally likely
