"""A predictions Parquet -> a report folder: metrics.json, breakdown.parquet, PNG plots and one report.html.

``build(predictions, report_dir)`` needs no model: `predict --report` calls it after the run, and
`faceattr-batch report out.parquet --report DIR` rebuilds it later. ``report.html`` is self-contained (plots and
worst-error thumbnails embedded as base64), so it can be mailed or archived as one file. The thumbnails are made
now from the user's own image files (a detected face: the square around its box, framed about as a chip); an
image that has moved since is shown as missing.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from pathlib import Path

import polars as pl

from faceattr_batch import __version__
from faceattr_batch.data.labels import AGE_BAND_NAMES, GENDERS, RACES
from faceattr_batch.errors import FaceattrError
from faceattr_batch.faces.load import FACE_COLUMNS, FRAMING_ALIGNED
from faceattr_batch.io.atomic import replacing, write_json
from faceattr_batch.metrics import attributes as metrics
from faceattr_batch.pipelines.predict import OUTPUT_COLUMNS, error_kind

log = logging.getLogger(__name__)

THUMB_SIDE = 96
WORST_K = 12
MIN_SLICE = 20  # slices smaller than this are listed but not ranked among the weakest
# what the report reads of predict's columns (the derived band/correct/error columns it recomputes); the face
# columns only where present (files written before face detection have none)
NEEDED = tuple(
    c
    for c in OUTPUT_COLUMNS
    if c not in ("pred_age_band", "true_age_band", "gender_correct", "race_correct", "age_error", *FACE_COLUMNS)
)
FACE_BOX = ("framing", "box_x", "box_y", "box_w", "box_h")


def build(predictions: Path | str, report_dir: Path | str) -> Path:
    """Write the report files into ``report_dir``; returns the path of ``report.html``."""
    predictions, report_dir = Path(predictions), Path(report_dir)
    frame = _read(predictions)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FaceattrError(f"cannot create {report_dir}: {err.strerror or err}") from None
    coded = metrics.from_predictions(frame)
    labelled = coded.filter(
        pl.any_horizontal([pl.col(c).is_not_null() for c in ("true_age", "true_gender", "true_race")])
    )
    summary = _summary(frame, predictions)
    plots: dict[str, Path] = {}
    sections: dict = {}
    if labelled.height:
        breakdown = metrics.breakdown(labelled, metrics.SLICE_BY, intervals=True)
        breakdown.write_parquet(report_dir / "breakdown.parquet")
        by = {key: _in_label_order(metrics.breakdown(labelled, [key], intervals=True)) for key in metrics.SLICE_BY}
        calibration = metrics.calibration(labelled)
        worst = metrics.worst_errors(labelled, WORST_K)
        summary |= {
            "overall": metrics.overall(labelled, intervals=True),
            "gender_confusion": metrics.confusion_matrix(labelled, "gender"),
            "race_confusion": metrics.confusion_matrix(labelled, "race"),
            "calibration": {
                **metrics.calibration_errors(labelled),
                "age_interval_coverage_80": metrics.age_interval_coverage(labelled),
            },
            **{f"by_{key}": table.to_dicts() for key, table in by.items()},
            "worst": {key: _worst_rows(table) for key, table in worst.items()},
        }
        plots = _plots(labelled, summary, by, calibration, report_dir)
        sections = {"breakdown": breakdown, "by": by, "worst": worst}
    write_json(report_dir / "metrics.json", summary)  # ratios over zero cases (NaN, inf) become null
    page = _html(summary, plots, sections)
    target = report_dir / "report.html"
    with replacing(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def _read(predictions: Path) -> pl.DataFrame:
    if not predictions.is_file():
        raise FaceattrError(f"{predictions}: no such predictions file")
    try:
        columns = pl.read_parquet_schema(predictions)
    except Exception as err:  # polars raises several types for non-Parquet bytes
        raise FaceattrError(f"{predictions}: not a readable Parquet file ({str(err).splitlines()[0][:160]})") from None
    missing = [c for c in NEEDED if c not in columns]
    if missing:
        raise FaceattrError(f"{predictions}: not a `predict` output (missing columns: {', '.join(missing)})")
    return pl.read_parquet(predictions, columns=[*NEEDED, *(c for c in FACE_BOX if c in columns)])


def _in_label_order(table: pl.DataFrame) -> pl.DataFrame:
    """Rows in vocabulary order (White, Black, ...; male, female; 0-2, 3-9, ...), not alphabetical."""
    orders = {"race": RACES, "gender": GENDERS, "age_band": AGE_BAND_NAMES}
    keys = [c for c in orders if c in table.columns]
    ranks = [pl.col(c).cast(pl.String).replace_strict(orders[c], list(range(len(orders[c])))) for c in keys]
    return table.sort(ranks)


def _summary(frame: pl.DataFrame, predictions: Path) -> dict:
    errors = (
        frame.filter(pl.col("error").is_not_null())
        .group_by(error_kind(pl.col("error")).alias("kind"))
        .len()
        .sort("len", "kind", descending=[True, False])
    )
    models = frame.select("model_name", "model_version").unique().sort("model_name").to_dicts()
    return {
        "predictions": str(predictions.resolve()),
        "tool_version": __version__,
        "models": models,
        "images": frame["path"].n_unique(),
        "predicted": frame.filter(pl.col("error").is_null()).height,
        "errors": dict(errors.iter_rows()),
        "pred_gender_counts": _counts(frame, "pred_gender", GENDERS),
        "pred_race_counts": _counts(frame, "pred_race", RACES),
    }


def _counts(frame: pl.DataFrame, column: str, order: tuple[str, ...]) -> dict[str, int]:
    counts = dict(frame.filter(pl.col(column).is_not_null()).group_by(column).len().iter_rows())
    return {name: counts.get(name, 0) for name in order}


def _worst_rows(table: pl.DataFrame) -> list[dict]:
    keep = [c for c in ("path", "true_age", "pred_age", "age_low", "age_high", "abs_age_error", "confidence")]
    rows = table.select([c for c in keep if c in table.columns], "true_gender", "pred_gender", "true_race", "pred_race")
    return rows.with_columns(
        *[pl.col(c).replace_strict(dict(enumerate(GENDERS)), default=None) for c in ("true_gender", "pred_gender")],
        *[pl.col(c).replace_strict(dict(enumerate(RACES)), default=None) for c in ("true_race", "pred_race")],
    ).to_dicts()


# --- plots ------------------------------------------------------------------------------------------------


def _plots(labelled, summary, by, calibration, folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    made = {}

    def save(fig, name: str) -> None:
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made[name] = path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1.6]})
    _confusion(axes[0], summary["gender_confusion"], GENDERS, "gender")
    _confusion(axes[1], summary["race_confusion"], RACES, "race")
    fig.tight_layout()
    save(fig, "confusion")

    ages = labelled.filter(pl.col("true_age").is_not_null() & pl.col("pred_age").is_not_null())
    if ages.height:
        fig, ax = plt.subplots(figsize=(6, 5.2))
        true_age, pred_age = ages["true_age"].to_numpy(), ages["pred_age"].to_numpy()
        top = max(float(true_age.max()), float(pred_age.max()), 10.0) + 2
        if ages.height > 2000:
            hexes = ax.hexbin(true_age, pred_age, gridsize=48, bins="log", cmap="viridis", mincnt=1)
            fig.colorbar(hexes, ax=ax, label="images (log)")
        else:
            ax.scatter(true_age, pred_age, s=8, alpha=0.5)
        ax.plot([0, top], [0, top], color="crimson", lw=1, label="perfect")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="true age", ylabel="predicted age (expected)")
        ax.set_title(f"predicted vs true age (MAE {summary['overall']['age_mae']:.2f} y)")
        ax.legend(loc="upper left")
        save(fig, "age_pred_vs_true")

    table = by["age_band"]
    if table.height:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        _bars(ax, table, "age_band", "age_mae", "age MAE (years)")
        ax.set_title("age error by true age band (95% CI)")
        save(fig, "error_by_age_band")

    table = by["race"]
    if table.height:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        _bars(axes[0], table, "race", "gender_accuracy", "gender accuracy")
        _bars(axes[1], table, "race", "race_accuracy", "race accuracy")
        _bars(axes[2], table, "race", "age_mae", "age MAE (years)")
        fig.suptitle("errors by true race (95% CI)")
        fig.tight_layout()
        save(fig, "error_by_race")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, label in ((axes[0], "gender", "P(female)"), (axes[1], "race", "top race probability")):
        data = calibration[key]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        if data.height:
            ax.plot(data["confidence"], data["observed"], marker="o")
            for x, y, n in data.select("confidence", "observed", "n").iter_rows():
                ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ece = summary["calibration"][f"{key}_ece"]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean {label} in bin")
        ax.set_ylabel("share female" if key == "gender" else "accuracy")
        ax.set_title(f"{key} calibration (ECE {ece:.3f})" if ece is not None else f"{key} calibration")
    fig.tight_layout()
    save(fig, "calibration")
    return made


def _confusion(ax, matrix: list[list[int]], names: tuple[str, ...], title: str) -> None:
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j, i, f"{int(counts[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title} confusion (row-normalised)")


def _bars(ax, table: pl.DataFrame, key: str, value: str, label: str) -> None:
    import numpy as np

    names = [str(v) for v in table[key].to_list()]
    values = table[value].fill_null(float("nan")).to_numpy().astype(float)
    low = table[f"{value}_low"].fill_null(float("nan")).to_numpy().astype(float)
    high = table[f"{value}_high"].fill_null(float("nan")).to_numpy().astype(float)
    errors = np.clip(np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0), 0.0, None)
    ax.bar(names, values, yerr=errors, capsize=3, color="#4878d0")
    for x, (v, n) in enumerate(zip(values, table["n"].to_list(), strict=True)):
        if not math.isnan(v):
            ax.annotate(f"n={n}", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=30)


# --- html -------------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px}.muted{color:#777}
img.plot{max-width:100%;display:block;margin:8px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:150px;font-size:11px}
.thumb span{overflow-wrap:anywhere}
.thumb img{width:96px;height:96px;object-fit:cover;display:block;border:1px solid #ccc}
.missing{width:96px;height:96px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}
"""


