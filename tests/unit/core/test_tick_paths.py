"""A group's tick paths (edge_agent.core.tick_paths): the path each kind of group gets, chosen when
the group is made and again only when what it depends on changes (workers, a resize, a learning
verb, a snapshot restored), never from one tick to the next; the health part told the tick's
prior before every path and its posteriors after."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.learning_ticks import PassTick, SharedLearningTick, StagesTick
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.tick_paths import CompiledTick, FusedTick, PolicyTick
from edge_agent.sim.registry import make_env
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model

BLOCK = 16


def _learning(scope: str, *, refresh_every: int = 1, **settings: Any) -> LearningSpec:
    model = tmaze_reversal_model()
    return LearningSpec(pA={1: model.A[1] * 2.0 + 0.5}, refresh_every=refresh_every,
                        settings=LearningSettings(scope=scope, **settings))  # type: ignore[arg-type]


def _group(n: int, monkeypatch: pytest.MonkeyPatch, *, native: bool = True,
           **kwargs: Any) -> AifAgentGroup:
    monkeypatch.setenv(NATIVE_ENV, "1" if native else "0")
    group = AifAgentGroup(tmaze_reversal_model(), n, precision="float64", block_size=BLOCK,
                          **kwargs)
    monkeypatch.delenv(NATIVE_ENV)
    return group


def _obs(group: AifAgentGroup, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, o, size=group.n_agents) for o in group.cm.num_obs], axis=1)


@pytest.mark.parametrize(("kwargs", "native", "path"), [
    ({}, True, CompiledTick),
    ({}, False, FusedTick),
    ({"planning": PlanningPolicy(every=3)}, True, PolicyTick),
    ({"planning": PlanningPolicy(every=3), "learning": _learning("shared")}, True, PolicyTick),
    ({"learning": _learning("shared")}, True, PassTick),
    ({"learning": _learning("shared")}, False, SharedLearningTick),
    ({"learning": _learning("shared", refresh_every=4)}, True, SharedLearningTick),
    ({"learning": _learning("per_agent")}, True, PassTick),
    ({"learning": _learning("per_agent")}, False, StagesTick),
])
def test_each_kind_of_group_gets_its_path(
    kwargs: dict[str, Any], native: bool, path: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = _group(5, monkeypatch, native=native, **kwargs)
    assert type(group.path) is path
    group.step(np.zeros((5, group.cm.num_modalities), dtype=np.int64))


def test_a_shared_group_keeps_its_path_from_tick_to_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refresh ticks (which learn before they plan) and the fused ticks between run on one path
    object; only a verb, workers or a resize choose again."""
    n = 3 * BLOCK
    group = _group(n, monkeypatch, native=False, learning=_learning("shared", refresh_every=3))
    learning = group.learning
    assert learning is not None
    rng = np.random.default_rng(1)
    path = group.path
    staged = []
    for _ in range(7):
        staged.append(learning.learns_before_planning())
        group.step(_obs(group, rng))
        assert group.path is path
    assert any(staged)
    assert not all(staged)
    assert learning.refreshes == 2


def test_a_verb_workers_a_resize_and_a_restore_choose_the_path_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 3 * BLOCK
    group = _group(n, monkeypatch, learning=_learning("shared"))
    learning = group.learning
    assert learning is not None
    rng = np.random.default_rng(2)
    group.step(_obs(group, rng))
    assert type(group.path) is PassTick
    assert learning.behind  # the pass left the compiled tables behind its own
    assert learning.freeze()
    assert type(group.path) is PassTick  # the freeze is taken before the next tick
    group.step(_obs(group, rng))
    assert type(group.path) is SharedLearningTick  # frozen: the plain group's tick
    assert not learning.behind  # brought in before the fused tick read them
    saved = {k: v.copy() for k, v in group.state_dict().items()}
    assert learning.resume()
    group.step(_obs(group, rng))
    assert type(group.path) is PassTick
    path = group.path
    group.load_state_dict(saved)  # a snapshot of the frozen group
    assert learning.frozen
    assert type(group.path) is SharedLearningTick
    path = group.path
    group.resize(n + 5)
    assert group.path is not path
    path = group.path
    assert group.start_workers(2) == 2
    try:
        assert group.path is not path
        group.step(_obs(group, rng))
    finally:
        group.stop_workers()
    assert type(group.path) is SharedLearningTick


def test_the_health_prior_comes_from_where_the_path_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept by the last tick (before the path runs), made again for the sampled agents of a
    group that keeps none, or made by the tick itself where each agent has its own tables (read
    after it): the surprise measured is the same as under a kept prior (both groups on one
    path, unmeasured: the compiled tick)."""
    monkeypatch.setenv(NATIVE_ENV, "1")
    env: Any = make_env("grid10", 3 * BLOCK, seed=4)
    kept = AifAgentGroup(env.model, 3 * BLOCK, block_size=BLOCK)
    remade = AifAgentGroup(env.model, 3 * BLOCK, block_size=BLOCK, keep_prior=False)
    assert not remade.state.keeps_prior
    assert callable(remade.path.tick_prior())
    assert kept.path.tick_prior() is kept.state.prior
    obs = env.reset()
    for _ in range(9):
        actions = kept.step(obs).copy()
        remade.step(obs)
        np.testing.assert_array_equal(remade.action, actions)
        obs = env.step(actions)
    ours, theirs = kept.health_summary(), remade.health_summary()
    assert ours is not None
    assert theirs is not None
    for name, stats in ours.measures.items():
        assert theirs.measures[name].mean == pytest.approx(stats.mean, rel=1e-6, abs=1e-9), name
    own = _group(4, monkeypatch, native=False, learning=_learning("per_agent"))
    assert own.path.tick_prior() is None  # its inference makes each agent's prior
    rng = np.random.default_rng(5)
    for _ in range(5):
        own.step(_obs(own, rng))
    summary = own.health_summary()
    assert summary is not None
    assert summary.measures["surprise"].n > 0  # measured with the prior the tick made
