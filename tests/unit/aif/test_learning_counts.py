"""The counts a group learns (edge_agent/aif/learning_counts.py): the deltas since the last
report and their versions, bad counts refused in one line, per-agent counts' memory."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.learning_counts import DirichletCounts
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
    start, end, delta = learner.pA.take_delta()
    assert (start, end) == (0, 3)
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
