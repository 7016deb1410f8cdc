"""Planning policies (edge_agent.aif.planning and AifAgentGroup's planning path).

Every policy is checked against the every-tick group, which the parity tests tie to pymdp: an
agent that plans under a policy computes what it would every tick (to rounding), an agent that
does not keeps its committed plan, and the budget serves the agents in order of need.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.planning import (
    SURPRISE_TOP,
    TICK_MARGIN,
    PlanningPolicy,
    planning_deadline,
    planning_order,
)
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.config.daemon import check_config, load_config
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.errors import ConfigError, InputError
from edge_agent.records import RecordError
from edge_agent.sim.registry import make_env


def _run(
    world: str,
    n: int,
    steps: int,
    planning: PlanningPolicy | None,
    policy_len: int = 1,
    **kw: object,
) -> Iterator[tuple[AifAgentGroup, np.ndarray]]:
    """Step a group through its world; yields the group and the tick's observation after each
    step."""
    env = make_env(world, n, seed=3)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=policy_len), planning=planning, **kw  # type: ignore[arg-type]
    )
    obs = env.reset()
    for _ in range(steps):
        if env.episode_start.any():
            group.reset(env.episode_start)
        seen = obs.copy()
        actions = group.step(obs)
        yield group, seen
        obs = env.step(actions)


def _state(group: AifAgentGroup) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in group.state_dict().items()}


# ------------------------------------------------------------------------------ every tick
@pytest.mark.parametrize(("world", "policy_len"), [("grid10", 1), ("tmaze", 1), ("explorer", 3)])
def test_every_tick_policy_is_todays_path_bit_for_bit(
    world: str, policy_len: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An every-tick planning policy steps numpy's every-tick path, bit for bit (numpy's: on one
    process a frozen group of grid10 or the T-maze may take the compiled tick, equal to numpy's
    to rounding in tests/unit/aif/kernels/native/test_equality.py)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    plain = _run(world, 40, 12, None, policy_len)
    policy = _run(world, 40, 12, PlanningPolicy(every=1), policy_len)
    for (a, _), (b, _) in zip(plain, policy, strict=True):
        sa, sb = _state(a), _state(b)
        assert sa.keys() == sb.keys()  # no plan arrays: the every-tick snapshot is unchanged
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize(
    ("world", "policy_len", "block"),
    [("grid10", 1, 512), ("grid10", 2, 512), ("tmaze", 1, 512), ("tmaze", 1, 7),
     ("explorer", 3, 512), ("explorer", 1, 16)],
)
def test_gathered_planning_of_every_agent_matches_every_tick(
    world: str, policy_len: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget that lets every agent plan takes the gather-plan-scatter path over all agents:
    beliefs, G, q_pi and actions are those of the every-tick group, to rounding (numpy's: on
    one process that group would take the compiled tick)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    n = 60
    plain = _run(world, n, 10, None, policy_len, block_size=block)
    gathered = _run(world, n, 10, PlanningPolicy(max_agents=n), policy_len, block_size=block)
    # Each agent walks its own world with its own actions: where two equally good actions are
    # split by rounding, that agent's two runs part ways, so its numbers are compared up to the
    # first tick whose actions differ (and its actions, tie-aware, at that tick too).
    # float32 sums over hundreds of policies, ten ticks deep: equal to rounding means within
    # 1e-5 absolute or 1e-4 relative.
    close = {"atol": 1e-5, "rtol": 1e-4}
    same = np.ones(n, dtype=bool)
    compared = 0
    for (a, _), (b, _) in zip(plain, gathered, strict=True):
        assert b.planning_stats()["planned"] == n
        controls = a.io().actions
        policies = construct_policies(list(controls), policy_len)
        onehot = [np.eye(u)[policies[:, 0, f]] for f, u in enumerate(controls)]
        assert agreement.actions_agree(a.q_pi[same], onehot, b.action[same]).all()
        assert agreement.actions_agree(b.q_pi[same], onehot, a.action[same]).all()
        np.testing.assert_allclose(a.q_pi[same], b.q_pi[same], **close)
        for qa, qb in zip(a.qs, b.qs, strict=True):
            np.testing.assert_allclose(qa[same], qb[same], **close)
        same &= (a.action == b.action).all(axis=1)  # the prior follows the committed action
        for qa, qb in zip(a.prior, b.prior, strict=True):
            np.testing.assert_allclose(qa[same], qb[same], **close)
        compared += int(same.sum())
    assert compared >= 0.8 * n * 10  # ties are rare: most agent-ticks were compared


# ------------------------------------------------------------------------------ triggers
def test_every_k_plans_every_k_ticks_and_holds_the_action_between() -> None:
    env = make_env("grid10", 30, seed=3)
    group = AifAgentGroup(env.model, 30, planning=PlanningPolicy(every=3))
    obs = env.reset()  # the same outcomes every tick: no episode ends, no reset
    previous = None
    for t in range(9):
        group.step(obs)
        stats = group.planning_stats()
        assert stats["planned"] == (30 if t % 3 == 0 else 0), t
        assert stats["duty_cycle"] == (1.0 if t % 3 == 0 else 0.0)
        if t % 3:
            assert previous is not None
            np.testing.assert_array_equal(group.action, previous)  # one-step plans: held
            assert stats["plan_age_max"] == t % 3
        previous = group.action.copy()


def test_a_committed_plan_is_followed_step_by_step_and_replanned_when_used_up() -> None:
    env = make_env("grid10", 25, seed=3)
    group = AifAgentGroup(
        env.model, 25, settings=AifSettings(policy_len=3), planning=PlanningPolicy(every=100)
    )
    obs = env.reset()  # the same outcomes every tick: no episode ends, no reset
    policies = group.cm.tree.policies
    committed = group.plans.plan_policy.copy()
    for t in range(6):
        group.step(obs)
        if t % 3 == 0:  # no plan yet, or the last one used up
            assert group.planning_stats()["planned"] == 25
            committed = group.plans.plan_policy.copy()
        else:
            assert group.planning_stats()["planned"] == 0
            np.testing.assert_array_equal(group.action, policies[committed, t % 3])
            np.testing.assert_array_equal(group.plans.plan_left, 2 - t % 3)


def test_belief_change_trigger_plans_exactly_the_agents_whose_beliefs_moved() -> None:
    threshold = 0.3
    env = make_env("grid10", 200, seed=5)
    group = AifAgentGroup(
        env.model, 200, planning=PlanningPolicy(every=50, belief_change=threshold)
    )
    obs = env.reset()
    seen_some, seen_none = False, False
    for t in range(12):
        if env.episode_start.any():
            group.reset(env.episode_start)
        prior = [p.copy() for p in group.prior]
        fresh = (group.plans.plan_left <= 0).copy()
        group.step(obs)
        moved = np.max(
            [0.5 * np.abs(q - p).sum(axis=1) for q, p in zip(group.qs, prior, strict=True)],
            axis=0,
        )
        expected = int(((moved >= threshold) | fresh).sum())
        assert group.planning_stats()["planned"] == expected, t
        seen_some |= 0 < expected < 200
        seen_none |= bool(((moved < threshold) & ~fresh).any())
        obs = env.step(group.action)
    assert seen_some  # the trigger chose: neither all nor none
    assert seen_none


def _surprise(model: object, obs: np.ndarray, prior: list[np.ndarray]) -> np.ndarray:
    """-ln p(o) under the prior predictive, summed directly agent by agent."""
    out = []
    for i in range(len(obs)):
        joint = prior[0][i]
        for p in prior[1:]:
            joint = np.multiply.outer(joint, p[i])
        like = np.ones_like(joint)
        for m, a in enumerate(model.A):  # type: ignore[attr-defined]
            like = like * a[obs[i, m]]
        out.append(-np.log((like * joint).sum()))
    return np.array(out)


@pytest.mark.parametrize(
    ("world", "threshold", "chooses"),
    [("tmaze", 0.6, False), ("grid10", 0.5, True), ("explorer", 1.0, True)],
)
def test_surprise_trigger_plans_exactly_the_surprised_agents(
    world: str, threshold: float, chooses: bool
) -> None:
    """``surprise``: an agent plans when -ln p(o) of its observation under the prior it
    predicted reaches the threshold, or when its plan ran out. (The T-maze's agents move in
    step, each tick all of them or none: its cue is ln 2, a fair coin; a grid agent whose ``B``
    knows its walls is rarely surprised.)"""
    n = 120
    env = make_env(world, n, seed=5)
    group = AifAgentGroup(
        env.model, n, precision="float64", planning=PlanningPolicy(every=50, surprise=threshold)
    )
    obs = env.reset()
    seen_some, seen_none = False, False
    for t in range(12):
        if env.episode_start.any():
            group.reset(env.episode_start)
        prior = [p.copy() for p in group.prior]
        fresh = (group.plans.plan_left <= 0).copy()
        group.step(obs)
        surprise = _surprise(env.model, obs, prior)
        clear = np.abs(surprise - threshold) > 1e-6  # not on the threshold, to rounding
        planned = group.plans.plan_age == 0
        np.testing.assert_array_equal(
            planned[clear], ((surprise >= threshold) | fresh)[clear], err_msg=str(t)
        )
        np.testing.assert_allclose(group.plans.change, surprise, rtol=1e-9, atol=1e-9)
        seen_some |= bool((planned & ~fresh).any())
        seen_none |= bool((~planned & ~fresh).any())
        obs = env.step(group.action)
    if chooses:  # the trigger chose: some agents with a plan planned, others did not
        assert seen_some
        assert seen_none


def test_surprise_is_a_trigger_instead_of_belief_change() -> None:
    policy = PlanningPolicy(every=4, surprise=2.5)
    assert policy.trigger == 2.5
    assert policy.describe() == "every 4 ticks or surprise >= 2.5 nats or when a plan runs out"
    assert PlanningPolicy(every=0, surprise=1.0).trigger == 1.0
    with pytest.raises(RecordError, match="surprise: needs every = 0 or every > 1"):
        PlanningPolicy(surprise=1.0)
    with pytest.raises(RecordError, match="surprise: is instead of belief_change"):
        PlanningPolicy(every=4, surprise=1.0, belief_change=0.2)
    # a budget orders by it: the most surprised first, SURPRISE_TOP nats and more tie
    surprise = np.array([0.5, 3.0, 25.0, 40.0, 3.0], dtype=np.float32)
    n = len(surprise)
    order = planning_order(
        np.arange(n, dtype=np.int64), surprise, np.array([1, 1, 1, 1, 5], np.int32),
        np.zeros(n, bool), priority=np.empty(n, np.int64), scratch=np.empty(n, np.int64),
        fscratch=np.empty(n, np.float32), top=SURPRISE_TOP,
    )
    assert order.tolist() == [2, 3, 4, 1, 0]


# ------------------------------------------------------------------------------ the budget
def test_planning_order_serves_deferred_then_most_changed_then_oldest() -> None:
    change = np.array([0.1, 0.9, 0.5, 0.5, 0.0, 0.9], dtype=np.float32)
    age = np.array([1, 2, 7, 3, 9, 2], dtype=np.int32)
    deferred = np.array([False, False, False, False, True, False])
    n = len(change)
    candidates = np.arange(n, dtype=np.int64)
    order = planning_order(
        candidates, change, age, deferred, priority=np.empty(n, np.int64),
        scratch=np.empty(n, np.int64), fscratch=np.empty(n, np.float32),
    )
    assert order.tolist() == [4, 1, 5, 2, 3, 0]
    subset = np.array([0, 3, 5], dtype=np.int64)
    order = planning_order(
        subset, change, age, deferred, priority=np.empty(n, np.int64),
        scratch=np.empty(n, np.int64), fscratch=np.empty(n, np.float32),
    )
    assert order.tolist() == [5, 3, 0]


def test_a_backlog_of_deferred_agents_is_served_oldest_first_so_none_starves() -> None:
    """Among the agents put off, the oldest plan goes first (then the largest change): with a
    budget of 3 a tick and 12 agents that must plan every tick, the quiet agents (no belief
    change) are served within the backlog's turn, not after every changing one."""
    change = np.array([0.0, 0.9, 0.5, 0.0, 0.9], dtype=np.float32)
    age = np.array([9, 2, 7, 3, 4], dtype=np.int32)
    deferred = np.array([True, True, True, True, False])
    n = len(change)
    order = planning_order(
        np.arange(n, dtype=np.int64), change, age, deferred, priority=np.empty(n, np.int64),
        scratch=np.empty(n, np.int64), fscratch=np.empty(n, np.float32),
    )
    assert order.tolist() == [0, 2, 3, 1, 4]

    n, budget = 12, 3
    rng = np.random.default_rng(0)
    age = np.zeros(n, np.int32)
    deferred = np.zeros(n, bool)
    waited = np.zeros(n, np.int64)
    for _ in range(40):
        age += 1
        change = np.where(np.arange(n) < 4, 0.0, rng.uniform(0.5, 1.0, n)).astype(np.float32)
        order = planning_order(
            np.arange(n, dtype=np.int64), change, age, deferred,
            priority=np.empty(n, np.int64), scratch=np.empty(n, np.int64),
            fscratch=np.empty(n, np.float32),
        )
        planned = order[:budget]
        age[planned] = 0
        deferred[:] = True
        deferred[planned] = False
        waited = np.maximum(waited, age)
    assert waited.max() <= n // budget  # every agent's turn within the backlog's length


