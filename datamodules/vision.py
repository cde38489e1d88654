"""The standard few-shot image benchmarks, read and downloaded by learn2learn's own dataset classes.

- :class:`MiniImageNetDataModule`: *mini*-ImageNet (Vinyals et al., 2016; splits of Ravi & Larochelle,
  2017), 84x84, through ``learn2learn.vision.datasets.MiniImagenet``.
- :class:`TieredImageNetDataModule`: *tiered*-ImageNet (Ren et al., 2018), 84x84, through
  ``learn2learn.vision.datasets.TieredImagenet``.
- :class:`CIFARFSDataModule`: CIFAR-FS (Bertinetto et al., 2019), 32x32, through
  ``learn2learn.vision.datasets.CIFARFS``.
- :class:`FC100DataModule`: FC100 (Oreshkin et al., 2018), 32x32, through
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
import shutil
import struct
from collections.abc import Sequence

import learn2learn as l2l
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.episodic import SPLITS, EpisodicDataModule
from datamodules.images import ImageClasses
from lit_meta._checks import _check_type
from lit_meta.images import IMAGE_ERRORS, ImagePreprocessing, channel_stats, normalise, prepare_image, unreadable

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
_FORMAT_ERRORS = (
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


def _remap(original: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(labels in 0..n-1, sorted original ids)``."""
    ids = sorted({int(label) for label in original})
    index = {label: i for i, label in enumerate(ids)}
    return [index[int(label)] for label in original], ids


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"an array of shape {tuple(array.shape)} and dtype {array.dtype}"
    return f"a {type(array).__name__}"


def _check_uint8_images(array: object, size: int, key: str, path: str) -> np.ndarray:
    """``array`` if it is ``(N, size, size, 3)`` uint8, else a ValueError naming ``path``."""
    if not (isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape[1:] == (size, size, 3)):
        raise ValueError(
            f"Expected {key!r} of shape (N, {size}, {size}, 3) and dtype uint8 in {path!r}, but got {_describe(array)}."
        )
    return array


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
            pixels = prepare_image(self.source[index][0], channels=3, size=self.size)
        except IMAGE_ERRORS as err:
            raise unreadable(self._where(index), err) from err
        return normalise(pixels, self.mean, self.std), self.labels[index]


class _Learn2LearnDataModule(EpisodicDataModule):
    """What the four benchmarks share: find the files, call learn2learn, turn its errors into ours.

    A subclass sets the class attributes and implements :meth:`_files`, :meth:`_open` and :meth:`_wrap`.
    """

    NAME: str  # the benchmark, for messages
    L2L_CLASS: str  # the learn2learn class, in ``learn2learn.vision.datasets``
    IMAGE_SIZE: int
    MEAN: tuple[float, float, float]
    STD: tuple[float, float, float]

    data_dir: str
    download: bool

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
        except _FORMAT_ERRORS as err:
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


