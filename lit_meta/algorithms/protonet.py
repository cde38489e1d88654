"""Prototypical Networks."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_meta.algorithms.metric import MetricLearner
from lit_meta.functional import PROTOTYPE_DISTANCES, prototype_logits, prototypes
from lit_meta.validation import check_one_of, check_positive_float


class PrototypicalNetworks(MetricLearner):
    """Prototypical Networks: classify each query by its distance to the mean embedding of each class.

    Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017. The
    prototype of class ``k`` is ``c_k = mean f(x_i)`` over its support samples; a query's logits are
    ``-||f(q) - c_k||^2`` (or ``-||f(q) - c_k||``, or scaled cosine similarities). Training may use more
    ways than testing (the paper trains 60-way on Omniglot): set the datamodule's ``ways`` and ``eval_ways``.

    Args:
        backbone: embedding network with ``features`` and ``head`` (see :class:`MetricLearner`).
        distance: ``"euclidean"``: the squared Euclidean distance, as in the paper (and learn2learn);
            ``"euclidean_unsquared"``: the Euclidean distance itself, as easyfsl's ``PrototypicalNetworks``
            scores (``torch.cdist``); ``"cosine"``. See :func:`~lit_meta.functional.prototype_logits`.
        cosine_scale: multiplies cosine similarities before the softmax (``distance="cosine"`` only).
        optimizer: Adam with lr 1e-3, as in the paper, by default.
        lr_scheduler: optional schedule, stepped every meta-batch (the paper halves the rate every 2,000 episodes).

    Shape:
        A task with support ``(B, ways * shots, *input_shape)`` gives query logits ``(B, Nq, ways)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        distance: Literal["euclidean", "euclidean_unsquared", "cosine"] = "euclidean",
        cosine_scale: float = 10.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        check_one_of("distance", distance, PROTOTYPE_DISTANCES)
        check_positive_float("cosine_scale", cosine_scale)
        self.distance = distance
        self.cosine_scale = cosine_scale

    def classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        return prototype_logits(query, prototypes(support, support_y, ways), self.distance, self.cosine_scale)
