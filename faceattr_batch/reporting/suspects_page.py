"""The report page's "Suspect labels" section, from metrics.json's ``suspects`` (``reporting.suspects_list``): the
counts per attribute, why an attribute was not examined, the rows not ranked because the model saw them, and a
gallery of the top suspects per attribute (thumbnails made by the page's own ``thumbnail``)."""

from __future__ import annotations

import html
import os
from collections.abc import Callable

import polars as pl

TITLES = {"gender": "gender", "race": "race", "age": "age (years)"}
METHOD = (
    "Gender and race: confident learning (its estimate of how many labels of each class are another class, then "
    "that many labels with the largest margin against it); of those, a label is suspect where the model's top class "
    "is another one and gives the label under {ratio:g} of the mean probability it gives that class on its own "
    "rows; scored by 1 - the label's probability. Estimated wrong: confident learning's count, before that last "
    "rule. Age: the label's position under the predicted age distribution, re-centred and re-scaled per band of "
    "the predicted age so the model's own bias flags no band; suspect past a robust z of {threshold:g} and more "
    "than 5 years from the prediction. All of them in suspects.parquet."
)


def suspects_html(suspects: dict | None, gallery: dict[str, pl.DataFrame], thumbnail: Callable[[dict], str]) -> str:
    """The section; nothing without ``suspects`` (no labelled row)."""
    if not suspects:
        return ""
    esc = html.escape
    method = METHOD.format(threshold=suspects["age_threshold"], ratio=suspects["given_ratio"])
    parts = ["<h2>Suspect labels</h2>", f"<p class='muted'>{esc(method)}</p>"]
    if suspects["note"]:
        parts.append(f"<p class='note'>{esc(suspects['note'])}</p>")
    rows = []
    for attribute, title in TITLES.items():
        entry = suspects[attribute]
        reason = entry["reason"] or ""
        estimate = entry.get("estimated_errors", "–")  # age has no confident-learning estimate
        rows.append(
            f"<tr><td class='l'>{title}</td><td>{entry['labelled']}</td><td>{entry['examined']}</td>"
            f"<td>{estimate}</td><td>{entry['flagged']}</td><td class='l'>{esc(reason)}</td></tr>"
        )
    parts.append(
        "<table><tr><th class='l'>attribute</th><th>labelled</th><th>examined</th><th>estimated wrong</th>"
        f"<th>suspect</th><th class='l'>not examined because</th></tr>{''.join(rows)}</table>"
    )
    duplicates = suspects["duplicates"]
    if duplicates["groups"]:
        rows_listed = ", ".join(f"{TITLES[a]} {n}" for a, n in duplicates["rows"].items())
        parts.append(
            f"<p>{duplicates['groups']} duplicate groups hold disagreeing labels: their members whose label is not "
            f"the one the group's mean prediction favours are listed too ({esc(rows_listed)} rows), images the model "
            "was trained on included: a conflict needs no model.</p>"
        )
    for attribute, title in TITLES.items():
        if suspects[attribute]["reason"] and not suspects["counts"][attribute]:  # the table above says why
            continue
        top = suspects["top"][attribute]
        shown = "".join(
            f"<div class='thumb'>{thumbnail(face)}{_caption(row)}</div>"
            for face, row in zip(gallery[attribute].to_dicts(), top, strict=True)
        )
        heading = f"<h3>{title} <span class='muted'>(top {len(top)} of {suspects['counts'][attribute]})</span></h3>"
        parts.append(heading + (f"<div class='thumbs'>{shown}</div>" if top else "<p class='muted'>none</p>"))
    return "".join(parts)


def _caption(row: dict) -> str:
    score = "–" if row["score"] is None else f"{row['score']:.2f}"  # a conflict the model did not examine
    text = f"#{row['rank']} given {row['given']} · suggested {row['suggested']} · score {score}"
    if row["dup_group"] is not None:
        text += f" · duplicate group {row['dup_group']} ({row['group_labels']})"
    path = html.escape(row["path"])
    name = html.escape(os.path.basename(row["path"]))
    return f"<b>{html.escape(text)}</b><br><span class='muted' title='{path}'>{name}</span>"
