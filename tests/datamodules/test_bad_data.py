"""Every bad input stops with an error naming the split, the class or file, and the numbers."""

import os
import zipfile

import pytest

from datamodules import ImageFolderDataModule, OmniglotDataModule
from tests.helpers.fabricate import image_folder, minimal_omniglot, omniglot_zip


def folder_data(root, **kwargs):
    defaults = dict(ways=2, shots=1, queries=1, image_size=16, splits=(0.5, 0.25, 0.25))
    return ImageFolderDataModule(str(root), **{**defaults, **kwargs})


def test_ways_larger_than_the_classes_of_a_split(tmp_path):
    image_folder(tmp_path / "data", classes=8, images=3)
    data = folder_data(tmp_path / "data", ways=5)
    with pytest.raises(ValueError, match=r"Expected `ways` <= 4 classes in split 'train', but got 5\."):
        data.setup("fit")
    data = folder_data(tmp_path / "data", ways=2, eval_ways=3)
    with pytest.raises(ValueError, match=r"Expected `ways` <= 2 classes in split 'val', but got 3\."):
        data.setup("fit")


def test_class_with_fewer_than_shots_plus_queries_images(tmp_path):
    root = image_folder(tmp_path / "data", classes=4, images=3)
    os.remove(os.path.join(root, "class_2", "0.png"))
    data = folder_data(
        root, shots=1, queries=2, splits={"train": ["class_0", "class_2"], "val": ["class_1"], "test": ["class_3"]}
    )
    with pytest.raises(
        ValueError,
        match=r"Expected >= 3 images \(`shots` \+ `queries`\) in class 'class_2' of split 'train', but got 2\.",
    ):
        data.setup("fit")


def test_missing_folder(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"Expected a folder of class folders at '.*nowhere', but got no such folder\."
    ):
        folder_data(tmp_path / "nowhere").setup("fit")


def test_empty_folder_and_empty_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"Expected class folders \(root/<class>/<image>\) in '.*empty', but got none\."
    ):
        folder_data(tmp_path / "empty").setup("fit")
    root = image_folder(tmp_path / "data", classes=4, images=3)
    os.makedirs(os.path.join(root, "class_9"))
    with pytest.raises(
        ValueError, match=r"Expected >= 1 image in class 'class_9' of '.*data', but got an empty folder\."
    ):
        folder_data(root).setup("fit")


def test_corrupt_image_and_non_image_file(tmp_path):
    root = image_folder(tmp_path / "data", classes=4, images=3)
    with open(os.path.join(root, "class_1", "1.png"), "wb") as f:
        f.write(b"not a png at all")
    with pytest.raises(
        ValueError, match=r"Expected a readable image in '.*class_1/1\.png', but got an unreadable or corrupt file"
    ):
        folder_data(root, splits={"train": ["class_0", "class_1"], "val": ["class_2"], "test": ["class_3"]}).setup(
            "fit"
        )
    with open(os.path.join(root, "class_3", "notes.txt"), "w") as f:
        f.write("x")
    with pytest.raises(
        ValueError, match=r"Expected only image files .* in class 'class_3' of '.*data', but got 'notes\.txt'\."
    ):
        folder_data(root).setup("fit")


def test_bad_class_splits(tmp_path):
    root = image_folder(tmp_path / "data", classes=4, images=3)
    with pytest.raises(
        ValueError, match=r"Expected class 'cat' of split 'val' to be a folder of the root, but got no such class\."
    ):
        folder_data(root, splits={"train": ["class_0"], "val": ["cat"], "test": ["class_1"]}).setup("fit")
    with pytest.raises(
        ValueError, match=r"Expected each class in one split, but got 'class_0' in 'train' and 'test'\."
    ):
        folder_data(root, splits={"train": ["class_0"], "val": ["class_1"], "test": ["class_0"]}).setup("fit")
    with pytest.raises(ValueError, match=r"summing to 1, but got \(0\.5, 0\.5, 0\.5\)\."):
        folder_data(root, splits=(0.5, 0.5, 0.5)).setup("fit")
    with pytest.raises(ValueError, match=r"Expected >= 1 class in split 'val', but got 0 of 4 classes\."):
        folder_data(root, splits=(1.0, 0.0, 0.0)).setup("fit")


