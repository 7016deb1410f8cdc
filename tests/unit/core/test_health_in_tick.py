"""A frozen group on the compiled tick has its pass measure health (tick.h's ``measure_rows``:
the sampled agents' surprise, excess surprise, free energy and belief change, written where
the pass holds each agent's prior, posterior and observed likelihood): the same measures as
:func:`edge_agent.aif.health.tick_measures` of the agents' prior and posteriors, up to rounding,
tick by tick, on the T-maze, grid10 and grid2f (one and two factors), float64 and int8, 1, 13
and 1,000 agents, any rows (repeated, the first and the last, a block's part), through episode
resets, the group keeping its prior or making it; and a group of 1,000 on the T-maze and grid2f
reports what it reported with numpy's measures (the same group told no ``in_tick``), while a
small group, which holds its measured ticks, keeps numpy's."""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import health as kernels_health
from edge_agent.aif.health import InTickFold
from edge_agent.aif.kernels.native import binding
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.health import HEALTH_EVERY, AifHealth
from edge_agent.core.health_window import HealthSummary
from edge_agent.core.learning_ticks import PassTick
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.tick_paths import CompiledTick
from edge_agent.sim.registry import builtin_model, make_env
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model
from tests.support.native_tick import SANITIZED_ENV
from tests.support.per_agent_prior import per_agent_prior


@pytest.fixture(autouse=True)
def _the_sanitized_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group takes the compiled tick unmeasured (not as its measured cost chooses); in
    test_recipe.py's sanitized subprocess, the groups' passes run on that build."""
    monkeypatch.setenv(NATIVE_ENV, "1")
    where = os.environ.get(SANITIZED_ENV)
    if where is not None:
        monkeypatch.setattr(binding, "_LIBRARY", binding.load(Path(where)))


#: Measured (40 ticks, 13 to 1,000 agents, 64 rows, each world, prior kept and made), the
#: largest difference over max(1, |value|): float64 6.6e-15 (the pass's vector logs against
#: numpy's, sums in another order); int8 3.1e-7 (health's numpy sums p(o) = A . prior in the
#: float32 table's dtype, the pass in double; a made prior: health's float64 against the pass's
#: float32, as the group keeps it).
TOL = {"float64": 1e-12, "int8": 1e-6}


def _group(world: str, n: int, precision: str, **kwargs: Any) -> AifAgentGroup:
    group = AifAgentGroup(builtin_model(world), n, precision=precision,  # type: ignore[arg-type]
                          **kwargs)
    assert isinstance(group.path, CompiledTick), group.stepping
    return group


def _sampled_rows(group: AifAgentGroup, n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """Tick ``t``'s rows to measure (sorted, repeats, any block; the first and the last agent
    every third tick), some agents starting an episode (their prior D) every fifth."""
    if t % 5 == 4:
        group.reset(rng.random(n) < 0.5)
    k = int(rng.integers(1, min(n, 70) + 1))
    rows = np.sort(rng.integers(0, n, size=k))
    if t % 3 == 0:
        rows[0], rows[-1] = 0, n - 1
    return rows


#: The worlds and sizes whose groups take the compiled tick (1,000 grid10 agents step numpy's
#: local planner: native_pass.LOCAL_MEASURED).
SIZES = [(w, n) for w in ("tmaze", "grid10", "grid2f") for n in (1, 13, 1000)
         if (w, n) != ("grid10", 1000)]


@pytest.mark.parametrize("precision", ["float64", "int8"])
@pytest.mark.parametrize(("world", "n"), SIZES)
@pytest.mark.parametrize("keep_prior", [True, False], ids=["kept", "made"])
def test_the_pass_measures_what_tick_measures_does(
    world: str, n: int, precision: str, keep_prior: bool
) -> None:
    group = _group(world, n, precision, keep_prior=keep_prior, health=False)
    path = group.path
    assert isinstance(path, CompiledTick)
    state = group.state
    env = make_env(world, n, seed=5)
    obs = env.reset()
    rng = np.random.default_rng(1)
    for t in range(12):
        rows = _sampled_rows(group, n, t, rng)
        k = rows.shape[0]
        prior = path.tick_prior()
        assert prior is not None
        before = prior(rows) if callable(prior) else [
            np.array(p[rows], dtype=np.float64) for p in prior]
        o = np.array(obs[rows], dtype=np.int64)
        measured = path.measure(rows)
        actions = group.step(obs, now=float(t))
        want = kernels_health.tick_measures(
            before, [np.asarray(q[rows], dtype=np.float64) for q in state.qs],
            path.likelihood(rows), o)
        assert measured.shape == (4, k)
        np.testing.assert_allclose(measured, want, rtol=TOL[precision], atol=TOL[precision])
        # the next tick unmeasured: the array stays as this one wrote it
        kept = measured.copy()
        obs = env.step(actions)
        actions = group.step(obs, now=t + 0.5)
        np.testing.assert_array_equal(measured, kept)
        obs = env.step(actions)


def _recorded(health: AifHealth) -> list[tuple[list[str], np.ndarray]]:
    """Every block of rows ``health`` adds to its window (summed by the window or by health),
    recorded (and added)."""
    seen: list[tuple[list[str], np.ndarray]] = []
    window = health.window
    add, add_summed, add_block = window.add_rows, window.add_rows_summed, window.add_block

    def record(names: Any, values: np.ndarray) -> None:
        seen.append((list(names), np.array(values, copy=True)))
        add(names, values)

    def record_summed(names: Any, values: np.ndarray, totals: Any, squares: Any) -> None:
        seen.append((list(names), np.array(values, copy=True)))
        add_summed(names, values, totals, squares)

    def record_block(names: Any, values: np.ndarray, totals: Any, squares: Any) -> None:
        # (the pass's sums of the block are its rows', up to rounding)
        np.testing.assert_allclose(totals, values.sum(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(squares, (values * values).sum(axis=1), rtol=1e-12,
                                   atol=1e-12)
        seen.append((list(names), np.array(values, copy=True)))
        add_block(names, values, totals, squares)

    window.add_rows = record  # type: ignore[method-assign]
    window.add_rows_summed = record_summed  # type: ignore[method-assign]
    window.add_block = record_block  # type: ignore[method-assign]
    return seen


def _asked(group: AifAgentGroup) -> list[int]:
    """The sizes of the samples ``group``'s pass is asked to measure, from now on."""
    path = group.path
    assert isinstance(path, CompiledTick)
    asked: list[int] = []
    measure = path.measure

    def counted(rows: Any, fold: Any = None) -> np.ndarray:
        asked.append(len(rows))
        return measure(rows, fold)

    path.measure = counted  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize("precision", ["float64", "int8"])