class MiniImageNetDataModule(_Learn2LearnDataModule):
    """*mini*-ImageNet N-way K-shot classification (Vinyals et al., 2016).

    100 ImageNet classes of 600 84x84 images, split as Ravi & Larochelle (2017): 64 train, 16
    validation, 20 test classes. Read by learn2learn's ``MiniImagenet`` from
    ``<data_dir>/mini-imagenet-cache-{train,validation,test}.pkl`` (pickled dicts of ``image_data``,
    ``(N, 84, 84, 3)`` uint8, and ``class_dict``, ``{class: [image indices]}``), which it downloads there
    (Zenodo / Dropbox / Google Drive) when ``download`` is set. Images are held in memory as uint8 (about
    2.5 GB for all three splits) and normalised with the MetaOptNet statistics (Lee et al., 2019).

    Args:
        data_dir: folder holding (or receiving) the pickles.
        download: let learn2learn fetch missing pickles.
        ways, shots, queries, eval_ways, eval_shots, eval_queries, meta_batch_size,
        train_batches_per_epoch, val_tasks, test_tasks, num_workers, seed, eval_seed: see
            :class:`~datamodules.episodic.EpisodicDataModule`.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "mini-ImageNet", "MiniImagenet", 84, IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        data_dir: str = "data/mini-imagenet",
        download: bool = True,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_ways: int | None = None,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 32,
        train_batches_per_epoch: int = 500,
        val_tasks: int = 200,
        test_tasks: int = 600,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 1234,
    ) -> None:
        super().__init__(
            ways=ways,
            shots=shots,
            queries=queries,
            eval_ways=eval_ways,
            eval_shots=eval_shots,
            eval_queries=eval_queries,
            meta_batch_size=meta_batch_size,
            train_batches_per_epoch=train_batches_per_epoch,
            val_tasks=val_tasks,
            test_tasks=test_tasks,
            num_workers=num_workers,
            seed=seed,
            eval_seed=eval_seed,
        )
        _check_type("data_dir", data_dir, (str, os.PathLike))
        _check_type("download", download, bool)
        self.save_hyperparameters()
        self.data_dir, self.download = os.fspath(data_dir), download

    def _files(self, mode: str) -> list[str]:
        return [os.path.join(self.data_dir, f"mini-imagenet-cache-{mode}.pkl")]

    def _format_error(self, mode: str, err: Exception) -> ValueError:
        return ValueError(
            f"Expected a mini-ImageNet pickle (a dict of 'image_data' and 'class_dict') in {self._files(mode)[0]!r}, "
            f"but got a file learn2learn's MiniImagenet cannot read ({type(err).__name__}: {err})."
        )

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        path = self._files(mode)[0]
        images = _check_uint8_images(source.data["image_data"], self.IMAGE_SIZE, "image_data", path)
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


class TieredImageNetDataModule(_Learn2LearnDataModule):
    """*tiered*-ImageNet N-way K-shot classification (Ren et al., 2018).

    608 ImageNet classes (779,165 84x84 images) in 34 categories; 20 categories (351 classes) train,
    6 (97) validate and 8 (160) test, so that the splits share no category. Read by learn2learn's
    ``TieredImagenet`` from ``<data_dir>/tiered-imagenet/{train,val,test}_images_png.pkl`` (pickled
    lists of PNG-encoded images) and ``{train,val,test}_labels.pkl`` (pickled dicts with
    ``label_specific``), which it downloads there (12 GB) when ``download`` is set. The PNGs stay
    encoded in memory and are decoded when a task uses them. Normalised with the MetaOptNet statistics
    (Lee et al., 2019).

    Args:
        data_dir: folder holding (or receiving) the ``tiered-imagenet`` folder.
        download: let learn2learn fetch missing files.
        ways, shots, queries, eval_ways, eval_shots, eval_queries, meta_batch_size,
        train_batches_per_epoch, val_tasks, test_tasks, num_workers, seed, eval_seed: see
            :class:`~datamodules.episodic.EpisodicDataModule`.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "tiered-ImageNet", "TieredImagenet", 84, IMAGENET_MEAN, IMAGENET_STD

    def split_digests(self, dataset: Dataset) -> None:
        # Decoded lazily (hashing every image would decode the whole benchmark at set-up); the
        # published class splits are disjoint by construction.
        return None

    def __init__(
        self,
        data_dir: str = "data/tiered-imagenet",
        download: bool = True,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_ways: int | None = None,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 32,
        train_batches_per_epoch: int = 500,
        val_tasks: int = 200,
        test_tasks: int = 600,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 1234,
    ) -> None:
        super().__init__(
            ways=ways,
            shots=shots,
            queries=queries,
            eval_ways=eval_ways,
            eval_shots=eval_shots,
            eval_queries=eval_queries,
            meta_batch_size=meta_batch_size,
            train_batches_per_epoch=train_batches_per_epoch,
            val_tasks=val_tasks,
            test_tasks=test_tasks,
            num_workers=num_workers,
            seed=seed,
            eval_seed=eval_seed,
        )
        _check_type("data_dir", data_dir, (str, os.PathLike))
        _check_type("download", download, bool)
        self.save_hyperparameters()
        self.data_dir, self.download = os.fspath(data_dir), download

    def _files(self, mode: str) -> list[str]:
        short = "val" if mode == "validation" else mode
        folder = os.path.join(self.data_dir, "tiered-imagenet")
        return [os.path.join(folder, f"{short}_images_png.pkl"), os.path.join(folder, f"{short}_labels.pkl")]

    def _read_labels(self, mode: str) -> dict:
        """The labels pickle, checked before learn2learn runs so that an error names the right file."""
        path = self._files(mode)[1]
        try:
            with open(path, "rb") as f:
                labels = pickle.load(f)
        except _FORMAT_ERRORS as err:
            raise ValueError(
                f"Expected a tiered-ImageNet labels pickle (a dict with 'label_specific') in {path!r}, but got a file "
                f"pickle cannot read ({type(err).__name__}: {err})."
            ) from err
        if not isinstance(labels, dict) or "label_specific" not in labels:
            keys = sorted(map(str, labels)) if isinstance(labels, dict) else type(labels).__name__
            raise ValueError(
                f"Expected a tiered-ImageNet labels pickle (a dict with 'label_specific') in {path!r}, but got {keys}."
            )
        return labels

    def _open(self, mode: str) -> Dataset:
        if not self._missing(mode):
            self._read_labels(mode)
        return super()._open(mode)

    def _format_error(self, mode: str, err: Exception) -> ValueError:
        return ValueError(
            f"Expected a tiered-ImageNet images pickle (a list of PNG-encoded images) in {self._files(mode)[0]!r}, "
            f"but got a file learn2learn's TieredImagenet cannot read ({type(err).__name__}: {err})."
        )

    def _wrap(self, mode: str, source: Dataset) -> tuple[Dataset, list[int], list[str]]:
        images_path, labels_path = self._files(mode)
        names_of = self._read_labels(mode).get("label_specific_str")  # re-read: a download may just have made it
        original = np.asarray(source.labels).reshape(-1)
        if len(original) != len(source.images) or not np.issubdtype(original.dtype, np.integer):
            raise ValueError(
                f"Expected one integer 'label_specific' per image of {images_path!r} in {labels_path!r}, but got "
                f"{_describe(original)} for {len(source.images)} images."
            )
        labels, ids = _remap(original.tolist())
        if names_of is not None and len(names_of) > max(ids, default=-1):
            class_names = [str(names_of[i]) for i in ids]
        else:
            class_names = [f"label {i}" for i in ids]
        dataset = DecodedImages(source, labels, class_names, self.IMAGE_SIZE, self.MEAN, self.STD, where=images_path)
        return dataset, labels, class_names


