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

``walk_tree`` is the package's one directory walker: ``index`` lists trees of millions of files with it too.
"""

from __future__ import annotations

import array
import glob
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
            raise no_image_files(source, suffixes)
        found.update(paths)
    return sorted(found)


def no_image_files(source: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> FaceattrError:
    """The one wording of "this source holds no image": ``predict``, ``index`` and the others raise it alike."""
    return FaceattrError(f"{source}: no image files found (allowed: {', '.join(extensions)})")


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
    paths = [os.path.abspath(os.path.join(root, rel)) for rel in relative.to_list() if rel is not None]
    # the column holds display_path's text: a name that was not UTF-8 is found again by its bytes
    return [path_on_disk(p) for p in paths]


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def path_on_disk(shown: str) -> str:
    """The file a ``display_path`` text names: its ``\\xNN`` escapes back to their bytes where no file has the text
    itself as its name and the file system has that one; else ``shown``."""
    if "\\x" not in shown or os.path.lexists(shown):
        return shown
    real = os.fsdecode(_ESCAPED_BYTE.sub(lambda match: bytes([int(match[1], 16)]), os.fsencode(shown)))
    return real if os.path.lexists(real) else shown


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


def _walk(folder: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    root = os.path.abspath(folder)
    # a broken symlink is listed: the caller named this folder, so it becomes a row with an error, not a hole
    listing = walk_tree(root, keep_broken_links=True)
    if listing.unreadable_dirs:
        first = listing.unreadable_dirs[0]
        raise FaceattrError(cannot_read_folder(os.path.normpath(os.path.join(root, first["path"])), first["reason"]))
    for row, name in enumerate(listing.names):
        if not name.startswith(".") and name.lower().endswith(suffixes):
            yield listing.real_path(root, row)


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


# --- the one directory walker ---------------------------------------------------------------------------------


def cannot_read_folder(path: str | os.PathLike, reason: str) -> str:
    """The one wording of an unreadable folder (a root that raises, a subfolder that ``index`` reports)."""
    return f"{path}: cannot read the folder ({reason})"


def check_folder(root: str | os.PathLike) -> Path:
    """``root`` resolved, or a ``FaceattrError`` saying why it cannot be walked."""
    root = Path(root)
    if not root.exists():
        raise FaceattrError(f"{root}: no such folder")
    if not root.is_dir():
        raise FaceattrError(f"{root}: not a folder")
    try:
        with os.scandir(root):
            pass
    except OSError as err:
        raise FaceattrError(cannot_read_folder(root, err.strerror or str(err))) from None
    return root.resolve()


@dataclass
class Listing:
    """What ``walk_tree`` found: every file (flat, listing order) with its folder, plus what it skipped and why."""

    dirs: list[str] = field(default_factory=list)  # display form (relative, posix, UTF-8 safe), "" = root
    real_dirs: list[str] = field(default_factory=list)  # the real relative path (may hold surrogates)
    names: list[str] = field(default_factory=list)  # real file names, all folders, listing order
    dir_of: array.array = field(default_factory=lambda: array.array("I"))  # folder index of each name
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    unreadable_dirs: list[dict] = field(default_factory=list)  # {"path": shown relative path, "reason": ...}

    def real_path(self, root: str | os.PathLike, row: int) -> str:
        return os.path.join(root, self.real_dirs[self.dir_of[row]], self.names[row])


FLUSH_EVERY = 1 << 17  # names per ``flush`` call: chunks for a parser that runs beside the walk


def walk_tree(
    root: str | os.PathLike,
    listing: Listing | None = None,
    flush: Callable[[int], None] | None = None,
    keep_broken_links: bool = False,
) -> Listing:
    """Every file below ``root`` into ``listing``; never raises (an unreadable folder is recorded, root included).

    ``os.scandir`` (its d_type answers is_file/is_dir without a stat), no hidden folder and no folder symlink
    entered (symlink loops cannot recurse). Symlinks to files are listed; broken symlinks and symlink loops too
    when ``keep_broken_links``, else they are skipped and counted. ``flush(end)`` is called whenever
    ``listing.names[:end]`` is complete, every ``FLUSH_EVERY`` names and at the end.
    """
    listing = Listing() if listing is None else listing
    flush = flush or (lambda end: None)
    stack = [("", "")]
    flushed = 0
    while stack:
        real_rel, shown_rel = stack.pop()
        index = len(listing.dirs)
        listing.dirs.append(shown_rel)
        listing.real_dirs.append(real_rel)
        names = listing.names
        start = len(names)
        try:
            with os.scandir(os.path.join(root, real_rel)) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        names.append(entry.name)
                        if len(names) - flushed >= FLUSH_EVERY:
                            listing.dir_of.extend(array.array("I", [index]) * (len(names) - start))
                            start = flushed = len(names)
                            flush(flushed)
                    elif entry.is_dir(follow_symlinks=False):
                        if entry.name.startswith("."):
                            listing.skipped["hidden folder"] += 1
                            continue
                        sub = f"{real_rel}/{entry.name}" if real_rel else entry.name
                        shown = display_path(entry.name)
                        stack.append((sub, f"{shown_rel}/{shown}" if shown_rel else shown))
                    else:
                        kind = _odd_entry(entry, keep_broken_links)
                        if kind is None:
                            names.append(entry.name)
                        else:
                            listing.skipped[kind] += 1
        except OSError as err:
            listing.unreadable_dirs.append({"path": shown_rel or ".", "reason": err.strerror or str(err)})
        listing.dir_of.extend(array.array("I", [index]) * (len(names) - start))
    flush(len(listing.names))
    return listing


def _odd_entry(entry: os.DirEntry, keep_broken_links: bool) -> str | None:
    """None when the entry is listed as a file (a symlink to a file, or a broken one when kept), else why not."""
    broken = None if keep_broken_links else "broken symlink or symlink loop"
    try:
        if entry.is_symlink():
            if entry.is_dir():
                return "symlink to a folder (not followed)"
            if entry.is_file():
                return None
            entry.stat()  # raises for a broken link; a link to a FIFO or device would block the reader forever
            return "symlink to something that is not a regular file"
    except OSError:  # ELOOP and the like while following the link
        return broken
    return "not a regular file"


def sample_positions(keys: list[str], n: int, seed: int) -> list[int]:
    """The positions, in listing order, of a seeded random sample of ``n`` of ``keys`` (every one where there are
    no more): the ``n`` whose BLAKE2b digest of (seed, key) is smallest. A key's draw depends on it and the seed
    alone, so the sample does not change with the listing's order, and a larger ``n`` keeps a smaller one's."""
    import hashlib

    if n >= len(keys):
        return list(range(len(keys)))
    salt = f"{seed}\0".encode()
    draws = [hashlib.blake2b(salt + key.encode("utf-8", "surrogateescape"), digest_size=8).digest() for key in keys]
    return sorted(sorted(range(len(keys)), key=draws.__getitem__)[:n])
