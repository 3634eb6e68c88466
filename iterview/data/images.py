"""Robust image reading: any common file becomes an upright 8-bit RGB(A) image, or a clear reason why not.

Conversions (the official loader only repeats 1-channel images and drops a 4th channel, which reads palette
indices as grey levels and CMYK's C, M, Y as R, G, B):
- grayscale (1, L) is repeated to RGB; 16-bit grayscale (I;16*, I) is scaled by 1/257;
- alpha (RGBA, LA, PA, palette transparency) is kept as RGBA and never composited: the official loader resizes
  the RGBA image (Pillow resamples premultiplied, so transparent pixels lend no colour) and drops alpha after;
- palette images go through their palette; CMYK and YCbCr through Pillow's colour conversion;
- 16-bit RGB PNGs keep Pillow's 8-bit reading (the high byte, within one level of rounding);
- the EXIF orientation is applied, so the image is upright (as depth estimators that read with OpenCV see it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """An image that cannot be used; `reason` is a short human-readable cause."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def is_image_file(path: str | Path) -> bool:
    """True for a file whose extension is one of IMAGE_EXTENSIONS (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any supported mode to RGB, or RGBA if it has transparency."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if mode in ("1", "L", "P", "RGBX", "CMYK", "YCbCr"):
        return image.convert("RGB")
    raise ValueError(f"unsupported image mode {mode!r}")


def load_image(path: str | Path, min_size: int = 1) -> Image.Image:
    """Read an image file as an upright Pillow image in mode RGB, or RGBA if it has transparency.

    Raises FileNotFoundError if the file is missing and ImageReadError (a ValueError) with a reason for an
    unreadable, corrupt, truncated or unsupported file, or one whose shorter side is below `min_size` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            converted = to_rgb_or_rgba(upright)
            converted.load()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image (unknown format)") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageReadError(path, f"corrupt, truncated or unsupported: {error}") from None
    if min(converted.size) < min_size:
        width, height = converted.size
        raise ImageReadError(path, f"too small: {width}x{height}, shorter side below {min_size} px")
    return converted


def load_rgb(path: str | Path, min_size: int = 1) -> Image.Image:
    """load_image with any alpha dropped: (H, W, 3) uint8 RGB, what a depth estimator sees."""
    return load_image(path, min_size).convert("RGB")


def is_plain_rgb(path: str | Path) -> bool:
    """True if the file is an upright RGB(A) JPEG or PNG that load_image returns unchanged (safe to copy)."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            return image.format in ("JPEG", "PNG") and image.mode in ("RGB", "RGBA") and orientation == 1
    except (OSError, SyntaxError, ValueError):
        return False
