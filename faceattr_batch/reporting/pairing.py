"""Which images two runs share (``report --compare``): by path; where no path is in both (the other tool ran on
a copy of the folder elsewhere, or wrote paths from another machine), by file name; where no name is either, by the
name's stem: up to its first dot, less a ``_face<k>`` ending (FairFace's ``predict.py`` writes the faces it detects
in ``X.jpg.chip.jpg`` as ``detected_faces/X_face0.jpg`` and reports those). A name or stem counts only where one
path holds it in each run (``photos/a/1.jpg`` and ``photos/b/1.jpg`` match nothing; nor do a photo's
``_face0`` and ``_face1``). The pairs are the shared images with one predicted face in each run."""

from __future__ import annotations

import numpy as np
import polars as pl

from faceattr_batch.data.name_labels import DETECTED_FACE_SUFFIX
from faceattr_batch.reporting.disagreements import predicted_once

BY_PATH, BY_NAME, BY_STEM = "path", "file name", "file name stem"
_NAME = r"([^/\\]+)$"  # after the last separator, / or \ (a table written on Windows)
# up to the first dot, less a detected face's _face<k>
_STEM = rf"([^/\\.]+?)(?:{DETECTED_FACE_SUFFIX})?(?:\.[^/\\]*)?$"


def matched_paths(a: pl.DataFrame, b: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``b`` with its paths made A's where they match by file name or stem, and how the images were matched: by
    path where any path is in both runs (``b`` unchanged), else by file name where any name matches, else by
    stem."""
    paths_a, paths_b = a["path"].unique(), b["path"].unique()
    if paths_b.is_in(paths_a.implode()).any():
        return b, BY_PATH
    for how, pattern in ((BY_NAME, _NAME), (BY_STEM, _STEM)):
        mapping = _named(paths_b, pattern).join(_named(paths_a, pattern), on="name", suffix="_a")
        if not mapping.is_empty():
            return b.with_columns(pl.col("path").replace(mapping["path"], mapping["path_a"])), how
    return b, BY_PATH


def _named(paths: pl.Series, pattern: str) -> pl.DataFrame:
    """``path`` and its name by ``pattern`` (its first group), for the names only one of ``paths`` holds."""
    named = pl.DataFrame({"path": paths}).with_columns(name=pl.col("path").str.extract(pattern))
    return named.filter(pl.len().over("name") == 1)


def shared_images(a: pl.DataFrame, b: pl.DataFrame, matched_by: str) -> tuple[dict, pl.Series]:
    """The images of both runs (``b``'s paths already matched to ``a``'s), and the paths of the pairs."""
    paths_a, paths_b = set(a["path"].unique().to_list()), set(b["path"].unique().to_list())
    common = paths_a & paths_b
    pairs = predicted_once(a).join(predicted_once(b), on="path", how="semi")["path"].sort()
    several = {p for frame in (a, b) for p in frame.filter(pl.len().over("path") > 1)["path"].to_list()} & common
    shared = {
        "matched_by": matched_by, "images": len(common), "only_a": len(paths_a - common),
        "only_b": len(paths_b - common), "pairs": pairs.len(), "several_faces": len(several),
        "paired": pairs.len() > 0, "reason": None,
    }  # fmt: skip
    if not common:
        shared["reason"] = (
            "no image is in both runs (matched by path, file name and stem): differences without paired intervals"
        )
    elif not pairs.len():
        shared["reason"] = "no image has one predicted face in each run: differences without paired intervals"
    return shared, pairs


def pair_index(paths_a: np.ndarray, paths_b: np.ndarray, pairs: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Positions in A's and in B's metric rows of each pair present in both (labelled in both), pair by pair."""
    position_a = {p: i for i, p in enumerate(paths_a)}
    position_b = {p: i for i, p in enumerate(paths_b)}
    both = [(position_a[p], position_b[p]) for p in pairs.to_list() if p in position_a and p in position_b]
    index = np.array(both, dtype=np.int64).reshape(-1, 2)
    return index[:, 0], index[:, 1]
