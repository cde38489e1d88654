"""Meta-SGD: MAML with a learned learning rate for every weight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from lit_meta.algorithms.maml import MAML

if TYPE_CHECKING:
    import learn2learn as l2l  # imported where a clone is made: a command's start does not pay for it


class MetaSGD(MAML):
    """Meta-SGD: meta-learn the initialisation and a per-parameter inner learning rate.

    Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", arXiv 2017.
    The inner step is ``theta' = theta - alpha * grad`` with ``alpha`` a tensor shaped like ``theta``
    (element-wise product), learned by the outer loop together with ``theta``; the clone path is
    learn2learn's ``MetaSGD``. With ``first_order``, ``alpha`` still receives its gradient (the update
    is linear in ``alpha``); only the second-order terms through ``grad`` are dropped.

    Arguments are those of :class:`MAML`; ``inner_lr`` is the initial value of every entry of ``alpha``.

    Shape:
        Like :class:`MAML`; ``alpha`` adds one tensor of each parameter's shape.
    """

    per_weight_lrs = True

    def wrap(self, adapted: nn.Module) -> l2l.algorithms.MetaSGD:
        import learn2learn as l2l

        return l2l.algorithms.MetaSGD(adapted, lr=self.inner_lr, first_order=self.first_order)

    def inner_lrs(self, step: int) -> dict[str, Tensor]:
        names = [name for name, _ in self.maml.module.named_parameters()]
        return dict(zip(names, self.maml.lrs))
