"""Evaluation classes never share an image with training classes: Omniglot's "minimal" split drops
them by content, and every episodic datamodule refuses them at set-up."""

from __future__ import annotations

import zipfile

import pytest
import torch

from datamodules import OmniglotDataModule
from datamodules.episodic import EpisodicDataModule
from datamodules.images import ImageClasses
from tests.helpers.fabricate import png_bytes


def _zip(path, archive: str, characters: dict[str, list[bytes]]) -> None:
    with zipfile.ZipFile(path / f"{archive}.zip", "w") as zf:
        for name, images in characters.items():
            for d, data in enumerate(images):
                zf.writestr(f"{archive}/{name}/{d:04d}_{d + 1:02d}.png", data)


def _alphabet(name: str, characters: int, seed: int) -> dict[str, list[bytes]]:
    return {
        f"{name}/character{c + 1:02d}": [png_bytes(seed + 100 * c + d) for d in range(4)] for c in range(characters)
    }


def _omniglot(path, split: str) -> OmniglotDataModule:
    return OmniglotDataModule(
        data_dir=str(path),
        split=split,
        download=False,
        ways=2,
        queries=1,
        eval_queries=1,
        meta_batch_size=1,
        val_tasks=2,
        test_tasks=2,
    )


def _class_names(data: OmniglotDataModule, split: str) -> list[str]:
    return list(data.split_data(split)[2])


def test_minimal_drops_a_shared_alphabet_and_a_renamed_character(tmp_path):
    greek = _alphabet("Greek", 3, seed=0)
    korean = _alphabet("Korean", 3, seed=10_000)
    sanskrit = _alphabet("Sanskrit", 4, seed=20_000)
    renamed = {"Tagalog/character07": korean["Korean/character02"]}  # the same images under another name
    _zip(tmp_path, "images_background_small1", {**greek, **korean})
    _zip(tmp_path, "images_background_small2", {**greek, **sanskrit, **renamed})

    data = _omniglot(tmp_path, "minimal")
    data.setup("fit")
    expected = [f"images_background_small2/{name}" for name in sanskrit]
    assert _class_names(data, "val") == expected
    assert _class_names(data, "test") == expected
    assert len(_class_names(data, "train")) == 6 * 4  # 6 characters x 4 rotations

    reverse = _omniglot(tmp_path, "minimal_reverse")
    reverse.setup("fit")
    assert _class_names(reverse, "val") == [f"images_background_small1/Korean/character0{c}" for c in (1, 3)]


def test_minimal_keeps_every_character_when_nothing_is_shared(tmp_path):
    _zip(tmp_path, "images_background_small1", _alphabet("Greek", 3, seed=0))
    _zip(tmp_path, "images_background_small2", _alphabet("Greek", 3, seed=50_000))  # same names, other images
    data = _omniglot(tmp_path, "minimal")
    data.setup("validate")
    assert len(_class_names(data, "val")) == 3


class _Shared(EpisodicDataModule):
    """Train classes 0-2; evaluation classes 2-4, class 2's images in both."""

    def build_split(self, split):
        first = 0 if split == "train" else 2
        images = torch.stack(
            [torch.full((1, 4, 4), 10 * k + i, dtype=torch.uint8) for k in range(first, first + 3) for i in range(3)]
        )
        labels = [k for k in range(3) for _ in range(3)]
        names = [f"class{k}" for k in range(first, first + 3)]
        return ImageClasses(images, labels, names), labels, names


@pytest.mark.parametrize("stage, split", [("fit", "val"), ("test", "test")])
def test_setup_refuses_evaluation_classes_that_share_training_images(stage, split):
    data = _Shared(ways=2, shots=1, queries=1, meta_batch_size=1)
    with pytest.raises(
        ValueError,
        match=rf"Expected the classes of split '{split}' to share no image with those of split 'train', but got 1 "
        rf"classes sharing 3 images: 'class2' with 'class2' \(3\)\.",
    ):
        data.setup(stage)
