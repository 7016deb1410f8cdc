"""Counts as a snapshot holds them (edge_agent.aif.learning_storage): only the entries that
moved from the prior, restored bit for bit, in the counts' dtype, within the stated bound; counts
saved whole (snapshots before) read back as they are; what does not fit refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.learning_storage import (
    counts_arrays,
    moved_bound,
    rows_arrays,
    saved_counts,
    saved_rows,
)
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.sim.registry import make_env


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("agents", [None, 5])
def test_what_moved_is_stored_and_restored_exactly(dtype: type, agents: int | None) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((6, 4, 3)) < 0.3
    prior = (2.0 * mask + 0.5 * mask).astype(dtype)
    shape = prior.shape if agents is None else (agents, *prior.shape)
    counts = np.broadcast_to(prior, shape).copy()
    moved = mask & (rng.random(shape) < 0.4)
    counts[moved] += rng.random(int(moved.sum())).astype(dtype) / 3.0
    arrays = counts_arrays("learn.pB0", counts, prior)
    assert arrays["learn.pB0.values"].dtype == dtype
    assert arrays["learn.pB0.values"].size == int(moved.sum())
    assert arrays["learn.pB0.steps"].dtype == np.uint32
    stored = sum(a.nbytes for a in arrays.values())
    assert stored <= moved_bound(counts, mask, np.dtype(dtype).itemsize)
    back = saved_counts(arrays, "learn.pB0", prior, where="group 'g' snapshot")
    assert back is not None
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, counts)


def test_counts_that_never_moved_store_nothing_but_their_shape() -> None:
    prior = np.ones((3, 3, 2))
    arrays = counts_arrays("learn.pB0", np.broadcast_to(prior, (4, 3, 3, 2)).copy(), prior)
    assert arrays["learn.pB0.values"].size == 0
    back = saved_counts(arrays, "learn.pB0", prior, where="x")
    assert back is not None
    assert back.shape == (4, 3, 3, 2)
    np.testing.assert_array_equal(back, 1.0)


def test_counts_saved_whole_are_read_as_they_are() -> None:
    whole = np.arange(6.0).reshape(2, 3)
    back = saved_counts({"learn.pA0": whole}, "learn.pA0", np.ones((2, 3)), where="x")
    assert back is not None
    np.testing.assert_array_equal(back, whole)
    assert saved_counts({}, "learn.pA0", np.ones((2, 3)), where="x") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learn.pA0.steps": np.array([0, 99], dtype=np.uint32)},
         r"group 'g' snapshot: learn.pA0: the saved entries lie outside shape \(2, 3\)"),
        ({"learn.pA0.values": np.zeros(7)}, "the saved steps and values do not match"),
        ({"learn.pA0.shape": np.array([3, 2])}, r"saved with shape \(3, 2\), the prior's is"),
    ],
)
def test_what_does_not_fit_is_one_line(change: dict[str, np.ndarray], message: str) -> None:
    prior = np.ones((2, 3))
    counts = prior.copy()
    counts[0, 1] = 4.0
    counts[1, 2] = 5.0
    arrays = {**counts_arrays("learn.pA0", counts, prior), **change}
    with pytest.raises(InputError, match=message) as err:
        saved_counts(arrays, "learn.pA0", prior, where="group 'g' snapshot")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_a_group_restores_its_counts_saved_either_way(scope: str) -> None:
    """A group's state holds what moved; a state of before (the counts whole) restores the same
    counts into a new group, as the new form does."""
    n = 4
    env = make_env("grid10", n, seed=1)
    model = env.model
    B = model.B[0]
    spec = LearningSpec(pB={0: 2.0 * B + 0.5 * (B > 0)}, refresh_every=2,
                        settings=LearningSettings(lr_pB=1.0, scope=scope))  # type: ignore[arg-type]
    precision = "float64" if scope == "per_agent" else "int8"
    group = AifAgentGroup(model, n, learning=spec, precision=precision)
    obs = env.reset()
    for _ in range(8):
        obs = env.step(group.step(obs))
    pB = group.learning.learner.pB
    assert pB is not None
    state = {k: np.array(v, copy=True) for k, v in group.state_dict().items()}
    assert "learn.pB0" not in state
    assert 0 < state["learn.pB0.values"].size < pB.counts[0].size // 50
    whole = {k: v for k, v in state.items() if not k.startswith("learn.pB0.")}
    whole["learn.pB0"] = pB.counts[0].copy()
    for saved in (state, whole):
        fresh = AifAgentGroup(model, n, learning=spec, precision=precision)
        fresh.load_state_dict(saved)
        restored = fresh.learning.learner.pB
        assert restored is not None
        np.testing.assert_array_equal(restored.counts[0], pB.counts[0])
        assert restored.version == pB.version


def test_previous_posteriors_are_stored_only_where_they_differ_from_the_beliefs() -> None:
    """``pB``'s previous posteriors are the beliefs the state holds for an agent that stepped
    last: only the agents reset since are stored, and a restored group (from this form or from
    the posteriors saved whole, as before) saves the same state and learns the same counts."""
    n = 5
    env = make_env("grid10", n, seed=2)
    model = env.model
    spec = LearningSpec(pB={0: model.B[0].copy()}, refresh_every=1,
                        settings=LearningSettings(lr_pB=1.0, scope="per_agent"))
    group = AifAgentGroup(model, n, learning=spec, precision="float64")
    obs = env.reset()
    for _ in range(6):
        obs = env.step(group.step(obs))
    group.reset(np.array([False, True, False, True, False]))
    state = {k: np.array(v, copy=True) for k, v in group.state_dict().items()}
    assert "learn.qs_prev0" not in state
    np.testing.assert_array_equal(state["learn.qs_prev0.agents"], [1, 3])
    whole = {k: v for k, v in state.items() if not k.startswith("learn.qs_prev0.")}
    whole["learn.qs_prev0"] = state["qs0"].copy()
    whole["learn.qs_prev0"][[1, 3]] = state["learn.qs_prev0.rows"]
    for saved in (state, whole):
        fresh = AifAgentGroup(model, n, learning=spec, precision="float64")
        fresh.load_state_dict(saved)
        again = fresh.state_dict()
        for key in ("learn.qs_prev0.agents", "learn.qs_prev0.rows", "learn.pB0.values"):
            np.testing.assert_array_equal(again[key], state[key])
        o = obs.copy()
        for g in (group, fresh):
            g.step(o)
        pB, pB_fresh = group.learning.learner.pB, fresh.learning.learner.pB
        assert pB is not None
        assert pB_fresh is not None
        np.testing.assert_array_equal(pB_fresh.counts[0], pB.counts[0])
        group.load_state_dict(state)  # back to the saved state for the next form


def test_saved_rows_that_do_not_fit_are_one_line() -> None:
    out = np.zeros((3, 2))
    state = {"qs0": np.ones((3, 2)), "p.agents": np.array([7], dtype=np.uint32),
             "p.rows": np.zeros((1, 2))}
    with pytest.raises(InputError, match=r"g: p: the saved rows do not fit shape \(3, 2\)"):
        saved_rows(state, "p", "qs0", out, where="g")
    assert not saved_rows({}, "p", "qs0", out, where="g")
    arrays = rows_arrays("p", np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]), np.eye(3, 2))
    np.testing.assert_array_equal(arrays["p.agents"], [1, 2])
    assert saved_rows({"qs0": np.eye(3, 2), **arrays}, "p", "qs0", out, where="g")
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
