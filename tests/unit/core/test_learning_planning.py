"""Learning with a planning policy: every agent infers its
states and learns every tick, those that plan this tick and those that follow their committed
plans alike; the novelty (``param_info_gain``) is added for the agents that plan."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner, LearningSettings, LearningSpec
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.sim.grid_slippery import SlipperyGridEnv, slippery_grid_model
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model

N = 40


def spec(novelty: bool = False, refresh_every: int = 1, scope: str = "shared") -> LearningSpec:
    model = tmaze_reversal_model()
    return LearningSpec(
        pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
        pB={0: model.B[0] * 5.0 + 0.5 * (model.B[0] > 0)},
        settings=LearningSettings(lr_pA=0.5, lr_pB=0.3, forgetting=0.02, scope=scope),  # type: ignore[arg-type]
        refresh_every=refresh_every,
        param_info_gain=novelty,
    )


def tmaze_group(
    precision: str, planning: PlanningPolicy | None, *, novelty: bool = False,
    refresh_every: int = 1,
) -> AifAgentGroup:
    return AifAgentGroup(
        tmaze_reversal_model(), N, learning=spec(novelty, refresh_every), precision=precision,
        seed=3, planning=planning,
    )


def test_every_tick_policy_learns_bit_for_bit_as_without_one() -> None:
    plain = tmaze_group("int8", None, refresh_every=3)
    policy = tmaze_group("int8", PlanningPolicy(every=1), refresh_every=3)
    env_a, env_b = ReversalTMazeEnv(N, seed=5, reverse_every=3), ReversalTMazeEnv(
        N, seed=5, reverse_every=3
    )
    obs_a, obs_b = env_a.reset(), env_b.reset()
    for _ in range(25):
        for group, env in ((plain, env_a), (policy, env_b)):
            if env.episode_start.any():
                group.end_trial(env.episode_start)
        obs_a, obs_b = env_a.step(plain.step(obs_a)), env_b.step(policy.step(obs_b))
        assert np.array_equal(plain.action, policy.action)
    mine_counts, their_counts = plain.learning.learner.counts, policy.learning.learner.counts
    for mine, theirs in zip(mine_counts, their_counts, strict=True):
        for a, b in zip(mine.counts, theirs.counts, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(("precision", "atol"), [("float64", 1e-12), ("int8", 1e-5)])
def test_every_4_learns_from_every_agents_posteriors_and_committed_actions(
    precision: str, atol: float
) -> None:
    group = tmaze_group(precision, PlanningPolicy(every=4), refresh_every=2)
    model = tmaze_reversal_model()
    s = spec(refresh_every=2)
    reference = Learner(model.A, model.B, model.D, pA=s.pA, pB=s.pB, settings=s.settings)
    env = ReversalTMazeEnv(N, seed=7, reverse_every=2)
    obs = env.reset()
    followed = 0
    for _ in range(30):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
        qs_before = [q.copy() for q in group.qs]
        action, acted = group.action.copy(), group.state.has_action.copy()
        actions = group.step(obs)
        followed += group.planning_stats()["planned"] < N
        qs = [q.astype(np.float64) for q in group.qs]
        reference.learn_A(obs, qs)
        if acted.any():
            reference.learn_B(qs, [q.astype(np.float64) for q in qs_before], action, acted)
        obs = env.step(actions)
    assert followed > 10  # most ticks, some agents acted from their committed plans
    for mine, theirs in zip(group.learning.learner.counts, reference.counts, strict=True):
        for a, b in zip(mine.counts, theirs.counts, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol * max(1.0, float(b.max())))
    # the tables the agents infer with follow the counts (30 ticks, refreshed every 2)
    np.testing.assert_allclose(
        group.learning.model.A[1], normalise(group.learning.learner.counts[0].counts[0]), rtol=0,
        atol=1e-12
    )


def test_novelty_is_added_for_the_agents_that_plan() -> None:
    # at most half the group plans a tick: the others follow their committed plans
    group = tmaze_group("float64", PlanningPolicy(every=4, max_agents=N // 2), novelty=True)
    env = ReversalTMazeEnv(N, seed=9, reverse_every=2)
    obs = env.reset()
    checked = 0
    for _ in range(12):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
        obs = env.step(group.step(obs))
        planned = group.plans.plan_age == 0
        if planned.all() or not planned.any():
            continue
        G, q_pi = group.G.copy(), group.q_pi.copy()
        # the planner alone: no novelty, same beliefs
        for rows in group.stepper.blocks(group.state, dense=True):
            kernels.load_roots(rows.qs, rows.blk)
            group.stepper.plan(rows, None, group.stepper.planner(rows, None))
        plain = group.G.copy()
        group.infer_policies()  # with it
        np.testing.assert_allclose(G[planned], group.G[planned], rtol=0, atol=1e-9)
        assert not np.allclose(G[planned], plain[planned])
        checked += 1
        group.G[...], group.q_pi[...] = G, q_pi
    assert checked


def test_a_learned_dense_transition_resizes_the_blocks_mid_tick() -> None:
    """The slippery grid with a floor under ``B``: its first refresh makes ``B`` dense, so
    the planners and their block sizes change between inference and planning (the local
    planner goes, and with it the small dense fallback block: every agent is planned densely)."""
    model = slippery_grid_model()
    learning = LearningSpec(
        pB={0: 4.0 * model.B[0] + 0.05}, settings=LearningSettings(lr_pB=1.0), refresh_every=1
    )
    n = 600
    group = AifAgentGroup(model, n, learning=learning, precision="int8", seed=1,
                           planning=PlanningPolicy(every=3))
    assert group.cm.local is not None
    blocks = (group.block_size, group.stepper.sizes.dense)
    env = SlipperyGridEnv(n, seed=2)
    obs = env.reset()
    for _ in range(6):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
        obs = env.step(group.step(obs))
    assert group.cm.local is None
    assert (group.block_size, group.stepper.sizes.dense) != blocks
    assert group.finite()
    assert group.learning.learner.counts[0].version == 5  # the first tick has no transition yet


def test_per_agent_counts_refuse_a_planning_policy() -> None:
    model = tmaze_reversal_model()
    with pytest.raises(InputError, match="steps every agent every tick"):
        AifAgentGroup(model, 4, learning=spec(scope="per_agent"), precision="float64",
                       planning=PlanningPolicy(every=4))


def counts_of(group: AifAgentGroup) -> list[np.ndarray]:
    return [c.copy() for kind in group.learning.learner.counts for c in kind.counts]


@pytest.mark.parametrize(
    ("planning", "refresh_every"), [(None, 1), (None, 4), (PlanningPolicy(every=4), 3)]
)
def test_two_workers_learn_the_counts_of_one_process(
    planning: PlanningPolicy | None, refresh_every: int
) -> None:
    """Blocks of 16 agents stepped by the caller and a forked worker (forked again at every
    refresh, so that both step with the refreshed tables) against one process."""
    n = 64
    groups = [
        AifAgentGroup(
            tmaze_reversal_model(), n, learning=spec(refresh_every=refresh_every),
            precision="int8", seed=3, planning=planning, block_size=16,
        )
        for _ in range(2)
    ]
    assert groups[1].start_workers(2) == 2
    envs = [ReversalTMazeEnv(n, seed=5, reverse_every=2) for _ in range(2)]
    obs = [env.reset() for env in envs]
    try:
        running = groups[1].cores.running
        pids = set(running.pids) if running else set()
        for _ in range(20):
            for i, (group, env) in enumerate(zip(groups, envs, strict=True)):
                if env.episode_start.any():
                    group.end_trial(env.episode_start)
                obs[i] = env.step(group.step(obs[i]))
            np.testing.assert_allclose(groups[0].qs[0], groups[1].qs[0], rtol=0, atol=1e-5)
        assert groups[1].workers == 2
        assert groups[1].learning.refreshes == groups[0].learning.refreshes >= 5
        running = groups[1].cores.running
        assert set(running.pids if running else ()) != pids  # reforked
        for mine, theirs in zip(counts_of(groups[0]), counts_of(groups[1]), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            groups[0].learning.model.A[1], groups[1].learning.model.A[1], rtol=0, atol=1e-9
        )
    finally:
        groups[1].stop_workers()
