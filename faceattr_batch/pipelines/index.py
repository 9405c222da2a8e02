"""Index a folder tree of UTKFace-style face images into one table (and a Parquet file).

``build_index(IndexOptions(root=...))`` lists the tree (``os.scandir``, never following directory
symlinks, so symlink loops cannot recurse), parses every image name with the grammar in ``labels``, and
optionally hashes (``hash=True``: content hash, 64-bit dHash, duplicate groups, label conflicts) and probes
(``probe=True``: width, height and mode from the header) each file in a process pool. Nothing about a single
file raises: a bad file is a row with an ``error``, a bad name is a row with ``status``/``reason``; only a
missing or unreadable root raises ``FaceattrError``. The library logs and returns; the CLI prints.
"""

from __future__ import annotations

import array
import hashlib
import io
import itertools
import logging
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import (
    AGE_BAND_NAMES,
    GENDERS,
    IMAGE_EXTENSIONS,
    RACES,
    STATUS_OK,
    STATUS_RECOVERED,
    STATUS_REJECTED,
    label_exprs,
    parse_frame,
)
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.atomic import replacing
from faceattr_batch.progress import progress_bar

log = logging.getLogger(__name__)

DHASH_BITS = 64
DEFAULT_NEAR_BITS = 4  # dHash Hamming distance of a near-duplicate candidate (re-encodes land at 0-4)
# Confirmation of a candidate: mean absolute difference of 16x16 gray thumbnails, 0..255. On the shared
# UTKFace chips the pairs split into <= 6 (same picture) and >= 15 (different faces), with few in between.
THUMB_SIDE = 16
DEFAULT_MAX_THUMB_DIFF = 8.0
_CHUNK = 256  # files per pool task: big enough to amortise IPC, small enough for a smooth progress bar
_IMAGE_PATTERN = r"(?i)(?:" + "|".join(ext.replace(".", r"\.") for ext in IMAGE_EXTENSIONS) + r")$"
_NON_UTF8 = "file name is not valid UTF-8 (path shows the bytes as \\x escapes)"


@dataclass(frozen=True)
class IndexOptions:
    root: Path
    hash: bool = False  # content hash + dHash -> dup_group, label_conflict
    probe: bool = False  # width, height, mode from the image header
    workers: int | None = None  # processes for hash/probe; None = all cores, 0 = in this process
    near_bits: int = DEFAULT_NEAR_BITS  # max dHash Hamming distance of a near-duplicate candidate
    max_thumb_diff: float = DEFAULT_MAX_THUMB_DIFF  # max thumbnail mean abs difference that confirms it
    progress: bool = False  # tqdm bar over hashed/probed files (the CLI turns it on)
    size: bool = True  # stat every file for size_bytes (the slow part of a plain index on huge trees)


@dataclass
class IndexResult:
    table: pl.DataFrame
    summary: dict = field(default_factory=dict)


@dataclass
class _Listing:
    """What the walk found: every file (flat, listing order) with its folder, plus what it skipped and why."""

    dirs: list[str] = field(default_factory=list)  # display form (relative, posix, UTF-8 safe), "" = root
    real_dirs: list[str] = field(default_factory=list)  # the real relative path (may hold surrogates)
    names: list[str] = field(default_factory=list)  # real file names, all folders, listing order
    dir_of: array.array = field(default_factory=lambda: array.array("I"))  # folder index of each name
    skipped: Counter = field(default_factory=Counter)
    unreadable_dirs: list[dict] = field(default_factory=list)

    def real_path(self, root: Path, row: int) -> str:
        return os.path.join(root, self.real_dirs[self.dir_of[row]], self.names[row])