def _html(summary: dict, plots: dict[str, Path], sections: dict) -> str:
    esc = html.escape
    models = ", ".join(f"{m['model_name']} {m['model_version']}" for m in summary["models"] if m["model_name"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>faceattr-batch report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>faceattr-batch predictions report</h1>",
        f"<p class='muted'>{esc(summary['predictions'])}<br>model: {esc(models or '-')} · "
        f"faceattr-batch {esc(__version__)}</p>",
        "<div class='cards'>",
        _card("images", summary["images"]),
        _card("predicted", summary["predicted"]),
        _card("errors", sum(summary["errors"].values())),
    ]
    overall = summary.get("overall")
    if overall:
        parts += [
            _card("gender accuracy", _pct(overall["gender_accuracy"]), _ci(overall, "gender_accuracy", True)),
            _card("race accuracy", _pct(overall["race_accuracy"]), _ci(overall, "race_accuracy", True)),
            _card("age MAE", _num(overall["age_mae"], " y"), _ci(overall, "age_mae", False)),
        ]
    parts.append("</div>")
    if summary["errors"]:
        rows = "".join(f"<tr><td class='l'>{esc(k)}</td><td>{v}</td></tr>" for k, v in summary["errors"].items())
        parts.append(
            f"<h2>Errors (no predictions)</h2><table><tr><th class='l'>reason</th><th>images</th></tr>{rows}</table>"
        )
    if not overall:
        parts.append(
            "<h2>No true labels</h2><p>Metrics need labels: UTKFace-style file names "
            "(<code>age_gender_race_datetime.jpg</code>) or <code>predict --labels index.parquet</code>.</p>"
        )
        parts.append(_html_counts(summary))
        return "".join(parts) + "</body></html>"
    parts.append(_html_metrics(summary))
    for name, title in (
        ("confusion", "Confusion matrices"),
        ("age_pred_vs_true", "Predicted vs true age"),
        ("error_by_age_band", "Age error by age band"),
        ("error_by_race", "Errors by race"),
        ("calibration", "Calibration"),
    ):
        if name in plots:
            data = base64.b64encode(plots[name].read_bytes()).decode()
            parts.append(f"<h2>{title}</h2><img class='plot' alt='{name}' src='data:image/png;base64,{data}'>")
    parts.append(_html_weakest(sections["breakdown"]))
    parts.append(_html_worst(sections["worst"]))
    parts.append(_html_slices(sections["breakdown"]))
    return "".join(parts) + "</body></html>"


def _card(title: str, value, note: str = "") -> str:
    return f"<div class='card'><span class='muted'>{html.escape(title)}</span><b>{value}</b>{note}</div>"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value) -> str:
    return "-" if _missing(value) else f"{100 * value:.1f}%"


