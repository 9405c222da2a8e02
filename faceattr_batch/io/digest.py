"""The SHA-256 of a file's bytes: image digests (seen-images check), model and labels-file versions, weights checks."""

from __future__ import annotations

import hashlib
import os

from faceattr_batch.errors import FaceattrError


def file_sha256(path: str | os.PathLike[str]) -> str:
    """64 lowercase hex digits, as ``sha256sum`` writes them; a file that cannot be read is a one-line error."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as err:
        raise FaceattrError(f"{path}: cannot read the file ({err.strerror or err})") from None


def file_digest(path: str | os.PathLike[str]) -> str:
    """12 hex digits of the file's SHA-256: a model's version when its file names none, a seen-images file's."""
    return file_sha256(path)[:12]
