"""Random affine warps of training images, drawn from a task's own generator (so resumable)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_meta.validation import check_positive_float


@dataclass(frozen=True)
class AffineWarp:
    """Small random affine warps, one per image, as human drawers vary a character.

    Each image is rotated by ``U(-degrees, degrees)``, sheared by ``U(-shear, shear)`` degrees,
    scaled by ``U(1 - scale, 1 + scale)`` and shifted by ``U(-translate, translate)`` of its size
    in each direction; the area uncovered is filled with zeros (Omniglot's background after
    inversion; the mean colour of normalised RGB images).

    Args:
        degrees: largest rotation.
        translate: largest shift, as a fraction of the image size.
        scale: largest relative change of size (< 1).
        shear: largest shear angle, in degrees (< 90).
    """

    degrees: float = 10.0
    translate: float = 0.1
    scale: float = 0.1
    shear: float = 10.0

    def __post_init__(self) -> None:
        for name in ("degrees", "translate", "scale", "shear"):
            check_positive_float(name, getattr(self, name), allow_zero=True)
        if self.scale >= 1:
            raise ValueError(f"Expected `scale` < 1, but got {self.scale}.")
        if self.shear >= 90:
            raise ValueError(f"Expected `shear` < 90 degrees, but got {self.shear}.")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Warp ``images`` ``(N, C, H, W)``; the parameters are drawn from ``generator`` (CPU)."""
        n = images.shape[0]

        def uniform(bound: float) -> Tensor:
            return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * bound

        angle, shear = torch.deg2rad(uniform(self.degrees)), torch.deg2rad(uniform(self.shear))
        size = 1 + uniform(self.scale)
        shift = torch.stack([uniform(2 * self.translate), uniform(2 * self.translate)], 1)  # [-1, 1] coordinates
        # theta maps output coordinates to input ones: rotation x shear, divided by the scale.
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        linear = torch.stack([torch.stack([cos, cos * tan - sin], 1), torch.stack([sin, sin * tan + cos], 1)], 1)
        theta = torch.cat([linear / size[:, None, None], shift[:, :, None]], 2).to(images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
