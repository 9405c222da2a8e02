"""Bootstrap resamples summed block by block, and the percentile interval of a statistic over them (fairness gaps,
two runs compared). A resample's every sum is a row column times how often each row is drawn, so the sums of every
resample of a block of rows are one matrix product, ``counts @ columns``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_UNDEFINED_SHARE = 0.05  # a bootstrap interval is withheld when the statistic is undefined in more resamples
_BLOCK_CELLS = 1 << 22  # resamples x rows of one block's counts (bounds their memory: 32 MB)


def resampled_sums(
    rng: np.random.Generator, n: int, resamples: int, columns: Callable[[int, int], np.ndarray]
) -> np.ndarray:
    """Each column's sum in each of ``resamples`` bootstrap resamples of ``n`` rows drawn with replacement:
    (resamples, K). ``columns(start, stop)``: rows start..stop-1's columns, (stop - start, K), asked for one block of
    rows at a time, so that a group of a million rows needs no million-row matrix beside its counts.

    The draws are a multinomial: how many of each resample's ``n`` draws fall in each block (a binomial of those
    left, block after block), then where in the block each falls. That is the same law as ``n`` uniform draws over
    all rows, and the block's counts are a small matrix that meets its rows once: one matrix product per block for
    every resample, rather than a pass over every row per handful of resamples. Memory: the block's counts and
    a few numbers per resample. One stream of ``rng``: the same seed gives the same sums."""
    block = max(1, _BLOCK_CELLS // max(resamples, 1))
    left = np.full(resamples, n)  # each resample's draws not yet placed in a block
    sums = None
    for start in range(0, max(n, 1), block):
        size = min(block, n - start)
        drawn = rng.binomial(left, size / (n - start)) if start + size < n else left
        left = left - drawn
        index = rng.integers(0, max(size, 1), int(drawn.sum())) + np.repeat(np.arange(resamples) * size, drawn)
        counts = np.bincount(index, minlength=resamples * size).reshape(resamples, size).astype(np.float64)
        part = counts @ columns(start, start + size)
        sums = part if sums is None else sums + part
    return sums


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float | None, float | None, str | None]:
    """The ``level`` percentile interval of bootstrap ``draws`` (NaN: undefined in that resample), or None, None
    and why, when more than ``MAX_UNDEFINED_SHARE`` of them are undefined."""
    defined = draws[np.isfinite(draws)]
    undefined = draws.size - defined.size
    if undefined > MAX_UNDEFINED_SHARE * draws.size:
        return None, None, f"undefined in {undefined} of {draws.size} resamples"
    low, high = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high), None
