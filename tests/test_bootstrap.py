"""metrics.bootstrap: draws as counts per row, the same for a seed whichever way a chunk is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr_batch.metrics import bootstrap


@pytest.mark.parametrize("n", [1, 7, 5000])
def test_a_large_groups_counts_drawn_a_resample_at_a_time_are_the_same_draws(n, monkeypatch):
    def draws(row_by_row: int) -> np.ndarray:
        monkeypatch.setattr(bootstrap, "_ROW_BY_ROW", row_by_row)
        monkeypatch.setattr(bootstrap, "_CHUNK_CELLS", 4 * n)  # several chunks
        return np.concatenate(list(bootstrap.resample_counts(np.random.default_rng(11), n, 10)))

    whole, by_row = draws(n + 1), draws(1)
    assert whole.shape == (10, n) and whole.dtype == np.float64
    assert np.array_equal(whole, by_row) and (whole.sum(axis=1) == n).all()
    expected = np.random.default_rng(11).integers(0, n, size=(4, n))  # the first chunk: one index row per resample
    assert np.array_equal(whole[:4], [np.bincount(row, minlength=n) for row in expected])


def test_an_interval_is_withheld_when_the_statistic_is_undefined_in_too_many_resamples():
    draws = np.r_[np.arange(95.0), np.full(5, np.nan)]
    low, high, why = bootstrap.percentile_interval(draws, 0.9)
    assert (low, high, why) == (pytest.approx(4.7), pytest.approx(89.3), None)
    assert bootstrap.percentile_interval(np.r_[draws, np.nan], 0.9) == (None, None, "undefined in 6 of 101 resamples")