def build_index(options: IndexOptions) -> IndexResult:
    """List, parse (and optionally hash/probe) every image under ``options.root``; see the module doc.

    Rows come in listing order (folder by folder, as the file system lists them): sorting a million paths
    would cost more than parsing them. Sort by ``path`` where an order matters.
    """
    started = time.perf_counter()
    root = _check_root(options.root)
    listing = _Listing()
    with _ChunkParser(listing) as parser:  # parses finished chunks in a thread while the walk goes on
        _walk(root, listing, parser.submit)
        # stat runs in forked children while the parser thread finishes
        sizes = _Sizes(root, listing) if options.size else None
    table, keep = parser.table, parser.keep
    if sizes is not None:
        table = table.with_columns(size_bytes=sizes.result().filter(keep))
    if options.hash or options.probe:
        table = _inspect_all(table, root, listing, options)
    if options.hash:
        table = add_dup_groups(table, options.near_bits, options.max_thumb_diff).drop("_thumb")
    table = table.drop("_row")
    summary = summarize(table, listing, root, options, time.perf_counter() - started)
    log.info("indexed %d images under %s in %.2f s", table.height, root, summary["seconds"])
    return IndexResult(table=table, summary=summary)


def write_index(result: IndexResult, path: Path | str) -> Path:
    """Write the table to Parquet atomically; root, counts, version go into the key-value metadata."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = result.summary
    metadata = {
        "faceattr_batch.version": __version__,
        "faceattr_batch.root": str(s.get("root", "")),
        "faceattr_batch.counts": json.dumps(_counts(s), default=str),
        "faceattr_batch.options": json.dumps(s.get("options", {}), default=str),
    }
    try:
        with replacing(path) as tmp:
            # polars writes the key-value metadata itself (importing pyarrow.parquet would add ~0.15 s to
            # start-up); lz4 writes a million rows in half zstd's time, for a ~20% larger file
            result.table.write_parquet(tmp, metadata=metadata, statistics=False, compression="lz4")
    except OSError as err:
        raise FaceattrError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _counts(summary: dict) -> dict:
    counts = {k: summary[k] for k in ("images", "status", "skipped") if k in summary}
    if "duplicates" in summary:
        counts["duplicates"] = {
            k: summary["duplicates"][k] for k in ("groups", "images_in_groups", "conflict_groups")
        }
    return counts


def read_index_metadata(path: Path | str) -> dict[str, str]:
    """The key-value metadata ``write_index`` stored (root, version, counts, options as JSON strings)."""
    raw = pl.read_parquet_metadata(path)
    return {k: v for k, v in raw.items() if k.startswith("faceattr_batch.")}


# --- listing ------------------------------------------------------------------------------------------------


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise FaceattrError(f"{root}: no such folder")
    if not root.is_dir():
        raise FaceattrError(f"{root}: not a folder")
    try:
        with os.scandir(root):
            pass
    except OSError as err:
        raise FaceattrError(f"{root}: cannot read the folder ({err.strerror or err})") from None
    return root.resolve()


_FLUSH = 1 << 17  # names per parse chunk


def _walk(root: Path, listing: _Listing, flush) -> None:
    """Every file below ``root`` (hidden folders and folder symlinks are not entered); never raises.

    ``flush(end)`` is called whenever ``listing.names[:end]`` is complete enough to parse.
    """
    stack = [("", "")]
    flushed = 0
    while stack:
        real_rel, shown_rel = stack.pop()
        index = len(listing.dirs)
        listing.dirs.append(shown_rel)
        listing.real_dirs.append(real_rel)
        names = listing.names
        start = len(names)
        try:
            with os.scandir(os.path.join(root, real_rel)) as entries:
                for entry in entries:
                    # d_type answers is_dir/is_file without a stat call, except for symlinks
                    if entry.is_file(follow_symlinks=False):
                        names.append(entry.name)
                        if len(names) - flushed >= _FLUSH:
                            listing.dir_of.extend(array.array("I", [index]) * (len(names) - start))
                            start = flushed = len(names)
                            flush(flushed)
                    elif entry.is_dir(follow_symlinks=False):
                        if entry.name.startswith("."):
                            listing.skipped["hidden folder"] += 1
                            continue
                        sub = f"{real_rel}/{entry.name}" if real_rel else entry.name
                        shown = _shown(entry.name)
                        stack.append((sub, f"{shown_rel}/{shown}" if shown_rel else shown))
                    else:
                        kind = _odd_entry(entry)
                        if kind is None:
                            names.append(entry.name)
                        else:
                            listing.skipped[kind] += 1
        except OSError as err:
            listing.unreadable_dirs.append({"path": shown_rel or ".", "reason": err.strerror or str(err)})
        listing.dir_of.extend(array.array("I", [index]) * (len(names) - start))
    flush(len(listing.names))


def _odd_entry(entry: os.DirEntry) -> str | None:
    """None for a symlink to a file (indexed), else why the entry is skipped."""
    try:
        if entry.is_symlink():
            if entry.is_dir():
                return "symlink to a folder (not followed)"
            if entry.is_file():
                return None
            return "broken symlink or symlink loop"
    except OSError:  # ELOOP and the like while following the link
        return "broken symlink or symlink loop"
    return "not a regular file"


def _shown(name: str) -> str:
    """A UTF-8-safe form of a name that may hold undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


