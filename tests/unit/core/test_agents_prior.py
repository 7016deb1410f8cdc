"""A group that keeps no prior between ticks (``AifAgentGroup(keep_prior=False)``): each block's
prior is made again at the start of the next tick from the beliefs and committed actions, as
the tick that committed them made it, so every tick gives the numbers of a group that keeps
it, bit for bit (compared exactly here, not to rounding), on one process (in the compiled tick
where it takes the group) and on workers, across resets, snapshots of either kind and resizes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSpec
from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.errors import InputError
from edge_agent.sim.registry import make_env

STOCHASTIC = dataclasses.replace(AifSettings(), action_selection="stochastic")


@pytest.fixture(autouse=True)
def _one_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both groups of a pair step the same path: the compiled tick wherever it can take them,
    unmeasured (``EDGE_AGENT_NATIVE_TICK=1``; measured, a pair of grid10 groups of a few hundred
    agents could land on different paths on a busy machine, equal only to rounding), numpy's
    where it cannot (a planning policy, sampled actions, workers)."""
    monkeypatch.setenv(NATIVE_ENV, "1")


def group(env: Any, n: int, keep: bool, **kw: Any) -> AifAgentGroup:
    return AifAgentGroup(
        env.model, n, history_capacity=8, history_beliefs="map", keep_prior=keep, **kw
    )


def run(
    world: str,
    n: int,
    keep: tuple[bool, bool],
    *,
    ticks: int = 12,
    switch_at: int | None = None,
    workers: int = 1,
    **kw: Any,
) -> list[tuple[np.ndarray, ...]]:
    """Actions, beliefs, policy posteriors and history of every tick; at ``switch_at`` the
    state moves (``state_dict``) into a new group that keeps its prior as ``keep[1]`` says."""
    env: Any = make_env(world, n, seed=3)
    g = group(env, n, keep[0], **kw)
    if workers > 1:
        g.start_workers(workers)
    obs, out = env.reset(), []
    for t in range(ticks):
        if t == switch_at:
            saved = {k: np.array(v, copy=True) for k, v in g.state_dict().items()}
            g.stop_workers()
            g = group(env, n, keep[1], **kw)
            g.load_state_dict(saved)
        if env.episode_start.any():
            g.reset(env.episode_start)
        actions = g.step(obs).copy()
        history = g.history.window("qs_p", 1) if g.history is not None else np.zeros(0)
        out.append((actions, *(q.copy() for q in g.qs), g.q_pi.copy(), np.array(history)))
        obs = env.step(actions)
    g.stop_workers()
    return out


def assert_same(a: list[tuple[np.ndarray, ...]], b: list[tuple[np.ndarray, ...]]) -> None:
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v, err_msg=f"tick {t}")


PLANNING = [EVERY_TICK, PlanningPolicy(every=4), PlanningPolicy(every=2, max_agents=300)]


@pytest.mark.parametrize("planning", PLANNING, ids=["every_tick", "every_4", "budget"])
@pytest.mark.parametrize(("world", "n", "block"), [("grid10", 700, 2048), ("grid10", 700, 64),
                                                   ("explorer", 200, 10), ("grid10", 5, 2048)])
@pytest.mark.parametrize("settings", [AifSettings(), STOCHASTIC], ids=["argmax", "sampled"])
def test_the_same_numbers_as_a_group_that_keeps_its_prior(
    planning: PlanningPolicy, world: str, n: int, block: int, settings: AifSettings
) -> None:
    """Local planner, several blocks, a last block small enough for the small-block planner
    (its prior read off that planner's predictions, made again), a budget; a snapshot of
    either kind restored into the other kind."""
    kw = {"planning": planning, "block_size": block, "settings": settings}
    assert_same(run(world, n, (True, True), **kw), run(world, n, (False, False), **kw))
    # (a new group draws its sampled actions from the seed again: so does the reference)
    kept = run(world, n, (True, True), switch_at=5, **kw)
    assert_same(kept, run(world, n, (True, False), switch_at=5, **kw))
    assert_same(kept, run(world, n, (False, True), switch_at=5, **kw))


@pytest.mark.parametrize("planning", PLANNING[:2], ids=["every_tick", "every_4"])
def test_the_same_numbers_on_workers(
    planning: PlanningPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers step numpy's blocks: so does the reference group here (on one process a group
    that does not learn would take the compiled tick, whose ties may break the other way)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    kw = {"planning": planning, "block_size": 64}
    kept = run("grid10", 500, (True, True), **kw)
    assert_same(kept, run("grid10", 500, (False, False), workers=2, shared_state=True, **kw))