def _num(value, unit: str = "") -> str:
    return "-" if _missing(value) else f"{value:.2f}{unit}"


def _ci(row: dict, key: str, percent: bool) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if low is None or high is None:
        return ""
    show = _pct if percent else _num
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
        f"precision (female) {_pct(o['gender_precision'])}, recall {_pct(o['gender_recall'])}, "
        f"F1 {_pct(o['gender_f1'])}; ECE {_num(cal['gender_ece'])}"
    )
    race = f"macro-F1 {_pct(o['race_macro_f1'])}; ECE {_num(cal['race_ece'])}"
    age = (
        f"RMSE {_num(o['age_rmse'], ' y')}, CS@5 {_pct(o['age_cs5'])}, gross (&gt;10 y) {_pct(o['age_gross_rate'])}, "
        f"bias {_num(o['age_bias'], ' y')}, 80% interval covers {_pct(cal['age_interval_coverage_80'])}"
    )
    rows = [
        ("gender", o["n_gender"], f"accuracy {_pct(o['gender_accuracy'])}", gender),
        ("race", o["n_race"], f"accuracy {_pct(o['race_accuracy'])}", race),
        ("age", o["n_age"], f"MAE {_num(o['age_mae'], ' y')}", age),
    ]
    body = "".join(
        f"<tr><td class='l'>{a}</td><td>{n}</td><td>{h}</td><td class='l'>{m}</td></tr>" for a, n, h, m in rows
    )
    return (
        "<h2>Metrics</h2><table><tr><th class='l'>attribute</th><th>n</th><th>headline</th>"
        f"<th class='l'>more</th></tr>{body}</table>"
    )


