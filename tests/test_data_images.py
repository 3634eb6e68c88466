"""Robust image loading: every kind of file is converted correctly or refused with a reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from iterview.data.images import ImageReadError, is_plain_rgb, load_image, load_rgb


def _pattern(height: int = 12, width: int = 16) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 20 % 256, cols * 15 % 256, (rows + cols) * 7 % 256], axis=-1).astype(np.uint8)


def test_rgb_png_is_read_unchanged(tmp_path):
    pixels = _pattern()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert is_plain_rgb(tmp_path / "a.png")


def test_grayscale_is_repeated_to_three_channels(tmp_path):
    grey = _pattern()[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = np.asarray(load_image(tmp_path / "g.png"))
    assert rgb.shape == (*grey.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)


def test_rgba_keeps_alpha_and_load_rgb_drops_it_without_compositing(tmp_path):
    pixels = _pattern()
    alpha = np.zeros(pixels.shape[:2], np.uint8)
    alpha[:, ::2] = 255
    Image.fromarray(np.dstack([pixels, alpha])).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image)[..., 3], alpha)
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "a.png")), pixels)


def test_palette_goes_through_its_palette(tmp_path):
    indices = (np.arange(12 * 16).reshape(12, 16) % 4).astype(np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 200, 10]
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(tmp_path / "p.png")
    rgb = np.asarray(load_image(tmp_path / "p.png"))
    expected = np.asarray(palette, np.uint8).reshape(4, 3)[indices]
    np.testing.assert_array_equal(rgb, expected)


def test_palette_transparency_becomes_alpha(tmp_path):
    indices = (np.arange(8 * 8).reshape(8, 8) % 2).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    loaded = np.asarray(load_image(tmp_path / "p.png"))
    np.testing.assert_array_equal(loaded[..., 3], np.where(indices == 0, 0, 255))
    np.testing.assert_array_equal(loaded[indices == 1, :3], np.tile([200, 100, 50], ((indices == 1).sum(), 1)))


def test_cmyk_jpeg_is_colour_converted_not_channel_sliced(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:, :8] = (0, 255, 255, 0)  # red
    cmyk[:, 8:] = (255, 0, 255, 0)  # green
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    rgb = np.asarray(load_image(tmp_path / "c.jpg")).astype(int)
    np.testing.assert_allclose(rgb[4:12, 1:6].mean(axis=(0, 1)), [255, 0, 0], atol=12)
    np.testing.assert_allclose(rgb[4:12, 10:15].mean(axis=(0, 1)), [0, 255, 0], atol=12)
    assert not is_plain_rgb(tmp_path / "c.jpg")


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(4, axis=0)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_sixteen_bit_rgb_is_within_one_level(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), values[..., ::-1])
    rgb = np.asarray(load_image(tmp_path / "c16.png")).astype(float)
    assert np.abs(rgb - values / 257).max() <= 1.0


def test_exif_orientation_is_applied(tmp_path):
    pixels = _pattern(10, 20)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise
    image.save(tmp_path / "r.jpg", exif=exif, quality=100, subsampling=0)
    stored = np.asarray(Image.open(tmp_path / "r.jpg")).astype(int)
    loaded = np.asarray(load_image(tmp_path / "r.jpg")).astype(int)
    assert loaded.shape == (20, 10, 3)
    np.testing.assert_array_equal(loaded, np.rot90(stored, k=-1))
    assert not is_plain_rgb(tmp_path / "r.jpg")


def test_tiny_image_is_refused_with_its_size(tmp_path):
    Image.fromarray(_pattern(6, 9)).save(tmp_path / "t.png")
    with pytest.raises(ImageReadError, match=r"too small: 9x6"):
        load_image(tmp_path / "t.png", min_size=8)
    assert load_image(tmp_path / "t.png", min_size=6).size == (9, 6)


def test_corrupt_and_truncated_files_are_refused_with_a_reason(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError, match="unknown format") as error:
        load_image(tmp_path / "noise.jpg")
    assert error.value.path == tmp_path / "noise.jpg"
    big = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        load_image(tmp_path / "cut.png")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        load_image(tmp_path / "absent.png")