@pytest.mark.parametrize("world", ["tmaze", "grid2f"])
@pytest.mark.parametrize("keep_prior", [True, False], ids=["kept", "made"])
def test_a_large_group_reports_what_numpy_s_measures_report(
    world: str, precision: str, keep_prior: bool
) -> None:
    n = 1000
    mine, theirs = (_group(world, n, precision, keep_prior=keep_prior) for _ in range(2))
    assert mine.health is not None
    assert theirs.health is not None
    before = theirs.health.before

    def told(obs: Any, prior: Any, in_tick: Any = None, likelihood: Any = None) -> None:
        del in_tick  # numpy's measures
        before(obs, prior, likelihood=likelihood)

    theirs.health.before = told  # type: ignore[method-assign]
    asked = _asked(mine)
    got, want = _recorded(mine.health), _recorded(theirs.health)
    env = make_env(world, n, seed=5)
    obs = env.reset()
    rng = np.random.default_rng(1)
    for t in range(6 * HEALTH_EVERY + 1):
        if t % 5 == 4:
            reset = rng.random(n) < 0.5
            mine.reset(reset)
            theirs.reset(reset)
        actions = mine.step(obs, now=float(t))
        np.testing.assert_array_equal(theirs.step(obs, now=float(t)), actions)
        obs = env.step(actions)
    assert len(got) == len(want) >= 6
    for (names, values), (names_w, values_w) in zip(got, want, strict=True):
        assert names == names_w
        np.testing.assert_allclose(values, values_w, rtol=TOL[precision], atol=TOL[precision])
    assert len(asked) == len(got)  # every measured tick's model measures the pass's
    assert set(asked) == {mine.health.rows().shape[0]}