class CIFARFSDataModule(_Learn2LearnDataModule):
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
        data_dir: folder holding (or receiving) the ``cifarfs`` folder.
        download: let learn2learn fetch the data if ``<data_dir>/cifarfs`` is missing.
        ways, shots, queries, eval_ways, eval_shots, eval_queries, meta_batch_size,
        train_batches_per_epoch, val_tasks, test_tasks, num_workers, seed, eval_seed: see
            :class:`~datamodules.episodic.EpisodicDataModule`.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "CIFAR-FS", "CIFARFS", 32, CIFAR_MEAN, CIFAR_STD

    def split_digests(self, dataset: Dataset) -> None:
        # Decoded lazily (hashing every image would decode the whole benchmark at set-up); the
        # published class splits are disjoint by construction.
        return None

    def __init__(
        self,
        data_dir: str = "data/cifar-fs",
        download: bool = True,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_ways: int | None = None,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 32,
        train_batches_per_epoch: int = 500,
        val_tasks: int = 200,
        test_tasks: int = 600,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 1234,
    ) -> None:
        super().__init__(
            ways=ways,
            shots=shots,
            queries=queries,
            eval_ways=eval_ways,
            eval_shots=eval_shots,
            eval_queries=eval_queries,
            meta_batch_size=meta_batch_size,
            train_batches_per_epoch=train_batches_per_epoch,
            val_tasks=val_tasks,
            test_tasks=test_tasks,
            num_workers=num_workers,
            seed=seed,
            eval_seed=eval_seed,
        )
        _check_type("data_dir", data_dir, (str, os.PathLike))
        _check_type("download", download, bool)
        self.save_hyperparameters()
        self.data_dir, self.download = os.fspath(data_dir), download

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


class FC100DataModule(_Learn2LearnDataModule):
    """FC100 N-way K-shot classification (Oreshkin et al., 2018).

    The 100 CIFAR-100 classes of 600 32x32 images, split by superclass so that the splits share as
    little as possible: 12 superclasses (60 classes) train, 4 (20) validate, 4 (20) test. Read by
    learn2learn's ``FC100`` from ``<data_dir>/FC100_{train,val,test}.pickle`` (the MetaOptNet pickles,
    Lee et al., 2019: dicts of ``data``, ``(N, 32, 32, 3)`` uint8, and ``labels``, CIFAR-100 class
    ids), which it downloads there when ``download`` is set. Images are held in memory as uint8 and
    normalised with the CIFAR-100 statistics of MetaOptNet.

    Args:
        data_dir: folder holding (or receiving) the pickles.
        download: let learn2learn fetch the pickles if ``FC100_train.pickle`` is missing.
        ways, shots, queries, eval_ways, eval_shots, eval_queries, meta_batch_size,
        train_batches_per_epoch, val_tasks, test_tasks, num_workers, seed, eval_seed: see
            :class:`~datamodules.episodic.EpisodicDataModule`.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "FC100", "FC100", 32, CIFAR_MEAN, CIFAR_STD

    def __init__(
        self,
        data_dir: str = "data/fc100",
        download: bool = True,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        eval_ways: int | None = None,
        eval_shots: int | None = None,
        eval_queries: int | None = None,
        meta_batch_size: int = 32,
        train_batches_per_epoch: int = 500,
        val_tasks: int = 200,
        test_tasks: int = 600,
        num_workers: int = 0,
        seed: int = 0,
        eval_seed: int = 1234,
    ) -> None:
        super().__init__(
            ways=ways,
            shots=shots,
            queries=queries,
            eval_ways=eval_ways,
            eval_shots=eval_shots,
            eval_queries=eval_queries,
            meta_batch_size=meta_batch_size,
            train_batches_per_epoch=train_batches_per_epoch,
            val_tasks=val_tasks,
            test_tasks=test_tasks,
            num_workers=num_workers,
            seed=seed,
            eval_seed=eval_seed,
        )
        _check_type("data_dir", data_dir, (str, os.PathLike))
        _check_type("download", download, bool)
        self.save_hyperparameters()
        self.data_dir, self.download = os.fspath(data_dir), download

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
        images = _check_uint8_images(source.images, self.IMAGE_SIZE, "data", path)
        original = np.asarray(source.labels).reshape(-1)
        if len(original) != len(images) or not np.issubdtype(original.dtype, np.integer):
            raise ValueError(
                f"Expected one integer label per image ({len(images)}) in 'labels' of {path!r}, but got "
                f"{_describe(original)}."
            )
        labels, ids = _remap(original.tolist())
        class_names = [f"CIFAR-100 class {i}" for i in ids]
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        return ImageClasses(pixels, labels, class_names, mean=self.MEAN, std=self.STD), labels, class_names