def test_half_the_beliefs_bytes_and_no_prior() -> None:
    env: Any = make_env("grid10", 10, seed=0)
    kept, derived = group(env, 3000, True), group(env, 3000, False)
    assert kept.state.keeps_prior
    assert not derived.state.keeps_prior
    assert derived.prior == []
    S = sum(derived.cm.num_states) * 4
    assert kept.memory.nbytes_by_part()["beliefs"] == 2 * S
    assert derived.memory.nbytes_by_part()["beliefs"] == S + 1  # qs, and whether the prior is D
    assert kept.nbytes - derived.nbytes == 3000 * (S - 1)
    # the block's prior is made in the scratch of each process instead
    assert derived.scratch_nbytes(3000) - kept.scratch_nbytes(3000) == derived.block_size * S
    assert "prior0" not in derived.state_dict()
    assert {"prior_reset", "prior_small"} <= derived.state_dict().keys()


def test_a_prior_that_would_not_follow_is_kept() -> None:
    """Every tick, a block that the dense tree plans reads its prior off the tree's
    predictions: the group keeps it (a model without a local planner, a block of more agents
    than the small-block planner takes); a planning policy propagates every prior."""
    env: Any = make_env("explorer", 10, seed=0)
    assert group(env, 300, False).state.keeps_prior
    assert not group(env, 300, False, planning=PlanningPolicy(every=4)).state.keeps_prior
    assert not group(env, 12, False).state.keeps_prior  # one small block
    tmaze: Any = make_env("tmaze", 10, seed=0)  # the joint small-block path gathers priors
    assert group(tmaze, 300, False, planning=PlanningPolicy(every=4)).state.keeps_prior


def test_what_needs_a_kept_prior_is_refused_in_one_line() -> None:
    env: Any = make_env("grid10", 200, seed=0)
    g = group(env, 200, False)
    assert not g.state.keeps_prior
    obs = env.reset()
    g.infer_states(obs)
    with pytest.raises(InputError, match="commit actions"):
        g.infer_states(obs)
    with pytest.raises(InputError, match="commit actions"):
        g.step(obs)
    g.infer_policies()
    g.sample_action()
    g.step(obs)  # acted: inferring again is fine
    with pytest.raises(InputError, match="drive_prior needs a group that keeps it"):
        g.drive_prior(np.zeros((200, 1), dtype=np.int64))
    learn_b = LearningSpec(pB={0: env.model.B[0] * 10.0 + 0.5})
    learns = AifAgentGroup(env.model, 5, learning=learn_b)
    assert learns.state.keeps_prior  # learning reads, writes it
    with pytest.raises(InputError, match="a group that learns keeps its prior"):
        AifAgentGroup(env.model, 5, keep_prior=False, learning=learn_b)


def test_the_piecewise_api_gives_the_numbers_of_a_kept_group() -> None:
    """infer_states, infer_policies, sample_action and set_action, with resets between."""
    env: Any = make_env("grid10", 300, seed=1)
    groups = [group(env, 300, keep, block_size=64) for keep in (True, False)]
    obs = env.reset()
    for t in range(8):
        results = []
        for g in groups:
            if t % 3 == 2:
                g.reset(env.episode_start | (np.arange(300) % 7 == t))
            qs = [q.copy() for q in g.infer_states(obs)]
            q_pi = g.infer_policies()[0].copy()
            actions = g.sample_action().copy()
            if t % 2:
                g.set_action((actions + 1) % 5)
            results.append((*qs, q_pi, actions))
        for a, b in zip(*results, strict=True):
            np.testing.assert_array_equal(a, b)
        obs = env.step(groups[0].action)


def test_resizing_keeps_the_numbers() -> None:
    env: Any = make_env("grid10", 400, seed=2)
    groups = [group(env, 300, keep, block_size=64) for keep in (True, False)]
    obs = env.reset()[:300]
    for g in groups:
        g.step(obs)
        g.resize(400)
    obs = env.reset()
    for _ in range(4):
        actions = [g.step(obs).copy() for g in groups]
        np.testing.assert_array_equal(actions[0], actions[1])
        for a, b in zip(groups[0].qs, groups[1].qs, strict=True):
            np.testing.assert_array_equal(a, b)
        obs = env.step(actions[0])
