"""The process pool of the index's per-file work (stat, hash, probe): the same mechanism as ``data.batches``."""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable
from multiprocessing.pool import Pool


def process_pool(processes: int, initializer: Callable | None = None, initargs: tuple = ()) -> Pool:
    """A ``multiprocessing`` pool, forked on Linux (workers start in milliseconds and inherit what this process
    holds, so ``initargs`` are not pickled; they run only os/hashlib/Pillow code, never polars), spawned elsewhere.
    Its workers ignore Ctrl-C: the parent stops them, and no worker prints a traceback of its own.
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    return context.Pool(processes, _start_worker, (initializer, initargs))


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
