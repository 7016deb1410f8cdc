"""A group's health part (edge_agent.core.health) in a real AifAgentGroup: the excess surprise
averages 0 where the model describes the world and is clearly above 0 where it does not (which
raises one drift event), and every scope reports its measures."""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, Literal

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.health import (
    AIF_MEASURES,
    HEALTH_AGENTS,
    HEALTH_EVERY,
    HELD_BYTES,
    HELD_TICKS,
    LEARNING_HEALTH,
    MIN_HEALTH_AGENTS,
    AifHealth,
)
from edge_agent.core.health_window import HealthSummary
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.registry import make_env
from edge_agent.sim.tmaze import TMazeEnv, tmaze_model
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model


def _run(env: Any, group: AifAgentGroup, ticks: int) -> HealthSummary:
    obs = env.reset()
    for t in range(ticks):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(t)))
    summary = group.health_summary()
    assert summary is not None
    return summary


@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_the_excess_surprise_averages_zero_where_the_model_is_the_world(precision: str) -> None:
    """Agents stepped in the T-maze their model describes: each agent-step's excess surprise has
    mean 0 given the agent's past (its prior predictive is the world's), so their mean over n
    values is within 5 standard errors std / sqrt(n) of 0; the surprise itself is not 0."""
    env = TMazeEnv(64, seed=3)
    group = AifAgentGroup(env.model, 64, precision=precision)  # type: ignore[arg-type]
    s = _run(env, group, 200)
    excess = s.measures["excess_surprise"]
    assert excess.n == 64 * 200 // HEALTH_EVERY
    assert abs(excess.mean) < 5 * excess.std / math.sqrt(excess.n)
    assert s.measures["surprise"].mean > 0.5
    assert set(s.measures) == set(AIF_MEASURES)
    assert s.agent_steps == 64 * 200
    assert s.drift is not None
    assert not s.drift.alarm
    assert group.alerts() == []
    # free energy >= surprise (an upper bound; equal for the exact posterior, up to EPS)
    assert s.measures["free_energy"].mean >= s.measures["surprise"].mean - 1e-6


def test_a_model_with_the_reward_arms_swapped_is_surprised_and_raises_one_drift_event() -> None:
    env = TMazeEnv(64, seed=4)
    group = AifAgentGroup(tmaze_model(reward_probs=(0.02, 0.98)), 64, precision="int8")
    s = _run(env, group, 200)
    excess = s.measures["excess_surprise"]
    assert excess.mean > 0.5
    assert excess.z > 10
    assert s.drift is not None
    assert s.drift.alarm
    assert s.drift.since is not None
    (event,) = group.alerts()
    assert event.kind == "drift"
    assert event.data["threshold"] == s.drift.threshold
    assert group.alerts() == []  # raised once


def test_the_drift_alarm_raised_and_cleared_is_one_event_each_time() -> None:
    """A frozen model in the reversal T-maze (the rewarded arm swaps every 20 trials, 60 ticks):
    the alarm rises in a reversed phase and clears in the next normal one, each transition one
    event (``drift`` at warning, ``drift_cleared`` at info) naming the group and the numbers
    that crossed, in the order they happened, none while a state lasts. Each measured tick is
    measured when it happens (the alarm read after each tick is then the detector's state at
    that tick; held ticks give the same events, later: the test below)."""
    env = ReversalTMazeEnv(64, seed=11, reverse_every=20)
    group = AifAgentGroup(env.model, 64, precision="int8", name="maze")
    assert group.health is not None
    group.health.holds = False
    threshold = group.health.detector.settings.threshold
    obs = env.reset()
    events = []
    rises = 0
    alarm = False
    for t in range(360):  # normal, reversed, normal, reversed (60 ticks a phase)
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(t)))
        events += group.alerts()
        rises += group.health.detector.alarm and not alarm
        alarm = group.health.detector.alarm
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["drift", "drift_cleared"], kinds
    assert all(a != b for a, b in itertools.pairwise(kinds)), kinds  # one per transition
    assert kinds.count("drift") == rises
    raised, cleared = events[0], events[1]
    assert raised.severity == "warning"
    assert raised.detail.startswith("group maze: the model stopped fitting")
    assert raised.data["statistic"] > threshold
    assert cleared.severity == "info"
    assert cleared.detail.startswith("group maze: the model fits what its agents observe again")
    assert f"fell to {threshold / 2:g} (half its threshold {threshold:g})" in cleared.detail
    assert cleared.data["statistic"] <= cleared.data["clear_at"] == threshold / 2
    assert cleared.data["alarm_s"] > 0


