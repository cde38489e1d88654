"""The one image-preparation path: decode, convert, resize, invert, normalise.

Datamodules prepare their training images with it, and ``lit-meta adapt`` prepares a user's images
with the :class:`ImagePreprocessing` a checkpoint recorded, so the two cannot drift apart.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# What PIL raises on a file that is not a readable image.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def unreadable(where: str, err: Exception) -> ValueError:
    """The error for an image that cannot be decoded; ``where`` names the file."""
    return ValueError(f"Expected a readable image in {where}, but got an unreadable or corrupt file ({err}).")


def prepare_image(image: Image.Image, channels: int, size: int, invert: bool = False) -> Tensor:
    """Convert a PIL image to ``channels`` (1: grayscale, 3: RGB), resize it to ``size x size``
    (bilinear; an image of that size is kept as it is) and optionally invert it (``255 - pixel``:
    Omniglot draws dark strokes on white, models want strokes high).

    Returns:
        ``(channels, size, size)`` uint8.
    """
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if invert:
        array = 255 - array
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


def decode_image(data: bytes, name: str, channels: int, size: int, invert: bool = False) -> Tensor:
    """:func:`prepare_image` of the encoded file ``data``; ``name`` names it in the error.

    Returns:
        ``(channels, size, size)`` uint8.

    Raises:
        ValueError: if the file is not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return prepare_image(image, channels, size, invert)
    except IMAGE_ERRORS as err:
        raise unreadable(repr(name), err) from err


def normalise(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(pixels / 255 - mean) / std`` as float; ``pixels`` ``(C, H, W)`` uint8, ``mean`` and ``std``
    ``(C, 1, 1)``."""
    return (pixels.float().div_(255.0) - mean) / std


def channel_stats(values: Sequence[float]) -> Tensor:
    """Per-channel statistics as a ``(C, 1, 1)`` float tensor, to broadcast over ``(C, H, W)``."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


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
        found = image_channels(data, path)
        if found != self.channels:
            raise ValueError(
                f"Expected {self.channels}-channel images (what the model was trained on), but got "
                f"{found} channels in {path!r}."
            )
        pixels = decode_image(data, path, self.channels, self.image_size, self.invert)
        return normalise(pixels, channel_stats(self.mean), channel_stats(self.std))


def image_channels(data: bytes, name: str) -> int:
    """Colour channels of an encoded image, alpha not counted: 1 (gray or bilevel) or 3."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            bands = image.getbands()
    except IMAGE_ERRORS as err:
        raise unreadable(repr(name), err) from err
    return 1 if bands in (("L",), ("1",), ("L", "A"), ("I",), ("F",)) else 3


def list_classes(root: str) -> dict[str, list[str]]:
    """``{class: [image paths]}`` of ``root/<class>/<image>``, sorted; hidden files are ignored.

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        ValueError: if ``root`` holds no class folder, a class folder holds no image, or a file is
            not an image.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Expected a folder of class folders at {root!r}, but got no such folder.")
    classes: dict[str, list[str]] = {}
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
        for file in files:
            if not file.lower().endswith(IMAGE_SUFFIXES) or not os.path.isfile(os.path.join(folder, file)):
                raise ValueError(
                    f"Expected only image files ({', '.join(IMAGE_SUFFIXES)}) in class {name!r} of {root!r}, but got "
                    f"{file!r}."
                )
        if not files:
            raise ValueError(f"Expected >= 1 image in class {name!r} of {root!r}, but got an empty folder.")
        classes[name] = [os.path.join(folder, f) for f in files]
    if not classes:
        raise ValueError(f"Expected class folders (root/<class>/<image>) in {root!r}, but got none.")
    return classes
