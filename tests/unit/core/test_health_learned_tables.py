"""A group that learns its likelihood ``A`` (each agent its own ``pA``, or shared counts) is
measured under the tables its agents inferred with at the tick, before the tick's update from
the very outcome measured (docs/health.md): its surprise, excess surprise, free energy and
belief change are :func:`~edge_agent.aif.health.tick_measures` of the tick's prior, the
posteriors and the tables copied by the test before the step, on numpy (its measured ticks held
and each measured when it happens) and on the learning pass; a group that learns only ``B``
the same (its ``A`` never changes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import health as kernels_health
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.learning_ticks import PassTick
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.registry import builtin_model, make_env
from tests.support.per_agent_prior import per_agent_prior

#: float64 groups: numpy's held measures (the ticks' rows side by side) and the pass's (its
#: vector logs, its sums in another order) against tick_measures, up to rounding (measured:
#: below 1e-14 over max(1, |value|)).
TOL = 1e-12

#: (world, learned table, its index, scope)
CASES = [
    ("tmaze", "A", 1, "per_agent"),
    ("tmaze", "A", 1, "shared"),
    ("grid10", "B", 0, "per_agent"),
]
PATHS = ["numpy-held", "numpy-each", "pass"]
#: ... each on each path (grid10's sample holds no tick on numpy: its tables' bytes).
RUNS = [(c, p) for c in CASES for p in PATHS if (c[0], p) != ("grid10", "numpy-held")]


def _group(case: tuple[str, str, int, str], n: int, path: str,
           monkeypatch: pytest.MonkeyPatch) -> AifAgentGroup:
    world, kind, index, scope = case
    model = builtin_model(world)
    table = (model.A if kind == "A" else model.B)[index]
    spec = LearningSpec(**{f"p{kind}": {index: table * 2.0 + 0.5 * (table > 0)}},  # type: ignore[arg-type]
                        refresh_every=1,
                        settings=LearningSettings(lr_pA=1.0, lr_pB=1.0, scope=scope))  # type: ignore[arg-type]
    monkeypatch.setenv(NATIVE_ENV, "1" if path == "pass" else "0")
    group = AifAgentGroup(model, n, precision="float64", learning=spec)
    assert isinstance(group.path, PassTick) == (path == "pass"), group.stepping
    assert group.health is not None
    group.health.holds = path == "numpy-held"
    if path == "numpy-held":
        assert group.health.nbytes > 0  # (a group that holds its measured ticks)
    return group


def _tick_rows(health: Any) -> list[np.ndarray]:
    """The tick measures' rows ``(4, r)`` health adds to its window, block by block (a block of
    held ticks: their rows side by side, in tick order)."""
    seen: list[np.ndarray] = []
    window = health.window
    add, add_summed, add_block = window.add_rows, window.add_rows_summed, window.add_block

    def take(names: Any, values: np.ndarray) -> None:
        names = list(names)
        if "surprise" in names:
            at = [names.index(m) for m in kernels_health.TICK_MEASURES]
            seen.append(np.array(values[at], copy=True))

    def record(names: Any, values: np.ndarray) -> None:
        take(names, values)
        add(names, values)

    def record_summed(names: Any, values: np.ndarray, totals: Any, squares: Any) -> None:
        take(names, values)
        add_summed(names, values, totals, squares)

    def record_block(names: Any, values: np.ndarray, totals: Any, squares: Any) -> None:
        take(names, values)
        add_block(names, values, totals, squares)

    window.add_rows = record
    window.add_rows_summed = record_summed
    window.add_block = record_block
    return seen


@pytest.mark.parametrize("n", [13, 100])
@pytest.mark.parametrize(("case", "path"), RUNS,
                         ids=["-".join(map(str, (*c, p))) for c, p in RUNS])
def test_a_learning_group_is_measured_under_the_tables_it_inferred_with(
    case: tuple[str, str, int, str], path: str, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = _group(case, n, path, monkeypatch)
    health = group.health
    assert health is not None
    planned = group.memory.health_nbytes(n)
    assert health.nbytes == planned  # (every buffer made with the group)
    got = _tick_rows(health)
    env = make_env(case[0], n, seed=7)
    obs = env.reset()
    everyone = np.arange(n)
    want: list[np.ndarray] = []
    rng = np.random.default_rng(3)
    measured = not health._fresh  # (a fresh group's first tick is not measured)
    for t in range(41):
        if t % 9 == 8:
            group.reset(rng.random(n) < 0.5)
        tables = [np.array(a) for a in group.path.likelihood(everyone)]  # A before the tick
        kept = group.path.tick_prior()
        if kept is None:  # made at inference (per agent): as numpy makes it (after a compiled
            # pass the state holds the next tick's prior)
            kept = per_agent_prior(group)
        prior = None if callable(kept) else [np.array(p) for p in kept]
        o = np.array(obs)
        actions = group.step(obs, now=float(t))
        if (t % 4 == 0) and (t > 0 or measured):
            rows = health.rows()
            before = [p[rows] for p in (group.state.prior if prior is None else prior)]
            want.append(kernels_health.tick_measures(
                [np.asarray(p, dtype=np.float64) for p in before],
                [np.asarray(q[rows], dtype=np.float64) for q in group.state.qs],
                [a[rows] if a.ndim == 3 else a for a in tables], o[rows]))
        obs = env.step(actions)
    health.flush()
    # The tables kept before a tick are in the budget: made with the group, never again.
    assert health.nbytes == planned
    if case[1:] == ("A", 1, "per_agent"):
        r = health.rows().shape[0]
        cm = group.cm
        assert health.own_tables == (1,)
        assert planned >= 8 * r * cm.num_obs[1] * int(np.prod(cm.num_states))
    got_all, want_all = np.concatenate(got, axis=1), np.concatenate(want, axis=1)
    assert got_all.shape == want_all.shape
    np.testing.assert_allclose(got_all, want_all, rtol=TOL, atol=TOL)
    if case[1] == "A":  # (a test that can fail: the update moves the surprise measured)
        after = [np.array(a) for a in group.path.likelihood(everyone)]
        assert not all(np.array_equal(a, b) for a, b in zip(after, tables, strict=True))