@pytest.mark.parametrize("ticks_before", [10, 11, 12, 13, 14, 15])
def test_a_group_switched_in_mid_episode_raises_no_drift_alarm(ticks_before: int) -> None:
    """A deployment's switch: new agents of the same model, their beliefs ``D``, on the world
    the old group left mid-episode (the daemon's group on the same source). Their first tick,
    whose prior predicts an episode's start and not where the agent is, is not measured (it
    raised a false drift alarm at 4 of these 6 phases of the T-maze's 3-tick trial); from the
    next tick their priors are their model's predictions, and the model fits."""
    env = TMazeEnv(32, seed=1)
    old = AifAgentGroup(env.model, 32, precision="int8")
    _run(env, old, ticks_before)
    obs = env.obs
    group = AifAgentGroup(env.model, 32, precision="int8")
    starts = env.episode_start.all()  # the world starts every agent's episode at the switch
    for t in range(200):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(t)))
    summary = group.health_summary()
    assert summary is not None
    assert summary.drift is not None
    assert not summary.drift.alarm
    assert group.alerts() == []
    assert summary.measures["excess_surprise"].n == 32 * (50 if starts else 49)


def test_a_large_group_is_measured_on_a_bounded_sample_that_moves() -> None:
    n = 3 * HEALTH_AGENTS + 5
    env = TMazeEnv(n, seed=5)
    group = AifAgentGroup(env.model, n, precision="int8")
    assert group.health is not None
    obs = env.reset()
    group.reset()  # every agent starts an episode: the first tick is measured
    seen = np.zeros(n, dtype=bool)
    for _ in range(4 * HEALTH_EVERY):
        obs = env.step(group.step(obs))
        rows = group.health.rows()
        assert len(rows) <= HEALTH_AGENTS
        seen[rows] = True
    assert seen.sum() > 3 * HEALTH_AGENTS  # four offsets of a stride of 4: nearly every agent
    s = group.health_summary()
    assert s is not None
    assert s.measures["surprise"].n == 4 * len(group.health.rows())


def test_a_group_that_keeps_no_prior_measures_the_same_as_one_that_does() -> None:
    """The sampled agents' prior is made again (propagated, or D after a reset): the same
    numbers, to rounding, as the prior a group keeps."""
    summaries = []
    for keep in (True, False):
        env: Any = make_env("grid10", 12, seed=0)
        group = AifAgentGroup(env.model, 12, precision="int8", keep_prior=keep)
        assert group.state.keeps_prior is keep
        summaries.append(_run(env, group, 40))
    kept, derived = summaries
    for name in AIF_MEASURES:
        a, b = kept.measures[name], derived.measures[name]
        assert a.n == b.n
        assert math.isclose(a.mean, b.mean, rel_tol=1e-5, abs_tol=1e-6), name


def test_a_planning_policy_and_learning_groups_report_their_measures() -> None:
    env = TMazeEnv(16, seed=6)
    planned = AifAgentGroup(env.model, 16, precision="int8", planning=PlanningPolicy(every=3))
    s = _run(env, planned, 24)
    assert set(s.measures) == set(AIF_MEASURES)

    model = tmaze_reversal_model()
    pA = {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)}
    for scope in ("shared", "per_agent"):
        env = TMazeEnv(16, seed=7)
        spec = LearningSpec(pA=pA, settings=LearningSettings(scope=scope))
        group = AifAgentGroup(model, 16, precision="float64", learning=spec)
        s = _run(env, group, 24)
        assert set(s.measures) >= {*AIF_MEASURES, *LEARNING_HEALTH}, scope
        assert s.measures["experience"].mean == 16 * 24
        assert s.measures["divergence"].mean > 0
        assert s.measures["surprise"].mean > 0
        # The free energy of every measured agent, whether the agents share A or each learns
        # its own (read from the sampled agents' own tables).
        energy, surprise = s.measures["free_energy"], s.measures["surprise"]
        assert energy.n == surprise.n > 0, scope
        assert math.isfinite(energy.mean), (scope, energy)
        assert energy.mean > 0, (scope, energy)


def test_a_group_without_health_reports_none() -> None:
    env = TMazeEnv(4, seed=8)
    group = AifAgentGroup(env.model, 4, health=False)
    obs = env.reset()
    group.step(obs)
    assert group.health_summary() is None
    assert group.alerts() == []


