"""Bootstrap draws as counts per row, and the percentile interval of a statistic over them (fairness gaps, two
runs compared): a resample's every sum is then one matrix product, ``counts @ rows``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MAX_UNDEFINED_SHARE = 0.05  # a bootstrap interval is withheld when the statistic is undefined in more resamples
_CHUNK_CELLS = 1 << 22  # resamples x rows drawn at once (bounds the memory of a large group's draws)
_ROW_BY_ROW = 4096  # from this many rows a chunk's counts are drawn a resample at a time


def resample_counts(rng: np.random.Generator, n: int, resamples: int) -> Iterator[np.ndarray]:
    """``resamples`` bootstrap draws of ``n`` rows (with replacement), as how often each row is drawn: float
    matrices (size, n), a chunk of resamples at a time (bounded memory), so that ``counts @ rows`` sums every
    row column of each resample at once. One stream of ``rng``: the same seed gives the same draws."""
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        if n < _ROW_BY_ROW:
            index = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
            yield np.bincount(index.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
            continue
        counts = np.empty((size, n))
        for row in counts:  # the same draws, one resample at a time: a count array that fits the cache, 1.6x faster
            row[:] = np.bincount(rng.integers(0, n, n), minlength=n)
        yield counts


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float | None, float | None, str | None]:
    """The ``level`` percentile interval of bootstrap ``draws`` (NaN: undefined in that resample), or None, None
    and why, when more than ``MAX_UNDEFINED_SHARE`` of them are undefined."""
    defined = draws[np.isfinite(draws)]
    undefined = draws.size - defined.size
    if undefined > MAX_UNDEFINED_SHARE * draws.size:
        return None, None, f"undefined in {undefined} of {draws.size} resamples"
    low, high = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high), None
