"""What the standard few-shot image benchmarks share: read and downloaded by learn2learn's own dataset
classes, with their errors turned into ours. One module per benchmark:

- :mod:`datamodules.mini_imagenet`: *mini*-ImageNet (Vinyals et al., 2016; splits of Ravi & Larochelle,
  2017), 84x84, through ``learn2learn.vision.datasets.MiniImagenet``.
- :mod:`datamodules.tiered_imagenet`: *tiered*-ImageNet (Ren et al., 2018), 84x84, through
  ``learn2learn.vision.datasets.TieredImagenet``.
- :mod:`datamodules.cifar_fs`: CIFAR-FS (Bertinetto et al., 2019), 32x32, through
  ``learn2learn.vision.datasets.CIFARFS``.
- :mod:`datamodules.fc100`: FC100 (Oreshkin et al., 2018), 32x32, through
  ``learn2learn.vision.datasets.FC100``.

Each split (``train``, ``val``, ``test``) is the learn2learn dataset of mode ``train``, ``validation``
or ``test``. Labels come from the dataset's label attributes, never by decoding its images. Images are
``(3, H, W)`` float tensors normalised per channel as ``(pixel / 255 - mean) / std``.

What is worked around in learn2learn 0.2.0:

- Every class creates ``root`` (``os.mkdir``) before looking for its files, and ``download=False`` then
  fails with a bare ``open`` error: the files are looked for here first, and a missing one raises a
  :class:`FileNotFoundError` naming it, before learn2learn runs.
- A file in the wrong format surfaces as whatever ``pickle`` or numpy raised (``MiniImagenet`` even
  retries the same unreadable file three times): it is re-raised as a :class:`ValueError` naming the
  file. ``MiniImagenet`` silently gives label 1 to images missing from ``class_dict``: refused here.
- ``MiniImagenet`` converts the whole split to float (``x``, 4x the uint8 size: ~3.3 GB for train)
  while keeping the uint8 array too: only the uint8 array is kept here; the float copy exists only
  while learn2learn's constructor runs.
- ``CIFARFS`` copies the raw class folders into ``<data_dir>/cifarfs/processed`` on first use (so
  ``data_dir`` must be writable then) and never redoes it once that folder exists: here a failed copy
  is removed, so that a half-made folder is not mistaken for a finished one, and the copy is made in
  ``prepare_data`` (once, not by every DDP process).
- ``FC100`` labels are CIFAR-100 class ids (not ``0..n-1``) and ``TieredImagenet`` keeps only the ids
  of its labels file: labels are remapped to ``0..n-1`` and named from the files where they can be.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from typing import Any

import learn2learn as l2l
import numpy as np
from torch.utils.data import Dataset

from datamodules.episodic import SPLITS, EpisodicDataModule
from lit_meta import paths
from lit_meta.images import ImagePreprocessing
from lit_meta.validation import check_type

# learn2learn's name of each split.
L2L_MODES = {"train": "train", "val": "validation", "test": "test"}

# Per-channel statistics of the few-shot literature, in [0, 1] units: the MetaOptNet code (Lee et al.,
# 2019, github.com/kjunelee/MetaOptNet), data/mini_imagenet.py and data/tiered_imagenet.py (ImageNet
# benchmarks) and data/CIFAR_FS.py and data/FC100.py (CIFAR-100 benchmarks):
#   mini-/tiered-ImageNet: mean [120.39586422, 115.59361427, 104.54012653] / 255,
#                          std  [70.68188272, 68.27635443, 72.54505529] / 255
#   CIFAR-FS / FC100:      mean [129.37731888, 124.10583864, 112.47758569] / 255,
#                          std  [68.20947949, 65.43124043, 70.45866994] / 255
# The same constants are used by FEAT (Ye et al., 2020), RFS (Tian et al., 2020) and most later work.
IMAGENET_MEAN = tuple(x / 255.0 for x in (120.39586422, 115.59361427, 104.54012653))
IMAGENET_STD = tuple(x / 255.0 for x in (70.68188272, 68.27635443, 72.54505529))
CIFAR_MEAN = tuple(x / 255.0 for x in (129.37731888, 124.10583864, 112.47758569))
CIFAR_STD = tuple(x / 255.0 for x in (68.20947949, 65.43124043, 70.45866994))

# What pickle, numpy and torch raise on a file of the wrong format (not OSError: a failed download or a
# missing file must keep its own error).
FORMAT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    ImportError,
    RuntimeError,
    ArithmeticError,
    struct.error,
)


def remap_labels(original: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(labels in 0..n-1, sorted original ids)``."""
    ids = sorted({int(label) for label in original})
    index = {label: i for i, label in enumerate(ids)}
    return [index[int(label)] for label in original], ids


