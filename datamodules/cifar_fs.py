"""CIFAR-FS (Bertinetto et al., 2019): N-way K-shot episodes from learn2learn's dataset class."""

from __future__ import annotations

import os
import shutil

from torch.utils.data import Dataset

from datamodules.images import DecodedImages
from datamodules.l2l_benchmark import (
    CIFAR_MEAN,
    CIFAR_STD,
    L2L_MODES,
    Learn2LearnDataModule,
)


class CIFARFSDataModule(Learn2LearnDataModule):
    """CIFAR-FS N-way K-shot classification (Bertinetto et al., 2019).

    The 100 CIFAR-100 classes of 600 32x32 images, split at random into 64 train, 16 validation and
    20 test classes (the authors' split). Read by learn2learn's ``CIFARFS`` from
    ``<data_dir>/cifarfs/cifar100/data/<class>/*.png`` and the class lists
    ``<data_dir>/cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt``, which it downloads there
    when ``download`` is set. On first use learn2learn copies each split's class folders into
    ``<data_dir>/cifarfs/processed/{train,val,test}`` (``data_dir`` must be writable then) and reads
    those; images are decoded when a task uses them. Normalised with the CIFAR-100 statistics of
    MetaOptNet (Lee et al., 2019).

    Args:
        data_dir: folder holding (or receiving) the ``cifarfs`` folder (default ``$LIT_META_DATA/cifar-fs``,
            see :mod:`lit_meta.paths`).
        download: let learn2learn fetch the data if ``<data_dir>/cifarfs`` is missing.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "CIFAR-FS", "CIFARFS", 32, CIFAR_MEAN, CIFAR_STD
    DATA_NAME = "cifar-fs"

    def split_digests(self, dataset: Dataset) -> None:
        # Decoded lazily (hashing every image would decode the whole benchmark at set-up); the
        # published class splits are disjoint by construction.
        return None

    @property
    def _raw(self) -> str:
        return os.path.join(self.data_dir, "cifarfs", "cifar100")

    @property
    def _processed(self) -> str:
        return os.path.join(self.data_dir, "cifarfs", "processed")

    def _split_file(self, short: str) -> str:
        return os.path.join(self._raw, "splits", "bertinetto", f"{short}.txt")

    def _files(self, mode: str) -> list[str]:
        if os.path.isdir(self._processed):  # learn2learn reads the copies only
            return [os.path.join(self._processed, "val" if mode == "validation" else mode)]
        # learn2learn makes all three copies at once, from these.
        return [self._split_file(short) for short in ("train", "val", "test")] + [os.path.join(self._raw, "data")]

    def _needs_preparation(self, mode: str) -> bool:
        return not os.path.isdir(self._processed) or bool(self._missing(mode))

    def _check_split_files(self) -> None:
        """Every class named by a split file is a folder of ``data`` (else learn2learn's copy fails midway)."""
        data = os.path.join(self._raw, "data")
        for short in ("train", "val", "test"):
            path = self._split_file(short)
            with open(path, "rb") as f:
                content = f.read()
            try:
                classes = [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"Expected a CIFAR-FS split file (class names, one a line) in {path!r}, but got "
                    f"a binary file ({err})."
                ) from err
            for name in classes:
                if not os.path.isdir(os.path.join(data, name)):
                    raise ValueError(
                        f"Expected class {name!r} of split file {path!r} to be a folder of {data!r}, but got no such "
                        "folder."
                    )

    def _open(self, mode: str) -> Dataset:
        made = not os.path.isdir(self._processed)
        if made and not self._missing(mode):
            self._check_split_files()
        try:
            return super()._open(mode)
        except BaseException:
            if made and os.path.isdir(self._processed):  # a half-made copy would be taken as finished
                shutil.rmtree(self._processed, ignore_errors=True)
            raise

    def _load(self, split: str) -> Dataset:
        try:
            return super()._load(split)
        except FileNotFoundError as err:
            if self._missing(L2L_MODES[split]):
                raise
            # ImageFolder's "Found no valid file for the classes ..." / "Couldn't find any class folder".
            raise ValueError(
                f"Expected class folders of images in {self._files(L2L_MODES[split])[0]!r}, but got: {err}"
            ) from err

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        labels = [int(target) for target in source.targets]
        paths = [path for path, _ in source.samples]
        dataset = DecodedImages(source, labels, source.classes, self.IMAGE_SIZE, self.MEAN, self.STD, where=paths)
        return dataset, labels, list(source.classes)
