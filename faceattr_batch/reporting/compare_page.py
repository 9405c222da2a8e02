"""The report page's comparison of two runs, from metrics.json's ``compare`` (``reporting.compare``): who A and B
are and how many images they share, every metric side by side with B − A and its paired interval (overall, then
per group of each slicing attribute: the headline metrics in view, every metric behind a click), the disagreements
and the gallery of the largest ones (thumbnails made by the page's own ``thumbnail``)."""

from __future__ import annotations

import html
import os
from collections.abc import Callable

import polars as pl

from faceattr_batch.reporting import fairness_page
from faceattr_batch.reporting.binned_ages import bin_names
from faceattr_batch.reporting.compare import shown_metrics
from faceattr_batch.reporting.foreign_page import foreign_html
from faceattr_batch.reporting.html_table import interval, num, pct, sortable_table

HEADLINE = ("gender_accuracy", "race_accuracy", "age_mae", "age_bin_accuracy")  # those of them shown_metrics keeps
_NAMES = {"gender_f1": "gender F1", "race_macro_f1": "race macro-F1", "age_rmse": "age RMSE", "age_cs5": "age CS@5",
          "age_gross_rate": "age gross (> 10 y)", "gender_precision": "gender precision (female)",
          "age_bin_accuracy": "age in bin"}  # fmt: skip
CSS = """
.runs td{text-align:left;vertical-align:top} .diff{white-space:nowrap}
.better{color:#1b7f3b;font-weight:600} .worse{color:#b3261e;font-weight:600}
"""


def label(name: str) -> str:
    """A compared metric's name for people (``fairness_page.label``, and the few it does not spell)."""
    return _NAMES.get(name) or fairness_page.label(name)


def _value(unit: str) -> Callable:
    return {"share": pct, "years": lambda v: num(v, " y"), "score": lambda v: num(v, digits=3)}[unit]


def _delta(unit: str) -> Callable:
    def show(value) -> str:
        if value is None:
            return "-"
        return {"share": f"{100 * value:+.1f} pts", "years": f"{value:+.2f} y", "score": f"{value:+.3f}"}[unit]

    return show


def _verdict(entry: dict, better: str) -> str:
    """The words "B better" or "B worse" where the paired interval excludes 0 (for a bias: nearer 0, and only where
    both biases are on one side of 0: of -2 and +2 the interval of B - A says nothing about which is nearer), else
    none."""
    paired = entry["paired"]
    if not paired or paired["low"] is None or (paired["low"] <= 0 <= paired["high"]):
        return ""
    if better == "zero":
        if paired["a"] * paired["b"] <= 0:
            return ""
        up = abs(paired["b"]) < abs(paired["a"])
    else:
        up = (paired["low"] > 0) == (better == "higher")
    return "<span class='better'>B better</span>" if up else "<span class='worse'>B worse</span>"


def _diff_cell(entry: dict, meta: dict, shared: dict) -> tuple[str, float | None]:
    """B − A, and under it the paired interval (and the pairs' own B − A when not all rows are paired) or why
    there is none."""
    delta = _delta(meta["unit"])
    text = f"<span class='diff'>{delta(entry['diff'])}</span> {_verdict(entry, meta['better'])}"
    paired = entry["paired"]
    if paired is None:
        return f"{text}<small>no paired interval: {html.escape(shared['reason'] or 'no pairs')}</small>", entry["diff"]
    same = paired["diff"] is None or (entry["diff"] is not None and abs(paired["diff"] - entry["diff"]) < 1e-9)
    on_pairs = "" if same else f"on the {paired['n']} pairs {delta(paired['diff'])}: "
    shown = interval(paired["low"], paired["high"], delta, paired["reason"])
    return f"{text}<small>{on_pairs}{shown}</small>", entry["diff"]