def describe_array(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"an array of shape {tuple(array.shape)} and dtype {array.dtype}"
    return f"a {type(array).__name__}"


def check_uint8_images(array: object, size: int, key: str, path: str) -> np.ndarray:
    """``array`` if it is ``(N, size, size, 3)`` uint8, else a ValueError naming ``path``."""
    if not (isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape[1:] == (size, size, 3)):
        raise ValueError(
            f"Expected {key!r} of shape (N, {size}, {size}, 3) and dtype uint8 in {path!r}, "
            f"but got {describe_array(array)}."
        )
    return array


class Learn2LearnDataModule(EpisodicDataModule):
    """What the four benchmarks share: find the files, call learn2learn, turn its errors into ours.

    A subclass sets the class attributes and implements :meth:`_files`, :meth:`_open` and :meth:`_wrap`.

    Args:
        data_dir: folder holding (or receiving) the benchmark's files; ``None``:
            ``lit_meta.paths.data_dir(DATA_NAME)`` (``$LIT_META_DATA/<benchmark>``, else
            ``~/.cache/lit-meta/<benchmark>``).
        download: let learn2learn fetch missing files.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    NAME: str  # the benchmark, for messages
    L2L_CLASS: str  # the learn2learn class, in ``learn2learn.vision.datasets``
    DATA_NAME: str  # the folder in the user data folder (lit_meta.paths) when no data_dir is given
    IMAGE_SIZE: int
    MEAN: tuple[float, float, float]
    STD: tuple[float, float, float]

    def __init__(self, data_dir: str | None = None, download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data_dir is not None:
            check_type("data_dir", data_dir, (str, os.PathLike))
        check_type("download", download, bool)
        self.save_hyperparameters()
        self.data_dir = paths.data_dir(self.DATA_NAME) if data_dir is None else os.fspath(data_dir)
        self.download = download

    def _files(self, mode: str) -> list[str]:
        """Paths learn2learn reads for ``mode``, in the order it reads them."""
        raise NotImplementedError

    def _open(self, mode: str) -> Dataset:
        """The learn2learn dataset of ``mode`` (which downloads if ``self.download``)."""
        return getattr(l2l.vision.datasets, self.L2L_CLASS)(root=self.data_dir, mode=mode, download=self.download)

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        raise NotImplementedError

    def _format_error(self, mode: str, err: Exception) -> ValueError:
        path = self._files(mode)[0]
        return ValueError(
            f"Expected a {self.NAME} file in learn2learn's {self.L2L_CLASS} format in {path!r}, but got a file it "
            f"cannot read ({type(err).__name__}: {err})."
        )

    def _missing(self, mode: str) -> list[str]:
        return [path for path in self._files(mode) if not os.path.exists(path)]

    def _needs_preparation(self, mode: str) -> bool:
        """Whether opening ``mode`` writes into ``data_dir`` (a download), or fails for a missing file."""
        return bool(self._missing(mode))

    def _load(self, split: str) -> Dataset:
        mode = L2L_MODES[split]
        missing = self._missing(mode)
        if missing and not self.download:
            raise FileNotFoundError(
                f"Expected the {self.NAME} file {missing[0]!r} of split {split!r}, but got no such file (set "
                f"`download: true` to let learn2learn's {self.L2L_CLASS} fetch it)."
            )
        try:
            return self._open(mode)
        except FORMAT_ERRORS as err:
            raise self._format_error(mode, err) from err

    def prepare_data(self) -> None:
        # Downloads (and CIFAR-FS's copy) happen here: once, not in every DDP process.
        for split in SPLITS:
            if self._needs_preparation(L2L_MODES[split]):
                self._load(split)

    def build_split(self, split: str) -> tuple[Dataset, list[int], list[str]]:
        return self._wrap(L2L_MODES[split], self._load(split))

    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(channels=3, image_size=self.IMAGE_SIZE, mean=self.MEAN, std=self.STD)
