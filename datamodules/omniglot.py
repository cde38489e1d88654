"""Omniglot (Lake et al., 2015) few-shot episodes, read straight from the official zips."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.datasets.utils import check_integrity, download_url

from datamodules.episodic import EpisodicDataModule
from datamodules.images import ImageClasses
from lit_meta import paths
from lit_meta.images import ImagePreprocessing, decode_image
from lit_meta.validation import check_one_of, check_positive_int, check_type

# The authors' files, as torchvision's Omniglot downloads them.
URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
# Split -> (archives of train, archives of val/test). "standard" cuts its 1,623 characters below.
SPLITS = {
    "standard": (("images_background", "images_evaluation"), ()),
    "minimal": (("images_background_small1",), ("images_background_small2",)),
    "minimal_reverse": (("images_background_small2",), ("images_background_small1",)),
}
# The common split (Vinyals et al., 2016; Snell et al., 2017): 1,200 meta-train characters (1,028
# train + 172 validation) and 423 test characters, in archive/alphabet/character order.
STANDARD_TRAIN, STANDARD_VAL = 1028, 172
_ENTRY = re.compile(r"^(?P<archive>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/(?P<file>[^/]+\.png)$")


@dataclass(frozen=True)
class Character:
    """One Omniglot character: its ``"<archive>/<alphabet>/<character>"`` name, its decoded
    ``(1, size, size)`` uint8 images, and the md5 digest of each image's PNG file."""

    name: str
    images: list[torch.Tensor]
    digests: list[bytes]


def read_archive(path: str, archive: str, size: int) -> list[Character]:
    """Decode every image of one Omniglot zip.

    Args:
        path: the zip file.
        archive: its expected top folder, e.g. ``"images_background_small1"``.
        size: output height and width.

    Returns:
        The characters in sorted order, their images strokes bright on black.

    Raises:
        ValueError: if the file is not a zip, holds no ``<archive>/<alphabet>/<character>/*.png``, or
            an image is unreadable.
    """
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"Expected an Omniglot zip archive in {path!r}, but got a file that is not a zip ({err})."
        ) from err
    characters: dict[str, Character] = {}
    with zf:
        names = sorted(name for name in zf.namelist() if not name.endswith("/"))
        for name in names:
            match = _ENTRY.match(name)
            if match is None or match["archive"] != archive:
                continue
            data = zf.read(name)
            key = f"{archive}/{match['alphabet']}/{match['character']}"
            character = characters.setdefault(key, Character(key, [], []))
            character.images.append(decode_image(data, f"{path}:{name}", channels=1, size=size, invert=True))
            character.digests.append(hashlib.md5(data).digest())
    if not characters:
        example = names[0] if names else "nothing"
        raise ValueError(
            f"Expected Omniglot images '{archive}/<alphabet>/<character>/*.png' in {path!r}, but got {example!r} "
            f"among {len(names)} files."
        )
    return list(characters.values())


def alphabet(character: Character) -> str:
    """The alphabet of a character: the middle part of its ``"<archive>/<alphabet>/<character>"`` name."""
    return character.name.split("/")[1]


def drop_shared(evaluation: list[Character], train: list[Character]) -> list[Character]:
    """The evaluation characters none of whose image files (by content) occur among the training ones.

    The two "minimal" background sets both hold Greek and Latin, image for image: a character is
    dropped whatever its folder is called, so a renamed copy is caught too.
    """
    seen = {digest for character in train for digest in character.digests}
    return [character for character in evaluation if seen.isdisjoint(character.digests)]


