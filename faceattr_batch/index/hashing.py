"""Per-file content hash, perceptual hash, header probe and quality measures of the index's rows, in a process pool.

Nothing about one file raises: a file that does not open is a row with an ``error`` and nulls. Pillow is
imported on first use: a plain ``index`` never needs it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator

import polars as pl

from faceattr_batch.data.batches import process_pool
from faceattr_batch.data.decode import DecodeError, load_chip
from faceattr_batch.data.image_quality import QUALITY_COLUMNS, QUALITY_SIDE, measure
from faceattr_batch.data.inputs import Listing
from faceattr_batch.progress import progress_bar

THUMB_SIDE = 16  # side of the grayscale thumbnail that confirms a near-duplicate candidate
CHUNK = 256  # files per pool task: big enough to amortise IPC, small enough for a smooth progress bar


def inspect_file(path: str, want_hash: bool, want_probe: bool, want_quality: bool = False) -> tuple:
    """(sha256 hex, dhash, 16x16 gray thumbnail, width, height, mode, quality measures, error) of one file; never
    raises."""
    from PIL import Image

    sha = dhash = thumb = width = height = mode = quality = None
    try:
        if want_hash:
            with open(path, "rb") as fh:
                data = fh.read()
            sha = hashlib.sha256(data).hexdigest()
            source = io.BytesIO(data)
        else:
            source = path
        if want_hash or want_probe:
            with Image.open(source) as im:
                width, height = im.size
                mode = im.mode
                if want_hash:
                    dhash, thumb = perceptual_hash(im)
        if want_quality:
            quality = measure(load_chip(path, QUALITY_SIDE))
    except DecodeError as err:
        return sha, dhash, thumb, width, height, mode, quality, f"cannot decode: {err}"
    except Exception as err:  # one bad file is a row with a reason, never a crash
        return sha, dhash, thumb, width, height, mode, quality, _reason(err, path)
    return sha, dhash, thumb, width, height, mode, quality, None


def perceptual_hash(im) -> tuple[int, bytes]:
    """64-bit difference hash plus a 16x16 grayscale thumbnail (256 bytes) that confirms near matches.

    dHash: 9x8 grayscale, one bit per horizontal neighbour pair (left brighter than right). On aligned face
    chips dHash alone is weak (different faces collide at 0-2 bits), so candidate pairs are confirmed by the
    thumbnails' mean absolute difference. JPEGs decode at 1/2..1/8 scale in the DCT (``draft``), the smallest
    of at least 64 px: a 200x200 chip costs a 100x100 decode.
    """
    from PIL import Image

    from faceattr_batch.data.decode import WIDE_GRAY_MODES, wide_gray

    im.draft("L", (64, 64))
    gray = Image.fromarray(wide_gray(im)) if im.mode in WIDE_GRAY_MODES else im.convert("L")
    px = gray.resize((9, 8), Image.Resampling.BOX, reducing_gap=2.0).tobytes()
    thumb = gray.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX, reducing_gap=2.0).tobytes()
    bits = 0
    for row in range(0, 72, 9):
        for col in range(row, row + 8):
            bits = (bits << 1) | (px[col] > px[col + 1])
    return bits, thumb


def _reason(err: Exception, path: str) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):  # the words of predict's and fid's error rows (data.decode)
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        return "cannot decode: " + ("empty file (0 bytes)" if empty else "not an image (unidentified format)")
    if isinstance(err, OSError) and err.strerror:
        return f"unreadable: {err.strerror}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "cannot decode: " + re.sub(r" at 0x[0-9a-f]+", "", text)


def inspect_rows(
    table: pl.DataFrame,
    root: str | os.PathLike,
    listing: Listing,
    *,
    want_hash: bool,
    want_probe: bool,
    want_quality: bool = False,
    workers: int | None,
    progress: bool,
) -> pl.DataFrame:
    """``table`` plus sha256, dhash and ``_thumb`` (``want_hash``), width, height, mode (``want_probe``) and the
    ``QUALITY_COLUMNS`` (``want_quality``); a file's error joins the row's ``error``. ``workers``: processes (None:
    all cores, 0: this process)."""
    paths = [listing.real_path(root, row) for row in table["_row"].to_list()]
    tasks = [(paths[i : i + CHUNK], want_hash, want_probe, want_quality) for i in range(0, len(paths), CHUNK)]
    processes = (os.cpu_count() or 1) if workers is None else workers
    processes = min(processes, len(tasks)) if len(tasks) > 2 else 0  # a pool is not worth it for two chunks
    results: list[tuple] = []
    desc = "hash" if want_hash else "quality" if want_quality else "probe"
    with progress_bar(total=len(paths), unit="img", desc=desc, enabled=progress, leave=False) as bar:
        for part in _map(tasks, processes):
            results.extend(part)
            bar.update(len(part))
    columns = zip(*results, strict=True) if results else [[] for _ in range(8)]
    sha, dhash, thumb, width, height, mode, quality, error = (list(col) for col in columns)
    new = {}
    if want_hash:
        new["sha256"] = pl.Series(sha, dtype=pl.String)
        new["dhash"] = pl.Series(dhash, dtype=pl.UInt64)
        new["_thumb"] = pl.Series(thumb, dtype=pl.Binary)  # dropped after grouping
    if want_probe:
        new["width"] = pl.Series(width, dtype=pl.Int32)
        new["height"] = pl.Series(height, dtype=pl.Int32)
        new["mode"] = pl.Series(mode, dtype=pl.String)
    if want_quality:
        for i, name in enumerate(QUALITY_COLUMNS):
            new[name] = pl.Series([None if q is None else q[i] for q in quality], dtype=pl.Float32)
    file_error = pl.Series(error, dtype=pl.String)
    return table.with_columns(**new).with_columns(error=pl.coalesce(pl.col("error"), pl.lit(file_error)))


def _inspect_chunk(task: tuple[list[str], bool, bool, bool]) -> list[tuple]:
    paths, *wants = task
    return [inspect_file(p, *wants) for p in paths]


def _map(tasks: list, processes: int) -> Iterator[list[tuple]]:
    if processes <= 1:
        yield from map(_inspect_chunk, tasks)
        return
    with process_pool(processes) as pool:
        yield from pool.map(_inspect_chunk, tasks)