def test_image_folder_constructor_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"Expected `channels` to be one of 1, 3, but got 2\."):
        ImageFolderDataModule(str(tmp_path), channels=2)
    with pytest.raises(ValueError, match=r"Expected `mean` of 1 or 3 values, but got 2\."):
        ImageFolderDataModule(str(tmp_path), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"Expected `shots` >= 1, but got 0\."):
        ImageFolderDataModule(str(tmp_path), shots=0)


def omniglot(folder, **kwargs):
    return OmniglotDataModule(data_dir=str(folder), split="minimal", download=False, **kwargs)


def test_zip_that_is_not_a_zip(tmp_path):
    minimal_omniglot(str(tmp_path))
    (tmp_path / "images_background_small1.zip").write_bytes(b"PK? no")
    with pytest.raises(
        ValueError,
        match=r"Expected an Omniglot zip archive in '.*images_background_small1\.zip', but got a file that is not a "
        r"zip",
    ):
        omniglot(tmp_path).setup("fit")


def test_zip_that_is_not_omniglot(tmp_path):
    minimal_omniglot(str(tmp_path))
    with zipfile.ZipFile(tmp_path / "images_background_small2.zip", "w") as zf:
        zf.writestr("cifar/data_batch_1", b"xx")
    with pytest.raises(
        ValueError,
        match=r"Expected Omniglot images 'images_background_small2/<alphabet>/<character>/\*\.png' in "
        r"'.*images_background_small2\.zip', but got 'cifar/data_batch_1' among 1 files\.",
    ):
        omniglot(tmp_path).setup("fit")


def test_corrupt_image_inside_the_zip(tmp_path):
    omniglot_zip(str(tmp_path), "images_background_small2", characters=4)
    with zipfile.ZipFile(tmp_path / "images_background_small1.zip", "w") as zf:
        zf.writestr("images_background_small1/A/character01/0001_01.png", b"garbage")
    with pytest.raises(
        ValueError,
        match=r"Expected a readable image in '.*small1\.zip:images_background_small1/A/character01/0001_01\.png'",
    ):
        omniglot(tmp_path).setup("fit")


def test_missing_archive_without_download(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"Expected the Omniglot archive '.*images_background_small1\.zip' for split 'minimal', but got no such "
        r"file",
    ):
        omniglot(tmp_path).prepare_data()


def test_archive_with_wrong_checksum_when_download_is_on(tmp_path):
    minimal_omniglot(str(tmp_path))
    with pytest.raises(
        ValueError,
        match=r"Expected the official images_background_small1\.zip \(md5 e704a628b5459e08445c13499850abc4\) .* but "
        r"its md5 differs",
    ):
        OmniglotDataModule(data_dir=str(tmp_path), split="minimal", download=True).prepare_data()


def test_omniglot_arguments(tmp_path):
    with pytest.raises(
        ValueError, match=r"Expected `split` to be one of 'standard', 'minimal', 'minimal_reverse', but got 'tiny'\."
    ):
        OmniglotDataModule(data_dir=str(tmp_path), split="tiny")
    data = omniglot(minimal_omniglot(str(tmp_path)), ways=5)  # 4 characters x 2 alphabets = 8 x 4 rotations
    data.setup("fit")
    assert len(data.episodes("train").taskset.dataset.labels) == 32
    with pytest.raises(ValueError, match=r"Expected `ways` <= 8 classes in split 'val', but got 9\."):
        omniglot(tmp_path, ways=5, eval_ways=9).setup("fit")
