"""The one exception type for run-level faults; the CLI prints its message as one line and exits 2."""


class FaceattrError(Exception):
    """A run cannot go on (missing folder, bad option value, corrupt checkpoint). Bad images are rows, not this."""