def test_a_warm_up_step_that_is_put_back_is_not_measured() -> None:
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)})
    env = TMazeEnv(8, seed=9)
    for learning in (None, spec):
        group = AifAgentGroup(model, 8, precision="float64", learning=learning)
        group.warm_up(env.reset())
        s = group.health_summary()
        assert s is not None
        assert s.agent_steps == 0
        assert "surprise" not in s.measures


# -- a small group's measured ticks held and measured at once ------------------------------------


def _same_summary(held: HealthSummary, each: HealthSummary) -> None:
    """Two windows' summaries equal up to rounding (the same values, summed in another order)."""
    assert held.agent_steps == each.agent_steps
    assert set(held.measures) == set(each.measures)
    for name, a in held.measures.items():
        b = each.measures[name]
        assert (a.n, a.p95) == (b.n, b.p95), name
        assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-12), name
        assert math.isclose(a.std, b.std, rel_tol=1e-9, abs_tol=1e-12), name
    assert held.drift is not None
    assert each.drift is not None
    assert held.drift.alarm == each.drift.alarm
    assert math.isclose(held.drift.statistic, each.drift.statistic, rel_tol=1e-9, abs_tol=1e-12)


def _reversal_run(
    group: AifAgentGroup, n: int, ticks: int, *, holds: bool, close_every: int = 0
) -> tuple[list[HealthSummary], list[tuple[str, float]]]:
    """``group`` stepped ``ticks`` in a reversal T-maze (its rewarded arm swapping every 50
    trials), its health holding small samples or not; the summaries (every ``close_every``
    ticks and at the end) and the events in order (kind, statistic)."""
    assert group.health is not None
    group.health.holds = holds
    env = ReversalTMazeEnv(n, seed=11, reverse_every=50)
    obs = env.reset()
    summaries, events = [], []
    for t in range(ticks):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(t)))
        events += [(e.kind, float(e.data["statistic"])) for e in group.alerts()]
        if close_every and (t + 1) % close_every == 0:
            summary = group.health_summary()
            assert summary is not None
            summaries.append(summary)
    summary = group.health_summary()
    assert summary is not None
    return [*summaries, summary], [*events, *((e.kind, float(e.data["statistic"]))
                                              for e in group.alerts())]


@pytest.mark.parametrize(("n", "close_every"), [(1, 0), (3, 37), (MIN_HEALTH_AGENTS - 1, 37),
                                              (64, 37), (100, 0)])
