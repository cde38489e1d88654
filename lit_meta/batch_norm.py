"""BatchNorm in the inner loop: per-step BatchNorm (MAML++) and the affine step taken out of ``batch_norm``.

torch.func's batching rule of ``batch_norm`` gives a wrong second-order gradient when the weight and
bias are batched (torch 2.14: MAML's batched inner loop of a CNN-4 was 8e-3 off the autograd
reference, with the affine step written out it agrees to 1e-15), so every layer here normalises with
``batch_norm`` and applies its weight and bias itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PerStepBatchNorm(nn.Module):
    """BatchNorm whose affine parameters and running statistics are indexed by the inner-loop step.

    Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019 (BNWB and BNRS): the network
    after ``k`` inner updates normalises with row ``k`` of ``weight``, ``bias``, ``running_mean`` and
    ``running_var``, so every step learns the normalisation that suits it. Row ``rows - 1`` also
    serves any later step (an evaluation that adapts longer than training did). The learner sets
    :attr:`step` before every forward pass (:func:`set_step`); the rows are meta-learned, not adapted.

    Args:
        num_features: channels ``C``.
        rows: steps with their own row (inner steps + 1: before the first update and after each).
        eps: added to the variance.
        momentum: of the running statistics.
        track_running_stats: keep per-step running statistics and normalise with them in eval mode;
            ``False`` normalises every batch by its own statistics (lit-meta's backbones).

    Shape:
        ``(N, C, *)`` to ``(N, C, *)``; ``weight`` and ``bias`` are ``(rows, C)``.
    """

    def __init__(
        self,
        num_features: int,
        rows: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.num_features, self.rows, self.eps, self.momentum = num_features, rows, eps, momentum
        self.track_running_stats = track_running_stats
        self.weight = nn.Parameter(torch.ones(rows, num_features))
        self.bias = nn.Parameter(torch.zeros(rows, num_features))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(rows, num_features))
            self.register_buffer("running_var", torch.ones(rows, num_features))
        self.step = 0

    @classmethod
    def from_batch_norm(cls, norm: nn.modules.batchnorm._BatchNorm, rows: int) -> PerStepBatchNorm:
        """Every row starts as ``norm``'s parameters (and statistics), on its device and in its dtype.

        Raises:
            ValueError: ``norm`` has no affine parameters (nothing per step to learn) or a cumulative
                moving average (``momentum=None``), which per-step rows do not keep.
        """
        if not norm.affine:
            raise ValueError(
                f"Expected BatchNorm layers with affine parameters for `per_step_batch_norm`, but got "
                f"{type(norm).__name__}({norm.num_features}, affine=False)."
            )
        if norm.track_running_stats and norm.momentum is None:
            raise ValueError(
                f"Expected a BatchNorm `momentum` for `per_step_batch_norm`'s running statistics, but got None "
                f"(a cumulative average) in {type(norm).__name__}({norm.num_features})."
            )
        momentum = 0.1 if norm.momentum is None else norm.momentum  # unused without running statistics
        layer = cls(norm.num_features, rows, norm.eps, momentum, norm.track_running_stats)
        layer.to(device=norm.weight.device, dtype=norm.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(norm.weight.expand(rows, -1))
            layer.bias.copy_(norm.bias.expand(rows, -1))
            if norm.track_running_stats:
                layer.running_mean.copy_(norm.running_mean.expand(rows, -1))
                layer.running_var.copy_(norm.running_var.expand(rows, -1))
        return layer

    def forward(self, x: Tensor) -> Tensor:
        row = min(self.step, self.rows - 1)
        if self.track_running_stats:  # the row's statistics are views of the buffers, updated in place
            mean, var, batch_statistics = self.running_mean[row], self.running_var[row], self.training
        else:
            mean, var, batch_statistics = None, None, True
        normalised = F.batch_norm(x, mean, var, None, None, batch_statistics, self.momentum, self.eps)
        return _affine(normalised, self.weight[row], self.bias[row])

    def extra_repr(self) -> str:
        return f"{self.num_features}, rows={self.rows}, track_running_stats={self.track_running_stats}"


def convert_per_step_batch_norm(module: nn.Module, rows: int) -> int:
    """Replace every BatchNorm layer of ``module``, in place, by a :class:`PerStepBatchNorm` with ``rows``
    rows; returns how many layers are per-step now (converted or already so)."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, PerStepBatchNorm.from_batch_norm(child, rows))
            count += 1
        elif isinstance(child, PerStepBatchNorm):
            if child.rows != rows:
                raise ValueError(f"Expected per-step BatchNorm layers with {rows} rows, but got {child.rows}.")
            count += 1
        else:
            count += convert_per_step_batch_norm(child, rows)
    return count


def set_step(module: nn.Module, step: int) -> None:
    """Make every :class:`PerStepBatchNorm` of ``module`` normalise as the network after ``step`` updates."""
    for layer in module.modules():
        if isinstance(layer, PerStepBatchNorm):
            layer.step = step


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``x * weight + bias`` over the channel dimension 1 of ``x`` ``(N, C, *)``."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        x = x * weight.reshape(shape)
    return x if bias is None else x + bias.reshape(shape)


def _batch_norm_affine_outside(layer: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``layer(x)`` for a layer without running statistics, its affine step written out."""
    return _affine(F.batch_norm(x, None, None, None, None, True, 0.0, layer.eps), layer.weight, layer.bias)


@contextmanager
def affine_outside_batch_norm(module: nn.Module) -> Iterator[None]:
    """Within the block, the BatchNorm layers of ``module`` (none with running statistics: the batched
    inner loop refuses those) apply their weight and bias outside ``batch_norm`` (see the module's
    docstring); the same values, and the right second-order gradient under ``vmap``."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.forward = lambda x, layer=layer: _batch_norm_affine_outside(layer, x)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
