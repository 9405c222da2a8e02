"""The report page's fairness parts, from metrics.json's ``fairness``, ``weakest``, ``group_confusion`` and
``group_calibration`` (``reporting.folder``): the summary of gaps at the top, the weakest slices, each slicing
attribute's groups in a sortable table, and per-group confusion matrices and calibration figures behind a
<select>."""

from __future__ import annotations

import html

from faceattr_batch.data.labels import GENDERS, RACES
from faceattr_batch.reporting.html_table import interval, num, pct, sortable_table

# the per-group table's columns (every metric, per-class race recall and precision included, is in metrics.json)
GROUP_COLUMNS = (
    "gender_accuracy", "gender_recall_female", "gender_recall_male", "gender_fpr", "gender_fnr", "gender_ece",
    "race_accuracy", "race_ece", "age_mae", "age_bias", "age_r2", "age_bin_accuracy",
)  # fmt: skip
_WORDS = {"mae": "MAE", "r2": "R²", "ece": "ECE", "fpr": "FPR", "fnr": "FNR"}
_SHORT = {"gender_recall_female": "recall female", "gender_recall_male": "recall male", "gender_fpr": "FPR",
          "gender_fnr": "FNR", "gender_accuracy": "gender acc", "race_accuracy": "race acc",
          "age_bin_accuracy": "age in bin"}  # fmt: skip
CSS = ".cm[hidden],.cal[hidden]{display:none} table.cm td{min-width:34px} .sigs li{margin:2px 0}"


def _pick_script(select: str, blocks: str) -> str:
    """The <select> ``select`` shows the div of class ``blocks`` whose id is its value and hides the others."""
    return f"""<script>
document.getElementById('{select}').addEventListener('change', function (event) {{
  document.querySelectorAll('div.{blocks}').forEach(function (div) {{ div.hidden = div.id !== event.target.value; }});
}});
</script>"""


def measured(summary: dict, name: str) -> bool:
    """Whether any group has a row for the metric (the age bin accuracy needs ages labelled as bins): one that
    none has is left off the page, not listed as too few."""
    return any(group["metrics"][name]["n"] for group in summary["groups"])


def label(name: str) -> str:
    """A metric's name for people: ``gender_recall_female`` -> ``gender recall female``, ``age_mae`` -> ``age MAE``."""
    return " ".join(_WORDS.get(word, word) for word in name.split("_"))


def _value_format(name: str, meta: dict):
    if meta["interval"] == "wilson":
        return pct
    if name in ("age_mae", "age_bias"):
        return lambda value: num(value, " y")
    return lambda value: num(value, digits=3)


def _gap_format(name: str, meta: dict):
    if meta["interval"] == "wilson":
        return lambda value: num(None if value is None else 100 * value, " pts", 1)
    return _value_format(name, meta)


def summary_html(contents: dict) -> str:
    """The fairness summary: the significant gaps first, then per attribute every metric's gap and ratio with
    their intervals, the groups too few to rank, and the metrics not compared (with why)."""
    fairness = contents["fairness"]
    first = next(iter(fairness.values()))
    parts = [
        "<h2>Fairness summary</h2>",
        f"<p class='muted'>Per slicing attribute: the gap (highest − lowest group) and the ratio (lowest / highest) of "
        f"each metric over the groups with at least {first['min_group']} in the metric's count, with 95% bootstrap "
        f"intervals ({first['resamples']} resamples within each group, seed {first['seed']}). A gap is "
        "<span class='sig'>significant</span> when its interval excludes 0. Female is the positive class: FPR = "
        "males called female, FNR = females called male. Groups under "
        f"{first['min_group']} images are listed as too few and never ranked.</p>",
    ]
    significant = [
        f"<li><b>{html.escape(attribute)}</b>: {_gap_sentence(name, gap, summary['metrics'][name])}</li>"
        for attribute, summary in fairness.items()
        for name, gap in summary["gaps"].items()
        if gap["significant"]
    ]
    compared = sum(gap["gap"] is not None for summary in fairness.values() for gap in summary["gaps"].values())
    parts.append(f"<p><b>Significant gaps: {len(significant)}</b> of {compared} compared.</p>")
    if significant:
        parts.append(f"<ul class='sigs'>{''.join(significant)}</ul>")
    for attribute, summary in fairness.items():
        parts.append(_attribute_gaps(attribute, summary))
    return "".join(parts)


def _gap_sentence(name: str, gap: dict, meta: dict) -> str:
    show, delta = _value_format(name, meta), _gap_format(name, meta)
    return (
        f"{label(name)} gap {delta(gap['gap'])} ({interval(gap['gap_low'], gap['gap_high'], delta)}): "
        f"{html.escape(str(gap['max_group']))} {show(gap['max'])} vs {html.escape(str(gap['min_group']))} "
        f"{show(gap['min'])}"
    )


