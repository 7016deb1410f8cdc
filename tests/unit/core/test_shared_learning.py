"""Learning scope ``shared`` (edge_agent.core.shared_learning): the model the counts refresh, the
group's own int8 codes, an incremental refresh when only ``A`` moved and a full one otherwise,
and the tables the group was loaded with again."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import quantize_model
from edge_agent.core.shared_learning import SharedTables
from edge_agent.sim.registry import builtin_model


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
