"""Progress bars for every long loop: tqdm on a terminal; in a log file (stderr not a terminal) a plain line at
most every ``LOG_INTERVAL`` seconds, no carriage returns and no repeated final bar. ``--quiet`` turns them off."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between progress lines when stderr is a file or a pipe
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence every bar of this process (the CLI's ``--quiet``); library callers pass ``enabled`` instead."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


class _LogBar(tqdm):
    """A bar for a log: its final count is printed exactly once, on close, unless its last line already showed it
    (``leave=False`` keeps tqdm from printing it again; the clearing it writes instead is only ``\\r`` and spaces,
    which ``_LineWriter`` drops)."""

    def close(self) -> None:
        if not self.disable and self.last_print_n != self.n:
            self.refresh()
        super().close()


class _LineWriter:
    """A file for tqdm that turns its ``\\r`` redraws into whole lines, so a log shows one line per update."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable=None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    **kwargs,
) -> tqdm:
    """A tqdm bar (``iterable`` wrapped, or updated by hand), disabled when ``enabled`` is false or ``--quiet``."""
    disable = _quiet or not enabled
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, **kwargs)
    kwargs = {
        "mininterval": LOG_INTERVAL,
        "maxinterval": LOG_INTERVAL,
        "ascii": True,
        "leave": False,
        "file": _LineWriter(sys.stderr),
        "dynamic_ncols": False,
        "ncols": 100,
        **kwargs,
    }
    return _LogBar(iterable, total=total, desc=desc, unit=unit, **kwargs)
