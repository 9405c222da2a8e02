"""The report page's short block on another tool's predictions table (``ForeignPredictions.summary``): the file, the
columns read for each of ours, what it predicts, the races mapped to ours and the values it could not read."""

from __future__ import annotations

import html

from faceattr_batch.data.score_vectors import shown_columns

ATTRIBUTES = ("gender", "race", "age")


def foreign_html(foreign: dict | None, run: str = "") -> str:
    """The block, or nothing for ``predict``'s own Parquet (``foreign`` None); ``run``: "A" or "B" in a
    comparison."""
    if not foreign:
        return ""
    esc = html.escape
    shown = shown_columns(foreign["columns"]).items()
    columns = ", ".join(f"{esc(ours)} ← <code>{esc(theirs)}</code>" for ours, theirs in shown)
    missing = [a for a in ATTRIBUTES if a not in foreign["attributes"]]
    predicts = ", ".join(foreign["attributes"]) + (f" (not {', '.join(missing)}: not reported)" if missing else "")
    lines = [
        f"<b>{esc(run + ': ' if run else '')}another tool's predictions</b>: <code>{esc(foreign['file'])}</code> "
        f"({esc(foreign['format'])}, {foreign['rows']} row{'s' * (foreign['rows'] != 1)}); predicts {esc(predicts)}",
        f"columns read: {columns}",
    ]
    lines += [esc(note) for note in reading_notes(foreign, "→")]
    if foreign["problem_count"]:
        where = "row" if foreign["format"] == "parquet" else "line"
        problems = "; ".join(
            f"{esc(column)}: {entry['count']} ({where}{'s' * (entry['count'] > 1)} "
            f"{', '.join(map(str, entry['lines']))}{', …' if entry['count'] > len(entry['lines']) else ''})"
            f"{_reasons(entry)}"
            for column, entry in foreign["problems_by_column"].items()
        )
        count = foreign["problem_count"]
        lines.append(f"<span class='tag'>{count} value{'s' * (count > 1)} not read (left empty)</span> {problems}")
    return "<div class='foreign'>" + "<br>".join(lines) + "</div>"


def reading_notes(foreign: dict, arrow: str) -> list[str]:
    """How the table was read where it could mean two things, as plain text (the page's lines and the terminal's
    alike): what a numeric gender of 1 is, labels from the file names, columns read in percent, races mapped."""
    notes = []
    if foreign.get("gender_numeric", "gender" in foreign["columns"]):  # an older metrics.json has no such key
        notes.append(f"a numeric gender of 1 read as {foreign['gender_one_is']}")
    if named := foreign.get("labelled_from_names"):
        notes.append(f"true labels from the UTKFace-style file names: {named} row{'s' * (named != 1)}")
    if foreign.get("percent"):
        notes.append(f"read in percent (divided by 100): {', '.join(foreign['percent'])}")
    if foreign.get("race_mapping"):
        mapped = ", ".join(f"{k} {arrow} {v}" for k, v in foreign["race_mapping"].items() if k != v.lower())
        notes.append(f"races mapped to ours: {mapped}")
    return notes


def _reasons(entry: dict) -> str:
    """A problem column's most frequent reasons, counted where there are several (none in an older metrics.json)."""
    reasons = entry.get("reasons") or {}
    shown = [html.escape(reason if len(reasons) == 1 else f"{n} {reason}") for reason, n in reasons.items()]
    return f" <span class='muted'>{' / '.join(shown)}</span>" if shown else ""


CSS = ".foreign{background:#f3f6fb;border-left:4px solid #6b8fd6;padding:6px 10px;margin:8px 0;font-size:13px}"
