"""mini-ImageNet, tiered-ImageNet, CIFAR-FS and FC100 through learn2learn's classes, on tiny fabricated files.

Nothing here touches the network: every datamodule has ``download=False``.
"""

import os
import pickle

import learn2learn as l2l
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import CIFARFSDataModule, FC100DataModule, MiniImageNetDataModule, TieredImageNetDataModule
from tests.helpers.fabricate_vision import cifarfs, fc100, mini_imagenet, tiered_imagenet

# The MetaOptNet statistics (Lee et al., 2019), in pixel units, written out by hand.
IMAGENET = ((120.39586422, 115.59361427, 104.54012653), (70.68188272, 68.27635443, 72.54505529))
CIFAR = ((129.37731888, 124.10583864, 112.47758569), (68.20947949, 65.43124043, 70.45866994))

CASES = {
    "mini-imagenet": (MiniImageNetDataModule, mini_imagenet, 84, IMAGENET),
    "tiered-imagenet": (TieredImageNetDataModule, tiered_imagenet, 84, IMAGENET),
    "cifar-fs": (CIFARFSDataModule, cifarfs, 32, CIFAR),
    "fc100": (FC100DataModule, fc100, 32, CIFAR),
}
# The first file each datamodule looks for, relative to data_dir.
FIRST_FILE = {
    "mini-imagenet": r"mini-imagenet-cache-train\.pkl",
    "tiered-imagenet": r"tiered-imagenet/train_images_png\.pkl",
    "cifar-fs": r"cifarfs/cifar100/splits/bertinetto/train\.txt",
    "fc100": r"FC100_train\.pickle",
}
BENCHMARK = {
    "mini-imagenet": "mini-ImageNet",
    "tiered-imagenet": "tiered-ImageNet",
    "cifar-fs": "CIFAR-FS",
    "fc100": "FC100",
}


def make(cls, data_dir, **kwargs):
    defaults = dict(
        data_dir=str(data_dir),
        download=False,
        ways=3,
        shots=2,
        queries=1,
        eval_shots=1,
        eval_queries=2,
        meta_batch_size=2,
        train_batches_per_epoch=2,
        val_tasks=3,
        test_tasks=2,
    )
    return cls(**{**defaults, **kwargs})


@pytest.fixture(scope="module", params=list(CASES))
def fabricated(request, tmp_path_factory):
    """``(name, datamodule class, data_dir, what was written)``, one tiny copy per benchmark."""
    cls, fabricate, _, _ = CASES[request.param]
    folder = str(tmp_path_factory.mktemp(request.param))
    return request.param, cls, folder, fabricate(folder)


def test_batches_are_n_way_k_shot_tasks_of_rgb_images(fabricated):
    name, cls, folder, _ = fabricated
    size = CASES[name][2]
    data = make(cls, folder)
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    train = next(iter(data.train_dataloader()))
    assert train.support_x.shape == (2, 6, 3, size, size) and train.query_x.shape == (2, 3, 3, size, size)
    assert train.support_x.dtype == torch.float32
    assert train.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    val = list(data.val_dataloader())
    assert sum(batch.num_tasks for batch in val) == 3
    assert val[0].support_x.shape == (2, 3, 3, size, size) and val[0].query_x.shape == (2, 6, 3, size, size)
    for batch in [train, *val, *data.test_dataloader()]:
        for labels in (batch.support_y, batch.query_y):
            assert labels.min() >= 0 and labels.max() < 3