class _ChunkParser:
    """Parses ``listing.names[done:end]`` in a thread while the walk lists on (polars releases the GIL).

    Result: ``table`` (image rows, listing order, with ``_row`` = position in the listing) and ``keep`` (one
    bool per listed file: is it an image row).
    """

    def __init__(self, listing: _Listing) -> None:
        import queue
        import threading

        self._listing = listing
        self._done = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._parts: list[pl.DataFrame] = []
        self._keeps: list[pl.Series] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="faceattr-index-parse", daemon=True)

    def __enter__(self) -> _ChunkParser:
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

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._parse(*job)
                except BaseException as err:  # re-raised in the caller's thread
                    self._error = err

    def _parse(self, start: int, end: int) -> None:
        listing = self._listing
        raw = listing.names[start:end]
        error = pl.lit(None, pl.String)
        try:
            names = pl.Series("name", raw, dtype=pl.String)
        except UnicodeEncodeError:
            shown = [_shown(n) for n in raw]
            bad = [i for i, (a, b) in enumerate(zip(shown, raw, strict=True)) if a != b]
            names = pl.Series("name", shown, dtype=pl.String)
            error = pl.when(pl.int_range(pl.len()).is_in(bad)).then(pl.lit(_NON_UTF8)).otherwise(error)
        frame = pl.DataFrame([names, pl.int_range(start, end, eager=True, dtype=pl.UInt32).alias("_row")]).with_columns(
            error=error
        )
        dir_of = listing.dir_of[start:end]
        if len(listing.dirs) > 1 or listing.dirs[0]:
            folder = pl.Series(listing.dirs, dtype=pl.String).gather(pl.Series(dir_of, dtype=pl.UInt32))
            frame = frame.with_columns(path=pl.when(folder == "").then("name").otherwise(folder + "/" + pl.col("name")))
            bad_dirs = [i for i, (a, b) in enumerate(zip(listing.dirs, listing.real_dirs, strict=True)) if a != b]
            if bad_dirs:
                in_bad = pl.Series(dir_of, dtype=pl.UInt32).is_in(bad_dirs)
                frame = frame.with_columns(error=pl.when(in_bad).then(pl.lit(_NON_UTF8)).otherwise("error"))
        else:
            frame = frame.with_columns(path=pl.col("name"))
        hidden = pl.col("name").str.starts_with(".")
        keep = frame.select((~hidden & pl.col("name").str.contains(_IMAGE_PATTERN)).alias("keep")).to_series()
        n_hidden = int(frame.select(hidden.sum()).item())
        if n_hidden:
            listing.skipped["hidden file"] += n_hidden
        if len(keep) - int(keep.sum()) - n_hidden:
            listing.skipped["not an image extension"] += len(keep) - int(keep.sum()) - n_hidden
        self._keeps.append(keep)
        self._parts.append(_parse(frame.filter(keep)))

    @property
    def table(self) -> pl.DataFrame:
        if not self._parts:
            return _parse(
                pl.DataFrame(schema={"_row": pl.UInt32, "name": pl.String, "path": pl.String, "error": pl.String})
            )
        return pl.concat(self._parts)

    @property
    def keep(self) -> pl.Series:
        return pl.concat(self._keeps) if self._keeps else pl.Series("keep", [], dtype=pl.Boolean)


