"""Learning groups: one float64 agent of the batched group learns as pymdp 0.0.7.1's learning
agent; in int8 the refresh encodes only the columns touched since the last one, and gives exactly
the codes a full encoding of the learned tables gives; counts stored in float32 stay within the
stated bound of float64 counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.learning import Learner, LearningSettings, LearningSpec
from edge_agent.aif.learning_counts import DirichletCounts, counts_storage_bound
from edge_agent.aif.quant import LogU8, SparseColumns, encode_transition, quantize_model
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget, MiB
from edge_agent.core.native_pass import NATIVE_ENV
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
    group = AifAgentGroup(model, n, learning=spec, precision="int8")
    given = group.quantized
    assert given is not None
    original_codes = given.B[0].index.copy()  # type: ignore[union-attr]
    obs = env.reset()
    per_refresh = []
    for _ in range(60):
        if env.episode_start.any():
            group.reset(env.episode_start)
        before = group.learning.columns_encoded
        obs = env.step(group.step(obs))
        if group.learning.columns_encoded != before:
            per_refresh.append(group.learning.columns_encoded - before)
            assert group.quantized is not None
            same_codes(group.quantized.B[0], encode_transition(group.learning.model.B[0]))
    assert group.learning.refreshes == 12
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
    group = AifAgentGroup(model, 30, learning=spec, precision="int8")
    env = ReversalTMazeEnv(30, seed=5, reverse_every=3)
    obs = env.reset()
    for tick in range(40):
        if tick and env.episode_start.any():
            group.end_trial(env.episode_start)
        obs = env.step(group.step(obs))
    assert group.learning.refreshes > 10
    assert group.quantized is not None
    full = quantize_model(group.learning.model)
    same_codes(group.quantized.A[1], full.A[1])
    same_codes(group.quantized.D[1], full.D[1])
    # After a snapshot is restored every column is encoded again (the counts may be anything).
    other = AifAgentGroup(model, 30, learning=spec, precision="int8")
    other.load_state_dict(group.state_dict())
    assert other.quantized is not None
    same_codes(other.quantized.A[1], quantize_model(other.learning.model).A[1])


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
    group = AifAgentGroup(model, 10, learning=spec, precision="int8", budget=budget,
                               name="grid")
    assert group.quantized is not None
    given = group.quantized.B[0].nbytes
    # From its first refresh B has the counts' support: two targets per column, with weights.
    codes = encode_transition(pB / pB.sum(axis=0)).nbytes
    assert codes > given
    learner = group.learning.learner
    assert group.learning.nbytes == learner.nbytes + learner.gain_nbytes + codes
    assert budget.by_owner()["grid:learning"] == group.learning.nbytes
    needed = budget.used
    obs = env.reset()
    for _ in range(4):
        obs = env.step(group.step(obs))
    assert group.learning.refreshes == 2
    assert group.quantized.B[0].nbytes == codes  # the copy it writes is the size reserved
    # One byte short of what the first group needed when it was made: the learning
    # reservation, the last one, is what is refused.
    small = MemoryBudget(needed - 1, profile_name="test")
    with pytest.raises(BudgetError, match=r"grid2:learning.*learn fewer tables"):
        AifAgentGroup(model, 10, learning=spec, precision="int8", budget=small,
                           name="grid2")


def test_incremental_refresh_of_a_dense_b_equals_a_full_encoding() -> None:
    """The reversal T-maze's location B learned from counts with every entry > 0: B is stored
    dense (LogU8), and its touched columns are encoded like any table's."""
    model = tmaze_reversal_model()
    pB0 = model.B[0] * 5.0 + 0.1
    spec = LearningSpec(pB={0: pB0}, settings=LearningSettings(lr_pB=0.5, forgetting=0.05),
                        refresh_every=2)
    group = AifAgentGroup(model, 25, learning=spec, precision="int8")
    env = ReversalTMazeEnv(25, seed=2, reverse_every=2)
    obs = env.reset()
    refreshes = 0
    for tick in range(30):
        if tick and env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
        if group.learning.refreshes != refreshes:
            refreshes = group.learning.refreshes
            assert group.quantized is not None
            assert isinstance(group.quantized.B[0], LogU8)
            same_codes(group.quantized.B[0], encode_transition(group.learning.model.B[0]))
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
    group = AifAgentGroup(ref.model, 1, learning=spec, precision="float64")
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
    for key, counts in (("pA", group.learning.learner.pA), ("pB", group.learning.learner.pB),
                        ("pD", group.learning.learner.pD)):
        final = indexed(name, f"final_{key}")
        assert counts is not None
        for slot, index in enumerate(counts.tables):
            np.testing.assert_allclose(counts.counts[slot], final[index], **COUNTS_TOL)


