"""`faceattr-batch report`: predictions -> a report folder (metrics.json, breakdown.parquet, PNG plots and one
self-contained report.html; ``reporting.folder``), without a model.

`predict --report` writes the same folder right after predicting, from the frame it has read for its summary;
this command rebuilds it later from the file alone, or with the labels of a labels file (``--labels``:
``data.label_files``, joined by path; they replace the file's own and add their extra columns).

The predictions are a Parquet written by `predict`, or a table written by another tool (deepface, insightface, a
model of your own: ``data.foreign_predictions``, read as told by ``columns`` and ``gender_one_is`` or by its
columns' common spellings); ``is_own_predictions`` tells them apart. An attribute the table does not predict is
not reported. With ``compare``, a second run B (ours or another tool's; the same labels file applying to both) is
compared with A (``reporting.compare``): the folder is A's report, with metrics.json's ``compare`` and the page's
comparison section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from faceattr_batch.data.foreign_predictions import OWN_COLUMNS, is_own_predictions, read_foreign_predictions
from faceattr_batch.data.label_files import LabelTable, attach_labels, match_labels, read_label_file
from faceattr_batch.data.name_labels import attach_name_labels
from faceattr_batch.errors import FaceattrError, require_file
from faceattr_batch.io.atomic import check_writable, refuse_overlap
from faceattr_batch.reporting.compare import Run, compare_runs
from faceattr_batch.reporting.folder import write_report, writes_file
from faceattr_batch.reporting.summary import READ_COLUMNS, read_predictions, summarize
from faceattr_batch.reporting.suspects_list import find_suspects, list_format, write_suspects
from faceattr_batch.schema import OPTIONS_KEY, recorded


@dataclass(frozen=True)
class ReportResult:
    report: Path | None  # report.html; None with ``suspects`` alone
    labels: dict | None = None  # the labels file's counts and first problems; None without --labels
    training: dict | None = None  # images the model saw, by role, and the rule (``summary.training_summary``)
    foreign: dict | None = None  # another tool's table: columns read, conventions, problems; None for predict's own
    compare: dict | None = None  # with ``compare``: metrics.json's "compare" (``reporting.compare``)
    metrics: dict | None = None  # the overall metrics with their intervals (metrics.json's "overall"); None unlabelled
    suspects: Path | None = None  # with ``suspects``: the ranked list written
    suspect_counts: dict | None = None  # with ``suspects``: flagged rows per attribute
    sample: dict | None = None  # a ``predict --sample`` run's {images, of, seed}, as its Parquet records it


def build(
    predictions: Path | str,
    report_dir: Path | str | None,
    labels: Path | str | None = None,
    *,
    slice_by: Sequence[str] = (),
    min_group: int = 30,
    include_training: bool = False,
    columns: Mapping[str, str | None] | None = None,
    gender_one_is: str = "female",
    compare: Path | str | None = None,
    seed: int = 0,
    suspects: Path | str | None = None,
    progress: bool = True,
) -> ReportResult:
    """Write the report of ``predictions`` (with the true labels of the file ``labels``, when given) into
    ``report_dir``, sliced by race, gender, age band and the labels' columns ``slice_by`` (``write_report``);
    ``include_training``: keep the rows of images the model was trained on in the metrics. Another tool's table is
    read with ``columns`` (ours -> its column; None leaves an attribute out) and ``gender_one_is`` ("male": its
    gender 1 is male). ``compare``: a second run compared with this one (paired intervals seeded by ``seed``).
    ``suspects``: also write the ranked suspect labels to this .parquet or .csv; with ``report_dir`` None, only
    that (the report's suspects.parquet, without the rest of the report). ``progress``: a bar over the fairness
    summaries."""
    if report_dir is None and suspects is None:
        raise FaceattrError("nothing to write: give --report DIR, --suspects FILE or both")
    if suspects is not None:
        list_format(suspects)
    for option, path in (("", predictions), ("--compare", compare)):  # before a folder is taken for their place
        if path is not None:
            require_file(path, option, "predictions file")
    inputs = {"the predictions": predictions, "--labels": labels, "--compare": compare}
    if report_dir is not None:
        refuse_overlap(report_dir, "--report", inputs, folder=True, writes=writes_file)
    if suspects is not None:
        claimed = (
            {} if report_dir is None else {f"the report writes that file into {report_dir}": (report_dir, writes_file)}
        )
        refuse_overlap(suspects, "--suspects", inputs, claimed=claimed)
    for target, option, folder in ((report_dir, "--report", True), (suspects, "--suspects", False)):
        if target is not None:
            check_writable(target, option, folder=folder)
    table = None if labels is None else read_label_file(labels)  # once, for both runs
    paired = compare is not None  # a comparison pairs the runs' images by path: another tool's made absolute
    files = [path for path in (predictions, compare) if path is not None]
    runs = [read_run(path, table, columns, gender_one_is, paired) for path in files]
    if (columns is not None or gender_one_is != "female") and all(run.foreign is None for run in runs):
        raise FaceattrError(
            f"--columns and --gender-one-is read another tool's table; {predictions} is a `predict` Parquet"
            + (f", and so is {compare}" if compare is not None else "")
        )
    run = runs[0]
    found = None if suspects is None else find_suspects(run.frame)  # once: the report's suspects.parquet is the same
    if report_dir is None:
        return ReportResult(None, run.labels, foreign=run.foreign, **_write_suspects(found, suspects))
    sample = None if run.foreign else recorded(predictions, OPTIONS_KEY).get("sample")
    summary = summarize(run.frame, run.labels, include_training) | {"foreign": run.foreign, "sample": sample}
    comparison = None
    if compare is not None:
        comparison = compare_runs(*runs, slice_by=slice_by, include_training=include_training, seed=seed)
    html = write_report(
        run.frame, summary, Path(predictions), Path(report_dir), slice_by=slice_by, min_group=min_group,
        compare=comparison, suspects=found, progress=progress,
    )  # fmt: skip
    listed = _write_suspects(found, suspects)  # after the report: a refused --slice-by writes nothing
    contents = None if comparison is None else comparison.contents
    return ReportResult(
        html, summary["labels"], summary["training"], run.foreign, contents, summary["metrics"], **listed, sample=sample
    )


def compare(a: Path | str, b: Path | str, report_dir: Path | str, labels: Path | str | None = None, **options):
    """The report of run ``a`` compared with run ``b`` (each ``predict``'s Parquet or another tool's table, the
    labels file ``labels`` applying to both): ``build(a, report_dir, labels, compare=b, **options)``."""
    return build(a, report_dir, labels, compare=b, **options)


def _write_suspects(found, suspects: Path | str | None) -> dict:
    """``--suspects``' file written: what ``ReportResult`` says of it (nothing without one)."""
    if suspects is None:
        return {}
    return {"suspects": write_suspects(found.table, Path(suspects)), "suspect_counts": found.contents["counts"]}


def read_run(
    predictions: Path | str,
    labels: LabelTable | None = None,
    columns: Mapping[str, str | None] | None = None,
    gender_one_is: str = "female",
    absolute_paths: bool = False,
) -> Run:
    """One run: ``predict``'s Parquet or another tool's table, in the predictions schema (``READ_COLUMNS``), with the
    labels of ``labels`` (a labels file as ``read_label_file`` reads it) attached when given; without one, another
    tool's rows get the labels of their UTKFace-style names (``foreign["labelled_from_names"]`` counts them).
    ``absolute_paths``: another tool's paths resolved against the current folder, as ``predict`` writes its own
    (and as the report reads the thumbnails)."""
    foreign = None
    if is_own_predictions(predictions):
        frame = read_predictions(predictions)
    else:
        try:
            table = read_foreign_predictions(predictions, columns, gender_one_is=gender_one_is)
        except FaceattrError as err:
            missing = _own_columns_missing(predictions)
            if missing is None:
                raise
            raise FaceattrError(f"{err}; not a `predict` output either (missing columns: {missing})") from None
        frame, foreign = table.frame.select(READ_COLUMNS), table.summary
        if absolute_paths:
            written = frame["path"].unique()
            # os.path.abspath, as predict lists its inputs (symlinks kept): resolve() took a linked folder to its
            # target, where predict's rows are not, and cost a system call a path (25 s per million)
            resolved = pl.Series([os.path.abspath(p) for p in written], dtype=pl.String)
            frame = frame.with_columns(pl.col("path").replace_strict(written, resolved))
    matched = None
    if labels is not None:
        matched = match_labels(labels, frame["path"].unique(maintain_order=True).to_list())
        frame = attach_labels(frame, matched)
    if foreign is not None:  # without a labels file, as predict labels its own rows
        frame, named = (frame, 0) if matched is not None else attach_name_labels(frame)
        foreign = foreign | {"labelled_from_names": named}
    return Run(Path(predictions), frame, foreign, None if matched is None else matched.summary)


def _own_columns_missing(path: Path | str) -> str | None:
    """The columns of ``predict``'s output that the Parquet ``path`` lacks (None when it is no readable Parquet)."""
    try:
        names = pl.read_parquet_schema(path)
    except Exception:  # polars raises several types for non-Parquet bytes
        return None
    return ", ".join(c for c in OWN_COLUMNS if c not in names)
