"""Folders, files, glob patterns and index Parquets -> one sorted list of unique image paths.

The sorted list is the stable key of a run: ``predict --resume`` cuts it into fixed shards, so the same
sources must give the same list, in the same order, every time. Paths are absolute (``os.path.abspath``, so
symlinks are kept, not resolved: a broken symlink is listed and becomes a row with an error, not a hole).

- a folder: every image file below it (``IMAGE_EXTENSIONS``, any case), recursively; hidden files and
  folders are skipped and directory symlinks are not followed (no loops);
- a file (or a symlink, even a broken one): taken as it is, whatever its extension (the caller named it);
- an index Parquet written by ``index`` (``*.parquet``): its ``path`` column, relative to the root stored in
  its metadata (``faceattr_batch.root``);
- anything else with ``*``, ``?`` or ``[``: a glob pattern (``**`` recurses); matched folders are expanded.

A source that matches nothing is a ``FaceattrError`` (a typo must not produce an empty run).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence

from faceattr_batch.data.labels import IMAGE_EXTENSIONS
from faceattr_batch.errors import FaceattrError, first_line

INDEX_ROOT_KEY = "faceattr_batch.root"
_GLOB_CHARS = ("*", "?", "[")


def list_images(
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[str]:
    """Sorted, de-duplicated absolute paths of the images named by ``sources`` (see the module doc)."""
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if not sources:
        raise FaceattrError("no inputs: give at least one folder, file, glob pattern or index Parquet")
    suffixes = tuple(ext.lower() for ext in extensions)
    found: set[str] = set()
    for source in sources:
        paths = list(_expand(os.fspath(source), suffixes))
        if not paths:
            raise FaceattrError(f"{source}: no image files found (allowed: {', '.join(suffixes)})")
        found.update(paths)
    return sorted(found)


def is_index_parquet(source: str | os.PathLike) -> bool:
    """True for a Parquet file whose metadata says ``index`` wrote it."""
    path = os.fspath(source)
    if not (path.lower().endswith(".parquet") and os.path.isfile(path)):
        return False
    return INDEX_ROOT_KEY in _parquet_metadata(path)


def index_paths(path: str | os.PathLike) -> list[str]:
    """Absolute image paths of an index Parquet (its ``path`` column joined to its recorded root)."""
    import polars as pl

    root = _index_root(path)
    try:
        relative = pl.read_parquet(path, columns=["path"])["path"]
    except Exception as err:  # polars raises several types for a foreign or corrupt file
        raise FaceattrError(f"{path}: cannot read the index's 'path' column ({first_line(err)})") from None
    return [os.path.abspath(os.path.join(root, rel)) for rel in relative.to_list() if rel is not None]


def _index_root(path: str | os.PathLike) -> str:
    root = _parquet_metadata(os.fspath(path)).get(INDEX_ROOT_KEY, "")
    if not root:
        raise FaceattrError(f"{path}: an index Parquet without its root folder ({INDEX_ROOT_KEY} metadata)")
    return root


def _expand(source: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    if os.path.isdir(source):
        yield from _walk(source, suffixes)
    elif os.path.lexists(source):
        if source.lower().endswith(".parquet") and os.path.isfile(source):
            if INDEX_ROOT_KEY not in _parquet_metadata(source):
                raise FaceattrError(f"{source}: a Parquet file that `index` did not write (no root metadata)")
            yield from index_paths(source)
        else:
            yield os.path.abspath(source)
    elif any(char in source for char in _GLOB_CHARS):
        for match in sorted(glob.glob(source, recursive=True)):
            if os.path.isdir(match):
                yield from _walk(match, suffixes)
            elif match.lower().endswith(suffixes):
                yield os.path.abspath(match)
    else:
        raise FaceattrError(f"{source}: no such file or folder (and not a glob pattern)")


def _walk(folder: str, suffixes: tuple[str, ...]) -> Iterable[str]:
    # os.walk lists broken symlinks among the files and never follows directory symlinks (followlinks=False)
    for parent, dirs, files in os.walk(os.path.abspath(folder), onerror=_raise_walk_error):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(suffixes):
                yield os.path.join(parent, name)


def _raise_walk_error(err: OSError) -> None:
    raise FaceattrError(f"{err.filename}: cannot list the folder ({err.strerror or err})")


def _parquet_metadata(path: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    try:
        raw = pq.read_metadata(path).metadata or {}
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise FaceattrError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}



def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text for an output column (undecodable bytes shown as ``\\xNN``)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", errors="backslashreplace")
