"""The incremental refresh of a learned ``B`` (issue 45: "a refresh brings into the compiled
tables only what moved, ``B`` included"): past a table's first refresh, a shared group brings a
factor's touched columns into its compiled tables without a compile
(``kernels.refresh_transitions``, through ``refresh_touched_transitions``): the factor's
transitions and what they give (the fast path's propagation, the agent-major tables, the local,
small-block and joint planners' transition tables) are made again, the rest kept. What it gives
equals ``compile_model`` of the same model up to rounding, table by table, int8 and float64; a
transition whose structure moves, a joint planner whose distinct nodes change and a deep planner
take the full compile."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.kernels.transitions import SparseTransition, source_rows
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import encode_transition, reencode_columns
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.registry import builtin_model, make_env
from tests.unit.aif.kernels.test_compiled import (
    assert_same_tables,
    learned_counts,
    steps_checking_refreshes,
)


def transition_prior(model: GenerativeModel, support: str) -> np.ndarray:
    """``pB0`` for ``model``: ``dense`` a count on every entry (the learned ``B`` is dense),
    ``slip`` counts on the move's target and on staying where the agent is (two targets a
    column: sparse, as a slippery floor), ``reach`` on every target some action reaches from the
    column's state."""
    B = model.B[0]
    if support == "dense":
        return B * 2.0 + 0.5
    if support == "slip":
        stay = next(u for u in range(B.shape[2]) if np.array_equal(B[:, :, u], np.eye(len(B))))
        return B * 2.0 + 0.5 * np.maximum(B > 0, B[:, :, stay : stay + 1] > 0)
    reach = B.sum(axis=2, keepdims=True) > 0
    return B * 2.0 + 0.5 * np.broadcast_to(reach, B.shape)


#: (world, the learned B's support, whether A is learned too, what the compiled model has):
#: every planner that holds transition tables, with dense and sparse transitions.
CASES = [
    ("grid10", "dense", False, {"trans": "DenseTransition", "small": True}),
    ("grid10", "slip", True, {"trans": "SparseTransition", "local": True, "small": True}),
    ("tmaze", "dense", True, {"trans": "DenseTransition", "joint": True}),
    ("grid2f", "reach", False, {"trans": "SparseTransition", "joint": True}),
    # the issue-58 learner that does not know where its moves take it: every neighbour's column
    ("grid10", "reach", False, {"trans": "SparseTransition", "small": True}),
]


@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize(("world", "support", "with_a", "has"), CASES,
                         ids=[f"{c[0]}-{c[1]}{'-A' if c[2] else ''}" for c in CASES])
