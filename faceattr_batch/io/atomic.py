"""Atomic writes: a file is either its old self or wholly new, never half written (``replacing``, JSON, Parquet)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from faceattr_batch.data.labels import IMAGE_EXTENSIONS
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
def replacing(path: Path, durable: bool = True) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; it replaces ``path`` when the block ends without an
    error and is removed otherwise, so readers never see half a file. It keeps ``path``'s suffix, for writers
    that choose the format by it (Pillow) or add one when it is missing (``np.save``). ``durable=False`` skips the
    fsync (``fsync``): whole for a killed process, not for a power cut, at a fraction of the cost per small file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
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
    with replacing(path) as tmp, open(tmp, "wb") as file:  # a handle: polars takes no path that is not UTF-8
        frame.write_parquet(file)


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
        blocking = next((parent for parent in (folder, *folder.parents) if parent.is_file()), None)
        why = f"{blocking} is a file, not a folder" if blocking else err.strerror or err  # not "File exists"
        raise FaceattrError(f"{what} {path}: cannot write there ({why})") from None


def refuse_overlap(
    target: Path | str,
    what: str,
    inputs: dict,
    *,
    folder: bool = False,
    writes: Callable[[str], bool] | None = None,
    claimed: dict[str, tuple[Path | str, Callable[[str], bool]]] | None = None,
) -> None:
    """Fail before any work when writing ``target`` (option ``what``; with ``folder``, a folder written into) would
    replace or remove what the run reads, or be read by the next run: ``inputs`` maps each input's name in the
    message to its path (a file or a folder) or None. Refused: a file ``target`` that is an input file, or that has
    an image's name inside an input folder (it would replace an image, or be read as one); a folder ``target`` that
    is an input folder or inside one (what it holds would be read as faces), or that holds an input file under a
    name it writes (``writes``, a test of file names); a file ``target`` in a folder of ``claimed`` (why -> (folder,
    a test of file names): another output writes those names there, or a later run reads them) under a name its
    test accepts. Call it for every output before ``check_writable``, which creates folders."""
    target_real = Path(target).resolve()
    for why, (place, names) in (claimed or {}).items():
        if not folder and target_real.parent == Path(place).resolve() and names(target_real.name):
            raise FaceattrError(f"{what} {target}: {why}")
    for name, path in inputs.items():
        if path is None:
            continue
        real = Path(path).resolve()
        if real.is_dir():
            if folder and (target_real == real or real in target_real.parents):
                raise FaceattrError(f"{what} {target} is inside {name}: what it writes would be read as faces")
            if not folder and real in target_real.parents and target_real.suffix.lower() in IMAGE_EXTENSIONS:
                raise FaceattrError(
                    f"{what} {target} has an image's name under {name}: it would replace or be read as one"
                )
        elif folder:
            if target_real == real:  # a file there, or the run's own output file, written later
                raise FaceattrError(f"{what} {target} is {name}: name another folder")
            if writes is not None and real.parent == target_real and writes(real.name):
                raise FaceattrError(f"{what} {target} would replace {name} ({real.name}); name another folder")
        elif target_real == real:
            raise FaceattrError(f"{what} {target} is {name}: the output would replace it; name another file")
