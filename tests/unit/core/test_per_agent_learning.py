"""Per-agent counts in an agent group: every agent learns and infers with its
own tables exactly as one float64 reference agent (pymdp 0.0.7.1's maths) would; the counts are
reserved in the memory budget and refused in one line when they do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import per_agent
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.reference_learning import LearningReferenceAgent
from edge_agent.core import native_pass, per_agent_learning
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget, MiB
from edge_agent.core.per_agent_learning import AgentTables
from edge_agent.errors import BudgetError, InputError
from edge_agent.sim.registry import builtin_model
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model

N = 5
TRIAL = 3
TOL = {"rtol": 0.0, "atol": 1e-10}


def counts() -> dict[str, dict[int, np.ndarray]]:
    model = tmaze_reversal_model()
    return {
        "A": {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
        "B": {0: model.B[0] * 5.0 + 0.5 * (model.B[0] > 0)},
        "D": {1: np.array([1.0, 1.0])},
    }


def spec(**settings: float) -> LearningSpec:
    c = counts()
    return LearningSpec(pA=c["A"], pB=c["B"], pD=c["D"],
                        settings=LearningSettings(scope="per_agent", **settings))


def test_each_agent_learns_as_its_own_reference_agent() -> None:
    """N agents whose trials start at different ticks (so some learn B or D while others do
    not), each with its own outcomes: posteriors, policy posteriors, actions and counts equal
    N reference agents' at every tick."""
    model = tmaze_reversal_model()
    rates = {"lr_pA": 0.7, "lr_pB": 0.4, "lr_pD": 0.9, "forgetting": 0.1}
    group = AifAgentGroup(model, N, learning=spec(**rates), precision="float64")
    assert group.learning.scope.name == "per_agent"
    c = counts()
    refs = [
        LearningReferenceAgent(model, pA=c["A"], pB=c["B"], pD=c["D"], lr_pA=0.7, lr_pB=0.4,
                               lr_pD=0.9, forgetting=0.1)
        for _ in range(N)
    ]
    rng = np.random.default_rng(7)
    ties = 0
    for t in range(14):
        ending = np.array([t > 0 and (t + n) % TRIAL == 0 for n in range(N)])
        if ending.any():
            group.end_trial(ending)
            for n in np.flatnonzero(ending):
                refs[n].update_D(refs[n].qs)
                refs[n].reset()
        obs = np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1)
        actions = group.step(obs)
        for n, ref in enumerate(refs):
            qs_prev = [q.copy() for q in ref.qs]
            ref.infer_states(obs[n])
            ref.update_A(obs[n])
            if ref.action is not None:
                ref.update_B(qs_prev)
            ref.infer_policies()
            ref_action = ref.sample_action()
            for f in range(model.num_factors):
                np.testing.assert_allclose(group.qs[f][n], ref.qs[f], **TOL)
            assert ref.q_pi is not None
            np.testing.assert_allclose(group.q_pi[n], ref.q_pi, **TOL)
            # An action agrees when it is optimal under the reference's marginals (the arms
            # of the maze tie; rounding breaks a tie either way); the reference then takes it.
            for f, marginal in enumerate(ref.action_marginals()):
                assert marginal[actions[n, f]] >= marginal.max() - 1e-9, (t, n, f, marginal)
            ties += int(not np.array_equal(actions[n], ref_action))
            ref.action = actions[n].copy()
    learner = group.learning.learner
    assert learner.pA is not None
    assert learner.pB is not None
    assert learner.pD is not None
    for n, ref in enumerate(refs):
        np.testing.assert_allclose(learner.pA.counts[0][n], ref.pA[1], **TOL)
        np.testing.assert_allclose(learner.pB.counts[0][n], ref.pB[0], **TOL)
        np.testing.assert_allclose(learner.pD.counts[0][n], ref.pD[1], **TOL)
    assert ties < N * 14 // 4  # a few ties broken the other way, not a different behaviour
    # The agents saw different outcomes: their counts differ.
    assert not np.allclose(learner.pA.counts[0][0], learner.pA.counts[0][1])