def test_max_agents_defers_the_rest_and_they_go_first_next_tick() -> None:
    n, budget = 40, 15
    runs = _run("grid10", n, 8, PlanningPolicy(max_agents=budget))
    deferred_before = None
    ever = np.zeros(n, dtype=bool)
    for group, _ in runs:
        stats = group.planning_stats()
        assert stats["planned"] == budget
        assert stats["deferred"] == int(group.plans.deferred.sum())
        planned = group.plans.plan_age == 0
        ever |= planned
        assert int(planned.sum()) == budget
        if deferred_before is not None:
            # Everyone wants to plan every tick: those put off last tick are served first.
            first = deferred_before if deferred_before.sum() <= budget else None
            if first is not None:
                assert planned[first].all()
            else:
                assert planned[deferred_before].sum() == budget
        deferred_before = group.plans.deferred.copy()
    assert ever.all()


class _Clock:
    """A clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return float(self.reads)


def test_deadline_stops_between_blocks_and_the_deferred_carry_over() -> None:
    """With blocks of 4 agents and a clock that moves 1 s a read, a 2.5 s deadline lets the
    first block in (always), then one more (1 s later), and stops before the third."""
    n = 20
    clock = _Clock()
    env = make_env("grid10", n, seed=2)
    group = AifAgentGroup(
        env.model, n, planning=PlanningPolicy(deadline_ms=2500), clock=clock, block_size=4
    )
    assert group.block_size == 4
    obs = env.reset()
    served = np.zeros(n, dtype=int)
    previous_deferred = None
    for _ in range(5):
        group.step(obs)
        stats = group.planning_stats()
        assert stats["planned"] == 12  # reads at 0 (deadline set), 1 and 2 s: three blocks
        assert stats["deferred"] == n - 12
        planned = group.plans.plan_age == 0
        served += planned
        if previous_deferred is not None:
            assert planned[previous_deferred].all()  # 8 put off last tick plan first
        previous_deferred = group.plans.deferred.copy()
        obs = env.step(group.action)
    assert (served >= 2).all()  # everyone got a turn, none starved


# ------------------------------------------------------------------------------ snapshots
def test_snapshot_carries_the_committed_plans() -> None:
    policy = PlanningPolicy(every=5, belief_change=0.4, max_agents=30)
    env = make_env("grid10", 50, seed=4)
    a = AifAgentGroup(env.model, 50, settings=AifSettings(policy_len=2), planning=policy)
    obs = env.reset()
    for _ in range(7):
        obs = env.step(a.step(obs))
    state = _state(a)
    for k in ("plan_policy", "plan_left", "plan_age", "deferred"):
        assert k in state
    b = AifAgentGroup(env.model, 50, settings=AifSettings(policy_len=2), planning=policy)
    b.load_state_dict(state)
    for _ in range(6):
        act_a, act_b = a.step(obs).copy(), b.step(obs).copy()
        np.testing.assert_array_equal(act_a, act_b)
        assert a.planning_stats() == b.planning_stats()
        obs = env.step(act_a)
    # An every-tick snapshot into a group with a policy: every agent plans at its next tick.
    c = AifAgentGroup(env.model, 50, settings=AifSettings(policy_len=2))
    d = AifAgentGroup(env.model, 50, settings=AifSettings(policy_len=2), planning=policy)
    d.load_state_dict(_state(c))
    d.step(obs)
    assert d.planning_stats()["planned"] == 30


def test_resize_keeps_plans_and_new_agents_plan_first() -> None:
    env = make_env("grid10", 10, seed=1)
    group = AifAgentGroup(env.model, 10, planning=PlanningPolicy(every=4))
    obs = env.reset()
    group.step(obs)
    group.resize(14)
    group.step(np.vstack([obs, obs[:4]]))
    assert group.planning_stats()["planned"] == 4
    assert (group.plans.plan_age[10:] == 0).all()
    assert (group.plans.plan_age[:10] == 1).all()


def test_planning_memory_is_counted() -> None:
    env = make_env("grid10", 10, seed=1)
    plain = AifAgentGroup(env.model, 10)
    planned = AifAgentGroup(env.model, 10, planning=PlanningPolicy(every=4))
    extra = planned.per_agent_nbytes() - plain.per_agent_nbytes()
    # committed plans (int32), four flags, the evidence (float32), candidates and indices
    # (int32); what a policy reads besides: the belief change, a budget's order and its keys
    assert extra == 3 * 4 + 4 + 4 + 2 * 4
    assert planned.scratch_nbytes(10) > plain.scratch_nbytes(10)
    on_change = AifAgentGroup(env.model, 10, planning=PlanningPolicy(every=4, belief_change=0.2))
    assert on_change.per_agent_nbytes() - planned.per_agent_nbytes() == 4
    budget = AifAgentGroup(env.model, 10, planning=PlanningPolicy(every=4, max_agents=5))
    assert budget.per_agent_nbytes() - planned.per_agent_nbytes() == 4 + 4 + 2 * 8
    for group in (planned, on_change, budget):  # what is counted is what is allocated
        arrays = [
            group.plans.plan_policy, group.plans.plan_left, group.plans.plan_age,
            group.plans.deferred,
            group.plans.must, group.plans.planned, group.plans.flag, group.plans.evidence,
            group.plans.candidates, group.plans.arange, group.plans.change,
            group.plans.change_scratch, group.plans.keys, group.plans.index_scratch,
            group.plans.plan_action,
        ]
        assert sum(a.nbytes for a in arrays) == 10 * (
            group.per_agent_nbytes() - plain.per_agent_nbytes()
        )


# ------------------------------------------------------------------------------ config
def test_policy_rules() -> None:
    assert PlanningPolicy().every_tick
    assert not PlanningPolicy(every=1, max_agents=5).every_tick
    with pytest.raises(RecordError, match="belief_change: needs every = 0 or every > 1"):
        PlanningPolicy(belief_change=0.2)
    with pytest.raises(RecordError, match=r"every: 0 \(never for age\) needs belief_change"):
        PlanningPolicy(every=0)


def test_planning_table_in_the_daemon_config(tmp_path: Path) -> None:
    base = (
        '[[groups]]\nname = "grid"\nmodel = { type = "builtin", name = "grid10" }\n'
        'count = 10\nsource = { type = "sim" }\nsink = { type = "sim" }\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(base + "[groups.planning]\nevery = 4\nbelief_change = 0.2\nmax_agents = 5\n")
    cfg = load_config(good)
    assert cfg.groups[0].table_of(PlanningPolicy) == PlanningPolicy(
        every=4, belief_change=0.2, max_agents=5
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[groups.planning]\nevery = -1\ndeadline_ms = 0\nbudget = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems == [
        f"{bad}:8: groups[0].planning.every: must be >= 0, got -1",
        f"{bad}:9: groups[0].planning.deadline_ms: must be > 0.0, got 0",
        f"{bad}:10: groups[0].planning.budget: unknown key "
        "(allowed: every, belief_change, surprise, max_agents, deadline_ms, fit_tick)",
    ]
    cross = tmp_path / "cross.toml"
    cross.write_text(base + "[groups.planning]\nbelief_change = 0.2\n")
    with pytest.raises(ConfigError) as info:
        load_config(cross)
    assert info.value.problems == [
        f"{cross}:8: groups[0].planning.belief_change: needs every = 0 or every > 1 "
        "(with every = 1 each agent plans every tick)"
    ]


def test_soft_evidence_under_a_policy() -> None:
    """Soft evidence (one-hot here) under a policy: the gathered planning (without the local
    planner, which needs outcomes) gives the every-tick group's q_pi, and the actions are both
    optimal under it (a tie is no disagreement); the next tick plans no one."""
    n = 30
    env = make_env("grid10", n, seed=6)
    every_tick = AifAgentGroup(env.model, n)
    policy = AifAgentGroup(env.model, n, planning=PlanningPolicy(every=2))
    obs = env.reset()
    evidence = [np.eye(o, dtype=np.float32)[obs[:, m]] for m, o in enumerate(policy.cm.num_obs)]
    a, b = every_tick.step(evidence).copy(), policy.step(evidence).copy()
    assert policy.planning_stats()["planned"] == n
    np.testing.assert_allclose(every_tick.q_pi, policy.q_pi, atol=1e-5)
    rows = np.arange(n)
    best = every_tick.q_pi.max(axis=1) - 1e-4
    assert (every_tick.q_pi[rows, a[:, 0]] >= best).all()
    assert (every_tick.q_pi[rows, b[:, 0]] >= best).all()
    policy.step(evidence)
    assert policy.planning_stats()["planned"] == 0
    np.testing.assert_array_equal(policy.action, b)


@pytest.mark.parametrize(
    "policy",
    [PlanningPolicy(every=3, belief_change=0.2), PlanningPolicy(every=2, max_agents=17)],
)
def test_workers_step_a_planning_group_as_one_process_does(policy: PlanningPolicy) -> None:
    """The three passes of a planning tick on 2 processes (forked workers, shared state): the
    same beliefs, plans and actions as the caller alone."""
    n = 60
    env = make_env("grid10", n, seed=8)
    alone = AifAgentGroup(env.model, n, settings=AifSettings(policy_len=2), planning=policy,
                          block_size=8)
    shared = AifAgentGroup(env.model, n, settings=AifSettings(policy_len=2), planning=policy,
                           block_size=8)
    try:
        assert shared.start_workers(2) == 2
        obs = env.reset()
        for _ in range(10):
            if env.episode_start.any():
                alone.reset(env.episode_start)
                shared.reset(env.episode_start)
            a, b = alone.step(obs).copy(), shared.step(obs).copy()
            np.testing.assert_array_equal(a, b)
            assert alone.planning_stats() == shared.planning_stats()
            for k, v in _state(alone).items():
                np.testing.assert_array_equal(v, _state(shared)[k], err_msg=k)
            obs = env.step(a)
        assert shared.workers == 2
        assert shared.cores.restarts == 0
    finally:
        shared.release()


def test_a_group_that_steps_its_own_way_refuses_a_policy() -> None:
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.core.agents import AifAgentGroup

    env = make_env("tmaze", 4, seed=1)
    with pytest.raises(InputError, match="per-agent learning steps every agent every tick"):
        AifAgentGroup(
            env.model, 4, precision="float64",
            learning=LearningSpec(pA={1: np.ones_like(env.model.A[1])},
                                  settings=LearningSettings(scope="per_agent")),
            planning=PlanningPolicy(every=2),
        )


# --------------------------------------------------------------------- deep plans, deadline
def test_deep_planning_spreads_over_ticks_under_a_deadline() -> None:
    """Three-step policies under a deadline: each tick plans the blocks that fit (the fake clock
    lets three in), the agents put off keep walking their committed plans and go first on the
    next tick, every agent gets its turn, and what a planned agent computes is the every-tick
    evaluation of its beliefs (to rounding)."""
    n, L = 20, 3
    clock = _Clock()
    env = make_env("grid10", n, seed=2)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=L),
        planning=PlanningPolicy(deadline_ms=2500), clock=clock, block_size=4,
    )
    assert group.block_size == 4
    assert group.cm.deep is not None  # the deep planner's gathered path is what is spread
    check = AifAgentGroup(env.model, n, settings=AifSettings(policy_len=L), block_size=4)
    policies = group.cm.tree.policies
    obs = env.reset()
    served = np.zeros(n, dtype=int)
    previous_deferred = np.zeros(n, dtype=bool)
    put_off = 0
    for t in range(9):
        before = {k: getattr(group.plans, k).copy() for k in ("plan_policy", "plan_left")}
        group.step(obs)
        stats = group.planning_stats()
        planned = group.plans.plan_age == 0
        assert stats["planned"] == int(planned.sum()) <= 12  # three blocks at most
        assert stats["deferred"] == int(group.plans.deferred.sum())
        put_off += stats["deferred"]
        assert planned[previous_deferred].all() or previous_deferred.sum() > 12
        # Those that did not plan took their committed plan's next step (the last one again
        # once it is used up).
        follow = ~planned & (before["plan_left"] > 0) & (t > 0)
        step = L - before["plan_left"][follow]
        np.testing.assert_array_equal(
            group.action[follow], policies[before["plan_policy"][follow], step]
        )
        # A planned agent's q_pi is the every-tick evaluation of its beliefs.
        check.load_state_dict({k: v for k, v in _state(group).items() if k in _state(check)})
        check.infer_policies()
        np.testing.assert_allclose(group.q_pi[planned], check.q_pi[planned], atol=1e-5)
        served += planned
        previous_deferred = group.plans.deferred.copy()
        obs = env.step(group.action)
    assert put_off > 0  # the deadline did put agents off
    assert (served >= 2).all()  # none starved: deep plans spread over the ticks


class _SharedClock:
    """Like :class:`_Clock`, one second a read, but one count for the caller and its forked
    workers (a counter in shared memory behind a process-shared lock)."""

    def __init__(self) -> None:
        self.reads = multiprocessing.get_context("fork").Value("q", 0)

    def __call__(self) -> float:
        with self.reads.get_lock():
            self.reads.value += 1
            return float(self.reads.value)


def test_workers_honour_the_deadline_between_them() -> None:
    """Two processes share a tick's planning: each checks the one deadline before it takes a
    block, so together they plan as many blocks as the caller alone would (the first block,
    then one a clock read until the deadline), and put the rest off. Which blocks those are may
    differ from the caller alone: a process that took a block and reads the clock after another
    process read it for a later block skips its own (docs/planning.md, Limits)."""
    n = 20
    env = make_env("grid10", n, seed=2)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=3),
        planning=PlanningPolicy(deadline_ms=2500), clock=_SharedClock(), block_size=4,
    )
    try:
        assert group.start_workers(2) == 2
        obs = env.reset()
        for _ in range(4):
            group.step(obs)
            stats = group.planning_stats()
            # Reads at t (the deadline: t + 2.5), then t + 1, t + 2 plan and t + 3, t + 4 stop:
            # three blocks of the five each tick.
            assert stats["planned"] == 12
            assert stats["deferred"] == 8 == int(group.plans.deferred.sum())
            obs = env.step(group.action)
        assert group.workers == 2
        assert group.cores.restarts == 0
    finally:
        group.release()


def test_step_planned_plans_exactly_the_agents_given() -> None:
    """Replay's verb: the agents given plan, whatever the budget; the others that had to plan
    are deferred and act from their plans."""
    n = 12
    env = make_env("grid10", n, seed=4)
    group = AifAgentGroup(env.model, n, planning=PlanningPolicy(every=2, max_agents=1))
    obs = env.reset()
    who = np.arange(n) % 3 == 0
    group.step_planned(obs, who)  # the first tick: every agent must plan, four may
    np.testing.assert_array_equal(group.plans.plan_age == 0, who)
    np.testing.assert_array_equal(group.plans.deferred, ~who)
    assert group.planning_stats()["planned"] == 4
    assert group.planning_stats()["deferred"] == 8
    with pytest.raises(InputError, match=r"who_plans has shape \(3,\) and dtype bool"):
        group.step_planned(obs, who[:3])
    with pytest.raises(InputError, match="step_planned needs a planning policy"):
        AifAgentGroup(env.model, n).step_planned(obs, who)


def test_a_deadline_past_the_tick_is_refused_at_its_line(tmp_path: Path) -> None:
    """A planning deadline as long as the tick period would plan into the next tick:
    check-config (and so run and reload) refuse it at its line."""
    base = (
        '[daemon]\nprofile = "x86-dev"\ntick_hz = 20\n'
        '[[groups]]\nname = "grid"\nmodel = { type = "builtin", name = "grid10" }\n'
        'count = 10\nsource = { type = "sim" }\nsink = { type = "sim" }\n'
        "[groups.planning]\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "deadline_ms = 50\n")
    ok, report = check_config(bad)
    assert not ok
    assert report == (
        f"{bad}:11: groups[0].planning.deadline_ms: 50 ms is not within the 50 ms tick (20 Hz): "
        "planning would run into the next tick (docs/planning.md, choosing deadline_ms)"
    )
    good = tmp_path / "good.toml"
    good.write_text(base + "deadline_ms = 35\n")
    ok, report = check_config(good)
    assert ok, report


# ------------------------------------------------------------------------------ the tick's end
def test_the_planning_deadline_leaves_the_rest_of_the_tick_its_time() -> None:
    """A pure function of the times: the configured deadline, and with the tick's end known,
    early enough that one more block and what follows planning end before it, with a margin."""
    assert planning_deadline(10.0, deadline_s=None, left_s=None, after_s=5, block_s=5) == np.inf
    assert planning_deadline(10.0, deadline_s=0.04, left_s=None, after_s=5, block_s=5) == 10.04
    # 100 ms left: 5 ms of margin, 30 ms after planning, 10 ms a block -> 55 ms from the start
    fit = planning_deadline(10.0, deadline_s=None, left_s=0.1, after_s=0.03, block_s=0.01)
    assert fit == pytest.approx(10.0 + 0.1 * (1 - TICK_MARGIN) - 0.04)
    # whichever comes first
    assert planning_deadline(
        10.0, deadline_s=0.02, left_s=0.1, after_s=0.03, block_s=0.01
    ) == pytest.approx(10.02)
    assert planning_deadline(
        10.0, deadline_s=0.08, left_s=0.1, after_s=0.03, block_s=0.01
    ) == pytest.approx(fit)
    # a tick already late: the deadline has passed (only the first block plans)
    assert planning_deadline(10.0, deadline_s=None, left_s=-0.01, after_s=0, block_s=0) < 10.0


def test_fit_tick_is_a_budget_in_time_and_says_so() -> None:
    policy = PlanningPolicy(every=2, fit_tick=True)
    assert not policy.every_tick
    assert policy.budgeted
    assert policy.timed
    assert policy.describe() == "every 2 ticks or when a plan runs out, within the tick"
    assert not PlanningPolicy(every=2, max_agents=3).timed
    assert PlanningPolicy(deadline_ms=20).timed
    assert not PlanningPolicy(fit_tick=True).every_tick  # plans every tick, within the tick


def _paced_group(clock: _Clock, n: int = 20) -> tuple[AifAgentGroup, np.ndarray, object]:
    env = make_env("grid10", n, seed=2)
    group = AifAgentGroup(
        env.model, n, planning=PlanningPolicy(fit_tick=True), clock=clock, block_size=4
    )
    assert group.block_size == 4
    return group, env.reset(), env


def test_a_paced_group_plans_what_fits_the_tick_and_the_put_off_go_first() -> None:
    """A clock that moves 1 s a read and 10 s left in the tick: the reads of a tick are its
    start (t), the inference's end (t + 1: nothing measured yet, so what follows planning is
    taken to cost what inference did, 1 s), the plan pass's start (t + 2), then one before each
    block after the first. The deadline is t + 10 * 0.9 - 1 - 0 = t + 8: blocks at t + 3 ...
    t + 6 go in after the first one, all five blocks (20 agents) plan. With 4 s left (and what
    the first tick measured) only the first block plans, the other 16 agents are put off and go
    first on the next tick."""
    clock = _Clock()
    group, obs, env = _paced_group(clock)
    group.pace(10.0, None)
    group.step(obs)
    stats = group.planning_stats()
    assert stats["planned"] == 20
    assert stats["deferred"] == 0
    assert stats["deadline_ms"] == pytest.approx(1000 * (10 * (1 - TICK_MARGIN) - 1))
    assert stats["ticks_cut"] == 0
    # The last tick's plan pass began at t + 2 and ended at t + 7 (a read before each of the
    # last four blocks): 1 s a block; its step ended 1 s after planning (one more read), and
    # the daemon says the tick went on 0.5 s after the step returned: 1.5 s after planning.
    group.pace(4.0, 0.5)
    assert group.planning_stats()["after_planning_ms"] == 1500.0
    assert group.planning_stats()["block_ms"] == 1000.0
    previous = group.plans.deferred.copy()
    group.step(env.step(group.action))
    stats = group.planning_stats()
    # 4 * 0.9 - 1.5 - 1.0 = 1.1 s: the first block only (t + 3 is past t + 1.1)
    assert stats["deadline_ms"] == pytest.approx(1000 * (4 * (1 - TICK_MARGIN) - 2.5))
    assert stats["planned"] == 4
    assert stats["deferred"] == 16
    assert stats["ticks_cut"] == 1
    for _ in range(4):  # everyone must plan every tick: those put off go first
        previous = group.plans.deferred.copy()
        group.pace(4.0, 0.5)
        group.step(env.step(group.action))
        planned = group.plans.plan_age == 0
        assert planned.sum() == 4
        assert planned[previous].all() or not (planned & ~previous).any()
    assert group.planning_stats()["passed_over"] == 0


def test_the_deadline_is_a_function_of_the_times_given() -> None:
    """Two groups on two clocks that read the same: the same deadlines, plans and actions."""
    runs = []
    for _ in range(2):
        clock = _Clock()
        group, obs, env = _paced_group(clock)
        seen = []
        for t in range(6):
            group.pace(4.0 + t, 0.25 * t if t else None)
            obs = env.step(group.step(obs).copy())
            stats = group.planning_stats()
            seen.append((stats["deadline_ms"], stats["planned"], group.action.copy()))
        runs.append(seen)
    for (d1, p1, a1), (d2, p2, a2) in zip(*runs, strict=True):
        assert (d1, p1) == (d2, p2)
        np.testing.assert_array_equal(a1, a2)


def test_unpaced_a_fit_tick_group_plans_everyone() -> None:
    """Outside the daemon no one says when the tick ends: fit_tick bounds nothing (and reads
    no clock), a deadline_ms is what it was."""
    clock = _Clock()
    group, obs, _env = _paced_group(clock)
    group.step(obs)
    assert group.planning_stats()["planned"] == 20
    assert group.planning_stats()["deadline_ms"] is None
    assert clock.reads == 0