def _too_few(summary: dict) -> str:
    if not summary["too_few"]:
        return ""
    names = ", ".join(f"{html.escape(str(g['group']))} (n = {g['n']})" for g in summary["too_few"])
    return f"<p><span class='tag'>too few</span> under {summary['min_group']} images, not ranked: {names}</p>"


def _attribute_gaps(attribute: str, summary: dict) -> str:
    unsliced = f", {summary['n_unsliced']} without a value" if summary["n_unsliced"] else ""
    if unsliced and attribute == "age_band":  # FairFace's 100 "more than 70" of the quick start's 500, say
        unsliced += " (no age, or a bin across two bands: --slice-by true_age_low groups by the labelled bin)"
    parts = [
        f"<h3>by {html.escape(attribute)} <span class='muted'>({len(summary['groups'])} groups, "
        f"{summary['n']} images{unsliced})</span></h3>",
        _too_few(summary),
    ]
    rows, too_few, not_compared = [], [], {}  # not_compared: reason -> the metrics it keeps out
    for name, gap in summary["gaps"].items():
        if not measured(summary, name):
            continue
        if gap["gap"] is None:
            if gap["reason"].startswith("fewer than 2 groups"):
                too_few.append(label(name))
            else:
                not_compared.setdefault(gap["reason"], []).append(label(name))
            continue
        show, delta = _value_format(name, summary["metrics"][name]), _gap_format(name, summary["metrics"][name])
        significant = {True: "<span class='sig'>yes</span>", False: "no", None: "not computed"}[gap["significant"]]
        ratio_interval = interval(gap["ratio_low"], gap["ratio_high"], lambda v: num(v, digits=3), gap["ratio_reason"])
        rows.append([
            (label(name), label(name)), (str(gap["groups"]), gap["groups"]),
            (f"{delta(gap['gap'])}<small>{interval(gap['gap_low'], gap['gap_high'], delta, gap['reason'])}</small>",
             gap["gap"]),
            (significant, {True: 1, False: 0, None: None}[gap["significant"]]),
            (f"{num(gap['ratio'], digits=3)}<small>{ratio_interval}</small>", gap["ratio"]),
            (f"{html.escape(str(gap['max_group']))} {show(gap['max'])}", gap["max"]),
            (f"{html.escape(str(gap['min_group']))} {show(gap['min'])}", gap["min"]),
        ])  # fmt: skip
    if rows:
        headers = ["metric", "groups", "gap (95% CI)", "significant", "ratio (95% CI)", "highest", "lowest"]
        parts.append(sortable_table(headers, rows))
    if too_few:
        parts.append(
            f"<p class='muted'>not compared, fewer than 2 groups with at least {summary['min_group']} in the "
            f"metric's count (true females, predicted Asians, ...): {', '.join(too_few)}</p>"
        )
    if not_compared:
        why = [f"{', '.join(names)} ({html.escape(reason)})" for reason, names in not_compared.items()]
        parts.append(f"<p class='muted'>not compared: {'; '.join(why)}</p>")
    return "".join(parts)


def weakest_html(weakest: dict) -> str:
    """The weakest race × gender × age band slices per headline metric, ranked by the interval's pessimistic
    bound among the slices with at least ``min_group`` in the metric's count."""
    title = (
        "<h2>Weakest slices (race × gender × age band)</h2><p class='muted'>Ranked by the pessimistic end of the 95% "
        "interval (an accuracy's lower bound, MAE's upper bound) among the slices with at least "
        f"{weakest['min_group']} images: {weakest['ranked']} of {weakest['slices']}; the "
        f"{weakest['too_few']} smaller ones are not ranked (all are in the table of all slices).</p>"
    )
    if not weakest["ranked"]:
        return title + f"<p>No slice has {weakest['min_group']} images or more (the largest: {weakest['largest']}).</p>"
    lists = []
    for name, rows in weakest["metrics"].items():
        show = pct if name != "age_mae" else (lambda value: num(value, " y"))
        items = "".join(
            f"<tr><td class='l'>{html.escape(str(r['group']))}</td><td>{r['n']}</td><td>{show(r['value'])}</td>"
            f"<td class='muted'>{interval(r['low'], r['high'], show)}</td></tr>"
            for r in rows
        )
        lists.append(
            f"<div><b>{label(name)}</b><table><tr><th class='l'>slice</th><th>n</th><th>value</th><th>95% CI</th>"
            f"</tr>{items}</table></div>"
        )
    return title + f"<div class='cards'>{''.join(lists)}</div>"


