"""The terminal's account of the runs ``report`` reads beyond its own predictions: another tool's table as read,
and two runs compared (``report --compare``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from faceattr_batch.data.score_vectors import shown_columns
from faceattr_batch.reporting.foreign_page import reading_notes


def foreign_table(out: Console, foreign: dict | None, run: str = "") -> None:
    """Another tool's table as read: the columns behind ours, what it predicts, the races mapped, problems."""
    if not foreign:
        return
    columns = ", ".join(f"{ours} <- {theirs}" for ours, theirs in shown_columns(foreign["columns"]).items())
    missing = [a for a in ("gender", "race", "age") if a not in foreign["attributes"]]
    not_reported = f"; {', '.join(missing)} not predicted: not reported" if missing else ""
    rows = f"{foreign['rows']} row{'s' * (foreign['rows'] != 1)}"
    out.print(
        f"{run}another tool's predictions {foreign['file']} ({foreign['format']}, {rows}): {columns}{not_reported}"
    )
    for note in reading_notes(foreign, "->"):
        out.print(f"  {note}")
    if foreign["problem_count"]:
        where = "row" if foreign["format"] == "parquet" else "line"
        count = foreign["problem_count"]
        out.print(Text.assemble((f"  {count} value{'s' * (count > 1)} not read", "yellow"), " (left empty):"))
        for column, entry in foreign["problems_by_column"].items():
            lines = ", ".join(map(str, entry["lines"])) + (", ..." if entry["count"] > len(entry["lines"]) else "")
            out.print(f"    {column}: {entry['count']} ({where} {lines}){_reasons(entry)}")


def _reasons(entry: dict) -> str:
    """A problem column's most frequent reasons, with their counts where there are several ("" in an older
    metrics.json, which has none)."""
    reasons = entry.get("reasons") or {}
    if len(reasons) == 1:
        return f": {next(iter(reasons))}"
    return "".join(f"; {n}: {reason}" for reason, n in reasons.items())


def compared_runs(out: Console, compare: dict) -> None:
    """Run B against A: the images they share, the headline metrics with B - A and its paired interval, the
    disagreements."""
    from faceattr_batch.reporting.compare import shown_metrics  # here: the command line starts without numpy

    a, b, shared = compare["a"], compare["b"], compare["shared"]
    foreign_table(out, b["foreign"], "B: ")
    out.print(f"compared: A {a['name']} ({a['images']} images), B {b['name']} ({b['images']} images)")
    by_name = f" (matched by {shared['matched_by']}: no path is in both)" if shared["matched_by"] != "path" else ""
    if shared["paired"]:
        out.print(
            f"{shared['images']} images in both runs{by_name}, {shared['pairs']} pairs ({shared['labelled_pairs']} "
            "labelled); "
            f"paired bootstrap, {compare['resamples']} resamples, seed {compare['seed']}"
        )
    else:
        out.print(Text(f"{shared['images']} images in both runs: {shared['reason']}", "yellow"))
    table = Table(title="B - A", show_edge=False)
    for column in ("metric", "A", "B", "B - A", "95% paired interval"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    headline = {"gender_accuracy": "gender accuracy", "race_accuracy": "race accuracy", "age_mae": "age MAE",
                "age_bin_accuracy": "age in bin"}  # fmt: skip
    shown = shown_metrics(compare)
    for name, label in ((name, label) for name, label in headline.items() if name in shown):
        entry, percent = compare["overall"][name], compare["metrics"][name]["unit"] == "share"
        paired = entry["paired"] or {}
        low, high = paired.get("low"), paired.get("high")
        if low is None:
            interval = paired.get("reason") or "no pairs"
        else:
            interval = f"{_shown(low, percent, True)} to {_shown(high, percent, True)}"
        values = (_shown(entry["a"], percent), _shown(entry["b"], percent), _shown(entry["diff"], percent, True))
        table.add_row(label, *values, interval)
    out.print(table)
    if compare["age_bins"] is not None:
        binned = compare["age_bins"]["binned"]
        bins = ", ".join(compare["age_bins"]["bins"])
        out.print(f"age in bin: {binned}'s ages in years put in {'B' if binned == 'A' else 'A'}'s bins ({bins})")
    counts = compare["disagreements"]
    as_bins = "; a bin from its nearer end" if counts["age"]["as_bins"] else ""
    words = {"gender": "gender", "race": "race", "age": f"age (> {counts['age_threshold']} y{as_bins})"}
    out.print(
        "disagreements: "
        + ", ".join(f"{words[k]} {counts[k]['disagree']} of {counts[k]['compared']}" for k in ("gender", "race", "age"))
    )


def _shown(value: float | None, percent: bool, signed: bool = False) -> str:
    """A share in % (a difference of shares in points), years with two decimals."""
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:+.1f} pts" if signed else f"{100 * value:.1f}%"
    return f"{value:+.2f}" if signed else f"{value:.2f}"
