"""The one image-preparation path: decode, convert, resize, invert, normalise.

Datamodules prepare their training images with it, and ``lit-meta adapt`` prepares a user's images
with the :class:`ImagePreprocessing` a checkpoint recorded, so the two cannot drift apart.

Conversion rules (:func:`prepare_image`), whatever the file's PIL mode:

- 16-bit integers (``I;16``, ``I;16B``, ``I;16L``, ...) and 32-bit ``I`` (PIL's mode for 16-bit
  data from some files) are scaled to 8 bits as ``round(v * 255 / 65535)``; ``I`` values outside
  ``[0, 65535]`` are refused.
- 32-bit float ``F`` in ``[0, 1]`` becomes ``floor(f * 255 + 0.5)``; other values (NaN included) are refused.
- Bilevel ``1`` is 0 or 255.
- Palette images (``P``, ``PA``) go through their palette colours (RGB, or RGBA when the file has
  transparency), so a grayscale model gets the luma of each colour.
- Alpha (``LA``, ``RGBA``, premultiplied ``La``/``RGBa``, a ``transparency`` colour or palette
  entry) is composited over a white background, ``round((c * a + 255 * (255 - a)) / 255)``, before
  resizing and inverting: Omniglot-like data are dark strokes on white, so a transparent background
  reads as paper (and as 0 once inverted). A transparency colour of a 16-bit image is ignored.
- RGB to gray is PIL's ITU-R 601-2 luma, ``0.299 R + 0.587 G + 0.114 B``; gray to RGB repeats it.

Channels (:func:`image_channels`, alpha not counted) go by mode: 1 for ``1``, ``L``, ``LA``, ``I``,
``I;16*``, ``F``; 3 for ``RGB``, ``RGBA``, ``CMYK``, ...; a palette image is 1 if every colour its
pixels show is gray (``R == G == B``), unused palette entries aside, else 3.

Images over :data:`MAX_PIXELS` pixels (or PIL's ``Image.MAX_IMAGE_PIXELS`` if lower) are refused from
their header, before their pixels are decoded; PIL's own decompression-bomb warning and error become
that same one-line :class:`ValueError`.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# What PIL raises on a file that is not a readable image.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)

# Largest width * height accepted (8000 x 5000); PIL's ``Image.MAX_IMAGE_PIXELS`` applies too if lower.
MAX_PIXELS = 40_000_000

# Modes whose colour is one channel (alpha not counted); palette modes are decided by their colours.
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
PALETTE_MODES = ("P", "PA")
ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}


class ImageRefused(ValueError):
    """An image PIL can read but the project does not accept (too large, pixel values out of range);
    the message names the file and is passed on as it is, not wrapped as "unreadable"."""


def unreadable(where: str, err: Exception) -> ValueError:
    """The error for an image that cannot be decoded; ``where`` names the file."""
    return ValueError(f"Expected a readable image in {where}, but got an unreadable or corrupt file ({err}).")


def max_pixels() -> int:
    """The pixel limit: :data:`MAX_PIXELS`, or PIL's ``Image.MAX_IMAGE_PIXELS`` if that is lower."""
    pil = Image.MAX_IMAGE_PIXELS
    return MAX_PIXELS if pil is None else min(MAX_PIXELS, int(pil))


def check_size(image: Image.Image, where: str) -> None:
    """Refuse ``image`` if its ``width * height`` exceeds :func:`max_pixels` (reads only the header).

    Raises:
        ImageRefused: if it is too large.
    """
    width, height = image.size
    if width * height > max_pixels():
        raise ImageRefused(
            f"Expected an image of at most {max_pixels()} pixels in {where}, but got {width} x {height}."
        )


def bomb_refused(where: str, err: Exception) -> ImageRefused:
    """PIL's ``DecompressionBombError``/``Warning`` as the project's one-line error (PIL gives no width x height)."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    got = f"{found.group(1)} pixels" if found else f"a larger one ({err})"
    return ImageRefused(f"Expected an image of at most {max_pixels()} pixels in {where}, but got {got}.")


@contextmanager
def open_image(data: bytes, where: str) -> Iterator[Image.Image]:
    """The PIL image of the encoded file ``data``, its header read and size checked, its pixels not yet
    decoded (:func:`load_pixels` does that).

    Args:
        data: the file's bytes.
        where: the file's name for errors, quoted (e.g. ``repr(path)``).

    Raises:
        ImageRefused: if the image is larger than :func:`max_pixels`.
        ValueError: if the file is not a readable image.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns above its limit; the stricter check below refuses with the image's width x height.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise bomb_refused(where, err) from err
    except IMAGE_ERRORS as err:
        raise unreadable(where, err) from err
    with image:
        check_size(image, where)
        yield image


