"""``index --report DIR``: one self-contained page about a dataset itself (``dataset.html``), from the index and its
summary: the names read, the gender x race x age band cells as a coloured table, the ages with their heaps, the
pictures' quality, and, with ``--hash``, the label conflicts and the pictures shared by top-level folders shown as
thumbnails made from the files. The age histogram is a PNG beside it (``age_histogram.png``), embedded too."""

from __future__ import annotations

import html
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES
from faceattr_batch.index.label_audit import heaping_text
from faceattr_batch.io.atomic import replacing
from faceattr_batch.reporting import html_table, page
from faceattr_batch.reporting.html_table import sortable_table

DATASET_PAGE = "dataset.html"
AGE_HISTOGRAM = "age_histogram.png"
GROUPS_SHOWN = 20  # conflict and shared groups with thumbnails; --json lists them all
NAMES_SHOWN = 50  # rejected and recovered names listed
THIN = 30  # a cell with fewer images is thin: report's --min-group, below which a group is not compared
CSS = """
.cells td{min-width:44px} .cells td.empty{background:#f6c9c9}
.groups{display:flex;flex-wrap:wrap;gap:12px} .group{border:1px solid #ddd;border-radius:6px;padding:6px 8px}
"""


def write_dataset_report(table: pl.DataFrame, summary: dict, root: Path, report_dir: Path) -> Path:
    """Write ``dataset.html`` (and ``age_histogram.png``) into ``report_dir``; returns the page's path. ``table``:
    the index (paths relative to ``root``); ``summary``: its summary (``index.build.summarize``)."""
    from faceattr_batch.reporting.figures import age_histogram  # matplotlib: when a report is drawn

    report_dir.mkdir(parents=True, exist_ok=True)
    histogram = age_histogram(table, summary["age_heaping"], report_dir / AGE_HISTOGRAM)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>faceattr-batch dataset report</title>",
        f"<style>{page.CSS}{html_table.CSS}{CSS}</style></head><body>",
        "<h1>faceattr-batch dataset report</h1>",
        f"<p class='muted'>{html.escape(summary['root'])} · faceattr-batch {__version__}</p>",
        _cards(summary),
        _cells(summary["cells"]),
        "<h2>Ages</h2>",
        f"<p>Age heaping: {html.escape(heaping_text(summary['age_heaping']))}.</p>",
        page.png(histogram, "images per age"),
        _quality(summary.get("quality")),
        _names(summary),
    ]
    duplicates = summary.get("duplicates")
    if duplicates is None:
        parts.append("<h2>Duplicates</h2><p class='muted'>Not looked for: index --hash finds them.</p>")
    else:
        parts.append(_duplicate_groups(duplicates, root))
    out = report_dir / DATASET_PAGE
    with replacing(out) as tmp:
        Path(tmp).write_text("".join(parts) + html_table.SORT_SCRIPT + "</body></html>", encoding="utf-8")
    return out


def _cards(summary: dict) -> str:
    status = summary["status"]
    cards = [("images", summary["images"]), *((name, status[name]) for name in ("ok", "recovered", "rejected"))]
    if "duplicates" in summary:
        cards += [("duplicate groups", summary["duplicates"]["groups"])]
        cards += [("label conflicts", summary["duplicates"]["conflict_groups"])]
    if "quality" in summary:
        cards += [("grey pictures", summary["quality"]["grey"])]
    return "<div class='cards'>" + "".join(page.card(title, value) for title, value in cards) + "</div>"


def _cells(cells: list[dict]) -> str:
    """Rows gender x race, columns the age bands: each cell's images, shaded by its count, empty ones red."""
    counts = {(c["gender"], c["race"], c["age_band"]): c["n"] for c in cells}
    top = max(counts.values(), default=0) or 1
    head = "".join(f"<th>{band}</th>" for band in AGE_BAND_NAMES)
    rows = []
    for gender in GENDERS:
        for race in RACES:
            cells_html = []
            for band in AGE_BAND_NAMES:
                n = counts.get((gender, race, band), 0)
                shade = f" style='background:rgba(48,96,200,{0.08 + 0.6 * n / top:.2f})'" if n else ""
                cells_html.append(f"<td{' class=empty' if n == 0 else shade}>{n}</td>")
            total = sum(counts.get((gender, race, band), 0) for band in AGE_BAND_NAMES)
            rows.append(f"<tr><td class='l'>{gender} {race}</td>{''.join(cells_html)}<td><b>{total}</b></td></tr>")
    empty = sum(n == 0 for n in counts.values())
    thin = sum(0 < n < THIN for n in counts.values())
    return (
        "<h2>Images per gender × race × age band</h2>"
        f"<p class='muted'>{len(counts)} cells: {empty} empty (red), {thin} with fewer than {THIN} images (a group "
        f"the report does not compare at its default --min-group). Images without all three labels are in none.</p>"
        f"<table class='cells'><tr><th class='l'>gender race</th>{head}<th>all</th></tr>{''.join(rows)}</table>"
    )


