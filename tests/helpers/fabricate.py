"""Small files in the on-disk formats of the real datasets, made by the tests."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 105, mode: str = "L") -> bytes:
    """A random black-on-white stroke-like image: a few dark squares at seed-dependent places."""
    rng = np.random.default_rng(seed)
    array = np.full((size, size), 255, dtype=np.uint8)
    for _ in range(4):
        r, c = rng.integers(0, size - 12, size=2)
        array[r : r + 12, c : c + 12] = 0
    image = Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def omniglot_zip(
    folder: str, archive: str, alphabets: int = 2, characters: int | Sequence[int] = 4, drawers: int = 20
) -> str:
    """``folder/<archive>.zip`` laid out as the authors' Omniglot zips; ``characters`` per alphabet (one
    number for all, or one each)."""
    counts = [characters] * alphabets if isinstance(characters, int) else list(characters)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{archive}.zip")
    seed = sum(map(ord, archive)) * 1000
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{archive}/", b"")
        for a, count in enumerate(counts):
            for c in range(count):
                for d in range(drawers):
                    seed += 1
                    zf.writestr(f"{archive}/Alphabet_{a}/character{c + 1:02d}/{c:04d}_{d + 1:02d}.png", png_bytes(seed))
    return path


def minimal_omniglot(folder: str, characters: int = 4) -> str:
    """Both "minimal" background zips; returns ``folder``."""
    omniglot_zip(folder, "images_background_small1", characters=characters)
    omniglot_zip(folder, "images_background_small2", characters=characters)
    return folder


def image_folder(root: str, classes: int = 6, images: int = 5, size: int = 32, mode: str = "RGB") -> str:
    """``root/class_<k>/<i>.png``."""
    for k in range(classes):
        os.makedirs(os.path.join(root, f"class_{k}"), exist_ok=True)
        for i in range(images):
            with open(os.path.join(root, f"class_{k}", f"{i}.png"), "wb") as f:
                f.write(png_bytes(k * 100 + i, size=size, mode=mode))
    return root
