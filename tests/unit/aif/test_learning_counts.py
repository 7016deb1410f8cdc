"""The counts a group learns (edge_agent/aif/learning_counts.py): the deltas since the last
report and their versions, bad counts refused in one line, per-agent counts' memory."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.learning_counts import DirichletCounts, column_increments
from edge_agent.errors import ModelError
from tests.support.learning_random import priors, random_model, random_qs


def test_deltas_carry_the_experience_since_the_last_report_and_its_versions() -> None:
    rng = np.random.default_rng(3)
    model = random_model(rng)
    pA, _, _ = priors(model)
    learner = Learner(model.A, model.B, model.D, pA={1: pA[1]},
                      settings=LearningSettings(lr_pA=1.0, forgetting=0.5), n_agents=8)
    assert learner.pA is not None
    for _ in range(3):
        obs = np.stack([rng.integers(0, o, size=8) for o in model.num_obs], axis=1)
        learner.learn_A(obs, random_qs(rng, 8, model.num_states))
    start, end, delta, ticks = learner.pA.take_delta()
    assert (start, end, ticks) == (0, 3, [3 * 8])
    assert delta[0].sum() == pytest.approx(3 * 8 * 1.0, rel=1e-12)  # every agent, every tick
    again = learner.pA.take_delta()
    assert again[:2] == (3, 3)
    assert again[2][0].sum() == 0.0


def test_bad_counts_are_refused_in_one_line() -> None:
    model = random_model(np.random.default_rng(1))
    A0 = model.A[0]
    cases = {
        "negative counts": {0: np.where(A0 > 0, -1.0, 0.0)},
        "NaN or infinite": {0: np.full(A0.shape, np.nan)},
        r"expected \(4, 3, 4\)": {0: np.ones((4, 3))},
        "can never be learned": {0: np.where(np.arange(A0.shape[0])[:, None, None] == 1, 0.0, 1.0)
                                 + 0 * A0},
        "learning asked for modality 5": {5: np.ones(A0.shape)},
    }
    for message, pA in cases.items():
        with pytest.raises(ModelError, match=message):
            DirichletCounts.create("A", pA, model.A)
    for kwargs, message in (({"lr_pA": -1.0}, "lr_pA"), ({"forgetting": 1.0}, "forgetting"),
                            ({"scope": "fleet"}, "scope")):
        with pytest.raises(ModelError, match=message):
            LearningSettings(**kwargs)  # type: ignore[arg-type]


def test_memory_per_agent_scope_is_counts_per_agent() -> None:
    model = random_model(np.random.default_rng(4))
    pA, _, _ = priors(model)
    one = Learner(model.A, model.B, model.D, pA=pA, n_agents=1,
                  settings=LearningSettings(scope="per_agent"))
    many = Learner(model.A, model.B, model.D, pA=pA, n_agents=101,
                   settings=LearningSettings(scope="per_agent"))
    shared = Learner(model.A, model.B, model.D, pA=pA, n_agents=101)
    counts_bytes = sum(p.nbytes for p in pA.values())
    assert many.nbytes - one.nbytes == 100 * counts_bytes
    assert shared.nbytes == one.nbytes


def test_fixed_columns_are_the_one_target_moves_learned_on_their_support() -> None:
    """``fixed_columns``: the columns of a learned ``B`` that normalise to exactly its table
    whatever the updates: one target in the mask, the table 1 there, counts and prior 0 off
    it. Found once per mask and table; a restore of counts from outside finds them anew."""
    rng = np.random.default_rng(5)
    S, U = 6, 3
    B = np.zeros((S, S, U))
    for s in range(S):
        B[(s + 1) % S, s, 0] = 1.0  # deterministic moves
        B[s, s, 1] = 1.0
        B[[s, (s + 2) % S], s, 2] = 0.5  # a stochastic one
    prior = 2.0 * B
    prior[0, 3, 1] = 0.25  # counts off column (3, 1)'s one target
    counts = DirichletCounts.create("B", {0: prior}, [B])
    counts.mark_refreshed()  # the mask is now the prior's support
    fixed = counts.fixed_columns(0, B)
    expected = np.zeros((S, U), dtype=bool)
    expected[:, :2] = True
    expected[3, 1] = False  # two entries in its mask
    np.testing.assert_array_equal(fixed, expected)
    for _ in range(3):  # updates on the mask keep them what they were
        counts.add(0, rng.random((S, S, U)) * counts.mask[0], 0.5, 0.1)
    assert counts.fixed_columns(0, B) is fixed
    normalised = counts.normalised(0)
    np.testing.assert_array_equal(normalised[:, fixed], B[:, fixed])
    restored = counts.counts[0].copy()
    restored[2, 0, 0] = 1.0  # off the target of column (0, 0)
    counts.restore(0, restored)
    assert counts.touched[0].all()
    again = counts.fixed_columns(0, B)
    assert not again[0, 0]
    np.testing.assert_array_equal(np.delete(again.reshape(-1), 0), np.delete(fixed.reshape(-1), 0))
    # a refresh that replaces the table, moving only columns that are not fixed, carries what
    # was found over to the new table (not looked for again); another table is looked at anew
    refreshed = B.copy()
    refreshed[:, 1, 2] = [0.1, 0.4, 0.0, 0.5, 0.0, 0.0]
    counts.carry_fixed(0, B, refreshed)
    assert counts.fixed_columns(0, refreshed) is again
    counts.carry_fixed(0, B, B.copy())  # not the table it was found for: nothing carried
    assert counts.fixed_columns(0, refreshed) is again
    np.testing.assert_array_equal(counts.fixed_columns(0, B.copy()), again)


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_the_increments_are_the_sum_of_every_tick_s_before_any_forgetting(scope: str) -> None:
    """Replayed ticks: the increments taken are the counts' per-tick gains added up (learned
    without forgetting), the same whatever the forgetting, with the agent-ticks behind them."""
    rng = np.random.default_rng(11)
    model = random_model(rng)
    pA, pB, pD = priors(model)
    n = 6
    learners = [
        Learner(model.A, model.B, model.D, pA={1: pA[1]}, pB=pB, pD=pD, n_agents=n,
                settings=LearningSettings(lr_pA=0.5, lr_pB=2.0, lr_pD=0.25, forgetting=f,
                                          scope=scope))  # type: ignore[arg-type]
        for f in (0.0, 0.3)
    ]
    plain = learners[0]
    assert plain.pA is not None
    assert plain.pB is not None
    assert plain.pD is not None
    summed = [np.zeros(c.prior[0].shape) for c in plain.counts]
    agent_axis = 1 if scope == "per_agent" else 0
    acted_total = 0
    qs_prev = random_qs(rng, n, model.num_states)
    for _tick in range(5):
        obs = np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1)
        qs = random_qs(rng, n, model.num_states)
        actions = np.stack([rng.integers(0, u, size=n) for u in model.num_controls], axis=1)
        acted = rng.random(n) < 0.6
        acted_total += int(acted.sum())
        before = [c.counts[0].copy() for c in plain.counts]
        for learner in learners:
            learner.learn_A(obs, qs)
            learner.learn_B(qs, qs_prev, actions, acted=acted)
            learner.learn_D(qs[:1] + qs[1:])
        for slot, (c, b) in enumerate(zip(plain.counts, before, strict=True)):
            gain = c.counts[0] - b
            summed[slot] += gain.sum(axis=0) if agent_axis else gain
        qs_prev = qs
    for learner in learners:
        ticks = {c.kind: c.take_delta() for c in learner.counts}
        assert ticks["A"].agent_ticks == [5 * n]
        assert ticks["B"].agent_ticks == [acted_total]
        assert ticks["D"].agent_ticks == [5 * n, 5 * n]
        for total, c in zip(summed, learner.counts, strict=True):
            delta = ticks[c.kind].increments[0]
            columns, values = column_increments(delta)
            dense = np.zeros((delta.shape[0], delta[0].size), dtype=np.float32)
            dense[:, columns] = values.T
            np.testing.assert_allclose(dense.reshape(delta.shape), total, rtol=1e-6, atol=1e-6)
        # each agent-tick adds at most lr of mass to a table
        assert ticks["A"].increments[0].sum() <= 5 * n * 0.5 + 1e-9
        assert ticks["B"].increments[0].sum() <= acted_total * 2.0 + 1e-9
        again = learner.pA.take_delta() if learner.pA is not None else None
        assert again is not None
        assert again.agent_ticks == [0]
        assert not again.increments[0].any()


def test_only_the_columns_that_moved_are_taken() -> None:
    """B learned from agents that all took action 0 from states 0 and 2: the columns
    ``(s_prev, a)`` = (0, 0) and (2, 0) of ``B[1]`` (C order: s_prev * U + a), nothing else."""
    model = random_model(np.random.default_rng(5))
    _, pB, _ = priors(model)
    learner = Learner(model.A, model.B, model.D, pB=pB, n_agents=4)
    S, U = model.B[1].shape[1:]
    qs = [np.full((4, s), 1.0 / s) for s in model.num_states]
    qs_prev = [q.copy() for q in qs]
    qs_prev[1] = np.eye(S)[[0, 2, 2, 0]]
    learner.learn_B(qs, qs_prev, np.zeros((4, 2), dtype=np.int64))
    assert learner.pB is not None
    columns, values = column_increments(learner.pB.take_delta().increments[0])
    assert columns.tolist() == [0 * U + 0, 2 * U + 0]
    assert columns.dtype == np.uint32
    assert values.dtype == np.float32
    assert values.shape == (2, S)
    np.testing.assert_allclose(values.sum(axis=1), [2.0, 2.0], rtol=1e-6)


def test_a_column_whose_increments_are_0_in_float32_is_not_taken() -> None:
    """An increment below float32's smallest (a posterior's far tail) is 0 on the wire: its
    column is not sent."""
    increments = np.zeros((3, 4))
    increments[1, 0] = 0.5
    increments[2, 2] = 1e-60
    columns, values = column_increments(increments)
    assert columns.tolist() == [0]
    np.testing.assert_array_equal(values, [[0.0, 0.5, 0.0]])


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_a_refresh_clears_the_touched_columns_or_marks_them_all(scope: str) -> None:
    """mark_refreshed clears the touched columns (and the agents' action tables), or, given
    ``touched`` (a shared pass's tables behind the compiled ones), marks every column touched
    and still clears the agents' action tables; the masks become the counts' support once."""
    S, U = 4, 2
    B = np.zeros((S, S, U))
    for s in range(S):
        B[(s + 1) % S, s, 0] = 1.0
        B[s, s, 1] = 1.0
    prior = B + 0.5 * (np.arange(S)[:, None, None] == 0)
    counts = DirichletCounts.create("B", {0: prior}, [B], scope=scope, n_agents=3)
    for touched in (True, False, True):
        counts.touched[0][1, 0] = True
        for flags in counts.touched_by_agent:
            flags[0, 1] = True
        counts.mark_refreshed(touched=touched)
        assert counts.touched[0].all() if touched else not counts.touched[0].any()
        assert not any(flags.any() for flags in counts.touched_by_agent)
        np.testing.assert_array_equal(counts.mask[0], prior > 0)