def _html_weakest(breakdown: pl.DataFrame) -> str:
    big, note = breakdown.filter(pl.col("n") >= MIN_SLICE), f"n ≥ {MIN_SLICE}"
    if big.is_empty():
        big, note = breakdown, f"every slice is under {MIN_SLICE} images: wide intervals"
    lists = [
        ("highest age MAE", big.sort("age_mae", descending=True, nulls_last=True).head(5), "age_mae", False),
        ("lowest gender accuracy", big.sort("gender_accuracy", nulls_last=True).head(5), "gender_accuracy", True),
        ("lowest race accuracy", big.sort("race_accuracy", nulls_last=True).head(5), "race_accuracy", True),
    ]
    html_lists = []
    for title, rows, key, percent in lists:
        show = _pct if percent else _num
        items = "".join(
            f"<tr><td class='l'>{r['race']} · {r['gender']} · {r['age_band']}</td><td>{r['n']}</td>"
            f"<td>{show(r[key])}</td><td class='muted'>{show(r[f'{key}_low'])} – {show(r[f'{key}_high'])}</td></tr>"
            for r in rows.to_dicts()
        )
        html_lists.append(
            f"<div><b>{title}</b><table><tr><th class='l'>slice</th><th>n</th><th>value</th><th>95% CI</th></tr>"
            f"{items}</table></div>"
        )
    return f"<h2>Weakest slices (race × gender × age band; {note})</h2><div class='cards'>{''.join(html_lists)}</div>"


