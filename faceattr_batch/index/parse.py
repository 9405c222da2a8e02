"""Listed file names -> the index's image rows, parsed in a thread while the walk still lists."""

from __future__ import annotations

import queue
import threading

import polars as pl

from faceattr_batch.data.inputs import Listing, display_path
from faceattr_batch.data.labels import IMAGE_EXTENSIONS, label_exprs, parse_frame

IMAGE_PATTERN = r"(?i)(?:" + "|".join(ext.replace(".", r"\.") for ext in IMAGE_EXTENSIONS) + r")$"
NON_UTF8 = "file name is not valid UTF-8 (path shows the bytes as \\x escapes)"
COLUMNS = (
    "_row",  # position in the listing, dropped once sizes and hashes are joined
    "path",
    "name",
    "age",
    "gender",
    "race",
    "gender_label",
    "race_label",
    "age_band",
    "captured_at",
    "status",
    "reason",
    "error",
)


class ChunkParser:
    """Parses ``listing.names[done:end]`` in a thread while the walk lists on (polars releases the GIL).

    Give ``submit`` as the walk's ``flush``. Result: ``table`` (image rows, listing order, with ``_row``) and
    ``keep`` (one bool per listed file: is it an image row).
    """

    def __init__(self, listing: Listing) -> None:
        self._listing = listing
        self._done = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._parts: list[pl.DataFrame] = []
        self._keeps: list[pl.Series] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="faceattr-index-parse", daemon=True)

    def __enter__(self) -> ChunkParser:
        self._thread.start()
        return self

    def submit(self, end: int) -> None:
        if end > self._done:
            self._queue.put((self._done, end))
            self._done = end

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    @property
    def table(self) -> pl.DataFrame | None:
        """The image rows in listing order; None when the listing holds no image file."""
        parts = [part for part in self._parts if part.height]
        return pl.concat(parts) if parts else None

    @property
    def keep(self) -> pl.Series:
        return pl.concat(self._keeps) if self._keeps else pl.Series("keep", [], dtype=pl.Boolean)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._parse(*job)
                except BaseException as err:  # re-raised in the caller's thread
                    self._error = err

    def _parse(self, start: int, end: int) -> None:
        frame = _named_rows(self._listing, start, end)
        hidden = pl.col("name").str.starts_with(".")
        keep = frame.select((~hidden & pl.col("name").str.contains(IMAGE_PATTERN)).alias("keep")).to_series()
        n_hidden = int(frame.select(hidden.sum()).item())
        if n_hidden:
            self._listing.skipped["hidden file"] += n_hidden
        if len(keep) - int(keep.sum()) - n_hidden:
            self._listing.skipped["not an image extension"] += len(keep) - int(keep.sum()) - n_hidden
        self._keeps.append(keep)
        self._parts.append(parse_rows(frame.filter(keep)))


def _named_rows(listing: Listing, start: int, end: int) -> pl.DataFrame:
    """``_row``, ``name``, ``path`` (relative, UTF-8 safe) and ``error`` (undecodable names) of listing rows."""
    raw = listing.names[start:end]
    error = pl.lit(None, pl.String)
    try:
        names = pl.Series("name", raw, dtype=pl.String)
    except UnicodeEncodeError:
        shown = [display_path(n) for n in raw]
        bad = [i for i, (a, b) in enumerate(zip(shown, raw, strict=True)) if a != b]
        names = pl.Series("name", shown, dtype=pl.String)
        error = pl.when(pl.int_range(pl.len()).is_in(bad)).then(pl.lit(NON_UTF8)).otherwise(error)
    rows = pl.int_range(start, end, eager=True, dtype=pl.UInt32).alias("_row")
    frame = pl.DataFrame([names, rows]).with_columns(error=error)
    # the walker may be appending a folder now, to dirs and then to real_dirs: read as many as real_dirs holds (every
    # flushed row's folder is among them)
    count = len(listing.real_dirs)
    dirs, real_dirs = listing.dirs[:count], listing.real_dirs[:count]
    if len(dirs) == 1 and not dirs[0]:  # one flat folder: the path is the name
        return frame.with_columns(path=pl.col("name"))
    dir_of = pl.Series(listing.dir_of[start:end], dtype=pl.UInt32)
    folder = pl.Series(dirs, dtype=pl.String).gather(dir_of)
    frame = frame.with_columns(path=pl.when(folder == "").then("name").otherwise(folder + "/" + pl.col("name")))
    bad_dirs = [i for i, (a, b) in enumerate(zip(dirs, real_dirs, strict=True)) if a != b]
    if bad_dirs:
        frame = frame.with_columns(error=pl.when(dir_of.is_in(bad_dirs)).then(pl.lit(NON_UTF8)).otherwise("error"))
    return frame


def parse_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The index columns (labels as codes plus Enum labels, status, reason) of named rows, in ``COLUMNS`` order."""
    return parse_frame(frame, "name").with_columns(label_exprs()).select(COLUMNS)