class OmniglotDataModule(EpisodicDataModule):
    """Omniglot N-way K-shot classification (Lake et al., 2015).

    Reads the authors' zips from ``data_dir`` (which may be read-only; nothing is written next to
    them) and decodes the images once per run. Missing zips are downloaded there when ``download`` is
    set and a network is reachable.

    Splits (``split``):
        - ``"standard"``: ``images_background`` + ``images_evaluation``, 1,623 characters; the first
          1,028 train, the next 172 validate, the last 423 test (the common 1,200-character
          meta-train split).
        - ``"minimal"``: train on ``images_background_small1`` (136 characters of 5 alphabets),
          validate and test on the characters of ``images_background_small2`` whose images do not
          occur in small1. The two files share Greek (24) and Latin (26) image for image, so 50 of
          small2's 156 characters are dropped (found by image content, not folder name) and 106
          remain: Japanese (katakana) 47, Sanskrit 42, Tagalog 17. Validation and test use these
          same 106 characters with different tasks (too few alphabets remain to give each its own).
        - ``"minimal_reverse"``: train on small2 (156), validate and test on the 86 characters of
          small1 not in small2 (Balinese 24, Early Aramaic 22, Korean 40).

    With ``train_rotations``, every training character also appears rotated by 90, 180 and 270
    degrees as three new classes (Santoro et al., 2016), 4x the training classes.

    Within one alphabet (Lake et al., 2015, the one-shot benchmark of their paper): with
    ``eval_within_alphabet`` every validation and test task draws its ``eval_ways`` characters from
    one alphabet (task ``i`` from the ``i mod A``-th alphabet with enough characters), where look-alike
    characters make it harder than tasks across alphabets. ``eval_alphabets`` keeps only the named
    alphabets for validation and test (e.g. ``[Tagalog]`` with ``eval_ways: 17``, all of its
    characters), within or across them.

    Args:
        data_dir: folder holding (or receiving) the zips; ``None``: ``lit_meta.paths.data_dir("omniglot")``
            (``$LIT_META_DATA/omniglot``, else ``~/.cache/lit-meta/omniglot``).
        split: see above.
        image_size: images are resized to ``image_size x image_size`` (28 in most papers).
        train_rotations: add rotated training classes.
        download: fetch missing zips from the authors' repository.
        eval_within_alphabet: validation and test tasks within one alphabet (see above).
        eval_alphabets: the alphabets (folder names, e.g. ``Japanese_(katakana)``) of validation and
            test; ``None``: every alphabet of the evaluation characters.
        train_within_alphabet: training tasks within one alphabet too (each rotation of an alphabet
            counts as one), to train on the look-alike characters the evaluation tasks hold.
        **kwargs: the episode arguments of :class:`~datamodules.episodic.EpisodicDataModule` (``ways``,
            ``shots``, ``queries``, ``eval_*``, ``meta_batch_size``, ...); LightningCLI lists each one.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        split: Literal["standard", "minimal", "minimal_reverse"] = "standard",
        image_size: int = 28,
        train_rotations: bool = True,
        download: bool = True,
        eval_within_alphabet: bool = False,
        eval_alphabets: list[str] | None = None,
        train_within_alphabet: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if data_dir is not None:
            check_type("data_dir", data_dir, (str, os.PathLike))
        check_one_of("split", split, tuple(SPLITS))
        check_positive_int("image_size", image_size)
        check_type("train_rotations", train_rotations, bool)
        check_type("download", download, bool)
        check_type("eval_within_alphabet", eval_within_alphabet, bool)
        check_type("train_within_alphabet", train_within_alphabet, bool)
        self.train_within_alphabet = train_within_alphabet
        if eval_alphabets is not None:
            check_type("eval_alphabets", eval_alphabets, (list, tuple))
            if not eval_alphabets:
                raise ValueError(
                    "Expected `eval_alphabets` to name at least one alphabet (or null for all), but got []."
                )
            for name in eval_alphabets:
                check_type("eval_alphabets", name, str)
        self.eval_within_alphabet = eval_within_alphabet
        self.eval_alphabets = None if eval_alphabets is None else list(eval_alphabets)
        self.save_hyperparameters()
        self.data_dir = paths.data_dir("omniglot") if data_dir is None else os.fspath(data_dir)
        self.split, self.image_size = split, image_size
        self.train_rotations, self.download = train_rotations, download
        self._characters: dict[str, list[Character]] | None = None

    def prepare_data(self) -> None:
        train, evaluation = SPLITS[self.split]
        for archive in train + evaluation:
            self._archive_path(archive)

    def _archive_path(self, archive: str) -> str:
        path = os.path.join(self.data_dir, f"{archive}.zip")
        if not os.path.exists(path):
            if not self.download:
                raise FileNotFoundError(
                    f"Expected the Omniglot archive {path!r} for split {self.split!r}, but got no such file "
                    f"(set `download: true` to fetch it from {URL}, or `data_dir` to the zips' folder)."
                )
            try:
                download_url(f"{URL}/{archive}.zip", self.data_dir, f"{archive}.zip", MD5[archive])
            except OSError as err:  # no network, a refused request, a read-only folder: one line, not urllib's
                raise FileNotFoundError(
                    f"Expected the Omniglot archive {path!r} for split {self.split!r}, but got no such file, and "
                    f"fetching it from {URL} failed ({getattr(err, 'reason', None) or err}): put the zips there, "
                    "or set `data_dir` to the zips' folder (or LIT_META_DATA to its parent, see lit_meta.paths)."
                ) from err
        elif self.download and not check_integrity(path, MD5[archive]):
            raise ValueError(
                f"Expected the official {archive}.zip (md5 {MD5[archive]}) in {path!r}, but its md5 differs."
            )
        return path

    def _split_characters(self) -> dict[str, list[Character]]:
        """The characters of train, val and test."""
        if self._characters is None:
            train_archives, eval_archives = SPLITS[self.split]

            def characters(archives: Sequence[str]) -> list[Character]:
                return [
                    c
                    for archive in archives
                    for c in read_archive(self._archive_path(archive), archive, self.image_size)
                ]

            if self.split == "standard":
                every = characters(train_archives)
                cut = STANDARD_TRAIN + STANDARD_VAL
                self._characters = {
                    "train": every[:STANDARD_TRAIN],
                    "val": every[STANDARD_TRAIN:cut],
                    "test": every[cut:],
                }
            else:
                train, every = characters(train_archives), characters(eval_archives)
                evaluation = drop_shared(every, train)
                rank_zero_info(
                    f"Omniglot split {self.split!r}: dropped {len(every) - len(evaluation)} of {len(every)} evaluation "
                    f"characters whose images also occur in the training archive; {len(evaluation)} remain for "
                    "validation and test."
                )
                self._characters = {"train": train, "val": evaluation, "test": evaluation}
            if self.eval_alphabets is not None:
                for split in ("val", "test"):
                    self._characters[split] = self._keep_alphabets(split, self._characters[split])
        return self._characters

    def _keep_alphabets(self, split: str, characters: list[Character]) -> list[Character]:
        present = sorted({alphabet(c) for c in characters})
        unknown = [name for name in self.eval_alphabets or () if name not in present]
        if unknown:
            raise ValueError(
                f"Expected `eval_alphabets` among the alphabets of split {split!r} ({', '.join(present)}), but got "
                f"{', '.join(map(repr, unknown))}."
            )
        return [c for c in characters if alphabet(c) in (self.eval_alphabets or ())]

    def class_groups(self, split: str) -> list[str] | None:
        if split == "train":
            if not self.train_within_alphabet:
                return None
            _, _, class_names = self.split_data(split)  # rotated classes: "<archive>/<alphabet>/<char> (rotated 90)"
            parts = [name.partition(" (") for name in class_names]
            return [character.split("/")[1] + sep + rotation for character, sep, rotation in parts]
        if not self.eval_within_alphabet:
            return None
        return [alphabet(c) for c in self._split_characters()[split]]

    def eval_tasks(self) -> dict[str, object]:
        return {"within": "alphabet" if self.eval_within_alphabet else None, "alphabets": self.eval_alphabets}

    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(channels=1, image_size=self.image_size, invert=True)

    def build_split(self, split: str) -> tuple[Dataset, list[int], list[str]]:
        characters = self._split_characters()[split]
        rotations = (0, 1, 2, 3) if split == "train" and self.train_rotations else (0,)
        images = torch.stack([image for character in characters for image in character.images])
        labels, class_names, quarter_turns, sources = [], [], [], []
        for turn in rotations:
            first = 0
            for character in characters:
                count = len(character.images)
                class_names.append(character.name if turn == 0 else f"{character.name} (rotated {90 * turn})")
                labels += [len(class_names) - 1] * count
                quarter_turns += [turn] * count
                sources += range(first, first + count)
                first += count
        dataset = ImageClasses(images, labels, class_names, rotations=quarter_turns, sources=sources)
        return dataset, labels, class_names