#: Small groups on the compiled tick or the learning pass (which hold their measured ticks on
#: numpy): a frozen int8 group, each agent its own ``pA``, a shared int8 ``pA``.
SMALL = [("frozen", "int8", None), ("per_agent", "float64", "per_agent"),
         ("shared", "int8", "shared")]


def _small_group(scope: str | None, precision: str, n: int) -> AifAgentGroup:
    model = tmaze_reversal_model()
    spec = None if scope is None else LearningSpec(
        pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
        settings=LearningSettings(scope=scope))  # type: ignore[arg-type]
    group = AifAgentGroup(model, n, precision=precision,  # type: ignore[arg-type]
                          learning=spec)
    assert group.path.in_tick is not None, group.stepping
    assert group.health is not None
    assert group.health.nbytes > 0  # a small group: it holds on numpy
    return group


def _close_summary(a: HealthSummary, b: HealthSummary, tol: float) -> None:
    """Two windows' summaries equal up to ``tol`` (relative, at least 1 absolute), p95 too."""
    assert a.agent_steps == b.agent_steps
    assert set(a.measures) == set(b.measures)
    for name, x in a.measures.items():
        y = b.measures[name]
        assert x.n == y.n, name
        for got, want in ((x.mean, y.mean), (x.std, y.std), (x.p95, y.p95)):
            assert math.isclose(got, want, rel_tol=tol, abs_tol=tol), (name, got, want)
    assert a.drift is not None
    assert b.drift is not None
    assert a.drift.alarm == b.drift.alarm
    assert math.isclose(a.drift.statistic, b.drift.statistic, rel_tol=tol, abs_tol=tol)


@pytest.mark.parametrize("n", [1, 13, 100])
@pytest.mark.parametrize(("kind", "precision", "scope"), SMALL, ids=[c[0] for c in SMALL])
def test_a_small_group_s_pass_measures_each_measured_tick(
    kind: str, precision: str, scope: str | None, n: int
) -> None:
    """A small group on the compiled tick or the learning pass holds no measured tick: its pass
    measures each one (asked on every measured tick, the sample whole), and its windows (closed
    every 37 ticks), drift statistic and events are those of the same group measured with
    numpy's held ticks (told no ``in_tick``), up to rounding (``TOL``)."""
    del kind
    mine, theirs = (_small_group(scope, precision, n) for _ in range(2))
    assert mine.health is not None
    assert theirs.health is not None
    before = theirs.health.before

    def told(obs: Any, prior: Any, in_tick: Any = None, likelihood: Any = None) -> None:
        del in_tick  # numpy's measures, held (a learned A's worked out before the tick)
        if prior is None and scope == "per_agent":  # the tick's prior, as numpy makes it (a
            # per-agent pass leaves the next one in the state)
            prior = per_agent_prior(theirs)
        before(obs, prior, likelihood=likelihood)

    theirs.health.before = told  # type: ignore[method-assign]
    asked: list[int] = []
    measure = mine.path.in_tick
    assert measure is not None

    def counted(rows: Any, fold: Any = None) -> np.ndarray:
        asked.append(len(rows))
        return measure(rows, fold)

    mine.health.before = partial(_with_in_tick, mine.health.before, counted)  # type: ignore[method-assign]
    runs = []
    for group in (mine, theirs):
        env = ReversalTMazeEnv(n, seed=11, reverse_every=50)
        obs = env.reset()
        summaries, events = [], []
        for t in range(300):
            if env.episode_start.any():
                group.reset(env.episode_start)
            obs = env.step(group.step(obs, now=float(t)))
            events += [(e.kind, float(e.data["statistic"])) for e in group.alerts()]
            if (t + 1) % 37 == 0:
                summary = group.health_summary()
                assert summary is not None
                summaries.append(summary)
            if group is mine:
                assert mine.health._held == 0  # nothing held on the pass
        runs.append((summaries, events))
    (got, got_events), (want, want_events) = runs
    assert len(got) == len(want) == 8
    for a, b in zip(got, want, strict=True):
        _close_summary(a, b, TOL[precision])
    assert [k for k, _ in got_events] == [k for k, _ in want_events]
    for (_, x), (_, y) in zip(got_events, want_events, strict=True):
        assert math.isclose(x, y, rel_tol=TOL[precision], abs_tol=TOL[precision])
    assert len(asked) == 300 // HEALTH_EVERY  # every measured tick
    assert set(asked) == {mine.health.rows().shape[0]}


