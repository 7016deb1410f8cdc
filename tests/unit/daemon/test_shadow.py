"""A deployment's shadow (edge_agent.daemon.shadow) with real T-maze groups: the candidate is
stepped on the live group's observations and follows the live group's actions (its own are
never taken); the same model shadowing itself differs by exactly 0 on every paired tick, a model
with the reward arms swapped is clearly more surprised on the same observations."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.shadow import PairedResult
from edge_agent.daemon.shadow import ShadowRun
from edge_agent.errors import EdgeAgentError
from edge_agent.sim.tmaze import TMazeEnv, tmaze_model

N = 48


def shadowed(candidate_model: object, ticks: int = 120) -> tuple[PairedResult, ShadowRun]:
    env = TMazeEnv(N, seed=7)
    live = AifAgentGroup(env.model, N, precision="int8", seed=1)
    candidate = AifAgentGroup(candidate_model, N, precision="int8", seed=2)  # type: ignore[arg-type]
    obs = env.reset()
    for _ in range(9):  # the live group has beliefs of its own before the shadow starts
        if env.episode_start.any():
            live.reset(env.episode_start)
        obs = env.step(live.step(obs))
    run = ShadowRun(live, candidate, group="tmaze", duration_s=3600.0)
    for t in range(ticks):
        starts = env.episode_start.copy() if env.episode_start.any() else None
        if starts is not None:
            live.reset(starts)
        seen = obs.copy()
        actions = live.step(obs, now=float(t))
        run.step(obs, float(t), None, starts, actions)
        np.testing.assert_array_equal(obs, seen)  # the same observations, untouched
        np.testing.assert_array_equal(candidate.action, live.action)  # it follows the live's
        obs = env.step(actions)  # only the live group's actions reach the world
    assert run.ticks == ticks
    assert not run.due()
    return run.finish(), run


def test_the_same_model_shadowing_itself_differs_by_exactly_zero() -> None:
    result, run = shadowed(tmaze_model())
    assert run.took_beliefs
    assert result.n >= 25
    assert result.unpaired == 0
    assert set(result.diffs) == {0.0}
    assert (result.mean_diff, result.t) == (0.0, None)


def test_a_model_with_the_reward_arms_swapped_is_worse_on_the_same_observations() -> None:
    result, run = shadowed(tmaze_model(reward_probs=(0.02, 0.98)))
    assert not run.took_beliefs  # another model: it starts from its own priors
    assert result.n >= 25
    assert result.candidate_mean > result.live_mean + 0.3
    assert result.mean_diff > 0.3
    assert result.t is not None
    assert result.t > 3.0
    # the swapped arms show on the ticks the agents see a reward or a punishment: in every window
    assert len(result.diffs) == -(-result.n // 4)
    assert min(result.diffs) > 0.0


def test_groups_of_other_sizes_cannot_be_paired() -> None:
    model = tmaze_model()
    with pytest.raises(EdgeAgentError, match="the shadow has 4 agents, the group 8"):
        ShadowRun(
            AifAgentGroup(model, 8, precision="int8"),
            AifAgentGroup(model, 4, precision="int8"),
            group="g",
            duration_s=1.0,
        )