def _weak_counts(table: np.ndarray) -> np.ndarray:
    return table * 2.0 + 0.5 * (table > 0)


@pytest.mark.parametrize(
    ("world", "n", "tables"),
    [("grid10", 1, "AB"), ("grid10", 20, "AB"), ("tmaze", 3, "A"), ("tmaze", 1, "A")],
)
@pytest.mark.parametrize("precision", ["int8", "float64"])
def test_a_small_group_that_keeps_its_ticks_learns_what_it_would_learn_every_tick(
    world: str, n: int, tables: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group small enough to keep its ticks (refresh every 30: 1, 3 or 20 agents keep 30, 30
    and 10 ticks) learns from them at the refresh, when they fill its rows, or when the counts
    are read: its counts, their versions, touched columns and experience equal those of the
    same group learning every tick (up to rounding: the same increments summed in another order),
    and so do its tables and, tick after tick, its policy posteriors and actions."""
    import edge_agent.core.learning as core_learning
    from edge_agent.sim.registry import builtin_model, make_env

    model = builtin_model(world)
    modality = 0 if world == "grid10" else 1
    spec = LearningSpec(
        pA={modality: _weak_counts(model.A[modality])},
        pB={0: _weak_counts(model.B[0])} if "B" in tables else {},
        refresh_every=30,
        settings=LearningSettings(lr_pA=0.5, lr_pB=0.5),
    )
    kept = AifAgentGroup(model, n, learning=spec, precision=precision)
    assert kept.nbytes > AifAgentGroup(model, n, learning=dataclasses.replace(
        spec, refresh_every=1), precision=precision).nbytes  # it holds rows for them
    monkeypatch.setattr(core_learning, "experience_ticks", lambda *a, **k: 1)
    every = AifAgentGroup(model, n, learning=spec, precision=precision)
    env = make_env(world, n, seed=3)
    obs = env.reset()
    onehots = list(kept.cm.tree.first_action_onehot)
    ticks = 0
    while ticks < 75:
        if ticks == 40:  # a read between two updates learns from the ticks kept so far
            assert kept.learning.learner.pA is not None
            assert every.learning.learner.pA is not None
            assert kept.learning.learner.pA.version == every.learning.learner.pA.version == 40
        actions = kept.step(obs)
        every.step(obs)
        ticks += 1
        np.testing.assert_allclose(kept.q_pi, every.q_pi, rtol=1e-5, atol=1e-6,
                                   err_msg=f"tick {ticks}")
        assert agreement.actions_agree(every.q_pi, onehots, actions).all()
        if not np.array_equal(actions, every.action):
            # A tie broken the other way (equally good): from here on the two learn ``B``
            # from different transitions. Compare what both learned so far.
            break
        obs = env.step(actions)
    assert ticks > 30, "the groups parted before the first refresh: choose another seed"
    # Rounding: the posteriors' (float32 for int8), summed in another order and grouping.
    tol = {"rtol": 1e-9, "atol": 1e-12} if precision == "float64" else {"rtol": 1e-5, "atol": 1e-7}
    for mine, ref in zip(kept.learning.learner.counts, every.learning.learner.counts, strict=True):
        assert mine.version == ref.version
        for slot in range(len(mine.tables)):
            np.testing.assert_allclose(mine.counts[slot], ref.counts[slot], **tol)
            np.testing.assert_allclose(mine.experience[slot], ref.experience[slot], **tol)
            np.testing.assert_array_equal(mine.touched[slot], ref.touched[slot])
    for a, b in zip(kept.learning.model.A, every.learning.model.A, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert kept.learning.refreshes == every.learning.refreshes == ticks // 30


def _pA(group: AifAgentGroup) -> DirichletCounts:  # noqa: N802 - pymdp's table names
    # each read through ``learner``: it learns what was kept first
    counts = group.learning.learner.pA
    assert counts is not None
    return counts


def test_kept_ticks_are_learned_before_a_resize_a_snapshot_and_a_freeze() -> None:
    """What reads or replaces the counts learns from the ticks kept first: a snapshot carries
    them, a resize keeps them (its rows were of the old size), a freeze refreshes with them,
    and a warm-up's step still teaches nothing."""
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: _weak_counts(model.A[1])}, refresh_every=50,
                        settings=LearningSettings(lr_pA=1.0))
    group = AifAgentGroup(model, 2, learning=spec, precision="int8")
    env = ReversalTMazeEnv(2, seed=1)
    obs = env.reset()
    group.warm_up(obs)
    assert group.learning.summary()["counts"]["pA"]["version"] == 0
    for _ in range(3):
        obs = env.step(group.step(obs))
    assert int(group.state_dict()["learn.version.A"]) == 3
    assert not np.array_equal(_pA(group).counts[0], _pA(group).prior[0])
    for _ in range(2):
        obs = env.step(group.step(obs))
    group.resize(5)
    assert _pA(group).version == 5
    obs = np.concatenate([obs, obs, obs[:1]])
    group.step(obs)
    assert group.metrics()["learning_updates"] == 6
    group.step(obs)
    assert group.learning.freeze()
    assert group.learning.refreshes == 1
    assert _pA(group).version == 7
    counts = _pA(group).counts[0]
    np.testing.assert_allclose(group.learning.model.A[1], counts / counts.sum(axis=0), rtol=1e-12)