def _with_in_tick(before: Any, in_tick: Any, obs: Any, prior: Any, given: Any = None, *,
                  likelihood: Any = None) -> None:
    """``before`` told ``in_tick`` in place of the path's (``given``)."""
    assert given is not None
    before(obs, prior, in_tick, likelihood=likelihood)


@pytest.mark.parametrize("rows", [[-1, 3], [5, 2], [0, 9, 8]], ids=["negative", "down", "late"])
def test_the_pass_refuses_rows_it_would_read_outside_their_block(rows: list[int]) -> None:
    """The pass reads a measured row in its agent's block, from the block's first agent: a row
    below 0 or out of order is refused before any run, and the kernel measures nobody."""
    group = _group("tmaze", 13, "float64", health=False)
    path = group.path
    assert isinstance(path, CompiledTick)
    with pytest.raises(ValueError, match="ascending and at least 0"):
        path.measure(np.array(rows, dtype=np.int64))
    group.step(make_env("tmaze", 13, seed=3).reset())  # runs, measuring nobody


# -- groups that learn (the learning pass: PassTick) -------------------------------------------

#: The learning groups whose pass measures health: (world, learned table, its index, scope,
#: precision); the benchmark's workloads (benchmarks/bench_learning_peers.py: the learned table's
#: prior counts its table times 2 plus 0.5 on its support, rate 1).
LEARNING: list[Learned] = [
    ("tmaze", "A", 1, "per_agent", "float64"),
    ("grid10", "B", 0, "per_agent", "float64"),
    ("tmaze", "A", 1, "shared", "int8"),
    ("tmaze", "A", 1, "shared", "float64"),
    ("grid10", "B", 0, "shared", "float64"),
    ("grid10", "B", 0, "shared", "int8"),
]


#: A learning group: (world, learned table, its index, scope, precision).
Learned = tuple[str, str, int, str, str]


def _learning_group(learned: Learned, n: int, **kwargs: Any) -> AifAgentGroup:
    world, kind, index, scope, precision = learned
    model = builtin_model(world)
    table = (model.A if kind == "A" else model.B)[index]
    spec = LearningSpec(**{f"p{kind}": {index: table * 2.0 + 0.5 * (table > 0)}},  # type: ignore[arg-type]
                        refresh_every=1,
                        settings=LearningSettings(lr_pA=1.0, lr_pB=1.0, scope=scope))  # type: ignore[arg-type]
    group = AifAgentGroup(model, n, precision=precision, learning=spec,  # type: ignore[arg-type]
                          **kwargs)
    assert isinstance(group.path, PassTick), group.stepping
    return group


#: ... at 1, 13, 100 and 1,000 agents, but the int8 shared grid10's above 32 (its learned
#: columns fixed, numpy's local planner: native_pass.LOCAL_MEASURED).
LEARNING_SIZES = [(c, n) for c in LEARNING for n in (1, 13, 100, 1000)
                  if not (c[0] == "grid10" and c[3:] == ("shared", "int8") and n > 32)]


@pytest.mark.parametrize(("learned", "n"), LEARNING_SIZES,
                         ids=["-".join(map(str, (*c, n))) for c, n in LEARNING_SIZES])
def test_a_learning_pass_measures_what_tick_measures_does(learned: Learned, n: int) -> None:
    """The pass's measures of a learning group against :func:`tick_measures` of the tick's
    prior, the posteriors and the likelihood the agents inferred with (a learned ``A``: its
    tables before the tick's update, copied before the step), tick by tick, through resets."""
    group = _learning_group(learned, n, health=False)
    world, precision = learned[0], learned[4]
    path = group.path
    assert isinstance(path, PassTick)
    state = group.state
    env = make_env(world, n, seed=5)
    obs = env.reset()
    rng = np.random.default_rng(1)
    for t in range(12):
        rows = _sampled_rows(group, n, t, rng)
        k = rows.shape[0]
        prior = path.tick_prior()
        if prior is None:  # made by the pass (or the next prior it kept, the same): each
            # agent's own B of its action times its posterior, or D
            prior = per_agent_prior(group)
        before = [np.array(p[rows], dtype=np.float64) for p in prior]
        o = np.array(obs[rows], dtype=np.int64)
        tables = [np.array(a) for a in path.likelihood(rows)]  # (the step learns from o)
        assert path.in_tick is not None
        measured = path.in_tick(rows)
        actions = group.step(obs, now=float(t))
        want = kernels_health.tick_measures(
            before, [np.asarray(q[rows], dtype=np.float64) for q in state.qs], tables, o)
        assert measured.shape == (4, k)
        np.testing.assert_allclose(measured, want, rtol=TOL[precision], atol=TOL[precision])
        kept = measured.copy()  # the next tick unmeasured: the array stays as this one wrote it
        obs = env.step(actions)
        actions = group.step(obs, now=t + 0.5)
        np.testing.assert_array_equal(measured, kept)
        obs = env.step(actions)


