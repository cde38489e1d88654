"""Labelled images held in memory, and loading that names the file when an image is bad."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class ImagePreprocessing:
    """How a datamodule turns an image file into a model input; stored in checkpoints so that
    ``lit-meta adapt`` prepares a user's images exactly as training did.

    Attributes:
        channels: 1 (grayscale) or 3 (RGB).
        image_size: height and width after resizing.
        invert: ``255 - pixel`` before scaling (Omniglot).
        mean: per-channel mean subtracted after scaling pixels to ``[0, 1]``.
        std: per-channel standard deviation divided by after that.
    """

    channels: int
    image_size: int
    invert: bool = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ImagePreprocessing:
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})

    def load(self, path: str) -> Tensor:
        """The normalised ``(channels, image_size, image_size)`` float tensor of the image file ``path``.

        Raises:
            ValueError: if the file is not a readable image, or its colour channels differ from the
                model's (an RGB photo for a grayscale model is refused, not silently converted).
        """
        with open(path, "rb") as f:
            data = f.read()
        found = _image_channels(data, path)
        if found != self.channels:
            raise ValueError(
                f"Expected {self.channels}-channel images (what the model was trained on), but got "
                f"{found} channels in {path!r}."
            )
        image = decode_image(data, path, self.channels, self.image_size, self.invert).float() / 255.0
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (image - mean) / std


def _image_channels(data: bytes, name: str) -> int:
    """Colour channels of an encoded image, alpha not counted: 1 (gray or bilevel) or 3."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            bands = image.getbands()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Expected a readable image in {name!r}, but got an unreadable or corrupt file ({err}).") from err
    return 1 if bands in (("L",), ("1",), ("L", "A"), ("I",), ("F",)) else 3
