"""``size_bytes`` of every listed file: one ``stat`` each, in worker processes on big trees."""

from __future__ import annotations

import array
import itertools
import os
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack

import polars as pl

from faceattr_batch.data.batches import process_pool, worker_died
from faceattr_batch.data.inputs import Listing

PARALLEL_FROM = 50_000  # files; below this a pool costs more than it saves
MAX_PROCESSES = 4


class FileSizes:
    """File sizes (st_size, following symlinks; null when stat fails) of every listed file, listing order.

    stat costs 1.5-3 us of kernel time per file, the largest part of a plain index of a big tree, so on large
    trees ``start`` hands it to a process pool (slices of the listing, which the forked workers inherit) while
    this process finishes parsing; small trees are stat'ed in this process. Use as a context manager: leaving it
    ends the workers.
    """

    def __init__(self, root: str | os.PathLike, listing: Listing) -> None:
        self._root = os.fspath(root)
        self._listing = listing
        self._workers = ExitStack()
        self._pending: list[Future] | None = None

    def __enter__(self) -> FileSizes:
        return self

    def __exit__(self, *exc) -> None:
        self._workers.close()

    def start(self) -> None:
        """Begin stat'ing in worker processes when the tree is big enough (else ``result`` does it all)."""
        n = len(self._listing.names)
        processes = min(os.cpu_count() or 1, MAX_PROCESSES)
        if n < PARALLEL_FROM or processes < 2:
            return
        bounds = [n * k // processes for k in range(processes + 1)]
        pool = self._workers.enter_context(process_pool(processes, _adopt, (self._root, self._listing)))
        self._pending = [pool.submit(_stat_slice, pair) for pair in itertools.pairwise(bounds)]

    def result(self) -> pl.Series:
        if self._pending is None:
            sizes = stat_rows(self._root, self._listing, 0, len(self._listing.names))
        else:
            sizes = array.array("q")
            try:
                for part in self._pending:
                    sizes.frombytes(part.result())
            except BrokenProcessPool:
                raise worker_died() from None
        raw = pl.Series("size_bytes", sizes, dtype=pl.Int64)
        return raw.to_frame().select(pl.when(raw >= 0).then(raw).alias("size_bytes")).to_series()


def stat_rows(root: str, listing: Listing, lo: int, hi: int) -> array.array:
    """Sizes (-1 when stat fails) of listing rows lo..hi; each folder is one run of rows, so one folder fd at a time."""
    out = array.array("q", bytes(8 * (hi - lo)))
    names, dir_of, stat = listing.names, listing.dir_of, os.stat
    current, fd = -1, -1
    try:
        for i in range(lo, hi):
            if dir_of[i] != current:
                if fd >= 0:
                    os.close(fd)
                current = dir_of[i]
                try:
                    fd = os.open(os.path.join(root, listing.real_dirs[current]), os.O_RDONLY)
                except OSError:
                    fd = -1
            try:
                out[i - lo] = stat(names[i], dir_fd=fd).st_size if fd >= 0 else -1
            except OSError:
                out[i - lo] = -1
    finally:
        if fd >= 0:
            os.close(fd)
    return out


_WORKER: dict = {}  # a pool worker's copy of (root, listing), set once by _adopt


def _adopt(root: str, listing: Listing) -> None:
    _WORKER["tree"] = (root, listing)


def _stat_slice(bounds: tuple[int, int]) -> bytes:
    root, listing = _WORKER["tree"]
    return stat_rows(root, listing, *bounds).tobytes()
