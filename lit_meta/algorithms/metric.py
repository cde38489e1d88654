"""The shared part of metric-based learners: embed each task, compare queries to the support set."""

from __future__ import annotations

import math
from abc import abstractmethod
from contextlib import nullcontext

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_meta.algorithms.base import MetaLearner
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_int, check_type


class MetricLearner(MetaLearner):
    """A learner that adapts by looking at the support set once: no inner loop, no adaptation steps.

    The backbone's ``features`` embed the images; :meth:`classify` turns support and query embeddings
    into logits. A "step" in the adaptation-curve sense is seeing the support set: with 0 steps every
    class is equally likely, with 1 or more the prediction is the metric one.

    Args:
        backbone: a network with a ``features`` body ``(N, *input_shape) -> (N, D)`` and a linear
            ``head`` whose ``in_features`` is ``D`` (every model in :mod:`lit_meta.models`). Only the
            body is used: the head would be a parameter without a gradient.
        optimizer: the optimizer of the embedding.
        lr_scheduler: optional schedule of its learning rate, stepped every meta-batch.
    """

    def __init__(
        self, backbone: nn.Module, optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None
    ) -> None:
        super().__init__(loss="cross_entropy", eval_inner_steps=1, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.features, self.embedding_dim = split_backbone(backbone)

    @abstractmethod
    def classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Logits ``(B, Nq, ways)`` from support embeddings ``(B, Ns, D)``, their labels ``(B, Ns)`` and
        query embeddings ``(B, Nq, D)``."""

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings ``(N, D)`` of images ``(N, *input_shape)``."""
        embedding = self.features(x).flatten(1)
        if embedding.shape[1] != self.embedding_dim:
            raise ValueError(
                f"Expected `backbone.features` to output {self.embedding_dim} features "
                f"(`head.in_features`), but got {embedding.shape[1]}."
            )
        return embedding

    def embed(self, x: Tensor) -> Tensor:
        return self(x)

    def embed_tasks(self, task: Task) -> tuple[Tensor, Tensor]:
        """Support ``(B, Ns, D)`` and query ``(B, Nq, D)`` embeddings.

        One forward per task over its support and query images together, so that BatchNorm without
        running statistics normalises each task by its own images, whatever the meta-batch size.
        """
        support_size = task.support_x.shape[1]
        embedded = torch.stack([self(torch.cat([s, q])) for s, q in zip(task.support_x, task.query_x)])
        return embedded[:, :support_size], embedded[:, support_size:]

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        steps = self.eval_inner_steps if steps is None else steps
        check_positive_int("steps", steps, minimum=0)
        # Labels are 0..ways-1 in every task (the datamodules remap them); training may use more ways than test.
        ways = int(task.support_y.max()) + 1
        uniform = -math.log(ways)  # before the support is seen: every class equally likely
        if steps == 0 and not every_step:
            return task.query_x.new_full((*task.query_y.shape, ways), uniform)
        # Evaluation needs no graph: there is no inner loop to differentiate.
        with nullcontext() if training else torch.no_grad():
            support, query = self.embed_tasks(task)
            logits = self.classify(support, task.support_y, query, ways)
        if steps == 0:
            logits = torch.full_like(logits, uniform)
        if not every_step:
            return logits
        return torch.stack([torch.full_like(logits, uniform)] + [logits] * steps)


def split_backbone(backbone: nn.Module) -> tuple[nn.Module, int]:
    """``(backbone.features, D)``: the body of a lit-meta backbone and the size of its embeddings."""
    check_type("backbone", backbone, nn.Module)
    head = getattr(backbone, "head", None)
    if not isinstance(getattr(backbone, "features", None), nn.Module) or not isinstance(head, nn.Linear):
        raise TypeError(
            f"Expected `backbone` to have a `features` module and a linear `head` (as lit_meta.models do), "
            f"but got {type(backbone).__name__}."
        )
    return backbone.features, head.in_features
