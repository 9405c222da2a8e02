"""Index a folder tree of UTKFace-style face images into one table (and a Parquet file).

``build_index(IndexOptions(root=...))`` lists the tree (``os.scandir``, never following directory
symlinks, so symlink loops cannot recurse), parses every image name with the grammar in ``labels``, and
optionally hashes (``hash=True``: content hash, 64-bit dHash, duplicate groups, label conflicts) and probes
(``probe=True``: width, height and mode from the header) each file in a process pool. Nothing about a single
file raises: a bad file is a row with an ``error``, a bad name is a row with ``status``/``reason``; only a
missing or unreadable root raises ``FaceattrError``. The library logs and returns; the CLI prints.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.errors import FaceattrError
from faceattr_batch.labels import (
    AGE_BAND_NAMES,
    GENDERS,
    IMAGE_EXTENSIONS,
    RACES,
    STATUS_OK,
    STATUS_RECOVERED,
    STATUS_REJECTED,
    label_exprs,
    parse_exprs,
)

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
    """What the walk found: one entry per image file, plus counts of what it skipped and why."""

    dirs: list[str] = field(default_factory=list)  # display form (relative, posix, UTF-8 safe), "" = root
    real_dirs: list[str] = field(default_factory=list)  # the real relative path (may hold surrogates)
    names: list[list[str]] = field(default_factory=list)  # per directory: real file names
    skipped: Counter = field(default_factory=Counter)
    unreadable_dirs: list[dict] = field(default_factory=list)


def build_index(options: IndexOptions) -> IndexResult:
    """List, parse (and optionally hash/probe) every image under ``options.root``; see the module doc."""
    started = time.perf_counter()
    root = _check_root(options.root)
    listing = _walk(root)
    table, raw_paths = _frame(listing)
    n = table.height
    if options.size:
        table = table.with_columns(size_bytes=pl.Series(_sizes(root, raw_paths), dtype=pl.Int64))
    if options.hash or options.probe:
        table = _inspect_all(table, root, raw_paths, options)
    if options.hash:
        table = add_dup_groups(table, options.near_bits, options.max_thumb_diff)
    table = table.drop("_row", "_thumb", strict=False)
    summary = summarize(table, listing, root, options, time.perf_counter() - started)
    log.info("indexed %d images under %s in %.2f s", n, root, summary["seconds"])
    return IndexResult(table=table, summary=summary)


def write_index(result: IndexResult, path: Path | str) -> Path:
    """Write the table to Parquet atomically (tmp file, then ``os.replace``); root, counts, version go
    into the key-value metadata."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = result.summary
    metadata = {
        "faceattr_batch.version": __version__,
        "faceattr_batch.root": str(s.get("root", "")),
        "faceattr_batch.counts": json.dumps(
            {k: s[k] for k in ("images", "status", "skipped", "duplicates") if k in s}, default=str
        ),
        "faceattr_batch.options": json.dumps(s.get("options", {}), default=str),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # polars writes the key-value metadata itself; importing pyarrow.parquet would add ~0.15 s to start-up
        result.table.write_parquet(tmp, metadata=metadata, statistics=False)
        os.replace(tmp, path)
    except OSError as err:
        raise FaceattrError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_index_metadata(path: Path | str) -> dict[str, str]:
    """The key-value metadata ``write_index`` stored (for tests and scripts)."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"faceattr_batch.")}


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


def _walk(root: Path) -> _Listing:
    listing = _Listing()
    image_exts = tuple(IMAGE_EXTENSIONS)
    stack = [("", "")]
    while stack:
        real_rel, shown_rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, real_rel) if real_rel else root) as entries:
                names = []
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        listing.skipped["hidden"] += 1
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            sub = f"{real_rel}/{name}" if real_rel else name
                            stack.append((sub, f"{shown_rel}/{_shown(name)}" if shown_rel else _shown(name)))
                            continue
                        if not name.lower().endswith(image_exts):
                            listing.skipped["not an image extension"] += 1
                            continue
                        if entry.is_symlink():
                            if entry.is_dir():
                                listing.skipped["symlink to a folder (not followed)"] += 1
                                continue
                            if not entry.is_file():
                                listing.skipped["broken symlink or symlink loop"] += 1
                                continue
                        elif not entry.is_file():
                            listing.skipped["not a regular file"] += 1
                            continue
                    except OSError:
                        listing.skipped["cannot stat"] += 1
                        continue
                    names.append(name)
        except OSError as err:
            listing.unreadable_dirs.append({"path": shown_rel or ".", "reason": err.strerror or str(err)})
            continue
        if names:
            listing.dirs.append(shown_rel)
            listing.real_dirs.append(real_rel)
            listing.names.append(names)
    return listing


def _shown(name: str) -> str:
    """A UTF-8-safe form of a name that may hold undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _frame(listing: _Listing) -> tuple[pl.DataFrame, list[str]]:
    """One row per image (path, name, parsed labels), and the real relative paths in listing order."""
    frames = []
    raw_paths: list[str] = []
    bad_rows: list[int] = []
    offset = 0
    for shown_dir, real_dir, names in zip(listing.dirs, listing.real_dirs, listing.names, strict=True):
        try:
            series = pl.Series("name", names, dtype=pl.String)
            clean = shown_dir == real_dir
        except UnicodeEncodeError:
            series = pl.Series("name", [_shown(n) for n in names], dtype=pl.String)
            clean = False
        if not clean:
            bad_rows.extend(
                offset + i for i, n in enumerate(names) if _shown(n) != n or shown_dir != real_dir
            )
        prefix = f"{shown_dir}/" if shown_dir else ""
        frames.append(pl.DataFrame([series]).with_columns(path=pl.lit(prefix) + pl.col("name")))
        raw_paths.extend(f"{real_dir}/{n}" for n in names) if real_dir else raw_paths.extend(names)
        offset += len(names)
    table = pl.concat(frames) if frames else pl.DataFrame(schema={"name": pl.String, "path": pl.String})
    table = table.with_row_index("_row").with_columns(
        pl.col("_row").is_in(bad_rows).alias("_bad_name") if bad_rows else pl.lit(False).alias("_bad_name")
    )
    table = table.with_columns(parse_exprs(pl.col("name"))).with_columns(label_exprs())
    table = table.with_columns(
        error=pl.when(pl.col("_bad_name")).then(pl.lit(_NON_UTF8)).otherwise(pl.lit(None, pl.String))
    ).drop("_bad_name")
    table = table.select(
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
    ).sort("path")
    return table, raw_paths


def _sizes(root: Path, raw_paths: list[str]) -> list[int | None]:
    sizes: list[int | None] = []
    for rel in raw_paths:
        try:
            sizes.append(os.stat(os.path.join(root, rel)).st_size)
        except OSError:
            sizes.append(None)
    return sizes


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
    if isinstance(err, OSError) and err.strerror:
        return f"unreadable: {err.strerror}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"cannot decode: {text}"


def _inspect_chunk(task: tuple[list[str], bool, bool]) -> list[tuple]:
    paths, want_hash, want_probe = task
    return [inspect_file(p, want_hash, want_probe) for p in paths]


def _inspect_all(
    table: pl.DataFrame, root: Path, raw_paths: list[str], options: IndexOptions
) -> pl.DataFrame:
    from tqdm import tqdm

    order = table["_row"].to_list()
    paths = [os.path.join(root, raw_paths[i]) for i in order]
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    tasks = [(c, options.hash, options.probe) for c in chunks]
    workers = os.cpu_count() or 1 if options.workers is None else options.workers
    workers = min(workers, len(chunks))
    results: list[tuple] = []
    with tqdm(
        total=len(paths),
        unit="img",
        desc="hash" if options.hash else "probe",
        disable=not options.progress,
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
    ones. Components come from union-find over those pairs; group ids are numbered in path order.
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
    # group id = rank of the group's first row (the table is sorted by path)
    frame = pl.DataFrame({"_root": roots})
    first = frame.with_row_index("_i").group_by("_root").agg(pl.col("_i").min().alias("_first"))
    frame = frame.join(first, on="_root", how="left", maintain_order="left")
    group = frame["_first"].rank("dense").cast(pl.Int64) - 1
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


def summarize(
    table: pl.DataFrame, listing: _Listing, root: Path, options: IndexOptions, seconds: float
) -> dict:
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
    groups = (
        table.filter(pl.col("dup_size") > 1)
        .group_by("dup_group")
        .agg(
            pl.col("path").sort(),
            pl.col("age"),
            pl.col("gender"),
            pl.col("race"),
            pl.col("sha256").n_unique().alias("contents"),
            pl.col("label_conflict").first(),
        )
        .sort("dup_group")
    )
    conflicts = groups.filter(pl.col("label_conflict"))
    return {
        "groups": groups.height,
        "images_in_groups": int(groups["path"].list.len().sum() or 0) if groups.height else 0,
        "exact_only_groups": int((groups["contents"] == 1).sum()) if groups.height else 0,
        "conflict_groups": conflicts.height,
        "conflicts": [
            {
                "dup_group": row["dup_group"],
                "paths": row["path"],
                "labels": sorted(
                    {f"{a}_{g}_{r}" for a, g, r in zip(row["age"], row["gender"], row["race"], strict=True)}
                ),
            }
            for row in conflicts.iter_rows(named=True)
        ],
        "group_list": [
            {"dup_group": r["dup_group"], "paths": r["path"]} for r in groups.iter_rows(named=True)
        ],
    }
