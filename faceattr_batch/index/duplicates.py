"""Duplicate groups of hashed index rows: exact (same sha256) and near (dHash, confirmed by thumbnails).

numpy is imported on first use: a plain ``index`` never needs it (~0.1 s of start-up).
"""

from __future__ import annotations

import itertools
from collections import Counter

import polars as pl

from faceattr_batch.index.hashing import THUMB_SIDE

DHASH_BITS = 64
DEFAULT_NEAR_BITS = 4  # dHash Hamming distance of a near-duplicate candidate (re-encodes land at 0-4)
# Confirmation of a candidate: mean absolute difference of 16x16 gray thumbnails, 0..255. On the shared
# UTKFace chips the pairs split into <= 6 (same picture) and >= 15 (different faces), with few in between.
DEFAULT_MAX_THUMB_DIFF = 8.0


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
    group = table.select("path", _root=pl.Series(roots)).select(first_path.rank("dense").cast(pl.Int64) - 1).to_series()
    out = table.with_columns(dup_group=group)
    labels = pl.struct("age", "gender", "race")
    labelled = pl.col("age").is_not_null() & pl.col("gender").is_not_null() & pl.col("race").is_not_null()
    if "error" in out.columns:  # byte-identical files that are no picture (two empty ones) share no face to label
        labelled = labelled & pl.col("error").is_null()
    return out.with_columns(  # a conflict: two labelled pictures that disagree (an unlabelled copy is none)
        dup_size=pl.len().over("dup_group").cast(pl.Int32),
        label_conflict=(labels.filter(labelled).n_unique().over("dup_group") > 1),
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
        # each join's pairs within near_bits only: the candidates of 1M random hashes were 3.9M rows, kept until the end
        joined = keyed.join(keyed, on="k", suffix="_r").filter(
            pl.col("i") < pl.col("i_r"), (pl.col("h") ^ pl.col("h_r")).bitwise_count_ones() <= near_bits
        )
        if joined.height:
            found.append(joined.select("i", "i_r"))
    if not found:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    cand = pl.concat(found).unique(["i", "i_r"])
    left = cand["i"].to_numpy().astype(np.int64)
    right = cand["i_r"].to_numpy().astype(np.int64)
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


def duplicate_summary(table: pl.DataFrame) -> dict:
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
        "across_folders": _across_folders(table, groups),
    }


def top_folder(path: pl.Expr) -> pl.Expr:
    """The first folder of a path relative to the indexed folder; "." for a file directly in it."""
    return pl.when(path.str.contains("/")).then(path.str.split("/").list.first()).otherwise(pl.lit("."))


def _across_folders(table: pl.DataFrame, groups: pl.DataFrame) -> dict | None:
    """The duplicate groups whose pictures lie in more than one top-level folder (a train/ and a test/ split
    sharing a picture leak it): counts per pair of folders and every such group. None where fewer than two
    top-level folders hold images."""
    folders = table.select(top_folder(pl.col("path")).unique().sort()).to_series().to_list()
    if len(folders) < 2:
        return None
    spread = groups.select(
        "dup_group", "path", pl.col("path").list.eval(top_folder(pl.element())).list.unique().list.sort().alias("in")
    ).filter(pl.col("in").list.len() > 1)
    pairs = Counter(pair for spans in spread["in"].to_list() for pair in itertools.combinations(spans, 2))
    return {
        "folders": folders,
        "groups": spread.height,
        "images": int(spread["path"].list.len().sum() or 0) if spread.height else 0,
        "pairs": [{"folders": list(pair), "groups": n} for pair, n in sorted(pairs.items())],
        "list": [{"dup_group": group, "paths": paths, "folders": spans} for group, paths, spans in spread.iter_rows()],
    }