def _html_worst(worst: dict[str, pl.DataFrame]) -> str:
    parts = ["<h2>Worst errors</h2>"]
    for key, title in (
        ("age", "largest age errors"),
        ("gender", "most confident wrong gender"),
        ("race", "most confident wrong race"),
    ):
        table = worst[key]
        parts.append(f"<h3>{title}</h3>")
        if table.is_empty():
            parts.append("<p class='muted'>none</p>")
            continue
        cells = []
        for row in table.to_dicts():
            cells.append(f"<div class='thumb'>{_thumbnail(row)}{_caption(key, row)}</div>")
        parts.append(f"<div class='thumbs'>{''.join(cells)}</div>")
    return "".join(parts)


def _caption(key: str, row: dict) -> str:
    if key == "age":
        text = f"true {row['true_age']} · predicted {row['pred_age']:.1f} ({row['age_low']:.0f}–{row['age_high']:.0f})"
    else:
        names = GENDERS if key == "gender" else RACES
        text = f"true {names[row[f'true_{key}']]} · predicted {names[row[f'pred_{key}']]} ({row['confidence']:.0%})"
    path = html.escape(row["path"])
    name = html.escape(os.path.basename(row["path"]))
    return f"<b>{html.escape(text)}</b><br><span class='muted' title='{path}'>{name}</span>"


def _thumbnail(row: dict) -> str:
    """A small JPEG of the row's image, or of its face when detected, as a data URI (made now, from the user's
    file), or a placeholder."""
    from PIL import Image

    from faceattr_batch.data.decode import DecodeError, read_rgb

    detected = row.get("framing") == FRAMING_ALIGNED
    try:
        pixels = read_rgb(row["path"], draft_to=None if detected else THUMB_SIDE)
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


def _html_slices(breakdown: pl.DataFrame) -> str:
    header = (
        "<tr><th class='l'>race</th><th class='l'>gender</th><th class='l'>age band</th><th>n</th>"
        "<th>gender acc</th><th>95% CI</th><th>race acc</th><th>95% CI</th><th>age MAE</th><th>95% CI</th></tr>"
    )
    rows = []
    for r in _in_label_order(breakdown).to_dicts():
        rows.append(
            f"<tr><td class='l'>{r['race']}</td><td class='l'>{r['gender']}</td><td class='l'>{r['age_band']}</td>"
            f"<td>{r['n']}</td><td>{_pct(r['gender_accuracy'])}</td>"
            f"<td class='muted'>{_pct(r['gender_accuracy_low'])} – {_pct(r['gender_accuracy_high'])}</td>"
            f"<td>{_pct(r['race_accuracy'])}</td>"
            f"<td class='muted'>{_pct(r['race_accuracy_low'])} – {_pct(r['race_accuracy_high'])}</td>"
            f"<td>{_num(r['age_mae'])}</td>"
            f"<td class='muted'>{_num(r['age_mae_low'])} – {_num(r['age_mae_high'])}</td></tr>"
        )
    return (
        "<h2>All slices (race × gender × age band)</h2><p class='muted'>also in breakdown.parquet</p>"
        f"<table>{header}{''.join(rows)}</table>"
    )
