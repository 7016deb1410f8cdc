"""Learning scope ``shared`` (edge_agent.core.shared_learning): the model the counts refresh, the
group's own int8 codes, an incremental refresh when only ``A`` moved and a full one otherwise,
and the tables the group was loaded with again."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import encode_log_u8, encode_transition, quantize_model
from edge_agent.core.shared_learning import SharedTables
from edge_agent.sim.registry import builtin_model
from tests.unit.aif.kernels.test_compiled import assert_same_tables
from tests.unit.core.test_learning import same_codes


def weak(table: np.ndarray) -> np.ndarray:
    return table * 2.0 + 0.5 * (table > 0)


def test_a_refresh_is_incremental_when_only_a_moved() -> None:
    model = builtin_model("tmaze")
    quantized = quantize_model(model)
    policies = construct_policies(model.num_controls, 1, None)
    cm = kernels.compile_model(quantized, policies, dtype=np.float32)
    learner = Learner(model.A, model.B, model.D, pA={1: weak(model.A[1])},
                      pD={0: weak(model.D[0])}, settings=LearningSettings(lr_pA=0.5))
    tables = SharedTables(model, quantized, cm, np.float32)
    rng = np.random.default_rng(0)

    def learn_a() -> None:
        obs = np.stack([rng.integers(0, o, 5) for o in model.num_obs], axis=1)
        learner.learn_A(obs, [rng.dirichlet(np.ones(s), size=5) for s in model.num_states])

    learn_a()
    first, incremental, encoded = tables.refresh(learner, cm)
    assert first is not None
    assert not incremental
    assert encoded > 0
    assert tables.quantized is not quantized
    assert tables.quantized is not None
    assert tables.quantized.A[1] is not quantized.A[1]  # its own codes; the model's unchanged
    np.testing.assert_array_equal(tables.model.A[1], learner.pA.normalised(0))  # type: ignore[union-attr]
    learn_a()
    second, incremental, _ = tables.refresh(learner, first)
    assert incremental
    assert second is not None
    assert second.transitions is first.transitions
    learner.learn_D([rng.dirichlet(np.ones(s), size=2) for s in model.num_states])
    third, incremental, _ = tables.refresh(learner, second)
    assert not incremental
    assert third is not None
    tables.forget_versions()
    learn_a()
    _, incremental, _ = tables.refresh(learner, third)
    assert not incremental  # counts from outside: a full refresh
    assert tables.restore_loaded() is cm
    assert tables.model is model
    assert tables.quantized is quantized


def test_the_surprise_reads_the_likelihood_the_agents_infer_with() -> None:
    model = builtin_model("tmaze")
    policies = construct_policies(model.num_controls, 1, None)
    cm = kernels.compile_model(model, policies, dtype=np.float64)
    tables = SharedTables(model, None, cm, np.float64)
    rng = np.random.default_rng(1)
    qs = [rng.dirichlet(np.ones(s), size=4) for s in model.num_states]
    joint = np.einsum("ni,nj->nij", *qs).reshape(4, -1)
    obs = np.stack([rng.integers(0, o, 4) for o in model.num_obs], axis=1)
    p = tables.outcome_probabilities(obs, np.arange(4), joint)
    for m, A in enumerate(model.A):
        flat = A.reshape(A.shape[0], -1)
        np.testing.assert_allclose(p[:, m], np.einsum("ns,ns->n", flat[obs[:, m]], joint))


def _same_compiled(a: kernels.CompiledModel, b: kernels.CompiledModel) -> None:
    for name in ("utility", "neg_entropy", "A_joint_T", "lnE"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-9)
    for x, y in zip(a.A_rows, b.A_rows, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)
    q = np.random.default_rng(9).dirichlet(np.ones(a.num_states[0]), size=3)
    for s, t in zip(a.transitions, b.transitions, strict=True):
        for u in range(a.num_controls[0]):
            np.testing.assert_allclose(
                kernels.propagate(s, q, u), kernels.propagate(t, q, u), rtol=1e-6
            )

def test_a_deterministic_b_learned_on_its_support_refreshes_without_a_compile() -> None:
    """grid10 learning ``pB`` only, with counts on ``B``'s support: its columns normalise to the
    same one-hot table however they grow, so after the first refresh nothing is compiled again
    (the compiled tables are kept), and they are what a full compile of the counts gives."""
    model = builtin_model("grid10")
    quantized = quantize_model(model)
    policies = construct_policies(model.num_controls, 1, None)
    cm = kernels.compile_model(quantized, policies, dtype=np.float32)
    learner = Learner(model.A, model.B, model.D, pB={0: weak(model.B[0])},
                      settings=LearningSettings(lr_pB=1.0))
    tables = SharedTables(model, quantized, cm, np.float32)
    rng = np.random.default_rng(2)
    S = model.num_states[0]

    def learn_b() -> None:
        qs = [rng.dirichlet(np.ones(S), size=6)]
        qs_prev = [rng.dirichlet(np.ones(S), size=6)]
        learner.learn_B(qs, qs_prev, rng.integers(0, model.num_controls[0], (6, 1)))

    learn_b()
    first, incremental, encoded = tables.refresh(learner, cm)
    assert first is not None
    assert not incremental
    assert encoded > 0
    assert learner.pB is not None
    for _ in range(5):
        learn_b()
        assert learner.pB.touched[0].any()
        new, incremental, encoded = tables.refresh(learner, first)
        assert new is None  # the compiled tables stay
        assert incremental
        assert encoded == 0
        assert not learner.pB.touched[0].any()  # marked refreshed
    np.testing.assert_array_equal(tables.model.B[0], learner.pB.normalised(0))
    assert tables.quantized is not None
    full = kernels.compile_model(tables.quantized, policies, dtype=np.float32)
    _same_compiled(first, full)


def test_a_learned_b_that_moves_is_compiled_once_then_refreshed_where_it_moved() -> None:
    """Counts off ``B``'s support (a stochastic move learned): the touched columns normalise
    to another table. The first refresh builds and compiles the model (the table's support
    becomes the counts'); the next ones bring the columns that moved into the compiled tables
    without a compile (new tables, never the ones given), equal to a full compile's."""
    model = builtin_model("grid10")
    policies = construct_policies(model.num_controls, 1, None)
    cm = kernels.compile_model(model, policies, dtype=np.float64)
    prior = model.B[0] * 4.0 + 0.5 * (model.B[0] > 0)
    prior[:, :, 0] += 0.25  # action 0 may end anywhere
    learner = Learner(model.A, model.B, model.D, pB={0: prior},
                      settings=LearningSettings(lr_pB=1.0))
    tables = SharedTables(model, None, cm, np.float64)
    rng = np.random.default_rng(3)
    S = model.num_states[0]
    for tick in range(3):
        qs = [rng.dirichlet(np.ones(S), size=4)]
        learner.learn_B(qs, qs, np.zeros((4, 1), dtype=np.intp))
        new, incremental, _ = tables.refresh(learner, cm)
        assert new is not None
        assert new is not cm
        assert incremental == (tick > 0)
        assert new.transitions[0] is not cm.transitions[0]
        cm = new
        full = kernels.compile_model(tables.model, policies, dtype=np.float64)
        assert_same_tables(cm, full, "cm", 1e-12)  # every table, the planners' too
    assert learner.pB is not None
    np.testing.assert_allclose(tables.model.B[0], learner.pB.normalised(0))


@pytest.mark.parametrize("world", ["tmaze", "grid10", "grid2f"])
def test_refreshes_after_random_touches_give_what_a_full_compile_gives(world: str) -> None:
    """Every modality's ``A`` and every factor's ``B`` learned (``B`` on its support:
    deterministic moves), refreshed after each of a random sequence of updates that touch a
    random few joint states: the group's own codes are the full encoding of the normalised
    counts, code for code, and its compiled tables those ``compile_model`` makes of them, up to
    rounding (T-maze, grid10, and grid2f with two factors)."""
    model = builtin_model(world)
    quantized = quantize_model(model)
    policies = construct_policies(model.num_controls, 1, None)
    cm = kernels.compile_model(quantized, policies, dtype=np.float32)
    learner = Learner(
        model.A, model.B, model.D,
        pA={m: weak(a) for m, a in enumerate(model.A)},
        pB={f: weak(b) for f, b in enumerate(model.B)},
        settings=LearningSettings(lr_pA=0.7, lr_pB=0.7),
    )
    tables = SharedTables(model, quantized, cm, np.float32)
    rng = np.random.default_rng(11)
    n = 3
    incremental = 0
    for _ in range(6):
        qs = []
        for s in model.num_states:  # each agent's belief on a random few states
            q = rng.dirichlet(np.ones(s), size=n) * (rng.random((n, s)) < 0.3)
            q[np.arange(n), rng.integers(0, s, n)] += 0.5
            qs.append(q / q.sum(axis=1, keepdims=True))
        obs = np.stack([rng.integers(0, o, n) for o in model.num_obs], axis=1)
        learner.learn_A(obs, qs)
        actions = np.stack([rng.integers(0, u, n) for u in model.num_controls], axis=1)
        learner.learn_B(qs, qs, actions)
        new, was_incremental, _ = tables.refresh(learner, cm)
        incremental += was_incremental
        cm = cm if new is None else new
        mine = tables.quantized
        assert mine is not None
        assert learner.pA is not None
        assert learner.pB is not None
        for slot, m in enumerate(learner.pA.tables):
            same_codes(mine.A[m], encode_log_u8(normalise(learner.pA.counts[slot])))
        for slot, f in enumerate(learner.pB.tables):
            same_codes(mine.B[f], encode_transition(normalise(learner.pB.counts[slot])))
        assert_same_tables(cm, kernels.compile_model(mine, policies, dtype=np.float32), "cm",
                           1e-5)
    assert incremental >= 4  # the first refresh is a full one (every table's first)
