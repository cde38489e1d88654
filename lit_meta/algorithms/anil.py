"""ANIL: MAML that adapts only the head."""

from __future__ import annotations

from torch import nn

from lit_meta.algorithms.maml import MAML
from lit_meta.algorithms.metric import split_backbone


class ANIL(MAML):
    """Almost No Inner Loop: the body is meta-learned, only the head adapts to each task.

    Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
    Effectiveness of MAML", ICLR 2020. The inner loop of :class:`MAML` runs on ``backbone.head`` over
    the body's features ``backbone.features(x)``, which are computed once per task (not once per step);
    the meta-gradient reaches the body through the query (and, second order, the support) features.

    Arguments are those of :class:`MAML`; ``backbone`` must have ``features`` and a linear ``head``
    (every model in :mod:`lit_meta.models`).

    Shape:
        Support ``(B, Ns, *input_shape)`` and query ``(B, Nq, *input_shape)`` give query logits
        ``(B, Nq, ways)``; the head adapts on features ``(B, Ns, D)``.
    """

    def split(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        body, _ = split_backbone(backbone)
        return body, backbone.head