def _quality(quality: dict | None) -> str:
    if quality is None:
        return "<h2>Picture quality</h2><p class='muted'>Not measured: index --quality measures it.</p>"
    rows = [
        [
            (html.escape(name), name),
            *((html_table.num(value[key], digits=4), value[key]) for key in ("p5", "median", "p95")),
        ]
        for name, value in quality.items()
        if isinstance(value, dict)
    ]
    return (
        "<h2>Picture quality</h2>"
        f"<p class='muted'>{quality['measured']} pictures measured at 64 px; {quality['grey']} grey (colourfulness "
        f"under {quality['grey_below']:g}). Slice a model's errors by these columns with report --labels "
        "index.parquet --slice-by brightness:4.</p>"
        + sortable_table(["measure", "5th percentile", "median", "95th percentile"], rows)
    )


def _names(summary: dict) -> str:
    listed = [
        (entry["path"], status, entry["reason"]) for status in ("rejected", "recovered") for entry in summary[status]
    ]
    if not listed:
        return "<h2>Names</h2><p class='muted'>Every name follows the grammar.</p>"
    rows = [[(html.escape(text), text) for text in row] for row in listed[:NAMES_SHOWN]]
    more = len(listed) - NAMES_SHOWN
    return (
        "<h2>Names not read as written</h2>"
        + sortable_table(["path", "status", "reason"], rows, left=3)
        + (f"<p class='muted'>and {more} more (all of them with --json)</p>" if more > 0 else "")
    )


def _duplicate_groups(duplicates: dict, root: Path) -> str:
    parts = [
        "<h2>Duplicates</h2>",
        f"<p>{duplicates['groups']} groups hold {duplicates['images_in_groups']} images "
        f"({duplicates['byte_identical_groups']} byte-identical); {duplicates['conflict_groups']} carry different "
        "labels.</p>",
    ]
    across = duplicates["across_folders"]
    sections = [("Label conflicts: one picture, different labels", duplicates["conflicts"], "labels")]
    if across is not None:
        sections.append(("Pictures in more than one top-level folder (a split that shares one leaks it)",
                         across["list"], "folders"))  # fmt: skip
    for title, groups, key in sections:
        parts.append(f"<h3>{html.escape(title)}: {len(groups)}</h3><div class='groups'>")
        for group in sorted(groups, key=_most_apart)[:GROUPS_SHOWN]:
            thumbs = "".join(
                f"<div class='thumb'>{page.thumbnail({'path': str(root / path)})}"
                f"<span class='muted'>{html.escape(path)}</span></div>"
                for path in group["paths"]
            )
            what = " vs ".join(sorted({str(v) for v in group[key]}))
            parts.append(f"<div class='group'><b>group {group['dup_group']}</b> · {html.escape(what)}"
                         f"<div class='thumbs'>{thumbs}</div></div>")  # fmt: skip
        parts.append("</div>")
        if len(groups) > GROUPS_SHOWN:
            parts.append(f"<p class='muted'>and {len(groups) - GROUPS_SHOWN} more (all of them with --json)</p>")
    return "".join(parts)


def _most_apart(group: dict) -> tuple:
    """Groups shown first: a gender or race that differs, then the widest age spread (a conflict's labels are
    ``age_gender_race``; a shared group, whose pictures all carry theirs, ranks by the same), then the group id."""
    labels = [text.split("_") for text in group.get("labels") or [] if text]
    ages = [int(parts[0]) for parts in labels if parts[0].isdigit()]
    classes = {tuple(parts[1:]) for parts in labels}
    return (-(len(classes) > 1), -(max(ages) - min(ages) if ages else 0), group["dup_group"])
