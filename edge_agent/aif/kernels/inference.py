"""State inference on the general path: the posterior per factor from observations and a prior.

Part of :mod:`edge_agent.aif.kernels`. The general path works on agent-major ``(n_agents, ...)``
arrays and allocates its results; it is short and readable, and the unit tests use it as the
yardstick for the fast paths. The maths is pymdp 0.0.7.1's, rearranged for batches:

* single-factor inference ``softmax(ln(L + eps) + ln(prior + eps))`` is computed as the
  equivalent normalised product ``(L + eps) * (prior + eps) / Z``;
* multi-factor inference runs pymdp's simultaneous fixed-point updates with a per-agent
  convergence mask, so each agent stops exactly when pymdp would (:func:`fixed_point`, which
  the per-agent kernels of :mod:`edge_agent.aif.per_agent` call too).

:func:`free_energy` is the one numpy implementation of pymdp's variational free energy, in any
layout and into the caller's buffers: every numpy path's stop (this fixed point, the fast
path's, the joint path's) and the health measures call it; beside it are only the float64
oracle's (:func:`edge_agent.aif.reference.free_energy`) and the compiled tick's
(``native/tick.c``). :func:`softmax_rows` and :func:`joint_rows` are the agent-major softmax and
joint every agent-major caller uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.aif.constants import EPS

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel


# --------------------------------------------------------------------------------------------
# state inference
# --------------------------------------------------------------------------------------------
def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    out: np.ndarray = x - x.max(axis=-1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def likelihood(cm: CompiledModel, obs: np.ndarray) -> np.ndarray:
    """``prod_m A[m][obs[:, m]]`` over the joint state: ``(N, S_joint)``."""
    L: np.ndarray = cm.A_rows[0][obs[:, 0]]
    for m in range(1, cm.num_modalities):
        L = L * cm.A_rows[m][obs[:, m]]
    return L


def soft_likelihood(cm: CompiledModel, soft: list[np.ndarray]) -> np.ndarray:
    """``prod_m sum_o p_m(o) A[m][o]`` over the joint state, ``(N, S_joint)``, from soft evidence
    ``soft[m] (N, O_m)`` (a distribution over each modality's outcomes; pymdp's ``distr_obs``)."""
    L: np.ndarray = soft[0] @ cm.A_rows[0]
    for m in range(1, cm.num_modalities):
        L = L * (soft[m] @ cm.A_rows[m])
    return L


def infer_states(
    cm: CompiledModel,
    obs: np.ndarray | None,
    prior: list[np.ndarray],
    *,
    num_iter: int,
    dF_tol: float,
    soft: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Posterior per factor, ``(N, S_f)`` each, from ``obs (N, M)`` (or soft evidence ``soft``,
    see :func:`soft_likelihood`) and a prior per factor."""
    if soft is not None:
        L = soft_likelihood(cm, soft)
    elif obs is not None:
        L = likelihood(cm, obs)
    else:
        raise ValueError("infer_states needs obs or soft evidence")
    if cm.num_factors == 1:
        q = (L + EPS) * (prior[0] + EPS)
        q /= q.sum(axis=1, keepdims=True)
        return [q]
    N = L.shape[0]
    lnL = np.log(L + EPS).reshape(N, *cm.num_states)
    log_prior = [np.log(p + EPS) for p in prior]
    return fixed_point(lnL, log_prior, num_iter=num_iter, dF_tol=dF_tol)


