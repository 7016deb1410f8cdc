"""Learning groups: one float64 agent of the batched group learns as pymdp 0.0.7.1's learning
agent; in int8 the refresh encodes only the columns touched since the last one, and gives exactly
the codes a full encoding of the learned tables gives; counts stored in float32 stay within the
stated bound of float64 counts (issue 32)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.learning import Learner, LearningSettings, LearningSpec
from edge_agent.aif.learning_counts import counts_storage_bound
from edge_agent.aif.quant import LogU8, SparseColumns, encode_transition, quantize_model
from edge_agent.core.budget import MemoryBudget, MiB
from edge_agent.core.learning import LearningAgentGroup
from edge_agent.errors import BudgetError
from edge_agent.sim.grid_slippery import SlipperyGridEnv
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model
from tests.support.pymdp_learning_golden import (
    BELIEF_TOL,
    COUNTS_TOL,
    SCENARIOS,
    golden,
    indexed,
    reference_for,
)


def same_codes(mine: LogU8 | SparseColumns, full: LogU8 | SparseColumns) -> None:
    assert type(mine) is type(full)
    if isinstance(mine, SparseColumns):
        assert isinstance(full, SparseColumns)
        np.testing.assert_array_equal(mine.index, full.index)
        assert (mine.values is None) == (full.values is None)
        if mine.values is None or full.values is None:
            return
        mine, full = mine.values, full.values
    assert isinstance(full, LogU8)
    np.testing.assert_array_equal(mine.codes, full.codes)
    np.testing.assert_array_equal(mine.top, full.top)
    np.testing.assert_array_equal(mine.step, full.step)


def test_incremental_refresh_of_b_equals_a_full_encoding() -> None:
    """grid-slippery, pB learned (a sparse B with two targets per column once a stay is
    possible): each refresh encodes the columns the agents' moves touched, and the group's
    codes equal encode_transition of the learned B after every refresh."""
    n = 40
    env = SlipperyGridEnv(n, seed=4)
    model = env.model
    pB = model.B[0] * 10.0 + 0.5 * np.eye(100)[:, :, None]
    spec = LearningSpec(pB={0: pB}, settings=LearningSettings(lr_pB=0.05, forgetting=0.01),
                        refresh_every=5)
    group = LearningAgentGroup(model, n, learning=spec, precision="int8")
    given = group.quantized
    assert given is not None
    original_codes = given.B[0].index.copy()  # type: ignore[union-attr]
    obs = env.reset()
    per_refresh = []
    for _ in range(60):
        if env.episode_start.any():
            group.reset(env.episode_start)
        before = group.columns_encoded
        obs = env.step(group.step(obs))
        if group.columns_encoded != before:
            per_refresh.append(group.columns_encoded - before)
            assert group.quantized is not None
            same_codes(group.quantized.B[0], encode_transition(group.model.B[0]))
    assert group.refreshes == 12
    assert per_refresh[0] == 100 * 5  # the first refresh encodes the whole table
    # Then only what was touched: fewer columns than the table has, but some.
    assert all(0 < k < 500 for k in per_refresh[1:]), per_refresh
    # The model the group was given is not changed under other groups' feet.
    np.testing.assert_array_equal(given.B[0].index, original_codes)  # type: ignore[union-attr]


def test_incremental_refresh_of_a_with_forgetting_equals_a_full_encoding() -> None:
    """Forgetting moves every column that differs from its prior, touched this tick or not:
    those columns are encoded again too."""
    model = tmaze_reversal_model()
    pA1 = model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)
    pD1 = np.array([1.0, 1.0])
    spec = LearningSpec(pA={1: pA1}, pD={1: pD1},
                        settings=LearningSettings(lr_pA=0.3, forgetting=0.1), refresh_every=4)
    group = LearningAgentGroup(model, 30, learning=spec, precision="int8")
    env = ReversalTMazeEnv(30, seed=5, reverse_every=3)
    obs = env.reset()
    for tick in range(40):
        if tick and env.episode_start.any():
            group.end_trial(env.episode_start)
        obs = env.step(group.step(obs))
    assert group.refreshes > 10
    assert group.quantized is not None
    full = quantize_model(group.model)
    same_codes(group.quantized.A[1], full.A[1])
    same_codes(group.quantized.D[1], full.D[1])
    # After a snapshot is restored every column is encoded again (the counts may be anything).
    other = LearningAgentGroup(model, 30, learning=spec, precision="int8")
    other.load_state_dict(group.state_dict())
    assert other.quantized is not None
    same_codes(other.quantized.A[1], quantize_model(other.model).A[1])


@pytest.mark.parametrize("forgetting", [0.0, 0.05])
def test_float32_counts_stay_within_the_stated_bound(forgetting: float) -> None:
    """The same 3,000 updates on float32 and float64 counts (A of the reversal T-maze, shared,
    200 agents a tick): the difference is within counts_storage_bound and not zero."""
    model = tmaze_reversal_model()
    pA = {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)}
    pB = {0: model.B[0] * 5.0 + 0.1}
    learners = {
        dtype: Learner(model.A, model.B, model.D, pA=pA, pB=pB, n_agents=200,
                       settings=LearningSettings(lr_pA=0.7, lr_pB=0.3, forgetting=forgetting,
                                                 counts_dtype=dtype))
        for dtype in ("float32", "float64")
    }
    rng = np.random.default_rng(0)
    updates = 3000
    for _ in range(updates):
        qs = [rng.dirichlet(np.ones(s), size=200) for s in model.num_states]
        qs_prev = [rng.dirichlet(np.ones(s), size=200) for s in model.num_states]
        obs = np.stack([rng.integers(0, o, 200) for o in model.num_obs], axis=1)
        actions = np.stack([rng.integers(0, u, 200) for u in model.num_controls], axis=1)
        for learner in learners.values():
            learner.learn_A(obs, qs)
            learner.learn_B(qs, qs_prev, actions)
    for kind in ("pA", "pB"):
        c32 = getattr(learners["float32"], kind).counts[0]
        c64 = getattr(learners["float64"], kind).counts[0]
        assert c32.dtype == np.float32
        assert c64.dtype == np.float64
        error = np.abs(c32.astype(np.float64) - c64).max()
        bound = counts_storage_bound(updates, float(c64.max()))
        assert 0 < error <= bound, (kind, error, bound)
    # float32 counts take half the bytes.
    assert learners["float32"].nbytes < 0.6 * learners["float64"].nbytes


def test_the_budget_counts_the_counts_and_the_learned_codes() -> None:
    """An int8 learning group reserves its counts and its own copy of the learned tables' codes
    (a refresh writes there); a budget that cannot hold them refuses the group in one line."""
    env = SlipperyGridEnv(10, seed=1)
    model = env.model
    pB = model.B[0] * 10.0 + 0.5 * np.eye(100)[:, :, None]
    spec = LearningSpec(pB={0: pB}, refresh_every=2)
    budget = MemoryBudget(64 * MiB, profile_name="test")
    group = LearningAgentGroup(model, 10, learning=spec, precision="int8", budget=budget,
                               name="grid")
    assert group.quantized is not None
    given = group.quantized.B[0].nbytes
    # From its first refresh B has the counts' support: two targets per column, with weights.
    codes = encode_transition(pB / pB.sum(axis=0)).nbytes
    assert codes > given
    assert group.learning_nbytes == group.learner.nbytes + group.learner.gain_nbytes + codes
    assert budget.by_owner()["grid:learning"] == group.learning_nbytes
    needed = budget.used
    obs = env.reset()
    for _ in range(4):
        obs = env.step(group.step(obs))
    assert group.refreshes == 2
    assert group.quantized.B[0].nbytes == codes  # the copy it writes is the size reserved
    # One byte short of what the first group needed when it was made: the learning
    # reservation, the last one, is what is refused.
    small = MemoryBudget(needed - 1, profile_name="test")
    with pytest.raises(BudgetError, match=r"grid2:learning.*learn fewer tables"):
        LearningAgentGroup(model, 10, learning=spec, precision="int8", budget=small,
                           name="grid2")


def test_incremental_refresh_of_a_dense_b_equals_a_full_encoding() -> None:
    """The reversal T-maze's location B learned from counts with every entry > 0: B is stored
    dense (LogU8), and its touched columns are encoded like any table's."""
    model = tmaze_reversal_model()
    pB0 = model.B[0] * 5.0 + 0.1
    spec = LearningSpec(pB={0: pB0}, settings=LearningSettings(lr_pB=0.5, forgetting=0.05),
                        refresh_every=2)
    group = LearningAgentGroup(model, 25, learning=spec, precision="int8")
    env = ReversalTMazeEnv(25, seed=2, reverse_every=2)
    obs = env.reset()
    refreshes = 0
    for tick in range(30):
        if tick and env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
        if group.refreshes != refreshes:
            refreshes = group.refreshes
            assert group.quantized is not None
            assert isinstance(group.quantized.B[0], LogU8)
            same_codes(group.quantized.B[0], encode_transition(group.model.B[0]))
    assert refreshes == 15


