"""The ``index`` command: index a folder tree of UTKFace-style face images and write the table as Parquet.

The work lives in ``faceattr_batch.index`` (below the pipelines, since ``train`` indexes folders too).
"""

from __future__ import annotations

from pathlib import Path

from faceattr_batch.index.build import IndexOptions, IndexResult, build_index, write_index
from faceattr_batch.io.atomic import check_writable, refuse_overlap


def run(options: IndexOptions, out: Path | str) -> IndexResult:
    """Check that ``out`` can be written, build the index and write it there; the summary gains ``output``."""
    refuse_overlap(out, "-o", {f"the indexed folder {options.root}": options.root})
    check_writable(out, "-o")
    result = build_index(options)
    result.summary["output"] = str(write_index(result, out))
    return result