def _parse(frame: pl.DataFrame) -> pl.DataFrame:
    table = parse_frame(frame, "name").with_columns(label_exprs())
    # readable labels as enums: dictionary-encoded, so a million rows cost little to hold and write
    table = table.with_columns(
        pl.col("gender_label").cast(pl.Enum(GENDERS)), pl.col("race_label").cast(pl.Enum(RACES))
    )
    return table.select(
        "_row",
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


class _Sizes:
    """File sizes (st_size, following symlinks; null when stat fails) of every listed file, listing order.

    stat costs ~1.5 us of kernel time per file here, the largest part of a plain index of a big tree, so on
    large trees it runs in forked children (plain ``os.fork``: they only call ``os.stat`` and write an array
    to a pipe, then ``_exit``) while the parent finishes parsing; small trees are stat'ed in this process.
    """

    PARALLEL_FROM = 50_000

    def __init__(self, root: Path, listing: _Listing) -> None:
        self._root = root
        self._listing = listing
        self._children: list[tuple[int, int]] = []
        self._local = None
        n = len(listing.names)
        n_proc = min(os.cpu_count() or 1, 4)
        if n < self.PARALLEL_FROM or n_proc < 2 or not hasattr(os, "fork"):
            self._local = self._stat(0, n)
            return
        bounds = [n * k // n_proc for k in range(n_proc + 1)]
        for lo, hi in itertools.pairwise(bounds):
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():  # 3.12+ warns on fork beside threads; the child only stats
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # child: stat a slice, send it, exit without running any cleanup
                code = 1
                try:
                    os.close(read_fd)
                    view = memoryview(self._stat(lo, hi).tobytes())
                    while view:
                        view = view[os.write(write_fd, view) :]
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_fd)
            self._children.append((pid, read_fd))

    def _stat(self, lo: int, hi: int) -> array.array:
        """Sizes of listing rows lo..hi; each folder is one run of rows, so one folder fd at a time."""
        out = array.array("q", bytes(8 * (hi - lo)))
        names, dir_of, stat = self._listing.names, self._listing.dir_of, os.stat
        current, fd = -1, -1
        try:
            for i in range(lo, hi):
                if dir_of[i] != current:
                    if fd >= 0:
                        os.close(fd)
                    current = dir_of[i]
                    try:
                        fd = os.open(os.path.join(self._root, self._listing.real_dirs[current]), os.O_RDONLY)
                    except OSError:
                        fd = -1
                try:
                    out[i - lo] = stat(names[i], dir_fd=fd).st_size if fd >= 0 else -1
                except OSError:
                    out[i - lo] = -1
        finally:
            if fd >= 0:
                os.close(fd)
        return out

    def result(self) -> pl.Series:
        if self._local is not None:
            sizes = self._local
        else:
            sizes = array.array("q")
            for pid, read_fd in self._children:
                with os.fdopen(read_fd, "rb") as pipe:
                    sizes.frombytes(pipe.read())
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    raise FaceattrError("a stat worker process failed; rerun with --no-size")
        raw = pl.Series("size_bytes", sizes, dtype=pl.Int64)
        return raw.to_frame().select(pl.when(raw >= 0).then(raw).alias("size_bytes")).to_series()


# --- hashing and probing ------------------------------------------------------------------------------------


def inspect_file(path: str, want_hash: bool, want_probe: bool) -> tuple:
    """(sha256 hex, dhash, 16x16 gray thumbnail, width, height, mode, error) of one file; never raises."""
    from PIL import Image

    sha = dhash = thumb = width = height = mode = None
    try:
        if want_hash:
            with open(path, "rb") as fh:
                data = fh.read()
            sha = hashlib.sha256(data).hexdigest()
            source = io.BytesIO(data)
        else:
            source = path
        with Image.open(source) as im:
            width, height = im.size
            mode = im.mode
            if want_hash:
                dhash, thumb = perceptual_hash(im)
    except Exception as err:  # one bad file is a row with a reason, never a crash
        return sha, dhash, thumb, width, height, mode, _reason(err)
    return sha, dhash, thumb, width, height, mode, None


def perceptual_hash(im) -> tuple[int, bytes]:
    """64-bit difference hash plus a 16x16 grayscale thumbnail (256 bytes) that confirms near matches.

    dHash: 9x8 grayscale, one bit per horizontal neighbour pair (left brighter than right). On aligned face
    chips dHash alone is weak (different faces collide at 0-2 bits), so candidate pairs are confirmed by the
    thumbnails' mean absolute difference. JPEGs decode at 1/2..1/8 scale in the DCT (``draft``): a 200x200
    chip costs a 50x50 decode.
    """
    from PIL import Image

    im.draft("L", (64, 64))
    gray = im.convert("L")
    px = gray.resize((9, 8), Image.Resampling.BOX, reducing_gap=2.0).tobytes()
    thumb = gray.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX, reducing_gap=2.0).tobytes()
    bits = 0
    for row in range(0, 72, 9):
        for col in range(row, row + 8):
            bits = (bits << 1) | (px[col] > px[col + 1])
    return bits, thumb


