"""Index a folder tree of UTKFace-style face images into one table (and a Parquet file).

``build_index(IndexOptions(root=...))`` lists the tree with the package's one walker (``data.inputs.walk_tree``),
parses every image name with the grammar in ``data.labels`` (in a thread, while the walk goes on), stats each file
for its size, and optionally hashes (``hash=True``: content hash, 64-bit dHash, duplicate groups, label conflicts)
and probes (``probe=True``: width, height and mode from the header) each file in a process pool. Nothing about a
single file raises: a bad file is a row with an ``error``, a bad name is a row with ``status``/``reason``; a
missing or unreadable root, or a tree without one image file, raises ``FaceattrError``. The library logs and
returns; the CLI prints.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.image_quality import quality_summary
from faceattr_batch.data.inputs import INDEX_ROOT_KEY, Listing, check_folder, display_path, no_image_files, walk_tree
from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES, STATUS_OK, STATUS_RECOVERED, STATUS_REJECTED
from faceattr_batch.errors import FaceattrError
from faceattr_batch.index.duplicates import DEFAULT_MAX_THUMB_DIFF, DEFAULT_NEAR_BITS, add_dup_groups, duplicate_summary
from faceattr_batch.index.hashing import inspect_rows
from faceattr_batch.index.label_audit import age_heaping, label_cells
from faceattr_batch.index.parse import ChunkParser
from faceattr_batch.index.sizes import FileSizes
from faceattr_batch.io.atomic import replacing

log = logging.getLogger(__name__)
METADATA_PREFIX = "faceattr_batch."


@dataclass(frozen=True)
class IndexOptions:
    root: Path
    hash: bool = False  # content hash + dHash -> dup_group, label_conflict
    probe: bool = False  # width, height, mode from the image header
    quality: bool = False  # brightness, contrast, sharpness, colourfulness (data.image_quality): decodes every image
    workers: int | None = None  # processes for hash/probe; None = all cores, 0 = in this process
    near_bits: int = DEFAULT_NEAR_BITS  # max dHash Hamming distance of a near-duplicate candidate
    max_thumb_diff: float = DEFAULT_MAX_THUMB_DIFF  # max thumbnail mean abs difference that confirms it
    progress: bool = False  # progress bar over hashed/probed files (the CLI turns it on)
    file_sizes: bool = True  # stat every file for size_bytes (the slow part of a plain index on huge trees)


@dataclass
class IndexResult:
    table: pl.DataFrame
    summary: dict = field(default_factory=dict)


def build_index(options: IndexOptions) -> IndexResult:
    """List, parse (and optionally hash/probe) every image under ``options.root``; see the module doc.

    Rows come in listing order (folder by folder, as the file system lists them): sorting a million paths
    would cost more than parsing them. Sort by ``path`` where an order matters.
    """
    started = time.perf_counter()
    root = check_folder(options.root)
    listing = Listing()
    with FileSizes(root, listing) as sizes:
        with ChunkParser(listing) as parser:
            walk_tree(root, listing, flush=parser.submit)
            if options.file_sizes:
                sizes.start()  # stat runs in worker processes while the parser thread finishes
        table = parser.table
        if table is None:
            raise no_image_files(options.root)
        if options.file_sizes:
            table = table.with_columns(size_bytes=sizes.result().filter(parser.keep))
    if options.hash or options.probe or options.quality:
        table = inspect_rows(
            table,
            root,
            listing,
            want_hash=options.hash,
            want_probe=options.probe,
            want_quality=options.quality,
            workers=options.workers,
            progress=options.progress,
        )
    if options.hash:
        table = add_dup_groups(table, options.near_bits, options.max_thumb_diff).drop("_thumb")
    table = table.drop("_row")
    summary = summarize(table, listing, root, options, time.perf_counter() - started)
    log.info("indexed %d images under %s in %.2f s", table.height, root, summary["seconds"])
    return IndexResult(table=table, summary=summary)


def write_index(result: IndexResult, path: Path | str) -> Path:
    """Write the table to Parquet atomically; root, counts, version go into the key-value metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = result.summary
    metadata = {
        METADATA_PREFIX + "version": __version__,
        INDEX_ROOT_KEY: display_path(str(s.get("root", ""))),  # text; index_paths finds undecodable bytes again
        METADATA_PREFIX + "counts": json.dumps(_counts(s), default=str),
        METADATA_PREFIX + "options": json.dumps(s.get("options", {}), default=str),
    }
    try:
        with replacing(path) as tmp, open(tmp, "wb") as file:  # a handle: polars takes no undecodable path
            # polars writes the key-value metadata itself (importing pyarrow.parquet would add ~0.15 s to
            # start-up); lz4 writes a million rows in half zstd's time, for a ~20% larger file
            result.table.write_parquet(file, metadata=metadata, statistics=False, compression="lz4")
    except OSError as err:
        raise FaceattrError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def read_index_metadata(path: Path | str) -> dict[str, str]:
    """The key-value metadata ``write_index`` stored (root, version, counts, options as JSON strings)."""
    raw = pl.read_parquet_metadata(path)
    return {k: v for k, v in raw.items() if k.startswith(METADATA_PREFIX)}


def _counts(summary: dict) -> dict:
    counts = {k: summary[k] for k in ("images", "status", "skipped") if k in summary}
    if "duplicates" in summary:
        counts["duplicates"] = {k: summary["duplicates"][k] for k in ("groups", "images_in_groups", "conflict_groups")}
    return counts


def summarize(table: pl.DataFrame, listing: Listing, root: Path, options: IndexOptions, seconds: float) -> dict:
    """The run's summary: counts by status and label, rejected and recovered names, what was skipped, duplicates."""

    def counts(column: str, order: tuple[str, ...]) -> dict[str, int]:
        got = dict(table[column].value_counts().iter_rows())
        out = {k: int(got.get(k, 0)) for k in order}
        if got.get(None):
            out["unknown"] = int(got[None])
        return out

    def listed(status: str) -> list[dict]:
        return table.filter(pl.col("status") == status).select("path", "reason").to_dicts()

    summary: dict = {
        "root": display_path(str(root)),  # --json and the summary line: text, bytes shown as \xNN
        "version": __version__,
        "options": {
            "hash": options.hash,
            "probe": options.probe,
            "quality": options.quality,
            "near_bits": options.near_bits,
        },
        "images": table.height,
        "status": counts("status", (STATUS_OK, STATUS_RECOVERED, STATUS_REJECTED)),
        "gender": counts("gender_label", GENDERS),
        "race": counts("race_label", RACES),
        "age_band": counts("age_band", AGE_BAND_NAMES),
        "cells": label_cells(table),
        "age_heaping": age_heaping(table),
        "rejected": listed(STATUS_REJECTED),
        "recovered": listed(STATUS_RECOVERED),
        "skipped": dict(sorted(listing.skipped.items())),
        "unreadable_dirs": listing.unreadable_dirs,
        "errors": dict(Counter(e for e in table["error"].to_list() if e is not None)),
    }
    if "size_bytes" in table.columns:
        summary["total_bytes"] = int(table["size_bytes"].sum() or 0)
    if "dup_group" in table.columns:
        summary["duplicates"] = duplicate_summary(table)
    if options.quality:
        summary["quality"] = quality_summary(table)
    summary["seconds"] = round(seconds, 3)
    return summary
