"""The refresh's maths (edge_agent.aif.learning_refresh): counts into tables, int8 codes and
compiled tables. An incremental refresh (the touched columns of ``A``) gives the tables and codes
a full refresh gives, and compiled tables equal to them up to rounding; a deterministic ``B``
learned on its support stays the table the agents use; per-agent tables are each agent's
normalised counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.learning_refresh import (
    codes_nbytes,
    learned_codes,
    moved_transition_columns,
    normalise_agent_tables,
    refresh_model,
    refresh_touched_likelihood,
    refreshed_columns,
)
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import encode_log_u8, encode_transition, quantize_model
from edge_agent.sim.registry import builtin_model


def weak(table: np.ndarray) -> np.ndarray:
    return table * 2.0 + 0.5 * (table > 0)


def experience(learner: Learner, model: Any, rng: np.random.Generator, n: int, ticks: int,
               *, states: int | None = None) -> None:
    """``ticks`` updates of ``pA`` from ``n`` agents' random outcomes and posteriors (the
    posteriors on the first ``states`` states of factor 0 only, when given: a few columns)."""
    for _ in range(ticks):
        obs = np.stack([rng.integers(0, o, n) for o in model.num_obs], axis=1)
        qs = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
        if states is not None:
            qs[0][:, states:] = 0.0
            qs[0] /= qs[0].sum(axis=1, keepdims=True)
        learner.learn_A(obs, qs)


@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize(("world", "modality", "states"), [("tmaze", 1, None), ("grid10", 0, 7)])
def test_an_incremental_refresh_gives_what_a_full_refresh_gives(
    world: str, modality: int, states: int | None, precision: str
) -> None:
    model = builtin_model(world)
    dtype = np.float32 if precision == "int8" else np.float64
    quantized = quantize_model(model) if precision == "int8" else None
    policies = construct_policies(model.num_controls, 1, None)
    learner = Learner(model.A, model.B, model.D, pA={modality: weak(model.A[modality])},
                      settings=LearningSettings(lr_pA=0.5))
    pA = learner.pA
    assert pA is not None
    rng = np.random.default_rng(1)
    experience(learner, model, rng, 20, 3)
    codes = None if quantized is None else learned_codes(quantized, learner.counts)
    first = refresh_model(model, quantized, codes, learner.counts, policies=policies, dtype=dtype)
    pA.mark_refreshed()  # the tables follow the counts from here on
    experience(learner, model, rng, 20, 3, states=states)  # a few columns touched
    touched = int(np.count_nonzero(pA.touched[0]))
    assert 0 < touched <= pA.touched[0].size
    if states is not None:
        assert touched < pA.touched[0].size

    def own() -> Any:
        return None if first.quantized is None else learned_codes(first.quantized, learner.counts)

    inc = refresh_touched_likelihood(first.cm, first.model, first.quantized, own(), pA)
    assert inc is not None
    full = refresh_model(first.model, first.quantized, own(), learner.counts,
                         policies=policies, dtype=dtype)
    expected = normalise(pA.counts[0])
    np.testing.assert_array_equal(full.model.A[modality], expected)
    # The touched columns normalised apart: the same sums, to rounding.
    np.testing.assert_allclose(inc.model.A[modality], expected, rtol=1e-15, atol=1e-300)
    if precision == "int8":
        assert inc.quantized is not None
        assert full.quantized is not None
        assert inc.columns_encoded == full.columns_encoded == touched
        whole = encode_log_u8(expected)
        for q in (inc.quantized.A[modality], full.quantized.A[modality]):
            np.testing.assert_array_equal(q.codes, whole.codes)
            np.testing.assert_array_equal(q.top, whole.top)
            np.testing.assert_array_equal(q.step, whole.step)
        assert quantized is not None
        assert quantized.A[modality] is not inc.quantized.A[modality]
    rtol = 1e-5 if precision == "int8" else 1e-12
    for name in ("utility", "neg_entropy", "A_joint_T"):
        np.testing.assert_allclose(getattr(inc.cm, name), getattr(full.cm, name), rtol=rtol,
                                   atol=rtol * 1e-3, err_msg=name)
    for a, b in zip(inc.cm.A_rows, full.cm.A_rows, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-3)
    assert inc.cm.transitions is first.cm.transitions  # nothing but A's columns moved


def test_a_moved_support_is_no_incremental_refresh() -> None:
    """Counts that put mass where the compiled likelihood has none: compile again (None)."""
    model = builtin_model("grid10")
    policies = construct_policies(model.num_controls, 1, None)
    learner = Learner(model.A, model.B, model.D, pA={0: np.ones_like(model.A[0])})
    pA = learner.pA
    assert pA is not None
    cm = kernels.compile_model(model, policies, dtype=np.float64)
    pA.mark_refreshed()
    pA.touched[0][3] = True
    assert refresh_touched_likelihood(cm, model, None, None, pA) is None


def test_a_transition_learned_on_its_one_target_stays_the_table() -> None:
    model = builtin_model("grid10")
    B = model.B[0]
    learner = Learner(model.A, model.B, model.D, pB={0: B * 10.0})
    pB = learner.pB
    assert pB is not None
    pB.mark_refreshed()
    rng = np.random.default_rng(2)
    n = 30
    q = np.eye(100)[rng.integers(0, 100, n)]
    actions = rng.integers(0, B.shape[2], (n, 1))
    nxt = np.stack([B[:, :, a] @ s for s, a in zip(q, actions[:, 0], strict=True)])
    learner.learn_B([nxt], [q], actions, acted=np.ones(n, dtype=bool))
    assert pB.touched[0].any()
    moved, values = moved_transition_columns(pB, 0, model.B[0])
    assert (moved.any(), values.shape) == (False, (100, 0))
    counts = pB.counts[0].copy()
    counts[5, 0, 0] += 1.0  # off the one target of a column, from outside (a snapshot's)
    pB.restore(0, counts)
    moved, values = moved_transition_columns(pB, 0, model.B[0])
    assert np.array_equal(np.argwhere(moved), [[0, 0]])
    np.testing.assert_array_equal(values[:, 0], normalise(counts[:, 0, 0]))


def test_the_moved_transition_columns_are_those_whose_normalised_counts_differ() -> None:
    """A dense learned ``B``: of the touched columns, those whose counts normalise to other
    values than the table's, with those values; an untouched column is not looked at, however
    its counts differ."""
    model = builtin_model("grid10")
    B = model.B[0]
    learner = Learner(model.A, model.B, model.D, pB={0: B * 2.0 + 0.5})
    pB = learner.pB
    assert pB is not None
    table = normalise(pB.counts[0])
    pB.mark_refreshed()
    pB.counts[0][:, 3, 1] *= 2.0  # touched, normalises to the same table
    pB.counts[0][7, 4, 2] += 1.0  # touched, moves
    pB.counts[0][7, 5, 2] += 1.0  # moves, not touched
    pB.touched[0][3, 1] = pB.touched[0][4, 2] = True
    moved, values = moved_transition_columns(pB, 0, table)
    assert np.array_equal(np.argwhere(moved), [[4, 2]])
    np.testing.assert_array_equal(values[:, 0], normalise(pB.counts[0][:, 4, 2]))


def test_per_agent_tables_are_each_agents_normalised_counts() -> None:
    rng = np.random.default_rng(3)
    counts = rng.random((4, 3, 5)) + 0.1
    out = np.empty_like(counts)
    normalise_agent_tables(counts, out)
    for n in range(4):
        np.testing.assert_allclose(out[n], normalise(counts[n]), rtol=1e-15)


def test_refreshed_columns_moves_only_the_touched_columns() -> None:
    rng = np.random.default_rng(4)
    table = normalise(rng.random((3, 2, 4)) + 0.1)
    counts = rng.random((3, 2, 4)) + 0.1
    touched = np.zeros((2, 4), dtype=bool)
    touched[1, 2] = touched[0, 0] = True
    out = refreshed_columns(counts, touched, table)
    np.testing.assert_array_equal(out[:, ~touched], table[:, ~touched])
    np.testing.assert_allclose(out[:, touched], normalise(counts[:, touched]), rtol=1e-15)
    assert out is not table


def test_the_learned_codes_are_copies_and_their_bytes_are_counted() -> None:
    model = builtin_model("tmaze")
    quantized = quantize_model(model)
    learner = Learner(model.A, model.B, model.D, pA={1: weak(model.A[1])},
                      pB={0: weak(model.B[0])})
    codes = learned_codes(quantized, learner.counts)
    assert codes["A"][1] is not quantized.A[1]
    np.testing.assert_array_equal(codes["A"][1].codes, quantized.A[1].codes)
    assert codes["A"][0] is quantized.A[0]  # not learned: the model's own
    assert codes["B"][0] is not quantized.B[0]
    assert codes["D"][0] is quantized.D[0]
    expected = (encode_log_u8(normalise(weak(model.A[1]))).nbytes
                + encode_transition(normalise(weak(model.B[0]))).nbytes)
    assert codes_nbytes(learner.counts) == expected