def test_per_agent_counts_are_reserved_and_refused_in_one_line() -> None:
    model = tmaze_reversal_model()
    budget = MemoryBudget(64 * MiB, profile_name="test")
    group = AifAgentGroup(model, 100, learning=spec(), precision="float64",
                                  budget=budget, name="maze")
    owners = budget.by_owner()
    learner = group.learning.learner
    # N copies of each learned table's counts, besides one prior, mask and experience each.
    per_table = sum(c.prior[0].nbytes for c in learner.counts)
    assert learner.nbytes >= 100 * per_table
    assert owners["maze:learning"] == learner.nbytes
    # The agents' reservation holds each agent's learned tables too.
    assert group.per_agent_nbytes() >= per_table
    assert owners["maze"] == group.bytes_for(100, 0)
    needed = budget.used
    small = MemoryBudget(needed - 1, profile_name="test")
    with pytest.raises(BudgetError, match=r"maze2:learning") as err:
        AifAgentGroup(model, 100, learning=spec(), precision="float64", budget=small,
                              name="maze2")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int8"}, r"precision is not available"),
        ({"precision": "float64", "history_capacity": 4}, r"history_capacity is not available"),
    ],
)
def test_what_per_agent_groups_do_not_do_is_refused_in_one_line(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        AifAgentGroup(tmaze_reversal_model(), 3, learning=spec(), **kwargs)  # type: ignore[arg-type]


def test_the_scope_picks_the_tables() -> None:
    model = tmaze_reversal_model()
    shared = LearningSpec(pA=counts()["A"])
    assert AifAgentGroup(model, 3, learning=shared).learning.scope.name == "shared"
    group = AifAgentGroup(model, 3, learning=spec(), precision="float64")
    assert group.learning.scope.name == "per_agent"
    with pytest.raises(InputError, match=r"keeps its size"):
        group.resize(4)


def test_a_snapshot_restores_every_agents_counts_and_tables() -> None:
    """state_dict / load_state_dict (what the daemon's snapshots will carry): a fresh group
    restored from it acts as the original on the next tick."""
    model = tmaze_reversal_model()
    group = AifAgentGroup(model, N, learning=spec(lr_pA=0.8), precision="float64")
    rng = np.random.default_rng(3)
    for _ in range(6):
        group.step(np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1))
    restored = AifAgentGroup(model, N, learning=spec(lr_pA=0.8), precision="float64")
    restored.load_state_dict(group.state_dict())
    assert restored.learning.learner.pA is not None
    assert group.learning.learner.pA is not None
    np.testing.assert_array_equal(restored.learning.learner.pA.counts[0],
                                  group.learning.learner.pA.counts[0])
    obs = np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1)
    np.testing.assert_array_equal(restored.step(obs), group.step(obs))
    np.testing.assert_allclose(restored.q_pi, group.q_pi, rtol=0, atol=1e-12)


def test_transitions_kept_on_their_support_learn_as_reference_agents() -> None:
    """A 4 x 4 grid whose prior counts also allow staying put (two targets per column: the
    learned moves change): each agent's transitions, kept on their support and refreshed only
    where its counts moved, give the posteriors, policy posteriors and counts of its own
    reference agent (pymdp 0.0.7.1's maths) at every tick, with forgetting, and equal the
    normalised counts."""
    model = builtin_model("grid", height=4, width=4)
    B = model.B[0]
    prior = B * 3.0 + 0.5 * (B > 0) + 0.25 * np.eye(16)[:, :, None]
    n = 4
    group = AifAgentGroup(
        model, n, precision="float64",
        learning=LearningSpec(pB={0: prior}, settings=LearningSettings(
            scope="per_agent", lr_pB=0.6, forgetting=0.05)))
    scope = group.learning.scope
    assert isinstance(scope, AgentTables)
    assert 0 in scope.transitions  # kept on its support, not in full
    refs = [LearningReferenceAgent(model, pB={0: prior}, lr_pB=0.6, forgetting=0.05)
            for _ in range(n)]
    rng = np.random.default_rng(4)
    for t in range(8):
        obs = rng.integers(0, 16, size=(n, 1))
        actions = group.step(obs)
        for i, ref in enumerate(refs):
            qs_prev = [q.copy() for q in ref.qs]
            ref.infer_states(obs[i])
            if ref.action is not None:
                ref.update_B(qs_prev)
            ref.infer_policies()
            ref.sample_action()
            np.testing.assert_allclose(group.qs[0][i], ref.qs[0], **TOL)
            assert ref.q_pi is not None
            np.testing.assert_allclose(group.q_pi[i], ref.q_pi, **TOL)
            marginal = ref.action_marginals()[0]
            assert marginal[actions[i, 0]] >= marginal.max() - 1e-9, (t, i, marginal)
            ref.action = actions[i].copy()
    pB = group.learning.learner.pB
    assert pB is not None
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(pB.counts[0][i], ref.pB[0], **TOL)
    np.testing.assert_allclose(scope.transition_table(0), pB.normalised(0), rtol=1e-15, atol=0)
    assert not np.allclose(pB.normalised(0)[0], B)  # the moves were learned


