"""How a picture looks, in four numbers (``index --quality``): columns to slice a model's errors by (``report --labels
index.parquet --slice-by brightness:4``) and to find the dark, flat, blurred or grey pictures of a dataset.

Measured on the picture's centred square at 64 x 64 (``data.decode.load_chip``: EXIF turn applied, JPEGs decoded
small in the DCT), so a 200 px chip and a 4,000 px photo are measured at one scale:

- ``brightness``: mean luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) / 255; 0 black, 1 white;
- ``contrast``: the standard deviation of luma / 255 (RMS contrast);
- ``sharpness``: the variance of the 4-neighbour Laplacian of luma / 255; blur lowers it, noise raises it;
- ``colourfulness``: Hasler and Suesstrunk's M (2003) on 0-255 RGB, sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2
  + mean(yb)^2) with rg = R - G, yb = (R + G) / 2 - B: 0 for a grey picture; they rate 15 "slightly colourful"
  and 33 "moderately".
"""

from __future__ import annotations

import numpy as np
import polars as pl

QUALITY_COLUMNS = ("brightness", "contrast", "sharpness", "colourfulness")
QUALITY_SIDE = 64
# below this a picture counts as grey in the summary: a black-and-white photo saved as an RGB JPEG keeps a little
# chroma noise (of every sixth shared UTKFace chip, 3,162: 82 measure under 1, 13 from 1 to 5, 11 from 5 to 10, the
# median 41.9)
GREY_COLOURFULNESS = 5.0
LUMA = np.array([0.299, 0.587, 0.114])


def measure(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """(brightness, contrast, sharpness, colourfulness) of an H x W x 3 uint8 array (the module's definitions)."""
    rgb = pixels.astype(np.float64)
    luma = rgb @ LUMA / 255
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = red - green, (red + green) / 2 - blue
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return float(luma.mean()), float(luma.std()), float(laplacian.var()), float(colourfulness)


def quality_summary(table: pl.DataFrame) -> dict:
    """Per quality measure its 5th, 50th and 95th percentile over the measured images, and how many are grey."""
    percentiles = {"p5": 0.05, "median": 0.5, "p95": 0.95}
    measured = table.drop_nulls(QUALITY_COLUMNS[0])
    summary = {
        name: {key: measured[name].quantile(q, "linear") for key, q in percentiles.items()} for name in QUALITY_COLUMNS
    }
    return summary | {
        "measured": measured.height,
        "grey": int((measured["colourfulness"] < GREY_COLOURFULNESS).sum()),
        "grey_below": GREY_COLOURFULNESS,
    }
