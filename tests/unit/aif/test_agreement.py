"""Tie-aware agreement (``edge_agent.aif.agreement``): ties agree, real differences do not."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import agreement, kernels
from edge_agent.aif.policies import construct_policies
from edge_agent.errors import InputError
from edge_agent.sim.gridworld import gridworld_model


def grid_tree(policy_len: int) -> tuple[kernels.CompiledModel, tuple[np.ndarray, ...]]:
    model = gridworld_model(4, 4)
    cm = kernels.compile_model(model, construct_policies(model.num_controls, policy_len))
    return cm, cm.tree.first_action_onehot


@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("mode", ["marginal", "full"])
def test_own_choice_has_no_shortfall_and_others_do(policy_len: int, mode: str) -> None:
    cm, onehot = grid_tree(policy_len)
    q_pi = np.random.default_rng(0).dirichlet(np.ones(cm.num_policies) * 0.5, size=50)
    own = kernels.select_actions(
        cm, q_pi, mode=mode, deterministic=True, alpha=16.0, rng=np.random.default_rng(0)
    )
    gap = agreement.action_shortfall(q_pi, onehot, own, mode=mode)  # type: ignore[arg-type]
    np.testing.assert_array_equal(gap, 0.0)
    other = (own + 1) % 5
    gap = agreement.action_shortfall(q_pi, onehot, other, mode=mode)  # type: ignore[arg-type]
    assert (gap > 1e-3).mean() > 0.9, "random posteriors separate actions well"
    agree = agreement.actions_agree(q_pi, onehot, other, mode=mode)  # type: ignore[arg-type]
    assert agree.mean() < 0.1, "a genuinely different action disagrees"


def test_an_exact_tie_agrees_either_way() -> None:
    _, onehot = grid_tree(1)
    q_pi = np.array([[0.4, 0.4 + 1e-16, 0.1, 0.05, 0.05]])
    for action in (0, 1):
        assert agreement.actions_agree(q_pi, onehot, np.array([[action]])).all()
    assert not agreement.actions_agree(q_pi, onehot, np.array([[2]])).any()
    assert agreement.count_ties(q_pi, onehot).tolist() == [True]
    assert agreement.count_ties(np.array([[0.5, 0.3, 0.1, 0.05, 0.05]]), onehot).tolist() == [
        False
    ]


def test_draws_agree_when_the_draw_is_near_a_boundary_only() -> None:
    probs = np.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]])
    u = np.array([0.25 + 1e-9, 0.4])
    chose_first = np.array([[True, False, False], [True, False, False]])
    # u just above the first boundary: index 0 is a rounding tie; u = 0.4 is squarely index 1.
    assert agreement.draw_agrees(probs, u, chose_first).tolist() == [True, False]
    chose_second = np.array([[False, True, False], [False, True, False]])
    assert agreement.draw_agrees(probs, u, chose_second).tolist() == [True, True]


def test_choice_agrees_within_tolerance() -> None:
    scores = np.array([[1.0, 1.0 - 1e-9, 0.0], [1.0, 0.5, 0.0]])
    assert agreement.choice_agrees(scores, np.array([1, 1]), tol=1e-6).tolist() == [True, False]


def test_shapes_are_checked_at_the_boundary() -> None:
    _, onehot = grid_tree(1)
    with pytest.raises(InputError, match="actions have shape"):
        agreement.action_shortfall(np.full((3, 5), 0.2), onehot, np.zeros((2, 1), dtype=int))
    with pytest.raises(InputError, match="outside"):
        agreement.action_shortfall(np.full((1, 5), 0.2), onehot, np.array([[7]]))
    with pytest.raises(InputError, match="tol"):
        agreement.actions_agree(np.full((1, 5), 0.2), onehot, np.array([[0]]), tol=-1.0)


def test_argmax_agreement_bounds_widen_only_at_near_ties() -> None:
    a = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0 + 1e-9, 0.0], [0.0, 1.0, 5.0]])
    b = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 2.0, 1.0], [0.0, 1.0, 5.0]])
    # Row 0 agrees, row 1 genuinely differs, row 2 is a tie in ``a`` (either index), row 3 agrees.
    assert agreement.argmax_agreement_bounds(a, b, tol_a=1e-6, tol_b=1e-6) == (0.5, 0.75)
    # No tolerance: both bounds are the plain rate (row 2: 1 + 1e-9 wins exactly).
    exact = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    assert agreement.argmax_agreement_bounds(a, b, tol_a=0.0, tol_b=0.0) == (exact, exact)
    # Against labels: ``a``'s tie may go to the label or not; ``b``'s wrong row 1 never counts.
    labels = np.eye(3)[[0, 1, 1, 2]]
    low, high = agreement.argmax_agreement_bounds(a, labels, tol_a=1e-6, tol_b=0.0)
    assert (low, high) == (0.75, 1.0)
    low, high = agreement.argmax_agreement_bounds(b, labels, tol_a=1e-6, tol_b=0.0)
    assert (low, high) == (0.75, 0.75)
    with pytest.raises(InputError, match="same"):
        agreement.argmax_agreement_bounds(a, b[:2], tol_a=0.0, tol_b=0.0)
    with pytest.raises(InputError, match="tolerances"):
        agreement.argmax_agreement_bounds(a, b, tol_a=-1.0, tol_b=0.0)
