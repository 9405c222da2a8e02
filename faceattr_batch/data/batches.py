"""Paths -> batches of decoded items, decoded in parallel worker processes. Shared by predict, fid, train and crop.

Each worker decodes a whole batch and sends back one stacked array (or one list of records), so pickling costs one
message per batch. Batches come back in input order, and at most ``prefetch`` batches are in flight, so memory
stays flat however many paths there are and however slow the consumer is.

``process_pool`` is the package's one process mechanism (decoding here, the index's stat and hash work): forked on
Linux, its workers ignore Ctrl-C (the parent alone gets the KeyboardInterrupt and stops them, so an interrupted run
prints no worker tracebacks), and a worker killed by the system (out of memory) ends the run with one line
(``worker_died``) instead of a wait that never ends, as ``multiprocessing.Pool`` gave; workers whose parent was
killed leave on their own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from faceattr_batch.data.decode import DecodeError
from faceattr_batch.errors import FaceattrError
from faceattr_batch.io.digest import file_sha256


@dataclass
class Batch:
    """``items[i]`` belongs to ``paths[ok[i]]``; ``errors`` maps the other positions to their reasons."""

    start: int  # position of paths[0] in the whole input list
    paths: list[str]
    items: np.ndarray | list  # pixels, N_ok x H x W x C uint8 stacked; a list when the loader returns records
    # (faces.load.FoundFaces), not arrays
    ok: list[int]  # positions (within this batch) that decoded
    errors: dict[int, str]
    # sha256 (hex) of each path's file bytes, None where the file cannot be read; None when not asked for
    digests: list[str | None] | None = None


def _readable_sha256(path: str) -> str | None:
    """The file's SHA-256; None when it cannot be read (its decode says why)."""
    try:
        return file_sha256(path)
    except FaceattrError:
        return None


def decode_batch(load: Callable[[str], np.ndarray], start: int, paths: list[str], digests: bool = False) -> Batch:
    """``paths`` decoded by ``load``; ``digests``: also each file's SHA-256 (predict's seen-images check)."""
    arrays, ok, errors = [], [], {}
    hashes = [_readable_sha256(path) for path in paths] if digests else None
    for i, path in enumerate(paths):
        try:
            arrays.append(load(path))
            ok.append(i)
        except DecodeError as err:
            errors[i] = str(err)
        except FaceattrError:  # the run's fault (face detection cannot start), not this image's: stop it
            raise
        except Exception as err:  # a decoder bug must not kill a million-image run: record it as the row's error
            errors[i] = f"decode failed: {type(err).__name__}: {err}"
    if arrays and not isinstance(arrays[0], np.ndarray):
        # records (faces.FoundFaces): one per decoded path
        return Batch(start, list(paths), arrays, ok, errors, hashes)
    pixels = np.stack(arrays) if arrays else np.empty((0,), dtype=np.uint8)
    return Batch(start, list(paths), pixels, ok, errors, hashes)


def iter_batches(
    paths: Sequence[str],
    load: Callable[[str], np.ndarray],
    batch_size: int,
    workers: int,
    prefetch: int | None = None,
    digests: bool = False,
) -> Iterator[Batch]:
    """Decode ``paths`` with ``load`` (a picklable top-level function or functools.partial) in order; ``digests``:
    each batch also carries its files' SHA-256, computed in the worker."""
    chunks = ((start, list(paths[start : start + batch_size])) for start in range(0, len(paths), batch_size))
    if workers <= 0:
        for start, chunk in chunks:
            yield decode_batch(load, start, chunk, digests)
        return
    window = prefetch or 2 * workers
    with process_pool(workers) as pool:
        pending: deque[Future] = deque()
        for start, chunk in chunks:
            pending.append(pool.submit(decode_batch, load, start, chunk, digests))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def process_pool(processes: int, initializer: Callable | None = None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of ``processes`` workers, forked on Linux (they start in milliseconds and inherit
    what this process holds, so ``initargs`` are not pickled; they run Pillow/numpy/os code, never torch), spawned
    elsewhere. Its workers ignore Ctrl-C and run ``initializer(*initargs)``. Leaving the block, a
    KeyboardInterrupt included, cancels what has not started; a dead worker becomes ``worker_died``'s one line."""
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(processes, context, _start_worker, (initializer, initargs))
    # A Ctrl-C between a fork and the worker's SIG_IGN printed a KeyboardInterrupt traceback from the worker: the
    # workers are forked now (a forking pool starts them all on its first submit) with SIGINT held back, which they
    # inherit; the parent gets a Ctrl-C pressed meanwhile as soon as the block ends.
    try:
        with _sigint_held():
            pool.submit(int)
        yield pool
    except BrokenProcessPool:
        raise worker_died() from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def worker_died() -> FaceattrError:
    return FaceattrError(
        "a worker process died (killed by the system, most often for lack of memory): run again with fewer --workers"
    )


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    """Ctrl-C reaches the whole process group; only the parent acts on it. A parent killed outright (kill -9, the
    out-of-memory killer) cannot stop its workers, and they would wait for work forever, holding the parent's
    stdout open: each one leaves on its own within a second of becoming an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C held back since the fork
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def _sigint_held():
    """SIGINT blocked in this thread (and in what it forks) for the block; a no-op where POSIX masks are missing."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
