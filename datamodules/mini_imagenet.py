"""*mini*-ImageNet (Vinyals et al., 2016): N-way K-shot episodes from learn2learn's dataset class."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.images import ImageClasses
from datamodules.l2l_benchmark import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Learn2LearnDataModule,
    check_uint8_images,
)


class MiniImageNetDataModule(Learn2LearnDataModule):
    """*mini*-ImageNet N-way K-shot classification (Vinyals et al., 2016).

    100 ImageNet classes of 600 84x84 images, split as Ravi & Larochelle (2017): 64 train, 16
    validation, 20 test classes. Read by learn2learn's ``MiniImagenet`` from
    ``<data_dir>/mini-imagenet-cache-{train,validation,test}.pkl`` (pickled dicts of ``image_data``,
    ``(N, 84, 84, 3)`` uint8, and ``class_dict``, ``{class: [image indices]}``), which it downloads there
    (Zenodo / Dropbox / Google Drive) when ``download`` is set. Images are held in memory as uint8 (about
    2.5 GB for all three splits) and normalised with the MetaOptNet statistics (Lee et al., 2019).

    Args:
        data_dir: folder holding (or receiving) the pickles (default ``$LIT_META_DATA/mini-imagenet``, see
            :mod:`lit_meta.paths`).
        download: let learn2learn fetch missing pickles.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "mini-ImageNet", "MiniImagenet", 84, IMAGENET_MEAN, IMAGENET_STD
    DATA_NAME = "mini-imagenet"

    def _files(self, mode: str) -> list[str]:
        return [os.path.join(self.data_dir, f"mini-imagenet-cache-{mode}.pkl")]

    def _format_error(self, mode: str, err: Exception) -> ValueError:
        return ValueError(
            f"Expected a mini-ImageNet pickle (a dict of 'image_data' and 'class_dict') in {self._files(mode)[0]!r}, "
            f"but got a file learn2learn's MiniImagenet cannot read ({type(err).__name__}: {err})."
        )

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        path = self._files(mode)[0]
        images = check_uint8_images(source.data["image_data"], self.IMAGE_SIZE, "image_data", path)
        labelled = np.zeros(len(images), dtype=bool)
        for indices in source.data["class_dict"].values():
            labelled[np.asarray(indices, dtype=np.int64)] = True
        if not labelled.all():
            raise ValueError(
                f"Expected every image of {path!r} in a class of 'class_dict', but got {int((~labelled).sum())} of "
                f"{len(images)} images in none."
            )
        # learn2learn's labels: the order of class_dict. Its float copy `source.x` is dropped with `source`.
        labels = [int(label) for label in source.y]
        class_names = [str(name) for name in source.class_idx]
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view: no copy of the uint8 images
        return ImageClasses(pixels, labels, class_names, mean=self.MEAN, std=self.STD), labels, class_names