def _reason(err: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "cannot decode: not an image format Pillow knows"
    if isinstance(err, OSError) and err.strerror:
        return f"unreadable: {err.strerror}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "cannot decode: " + re.sub(r" at 0x[0-9a-f]+", "", text)


def _inspect_chunk(task: tuple[list[str], bool, bool]) -> list[tuple]:
    paths, want_hash, want_probe = task
    return [inspect_file(p, want_hash, want_probe) for p in paths]


def _inspect_all(table: pl.DataFrame, root: Path, listing: _Listing, options: IndexOptions) -> pl.DataFrame:

    paths = [listing.real_path(root, row) for row in table["_row"].to_list()]
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    tasks = [(c, options.hash, options.probe) for c in chunks]
    workers = (os.cpu_count() or 1) if options.workers is None else options.workers
    # a pool costs ~0.5 s to start: not worth it for a couple of chunks
    workers = min(workers, len(chunks)) if len(chunks) > 2 else 0
    results: list[tuple] = []
    with progress_bar(
        total=len(paths),
        unit="img",
        desc="hash" if options.hash else "probe",
        enabled=options.progress,
        leave=False,
    ) as bar:
        for part in _map(tasks, workers):
            results.extend(part)
            bar.update(len(part))
    columns = zip(*results, strict=True) if results else [[] for _ in range(7)]
    sha, dh, thumb, width, height, mode, error = (list(col) for col in columns)
    new = {}
    if options.hash:
        new["sha256"] = pl.Series(sha, dtype=pl.String)
        new["dhash"] = pl.Series(dh, dtype=pl.UInt64)
        new["_thumb"] = pl.Series(thumb, dtype=pl.Binary)  # dropped after grouping
    if options.probe:
        new["width"] = pl.Series(width, dtype=pl.Int32)
        new["height"] = pl.Series(height, dtype=pl.Int32)
        new["mode"] = pl.Series(mode, dtype=pl.String)
    file_error = pl.Series(error, dtype=pl.String)
    return table.with_columns(**new).with_columns(error=pl.coalesce(pl.col("error"), pl.lit(file_error)))


def _map(tasks: list, workers: int) -> Iterator[list[tuple]]:
    if workers <= 1:
        yield from map(_inspect_chunk, tasks)
        return
    import multiprocessing

    # spawn, not fork: this process runs polars' thread pool, and forking a threaded process can deadlock
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_inspect_chunk, tasks)