def raw_pixels_and_labels(name, folder, written):
    """What the train split must hold: ``(uint8 (N, H, W, 3), labels, class names)``, from the files."""
    if name == "mini-imagenet":
        data = written["train"]
        return data["image_data"], [i % 6 for i in range(24)], list(data["class_dict"])
    if name == "tiered-imagenet":
        data = written["train"]
        return data["pixels"], data["label_specific"].tolist(), data["label_specific_str"]
    if name == "cifar-fs":  # ImageFolder order: sorted classes, sorted files
        classes = sorted(written["train"])
        root = os.path.join(folder, "cifarfs", "cifar100", "data")
        pixels = [np.asarray(Image.open(os.path.join(root, c, f"{i}.png"))) for c in classes for i in range(4)]
        return np.stack(pixels), [k for k in range(6) for _ in range(4)], classes
    data = written["train"]  # FC100: CIFAR-100 ids 1, 4, 7, ... remapped to 0..5
    return (
        data["data"],
        [(label - 1) // 3 for label in data["labels"]],
        [f"CIFAR-100 class {3 * k + 1}" for k in range(6)],
    )


def test_train_split_holds_normalised_images_and_their_labels(fabricated):
    name, cls, folder, written = fabricated
    (mean, std), size = CASES[name][3], CASES[name][2]
    dataset, labels, class_names = make(cls, folder).build_split("train")
    pixels, expected_labels, expected_names = raw_pixels_and_labels(name, folder, written)
    assert labels == expected_labels and list(class_names) == list(expected_names) and len(dataset) == 24
    image, label = dataset[13]
    assert image.shape == (3, size, size) and image.dtype == torch.float32 and label == expected_labels[13]
    # One pixel by hand: (p / 255 - m / 255) / (s / 255) = (p - m) / s.
    for c in range(3):
        p = float(pixels[13, 5, 9, c])
        assert image[c, 5, 9].item() == pytest.approx((p - mean[c]) / std[c], abs=1e-5)
    expected = (
        torch.from_numpy(pixels[13]).permute(2, 0, 1).double() - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    assert torch.allclose(image.double(), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["tiered-imagenet", "cifar-fs"])
def test_labels_come_without_decoding_images(name, tmp_path, monkeypatch):
    cls, fabricate, _, _ = CASES[name]
    fabricate(str(tmp_path))
    l2l_class = {"tiered-imagenet": l2l.vision.datasets.TieredImagenet, "cifar-fs": l2l.vision.datasets.CIFARFS}[name]

    def refuse(self, index):
        raise AssertionError("decoded an image to get a label")

    monkeypatch.setattr(l2l_class, "__getitem__", refuse)
    data = make(cls, tmp_path)
    data.prepare_data()
    data.setup("fit")  # labels, class sizes and checks, without one image


@pytest.mark.parametrize("name", list(CASES))
def test_missing_files_without_download(name, tmp_path):
    cls = CASES[name][0]
    data = make(cls, tmp_path / "nowhere")
    message = (
        rf"Expected the {BENCHMARK[name]} file '.*nowhere/{FIRST_FILE[name]}' of split 'train', "
        r"but got no such file \(set `download: true`"
    )
    with pytest.raises(FileNotFoundError, match=message):
        data.prepare_data()
    with pytest.raises(FileNotFoundError, match=message):
        data.setup("fit")
    assert not (tmp_path / "nowhere").exists()  # learn2learn would have made the folder


def test_missing_validation_file_names_the_split(tmp_path):
    mini_imagenet(str(tmp_path))
    os.remove(tmp_path / "mini-imagenet-cache-validation.pkl")
    data = make(MiniImageNetDataModule, tmp_path)
    data.setup("test")  # the test split is there
    with pytest.raises(
        FileNotFoundError, match=r"'.*mini-imagenet-cache-validation\.pkl' of split 'val', but got no such file"
    ):
        data.setup("fit")


@pytest.mark.parametrize(
    ("name", "file", "match"),
    [
        (
            "mini-imagenet",
            "mini-imagenet-cache-train.pkl",
            r"Expected a mini-ImageNet pickle \(a dict of 'image_data' and 'class_dict'\) in "
            r"'.*mini-imagenet-cache-train\.pkl', "
            r"but got a file learn2learn's MiniImagenet cannot read \(\w+Error: ",
        ),
        (
            "fc100",
            "FC100_train.pickle",
            r"Expected an FC100 pickle \(a dict of 'data' and 'labels'\) in '.*FC100_train\.pickle', but got a file "
            r"learn2learn's FC100 cannot read \(\w+Error: ",
        ),
        (
            "tiered-imagenet",
            "tiered-imagenet/train_images_png.pkl",
            r"Expected a tiered-ImageNet images pickle \(a list of PNG-encoded images\) in "
            r"'.*tiered-imagenet/train_images_png\.pkl', "
            r"but got a file learn2learn's TieredImagenet cannot read \(\w+Error: ",
        ),
        (
            "tiered-imagenet",
            "tiered-imagenet/train_labels.pkl",
            r"Expected a tiered-ImageNet labels pickle \(a dict with 'label_specific'\) in "
            r"'.*tiered-imagenet/train_labels\.pkl', "
            r"but got a file pickle cannot read \(\w+Error: ",
        ),
    ],
)
def test_file_that_is_not_a_pickle(name, file, match, tmp_path):
    cls, fabricate, _, _ = CASES[name]
    fabricate(str(tmp_path))
    (tmp_path / file).write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(ValueError, match=match):
        make(cls, tmp_path).setup("fit")


def rewrite(path, edit):
    with open(path, "rb") as f:
        data = pickle.load(f)
    data = edit(data)
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_pickles_with_the_wrong_content(tmp_path):
    mini_imagenet(str(tmp_path / "mini"))
    rewrite(
        tmp_path / "mini" / "mini-imagenet-cache-train.pkl", lambda d: {**d, "image_data": d["image_data"][:, :32, :32]}
    )
    with pytest.raises(
        ValueError,
        match=r"Expected 'image_data' of shape \(N, 84, 84, 3\) and dtype uint8 in '.*mini-imagenet-cache-train\.pkl', "
        r"but got an array of shape \(24, 32, 32, 3\) and dtype uint8\.",
    ):
        make(MiniImageNetDataModule, tmp_path / "mini").setup("fit")
    mini_imagenet(str(tmp_path / "mini"))
    rewrite(
        tmp_path / "mini" / "mini-imagenet-cache-test.pkl",
        lambda d: {**d, "class_dict": {k: v[:-1] for k, v in d["class_dict"].items()}},
    )
    with pytest.raises(
        ValueError,
        match=r"Expected every image of '.*mini-imagenet-cache-test\.pkl' in a class of 'class_dict', but got 6 of "
        r"24 images in none\.",
    ):
        make(MiniImageNetDataModule, tmp_path / "mini").setup("test")
    rewrite(tmp_path / "mini" / "mini-imagenet-cache-test.pkl", lambda d: d["image_data"])  # an array, not a dict
    with pytest.raises(ValueError, match=r"learn2learn's MiniImagenet cannot read \(IndexError: "):
        make(MiniImageNetDataModule, tmp_path / "mini").setup("test")
    fc100(str(tmp_path / "fc100"))
    rewrite(tmp_path / "fc100" / "FC100_val.pickle", lambda d: {**d, "labels": d["labels"][:-2]})
    with pytest.raises(
        ValueError,
        match=r"Expected one integer label per image \(24\) in 'labels' of '.*FC100_val\.pickle', but got an array "
        r"of shape \(22,\)",
    ):
        make(FC100DataModule, tmp_path / "fc100").setup("fit")
    tiered_imagenet(str(tmp_path / "tiered"))
    rewrite(tmp_path / "tiered" / "tiered-imagenet" / "val_labels.pkl", lambda d: {"label_general": d["label_general"]})
    with pytest.raises(
        ValueError,
        match=r"Expected a tiered-ImageNet labels pickle \(a dict with 'label_specific'\) in '.*val_labels\.pkl', "
        r"but got \['label_general'\]\.",
    ):
        make(TieredImageNetDataModule, tmp_path / "tiered").setup("fit")


def test_unreadable_images_are_named(tmp_path):
    tiered_imagenet(str(tmp_path / "tiered"))
    rewrite(
        tmp_path / "tiered" / "tiered-imagenet" / "train_images_png.pkl",
        lambda images: images[:3] + [b"not a png"] + images[4:],
    )
    dataset, _, _ = make(TieredImageNetDataModule, tmp_path / "tiered").build_split("train")
    dataset[2]
    with pytest.raises(
        ValueError,
        match=r"Expected a readable image in image 3 of '.*tiered-imagenet/train_images_png\.pkl', but got an "
        r"unreadable or corrupt file",
    ):
        dataset[3]
    written = cifarfs(str(tmp_path / "cifar"))
    (tmp_path / "cifar" / "cifarfs" / "cifar100" / "data" / written["train"][0] / "1.png").write_bytes(b"not a png")
    dataset, _, _ = make(CIFARFSDataModule, tmp_path / "cifar").build_split("train")
    with pytest.raises(
        ValueError,
        match=r"Expected a readable image in '.*cifarfs/processed/train/train_class_0/1\.png', but got an unreadable "
        r"or corrupt file",
    ):
        dataset[1]


def test_cifarfs_split_file_naming_a_missing_class_leaves_no_half_made_copy(tmp_path):
    cifarfs(str(tmp_path))
    split_file = tmp_path / "cifarfs" / "cifar100" / "splits" / "bertinetto" / "val.txt"
    split_file.write_text(split_file.read_text() + "unicorn\n")
    data = make(CIFARFSDataModule, tmp_path)
    with pytest.raises(
        ValueError,
        match=r"Expected class 'unicorn' of split file '.*bertinetto/val\.txt' to be a folder of '.*cifar100/data', "
        r"but got no such folder\.",
    ):
        data.prepare_data()
    assert not (tmp_path / "cifarfs" / "processed").exists()
    split_file.write_text(split_file.read_text().replace("unicorn\n", ""))
    data.prepare_data()
    assert sorted(os.listdir(tmp_path / "cifarfs" / "processed")) == ["test", "train", "val"]


def test_too_many_ways_names_the_split(fabricated):
    name, cls, folder, _ = fabricated
    with pytest.raises(ValueError, match=r"Expected `ways` <= 6 classes in split 'train', but got 7\."):
        make(cls, folder, ways=7).setup("fit")


@pytest.mark.parametrize("cls", [case[0] for case in CASES.values()])
def test_constructor_arguments(cls, tmp_path):
    with pytest.raises(TypeError, match=r"Expected `download` to be bool, but got str 'no'\."):
        cls(str(tmp_path), download="no")
    with pytest.raises(TypeError, match=r"Expected `data_dir` to be str or PathLike, but got int 3\."):
        cls(3)
    with pytest.raises(ValueError, match=r"Expected `shots` >= 1, but got 0\."):
        cls(str(tmp_path), shots=0)
    assert cls(str(tmp_path), download=False).hparams["download"] is False
