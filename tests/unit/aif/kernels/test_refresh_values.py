"""Two kernels a learning group's refresh runs give, bit for bit, the numbers of their
straightforward forms: ``encode_log_u8`` (the int8 codes of a table's columns) and the local
planner's ``utility_by_source`` and ``qo_table`` (``local_values``), on random tables and the
compiled models of real worlds, float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.kernels.local_plan import local_values
from edge_agent.aif.kernels.transitions import SparseTransition
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import MAX_CODE, RANGE, ZERO_CODE, encode_log_u8, quantize_model
from edge_agent.sim.registry import builtin_model


def encode_reference(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scheme's formulas as the module doc writes them, one masked array at a time."""
    nonzero = p > 0
    with np.errstate(divide="ignore"):
        logp = np.where(nonzero, np.log(np.where(nonzero, p, 1.0)), -np.inf)
    top = logp.max(axis=0)
    low = np.maximum(np.where(nonzero, logp, np.inf).min(axis=0), top - RANGE)
    step = (top - low) / MAX_CODE
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((top[None] - np.maximum(logp, low[None])) / safe[None]), 0, MAX_CODE)
    codes = np.where(nonzero, codes, ZERO_CODE).astype(np.uint8)
    return codes, top.astype(np.float32), step.astype(np.float32)


def random_table(rng: np.random.Generator, trial: int) -> np.ndarray:
    rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 50))
    p = rng.random((rows, cols)) ** int(rng.integers(1, 30))  # from flat to very peaked
    p[rng.random((rows, cols)) < rng.random()] = 0.0
    p[rng.integers(0, rows, cols), np.arange(cols)] = rng.random(cols) + 1e-300
    if trial % 7 == 0:  # one-hot columns (a step of 0)
        p[:, :2] = 0.0
        p[0, :2] = 1.0
    if trial % 11 == 0:  # tiny entries, below the range
        p *= 1e-200
    if trial % 3 == 0:
        p /= p.sum(axis=0)
    return p


def test_encode_log_u8_is_the_scheme_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for trial in range(2000):
        p = random_table(rng, trial)
        q = encode_log_u8(p)
        codes, top, step = encode_reference(p)
        np.testing.assert_array_equal(q.codes, codes, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(q.top, top, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(q.step, step, err_msg=f"trial {trial}")


@pytest.mark.parametrize("world", ["grid10", "tmaze", "grid2f"])
def test_encode_log_u8_of_real_tables(world: str) -> None:
    model = builtin_model(world)
    for table in (*model.A, *model.D, *(b for b in model.B if b.ndim == 3)):
        q = encode_log_u8(table)
        codes, top, step = encode_reference(np.asarray(table, dtype=np.float64))
        np.testing.assert_array_equal(q.codes, codes)
        np.testing.assert_array_equal(q.top, top)
        np.testing.assert_array_equal(q.step, step)


def values_reference(
    lp: kernels.LocalPlan,
    A: np.ndarray,
    trans: SparseTransition,
    utility: np.ndarray,
    dtype: np.dtype[np.floating],
) -> tuple[np.ndarray, np.ndarray]:
    """``utility_by_source`` by ``np.add.at`` layer by layer and ``qo_table`` gathered in
    float64, then cast."""
    S = A.shape[1]
    by_action = np.zeros((len(trans.layers), S))
    for u in np.unique(lp.node_action):
        for tgt, src, w in trans.layers[int(u)]:
            gain = utility[tgt] if w is None else utility[tgt] * w.astype(np.float64)
            np.add.at(by_action[int(u)], src, gain)
    padded = np.append(np.asarray(A, dtype=np.float64).reshape(-1), 0.0)
    assert lp.outcome_index is not None
    qo = padded[lp.outcome_index].reshape(A.shape[0], -1)
    return by_action[lp.node_action].T.astype(dtype), qo.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_local_values_match_add_at(dtype: type, precision: str, stochastic: bool) -> None:
    model = builtin_model("grid10")
    if stochastic:  # a slip to the next state: two targets per column, sources repeat
        B = np.asarray(model.B[0], dtype=np.float64)
        B = 0.8 * B + 0.2 * np.roll(B, 1, axis=0)
        model = type(model).from_arrays(model.A, [B], model.C, model.D, model.E)
    source = quantize_model(model) if precision == "int8" else model
    cm = kernels.compile_model(source, construct_policies(model.num_controls, 1), dtype=dtype)
    lp, trans = cm.local, cm.transitions[0]
    assert lp is not None
    assert lp.target_index is not None
    assert lp.outcome_index is not None
    assert isinstance(trans, SparseTransition)
    rng = np.random.default_rng(1)
    A = np.asarray(cm.A_rows[0])
    utility = rng.normal(size=A.shape[1])
    neg_entropy = rng.normal(size=A.shape[1])
    got = local_values(
        lp.target_index,
        lp.outcome_index,
        lp.node_action,
        A=A,
        trans=trans,
        utility=utility,
        neg_entropy=neg_entropy,
        dtype=np.dtype(dtype),
    )
    by_source, qo = values_reference(lp, A, trans, utility, np.dtype(dtype))
    np.testing.assert_array_equal(got["utility_by_source"], by_source)
    np.testing.assert_array_equal(got["qo_table"], qo)
    assert got["qo_table"].dtype == np.dtype(dtype)
