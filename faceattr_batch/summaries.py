"""The human-readable summary each command prints on stdout (``--json`` prints the data instead; ``--quiet``
prints nothing). One function per command, named after it."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from faceattr_batch import progress
from faceattr_batch.io.atomic import finite
from faceattr_batch.summaries_runs import compared_runs, foreign_table

# In a log file or a pipe a summary line must stay one line: nothing is wrapped, and tables get this width to
# take their natural size in (rich would otherwise assume 80 columns)
LOG_WIDTH = 240


def console() -> Console:
    """stdout's console: wrapped to the terminal's width on a terminal; not wrapped at all in a file or pipe.

    No markup: paths and reasons are printed as they are ("photos/[draft]" would lose its brackets, "[/x]" would
    raise); emphasis goes through ``Text`` styles instead."""
    terminal = Console(markup=False)
    return terminal if terminal.is_terminal else Console(markup=False, soft_wrap=True, width=LOG_WIDTH)


def show(printer, *args, json_data=None) -> None:
    """A command's output on stdout: ``json_data`` as JSON when given (--json; NaN and infinities as null, as JSON
    has neither), else the summary (none if --quiet)."""
    if json_data is not None:
        sys.stdout.write(json.dumps(finite(json_data), indent=2, default=str) + "\n")
    elif not progress.is_quiet():
        printer(*args)


def rows_table(out: Console, title: str, rows: list[dict], columns: tuple[str, ...], most: int = 20) -> None:
    """The first ``most`` rows under a title that counts them all; nothing when there are none."""
    if not rows:
        return
    table = Table(title=f"{title}: {len(rows)}", show_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows[:most]:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)
    if len(rows) > most:
        out.print(f"... and {len(rows) - most} more (all of them with --json)")


# --- index / import-csv ----------------------------------------------------------------------------------------


def index(summary: dict) -> None:
    out = console()
    status = summary["status"]
    out.print(
        Text.assemble(
            (str(summary["images"]), "bold"),
            f" images under {summary['root']}: {status['ok']} ok, {status['recovered']} recovered, "
            f"{status['rejected']} rejected ({summary['seconds']:.2f} s) -> {summary['output']}",
        )
    )
    out.print(_label_counts(summary))
    out.print(_thin_cells(summary["cells"]))
    out.print(_age_heaping(summary["age_heaping"]))
    for key, title in (("rejected", "rejected names (no labels invented)"), ("recovered", "recovered names")):
        rows_table(out, title, summary[key], ("path", "reason"))
    if summary["skipped"]:
        out.print("skipped: " + ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()))
    for entry in summary["unreadable_dirs"]:
        out.print(Text.assemble(("unreadable folder", "yellow"), f" {entry['path']}: {entry['reason']}"))
    if summary["errors"]:
        out.print("file errors: " + ", ".join(f"{n} x {why}" for why, n in summary["errors"].items()))
    if "quality" in summary:
        out.print(_quality_line(summary["quality"]))
    dups = summary.get("duplicates")
    if dups is not None:
        out.print(
            f"duplicates: {dups['groups']} groups holding {dups['images_in_groups']} images "
            f"({dups['byte_identical_groups']} byte-identical); {dups['conflict_groups']} with conflicting labels"
        )
        rows = [
            {
                "group": c["dup_group"],
                "labels": " vs ".join(sorted({label or "none" for label in c["labels"]})),
                "paths": "\n".join(c["paths"]),
            }
            for c in dups["conflicts"]
        ]
        rows_table(out, "label conflicts (same picture, different labels)", rows, ("group", "labels", "paths"))
        if dups["across_folders"] is not None:
            _across_folders(out, dups["across_folders"])
    if "report" in summary:
        out.print(f"report: {summary['report']}")


def _across_folders(out: Console, across: dict) -> None:
    """The duplicate groups that straddle top-level folders: per pair of folders, then the groups."""

    def shown(folder: str) -> str:
        return "./" if folder == "." else f"{folder}/"

    pairs = "; ".join(f"{' ~ '.join(map(shown, p['folders']))} {p['groups']}" for p in across["pairs"])
    out.print(
        f"duplicates across top-level folders ({', '.join(map(shown, across['folders']))}): {across['groups']} "
        f"groups holding {across['images']} images" + (f" ({pairs})" if pairs else "")
    )
    rows = [
        {"group": g["dup_group"], "folders": " ~ ".join(map(shown, g["folders"])), "paths": "\n".join(g["paths"])}
        for g in across["list"]
    ]
    title = "groups across top-level folders (splits that share a picture leak it)"
    rows_table(out, title, rows, ("group", "folders", "paths"))


def _age_heaping(heaping: dict) -> str:
    from faceattr_batch.index.label_audit import heaping_text  # polars-backed, as the index itself

    return f"age heaping: {heaping_text(heaping)}"


def _quality_line(quality: dict) -> str:
    """The quality measures' 5th / 50th / 95th percentiles and the grey images, on one line."""
    spread = ", ".join(
        f"{name} " + " / ".join(f"{value[key]:.3g}" for key in ("p5", "median", "p95"))
        for name, value in quality.items()
        if isinstance(value, dict) and value["median"] is not None  # the measures, in data.image_quality's order
    )
    return (
        f"quality of {quality['measured']} images (5th / 50th / 95th percentile): {spread or 'none measured'}; "
        f"{quality['grey']} grey (colourfulness under {quality['grey_below']:g})"
    )


