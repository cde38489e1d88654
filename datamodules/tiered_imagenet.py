"""*tiered*-ImageNet (Ren et al., 2018): N-way K-shot episodes from learn2learn's dataset class."""

from __future__ import annotations

import os

import numpy as np
from torch.utils.data import Dataset

from datamodules.images import DecodedImages
from datamodules.l2l_benchmark import (
    FORMAT_ERRORS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Learn2LearnDataModule,
    describe_array,
    remap_labels,
)
from lit_meta.checkpoints import load_plain_pickle


class TieredImageNetDataModule(Learn2LearnDataModule):
    """*tiered*-ImageNet N-way K-shot classification (Ren et al., 2018).

    608 ImageNet classes (779,165 84x84 images) in 34 categories; 20 categories (351 classes) train,
    6 (97) validate and 8 (160) test, so that the splits share no category. Read by learn2learn's
    ``TieredImagenet`` from ``<data_dir>/tiered-imagenet/{train,val,test}_images_png.pkl`` (pickled
    lists of PNG-encoded images) and ``{train,val,test}_labels.pkl`` (pickled dicts with
    ``label_specific``), which it downloads there (12 GB) when ``download`` is set. The PNGs stay
    encoded in memory and are decoded when a task uses them. Normalised with the MetaOptNet statistics
    (Lee et al., 2019).

    Args:
        data_dir: folder holding (or receiving) the ``tiered-imagenet`` folder (default
            ``$LIT_META_DATA/tiered-imagenet``, see :mod:`lit_meta.paths`).
        download: let learn2learn fetch missing files.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    NAME, L2L_CLASS, IMAGE_SIZE, MEAN, STD = "tiered-ImageNet", "TieredImagenet", 84, IMAGENET_MEAN, IMAGENET_STD
    DATA_NAME = "tiered-imagenet"

    def split_digests(self, dataset: Dataset) -> None:
        # Decoded lazily (hashing every image would decode the whole benchmark at set-up); the
        # published class splits are disjoint by construction.
        return None

    def _files(self, mode: str) -> list[str]:
        short = "val" if mode == "validation" else mode
        folder = os.path.join(self.data_dir, "tiered-imagenet")
        return [os.path.join(folder, f"{short}_images_png.pkl"), os.path.join(folder, f"{short}_labels.pkl")]

    def _read_labels(self, mode: str) -> dict:
        """The labels pickle, checked before learn2learn runs so that an error names the right file."""
        path = self._files(mode)[1]
        try:
            with open(path, "rb") as f:
                labels = load_plain_pickle(f)  # data only: a class or function it names is refused
        except FORMAT_ERRORS as err:
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
                f"{describe_array(original)} for {len(source.images)} images."
            )
        labels, ids = remap_labels(original.tolist())
        if names_of is not None and len(names_of) > max(ids, default=-1):
            class_names = [str(names_of[i]) for i in ids]
        else:
            class_names = [f"label {i}" for i in ids]
        dataset = DecodedImages(source, labels, class_names, self.IMAGE_SIZE, self.MEAN, self.STD, where=images_path)
        return dataset, labels, class_names
