"""The report page's small HTML pieces: numbers, percentages and intervals as text, and tables sortable by a click
on a header (a few lines of inline script: the page stays one file, with no network)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

# a cell: its HTML and the value its column sorts by (numbers as numbers, else as text; None: last)
Cell = tuple[str, float | str | None]

SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var up = th.dataset.dir !== 'up';
      table.querySelectorAll('thead th').forEach(function (other) { delete other.dataset.dir; });
      th.dataset.dir = up ? 'up' : 'down';
      var body = table.tBodies[0], rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.v, y = b.cells[column].dataset.v;
        if (x === '' || y === '') { return (x === '') - (y === ''); }  // no value: last either way
        var nx = Number(x), ny = Number(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>"""

CSS = """
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#e6eefc}
table.sortable th[data-dir=up]::after{content:' \\25B2';font-size:9px}
table.sortable th[data-dir=down]::after{content:' \\25BC';font-size:9px}
td small{display:block;color:#777;font-size:11px}
.wide{overflow-x:auto} .ci{white-space:nowrap}
table.sortable td,table.sortable th{padding:3px 5px}
.tag{background:#fde7c8;color:#7a4b00;border-radius:3px;padding:0 4px;font-size:11px;white-space:nowrap}
.sig{color:#b3261e;font-weight:600}
"""


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value) -> str:
    return "-" if missing(value) else f"{100 * value:.1f}%"


def num(value, unit: str = "", digits: int = 2) -> str:
    return "-" if missing(value) else f"{value:.{digits}f}{unit}"


def interval(low, high, show, reason: str | None = None) -> str:
    """``low – high`` (kept on one line), or why there is none (never a bare "- – -")."""
    if missing(low) or missing(high):
        return f"no interval: {html.escape(reason)}" if reason else "no interval"
    return f"<span class='ci'>{show(low)} – {show(high)}</span>"


def sortable_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], left: int = 1) -> str:
    """A table sorted by a click on a header (``SORT_SCRIPT``); the first ``left`` columns are aligned left."""

    def align(index: int) -> str:
        return " class='l'" if index < left else ""

    head = "".join(f"<th{align(i)}>{title}</th>" for i, title in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for index, (text, key) in enumerate(row):
            value = "" if missing(key) else html.escape(str(key), quote=True)
            cells.append(f"<td{align(index)} data-v='{value}'>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f"<div class='wide'>{table}</div>"