def _thin_cells(cells: list[dict], under: int = 30, most: int = 8) -> str:
    """The gender x race x age band cells a dataset holds too few of (``under``: report's --min-group, below which
    a group is not compared): how many are empty or thin, the empty ones by name where few, the thinnest others."""

    def name(cell: dict) -> str:
        return f"{cell['gender']} {cell['race']} {cell['age_band']}"

    empty = [name(c) for c in cells if c["n"] == 0]
    thin = [f"{name(c)} {c['n']}" for c in cells if 0 < c["n"] < under]
    line = f"gender x race x age band: {len(cells)} cells, {len(empty)} empty, {len(thin)} with 1-{under - 1} images"
    if empty and len(empty) <= most:
        line += f"; empty: {', '.join(empty)}"
    if thin:
        line += f"; thinnest: {', '.join(thin[:most])}" + (" ..." if len(thin) > most else "")
    return line


def _label_counts(summary: dict) -> Table:
    """Gender, race and age band counts side by side, one (value, n) column pair each."""
    table = Table(title="labels", show_edge=False)
    for column in ("gender", "n", "race", "n ", "age band", "n  "):
        table.add_column(column, justify="left" if column.strip() != "n" else "right")
    columns = [list(summary[key].items()) for key in ("gender", "race", "age_band")]
    for i in range(max(len(c) for c in columns)):
        cells = []
        for column in columns:
            cells += [str(column[i][0]), str(column[i][1])] if i < len(column) else ["", ""]
        table.add_row(*cells)
    return table


def import_csv(result) -> None:
    out = console()
    out.print(f"wrote {result.written} of {result.rows} rows to {result.out_dir}")
    rows = [{"row": b["row"], "line": b["line"], "reason": b["reason"]} for b in result.bad_rows]
    rows_table(out, "bad rows (skipped)", rows, ("row", "line", "reason"))


# --- train / ensemble / export-onnx ------------------------------------------------------------------------------


def train(result) -> None:
    """The validation table per slice, the calibration and the model file (train and ensemble)."""
    out = console()
    report = result.report
    table = _validation_table(f"validation ({report['n_train_val']['val']} faces never trained on)", "slice")
    table.add_row(*_validation_cells("all", report["overall"]))
    for key, column in (("by_race", "race"), ("by_gender", "gender"), ("by_age_band", "age_band")):
        for row in report[key]:
            table.add_row(*_validation_cells(str(row[column]), row, column))
    out.print(table)
    calibration = report["calibration"]
    out.print(
        f"calibration: temperatures {calibration['temperatures']}; race ECE {calibration['race_ece_before']:.3f}"
        f" -> {calibration['race_ece_after']:.3f}; gender ECE {calibration['gender_ece_before']:.3f}"
        f" -> {calibration['gender_ece_after']:.3f}; test-time mirror: {report['tta_flip']}"
    )
    out.print(f"model: {result.model_path}")


def cross_fit(result) -> None:
    """Each fold's validation figures, the out-of-fold ones over every labelled image, and what to run next."""
    out = console()
    report = result.report
    title = f"cross-fitting: {len(report['folds'])} folds, each predicting the faces it did not train on"
    table = _validation_table(title, "fold")
    for fold in report["folds"]:
        table.add_row(*_validation_cells(str(fold["fold"]), {**fold["validation"], "n": fold["n"]}))
    table.add_row(*_validation_cells("out of fold", report["out_of_fold"]))
    out.print(table)
    out.print(f"out-of-fold predictions: {result.predictions_path}")
    out.print(f"suspect labels: faceattr-batch report {result.predictions_path} --suspects suspects.csv")


def _validation_table(title: str, first: str) -> Table:
    table = Table(title=title)
    for column in (first, "n", "gender acc", "gender F1", "race acc", "race macro-F1", "age MAE", "CS@5"):
        table.add_column(column, justify="right")
    return table