def test_a_b_that_cannot_move_is_learned_after_the_fused_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """grid10 learning pB on B's support (deterministic moves: every column normalises to the
    same one-hot table however its counts grow), refreshed every tick: past the first refresh
    the tables cannot change, so the group runs its fused step and learns after it (a small
    group keeping its ticks, as between refreshes); the agents act and believe exactly as a
    group that does not learn, and the counts are those of every tick's update (up to
    rounding). With counts off the support the tables move, and the group learns between
    inference and planning."""
    from edge_agent.sim.registry import make_env

    monkeypatch.setenv(NATIVE_ENV, "0")  # the fused step is numpy's: so is the plain group's
    n, ticks = 7, 80  # more ticks than a group of 7 keeps (256 rows)
    env = make_env("grid10", n, seed=5)
    model = env.model
    B = model.B[0]
    spec = LearningSpec(pB={0: B * 2.0 + 0.5 * (B > 0)}, refresh_every=1,
                        settings=LearningSettings(lr_pB=1.0))
    learning = AifAgentGroup(model, n, learning=spec, precision="int8")
    plain = AifAgentGroup(model, n, precision="int8")
    reference = Learner(model.A, model.B, model.D, pB=spec.pB, settings=spec.settings)
    assert learning.learning is not None
    obs = env.reset()
    fused = []
    qs_prev, action_prev, acted = None, None, np.zeros(n, dtype=bool)
    for _ in range(ticks):
        fused.append(not learning.learning.learns_before_planning())
        action = learning.step(obs)
        np.testing.assert_array_equal(action, plain.step(obs))
        for mine, theirs in zip(learning.qs, plain.qs, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-9)
        if qs_prev is not None and acted.any():
            reference.learn_B([q.astype(np.float64) for q in plain.qs], qs_prev, action_prev,
                              acted=acted)
        qs_prev = [q.astype(np.float64) for q in plain.qs]
        action_prev, acted = action.copy(), np.ones(n, dtype=bool)
        obs = env.step(action)
    assert fused[:3] == [False, False, True]  # learning, first refresh, then fused
    assert all(fused[2:])
    assert learning.learning.refreshes == ticks  # one a tick
    assert learning.learning.incremental_refreshes == ticks - 2  # nothing compiled
    pB, ref = learning.learning.learner.pB, reference.pB
    assert pB is not None
    assert ref is not None
    assert pB.version == ref.version == ticks - 1
    np.testing.assert_allclose(pB.counts[0], ref.counts[0], rtol=1e-5, atol=1e-6)
    assert np.any(pB.counts[0] > pB.prior[0])
    moving = B * 2.0 + 0.5 * (B > 0) + 0.1
    group = AifAgentGroup(model, n, precision="int8", learning=dataclasses.replace(
        spec, pB={0: moving}))
    assert group.learning is not None
    for _ in range(3):
        obs = env.step(group.step(obs))
        assert group.learning.learns_before_planning()