def _runs(compare: dict) -> str:
    rows = []
    for key in ("a", "b"):
        run = compare[key]
        attributes = ", ".join(run["attributes"]) or "nothing"
        rows.append(
            f"<tr><td><b>{key.upper()}</b></td><td><b>{html.escape(run['name'])}</b><br>"
            f"<span class='muted'>{html.escape(run['predictions'])}</span></td><td>{run['images']} images, "
            f"{run['predicted']} predicted, {run['metric_rows']} in the metrics; predicts {attributes}</td></tr>"
        )
    shared = compare["shared"]
    if shared["paired"]:
        pairing = (
            f"{shared['images']} images in both runs (matched by {shared['matched_by']}), {shared['pairs']} of them "
            f"with one predicted face in each: the pairs; {shared['labelled_pairs']} pairs labelled. Intervals of "
            f"B − A: paired bootstrap, the pairs resampled jointly ({compare['resamples']} resamples, seed "
            f"{compare['seed']}, {round(100 * compare['level'])}%)."
        )
    else:
        pairing = f"{shared['images']} images in both runs: {html.escape(shared['reason'])}."
    only = f" Only in A: {shared['only_a']}; only in B: {shared['only_b']}."
    several = f" {shared['several_faces']} shared images with several faces are not paired." * bool(
        shared["several_faces"]
    )
    blocks = foreign_html(compare["a"]["foreign"], "A") + foreign_html(compare["b"]["foreign"], "B")
    return f"<table class='runs'>{''.join(rows)}</table><p>{pairing}{only}{several}</p>{blocks}"


def _overall(compare: dict) -> str:
    a, b = (html.escape(compare[key]["name"]) for key in ("a", "b"))
    rows = []
    for name in shown_metrics(compare):
        entry, meta = compare["overall"][name], compare["metrics"][name]
        show = _value(meta["unit"])
        rows.append([
            (label(name), label(name)),
            (f"{show(entry['a'])}<small>n = {entry['n_a']}</small>", entry["a"]),
            (f"{show(entry['b'])}<small>n = {entry['n_b']}</small>", entry["b"]),
            _diff_cell(entry, meta, compare["shared"]),
        ])  # fmt: skip
    table = sortable_table(["metric", f"A: {a}", f"B: {b}", "B − A (paired 95% CI)"], rows)
    return f"<h3>Overall</h3>{table}{_binned_note(compare)}"


def _binned_note(compare: dict) -> str:
    """Whose ages in years were put in the other's bins to measure both by the share in the right bin."""
    binned = compare["age_bins"]
    if binned is None:
        return ""
    other = "B" if binned["binned"] == "A" else "A"
    return (
        f"<p class='muted'>age in bin: {binned['binned']}'s ages in years put in {other}'s bins "
        f"({html.escape(', '.join(binned['bins']))}), rounded to whole years, so both are measured alike; "
        f"its MAE stays its own.</p>"
    )


def _slice_tables(attribute: str, table: dict, compare: dict) -> str:
    title = html.escape(attribute.replace("_", " "))
    headline, every = [], []
    shown = shown_metrics(compare)
    headline_metrics = [name for name in HEADLINE if name in shown]
    for order, group in enumerate(table["groups"]):  # sorted by the groups' own order (age bands, bins), not as text
        name = html.escape(str(group["group"]))
        row = [(name, order), (str(group["n_a"]), group["n_a"]), (str(group["n_b"]), group["n_b"])]
        row.append((str(group["pairs"]), group["pairs"]))
        for metric in headline_metrics:
            entry, meta = group["metrics"][metric], compare["metrics"][metric]
            show = _value(meta["unit"])
            row += [(show(entry["a"]), entry["a"]), (show(entry["b"]), entry["b"])]
            row.append(_diff_cell(entry, meta, compare["shared"]))
        headline.append(row)
        for metric in (name for name in shown if name in group["metrics"]):
            entry, meta = group["metrics"][metric], compare["metrics"][metric]
            show = _value(meta["unit"])
            every.append([
                (name, order), (label(metric), label(metric)),
                (f"{show(entry['a'])}<small>n = {entry['n_a']}</small>", entry["a"]),
                (f"{show(entry['b'])}<small>n = {entry['n_b']}</small>", entry["b"]),
                _diff_cell(entry, meta, compare["shared"]),
            ])  # fmt: skip
    headers = [title, "n A", "n B", "pairs"]
    for metric in headline_metrics:
        headers += [f"{label(metric)} A", "B", "B − A"]
    binned = f" <span class='muted'>({table['bins']} quantile bins over both runs)</span>" * bool(table["bins"])
    return (
        f"<h3>by {title}{binned}</h3>{sortable_table(headers, headline)}"
        f"<details><summary>every metric by {title}</summary>"
        f"{sortable_table([title, 'metric', 'A', 'B', 'B − A (paired 95% CI)'], every, left=2)}</details>"
    )


