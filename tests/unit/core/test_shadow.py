"""A shadow's paired numbers (edge_agent.core.shadow): a tick both groups measured is one pair,
``candidate - live``; a tick one side measured alone is counted unpaired; more pairs than a
result carries are reported as means of consecutive pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.core.shadow import REPORTED_PAIRS, PairedExcess


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
    assert r.diffs == pytest.approx((1.0, 3.0))
    assert r.mean_diff == pytest.approx(2.0)
    assert r.live_mean == pytest.approx((0.5 + 2.0) / 2)
    assert r.candidate_mean == pytest.approx((1.5 + 5.0) / 2)
    assert r.sd_diff == pytest.approx(math.sqrt(2.0))
    assert r.t == pytest.approx(2.0 / (math.sqrt(2.0) / math.sqrt(2)))
    assert r.unpaired == 1
    data = r.as_data()
    assert data["shadow_pairs"] == 2
    assert data["shadow_diffs"] == [1.0, 3.0]


def test_equal_groups_have_no_t_and_a_zero_mean() -> None:
    p = PairedExcess()
    for clock in range(0, 40, 4):
        p.live(clock, np.full(3, 0.25))
        p.candidate(clock, np.full(3, 0.25))
    r = p.result()
    assert (r.n, r.mean_diff, r.sd_diff, r.t) == (10, 0.0, 0.0, None)
    assert "shadow_t" not in r.as_data()


def test_many_pairs_are_reported_as_bounded_means_and_the_store_is_bounded() -> None:
    p = PairedExcess(capacity=3 * REPORTED_PAIRS)
    diffs = np.arange(4 * REPORTED_PAIRS, dtype=np.float64)
    for clock, d in enumerate(diffs):
        p.live(clock, np.zeros(1))
        p.candidate(clock, np.array([d]))
    r = p.result()
    assert r.n == 3 * REPORTED_PAIRS
    assert r.unpaired == REPORTED_PAIRS  # past the capacity: counted, not kept
    assert len(r.diffs) == REPORTED_PAIRS
    assert r.diffs[0] == pytest.approx(1.0)  # the mean of 0, 1, 2
    assert float(np.mean(r.diffs)) == pytest.approx(r.mean_diff)
