"""metrics.bootstrap: resampled sums block by block (the multinomial law of n draws over all rows, whatever the
blocks), and the percentile interval."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from faceattr_batch.metrics import bootstrap


def _counts(n: int, resamples: int, seed: int = 11) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """How often each row is drawn in each resample (the sums of an identity matrix's columns), and the blocks
    asked for."""
    asked = []

    def identity(start: int, stop: int) -> np.ndarray:
        asked.append((start, stop))
        return np.eye(n)[start:stop]

    return bootstrap.resampled_sums(np.random.default_rng(seed), n, resamples, identity), asked


def test_the_blocks_cover_every_row_once_and_each_resample_draws_n_rows(monkeypatch):
    monkeypatch.setattr(bootstrap, "_BLOCK_CELLS", 3 * 50)  # blocks of 3 rows at 50 resamples
    counts, asked = _counts(7, 50)
    assert asked == [(0, 3), (3, 6), (6, 7)]
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    assert np.array_equal(counts, _counts(7, 50)[0])  # one seeded stream
    assert not np.array_equal(counts, _counts(7, 50, seed=12)[0])


@pytest.mark.parametrize("block_cells", [1 << 22, 2 * 20_000])  # one block; blocks of 2 rows
def test_the_counts_follow_the_multinomial_of_n_draws_over_all_rows(block_cells, monkeypatch):
    """n draws with replacement over n rows: each row's count is Binomial(n, 1/n) (mean 1, variance 1 - 1/n) and
    two rows' counts covary by -1/n. Split by blocks wrongly (a block drawn as often as any other whatever its
    size, or its draws spread over the wrong rows), the last, shorter block's moments are off."""
    monkeypatch.setattr(bootstrap, "_BLOCK_CELLS", block_cells)
    n, resamples = 5, 20_000
    counts, _ = _counts(n, resamples, seed=3)
    se = 4 / np.sqrt(resamples)  # ~4 standard errors: a correct law fails about once in 10,000 runs
    assert counts.mean(axis=0) == pytest.approx(np.ones(n), abs=2 * se)
    assert counts.var(axis=0) == pytest.approx(np.full(n, 1 - 1 / n), abs=3 * se)
    covariance = np.cov(counts.T)[np.triu_indices(n, 1)]
    assert covariance == pytest.approx(np.full(covariance.size, -1 / n), abs=3 * se)
    observed = np.bincount(counts[:, -1].astype(int), minlength=n + 1) / resamples
    expected = [math.comb(n, k) * (1 / n) ** k * (1 - 1 / n) ** (n - k) for k in range(n + 1)]
    assert observed == pytest.approx(expected, abs=2 * se)


def test_the_split_over_blocks_needs_no_resamples_x_blocks_table(monkeypatch):
    """With many resamples the blocks are short and many: a table of every resample's draws per block grew with
    resamples x blocks (730 MB for 20,000 resamples of a million rows, a reviewer's finding)."""
    monkeypatch.setattr(bootstrap, "_BLOCK_CELLS", 200)  # blocks of 1 row at 200 resamples: 5,000 blocks
    tracemalloc.start()
    sums = bootstrap.resampled_sums(np.random.default_rng(0), 5000, 200, lambda start, stop: np.ones((stop - start, 1)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (sums == 5000).all() and peak < 1_000_000  # the table alone: 200 x 5,000 x 8 bytes = 8 MB


def test_no_rows_sum_to_zero():
    sums = bootstrap.resampled_sums(np.random.default_rng(0), 0, 4, lambda start, stop: np.ones((stop - start, 3)))
    assert sums.shape == (4, 3) and not sums.any()


def test_an_interval_is_withheld_when_the_statistic_is_undefined_in_too_many_resamples():
    draws = np.r_[np.arange(95.0), np.full(5, np.nan)]
    low, high, why = bootstrap.percentile_interval(draws, 0.9)
    assert (low, high, why) == (pytest.approx(4.7), pytest.approx(89.3), None)
    assert bootstrap.percentile_interval(np.r_[draws, np.nan], 0.9) == (None, None, "undefined in 6 of 101 resamples")