# -- one agent of the group against pymdp ----------------------------------------------------------
def spec_for(name: str, **overrides: object) -> LearningSpec:
    g = golden()
    settings = LearningSettings(
        lr_pA=float(g[f"{name}/lr_pA"]), lr_pB=float(g[f"{name}/lr_pB"]),
        lr_pD=float(g[f"{name}/lr_pD"]),
    )
    kwargs: dict[str, object] = {
        "pA": indexed(name, "pA"), "pB": indexed(name, "pB"), "pD": indexed(name, "pD"),
        "settings": settings, **overrides,
    }
    return LearningSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SCENARIOS)
def test_learning_group_float64_learns_as_pymdp(name: str) -> None:
    """One agent of the batched group, refreshed every tick, is pymdp's learning agent (with
    the parameter information gain in ``learn_novelty``)."""
    g = golden()
    ref = reference_for(name)
    spec = spec_for(name, param_info_gain=bool(g[f"{name}/use_param_info_gain"]))
    group = LearningAgentGroup(ref.model, 1, learning=spec, precision="float64")
    obs, starts = g[f"{name}/obs"], g[f"{name}/trial_start"]
    onehots = list(group.cm.tree.first_action_onehot)
    for t in range(obs.shape[0]):
        if starts[t] and t > 0:
            group.end_trial()
        group.step(obs[t][None])
        for f, qs in indexed(name, "qs").items():
            np.testing.assert_allclose(group.qs[f][0], qs[t], **BELIEF_TOL, err_msg=f"qs{f} t={t}")
        np.testing.assert_allclose(group.q_pi[0], g[f"{name}/q_pi"][t], **BELIEF_TOL)
        assert agreement.actions_agree(group.q_pi, onehots, g[f"{name}/action"][t][None]).all()
    group.end_trial()
    for key, counts in (("pA", group.learner.pA), ("pB", group.learner.pB),
                        ("pD", group.learner.pD)):
        final = indexed(name, f"final_{key}")
        assert counts is not None
        for slot, index in enumerate(counts.tables):
            np.testing.assert_allclose(counts.counts[slot], final[index], **COUNTS_TOL)