def _validation_cells(name: str, row: dict, sliced_by: str | None = None) -> list[str]:
    # F1 within a slice that holds one true class of that attribute says nothing: left blank, as is an undefined
    # value (None or NaN: no face of the slice), rather than "nan"
    def cell(key: str, spec: str) -> str:
        value = row.get(key)
        return "–" if value is None or value != value else format(value, spec)

    return [
        name,
        str(row.get("n", row.get("n_gender"))),
        cell("gender_accuracy", ".2%"),
        "–" if sliced_by == "gender" else cell("gender_f1", ".3f"),
        cell("race_accuracy", ".2%"),
        "–" if sliced_by == "race" else cell("race_macro_f1", ".3f"),
        cell("age_mae", ".2f"),
        cell("age_cs5", ".2%"),
    ]


def ensemble(result) -> None:
    train(result)
    out = console()
    for name, alone in zip(result.report["members"], result.report["members_alone"], strict=True):
        out.print(
            f"  member {name}: gender {alone['gender_accuracy']:.2%}, race {alone['race_accuracy']:.2%}, "
            f"MAE {alone['age_mae']:.2f}"
        )


def export_onnx(summary: dict) -> None:
    size = summary["input_size"]
    quantized = f"; {summary['quantization']}" if "quantization" in summary else ""
    console().print(f"wrote {summary['path']} (input uint8 N x 3 x {size} x {size}{quantized})")


# --- fid ----------------------------------------------------------------------------------------------------------


def fid(result) -> None:
    out = console()
    if result.fid is None:
        out.print(f"REAL: {result.n_real} images -> stats saved to {result.saved_stats}")
        for note in result.notes:
            out.print(Text.assemble(("note", "yellow"), f" {note}"))
        return
    table = Table(title="FID / KID", show_edge=False)
    for column in ("slice", "FID", "KID (x1e3) mean ± std", "n_real", "n_fake", "notes"):
        table.add_column(column, justify="left" if column in ("slice", "notes") else "right")
    for name, row in [("all", result), *result.by.items()]:
        kid = "-" if row.kid_mean is None else f"{row.kid_mean * 1e3:.3f} ± {row.kid_std * 1e3:.3f}"
        fid_text = "-" if row.fid is None else f"{row.fid:.3f}"
        table.add_row(name, fid_text, kid, str(row.n_real), str(row.n_fake), "\n".join(row.notes))
    out.print(table)
    if result.saved_stats:
        out.print(f"REAL stats saved to {result.saved_stats}")


# --- predict / report / crop --------------------------------------------------------------------------------------


def predict(result) -> None:
    out = console()
    speed = f"{result.images_per_second:.0f} images/s" if result.processed else "nothing left to do"
    predicted = "faces predicted" if result.settings.get("faces", "chips") != "chips" else "predicted"
    out.print(
        Text.assemble(
            (str(result.images), "bold"),
            f" images -> {result.output}  ({result.predicted} {predicted}, {sum(result.errors.values())} errors; "
            f"{result.processed} processed in {result.seconds:.1f} s, {speed}; {result.shards_skipped} shards resumed)",
        )
    )
    model, settings = result.model, result.settings
    workers = settings["workers"]
    decoding = "Ray Data" if settings.get("engine") == "ray" else f"{workers} decode worker{'s' * (workers != 1)}"
    runtime = " ".join(filter(None, (model["runtime"], model.get("precision"))))  # e.g. "onnxruntime int8"
    out.print(
        f"model {model['name']} {model['version']} ({runtime}, {settings['device']}, "
        f"{decoding}, labels: {settings['labels']})"
    )
    _sample_note(out, settings.get("sample"))
    label_file(out, result.labels)
    training_notes(out, result.training)
    if result.errors:
        table = Table(title="errors by reason", show_edge=False)
        table.add_column("reason")
        table.add_column("images", justify="right")
        for reason, count in result.errors.items():
            table.add_row(reason, str(count))
        out.print(table)
    if result.metrics:
        out.print(headline_metrics(result.metrics))
    if result.report:
        out.print(f"report: {result.report}")