def load_pixels(image: Image.Image, where: str) -> None:
    """Decode the pixels of an image from :func:`open_image`.

    Raises:
        ImageRefused: if PIL finds a frame larger than its limit (e.g. a GIF frame beyond the header).
        ValueError: if the pixel data are unreadable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise bomb_refused(where, err) from err
    except IMAGE_ERRORS as err:
        raise unreadable(where, err) from err


def scale_to_8_bits(image: Image.Image, where: str) -> Image.Image:
    """An ``I``/``I;16*`` (16-bit) or ``F`` (float in ``[0, 1]``) image as an ``L`` image.

    Raises:
        ImageRefused: if integers fall outside ``[0, 65535]`` or floats outside ``[0, 1]``.
    """
    values = np.asarray(image)  # (H, W): uint16, int32 or float32
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise ImageRefused(f"Expected float pixels in [0, 1] in {where}, but got NaN or infinity.")
        low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if low < 0 or high > 1:
            raise ImageRefused(f"Expected float pixels in [0, 1] in {where}, but got values in [{low:g}, {high:g}].")
        scaled = np.floor(values.astype(np.float64) * 255 + 0.5)
    else:
        values = values.astype(np.int64)
        low, high = int(values.min(initial=0)), int(values.max(initial=0))
        if low < 0 or high > 65535:
            raise ImageRefused(
                f"Expected integer pixels in [0, 65535] (16 bits) in {where}, but got values in [{low}, {high}]."
            )
        scaled = (values * 255 + 32767) // 65535  # round(v * 255 / 65535); 65535 is odd, so no ties
    return Image.fromarray(scaled.astype(np.uint8), "L")


def over_white(image: Image.Image) -> np.ndarray:
    """An ``LA``/``RGBA`` image composited over white: ``round((c * a + 255 * (255 - a)) / 255)``.

    Returns:
        ``(H, W, 1)`` or ``(H, W, 3)`` uint8.
    """
    pixels = np.asarray(image).astype(np.uint32)  # (H, W, 2 or 4), straight (not premultiplied) alpha
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def to_8_bit_colour(image: Image.Image, where: str) -> Image.Image:
    """``image`` as an ``L`` or ``RGB`` image by the module's conversion rules (no alpha left)."""
    mode = image.mode
    if mode == "F" or mode == "I" or mode.startswith("I;16"):
        return scale_to_8_bits(image, where)
    transparent = "transparency" in image.info
    if mode == "P":
        transparent = transparent or (image.palette is not None and image.palette.mode == "RGBA")
        image = image.convert("RGBA" if transparent else "RGB")
    elif mode in ALPHA_MODES:
        image = image.convert(ALPHA_MODES[mode])
    elif transparent and mode in ("1", "L"):
        image = image.convert("LA")
    elif transparent and mode == "RGB":
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB"):
        image = image.convert("L" if mode == "1" else "RGB")
    if image.mode in ("LA", "RGBA"):
        pixels = over_white(image)
        return Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
    return image


def prepare_image(
    image: Image.Image, channels: int, size: int, invert: bool = False, where: str = "the image"
) -> Tensor:
    """Convert a PIL image to ``channels`` (1: grayscale, 3: RGB) by the module's conversion rules,
    resize it to ``size x size`` (bilinear; an image of that size is kept as it is) and optionally
    invert it (``255 - pixel``: Omniglot draws dark strokes on white, models want strokes high).

    Args:
        image: any PIL mode (see the module docstring).
        channels: 1 or 3.
        size: output height and width.
        invert: ``255 - pixel`` after converting (a transparent background becomes 0).
        where: the image's name for errors, quoted (e.g. ``repr(path)``).

    Returns:
        ``(channels, size, size)`` uint8.

    Raises:
        ImageRefused: if the image is larger than :func:`max_pixels` or its values are out of range.
    """
    check_size(image, where)
    image = to_8_bit_colour(image, where)
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
        ValueError: if the file is not a readable image, is larger than :func:`max_pixels` (checked
            before its pixels are decoded) or has pixel values out of range.
    """
    with open_image(data, repr(name)) as image:
        return convert_checked(image, repr(name), channels, size, invert)


def convert_checked(image: Image.Image, where: str, channels: int, size: int, invert: bool) -> Tensor:
    """:func:`prepare_image` of an image from :func:`open_image`; failures name ``where``."""
    load_pixels(image, where)
    try:
        return prepare_image(image, channels, size, invert, where)
    except ImageRefused:
        raise
    except IMAGE_ERRORS as err:
        raise unreadable(where, err) from err


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
        with open_image(data, repr(path)) as image:
            found = count_channels(image, repr(path))
            if found != self.channels:
                raise ValueError(
                    f"Expected {self.channels}-channel images (what the model was trained on), but got "
                    f"{found} channels in {path!r}."
                )
            pixels = convert_checked(image, repr(path), self.channels, self.image_size, self.invert)
        return normalise(pixels, channel_stats(self.mean), channel_stats(self.std))


def image_channels(data: bytes, name: str) -> int:
    """Colour channels of an encoded image, alpha not counted: 1 or 3 (see :func:`count_channels`).

    Raises:
        ValueError: if the file is not a readable image or is larger than :func:`max_pixels`.
    """
    with open_image(data, repr(name)) as image:
        return count_channels(image, repr(name))


def count_channels(image: Image.Image, where: str) -> int:
    """Colour channels of an image from :func:`open_image`, alpha not counted.

    1 for gray modes (``1``, ``L``, ``LA``, ``La``, ``I``, ``I;16*``, ``F``); for a palette image, 1 if
    every colour its pixels show (after compositing over white) is gray (``R == G == B``), whatever
    the unused palette entries are; 3 for every other mode (``RGB``, ``RGBA``, ``CMYK``, ...), even if
    its pixels happen to be gray.
    """
    if image.mode in GRAY_MODES or image.mode.startswith("I;"):
        return 1
    if image.mode not in PALETTE_MODES:
        return 3
    load_pixels(image, where)
    try:
        rgb = np.asarray(to_8_bit_colour(image, where).convert("RGB"))  # (H, W, 3)
    except ImageRefused:
        raise
    except IMAGE_ERRORS as err:
        raise unreadable(where, err) from err
    return 1 if bool((rgb == rgb[..., :1]).all()) else 3


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