def test_a_learned_transition_refreshes_without_a_compile(
    world: str, support: str, with_a: bool, has: dict[str, Any], *, precision: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shared group learning ``B0`` (and ``A`` in some cases) refreshed every tick, pymdp's
    cadence, on the numpy stages (a float64 one steps the compiled pass otherwise, which
    brings its tables in only when read: test_native_pass): every refresh after the first
    learned one is incremental, and after each the group's compiled model equals
    ``compile_model`` of the model it now infers with (int8: its codes), table by table; the
    tables a plain group on the same model steps with (those the learning group was loaded
    with) are untouched."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    n = 8
    model = builtin_model(world)
    plain = AifAgentGroup(model, n, precision=precision)
    loaded = plain.cm.transitions
    before = [kernels.propagate(t, np.eye(s), u).copy()
              for t, s, U in zip(loaded, model.num_states, model.num_controls, strict=True)
              for u in range(U)]  # fmt: skip
    spec = LearningSpec(
        pA=learned_counts(model, (0,)) if with_a else None,
        pB={0: transition_prior(model, support)},
        refresh_every=1,
        settings=LearningSettings(lr_pA=1.0, lr_pB=1.0),
    )
    group = AifAgentGroup(model, n, learning=spec, precision=precision)
    checked = steps_checking_refreshes(group, make_env(world, n, seed=3), 8)
    # tick 0 has no transition to learn from, tick 1 is B's first refresh: both compile
    assert (group.learning.refreshes, group.learning.incremental_refreshes, checked) == (8, 6, 6)
    cm = group.cm
    assert type(cm.transitions[0]).__name__ == has["trans"]
    for planner in ("local", "small", "joint"):
        assert (getattr(cm, planner) is not None) == has.get(planner, False), planner
    after = [kernels.propagate(t, np.eye(s), u)
             for t, s, U in zip(loaded, model.num_states, model.num_controls, strict=True)
             for u in range(U)]  # fmt: skip
    for mine, theirs in zip(before, after, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def with_transitions(model: GenerativeModel, B: np.ndarray) -> GenerativeModel:
    return GenerativeModel.from_arrays(model.A, [B], model.C, model.D)


def _normalised(B: np.ndarray) -> np.ndarray:
    out: np.ndarray = B / B.sum(axis=0, keepdims=True)
    return out


def test_a_transition_of_another_structure_is_refused() -> None:
    """Dense for sparse, or a sparse table with other non-zeros: the slots and scratch follow
    the structure, so the refresh gives None (the caller compiles); nothing changed gives the
    compiled model itself."""
    model = builtin_model("grid10")
    slip = _normalised(transition_prior(model, "slip"))
    policies = construct_policies(model.num_controls, 1)
    cm = kernels.compile_model(with_transitions(model, slip), policies)
    assert cm.local is not None
    assert kernels.refresh_transitions(cm, [None]) is cm
    for other in (_normalised(transition_prior(model, "dense")),
                  _normalised(transition_prior(model, "reach"))):  # fmt: skip
        assert kernels.refresh_transitions(cm, [kernels.make_transition(other, np.float64)]) is None
    # the same support with other weights: refreshed, equal to the compile
    reweighted = _normalised(slip * np.random.default_rng(0).uniform(0.5, 2.0, slip.shape))
    mine = kernels.refresh_transitions(cm, [kernels.make_transition(reweighted, np.float64)])
    assert mine is not None
    assert_same_tables(mine, kernels.compile_model(with_transitions(model, reweighted), policies),
                       "cm", 1e-12)  # fmt: skip


def test_a_joint_planner_whose_nodes_change_and_a_deep_planner_are_refused() -> None:
    """Two actions that predict alike are one node of the joint planner; a learned ``B`` that
    tells them apart changes its nodes (and its scratch): None. A deep planner (policies of two
    steps) is built for deterministic transitions: None too."""
    eye3 = np.eye(3)[:, :, None]
    B0 = np.concatenate([eye3, eye3, np.roll(np.eye(3), 1, axis=0)[:, :, None]], axis=2)
    B1 = np.eye(2)[:, :, None]
    A = np.eye(6).reshape(6, 3, 2)
    model = GenerativeModel.from_arrays([A], [B0, B1], [np.arange(6.0)],
                                        [np.full(3, 1 / 3), np.full(2, 0.5)])  # fmt: skip
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1))
    assert cm.joint is not None
    assert cm.joint.factor_nodes[0] == 2  # actions 0 and 1: one node
    apart = B0.copy()
    apart[:, :, 1] = 0.9 * eye3[:, :, 0] + 0.1 / 3
    apart = _normalised(apart)
    assert kernels.refresh_transitions(cm, [kernels.make_transition(apart, np.float64), None]) \
        is None  # fmt: skip
    grid = builtin_model("grid10")
    deep = kernels.compile_model(grid, construct_policies(grid.num_controls, 2))
    assert deep.deep is not None
    same = kernels.make_transition(grid.B[0], np.float64)
    assert kernels.refresh_transitions(deep, [same]) is None


def _same_layers(mine: SparseTransition, theirs: SparseTransition) -> None:
    assert (mine.num_states, mine.full_first) == (theirs.num_states, theirs.full_first)
    assert [len(per_u) for per_u in mine.layers] == [len(per_u) for per_u in theirs.layers]
    for a, b in zip(mine.layers, theirs.layers, strict=True):
        for (t0, s0, w0), (t1, s1, w1) in zip(a, b, strict=True):
            np.testing.assert_array_equal(t0, t1)
            np.testing.assert_array_equal(s0, s1)
            assert (w0 is None) == (w1 is None)
            if w0 is not None:
                assert w0.dtype == w1.dtype
                np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("form", ["float", "int8"])