def headline_metrics(metrics: dict) -> Table:
    """Gender, race and age metrics, one row each with its own n: the labelled faces that got a prediction. The
    title gives that count once when the three agree (it used to count labelled rows, error rows included)."""

    def show(key: str, percent: bool) -> str:
        value = metrics.get(key)
        return "-" if value is None else (f"{100 * value:.1f}%" if percent else f"{value:.2f}")

    counts = {metrics["n_gender"], metrics["n_race"], metrics["n_age"] + metrics.get("n_age_bin", 0)}
    title = f"metrics over {counts.pop()} labelled faces" if len(counts) == 1 else "metrics over labelled faces"
    table = Table(title=title, show_edge=False)
    for column in ("attribute", "n", "headline", "more"):
        table.add_column(column, justify="left" if column in ("attribute", "more") else "right")
    table.add_row(
        "gender",
        str(metrics["n_gender"]),
        f"acc {show('gender_accuracy', True)}",
        f"P {show('gender_precision', True)}  R {show('gender_recall', True)}  F1 {show('gender_f1', True)}",
    )
    table.add_row(
        "race", str(metrics["n_race"]), f"acc {show('race_accuracy', True)}", f"macro-F1 {show('race_macro_f1', True)}"
    )
    if metrics["n_age"] or not metrics.get("n_age_bin"):
        table.add_row(
            "age",
            str(metrics["n_age"]),
            f"MAE {show('age_mae', False)} y",
            f"RMSE {show('age_rmse', False)}  CS@5 {show('age_cs5', True)}  >10 y {show('age_gross_rate', True)}",
        )
    if metrics.get("n_age_bin"):  # ages labelled or predicted as bins (FairFace): the share in the right bin
        low, high = show("age_bin_accuracy_low", True), show("age_bin_accuracy_high", True)
        table.add_row(
            "age bin",
            str(metrics["n_age_bin"]),
            f"in bin {show('age_bin_accuracy', True)}",
            f"95% CI {low}-{high}  (predicted age rounded to whole years, inside the labelled bin; a predicted bin: "
            "the labelled one, or holding the labelled age)",
        )
    return table


def label_file(out: Console, labels: dict | None, most: int = 5) -> None:
    """A labels file's counts and first problems, in a few lines (nothing without a labels file)."""
    if not labels:
        return
    out.print(
        f"labels {labels['file']} ({labels['format']}, by {labels['key']}): {labels['matched_inputs']} images "
        f"matched to a row, {labels['inputs_without_labels']} to none; {labels['labels_not_in_inputs']} of "
        f"{labels['rows']} rows name no input"
    )
    if "race_mapping" in labels:
        mapped = ", ".join(f"{theirs} -> {ours}" for theirs, ours in labels["race_mapping"].items() if theirs != ours)
        out.print(f"races mapped to ours: {mapped}")
    total = labels["problem_count"]
    if total:
        not_read = f"{total} value{'s' * (total > 1)} not read"
        out.print(Text.assemble((not_read, "yellow"), " (their labels left empty):"))
        where = "row" if labels["format"] in ("parquet", "index") else "line"  # a Parquet's rows have no lines
        for problem in labels["problems"][:most]:
            column = f", {problem['column']}" if problem["column"] else ""
            out.print(f"  {where} {problem['line']}{column}: {problem['reason']}")
        if total > most:
            kept = len(labels["problems"])
            out.print(f"  ... and {total - most} more (the first {kept} with --json and in metrics.json)")


def _sample_note(out: Console, sample: dict | None) -> None:
    """That a ``predict --sample`` run measured a sample (nothing for a run of every image)."""
    if sample:
        from faceattr_batch.reporting.summary import sample_note  # polars-backed, as the result itself

        out.print(sample_note(sample), style="yellow")


def training_notes(out: Console, training: dict | None) -> None:
    """Why the metrics leave out the images the model was trained on, and its figures on the validation ones."""
    for note in (training or {}).get("notes", []):
        out.print(Text(note, "yellow"))


def report(result) -> None:
    out = console()
    foreign_table(out, result.foreign)
    _sample_note(out, result.sample)
    label_file(out, result.labels)
    training_notes(out, result.training)
    if result.metrics:
        out.print(headline_metrics(result.metrics))
    if result.compare:
        compared_runs(out, result.compare)
    if result.suspects is not None:
        counts = ", ".join(f"{attribute} {n}" for attribute, n in result.suspect_counts.items())
        out.print(f"suspect labels ({counts}): {result.suspects}")
    if result.report is not None:
        out.print(f"report: {result.report}")


def crop(summary: dict) -> None:
    errors = ", ".join(f"{n} {reason}" for reason, n in summary["errors"].items()) or "none"
    resumed = f"; {summary['shards_skipped']} shards resumed" if summary["shards_skipped"] else ""
    console().print(
        f"{summary['faces']} faces from {summary['photos']} photos -> {summary['out_dir']} "
        f"(errors: {errors}; {summary['seconds']:.1f} s{resumed})"
    )


# --- train-gen / synth --------------------------------------------------------------------------------------------


def train_gen(result: dict) -> None:
    console().print(f"generator: {result['model']}")


def synth(result: dict) -> None:
    console().print(f"wrote {result['images']} faces and manifest.parquet to {result['out_dir']}")
