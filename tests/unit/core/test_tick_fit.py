"""What a group's planning leaves to the rest of its tick (edge_agent.core.tick_fit)."""

from __future__ import annotations

import pytest

from edge_agent.aif.planning import TICK_MARGIN
from edge_agent.core.tick_fit import RecentHigh, TickFit


def test_recent_high_is_the_second_largest_of_the_window() -> None:
    high = RecentHigh(window=4, rank=2)
    assert high.value() is None
    high.add(3.0)
    assert high.value() == 3.0  # fewer samples than the rank: the largest
    for v in (1.0, 9.0, 2.0):
        high.add(v)
    assert high.value() == 3.0  # one odd sample (9) does not set it
    high.add(8.0)  # the window moves on: 3 leaves, 1, 9, 2, 8 are left
    assert high.value() == 8.0
    for _ in range(4):
        high.add(0.5)
    assert high.value() == 0.5  # the old ones have left the window
    with pytest.raises(ValueError, match="rank"):
        RecentHigh(window=2, rank=3)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fit_measures_what_follows_planning_and_leaves_it_the_time() -> None:
    clock = _Clock()
    fit = TickFit(clock)
    assert not fit.paced
    assert fit.deadline(0.0, 0.04) == 0.04  # not paced: the configured deadline alone
    fit.stepped()
    # A paced tick: 100 ms left at its start (t = 1.0); inference took 20 ms, nothing measured
    # yet, so what follows planning is taken to cost as much.
    fit.pace(0.1, None)
    assert fit.paced
    clock.now = 1.02
    limit = fit.deadline(1.0, None)
    assert limit == pytest.approx(1.0 + 0.1 * (1 - TICK_MARGIN) - 0.02)
    assert fit.estimates_ms()["deadline_ms"] == pytest.approx(100 * (1 - TICK_MARGIN) - 20)
    clock.now = 1.06  # planning: 4 blocks on 2 processes in 30 ms -> 15 ms a block
    fit.planned(1.03, blocks=4, processes=2)
    clock.now = 1.08  # the step ends 20 ms after planning
    fit.stepped()
    assert not fit.paced
    # The next tick: the daemon says the last one went on 10 ms after the step returned.
    fit.pace(0.1, 0.01)
    assert fit.estimates_ms()["after_planning_ms"] == pytest.approx(30.0)
    assert fit.estimates_ms()["block_ms"] == pytest.approx(15.0)
    limit = fit.deadline(2.0, 0.09)
    assert limit == pytest.approx(2.0 + 0.1 * (1 - TICK_MARGIN) - 0.03 - 0.015)
    # Without the daemon's part (a tick it did not say), no sample is taken.
    clock.now = 2.05
    fit.planned(2.04, blocks=1, processes=1)
    clock.now = 2.09
    fit.stepped()
    fit.pace(0.1, None)
    assert fit.estimates_ms()["after_planning_ms"] == pytest.approx(30.0)
