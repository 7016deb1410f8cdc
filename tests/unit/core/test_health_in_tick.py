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

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import health as kernels_health
from edge_agent.aif.kernels.native import binding
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.health import HEALTH_EVERY, AifHealth
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.tick_paths import CompiledTick
from edge_agent.sim.registry import builtin_model, make_env
from tests.support.native_tick import SANITIZED_ENV


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
        if t % 5 == 4:  # some agents start an episode (their prior D)
            group.reset(rng.random(n) < 0.5)
        k = int(rng.integers(1, min(n, 70) + 1))
        rows = np.sort(rng.integers(0, n, size=k))  # repeats, any block
        if t % 3 == 0:
            rows[0], rows[-1] = 0, n - 1
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
    """Every block of rows ``health`` adds to its window, recorded (and added)."""
    seen: list[tuple[list[str], np.ndarray]] = []
    add = health.window.add_rows

    def record(names: Any, values: np.ndarray) -> None:
        seen.append((list(names), np.array(values, copy=True)))
        add(names, values)

    health.window.add_rows = record  # type: ignore[method-assign]
    return seen


def _asked(group: AifAgentGroup) -> list[int]:
    """The sizes of the samples ``group``'s pass is asked to measure, from now on."""
    path = group.path
    assert isinstance(path, CompiledTick)
    asked: list[int] = []
    measure = path.measure

    def counted(rows: Any) -> np.ndarray:
        asked.append(len(rows))
        return measure(rows)

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

    def told(obs: Any, prior: Any, in_tick: Any = None) -> None:
        del in_tick  # numpy's measures
        before(obs, prior)

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


@pytest.mark.parametrize("n", [1, 13, 100])
def test_a_group_that_holds_its_ticks_measures_them_with_numpy(n: int) -> None:
    """A small group holds its measured ticks (health.held_ticks): numpy measures them, held
    or (health.holds False) each when it happens; the pass is never asked."""
    group = _group("tmaze", n, "int8")
    assert group.health is not None
    assert group.health.nbytes > 0
    asked = _asked(group)
    env = make_env("tmaze", n, seed=2)
    obs = env.reset()
    for t in range(9):
        obs = env.step(group.step(obs, now=float(t)))
    group.health.holds = False
    for t in range(9, 17):
        obs = env.step(group.step(obs, now=float(t)))
    assert asked == []
    assert group.health.close().measures["surprise"].n > 0


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
