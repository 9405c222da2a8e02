"""Paths -> batches of decoded items, decoded in parallel worker processes. Shared by predict, fid, train and crop.

Each worker decodes a whole batch and sends back one stacked array (or one list of records), so pickling costs one
message per batch. Batches come back in input order, and at most ``prefetch`` batches are in flight, so memory
stays flat however many paths there are and however slow the consumer is. Workers ignore Ctrl-C: the parent alone
gets the KeyboardInterrupt and stops them, so an interrupted run prints no worker tracebacks.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from faceattr_batch.data.decode import DecodeError


@dataclass
class Batch:
    """``items[i]`` belongs to ``paths[ok[i]]``; ``errors`` maps the other positions to their reasons."""

    start: int  # position of paths[0] in the whole input list
    paths: list[str]
    items: np.ndarray | list  # pixels, N_ok x H x W x C uint8 stacked; a list when the loader returns records
    # (faces.load.FoundFaces), not arrays
    ok: list[int]  # positions (within this batch) that decoded
    errors: dict[int, str]


def decode_batch(load: Callable[[str], np.ndarray], start: int, paths: list[str]) -> Batch:
    arrays, ok, errors = [], [], {}
    for i, path in enumerate(paths):
        try:
            arrays.append(load(path))
            ok.append(i)
        except DecodeError as err:
            errors[i] = str(err)
        except Exception as err:  # a decoder bug must not kill a million-image run: record it as the row's error
            errors[i] = f"decode failed: {type(err).__name__}: {err}"
    if arrays and not isinstance(arrays[0], np.ndarray):
        return Batch(start, list(paths), arrays, ok, errors)  # records (faces.FoundFaces): one per decoded path
    pixels = np.stack(arrays) if arrays else np.empty((0,), dtype=np.uint8)
    return Batch(start, list(paths), pixels, ok, errors)


def iter_batches(
    paths: Sequence[str],
    load: Callable[[str], np.ndarray],
    batch_size: int,
    workers: int,
    prefetch: int | None = None,
) -> Iterator[Batch]:
    """Decode ``paths`` with ``load`` (a picklable top-level function or functools.partial) in order."""
    chunks = ((start, list(paths[start : start + batch_size])) for start in range(0, len(paths), batch_size))
    if workers <= 0:
        for start, chunk in chunks:
            yield decode_batch(load, start, chunk)
        return
    # fork is fastest and safe here: workers only run Pillow/numpy code, never torch.
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    window = prefetch or 2 * workers
    # leaving the block (a KeyboardInterrupt in the parent included) terminates the workers
    with context.Pool(workers, initializer=_ignore_interrupts) as pool:
        pending: deque = deque()
        for start, chunk in chunks:
            pending.append(pool.apply_async(decode_batch, (load, start, chunk)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _ignore_interrupts() -> None:
    """A worker's initializer: Ctrl-C reaches the whole process group; only the parent acts on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
