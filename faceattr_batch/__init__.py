"""faceattr-batch: batch face-attribute tooling over large image folders."""

__version__ = "0.1.0"

from faceattr_batch.errors import FaceattrError

__all__ = ["FaceattrError", "__version__"]