# --- duplicate groups ---------------------------------------------------------------------------------------


def add_dup_groups(
    table: pl.DataFrame, near_bits: int = DEFAULT_NEAR_BITS, max_thumb_diff: float = DEFAULT_MAX_THUMB_DIFF
) -> pl.DataFrame:
    """Add ``dup_group`` (every row has one; singletons their own), ``dup_size`` and ``label_conflict``.

    Exact duplicates share a sha256. Near duplicates have dHashes within ``near_bits`` Hamming distance and,
    when the table holds the ``_thumb`` column from hashing, thumbnails within ``max_thumb_diff``. Near pairs
    are found without comparing all pairs: split the 64 bits into ``near_bits + 2`` blocks; two hashes within
    ``near_bits`` differ in at most ``near_bits`` blocks, so at least two blocks agree exactly. Joining on
    every pair of blocks (15 joins for 4 bits) finds every candidate; popcount and thumbnails keep the true
    ones. Components come from union-find over those pairs; group ids follow each group's first path.
    """
    import numpy as np

    n = table.height
    parent = np.arange(n, dtype=np.int64)
    pairs = [_exact_pairs(table, "sha256")]
    thumbs = None
    if "_thumb" in table.columns:
        thumbs = _thumb_matrix(table["_thumb"])
    pairs.append(_near_pairs(table, near_bits, thumbs, max_thumb_diff))
    for left, right in pairs:
        _union_all(parent, left, right)
    roots = _find_all(parent)
    # group id = rank of the group's smallest path: the same ids whatever order the rows come in
    first_path = pl.col("path").min().over("_root")
    group = (
        table.select("path", _root=pl.Series(roots))
        .select(first_path.rank("dense").cast(pl.Int64) - 1)
        .to_series()
    )
    out = table.with_columns(dup_group=group)
    labels = pl.struct("age", "gender", "race")
    return out.with_columns(
        dup_size=pl.len().over("dup_group").cast(pl.Int32),
        label_conflict=(labels.n_unique().over("dup_group") > 1),
    )


def _exact_pairs(table: pl.DataFrame, column: str):
    """Star pairs (first row, other row) inside each group of equal non-null values."""
    import numpy as np

    frame = table.select(pl.col(column).alias("k")).with_row_index("i").drop_nulls("k")
    first = frame.group_by("k").agg(pl.col("i").min().alias("f"))
    joined = frame.join(first, on="k").filter(pl.col("i") != pl.col("f"))
    return joined["f"].to_numpy().astype(np.int64), joined["i"].to_numpy().astype(np.int64)


def _thumb_matrix(column: pl.Series):
    import numpy as np

    size = THUMB_SIDE * THUMB_SIDE
    blank = bytes(size)
    raw = b"".join(b if b is not None and len(b) == size else blank for b in column.to_list())
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)


def _near_pairs(table: pl.DataFrame, near_bits: int, thumbs, max_thumb_diff: float):
    import numpy as np

    frame = table.select(h="dhash", s="sha256").with_row_index("i").drop_nulls("h")
    # one row per distinct content: byte-identical files are joined by _exact_pairs already
    frame = frame.group_by("s", maintain_order=True).agg(pl.col("i").min(), pl.col("h").first())
    n_blocks = near_bits + 2
    edges = np.linspace(0, DHASH_BITS, n_blocks + 1).astype(int)
    masks = [((1 << int(hi)) - 1) ^ ((1 << int(lo)) - 1) for lo, hi in itertools.pairwise(edges)]
    found = []
    for a, b in itertools.combinations(masks, 2):
        keyed = frame.select("i", "h", k=pl.col("h") & pl.lit(a | b, dtype=pl.UInt64))
        joined = keyed.join(keyed, on="k", suffix="_r").filter(pl.col("i") < pl.col("i_r"))
        if joined.height:
            found.append(joined.select("i", "i_r", "h", "h_r"))
    if not found:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    cand = pl.concat(found).unique(["i", "i_r"])
    left = cand["i"].to_numpy().astype(np.int64)
    right = cand["i_r"].to_numpy().astype(np.int64)
    keep = np.bitwise_count(cand["h"].to_numpy() ^ cand["h_r"].to_numpy()) <= near_bits
    left, right = left[keep], right[keep]
    if thumbs is not None and len(left):
        diff = np.empty(len(left), dtype=np.float32)
        for start in range(0, len(left), 65536):  # bounded memory on millions of candidates
            sl = slice(start, start + 65536)
            a_px = thumbs[left[sl]].astype(np.int16)
            diff[sl] = np.abs(a_px - thumbs[right[sl]]).mean(axis=1)
        keep = diff <= max_thumb_diff
        left, right = left[keep], right[keep]
    return left, right


