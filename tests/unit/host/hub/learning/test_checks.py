"""What a learning delta must satisfy (hub/learning/checks.py): its ``experience`` against what the
node's birth could have lived since its last delta (:func:`allowance`), pure."""

from __future__ import annotations

import pytest

from edge_agent_host.hub.learning.checks import (
    CLOCK_AHEAD_S,
    EXPERIENCE_SLACK,
    FASTEST_HZ,
    LONGEST_REPORT_S,
    Allowance,
    allowance,
)

RATE = 32 * 20.0 * EXPERIENCE_SLACK  # 32 agents at 20 Hz, with the slack


def test_a_first_delta_may_stand_for_the_longest_report() -> None:
    first = allowance(None, agents=32, tick_hz=20.0, sent=1000.0, received=1000.0)
    assert first == Allowance(RATE * LONGEST_REPORT_S, 1000.0)


def test_the_allowance_grows_with_the_time_since_and_saves_up_a_day_at_most() -> None:
    left = Allowance(100.0, 1000.0)
    later = allowance(left, agents=32, tick_hz=20.0, sent=1010.0, received=1010.5)
    assert later == Allowance(100.0 + RATE * 10.0, 1010.0)
    much_later = allowance(left, agents=32, tick_hz=20.0, sent=1e7, received=1e7)
    assert much_later.agent_ticks == RATE * LONGEST_REPORT_S


def test_a_clock_ahead_or_going_back_buys_nothing() -> None:
    left = Allowance(0.0, 1000.0)
    ahead = allowance(left, agents=32, tick_hz=20.0, sent=1e12, received=1000.0)
    assert ahead == Allowance(RATE * CLOCK_AHEAD_S, 1000.0 + CLOCK_AHEAD_S)
    back = allowance(ahead, agents=32, tick_hz=20.0, sent=0.0, received=1000.0)
    assert back == ahead  # no time passed on the node's clock: nothing more


def test_a_birth_without_its_rate_is_taken_at_the_fastest_a_daemon_ticks() -> None:
    got = allowance(Allowance(0.0, 0.0), agents=1, tick_hz=None, sent=1.0, received=1.0)
    assert got.agent_ticks == pytest.approx(FASTEST_HZ * EXPERIENCE_SLACK)


def test_a_node_s_largest_numbers_do_not_overflow() -> None:
    huge = allowance(None, agents=2**63 - 1, tick_hz=1000.0, sent=1e18, received=0.0)
    assert huge.agent_ticks == pytest.approx(float(2**63 - 1) * 1000.0 * 2.0 * LONGEST_REPORT_S)
