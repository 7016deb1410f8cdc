"""A shadow's paired numbers (edge_agent.core.shadow): a tick both groups measured is one pair,
``candidate - live``; a tick one side measured alone is counted unpaired; the differences are
reported per window of PAIR_BLOCK paired ticks, and as at most REPORTED_PAIRS windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.core.shadow import PAIR_BLOCK, REPORTED_PAIRS, PairedExcess


def test_pairs_are_the_same_ticks_candidate_less_live() -> None:
    p = PairedExcess()
    p.live(0, np.array([0.0, 1.0]))
    p.candidate(0, np.array([1.0, 2.0]))
    p.live(4, np.array([1.0]))
    p.candidate(5, np.array([9.0]))  # another tick: not a pair
    p.live(8, np.array([2.0]))
    p.candidate(8, np.array([5.0]))
    r = p.result()
    assert r.n == 2
    assert r.diffs == pytest.approx((2.0,))  # one window: the mean of 1 and 3
    assert r.mean_diff == pytest.approx(2.0)
    assert r.live_mean == pytest.approx((0.5 + 2.0) / 2)
    assert r.candidate_mean == pytest.approx((1.5 + 5.0) / 2)
    assert (r.sd_diff, r.t) == (0.0, None)  # one window: no spread
    assert r.unpaired == 1
    data = r.as_data()
    assert (data["shadow_pairs"], data["shadow_windows"], data["shadow_diffs"]) == (2, 1, [2.0])


def test_windows_of_consecutive_pairs_and_their_t() -> None:
    p = PairedExcess()
    diffs = [1.0, 3.0, 1.0, 3.0, 2.0, 2.0, 4.0, 4.0, 5.0]
    for clock, d in enumerate(diffs):
        p.live(clock, np.array([0.5]))
        p.candidate(clock, np.array([0.5 + d]))
    r = p.result()
    assert PAIR_BLOCK == 4
    assert r.diffs == pytest.approx((2.0, 3.0, 5.0))  # the last window holds one pair
    assert r.mean_diff == pytest.approx(sum(diffs) / len(diffs))
    assert r.sd_diff == pytest.approx(np.std([2.0, 3.0, 5.0], ddof=1))
    assert r.t == pytest.approx(np.mean([2.0, 3.0, 5.0]) / (r.sd_diff / math.sqrt(3)))


def test_equal_groups_have_no_t_and_a_zero_mean() -> None:
    p = PairedExcess()
    for clock in range(0, 40, 4):
        p.live(clock, np.full(3, 0.25))
        p.candidate(clock, np.full(3, 0.25))
    r = p.result()
    assert (r.n, r.mean_diff, r.sd_diff, r.t) == (10, 0.0, 0.0, None)
    assert set(r.diffs) == {0.0}
    assert "shadow_t" not in r.as_data()


def test_long_shadows_are_reported_as_bounded_windows_and_the_store_is_bounded() -> None:
    n = 2 * PAIR_BLOCK * REPORTED_PAIRS
    p = PairedExcess(capacity=n)
    for clock, d in enumerate(np.arange(n + 10, dtype=np.float64)):
        p.live(clock, np.zeros(1))
        p.candidate(clock, np.array([d]))
    r = p.result()
    assert r.n == n
    assert r.unpaired == 10  # past the capacity: counted, not kept
    assert len(r.diffs) == REPORTED_PAIRS
    assert r.diffs[0] == pytest.approx(np.mean(np.arange(2 * PAIR_BLOCK)))
    assert float(np.mean(r.diffs)) == pytest.approx(r.mean_diff)
