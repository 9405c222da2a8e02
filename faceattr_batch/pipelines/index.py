"""The ``index`` command: index a folder tree of UTKFace-style face images and write the table as Parquet.

The work lives in ``faceattr_batch.index`` (below the pipelines, since ``train`` indexes folders too); the optional
page about the dataset in ``reporting.dataset_page``.
"""

from __future__ import annotations

from pathlib import Path

from faceattr_batch.index.build import IndexOptions, IndexResult, build_index, write_index
from faceattr_batch.io.atomic import check_writable, refuse_overlap


def run(options: IndexOptions, out: Path | str, report_dir: Path | str | None = None) -> IndexResult:
    """Check that ``out`` (and ``report_dir``) can be written, build the index and write it there, then the dataset
    page into ``report_dir`` when given; the summary gains ``output`` (and ``report``)."""
    inputs = {f"the indexed folder {options.root}": options.root}
    refuse_overlap(out, "-o", inputs)
    if report_dir is not None:  # inside the folder, its age_histogram.png would be indexed as a picture next time
        refuse_overlap(report_dir, "--report", inputs, folder=True)
    check_writable(out, "-o")
    if report_dir is not None:
        check_writable(report_dir, "--report", folder=True)
    result = build_index(options)
    result.summary["output"] = str(write_index(result, out))
    if report_dir is not None:
        from faceattr_batch.reporting.dataset_page import write_dataset_report  # Pillow, matplotlib: a page's only

        page = write_dataset_report(result.table, result.summary, Path(options.root), Path(report_dir))
        result.summary["report"] = str(page)
    return result
