"""Images as the user's viewer shows them: orientation, bit depth, float range, transparency,
size limits and unreadable files — checked on pixels, not only on the absence of errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from catalogue_models import png_declaring
from PIL import Image

from mmcam.errors import InputError
from mmcam.io import MAX_PIXELS, load_image, unique_stems

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _px(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img)[y, x])


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left half red, right half blue
    arr[:, :20] = RED
    arr[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)  # shown portrait
    top, bottom = _px(img, 10, 5), _px(img, 10, 34)  # the left half is now on top
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    # a PIL image the user opened keeps its tag: same rule
    with Image.open(path) as opened:
        assert load_image(opened).size == (20, 40)


def test_16bit_png_scaled_by_its_range(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16).repeat(4, 0)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # what PIL gives: convert("RGB") would be all white
    img = load_image(path)
    assert img.mode == "RGB"
    assert [_px(img, x, 0)[0] for x in range(4)] == [0, 4, 128, 255]
    assert _px(img, 2, 0) == (128, 128, 128)


def test_16bit_big_endian_and_32bit_int_images():
    values = np.array([[0, 65535]], np.uint16)
    big = Image.fromarray(values.astype(">u2"))
    assert big.mode == "I;16B"
    assert [_px(load_image(big), x, 0)[0] for x in range(2)] == [0, 255]
    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    assert [_px(load_image(as_int32), x, 0)[0] for x in range(2)] == [0, 255]


def test_float_tiff_in_unit_range_and_in_255(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    assert [_px(load_image(tmp_path / "unit.tif"), x, 0)[0] for x in range(3)] == [0, 128, 255]
    Image.fromarray(unit * 255).save(tmp_path / "bytes.tif")
    assert [_px(load_image(tmp_path / "bytes.tif"), x, 0)[0] for x in range(3)] == [0, 128, 255]
    Image.fromarray(unit * 10 - 3).save(tmp_path / "odd.tif")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image(tmp_path / "odd.tif")


def test_palette_with_transparency_over_white(tmp_path):
    img = Image.new("P", (4, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1, 1, 0])
    path = tmp_path / "palette.png"
    img.save(path, transparency=1)
    out = load_image(path)
    assert [_px(out, x, 0) for x in range(4)] == [RED, WHITE, WHITE, RED]


def test_rgba_la_and_cmyk():
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent
    out = load_image(rgba)
    assert [_px(out, x, 0) for x in range(2)] == [BLUE, WHITE]
    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8), "LA")
    assert [_px(load_image(la), x, 0) for x in range(2)] == [(10, 10, 10), WHITE]
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # no black, full magenta + yellow: red
    assert _px(load_image(cmyk), 0, 0) == RED


def test_arrays_by_dtype_and_detected_range():
    u8 = np.array([[[0, 128, 255]]], np.uint8)
    assert _px(load_image(u8), 0, 0) == (0, 128, 255)
    u16 = np.array([[[0, 32768, 65535]]], np.uint16)
    assert _px(load_image(u16), 0, 0) == (0, 128, 255)
    unit = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert _px(load_image(unit), 0, 0) == (0, 128, 255)
    bytes_range = np.array([[[0.0, 128.0, 255.0]]], np.float64)  # used to be clipped to white
    assert _px(load_image(bytes_range), 0, 0) == (0, 128, 255)
    gray = np.array([[0.0, 1.0]], np.float32)
    assert [_px(load_image(gray), x, 0) for x in range(2)] == [(0, 0, 0), WHITE]
    assert _px(load_image(np.array([[True]])), 0, 0) == WHITE


def test_tensors_by_range():
    t = torch.tensor([0.0, 0.5, 1.0])[:, None, None]
    assert _px(load_image(t), 0, 0) == (0, 128, 255)
    assert _px(load_image((t * 255)[None]), 0, 0) == (0, 128, 255)
    assert _px(load_image(t.to(torch.bfloat16)), 0, 0)[2] == 255
    assert _px(load_image(torch.tensor([[[0, 128, 255]]], dtype=torch.uint8).permute(2, 0, 1)), 0, 0) == (0, 128, 255)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[[np.nan, 0.0, 0.0]]], np.float32), "NaN/Inf"),
        (torch.tensor([np.inf, 0.0, 0.0])[:, None, None], "NaN/Inf"),
        (np.random.default_rng(0).normal(size=(4, 4, 3)).astype(np.float32) * 2, "normalised"),
        (np.full((2, 2, 3), -5, np.int32), "uint8"),
        (np.zeros((3, 8, 8), np.uint8), "channels last"),
        (np.zeros((8, 8, 5), np.uint8), "got shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (torch.zeros(2, 3, 4, 4), "one image"),
        ([1, 2, 3], "pass a file path"),
    ],
)
def test_bad_arrays_refused_with_what_to_pass(bad, match):
    with pytest.raises(InputError, match=match) as info:
        load_image(bad)
    assert "pass" in str(info.value) and "\n" not in str(info.value)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(20000, 20000))
    with pytest.raises(InputError, match="decompression bomb.*at most 67108864 pixels") as info:
        load_image(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, Image.DecompressionBombError)  # PIL's error, caught
    # PIL's warning band (between its limit and twice it) is refused too, not warned about
    path.write_bytes(png_declaring(10000, 10000))
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(path, max_pixels=10**9)
    # past mmcam's limit but below PIL's: refused from the header, before decoding
    path.write_bytes(png_declaring(8200, 8200))
    with pytest.raises(InputError, match="8200x8200 = 67240000 pixels, more than the limit.*MAX_PIXELS"):
        load_image(path)
    with pytest.raises(InputError, match="cannot read image"):  # allowed, then the body is short
        load_image(path, max_pixels=10**8)


def test_pixel_limit_applies_to_arrays_and_is_documented():
    assert MAX_PIXELS >= 8192 * 8192  # a 64-megapixel photo passes
    with pytest.raises(InputError, match="more than the limit of 100"):
        load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=100)


def test_corrupt_and_truncated_files_give_one_clear_error(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    data = good.read_bytes()
    cases = {
        "truncated.png": data[: len(data) // 2],
        "random.jpg": np.random.default_rng(1).integers(0, 255, 500, np.uint8).tobytes(),
        "empty.png": b"",
        "text.png": b"not an image at all\n",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(InputError, match="cannot read image.*pass a readable") as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value), name
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)


def test_real_photos_load_as_viewed():
    import skimage.data
    import ultralytics

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    img = load_image(bus)
    assert img.size == (810, 1080) and img.mode == "RGB"
    with Image.open(bus) as raw:
        assert np.array_equal(np.asarray(img), np.asarray(raw.convert("RGB")))
    astronaut = skimage.data.astronaut()
    assert np.array_equal(np.asarray(load_image(astronaut)), astronaut)
    coffee = skimage.data.coffee().astype(np.float64) / 255  # float in [0, 1]
    assert np.abs(np.asarray(load_image(coffee)).astype(int) - skimage.data.coffee()).max() <= 1


def test_unique_stems():
    names = unique_stems([Path("a/cat.png"), Path("a/cat.jpg"), Path("a/dog.png"), Path("b/cat.png")])
    assert names == {Path("a/cat.png"): "cat-png", Path("a/cat.jpg"): "cat-jpg", Path("a/dog.png"): "dog", Path("b/cat.png"): "cat-png-2"}
