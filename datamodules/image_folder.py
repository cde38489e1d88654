"""The user's own few-shot problem: ``root/<class>/<image>`` folders."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from datamodules.episodic import SPLITS, EpisodicDataModule
from datamodules.images import ImageClasses
from lit_meta.images import ImagePreprocessing, decode_image, list_classes
from lit_meta.validation import check_one_of, check_positive_int, check_type


def split_classes(
    names: Sequence[str], splits: dict[str, list[str]] | tuple[float, float, float], seed: int
) -> dict[str, list[str]]:
    """Assign classes to train/val/test, from explicit lists or from ratios (a seeded shuffle).

    Raises:
        ValueError: on unknown split or class names, a class in two splits, ratios that do not sum
            to 1, or a split left without classes.
    """
    if isinstance(splits, dict):
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"Expected split names among {SPLITS}, but got {sorted(unknown)}.")
        seen: dict[str, str] = {}
        for split, classes in splits.items():
            for name in classes:
                if name not in names:
                    raise ValueError(
                        f"Expected class {name!r} of split {split!r} to be a folder of the root, but got no such class."
                    )
                if name in seen:
                    raise ValueError(
                        f"Expected each class in one split, but got {name!r} in {seen[name]!r} and {split!r}."
                    )
                seen[name] = split
        assigned = {split: list(splits.get(split, [])) for split in SPLITS}
    else:
        if len(splits) != 3 or any(r < 0 for r in splits) or abs(sum(splits) - 1.0) > 1e-6:
            raise ValueError(
                f"Expected three non-negative class ratios (train, val, test) summing to 1, but got {tuple(splits)}."
            )
        order = list(names)
        random.Random(seed).shuffle(order)
        n_train = round(splits[0] * len(order))
        n_val = round(splits[1] * len(order))
        assigned = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    for split, classes in assigned.items():
        if not classes:
            raise ValueError(f"Expected >= 1 class in split {split!r}, but got 0 of {len(names)} classes.")
    return assigned


class ImageFolderDataModule(EpisodicDataModule):
    """Few-shot episodes from your own images: ``root/<class>/<image>``.

    Classes (not images) are split into train, validation and test, either by explicit lists
    (``splits: {train: [a, b], val: [c], test: [d, e]}``) or by ratios of a seeded shuffle
    (``splits: [0.6, 0.2, 0.2]``). Images are decoded once, converted to ``channels`` and resized to
    ``image_size``; every unreadable image stops with an error naming it.

    Args:
        root: folder of class folders.
        splits: class lists per split, or ``(train, val, test)`` ratios.
        split_seed: seed of the ratio split.
        channels: 1 (grayscale) or 3 (RGB).
        image_size: height and width after resizing.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after that.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    def __init__(
        self,
        root: str,
        splits: dict[str, list[str]] | tuple[float, float, float] = (0.6, 0.2, 0.2),
        split_seed: int = 0,
        channels: Literal[1, 3] = 3,
        image_size: int = 84,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_type("root", root, (str, os.PathLike))
        check_one_of("channels", channels, (1, 3))
        check_positive_int("image_size", image_size)
        check_type("split_seed", split_seed, int)
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) not in (1, channels):
                raise ValueError(f"Expected `{name}` of 1 or {channels} values, but got {len(value)}.")
        self.save_hyperparameters()
        self.root, self.splits, self.split_seed = os.fspath(root), splits, split_seed
        self.channels, self.image_size = channels, image_size
        self.mean = tuple(mean) if mean is not None else (0.0,)
        self.std = tuple(std) if std is not None else (1.0,)
        self._assignment: dict[str, list[str]] | None = None
        self._files: dict[str, list[str]] | None = None

    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(self.channels, self.image_size, invert=False, mean=self.mean, std=self.std)

    def class_splits(self) -> dict[str, list[str]]:
        """``{split: [class names]}``."""
        if self._assignment is None:
            self._files = list_classes(self.root)
            self._assignment = split_classes(list(self._files), self.splits, self.split_seed)
        return self._assignment

    def build_split(self, split: str) -> tuple[Dataset, list[int], list[str]]:
        class_names = self.class_splits()[split]
        images, labels = [], []
        for label, name in enumerate(class_names):
            for path in self._files[name]:
                with open(path, "rb") as f:
                    images.append(decode_image(f.read(), path, self.channels, self.image_size))
                labels.append(label)
        dataset = ImageClasses(torch.stack(images), labels, class_names, mean=self.mean, std=self.std)
        return dataset, labels, class_names
