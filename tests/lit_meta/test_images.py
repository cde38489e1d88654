"""The one image-preparation path (:mod:`lit_meta.images`) for every PIL mode a user's files may have.

Every expected pixel below is computed by hand from the rules in :mod:`lit_meta.images`:

- 16-bit gray ``v`` -> ``round(v * 255 / 65535)``;
- alpha ``a`` over a white background: ``round((c * a + 255 * (255 - a)) / 255)``;
- RGB -> gray (ITU-R 601-2 luma, PIL's): ``round(0.299 R + 0.587 G + 0.114 B)``;
- float ``f`` in ``[0, 1]`` -> ``round(f * 255)``.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lit_meta import images
from lit_meta.adapt_cli import read_support
from lit_meta.images import ImagePreprocessing, decode_image, image_channels, prepare_image

# 16-bit values and their 8-bit rounding: 255 * 255 / 65535 = 0.99 -> 1 (``>> 8`` would give 0),
# 32768 * 255 / 65535 = 127.50 -> 128.
GRAY16 = [[0, 255], [32768, 65535]]
GRAY16_AS_8 = [[0, 1], [128, 255]]

# A palette of four colours on a 2 x 2 image using each once; luma by hand (0.299 R + 0.587 G + 0.114 B).
PALETTE = [(255, 0, 0), (0, 0, 255), (10, 20, 30), (200, 200, 200)]
PALETTE_LUMA = [[76, 29], [18, 200]]  # 76.2, 29.1, 18.2, 200


def save(image: Image.Image, path, **params) -> str:
    image.save(path, **params)
    return str(path)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def gray16_png(path) -> str:
    return save(Image.fromarray(np.array(GRAY16, dtype=np.uint16)), path)  # mode "I;16"


def palette_image(transparency=None) -> Image.Image:
    image = Image.new("P", (2, 2))
    image.putpalette([c for colour in PALETTE for c in colour])
    image.putdata([0, 1, 2, 3])
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def pixels(tensor: torch.Tensor) -> list:
    """``(C, H, W)`` uint8 -> nested lists ``[H][W]`` (one channel) or ``[H][W][C]``."""
    if tensor.shape[0] == 1:
        return tensor[0].tolist()
    return tensor.permute(1, 2, 0).tolist()


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = gray16_png(tmp_path / "gray16.png")
    assert Image.open(path).mode == "I;16"
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == GRAY16_AS_8
    assert pixels(decode_image(read(path), path, channels=1, size=2, invert=True)) == [[255, 254], [127, 0]]
    rgb = decode_image(read(path), path, channels=3, size=2)
    assert pixels(rgb) == [[[v] * 3 for v in row] for row in GRAY16_AS_8]
    assert image_channels(read(path), path) == 1
    loaded = ImagePreprocessing(channels=1, image_size=2).load(path)
    torch.testing.assert_close(loaded, torch.tensor([GRAY16_AS_8], dtype=torch.float32) / 255)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I"])
def test_other_16bit_layouts_are_scaled(mode, tmp_path):
    dtype = {"I;16B": ">u2", "I;16L": "<u2", "I": "<i4"}[mode]
    image = Image.frombytes(mode, (2, 2), np.array(GRAY16, dtype=dtype).tobytes())
    assert pixels(prepare_image(image, channels=1, size=2)) == GRAY16_AS_8
    path = save(image, tmp_path / "image.tif")  # TIFF keeps the mode (little-endian "I;16L" reads back as "I;16")
    assert Image.open(path).mode == {"I;16L": "I;16"}.get(mode, mode)
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == GRAY16_AS_8


def test_32bit_integers_beyond_16_bits_are_refused(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [65535, 70000]], dtype=np.int32))
    path = save(image, tmp_path / "wide.tif")
    with pytest.raises(
        ValueError,
        match=r"^Expected integer pixels in \[0, 65535\] \(16 bits\) in '.*wide\.tif', "
        r"but got values in \[0, 70000\]\.$",
    ):
        decode_image(read(path), path, channels=1, size=2)


def test_float_image_in_unit_range_is_scaled(tmp_path):
    image = Image.fromarray(np.array([[0.0, 0.2], [0.6, 1.0]], dtype=np.float32))
    path = save(image, tmp_path / "float.tif")
    assert Image.open(path).mode == "F"
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == [[0, 51], [153, 255]]
    assert image_channels(read(path), path) == 1


@pytest.mark.parametrize(
    "values, got",
    [([[0.0, 2.0], [255.0, 1.0]], r"values in \[0, 255\]"), ([[0.0, np.nan], [0.5, 1.0]], r"NaN or infinity")],
)
def test_float_image_outside_unit_range_is_refused(values, got, tmp_path):
    path = save(Image.fromarray(np.array(values, dtype=np.float32)), tmp_path / "float.tif")
    with pytest.raises(ValueError, match=rf"^Expected float pixels in \[0, 1\] in '.*float\.tif', but got {got}\.$"):
        decode_image(read(path), path, channels=1, size=2)


def test_palette_image_goes_through_its_colours(tmp_path):
    path = save(palette_image(), tmp_path / "palette.png")
    assert pixels(decode_image(read(path), path, channels=3, size=2)) == [
        [list(PALETTE[0]), list(PALETTE[1])],
        [list(PALETTE[2]), list(PALETTE[3])],
    ]
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == PALETTE_LUMA
    assert image_channels(read(path), path) == 3
    with pytest.raises(ValueError, match=r"Expected 1-channel images .* but got 3 channels in '.*palette\.png'\."):
        ImagePreprocessing(channels=1, image_size=2).load(path)


def test_gray_palette_image_counts_one_channel(tmp_path):
    image = Image.new("P", (2, 2))
    image.putpalette([0, 0, 0, 100, 100, 100, 255, 255, 255] + [255, 0, 0] * 253)  # red entries, unused
    image.putdata([0, 1, 2, 1])
    path = save(image, tmp_path / "gray_palette.png")
    assert image_channels(read(path), path) == 1
    loaded = ImagePreprocessing(channels=1, image_size=2).load(path)
    torch.testing.assert_close(loaded, torch.tensor([[[0, 100], [255, 100]]], dtype=torch.float32) / 255)


def test_palette_transparency_is_composited_over_white(tmp_path):
    # One transparent index (PNG/GIF style): index 1 (blue) is fully transparent -> white.
    path = save(palette_image(transparency=1), tmp_path / "one_transparent.png")
    assert Image.open(path).info["transparency"] == 1
    assert pixels(decode_image(read(path), path, channels=3, size=2)) == [
        [[255, 0, 0], [255, 255, 255]],
        [[10, 20, 30], [200, 200, 200]],
    ]
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == [[76, 255], [18, 200]]
    # Per-index alpha (PNG tRNS bytes): red at alpha 128, blue at 0, the others opaque.
    path = save(palette_image(), tmp_path / "alphas.png", transparency=bytes([128, 0, 255, 255]))
    # red over white at 128/255: (255, 0 * 128 + 255 * 127, ...) / 255 = (255, 127, 127).
    assert pixels(decode_image(read(path), path, channels=3, size=2)) == [
        [[255, 127, 127], [255, 255, 255]],
        [[10, 20, 30], [200, 200, 200]],
    ]


def test_gray_alpha_is_composited_over_white(tmp_path):
    # (L, A): (0, 128) -> 255 * 127 / 255 = 127; (100, 0) -> 255; (100, 255) -> 100;
    # (200, 51) -> (200 * 51 + 255 * 204) / 255 = 244.
    data = np.array([[[0, 128], [100, 0]], [[100, 255], [200, 51]]], dtype=np.uint8)
    path = save(Image.fromarray(data, "LA"), tmp_path / "la.png")
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == [[127, 255], [100, 244]]
    assert pixels(decode_image(read(path), path, channels=1, size=2, invert=True)) == [[128, 0], [155, 11]]
    assert image_channels(read(path), path) == 1
    loaded = ImagePreprocessing(channels=1, image_size=2).load(path)
    torch.testing.assert_close(loaded, torch.tensor([[[127, 255], [100, 244]]], dtype=torch.float32) / 255)


def test_rgba_is_composited_over_white(tmp_path):
    # (255, 0, 0, 128) -> (255, 127, 127); alpha 0 -> white; opaque -> itself;
    # (0, 100, 200, 51) -> ((0, 5100, 10200) + 255 * 204) / 255 = (204, 224, 244).
    data = np.array([[[255, 0, 0, 128], [0, 0, 255, 0]], [[10, 20, 30, 255], [0, 100, 200, 51]]], dtype=np.uint8)
    path = save(Image.fromarray(data, "RGBA"), tmp_path / "rgba.png")
    expected = [[[255, 127, 127], [255, 255, 255]], [[10, 20, 30], [204, 224, 244]]]
    assert pixels(decode_image(read(path), path, channels=3, size=2)) == expected
    assert image_channels(read(path), path) == 3
    loaded = ImagePreprocessing(channels=3, image_size=2).load(path)
    torch.testing.assert_close(loaded, torch.tensor(expected, dtype=torch.float32).permute(2, 0, 1) / 255)


def test_gray_and_rgb_transparent_colour_is_white(tmp_path):
    gray = Image.fromarray(np.array([[0, 10], [20, 30]], dtype=np.uint8))
    path = save(gray, tmp_path / "gray_trns.png", transparency=10)
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == [[0, 255], [20, 30]]
    rgb = Image.fromarray(np.array([[[0, 0, 0], [1, 2, 3]], [[1, 2, 3], [9, 9, 9]]], dtype=np.uint8))
    path = save(rgb, tmp_path / "rgb_trns.png", transparency=(1, 2, 3))
    assert pixels(decode_image(read(path), path, channels=3, size=2)) == [
        [[0, 0, 0], [255, 255, 255]],
        [[255, 255, 255], [9, 9, 9]],
    ]


def test_bilevel_image_is_black_and_white(tmp_path):
    image = Image.new("1", (2, 2))
    image.putdata([0, 1, 1, 0])
    path = save(image, tmp_path / "bilevel.png")
    assert pixels(decode_image(read(path), path, channels=1, size=2)) == [[0, 255], [255, 0]]
    assert image_channels(read(path), path) == 1


@pytest.mark.parametrize(
    "mode, channels",
    [("1", 1), ("L", 1), ("LA", 1), ("La", 1), ("I", 1), ("I;16", 1), ("I;16B", 1), ("F", 1)]
    + [("RGB", 3), ("RGBA", 3), ("RGBa", 3), ("RGBX", 3), ("CMYK", 3), ("YCbCr", 3), ("LAB", 3), ("HSV", 3)],
)
def test_channels_by_mode(mode, channels, monkeypatch):
    image = Image.new(mode, (2, 2))
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: image)
    assert image_channels(b"", "image") == channels


def test_oversized_image_is_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (8000, 6000)), tmp_path / "huge.png")  # 48 M pixels, 6 kB on disk
    with pytest.raises(
        ValueError, match=r"^Expected an image of at most 40000000 pixels in '.*huge\.png', but got 8000 x 6000\.$"
    ):
        decode_image(read(path), path, channels=1, size=28)
    with pytest.raises(ValueError, match=r"^Expected an image of at most 40000000 pixels in '.*huge\.png'"):
        ImagePreprocessing(channels=1, image_size=28).load(path)


def test_size_limit_is_checked_on_the_header_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    data = io.BytesIO()
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(data, "PNG")
    # Cut the pixel data: decoding it would fail as unreadable; the size check needs only the header.
    truncated = data.getvalue()[:60]
    with pytest.raises(ValueError, match=r"^Expected an image of at most 100 pixels in 'cut\.png', but got 20 x 20\.$"):
        decode_image(truncated, "cut.png", channels=1, size=2)
    with pytest.raises(ValueError, match=r"^Expected an image of at most 100 pixels in 'cut\.png', but got 20 x 20\.$"):
        image_channels(truncated, "cut.png")


def test_pil_decompression_bomb_check_becomes_the_same_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL warns above 50 pixels and refuses above 100
    warned = save(Image.new("L", (10, 8)), tmp_path / "warned.png")
    refused = save(Image.new("L", (20, 20)), tmp_path / "refused.png")
    with pytest.raises(
        ValueError, match=r"^Expected an image of at most 50 pixels in '.*warned\.png', but got 10 x 8\.$"
    ):
        decode_image(read(warned), warned, channels=1, size=2)
    with pytest.raises(ValueError, match=r"^Expected an image of at most 50 pixels in '.*refused\.png', but got 400"):
        decode_image(read(refused), refused, channels=1, size=2)
    with pytest.raises(ValueError, match=r"^Expected an image of at most 50 pixels in '.*refused\.png', but got 400"):
        ImagePreprocessing(channels=1, image_size=2).load(refused)


def test_refusals_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    path = save(Image.new("L", (20, 20)), tmp_path / "refused.png")
    with pytest.raises(ValueError) as caught:
        decode_image(read(path), path, channels=1, size=2)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("Expected ")


def test_adapt_support_reads_16bit_pngs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        gray16_png(tmp_path / name / "1.png")
    support, labels, classes = read_support(str(tmp_path), ImagePreprocessing(channels=1, image_size=2))
    expected = torch.tensor([GRAY16_AS_8], dtype=torch.float32) / 255
    assert classes == ["a", "b"] and labels.tolist() == [0, 1]
    torch.testing.assert_close(support, torch.stack([expected, expected]))
