"""Tiny files in the on-disk formats learn2learn 0.2.0's vision datasets read.

Each fabricator writes ``classes`` classes of ``images`` random images per split and returns what it
wrote, so that tests can compare pixels and labels with what the datamodules give back.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
from PIL import Image

MODES = ("train", "validation", "test")
SHORT = {"train": "train", "validation": "val", "test": "test"}


def random_images(seed: int, count: int, size: int) -> np.ndarray:
    """``(count, size, size, 3)`` uint8."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def mini_imagenet(folder: str, classes: int = 6, images: int = 4) -> dict[str, dict]:
    """``folder/mini-imagenet-cache-{train,validation,test}.pkl``: dicts of ``image_data``
    ``(N, 84, 84, 3)`` uint8 and ``class_dict`` ``{wnid: [indices]}``. Class ``k`` holds images
    ``k, k + classes, k + 2 * classes, ...`` (interleaved, as nothing says they are contiguous)."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    for m, mode in enumerate(MODES):
        data = {
            "image_data": random_images(m, classes * images, 84),
            "class_dict": {f"n{m}{k:07d}": list(range(k, classes * images, classes)) for k in range(classes)},
        }
        with open(os.path.join(folder, f"mini-imagenet-cache-{mode}.pkl"), "wb") as f:
            pickle.dump(data, f)
        written[mode] = data
    return written


def tiered_imagenet(folder: str, classes: int = 6, images: int = 4) -> dict[str, dict]:
    """``folder/tiered-imagenet/{train,val,test}_{images_png,labels}.pkl``: a list of PNG-encoded 84x84
    images (uint8 arrays of the file bytes) and a dict of ``label_specific`` (per-split ids, grouped by
    class), ``label_specific_str``, ``label_general`` and ``label_general_str``."""
    root = os.path.join(folder, "tiered-imagenet")
    os.makedirs(root, exist_ok=True)
    written = {}
    for m, mode in enumerate(MODES):
        pixels = random_images(10 + m, classes * images, 84)
        labels = {
            "label_specific": np.repeat(np.arange(classes), images),
            "label_specific_str": [f"n{m}{k:07d}" for k in range(classes)],
            "label_general": np.repeat(np.arange(classes) // 3, images),
            "label_general_str": [f"category{m}{g}" for g in range((classes + 2) // 3)],
        }
        with open(os.path.join(root, f"{SHORT[mode]}_images_png.pkl"), "wb") as f:
            pickle.dump([np.frombuffer(png_bytes(image), dtype=np.uint8) for image in pixels], f)
        with open(os.path.join(root, f"{SHORT[mode]}_labels.pkl"), "wb") as f:
            pickle.dump(labels, f)
        written[mode] = {"pixels": pixels, **labels}
    return written


def cifarfs(folder: str, classes: int = 6, images: int = 4) -> dict[str, list[str]]:
    """``folder/cifarfs/cifar100/data/<class>/<i>.png`` (32x32 RGB) and the class lists
    ``folder/cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt``; returns ``{split: classes}``."""
    raw = os.path.join(folder, "cifarfs", "cifar100")
    os.makedirs(os.path.join(raw, "splits", "bertinetto"), exist_ok=True)
    written = {}
    for m, short in enumerate(("train", "val", "test")):
        names = [f"{short}_class_{k}" for k in range(classes)]
        for k, name in enumerate(names):
            os.makedirs(os.path.join(raw, "data", name), exist_ok=True)
            for i, image in enumerate(random_images(100 * m + k, images, 32)):
                Image.fromarray(image).save(os.path.join(raw, "data", name, f"{i}.png"))
        with open(os.path.join(raw, "splits", "bertinetto", f"{short}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        written[short] = names
    return written


def fc100(folder: str, classes: int = 6, images: int = 4) -> dict[str, dict]:
    """``folder/FC100_{train,val,test}.pickle``: dicts of ``data`` ``(N, 32, 32, 3)`` uint8 and
    ``labels``, CIFAR-100 class ids (not 0..n-1; each split its own ids), images grouped by class."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    for m, mode in enumerate(MODES):
        data = {
            "data": random_images(20 + m, classes * images, 32),
            "labels": [int(30 * m + 3 * k + 1) for k in range(classes) for _ in range(images)],
        }
        with open(os.path.join(folder, f"FC100_{SHORT[mode]}.pickle"), "wb") as f:
            pickle.dump(data, f, protocol=2)
        written[mode] = data
    return written
