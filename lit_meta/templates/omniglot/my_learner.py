"""Your own learner: Prototypical Networks with cosine similarity, to change into your algorithm.

Train it from this folder (see README.md for the command of this example). A metric-based learner
implements one hook, :meth:`classify` (see ``lit_meta.algorithms.MetricLearner``): the embedding, the
losses, logging, validation, meta-test and checkpoints come with the base class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_meta.algorithms import MetricLearner


class MyLearner(MetricLearner):
    """Classify each query by the cosine similarity of its embedding to each class's prototype, the
    mean embedding of the class's support images (Snell et al., 2017, with cosine similarity).

    Args:
        backbone: the embedding network, e.g. ``lit_meta.models.CNN4`` (its ``features``; the head is unused).
        scale: multiplies the cosine similarities in ``[-1, 1]`` before the softmax.
        optimizer: the optimizer of the embedding network.
        lr_scheduler: optional schedule of its learning rate, stepped every meta-batch.
    """

    def __init__(
        self,
        backbone: nn.Module,
        scale: float = 10.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.scale = scale

    def classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        # support (B, Ns, D) with labels (B, Ns) in 0..ways-1; query (B, Nq, D).
        one_hot = F.one_hot(support_y, ways).to(support.dtype)  # (B, Ns, ways)
        prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)  # (B, ways, D)
        # Logits (B, Nq, ways): the scaled cosine similarity of each query to each prototype.
        return self.scale * F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)