def test_learned_likelihoods_plan_a_chunk_of_agents_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The joint-outcome tables of a learned A are made each tick, a chunk of agents at a
    time, and kept by no agent: chunks of 2 agents plan as one chunk of all; an agent's bytes
    hold its own tables, not the outcome tables."""
    model = tmaze_reversal_model()
    groups = [AifAgentGroup(model, N, learning=spec(), precision="float64") for _ in range(2)]
    rng = np.random.default_rng(12)
    for t in range(5):
        obs = np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1)
        monkeypatch.setattr(per_agent_learning, "OUTCOME_CHUNK", 1 << 16)
        whole = groups[0].step(obs)
        monkeypatch.setattr(per_agent_learning, "OUTCOME_CHUNK", 2 * 4 * 22)
        chunked = groups[1].step(obs)
        np.testing.assert_array_equal(chunked, whole)
        np.testing.assert_allclose(groups[1].q_pi, groups[0].q_pi, rtol=0, atol=1e-13, err_msg=t)
    scope = groups[0].learning.scope
    assert isinstance(scope, AgentTables)
    assert not scope.transitions  # the maze's moves: too few states to keep B on its support
    learner = groups[0].learning.learner
    # Each agent's own A (on its prior's support), B and D (float64), no 12 x 8 outcome table.
    assert scope.bytes_per_agent(learner) == sum(
        (int((p > 0).sum()) if c.kind == "A" else p.size) * 8
        for c in learner.counts for p in c.prior)


def test_a_snapshot_restores_transitions_kept_on_their_support() -> None:
    """A 4 x 4 grid learning pB per agent (kept on its support): a fresh group restored from
    the state dict has the same tables in full and acts as the original on the next tick."""
    model = builtin_model("grid", height=4, width=4)
    prior = model.B[0] * 3.0 + 0.5 * (model.B[0] > 0) + 0.25 * np.eye(16)[:, :, None]

    def grid_group() -> AifAgentGroup:
        return AifAgentGroup(model, 3, precision="float64", learning=LearningSpec(
            pB={0: prior}, settings=LearningSettings(scope="per_agent")))

    group = grid_group()
    rng = np.random.default_rng(8)
    for _ in range(6):
        group.step(rng.integers(0, 16, size=(3, 1)))
    restored = grid_group()
    restored.load_state_dict(group.state_dict())
    mine, theirs = restored.learning.scope, group.learning.scope
    assert isinstance(mine, AgentTables)
    assert isinstance(theirs, AgentTables)
    np.testing.assert_array_equal(mine.transition_table(0), theirs.transition_table(0))
    obs = rng.integers(0, 16, size=(3, 1))
    np.testing.assert_array_equal(restored.step(obs), group.step(obs))
    np.testing.assert_allclose(restored.q_pi, group.q_pi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scope", ["per_agent", "shared"])
def test_a_likelihood_learner_keeps_no_previous_tick(scope: str) -> None:
    """Only ``pB`` learns from the previous tick's posteriors, action and flag: a group that
    learns ``pA`` alone allocates, reserves and saves none of them (a group that learns ``pB``
    too: each agent's ``sum(S_f)`` posteriors, ``F`` actions and a flag, allocated), and an older
    snapshot that has them still loads, to the same counts and the same next tick."""
    model = tmaze_reversal_model()
    only_a = LearningSpec(pA=counts()["A"], settings=LearningSettings(scope=scope))
    with_b = LearningSpec(pA=counts()["A"], pB=counts()["B"],
                          settings=LearningSettings(scope=scope))
    group = AifAgentGroup(model, N, learning=only_a, precision="float64")
    learns_b = AifAgentGroup(model, N, learning=with_b, precision="float64")
    previous = sum(model.num_states) * 8 + model.num_factors * 8 + 1
    assert group.learning.allocated_nbytes == 0
    assert learns_b.learning.allocated_nbytes == N * previous
    # pA alone: the scope's bytes and the update's scratch (no previous tick); with pB, the
    # previous tick and pB's own besides
    learner = group.learning.learner
    if scope == "per_agent":  # a shared group's also holds its kept ticks
        assert group.learning.bytes_per_agent(N) == (
            learner.scratch_bytes_per_agent(8) + group.learning.scope.bytes_per_agent(learner)
        )
    assert group.learning.bytes_per_agent(N) + previous <= learns_b.learning.bytes_per_agent(N)
    rng = np.random.default_rng(5)

    def obs() -> np.ndarray:
        return np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1)

    for _ in range(4):
        group.step(obs())
    state = group.state_dict()
    assert not [k for k in state if k.startswith("learn.qs_prev")]
    # a snapshot from before (the previous posteriors saved whole, all zeros or not) loads
    older = dict(state)
    for f, s in enumerate(model.num_states):
        older[f"learn.qs_prev{f}"] = rng.random((N, s))
    o = obs()
    stepped = []
    for saved in (state, older):
        fresh = AifAgentGroup(model, N, learning=only_a, precision="float64")
        fresh.load_state_dict(saved)
        assert fresh.learning.allocated_nbytes == 0
        pA, pA_fresh = group.learning.learner.pA, fresh.learning.learner.pA
        assert pA is not None
        assert pA_fresh is not None
        np.testing.assert_array_equal(pA_fresh.counts[0], pA.counts[0])
        stepped.append((fresh.step(o), fresh.q_pi.copy()))
    np.testing.assert_array_equal(stepped[0][0], stepped[1][0])
    np.testing.assert_array_equal(stepped[0][1], stepped[1][1])


def test_a_resized_likelihood_learner_still_keeps_no_previous_tick() -> None:
    """Resize (a shared ``pA`` group) allocates the previous tick for no agent either, and the
    group's memory follows its parts."""
    model = tmaze_reversal_model()
    group = AifAgentGroup(model, 3, learning=LearningSpec(pA=counts()["A"]),
                          precision="float64")
    group.step(np.zeros((3, model.num_modalities), dtype=np.int64))
    group.resize(7)
    assert group.learning.allocated_nbytes == 0
    group.step(np.zeros((7, model.num_modalities), dtype=np.int64))
    assert group.learning.allocated_nbytes == 0


def test_each_agents_likelihood_is_kept_on_its_priors_support() -> None:
    """A learned ``A`` each agent keeps on its prior's support (the T-maze's ``A[1]``: 12 of
    24 cells): 8 bytes a cell there, reserved so; whole, it is the dense table the counts give
    (0 off the support), on the compiled pass and on numpy's; kept whole where the support is
    all of it."""
    model = tmaze_reversal_model()
    prior = counts()["A"][1]
    K = int((prior > 0).sum())
    assert prior.size > K
    only_a = LearningSpec(pA={1: prior}, settings=LearningSettings(scope="per_agent"))
    numpy_path = LearningSpec(pA={1: prior}, refresh_every=2,
                              settings=LearningSettings(scope="per_agent"))
    rng = np.random.default_rng(9)
    steps = [np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1) for _ in range(7)]
    for spec_, stepping in ((only_a, "native"), (numpy_path, "numpy")):
        group = AifAgentGroup(model, N, learning=spec_, precision="float64")
        scope = group.learning.scope
        assert isinstance(scope, AgentTables)
        assert scope.stepping_name.startswith(stepping)
        kept = scope.tables["A"][1]
        assert isinstance(kept, per_agent.OnSupport)
        assert kept.values.shape == (N, K)
        assert scope.bytes_per_agent(group.learning.learner) == K * 8
        for obs in steps:
            group.step(obs)
        pA = group.learning.learner.pA
        assert pA is not None
        whole = scope.likelihood(np.arange(N))[1]
        c = pA.counts[0].reshape(N, prior.shape[0], -1)
        if stepping == "numpy":  # refreshed every 2nd tick: bring the tables to the counts
            group.learning.refresh()
            whole = scope.likelihood(np.arange(N))[1]
        np.testing.assert_allclose(whole, c / c.sum(axis=1, keepdims=True), rtol=1e-15, atol=0)
        assert not whole[:, ~(prior > 0).reshape(prior.shape[0], -1)].any()
    # kept whole: the support all of it (nothing to gain)
    spec_ = LearningSpec(pA={1: prior + 1.0}, settings=LearningSettings(scope="per_agent"))
    group = AifAgentGroup(model, N, learning=spec_, precision="float64")
    scope = group.learning.scope
    assert isinstance(scope, AgentTables)
    assert isinstance(scope.tables["A"][1], np.ndarray)
    assert scope.bytes_per_agent(group.learning.learner) == prior.size * 8


