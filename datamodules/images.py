"""Labelled images held in memory, and loading that names the file when an image is bad."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def decode_image(data: bytes, name: str, channels: int, size: int, invert: bool = False) -> Tensor:
    """Decode, convert and resize one image.

    Args:
        data: the encoded file.
        name: the file's name, for the error message.
        channels: 1 (grayscale) or 3 (RGB).
        size: output height and width.
        invert: ``255 - pixel`` (Omniglot draws dark strokes on white; models want strokes high).

    Returns:
        ``(channels, size, size)`` uint8.

    Raises:
        ValueError: if the file is not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Expected a readable image in {name!r}, but got an unreadable or corrupt file ({err}).") from err
    if invert:
        array = 255 - array
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


class ImageClasses(Dataset):
    """Images of several classes, decoded once into one uint8 tensor.

    ``dataset[i]`` is ``(image, label)`` with ``image`` a float ``(C, H, W)`` tensor, normalised as
    ``(pixel / 255 - mean) / std``, rotated by ``rotations[i] * 90`` degrees.

    Args:
        images: ``(N, C, H, W)`` uint8.
        labels: ``N`` class indices.
        class_names: name of each class index.
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.
        rotations: ``N`` quarter turns (Omniglot's rotated classes share the stored image).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Sequence[int],
        class_names: Sequence[str],
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        rotations: Sequence[int] | None = None,
        sources: Sequence[int] | None = None,
    ) -> None:
        self.images = images
        self.labels = [int(label) for label in labels]
        self.class_names = list(class_names)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.rotations = list(rotations) if rotations is not None else [0] * len(self.labels)
        # Index of the stored image of each sample (rotated copies point at the same image).
        self.sources = list(sources) if sources is not None else list(range(len(self.labels)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[self.sources[index]].float().div_(255.0)
        if self.rotations[index]:
            image = torch.rot90(image, self.rotations[index], dims=(1, 2))
        return (image - self.mean) / self.std, self.labels[index]
