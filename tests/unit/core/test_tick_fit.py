"""What a group's planning leaves to the rest of its tick (edge_agent.core.tick_fit)."""

from __future__ import annotations

import pytest

from edge_agent.aif.planning import TICK_MARGIN, PlanningPolicy
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.tick_fit import RecentHigh, TickFit
from edge_agent.sim.registry import make_env


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


class _StepClock:
    """A clock that moves on ``step`` seconds each time it is read: what a group's planning does
    between two readings (a block of agents planned, the rest of its step) takes a fixed time,
    whatever the machine's speed. A planning pass reads it once a block (whether to start the
    next), so a block costs one step."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


def test_a_paced_group_s_planning_keeps_the_tick_by_its_own_clock() -> None:
    """What ``fit_tick`` promises, on a clock of the test's (no machine's speed in it): a group
    whose every agent must plan each tick, in 100 blocks of 1 ms against a 40 ms period, told by
    the daemon (:meth:`pace`) how long each tick has left and how long the last one went on after
    its step (6 ms of the daemon's own work), ends every tick by its due time once it measured
    one (the first has no measure of what follows its planning): planning stopped where the
    rest of the tick, as the group measured it, still fits. Planning was cut
    (``ticks_cut``) and every agent planned within a few ticks (``deferred`` agents first).
    The daemon's test of the same (tests/integration/daemon/test_planning_daemon.py) runs on
    the machine's clock, where a busy machine takes whole periods from any process: it asserts
    counters only. Checked to fail with the deadline not leaving what follows planning
    (``after_s`` left out of :func:`planning_deadline`: every tick 4-5 ms late) and with the plan
    pass not stopping at it (every agent planned, nothing cut)."""
    step, period, rest, n, block = 0.001, 0.040, 0.006, 800, 8
    clock = _StepClock(step)
    env = make_env("grid10", n, seed=1)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=1), planning=PlanningPolicy(fit_tick=True),
        clock=clock, block_size=block,
    )  # fmt: skip
    assert group.plans is not None
    obs = env.reset()
    late = []
    for tick in range(12):
        due = clock.now + period
        group.pace(due - clock.now, None if tick == 0 else rest)
        actions = group.step(obs)
        clock.now += rest  # the daemon's part of the tick after the group's step
        late.append(round((clock.now - due) * 1000.0, 6))  # ms past the due time
        obs = env.step(actions)
    stats = group.plans.stats()
    # Every tick ended by its due time but the first, when nothing of what follows planning was
    # measured yet (taken to cost what the tick's inference did; the daemon's part not known).
    assert max(late[1:]) <= 0.0, late
    assert stats["ticks_cut"] == 12, stats  # planning would not have fit: it was cut each tick
    assert stats["passed_over"] == 0, stats
    assert stats["plan_age_max"] < 12, stats  # every agent planned in the run
    # The deadline left what the group measured the rest of the tick needs: the daemon's 6 ms
    # and the group's own step after planning.
    assert stats["after_planning_ms"] is not None
    assert stats["after_planning_ms"] > rest * 1000.0