# -- health's fold in the pass (tick.c's fold_measures) ----------------------------------------

#: The groups whose pass folds the sample: frozen (the compiled tick) and learning (the pass).
FOLDED = [*(("frozen", w, n, p) for w, n in SIZES for p in ("float64", "int8")),
          *(("learning", c, n, c[4]) for c in LEARNING for n in (13, 100)
            if not (c[0] == "grid10" and c[3:] == ("shared", "int8") and n > 32))]


def _fold_ids(case: Any) -> str:
    kind, world, n, precision = case
    return "-".join(map(str, (kind, *world, n) if kind == "learning" else (kind, world, n,
                                                                           precision)))


@pytest.mark.parametrize("case", FOLDED, ids=[_fold_ids(c) for c in FOLDED])
@pytest.mark.parametrize("preference", [True, False], ids=["preference", "none"])
def test_the_pass_folds_the_sample_as_health_s_numpy_does(case: Any, preference: bool) -> None:
    """The pass's fold of the sampled agents (:class:`~edge_agent.aif.health.InTickFold`),
    against numpy's, tick by tick, through resets, any rows: each one's policy entropy
    (:func:`~edge_agent.aif.health.entropy` of its ``q_pi`` as the state keeps it) and
    preference (:func:`~edge_agent.aif.health.preference`, of a table of random numbers: any
    modality's row read at its own offset), and every row's sum and sum of squares over the
    agents (the entropy's, the preference's, then the four measures'), up to rounding; without a
    preference the block's rows and sums close up. The arrays are the fold's, bound again each
    measured tick; an unmeasured tick leaves them as they were."""
    kind, world, n, precision = case
    group = (_learning_group(world, n, health=False) if kind == "learning"
             else _group(world, n, precision, health=False))
    world = world[0] if kind == "learning" else world
    path = group.path
    assert path.in_tick is not None
    state = group.state
    rng = np.random.default_rng(4)
    lnC = [rng.normal(size=o) for o in group.cm.num_obs]
    w = 6 if preference else 5
    block, sums = np.full((w, 70), np.nan), np.full((2, w), np.nan)
    env = make_env(world, n, seed=5)
    obs = env.reset()
    for t in range(12):
        rows = _sampled_rows(group, n, t, rng)
        k = rows.shape[0]
        if block.shape[1] != k:  # (a new sample size: new buffers, bound again)
            block, sums = np.full((w, k), np.nan), np.full((2, w), np.nan)
        fold = InTickFold(measures=block[w - 4:], entropy=block[0],
                          lnC=np.concatenate(lnC) if preference else None,
                          preference=block[1] if preference else None, sums=sums)
        o = np.array(obs[rows], dtype=np.int64)
        assert path.in_tick(rows, fold) is fold.measures
        actions = group.step(obs, now=float(t))
        want = [kernels_health.entropy(state.q_pi[rows])]
        if preference:
            want.append(kernels_health.preference(lnC, o))
        np.testing.assert_allclose(block[: w - 4], np.vstack(want), rtol=TOL[precision],
                                   atol=TOL[precision])
        np.testing.assert_allclose(sums[0], block.sum(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sums[1], (block * block).sum(axis=1), rtol=1e-12,
                                   atol=1e-12)
        kept = block.copy(), sums.copy()  # the next tick unmeasured: the fold stays
        obs = env.step(actions)
        actions = group.step(obs, now=t + 0.5)
        np.testing.assert_array_equal(block, kept[0])
        np.testing.assert_array_equal(sums, kept[1])
        obs = env.step(actions)
