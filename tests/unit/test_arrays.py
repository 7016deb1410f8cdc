"""``edge_agent.arrays``: numpy's unique and percentile, without numpy.ma in the daemon."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.arrays import distinct, percentiles


@pytest.mark.parametrize("dtype", [np.int64, np.intp, np.float64, np.uint8])
def test_distinct_is_numpy_s_unique(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for size in (0, 1, 2, 17, 500):
        a = rng.integers(0, 9, size=size).astype(dtype)
        assert np.array_equal(distinct(a), np.unique(a))
        assert distinct(a).dtype == np.unique(a).dtype
    grid = rng.integers(0, 4, size=(6, 5))
    assert np.array_equal(distinct(grid), np.unique(grid))  # flattened, as np.unique


def test_percentiles_are_numpy_s_linear_ones() -> None:
    rng = np.random.default_rng(11)
    qs = [0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0]
    for size in (1, 2, 3, 10, 1024):
        a = rng.exponential(0.01, size=size)
        np.testing.assert_allclose(percentiles(a, qs), np.percentile(a, qs), rtol=1e-12, atol=0)
    ties = np.array([3.0, 3.0, 3.0, 5.0])
    np.testing.assert_allclose(percentiles(ties, qs), np.percentile(ties, qs), rtol=1e-12)
