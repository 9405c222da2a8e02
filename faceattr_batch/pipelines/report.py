"""`faceattr-batch report`: a predictions Parquet -> a report folder (metrics.json, breakdown.parquet, PNG plots and
one self-contained report.html; ``reporting.folder``), without a model.

`predict --report` writes the same folder right after predicting, from the frame it has read for its summary;
this command rebuilds it later from the file alone.
"""

from __future__ import annotations

from pathlib import Path

from faceattr_batch.io.atomic import check_writable
from faceattr_batch.reporting.folder import write_report
from faceattr_batch.reporting.summary import read_predictions, summarize


def build(predictions: Path | str, report_dir: Path | str) -> Path:
    """Write the report of ``predictions`` into ``report_dir``; returns the path of ``report.html``."""
    frame = read_predictions(predictions)
    check_writable(report_dir, "--report")
    return write_report(frame, summarize(frame), Path(predictions), Path(report_dir))
