"""FC100 (Oreshkin et al., 2018): N-way K-shot episodes from learn2learn's dataset class."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.images import ImageClasses
from datamodules.l2l_benchmark import (
    CIFAR_MEAN,
    CIFAR_STD,
    Learn2LearnDataModule,
    check_uint8_images,
    describe_array,
    remap_labels,
)


class FC100DataModule(Learn2LearnDataModule):
    """FC100 N-way K-shot classification (Oreshkin et al., 2018).

    The 100 CIFAR-100 classes of 600 32x32 images, split by superclass so that the splits share as
    little as possible: 12 superclasses (60 classes) train, 4 (20) validate, 4 (20) test. Read by
    learn2learn's ``FC100`` from ``<data_dir>/FC100_{train,val,test}.pickle`` (the MetaOptNet pickles,
    Lee et al., 2019: dicts of ``data``, ``(N, 32, 32, 3)`` uint8, and ``labels``, CIFAR-100 class
    ids), which it downloads there when ``download`` is set. Images are held in memory as uint8 and
    normalised with the CIFAR-100 statistics of MetaOptNet.

    Args:
        data_dir: folder holding (or receiving) the pickles (default ``$LIT_META_DATA/fc100``, see
            :mod:`lit_meta.paths`).
        download: let learn2learn fetch the pickles if ``FC100_train.pickle`` is missing.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "FC100", "FC100", 32, CIFAR_MEAN, CIFAR_STD
    DATA_NAME = "fc100"

    def _files(self, mode: str) -> list[str]:
        short = "val" if mode == "validation" else mode
        return [os.path.join(self.data_dir, f"FC100_{short}.pickle")]

    def _format_error(self, mode: str, err: Exception) -> ValueError:
        return ValueError(
            f"Expected an FC100 pickle (a dict of 'data' and 'labels') in {self._files(mode)[0]!r}, but got a file "
            f"learn2learn's FC100 cannot read ({type(err).__name__}: {err})."
        )

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        path = self._files(mode)[0]
        images = check_uint8_images(source.images, self.IMAGE_SIZE, "data", path)
        original = np.asarray(source.labels).reshape(-1)
        if len(original) != len(images) or not np.issubdtype(original.dtype, np.integer):
            raise ValueError(
                f"Expected one integer label per image ({len(images)}) in 'labels' of {path!r}, but got "
                f"{describe_array(original)}."
            )
        labels, ids = remap_labels(original.tolist())
        class_names = [f"CIFAR-100 class {i}" for i in ids]
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        return ImageClasses(pixels, labels, class_names, mean=self.MEAN, std=self.STD), labels, class_names