def groups_html(contents: dict) -> str:
    """Each slicing attribute's groups, one sortable table each, and the per-group confusion matrices."""
    parts = [
        "<h2>Groups of each slicing attribute</h2><p class='muted'>Click a header to sort. Under each value its 95% "
        "interval (Wilson for proportions, Student's t for MAE and bias, bootstrap percentile otherwise) or why "
        "there is none: a group too few to rank shows no bootstrap interval (with a handful of rows it stays "
        "between their values, far too narrow; metrics.json keeps it). Per-class race recall and precision are in "
        "metrics.json "
        "(<code>fairness.&lt;attribute&gt;.groups</code>).</p>"
    ]
    for attribute, summary in contents["fairness"].items():
        columns = [name for name in GROUP_COLUMNS if measured(summary, name)]
        headers = ["group", "n", *(_SHORT.get(name, label(name)) for name in columns)]
        rows = []
        for index, group in enumerate(summary["groups"]):
            tag = " <span class='tag'>too few</span>" if group["n"] < summary["min_group"] else ""
            row = [(html.escape(str(group["group"])) + tag, index), (str(group["n"]), group["n"])]
            for name in columns:
                entry, show = group["metrics"][name], _value_format(name, summary["metrics"][name])
                low, high, reason = entry["low"], entry["high"], entry["reason"]
                if tag and entry["interval"] == "bootstrap" and entry["value"] is not None:
                    low, high, reason = None, None, f"n < {summary['min_group']}"
                row.append(
                    (f"{show(entry['value'])}<small>{interval(low, high, show, reason)}</small>", entry["value"])
                )
            rows.append(row)
        parts.append(f"<h3>by {html.escape(attribute)}</h3>{sortable_table(headers, rows)}")
    parts.append(_confusion_html(contents["group_confusion"]))
    return "".join(parts)


def _matrix(matrix: list[list[int]], names: tuple[str, ...], title: str) -> str:
    head = "".join(f"<th>{name}</th>" for name in names)
    rows = []
    for name, counts in zip(names, matrix, strict=True):
        total = max(sum(counts), 1)
        cells = "".join(f"<td style='background:rgba(72,120,208,{count / total:.2f})'>{count}</td>" for count in counts)
        rows.append(f"<tr><th class='l'>{name}</th>{cells}</tr>")
    return f"<table class='cm'><tr><th class='l'>{title}: true \\ predicted</th>{head}</tr>{''.join(rows)}</table>"


def _confusion_html(confusion: dict) -> str:
    options = "".join(
        f"<option value='cm-{index}'>{html.escape(attribute)}</option>" for index, attribute in enumerate(confusion)
    )
    blocks = []
    for index, groups in enumerate(confusion.values()):
        tables = "".join(
            f"<div><b>{html.escape(str(g['group']))}</b> <span class='muted'>n = {g['n']}</span>"
            f"{_matrix(g['gender'], GENDERS, 'gender')}{_matrix(g['race'], RACES, 'race')}</div>"
            for g in groups
        )
        blocks.append(f"<div class='cm cards' id='cm-{index}'{' hidden' if index else ''}>{tables}</div>")
    return (
        "<h2>Confusion matrices per group</h2><p>slicing attribute: "
        f"<select id='cm-pick'>{options}</select> <span class='muted'>(rows: true class; shade: share of the "
        f"row)</span></p>{''.join(blocks)}{_pick_script('cm-pick', 'cm')}"
    )


def group_calibration_html(calibration: dict, images: dict[str, str]) -> str:
    """Per slicing attribute (a <select>), its figure of one reliability line per group (``images``: slicing
    attribute -> its <img>, absent without probabilities) and the groups too few to draw."""
    first = next(iter(calibration.values()))
    options = "".join(
        f"<option value='cal-{index}'>{html.escape(attribute)}</option>" for index, attribute in enumerate(calibration)
    )
    blocks = []
    for index, (attribute, entry) in enumerate(calibration.items()):
        parts = [images.get(attribute, "<p class='muted'>no probabilities to calibrate</p>")]
        if entry["note"]:
            parts.append(f"<p class='muted'>{html.escape(entry['note'])}</p>")
        if entry["too_few"]:
            names = ", ".join(f"{html.escape(str(g['group']))} (n = {g['n']})" for g in entry["too_few"])
            parts.append(
                f"<p><span class='tag'>too few</span> under {entry['min_group']} images, not drawn: {names}</p>"
            )
        blocks.append(f"<div class='cal' id='cal-{index}'{' hidden' if index else ''}>{''.join(parts)}</div>")
    return (
        "<h2>Calibration per group</h2><p class='muted'>One reliability line per group with at least "
        f"{first['min_group']} images ({first['bins']} equal-width probability bins, a dot's area growing with "
        "its bin's images; on the dashed diagonal a probability is what it says; the bins are in metrics.json's "
        "<code>group_calibration</code>). Slicing "
        f"attribute: <select id='cal-pick'>{options}</select></p>{''.join(blocks)}{_pick_script('cal-pick', 'cal')}"
    )
