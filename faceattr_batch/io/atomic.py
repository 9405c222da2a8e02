"""Atomic writes: a file is either its old self or wholly new, never half written (``replacing``, JSON, Parquet)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError


def finite(value):
    """NaN and infinities (e.g. precision with no positive prediction) -> None, recursively: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; it replaces ``path`` when the block ends without an
    error and is removed otherwise, so readers never see half a file. It keeps ``path``'s suffix, for writers
    that choose the format by it (Pillow) or add one when it is missing (``np.save``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """``path``'s bytes on disk: os.replace is atomic for a crash of this process, and this makes it so for a power
    cut too (the new name never points at a file whose data was not yet written)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data) -> None:
    """Write JSON atomically; NaN and infinities become null."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(finite(data), indent=2, default=str))


def write_parquet_atomically(frame: pl.DataFrame, path: Path) -> None:
    with replacing(path) as tmp:
        frame.write_parquet(tmp)


def check_writable(path: Path | str, what: str, *, folder: bool = False) -> None:
    """Fail now, before any work, when ``path`` (a file to be written; with ``folder``, a folder to write into) cannot
    be written: that folder (the file's own) is created if missing and a probe file written and removed there.
    ``what`` names the option, e.g. ``-o``. Said by the caller, not guessed from a suffix: ``-o synth-1.2`` is a
    folder."""
    path = Path(path)
    if not folder and path.is_dir():
        raise FaceattrError(f"{what} {path}: is a folder; name the file to write")
    folder = path if folder else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".faceattr-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise FaceattrError(f"{what} {path}: cannot write there ({err.strerror or err})") from None


def refuse_an_input(target: Path | str, what: str, inputs: dict) -> None:
    """Fail when the output ``target`` (option ``what``) is one of ``inputs`` (their name in the message -> path or
    None): writing it would replace what the run reads."""
    for name, path in inputs.items():
        if path is not None and Path(path).is_file() and Path(target).resolve() == Path(path).resolve():
            raise FaceattrError(f"{what} {target} is {name}: the output would replace it; name another file")
