"""`faceattr-batch report`: a predictions Parquet -> a report folder (metrics.json, breakdown.parquet, PNG plots and
one self-contained report.html; ``reporting.folder``), without a model.

`predict --report` writes the same folder right after predicting, from the frame it has read for its summary;
this command rebuilds it later from the file alone, or with the labels of a labels file (``--labels``:
``data.label_files``, joined by path; they replace the Parquet's own and add their extra columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from faceattr_batch.data.label_files import attach_labels, load_labels
from faceattr_batch.io.atomic import check_writable
from faceattr_batch.reporting.folder import write_report
from faceattr_batch.reporting.summary import read_predictions, summarize


@dataclass(frozen=True)
class ReportResult:
    report: Path  # report.html
    labels: dict | None = None  # the labels file's counts and first problems; None without --labels
    training: dict | None = None  # images the model saw, by role, and the rule (``summary.training_summary``)


def build(
    predictions: Path | str,
    report_dir: Path | str,
    labels: Path | str | None = None,
    *,
    slice_by: Sequence[str] = (),
    min_group: int = 30,
    include_training: bool = False,
) -> ReportResult:
    """Write the report of ``predictions`` (with the true labels of the file ``labels``, when given) into
    ``report_dir``, sliced by race, gender, age band and the labels' columns ``slice_by`` (``write_report``);
    ``include_training``: keep the rows of images the model was trained on in the metrics."""
    frame = read_predictions(predictions)
    check_writable(report_dir, "--report")
    matched = None
    if labels is not None:
        matched = load_labels(labels, frame["path"].unique(maintain_order=True).to_list())
        frame = attach_labels(frame, matched)
    summary = summarize(frame, None if matched is None else matched.summary, include_training)
    html = write_report(frame, summary, Path(predictions), Path(report_dir), slice_by=slice_by, min_group=min_group)
    return ReportResult(html, summary["labels"], summary["training"])
