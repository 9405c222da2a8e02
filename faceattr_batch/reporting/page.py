"""The report's one self-contained HTML page: cards, the fairness summary (``fairness_page``), metrics, the plots
and worst-error thumbnails embedded as base64 (the thumbnails made now from the user's own image files; a detected
face shows the square around its box; an image that has moved since is shown as missing), sortable slice tables."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import polars as pl
from PIL import Image

from faceattr_batch import __version__
from faceattr_batch.data.decode import DecodeError, read_rgb
from faceattr_batch.data.inputs import path_on_disk
from faceattr_batch.faces.load import FRAMING_ALIGNED
from faceattr_batch.reporting import compare_page, fairness_page, foreign_page, html_table, labels_page, suspects_page
from faceattr_batch.reporting.html_table import interval, num, pct, sortable_table
from faceattr_batch.reporting.summary import sample_note

THUMB_SIDE = 96
# how an age labelled or predicted as a bin is measured (``metrics.attributes.age_in_bin``)
AGE_BIN_RULE = (
    "ages labelled as bins (FairFace's 20-29): the share of predicted ages inside the bin, the prediction rounded to "
    "whole years (halves up), both ends included; an age predicted as a bin (another tool's): the labelled bin "
    "itself, or a labelled age inside it; Wilson interval; no MAE without an age in years on both sides"
)

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px}.muted{color:#777}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:6px 10px}
img.plot{max-width:100%;display:block;margin:8px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:150px;font-size:11px}
.thumb span{overflow-wrap:anywhere}
.thumb img{width:96px;height:96px;object-fit:cover;display:block;border:1px solid #ccc}
.missing{width:96px;height:96px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}
"""


