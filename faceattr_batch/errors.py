"""The one exception type for run-level faults; the CLI prints its message as one line and exits 2."""


class FaceattrError(Exception):
    """A run cannot go on (missing folder, bad option value, corrupt checkpoint). Bad images are rows, not this."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message cut to one line (its type name when it has none), for a FaceattrError's text."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
