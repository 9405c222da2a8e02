"""The resize that is part of the FID metric (clean-fid keeps it apart from the features for this reason).

pytorch-fid's default preprocessing: RGB uint8 -> /255 -> bilinear resize to 299 x 299 (as
``F.interpolate(mode="bilinear", align_corners=False)``, no antialias) -> 2x - 1. ``resize_to`` first shrinks every
image to resize_to x resize_to with an area (box) filter, to compare a generator with real data at its own
resolution. No torch here: decode workers run this.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from faceattr_batch.data.decode import read_rgb

INPUT_SIZE = 299  # the FID Inception's input side


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # torch's upsample_bilinear2d (align_corners=False) index/weight rule as its CPU kernel computes it: float32,
    # with scale * (i + 0.5) - 0.5 fused (one rounding, emulated in float64), which makes the weights bit-equal
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)).astype(np.float64)
    source = np.maximum((np.float64(scale) * centres - 0.5).astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    lam1 = np.clip(source - low.astype(np.float32), 0, 1).astype(np.float32)
    return low, high, (np.float32(1) - lam1).astype(np.float32), lam1


def bilinear_resize(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """H x W x C float32 -> C x size x size: ``F.interpolate(mode='bilinear', align_corners=False)`` to 1 ulp."""
    height, width = image.shape[:2]
    planar = np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1))
    w_low, w_high, w0, w1 = _bilinear_taps(width, size)
    rows = planar[:, :, w_low] * w0 + planar[:, :, w_high] * w1  # along the width first, as torch's kernel
    h_low, h_high, h0, h1 = _bilinear_taps(height, size)
    return rows[:, h_low, :] * h0[:, None] + rows[:, h_high, :] * h1[:, None]


def area_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` uint8 with Pillow's box (area-average) filter."""
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX))


def load_for_inception(path: str, resize_to: int | None = None) -> np.ndarray:
    """One file -> the network's input, 3 x 299 x 299 float32 in [-1, 1] (runs in decode workers); decoded as
    pytorch-fid decodes it (``as_stored``), so a camera photo or a transparent PNG gives its number."""
    pixels = read_rgb(path, as_stored=True)
    if resize_to:
        pixels = area_resize(pixels, resize_to)
    scaled = pixels.astype(np.float32) / np.float32(255)
    return bilinear_resize(scaled) * np.float32(2) - np.float32(1)
