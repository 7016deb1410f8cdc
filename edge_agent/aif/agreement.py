"""Tie-aware agreement of actions chosen by two computation paths.

Two paths that compute the same maths (the float64 reference and the fast path, float32 and
float64, int8 and float, edge-agent and pymdp) agree up to rounding, not bit for bit. Where two
actions are equally good, ``argmax`` picks one on noise of order 1e-16, so comparing the chosen
actions with ``==`` reports a disagreement where there is none: on a symmetric grid two or more
moves tie in most steps.

So an action chosen by one path *agrees* with another path when that other path rates it
optimal, within a stated tolerance, under its own posterior:

* ``marginal`` selection (pymdp's default): per factor, the other path's action marginal
  ``p_f = q_pi @ onehot_f`` of the chosen action is within ``tol`` of its best,
  ``max(p_f) - p_f[a_f] <= tol``;
* ``full`` selection: the best posterior probability among the policies whose first step is the
  chosen action is within ``tol`` of the best policy's.

The *shortfall* is that gap (0 for the other path's own argmax). ``tol`` is in probability units
of the other path's posterior; a path that really behaves differently shows shortfalls of the
order of the posterior's spread, far above rounding.

Pure functions of arrays; ``first_action_onehot[f]`` is ``(P, U_f)`` (``PolicyTree``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from edge_agent.errors import InputError

#: Default tolerance for paths that differ only by rounding (float32 vs float64, block sizes,
#: summation order): posteriors agree to ~1e-6, so a gap below this is a tie.
ROUNDING_TOL = 1e-5


def action_marginals(
    q_pi: np.ndarray, first_action_onehot: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per factor, the posterior over the next action: ``(N, U_f)`` from ``q_pi (N, P)``."""
    q = np.asarray(q_pi, dtype=np.float64)
    out = []
    for onehot in first_action_onehot:
        m = q @ np.asarray(onehot, dtype=np.float64)
        m /= np.maximum(m.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        out.append(m)
    return out


def action_shortfall(
    q_pi: np.ndarray,
    first_action_onehot: Sequence[np.ndarray],
    actions: np.ndarray,
    *,
    mode: Literal["marginal", "full"] = "marginal",
) -> np.ndarray:
    """How far below its best the posterior ``q_pi (N, P)`` rates ``actions (N, F)``: ``(N,)``,
    the largest gap over factors (``marginal``) or the policy gap (``full``); 0 where the
    actions are the posterior's own choice."""
    q = np.asarray(q_pi, dtype=np.float64)
    acts = np.asarray(actions)
    if q.ndim != 2:
        raise InputError(f"q_pi has shape {q.shape}, expected (N, P)")
    n, P = q.shape
    F = len(first_action_onehot)
    if acts.shape != (n, F):
        raise InputError(f"actions have shape {acts.shape}, expected ({n}, {F})")
    rows = np.arange(n)
    if mode == "marginal":
        gap = np.zeros(n)
        for f, m in enumerate(action_marginals(q, first_action_onehot)):
            if np.any((acts[:, f] < 0) | (acts[:, f] >= m.shape[1])):
                raise InputError(f"actions of factor {f} outside 0..{m.shape[1] - 1}")
            np.maximum(gap, m.max(axis=1) - m[rows, acts[:, f]], out=gap)
        return gap
    if mode != "full":
        raise InputError(f"mode must be 'marginal' or 'full', got {mode!r}")
    # Policies whose first step is each agent's chosen action on every factor.
    match = np.ones((n, P), dtype=bool)
    for f, onehot in enumerate(first_action_onehot):
        first = np.argmax(np.asarray(onehot), axis=1)  # (P,) first action of each policy
        match &= first[None, :] == acts[:, f : f + 1]
    best_matching = np.where(match, q, -np.inf).max(axis=1)
    return np.asarray(q.max(axis=1) - best_matching)


def actions_agree(
    q_pi: np.ndarray,
    first_action_onehot: Sequence[np.ndarray],
    actions: np.ndarray,
    *,
    tol: float = ROUNDING_TOL,
    mode: Literal["marginal", "full"] = "marginal",
) -> np.ndarray:
    """``(N,)`` bool: ``actions`` are optimal within ``tol`` under the posterior ``q_pi``."""
    if not tol >= 0:
        raise InputError(f"tol must be >= 0, got {tol}")
    return np.asarray(action_shortfall(q_pi, first_action_onehot, actions, mode=mode) <= tol)


def count_ties(
    q_pi: np.ndarray, first_action_onehot: Sequence[np.ndarray], *, tol: float = ROUNDING_TOL
) -> np.ndarray:
    """``(N,)`` bool: agents for which some factor has two or more actions within ``tol`` of
    the best marginal, i.e. where argmax breaks a tie."""
    tied = np.zeros(np.asarray(q_pi).shape[0], dtype=bool)
    for m in action_marginals(q_pi, first_action_onehot):
        near = m >= m.max(axis=1, keepdims=True) - tol
        tied |= near.sum(axis=1) > 1
    return tied


def draw_agrees(
    probs: np.ndarray, u: np.ndarray, chosen: np.ndarray, *, tol: float = ROUNDING_TOL
) -> np.ndarray:
    """Tie-aware agreement of *sampled* choices made with the same uniform draws.

    Inverse-CDF sampling picks index ``k`` when ``cdf[k-1] <= u < cdf[k]``. Another path whose
    probabilities differ by rounding may move a boundary across ``u``; its choice agrees when
    ``u`` lies within ``tol`` of the interval that ``probs (N, K)`` gives one of its candidates.
    ``u (N,)`` are the draws in ``[0, 1)``; ``chosen (N, K)`` bool marks, per row, the indices
    that count as the other path's choice (one per row, or several when different indices lead
    to the same action, as policies that share a first step). Returns ``(N,)`` bool.
    """
    p = np.asarray(probs, dtype=np.float64)
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    lower = np.concatenate([np.zeros((p.shape[0], 1)), cdf[:, :-1]], axis=1)
    uu = np.asarray(u, dtype=np.float64).reshape(-1, 1)
    inside = (lower - tol <= uu) & (uu <= cdf + tol)
    return np.asarray((inside & np.asarray(chosen, dtype=bool)).any(axis=1))


def choice_agrees(scores: np.ndarray, chosen: np.ndarray, *, tol: float) -> np.ndarray:
    """``(N,)`` bool: ``chosen (N,)`` indices score within ``tol`` of the best of ``scores
    (N, K)`` (logits, probabilities, utilities): the argmax of a neural policy or classifier
    computed by another path agrees when this path rates it optimal to rounding."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(chosen)
    if s.ndim != 2 or c.shape != (s.shape[0],):
        raise InputError(f"scores {s.shape} and chosen {c.shape} must be (N, K) and (N,)")
    return np.asarray(s[np.arange(s.shape[0]), c] >= s.max(axis=1) - tol)


def argmax_agreement_bounds(
    a: np.ndarray, b: np.ndarray, *, tol_a: float, tol_b: float
) -> tuple[float, float]:
    """The fraction of rows on which the argmaxes of ``a (N, K)`` and ``b (N, K)`` agree, for
    every way rounding can break their near-ties: ``(lowest, highest)``.

    ``a`` and ``b`` are computed by paths equal to those behind a reported rate only up to
    rounding (another runtime, session options or summation order); a rate reported by those
    paths lies in this range. A row surely agrees when ``a`` and ``b`` each have one index
    within their tolerance of the row's best and it is the same index; it may agree when some
    index is within tolerance of the best in both. Without near-ties both bounds equal the
    plain ``mean(argmax(a) == argmax(b))``. Labels are ``b = eye(K)[labels]`` with
    ``tol_b = 0``.
    """
    sa, sb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if sa.ndim != 2 or sa.shape != sb.shape:
        raise InputError(f"a {sa.shape} and b {sb.shape} must be the same (N, K)")
    if not (tol_a >= 0 and tol_b >= 0):
        raise InputError(f"tolerances must be >= 0, got {tol_a}, {tol_b}")
    near_a = sa >= sa.max(axis=1, keepdims=True) - tol_a
    near_b = sb >= sb.max(axis=1, keepdims=True) - tol_b
    both = near_a & near_b
    sure = (near_a.sum(axis=1) == 1) & (near_b.sum(axis=1) == 1) & both.any(axis=1)
    return float(np.mean(sure)), float(np.mean(both.any(axis=1)))