def test_a_group_measured_a_few_ticks_at_once_reports_what_each_tick_measured_would(
    n: int, close_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen int8 group in the reversal T-maze (fewer than MIN_HEALTH_AGENTS agents, or a
    sample of 64 and 50 agents held as HELD_BYTES allows), its
    model the maze's unreversed one (its alarm rises and clears): holding its measured ticks
    and measuring them at once gives the windows (closed every 37 ticks, a window's close
    measures what is held), the drift statistic and the drift / drift_cleared events, in order,
    of measuring each tick when it happens, up to rounding; the events come at most HELD_TICKS
    measured ticks later. On numpy (a group on the compiled tick has its pass measure each
    measured tick, held nothing: test_health_in_tick.py)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    runs = []
    for holds in (True, False):
        group = AifAgentGroup(tmaze_reversal_model(), n, precision="int8")
        assert group.health is not None
        assert group.health.nbytes > 0  # it holds
        assert group.path.in_tick is None  # numpy measures
        runs.append(_reversal_run(group, n, 1200, holds=holds, close_every=close_every))
    (held, held_events), (each, each_events) = runs
    assert len(held) == len(each)
    for a, b in zip(held, each, strict=True):
        _same_summary(a, b)
    assert [k for k, _ in held_events] == [k for k, _ in each_events]
    assert len(held_events) >= 2  # raised and cleared
    for (_, x), (_, y) in zip(held_events, each_events, strict=True):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_a_learning_group_s_held_ticks_are_measured_with_each_tick_s_own_tables(
    scope: Literal["shared", "per_agent"], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group of 2 agents learning ``pA`` (its tables change every tick: each agent's own, or
    the shared one written in place) on numpy: the held ticks measured at once give what each
    measured with the tables of its own tick gives, up to rounding, and those tables did change
    between the ticks held together."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    model = tmaze_reversal_model()
    pA = {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)}
    runs, tables = [], []
    for holds in (True, False):
        spec = LearningSpec(pA=pA, settings=LearningSettings(scope=scope))
        group = AifAgentGroup(model, 2, precision="float64", learning=spec)
        assert group.path.in_tick is None  # numpy measures
        seen: list[np.ndarray] = []
        likelihood = group.path.likelihood

        def spy(rows: np.ndarray, read: Any = likelihood, seen: list[np.ndarray] = seen) -> Any:
            A = read(rows)
            seen.append(np.array(A[1], copy=True))
            return A

        group.path.likelihood = spy  # type: ignore[method-assign]
        runs.append(_reversal_run(group, 2, 200, holds=holds))
        tables.append(seen)
    (held, held_events), (each, each_events) = runs
    for a, b in zip(held, each, strict=True):
        _same_summary(a, b)
    assert [k for k, _ in held_events] == [k for k, _ in each_events]
    first = tables[0][:HELD_TICKS]
    assert any(not np.array_equal(first[0], t) for t in first[1:])  # they learned in between


def _feed(
    health: AifHealth, rng: np.random.Generator, n: int, ticks: int, policies: int = 5
) -> None:
    """``ticks`` ticks of ``n`` agents of a 2-factor (2 x 3 states), 2-modality (2, 4 outcomes)
    model, ``policies`` policies: random outcomes, beliefs and likelihood."""
    A = [rng.dirichlet(np.ones(o), size=6).T for o in (2, 4)]
    for _ in range(ticks):
        obs = np.stack([rng.integers(0, 2, n), rng.integers(0, 4, n)], axis=1)
        prior = [rng.dirichlet(np.ones(s), size=n) for s in (2, 3)]
        health.before(obs, prior)
        health.after([rng.dirichlet(np.ones(s), size=n) for s in (2, 3)],
                     rng.dirichlet(np.ones(policies), size=n), partial(_same_tables, A))


def _same_tables(A: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    del rows
    return A


def _direct(n: int, holds: bool = True, fixed_tables: bool = False) -> AifHealth:
    health = AifHealth(n, group="g", num_states=(2, 3), num_obs=(2, 4), lnC=[np.zeros(2),
                       np.log(np.full(4, 0.25))], num_policies=5, fixed_tables=fixed_tables)
    health.holds = holds
    health.aligned()
    return health


def test_held_ticks_are_measured_on_resize_and_when_a_tap_is_set() -> None:
    """A resize (another sample: the buffers are made again) and a tap set measure the ticks
    held first; a group with a tap measures each tick when it happens, and the tap is told each
    measured tick's clock in order; the buffers' bytes are what nbytes_for says: a sample of
    MIN_HEALTH_AGENTS agents or more holds as many ticks as fit HELD_BYTES (a group that does
    not learn keeps no predictions: fewer bytes a tick), none when fewer than 2 fit."""
    health = _direct(2)
    assert health.nbytes == AifHealth.nbytes_for(2, (2, 3), (2, 4), 5) > 0
    _feed(health, np.random.default_rng(1), 2, 3 * HEALTH_EVERY)  # 3 measured ticks held
    assert health.window.kept("surprise").size == 0
    health.resize(3)
    assert health.window.kept("surprise").size == 3 * 2
    assert health.nbytes == AifHealth.nbytes_for(3, (2, 3), (2, 4), 5)
    _feed(health, np.random.default_rng(2), 3, 2 * HEALTH_EVERY)
    told: list[tuple[int, int]] = []
    health.tap = lambda clock, excess: told.append((clock, excess.shape[0]))
    assert told == []  # the ticks held were measured before the tap was set
    assert health.window.kept("surprise").size == 3 * 2 + 2 * 3
    _feed(health, np.random.default_rng(3), 3, 2 * HEALTH_EVERY)
    clock = 3 * HEALTH_EVERY + 2 * HEALTH_EVERY
    assert told == [(clock, 3), (clock + HEALTH_EVERY, 3)]
    for fixed_tables in (False, True):
        large = _direct(MIN_HEALTH_AGENTS, fixed_tables=fixed_tables)
        assert large.nbytes == AifHealth.nbytes_for(MIN_HEALTH_AGENTS, (2, 3), (2, 4), 5,
                                                    fixed_tables=fixed_tables)
        kept = AifHealth.held_nbytes_for(MIN_HEALTH_AGENTS, (2, 3), (2, 4), 5,
                                         fixed_tables=fixed_tables)
        assert 0 < kept <= HELD_BYTES
    assert (AifHealth.held_nbytes_for(MIN_HEALTH_AGENTS, (2, 3), (2, 4), 5, fixed_tables=True)
            < AifHealth.held_nbytes_for(MIN_HEALTH_AGENTS, (2, 3), (2, 4), 5))
    # 8 agents' policy posteriors of 1,000 policies: 64 KB a tick, fewer than 2 fit
    assert AifHealth.held_nbytes_for(MIN_HEALTH_AGENTS, (2, 3), (2, 4), 1000) == 0
    assert _direct(MIN_HEALTH_AGENTS).nbytes > 0


@pytest.mark.parametrize("fixed_tables", [False, True])
def test_held_ticks_of_random_beliefs_give_each_tick_s_measures(fixed_tables: bool) -> None:
    """AifHealth fed the same random ticks (two factors, two modalities, a policy posterior, a
    preference), holding and not: the same window to rounding, HELD_TICKS + 3 measured ticks
    (one full hold and three more, measured at the close). The likelihood is another after 5
    measured ticks, within a hold: with ``fixed_tables`` (the held ticks keep a reference to
    theirs and are predicted at the flush) each tick is measured with its own."""
    summaries = []
    for holds in (True, False):
        health = _direct(2, holds, fixed_tables)
        rng = np.random.default_rng(4)
        _feed(health, rng, 2, 5 * HEALTH_EVERY)
        _feed(health, rng, 2, (HELD_TICKS - 2) * HEALTH_EVERY)
        summaries.append(health.close())
    held, each = summaries
    assert held.measures["surprise"].n == (HELD_TICKS + 3) * 2
    _same_summary(held, each)


def test_a_policy_posterior_of_other_policies_than_the_buffers_is_measured_too() -> None:
    """The buffers are made for the policies the group was made with; a policy posterior of
    another number (a part made without them: 0) measures the ticks held first and makes its
    buffer again: the same window as measuring each tick when it happens."""
    summaries = []
    for holds in (True, False):
        health = _direct(2, holds)
        rng = np.random.default_rng(6)
        _feed(health, rng, 2, 3 * HEALTH_EVERY, policies=5)
        _feed(health, rng, 2, 3 * HEALTH_EVERY, policies=3)
        summaries.append(health.close())
    held, each = summaries
    assert held.measures["policy_entropy"].n == 6 * 2
    _same_summary(held, each)


def test_a_group_larger_than_held_share_times_its_sample_holds_none() -> None:
    """Held buffers where a measured tick's fixed cost counts: a 100-agent T-maze group (a sample
    of 50) and a 48-agent 10 x 10 grid group (12 of 48) hold; 1,000 grid agents (15 of 1,000: the
    daemon's row of docs/memory.md) and 1,000 T-maze agents hold none, each measured tick
    measured when it happens."""
    tmaze = tmaze_model()
    grid = make_env("grid10", 1, seed=0).model
    for model, n, holds in ((tmaze, 100, True), (grid, 48, True), (grid, 1000, False),
                            (tmaze, 1000, False)):
        group = AifAgentGroup(model, n, precision="int8")
        cm = group.cm
        held = AifHealth.held_nbytes_for(n, cm.num_states, cm.num_obs, cm.num_policies,
                                         fixed_tables=True)
        assert (held > 0) == holds, (n, held)
        assert group.health is not None
        assert group.health.nbytes == AifHealth.nbytes_for(
            n, cm.num_states, cm.num_obs, cm.num_policies, fixed_tables=True,
            preference=bool(cm.lnC)) > held


@pytest.mark.parametrize("n", [1, 13, 100])
@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_an_unmeasured_tick_only_counted_is_what_telling_it_did(
    n: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick health does not measure (``unmeasured``: three in four, and a fresh group's
    first) is only counted, the group telling neither ``before`` nor ``after``: its windows,
    drift statistic and events are those of the same group told both on every tick, bit for
    bit (the same ticks measured, the same code), through resets and a close every 37 ticks."""
    monkeypatch.setenv(NATIVE_ENV, "1" if path == "compiled" else "0")
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
                        settings=LearningSettings(scope="per_agent"))
    runs = []
    for told_every_tick in (False, True):
        group = AifAgentGroup(model, n, learning=spec, precision="float64")
        assert group.health is not None
        assert (group.path.in_tick is not None) == (path == "compiled"), group.stepping
        if told_every_tick:
            monkeypatch.setattr(group.health, "unmeasured", lambda n: False)
        env = ReversalTMazeEnv(n, seed=11, reverse_every=50)
        obs = env.reset()
        summaries, events = [], []
        for t in range(150):
            if env.episode_start.any():
                group.reset(env.episode_start)
            obs = env.step(group.step(obs, now=float(t)))
            events += [(e.kind, e.data["statistic"]) for e in group.alerts()]
            if (t + 1) % 37 == 0:
                summaries.append(group.health_summary())
        runs.append((summaries, events, group.health._clock))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 4
