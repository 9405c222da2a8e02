"""One image file -> RGB uint8 pixels, or a ``DecodeError`` whose message is the row's error reason.

Handles EXIF orientation, every Pillow mode (grayscale, palette, RGBA, CMYK, 16-bit), decompression bombs,
truncated and non-image files. JPEGs are DCT-scaled while decoding when the target is much smaller (draft
mode), which is most of the speed of a chip pipeline. No torch here: workers import this module.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 120_000_000  # larger than any camera photo (8000x6000 = 48 Mpx), far below a bomb


class DecodeError(Exception):
    """The file cannot become pixels; ``str(err)`` is a short reason for the row's ``error`` column."""


def read_rgb(
    path: str | os.PathLike, draft_to: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, as_stored: bool = False
):
    """Decode ``path`` to an H x W x 3 uint8 array, EXIF orientation applied, transparency composited on white.

    ``draft_to``: the caller will shrink the image to about this many pixels on its short side, so a JPEG may
    be decoded at 1/2, 1/4 or 1/8 scale as long as its short side stays >= ``draft_to``. ``as_stored``: the pixels
    as Pillow's ``convert("RGB")`` gives them, which is how pytorch-fid reads a file: no EXIF turn, transparency
    dropped (the colour under it kept).
    """
    return read_rgb_scaled(path, draft_to, max_pixels, as_stored)[0]


def read_rgb_scaled(
    path: str | os.PathLike, draft_to: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, as_stored: bool = False
):
    """``read_rgb``'s pixels and the file's full-size pixels per returned pixel, (x, y): (1, 1) unless a JPEG was
    DCT-scaled, so coordinates found in the pixels map back to the full image."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89.5 Mpx (a 100 Mpx camera frame): ``max_pixels`` is the guard here, and Pillow's own
            # error (above twice that) is caught below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise DecodeError(f"decompression bomb guard: {width}x{height} exceeds {max_pixels} pixels")
                if draft_to is not None and im.format == "JPEG":
                    # draft keeps both sides >= the requested size; ask by aspect so the short side stays >= target
                    scale = draft_to / min(width, height)
                    im.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                factors = (width / im.size[0], height / im.size[1])
                turned = im if as_stored else ImageOps.exif_transpose(im)
                if turned.size != im.size:  # a quarter turn swaps the axes
                    factors = factors[::-1]
                return _to_rgb(turned, composite=not as_stored), factors
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file not found (or a broken symlink)") from None
    except IsADirectoryError:
        raise DecodeError("is a directory") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except UnidentifiedImageError:
        size = _size_or_none(path)
        raise DecodeError("empty file (0 bytes)" if size == 0 else "not an image (unidentified format)") from None
    except Image.DecompressionBombError as err:
        raise DecodeError(f"decompression bomb guard: {err}".split(". ")[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncation and corrupt streams as OSError/SyntaxError with a readable message.
        message = str(err) or type(err).__name__
        raise DecodeError(f"unreadable image: {message}") from None


def _size_or_none(path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def wide_gray(im: Image.Image) -> np.ndarray:
    """A 16-bit or 32-bit grayscale image (``WIDE_GRAY_MODES``) as H x W uint8: Pillow's ``convert`` clips these at
    255 (a 16-bit photo turns white), so they are rescaled by hand."""
    values = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if im.mode == "F":
        top = max(float(values.max(initial=0)), 1.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image, composite: bool = True) -> np.ndarray:
    mode = im.mode
    if mode in WIDE_GRAY_MODES:
        return np.repeat(wide_gray(im)[:, :, None], 3, axis=2)
    if composite and (mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def center_square(pixels: np.ndarray) -> np.ndarray:
    """The largest centred square of an H x W x 3 array (chips are square; this only trims odd ones)."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[top : top + side, left : left + side]


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Square ``size`` x ``size`` with Pillow's antialiased bilinear filter."""
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def load_chip(path: str | os.PathLike, size: int) -> np.ndarray:
    """The attribute model's input pixels: centre square, ``size`` x ``size`` x 3 uint8 (training and predict)."""
    return chip_pixels(read_rgb(path, draft_to=size), size)


def chip_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """``load_chip`` from pixels already decoded (with ``draft_to=size``, for the same values)."""
    return resize(center_square(pixels), size)