def test_tables_kept_on_their_support_step_as_numpy_s_frozen_and_learning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled pass reads and writes each agent's ``A`` on its prior's support (its
    likelihood's rows, the planning tables, while frozen the tables as they are) as the numpy
    stages do: the same posteriors and policy posteriors up to rounding, learning and
    frozen."""
    model = tmaze_reversal_model()
    spec_ = LearningSpec(pA={1: counts()["A"][1]}, settings=LearningSettings(scope="per_agent"))
    compiled = AifAgentGroup(model, N, learning=spec_, precision="float64")
    monkeypatch.setenv(native_pass.NATIVE_ENV, "0")
    twin = AifAgentGroup(model, N, learning=spec_, precision="float64")
    assert compiled.learning.scope.stepping_name == "native"
    assert twin.learning.scope.stepping_name.startswith("numpy")
    rng = np.random.default_rng(21)
    for t in range(12):
        if t == 6:
            compiled.learning.freeze()
            twin.learning.freeze()
        obs = np.stack([rng.integers(0, o, N) for o in model.num_obs], axis=1)
        compiled.step(obs)
        twin.step(obs)
        for mine, theirs in zip((*compiled.qs, compiled.q_pi), (*twin.qs, twin.q_pi),
                                strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10, err_msg=str(t))
        compiled.set_action(twin.action)  # a tie may be broken either way: go on together