def _disagreements(compare: dict) -> str:
    counts = compare["disagreements"]
    what = {
        "gender": "a different gender",
        "race": "a different race",
        "age": f"ages more than {counts['age_threshold']} years apart"
        + (" (a bin from its nearer end)" if counts["age"]["as_bins"] else ""),
    }
    rows = "".join(
        f"<tr><td class='l'>{key}</td><td class='l'>{text}</td><td>{counts[key]['compared']}</td>"
        f"<td>{counts[key]['disagree']}</td><td>{pct(counts[key]['share'])}</td></tr>"
        for key, text in what.items()
    )
    return (
        f"<h3>Disagreements</h3><p class='muted'>Over the {counts['pairs']} pairs, labelled or not, where both runs "
        "predict the attribute.</p><table><tr><th class='l'>attribute</th><th class='l'>disagree when</th>"
        f"<th>pairs</th><th>disagree</th><th>share</th></tr>{rows}</table>"
    )


def _confidence(row: dict, run: str, key: str) -> str:
    if key == "gender":
        p = row[f"{run}_p_female"]
        p = None if p is None else (p if row[f"{run}_gender"] == "female" else 1 - p)
    else:
        p = row[f"{run}_race_confidence"]
    return "" if p is None else f" ({p:.0%})"


def _age(row: dict, who: str) -> str | None:
    """An age as the gallery shows it: years, or a bin ("20-29", "70+" up to the oldest age) where that is all."""
    age, low, high = row[f"{who}_age"], row[f"{who}_age_low"], row[f"{who}_age_high"]
    if age is not None:
        return str(age) if who == "true" else num(age, digits=1)
    if low is None or high is None:
        return None
    return bin_names([(low, high)])[0].replace("-", "\u2011")  # a hyphen the caption does not break at


def _caption(key: str, row: dict) -> str:
    if key == "age":
        shown = [("true", _age(row, "true"))] + [(r.upper(), _age(row, r)) for r in ("a", "b")]
    else:
        shown = [("true", row[f"true_{key}"])]
        shown += [(r.upper(), f"{row[f'{r}_{key}']}{_confidence(row, r, key)}") for r in ("a", "b")]
    text = " · ".join(f"{who} {'-' if value is None else value}" for who, value in shown)
    path = html.escape(row["path"])
    name = html.escape(os.path.basename(row["path"]))
    return f"<b>{html.escape(text)}</b><br><span class='muted' title='{path}'>{name}</span>"


def _gallery(compare: dict, gallery: dict[str, pl.DataFrame], thumbnail: Callable[[dict], str]) -> str:
    parts = ["<h3>Largest disagreements</h3>"]
    for key, title, rank in (
        ("age", "ages farthest apart", "by the distance between the two ages"),
        ("gender", "different gender", "by the distance between the two P(female)"),
        ("race", "different race", "by the lower of the two confidences: both sure"),
    ):
        parts.append(f"<h4>{title} <span class='muted'>({rank})</span></h4>")
        rows = compare["gallery"][key]
        if not rows:
            parts.append("<p class='muted'>none</p>")
            continue
        cells = [
            f"<div class='thumb'>{thumbnail(frame_row)}{_caption(key, row)}</div>"
            for frame_row, row in zip(gallery[key].to_dicts(), rows, strict=True)
        ]
        parts.append(f"<div class='thumbs'>{''.join(cells)}</div>")
    return "".join(parts)


def compare_html(compare: dict, gallery: dict[str, pl.DataFrame], thumbnail: Callable[[dict], str]) -> str:
    """The comparison section: the runs, the metrics overall and per slice, the disagreements and their gallery;
    ``gallery``: the rows behind ``compare["gallery"]`` (paths and face boxes), ``thumbnail``: row -> <img>."""
    parts = [
        "<h2>Two runs compared: B − A</h2>",
        _runs(compare),
        "<p class='muted'>Each metric over each run's labelled images; B − A, and under it its paired 95% interval "
        "(<span class='better'>B better</span> / <span class='worse'>B worse</span> where it excludes 0). The "
        "sections after this one are run A's alone.</p>",
        _overall(compare),
    ]
    parts += [_slice_tables(attribute, table, compare) for attribute, table in compare["slices"].items()]
    parts.append(_disagreements(compare))
    parts.append(_gallery(compare, gallery, thumbnail))
    parts.append(f"<hr><p><b>Run A alone</b> ({html.escape(compare['a']['name'])}): the sections below.</p>")
    return "".join(parts)
