"""The report page's block on the labels file (``--labels``; metrics.json's ``labels``, ``MatchedLabels.summary``):
the file, its counts (rows read, inputs matched, inputs without labels, labels naming no input, values not read),
the first problems with their line, column, value and reason, and the race mapping where one was applied."""

from __future__ import annotations

import html

COUNTS = (
    ("rows", "rows read"),
    ("matched_inputs", "inputs matched"),
    ("inputs_without_labels", "inputs without labels"),
    ("labels_not_in_inputs", "labels naming no input"),
    ("problem_count", "values not read"),
)
CSS = ".labels td.reason{text-align:left;max-width:520px} .labels td.value{text-align:left;font-family:monospace}"


def labels_html(labels: dict | None) -> str:
    """The block, or nothing when the labels came without a labels file (file names, an index)."""
    if not labels:
        return ""
    esc = html.escape
    head = "".join(f"<th>{title}</th>" for _, title in COUNTS)
    cells = "".join(f"<td>{labels[key]}</td>" for key, _ in COUNTS)
    parts = [
        "<h2>Labels file</h2>",
        f"<p><code>{esc(labels['file'])}</code> <span class='muted'>({esc(labels['format'])}, rows matched to the "
        f"inputs by <code>{esc(labels['key'])}</code>)</span></p>",
        f"<table class='labels'><tr>{head}</tr><tr>{cells}</tr></table>",
    ]
    mapping = labels.get("race_mapping")
    if mapping:
        mapped = ", ".join(f"{esc(theirs)} → {esc(ours)}" for theirs, ours in mapping.items() if theirs != ours)
        parts.append(
            f"<p>Races mapped to ours: {mapped}; the file's own race is kept as the slice "
            "<code>fairface_race</code>.</p>"
        )
    if labels.get("extra_columns"):
        names = ", ".join(f"<code>{esc(name)}</code>" for name in labels["extra_columns"])
        parts.append(f"<p class='muted'>other columns (slice by them with --slice-by): {names}</p>")
    if labels["problem_count"]:
        parts.append(_problems(labels))
    return "".join(parts)


def _problems(labels: dict) -> str:
    """The first problems kept in the summary, and how many there are in all."""
    esc = html.escape
    where = "row" if labels["format"] in ("parquet", "index") else "line"  # a Parquet's rows have no lines
    shown, total = labels["problems"], labels["problem_count"]
    rows = "".join(
        f"<tr><td>{p['line']}</td><td class='l'>{esc(p['column'] or '')}</td>"
        f"<td class='value'>{esc('' if p['value'] is None else str(p['value']))}</td>"
        f"<td class='reason'>{esc(p['reason'])}</td></tr>"
        for p in shown
    )
    more = f"the first {len(shown)} of {total}; " if total > len(shown) else ""
    return (
        f"<h3>Values not read <span class='muted'>({total}; {more}their labels left empty)</span></h3>"
        f"<table class='labels'><tr><th>{where}</th><th class='l'>column</th><th class='l'>value</th>"
        f"<th class='l'>reason</th></tr>{rows}</table>"
    )
