"""The one exception type for run-level faults; the CLI prints its message as one line and exits 2."""

import os


class FaceattrError(Exception):
    """A run cannot go on (missing folder, bad option value, corrupt checkpoint). Bad images are rows, not this."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message cut to one line (its type name when it has none), for a FaceattrError's text."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def require_file(path: str | os.PathLike, what: str, kind: str = "file") -> None:
    """Fail in one line when the input file ``path`` is a folder or missing; ``what`` is how the user named it
    (``--labels``; empty for an argument), ``kind`` what it should be (``CSV file``)."""
    shown = f"{what} {path}" if what else str(path)
    if os.path.isdir(path):
        raise FaceattrError(f"{shown}: a folder; give the {kind}")
    if not os.path.isfile(path):
        raise FaceattrError(f"{shown}: no such file")