def render(summary: dict, plots: dict[str, Path], sections: dict) -> str:
    """The page of a report whose metrics.json content is ``summary`` (``sections``: the frames behind it)."""
    esc = html.escape
    models = ", ".join(f"{m['model_name']} {m['model_version']}" for m in summary["models"] if m["model_name"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>faceattr-batch report</title>",
        f"<style>{CSS}{html_table.CSS}{fairness_page.CSS}{foreign_page.CSS}{compare_page.CSS}{labels_page.CSS}</style></head><body>",
        "<h1>faceattr-batch predictions report</h1>",
        f"<p class='muted'>{esc(summary['predictions'])}<br>model: {esc(models or '-')} · "
        f"faceattr-batch {esc(__version__)}</p>",
        foreign_page.foreign_html(summary.get("foreign")),
        "<div class='cards'>",
        card("images", summary["images"]),
        card("predicted", summary["predicted"]),
        card("errors", sum(summary["errors"].values())),
    ]
    overall = summary.get("overall")
    if overall:  # an attribute without labels or predictions (another tool's table) is not reported
        cards = {
            "gender": card("gender accuracy", pct(overall["gender_accuracy"]), _ci(overall, "gender_accuracy", True)),
            "race": card("race accuracy", pct(overall["race_accuracy"]), _ci(overall, "race_accuracy", True)),
            "age": card("age MAE", num(overall["age_mae"], " y"), _ci(overall, "age_mae", False)),
            "age_bin": card(
                "age in the right bin", pct(overall["age_bin_accuracy"]), _ci(overall, "age_bin_accuracy", True)
            ),
        }
        parts += [card for key, card in cards.items() if overall[f"n_{key}"]]
    parts.append("</div>")
    if summary.get("sample"):
        parts.append(f"<p class='note'>{esc(sample_note(summary['sample']))}</p>")
    parts += [f"<p class='note'>{esc(note)}</p>" for note in (summary.get("training") or {}).get("notes", [])]
    parts.append(labels_page.labels_html(summary.get("labels")))
    if summary["errors"]:
        rows = "".join(f"<tr><td class='l'>{esc(k)}</td><td>{v}</td></tr>" for k, v in summary["errors"].items())
        parts.append(
            f"<h2>Errors (no predictions)</h2><table><tr><th class='l'>reason</th><th>images</th></tr>{rows}</table>"
        )
    if "compare" in summary:
        parts.append(compare_page.compare_html(summary["compare"], sections["compare"], thumbnail))
    measured = bool(overall) and any(overall.get(f"n_{key}") for key in ("gender", "race", "age", "age_bin"))
    if not measured:  # no labels, or labels on no predicted face: one sentence instead of empty tables
        left_out = (summary.get("training") or {}).get("left_out", 0)
        if overall:
            why = "No labelled face has a prediction to measure (see the errors and the notes above)"
        elif left_out:
            why = (
                f"Every labelled face ({left_out}) is an image the model was trained on, left out of the metrics "
                "(<code>--include-training</code> keeps them)"
            )
        else:
            why = None
        parts.append(
            f"<h2>Nothing measured</h2><p>{why}: no metrics, plots or groups.</p>"
            if why
            else "<h2>No true labels</h2><p>Metrics need labels: UTKFace-style file names "
            "(<code>age_gender_race_datetime.jpg</code>) or a labels file: <code>--labels FILE</code>.</p>"
        )
        parts.append(suspects_page.suspects_html(summary.get("suspects"), sections.get("suspects"), thumbnail))
        parts.append(_html_counts(summary))
        return "".join(parts) + "</body></html>"
    parts.append(fairness_page.summary_html(summary))
    parts.append(_html_metrics(summary))
    for name, title in (
        ("confusion", "Confusion matrices"),
        ("age_pred_vs_true", "Predicted vs true age"),
        ("error_by_age_band", "Age error by age band"),
        ("error_by_race", "Errors by race"),
        ("calibration", "Calibration"),
    ):
        if name in plots:
            parts.append(f"<h2>{title}</h2>{png(plots[name], name)}")
    parts.append(fairness_page.weakest_html(summary["weakest"]))
    parts.append(fairness_page.groups_html(summary))
    figures = {key: entry["figure"] for key, entry in summary["group_calibration"].items() if entry["figure"]}
    images = {key: png(plots[Path(name).stem], Path(name).stem) for key, name in figures.items()}
    parts.append(fairness_page.group_calibration_html(summary["group_calibration"], images))
    parts.append(_html_worst(sections["worst"], overall))
    parts.append(suspects_page.suspects_html(summary.get("suspects"), sections.get("suspects"), thumbnail))
    parts.append(_html_slices(sections["crossed"]))
    return "".join(parts) + html_table.SORT_SCRIPT + "</body></html>"


def png(path: Path, alt: str) -> str:
    """A plot embedded as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img class='plot' alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


def card(title: str, value, note: str = "") -> str:
    return f"<div class='card'><span class='muted'>{html.escape(title)}</span><b>{value}</b>{note}</div>"


def _ci(row: dict, key: str, percent: bool) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if low is None or high is None:
        return ""
    show = pct if percent else num
    return f"<span class='muted'>95% CI {show(low)} – {show(high)}</span>"


def _html_counts(summary: dict) -> str:
    rows = "".join(
        f"<tr><td class='l'>{html.escape(k)}</td><td>{v}</td></tr>"
        for key in ("pred_gender_counts", "pred_race_counts")
        for k, v in summary[key].items()
    )
    return f"<h2>Predicted classes</h2><table><tr><th class='l'>class</th><th>images</th></tr>{rows}</table>"


def _html_metrics(summary: dict) -> str:
    o = summary["overall"]
    cal = summary["calibration"]
    gender = (
        f"precision (female) {pct(o['gender_precision'])}, recall {pct(o['gender_recall'])}, "
        f"F1 {pct(o['gender_f1'])}; ECE {num(cal['gender_ece'])}"
    )
    race = f"macro-F1 {pct(o['race_macro_f1'])}; ECE {num(cal['race_ece'])}"
    age = (
        f"RMSE {num(o['age_rmse'], ' y')}, CS@5 {pct(o['age_cs5'])}, gross (&gt;10 y) {pct(o['age_gross_rate'])}, "
        f"bias {num(o['age_bias'], ' y')}, 80% interval covers {pct(cal['age_interval_coverage_80'])}"
    )
    rows = [
        ("gender", o["n_gender"], f"accuracy {pct(o['gender_accuracy'])}", gender),
        ("race", o["n_race"], f"accuracy {pct(o['race_accuracy'])}", race),
        ("age", o["n_age"], f"MAE {num(o['age_mae'], ' y')}", age),
        ("age bin", o["n_age_bin"], f"inside {pct(o['age_bin_accuracy'])}", AGE_BIN_RULE),
    ]
    body = "".join(
        f"<tr><td class='l'>{a}</td><td>{n}</td><td>{h}</td><td class='l'>{m}</td></tr>" for a, n, h, m in rows if n
    )
    return (
        "<h2>Metrics</h2><table><tr><th class='l'>attribute</th><th>n</th><th>headline</th>"
        f"<th class='l'>more</th></tr>{body}</table>"
    )


def _html_worst(worst: dict[str, pl.DataFrame], overall: dict) -> str:
    parts = ["<h2>Worst errors</h2>"]
    for key, title in (
        ("age", "largest age errors"),
        ("gender", "most confident wrong gender"),
        ("race", "most confident wrong race"),
    ):
        if not overall[f"n_{key}"]:  # not predicted, or no labels: not reported
            continue
        table = worst[key]
        parts.append(f"<h3>{title}</h3>")
        if table.is_empty():
            parts.append("<p class='muted'>none</p>")
            continue
        cells = []
        for row in table.to_dicts():
            cells.append(f"<div class='thumb'>{thumbnail(row)}{_caption(key, row)}</div>")
        parts.append(f"<div class='thumbs'>{''.join(cells)}</div>")
    return "".join(parts)


def _caption(key: str, row: dict) -> str:
    # another tool's table may have no age interval and no probabilities: those parts are left out
    if key == "age":
        low, high = row["age_low"], row["age_high"]
        spread = "" if low is None or high is None else f" ({low:.0f}–{high:.0f})"
        text = f"true {row['true_age']} · predicted {row['pred_age']:.1f}{spread}"
    else:
        confidence = "" if row["confidence"] is None else f" ({row['confidence']:.0%})"
        text = f"true {row[f'true_{key}_label']} · predicted {row[f'pred_{key}_label']}{confidence}"
    path = html.escape(row["path"])
    name = html.escape(os.path.basename(row["path"]))
    return f"<b>{html.escape(text)}</b><br><span class='muted' title='{path}'>{name}</span>"


def thumbnail(row: dict) -> str:
    """A small JPEG of the row's image, or of its face when detected, as a data URI (made now, from the user's
    file), or a placeholder."""
    detected = row.get("framing") == FRAMING_ALIGNED
    try:
        # the path column holds text: a name that is not UTF-8 is found again by its bytes
        pixels = read_rgb(path_on_disk(row["path"]), draft_to=None if detected else THUMB_SIDE)
    except DecodeError:
        return "<div class='missing'>missing</div>"
    image = Image.fromarray(pixels)
    if detected:
        # MTCNN's box is about the chip framing (0.97 of a chip's side, median over UTKFace): its enclosing square
        side = max(row["box_w"], row["box_h"])
        left, top = row["box_x"] + (row["box_w"] - side) / 2, row["box_y"] + (row["box_h"] - side) / 2
        image = image.crop(tuple(round(v) for v in (left, top, left + side, top + side)))
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


# a slice table's metric columns: header, count column, format (each only where its count is not all 0: the age
# bin column where ages were labelled as bins)
SLICE_METRICS = {
    "gender_accuracy": ("gender acc", "n_gender", pct),
    "race_accuracy": ("race acc", "n_race", pct),
    "age_mae": ("age MAE", "n_age", num),
    "age_bin_accuracy": ("age in bin", "n_age_bin", pct),
}


def _html_slices(crossed: dict[str, pl.DataFrame]) -> str:
    """Every crossed table (race × gender × age band first, then each extra attribute crossed with them), sortable,
    in vocabulary order until a header is clicked; an interval that cannot be computed says why."""
    parts = ["<h2>All slices</h2><p class='muted'>also in breakdown.parquet (column <code>slices</code>) and "
             "metrics.json (<code>slices</code>); MAE intervals: Student's t, none under 2 ages</p>"]  # fmt: skip
    for index, (name, table) in enumerate(crossed.items()):
        keys = name.split(",")
        shown = [key for key, (_, count, _) in SLICE_METRICS.items() if table[count].sum()]  # measured ones
        headers = [
            *(html.escape(key.replace("_", " ")) for key in keys),
            "n",
            *(SLICE_METRICS[key][0] for key in shown),
        ]
        # an Enum slice sorts in its vocabulary order (3-9 before 10-19), any other by its values
        order = {key: table[key].dtype.categories.to_list() for key in keys if isinstance(table[key].dtype, pl.Enum)}
        rows = []
        for r in table.to_dicts():  # Enum slices: in vocabulary order
            cells = [(html.escape(str(r[key])), order[key].index(r[key]) if key in order else r[key]) for key in keys]
            cells.append((str(r["n"]), r["n"]))
            for key in shown:
                _, count, show = SLICE_METRICS[key]
                reason = r.get(f"{key}_interval") or f"n = {r[count]}"
                text = f"{show(r[key])}<small>{interval(r[f'{key}_low'], r[f'{key}_high'], show, reason)}</small>"
                cells.append((text, r[key]))
            rows.append(cells)
        title = " × ".join(key.replace("_", " ") for key in keys)
        block = f"<h3>{html.escape(title)} <span class='muted'>({table.height} slices)</span></h3>"
        block += sortable_table(headers, rows, left=len(keys))
        parts.append(block if index == 0 else f"<details><summary>{html.escape(title)}</summary>{block}</details>")
    return "".join(parts)