def _union_all(parent, left, right) -> None:
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)


def _find(parent, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return int(root)


def _find_all(parent):
    """Root of every element, vectorised: repeat parent[parent] until it stops changing."""
    import numpy as np

    roots = parent.copy()
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


# --- summary ------------------------------------------------------------------------------------------------


def summarize(table: pl.DataFrame, listing: _Listing, root: Path, options: IndexOptions, seconds: float) -> dict:
    def counts(column: str, order: tuple[str, ...]) -> dict[str, int]:
        got = dict(table[column].value_counts().iter_rows()) if table.height else {}
        out = {k: int(got.get(k, 0)) for k in order}
        if got.get(None):
            out["unknown"] = int(got[None])
        return out

    def listed(status: str) -> list[dict]:
        rows = table.filter(pl.col("status") == status).select("path", "reason")
        return rows.to_dicts()

    summary: dict = {
        "root": str(root),
        "version": __version__,
        "options": {"hash": options.hash, "probe": options.probe, "near_bits": options.near_bits},
        "images": table.height,
        "status": counts("status", (STATUS_OK, STATUS_RECOVERED, STATUS_REJECTED)),
        "gender": counts("gender_label", GENDERS),
        "race": counts("race_label", RACES),
        "age_band": counts("age_band", AGE_BAND_NAMES),
        "rejected": listed(STATUS_REJECTED),
        "recovered": listed(STATUS_RECOVERED),
        "skipped": dict(sorted(listing.skipped.items())),
        "unreadable_dirs": listing.unreadable_dirs,
        "errors": dict(Counter(e for e in table["error"].to_list() if e is not None)) if table.height else {},
    }
    if "size_bytes" in table.columns:
        summary["total_bytes"] = int(table["size_bytes"].sum() or 0)
    if "dup_group" in table.columns:
        summary["duplicates"] = _duplicate_summary(table)
    summary["seconds"] = round(seconds, 3)
    return summary


def _duplicate_summary(table: pl.DataFrame) -> dict:
    """Counts of duplicate groups, and every group whose labels disagree (paths with their age_gender_race)."""
    by_path = pl.col("path")
    label = pl.format("{}_{}_{}", "age", "gender", "race")
    groups = (
        table.filter(pl.col("dup_size") > 1)
        .group_by("dup_group")
        .agg(
            by_path.sort(),
            label.sort_by(by_path).alias("labels"),
            pl.col("sha256").n_unique().alias("contents"),
            pl.col("label_conflict").first(),
        )
        .sort("dup_group")
    )
    conflicts = groups.filter(pl.col("label_conflict")).select("dup_group", "path", "labels")
    return {
        "groups": groups.height,
        "images_in_groups": int(groups["path"].list.len().sum() or 0) if groups.height else 0,
        "byte_identical_groups": int((groups["contents"] == 1).sum()) if groups.height else 0,
        "conflict_groups": conflicts.height,
        "conflicts": [
            {"dup_group": group, "paths": paths, "labels": labels} for group, paths, labels in conflicts.iter_rows()
        ],
    }
