"""Datasets of labelled images: decoded once and held in memory (:class:`ImageClasses`), or decoded
from a learn2learn dataset on access (:class:`DecodedImages`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lit_meta.images import IMAGE_ERRORS, ImageRefused, channel_stats, normalise, prepare_image, unreadable


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
        self.mean, self.std = channel_stats(mean), channel_stats(std)
        self.rotations = list(rotations) if rotations is not None else [0] * len(self.labels)
        # Index of the stored image of each sample (rotated copies point at the same image).
        self.sources = list(sources) if sources is not None else list(range(len(self.labels)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[self.sources[index]]
        if self.rotations[index]:
            image = torch.rot90(image, self.rotations[index], dims=(1, 2))
        return normalise(image, self.mean, self.std), self.labels[index]


class DecodedImages(Dataset):
    """A learn2learn dataset whose ``__getitem__`` decodes a PIL image, as normalised float tensors.

    ``dataset[i]`` is ``(image, label)``: learn2learn's image ``i`` converted to RGB, resized to
    ``size x size`` if it is not already, scaled to [0, 1] and normalised; ``label`` is ``labels[i]``.

    Args:
        source: the learn2learn dataset (``source[i]`` is ``(PIL image, anything)``).
        labels: label of each image.
        class_names: name of each label.
        size: output height and width.
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.
        where: each image's file (a list), or the one file that holds them all (a str), for errors.
    """

    def __init__(
        self,
        source: Dataset,
        labels: Sequence[int],
        class_names: Sequence[str],
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        where: Sequence[str] | str,
    ) -> None:
        self.source = source
        self.labels = [int(label) for label in labels]
        self.class_names = list(class_names)
        self.size = size
        self.mean, self.std = channel_stats(mean), channel_stats(std)
        self.where = where

    def __len__(self) -> int:
        return len(self.labels)

    def _where(self, index: int) -> str:
        return f"image {index} of {self.where!r}" if isinstance(self.where, str) else repr(self.where[index])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        try:
            pixels = prepare_image(self.source[index][0], channels=3, size=self.size, where=self._where(index))
        except ImageRefused:
            raise  # already one line naming the image
        except IMAGE_ERRORS as err:
            raise unreadable(self._where(index), err) from err
        return normalise(pixels, self.mean, self.std), self.labels[index]