def fixed_point(
    lnL: np.ndarray, log_prior: list[np.ndarray], *, num_iter: int, dF_tol: float
) -> list[np.ndarray]:
    """pymdp's ``run_vanilla_fpi`` for a batch: simultaneous mean-field updates per agent.

    ``lnL``: ``(N, S_0, ..., S_{F-1})`` log joint likelihood; ``log_prior[f]``: ``(N, S_f)``.
    Agents whose free energy changed by less than ``dF_tol`` stop updating, as pymdp's loop does.
    """
    N = lnL.shape[0]
    F = lnL.ndim - 1
    dtype = lnL.dtype
    qs = [np.full((N, lnL.shape[f + 1]), 1.0 / lnL.shape[f + 1], dtype=dtype) for f in range(F)]
    lp = np.concatenate(log_prior, axis=1)  # every factor's side by side, as the beliefs
    flat = lnL.reshape(N, -1)
    prev = free_energy(np.concatenate(qs, axis=1), lp, axis=1)
    dF = np.ones(N, dtype=dtype)
    tiny = np.finfo(dtype).tiny
    for _ in range(num_iter):
        active = dF >= dF_tol
        if not active.any():
            break
        weighted = lnL * joint_rows(qs).reshape(lnL.shape)
        new = []
        for f in range(F):
            others = tuple(1 + i for i in range(F) if i != f)
            qL = weighted.sum(axis=others) / np.maximum(qs[f], tiny)
            new.append(softmax_rows(qL + log_prior[f]))
        vfe = free_energy(np.concatenate(new, axis=1), lp, joint_rows(new), flat, axis=1)
        qs = [np.where(active[:, None], n, o) for n, o in zip(new, qs, strict=True)]
        dF = np.where(active, np.abs(prev - vfe), dF)
        prev = np.where(active, vfe, prev)
    return qs


def joint_rows(qs: Sequence[np.ndarray]) -> np.ndarray:
    """The joint ``(..., S_0 * ... * S_{F-1})`` of per-factor beliefs ``qs[f]`` ``(..., S_f)``
    (any leading dims, the same for every factor), last factor fastest: the layout of the
    joint states everywhere (``A_rows``' columns)."""
    joint = qs[0]
    for q in qs[1:]:
        joint = (joint[..., None] * q[..., None, :]).reshape((*q.shape[:-1], -1))
    return joint


def free_energy(
    q: np.ndarray,
    log_prior: np.ndarray,
    joint: np.ndarray | None = None,
    log_lik: np.ndarray | None = None,
    *,
    axis: int = -1,
    eps: Any = EPS,
    out: np.ndarray | None = None,
    complexity: np.ndarray | None = None,
    work: np.ndarray | None = None,
    weighted: np.ndarray | None = None,
    accuracy: np.ndarray | None = None,
) -> np.ndarray:
    """pymdp's ``calc_free_energy`` of every agent: the one numpy implementation, which the
    general path, the per-agent kernels, the fast path's fixed point and the health measures
    call (beside it: the float64 oracle's, :mod:`edge_agent.aif.reference`, and the compiled
    tick's, ``native/tick.c``).

    The complexity ``sum q (ln(q + eps) - ln prior)`` over every factor's states, each factor's
    beliefs ``q`` and log prior ``log_prior`` side by side along ``axis``, less (``log_lik``
    given) the accuracy ``sum_s joint(s) log_lik(s)`` over the joint states, along the same
    axis: any layout, the agents along the other axis (agent-major ``(N, sum S_f)`` with
    ``axis=1``, the fast path's state-major ``(sum S_f, nb)`` with ``axis=0``). Into ``out``
    when given; ``complexity``: the complexity alone there too (without ``log_lik`` it is the
    result); ``work`` (like ``q``), ``weighted`` (like ``joint``: left holding ``joint *
    log_lik``) and ``accuracy`` (like ``out``) are scratch a caller gives to allocate
    nothing."""
    t = np.add(q, eps, out=work)
    np.log(t, out=t)
    np.subtract(t, log_prior, out=t)
    np.multiply(q, t, out=t)
    kl: np.ndarray = np.add.reduce(t, axis=axis, out=out if complexity is None else complexity)
    if log_lik is None:
        return kl
    assert joint is not None
    w = np.multiply(joint, log_lik, out=weighted)
    fit = np.add.reduce(w, axis=axis, out=accuracy)
    result: np.ndarray = np.subtract(kl, fit, out=kl if complexity is None else out)
    return result
