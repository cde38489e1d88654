"""Random affine warps of training images (`train_warp`)."""

import math

import pytest
import torch

from datamodules import OmniglotDataModule
from datamodules.augmentation import AffineWarp
from tests.helpers.fabricate import minimal_omniglot


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return minimal_omniglot(str(tmp_path_factory.mktemp("omniglot")), characters=6)


def omniglot(data_dir, **options) -> OmniglotDataModule:
    data = OmniglotDataModule(data_dir, split="minimal", download=False, ways=3, queries=2, val_tasks=4, **options)
    data.setup("fit")
    return data


def test_a_warp_of_zero_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(AffineWarp(0, 0, 0, 0)(images, torch.Generator().manual_seed(0)), images)


def test_a_pure_rotation_matches_the_hand_computed_sampling():
    # theta maps an output point (x, y) to the input point (cos a x - sin a y, sin a x + cos a y): the
    # angle a is the generator's first draw, re-drawn here.
    warp = AffineWarp(degrees=60, translate=0, scale=0, shear=0)
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 10, 15] = 1.0  # a dot right of the centre
    out = warp(image, torch.Generator().manual_seed(1))
    angle = math.radians(
        (torch.rand(1, generator=torch.Generator().manual_seed(1), dtype=torch.float64).item() * 2 - 1) * 60
    )
    # The dot moves to the output point that theta maps onto it: the inverse rotation of (5, 0) pixels.
    row, col = divmod(out[0, 0].argmax().item(), 21)
    expected = (10 - 5 * math.sin(angle), 10 + 5 * math.cos(angle))
    assert abs(row - expected[0]) <= 1 and abs(col - expected[1]) <= 1
    assert out[0, 0, row, col] > 0.25 and out.sum() > 0.5  # the dot, moved (bilinear sampling spreads it)


def test_warps_are_keyed_train_only_and_keep_labels(data_dir):
    plain, warped, again = (
        omniglot(data_dir),
        omniglot(data_dir, train_warp=AffineWarp()),
        omniglot(data_dir, train_warp=AffineWarp()),
    )
    key = (0, 0, 5, 1)
    original, task, repeat = (d.episodes("train").task(key) for d in (plain, warped, again))
    assert torch.equal(task.support_y, original.support_y) and torch.equal(task.query_y, original.query_y)
    assert not torch.allclose(task.support_x, original.support_x)  # warped
    for a, b in zip(task, repeat):  # the same key, the same warps (a resumed run sees the same images)
        assert torch.equal(a, b)
    assert not torch.equal(warped.episodes("train").task((0, 0, 6, 1)).support_x, task.support_x)
    for a, b in zip(plain.episodes("val").task((1234, 1, 0)), warped.episodes("val").task((1234, 1, 0))):
        assert torch.equal(a, b)  # evaluation is never warped


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"degrees": -1.0}, ValueError, r"Expected `degrees` >= 0, but got -1\.0\."),
        ({"scale": 1.0}, ValueError, r"Expected `scale` < 1, but got 1\.0\."),
        ({"shear": 90.0}, ValueError, r"Expected `shear` < 90 degrees, but got 90\.0\."),
        ({"translate": "a lot"}, TypeError, r"Expected `translate` to be int or float, but got str 'a lot'\."),
    ],
)
def test_bad_warps_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        AffineWarp(**options)


def test_a_warp_of_another_type_is_refused(data_dir):
    with pytest.raises(TypeError, match=r"Expected `train_warp` to be AffineWarp, but got dict"):
        OmniglotDataModule(data_dir, split="minimal", download=False, train_warp={"degrees": 10})