def test_a_sparse_transition_reweighted_in_its_moved_columns_is_make_transitions(
    form: str, dtype: type[np.floating]
) -> None:
    """Moved columns that keep their non-zeros: only their entries' weights are read again, and
    the layers equal :func:`make_transition` of the whole new table (targets, sources, weights
    and which layers are all ones, exactly); a moved column with other non-zeros gives the
    whole make (another structure, which the refresh then refuses)."""
    model = builtin_model("grid10")
    old_B = _normalised(transition_prior(model, "reach"))
    rng = np.random.default_rng(1)
    moved = np.zeros(old_B.shape[1:], dtype=bool)
    moved[rng.choice(old_B.shape[1], 7, replace=False), rng.integers(0, old_B.shape[2], 7)] = True
    new_B = old_B.copy()
    new_B[:, moved] = _normalised(old_B[:, moved] * rng.uniform(0.5, 2.0, old_B[:, moved].shape))
    if form == "int8":
        old_src: Any = encode_transition(old_B)
        new_src: Any = encode_transition(old_B)
        reencode_columns(new_src, new_B, moved)
    else:
        old_src, new_src = old_B, new_B
    old = kernels.make_transition(old_src, dtype)
    assert isinstance(old, SparseTransition)
    mine = kernels.refreshed_transition(old, new_src, moved, dtype)
    assert isinstance(mine, SparseTransition)
    _same_layers(mine, kernels.make_transition(new_src, dtype))  # type: ignore[arg-type]
    # its structure is old's own arrays: the refresh's structure check is a look
    assert all(t0 is t1 for a, b in zip(mine.layers, old.layers, strict=True)
               for (t0, _, _), (t1, _, _) in zip(a, b, strict=True))  # fmt: skip
    again = kernels.refreshed_transition(mine, new_src, moved, dtype)  # entries carried over
    _same_layers(again, kernels.make_transition(new_src, dtype))  # type: ignore[arg-type]
    if form == "float":  # a moved column with one more non-zero: made whole
        wider = new_B.copy()
        s, u = np.argwhere(moved)[0]
        zero = np.flatnonzero(wider[:, s, u] == 0)[0]
        wider[zero, s, u] = 0.1
        wider[:, s, u] /= wider[:, s, u].sum()
        made = kernels.refreshed_transition(old, wider, moved, dtype)
        assert isinstance(made, SparseTransition)
        _same_layers(made, kernels.make_transition(wider, dtype))  # type: ignore[arg-type]
        assert (
            kernels.refresh_transitions(
                kernels.compile_model(
                    with_transitions(model, old_B), construct_policies(model.num_controls, 1)
                ),
                [made],
            )
            is None
        )


def test_source_rows_are_what_propagate_gives_a_one_hot() -> None:
    model = builtin_model("grid10")
    B = _normalised(transition_prior(model, "reach"))
    trans = kernels.make_transition(B, np.float64)
    assert isinstance(trans, SparseTransition)
    sources = np.array([0, 5, 42, 99])
    for u in range(B.shape[2]):
        np.testing.assert_array_equal(
            source_rows(trans, sources, u), kernels.propagate(trans, np.eye(B.shape[0])[sources], u)
        )


def test_a_refresh_reads_again_which_joint_nodes_predict_alike() -> None:
    """grid2f at two steps: its moves commute, so the fast path merges 8 of the 25 second-step
    joint nodes; a learned ``B`` of the same support whose moves no longer commute merges none
    after the refresh, as the compile of that model does."""
    model = builtin_model("grid2f")
    policies = construct_policies(model.num_controls, 2)
    def with_b0(B0: np.ndarray) -> GenerativeModel:
        return GenerativeModel.from_arrays(model.A, [B0, model.B[1]], model.C, model.D)

    reach = _normalised(transition_prior(model, "reach"))
    cm = kernels.compile_model(with_b0(reach), policies)
    skewed = _normalised(reach * np.random.default_rng(1).uniform(0.5, 2.0, reach.shape))
    compiled = kernels.compile_model(with_b0(skewed), policies)
    mine = kernels.refresh_transitions(cm, [kernels.make_transition(skewed, np.float64), None])
    assert mine is not None  # the same support: refreshed, no compile
    assert [d.num_joint for d in mine.fast.depths] == [d.num_joint for d in compiled.fast.depths]
    assert [d.num_joint for d in compiled.fast.depths] == [5, 25]
    original = kernels.compile_model(model, policies)
    assert [d.num_joint for d in original.fast.depths] == [5, 17]
