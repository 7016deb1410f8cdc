"""State inference on the general path: the posterior per factor from observations and a prior.

Part of :mod:`edge_agent.aif.kernels`. The general path works on agent-major ``(n_agents, ...)``
arrays and allocates its results; it is short and readable, and the unit tests use it as the
yardstick for the fast paths. The maths is pymdp 0.0.7.1's, rearranged for batches:

* single-factor inference ``softmax(ln(L + eps) + ln(prior + eps))`` is computed as the
  equivalent normalised product ``(L + eps) * (prior + eps) / Z``;
* multi-factor inference runs pymdp's simultaneous fixed-point updates with a per-agent
  convergence mask, so each agent stops exactly when pymdp would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    prev = _free_energy(qs, log_prior, None)
    dF = np.ones(N, dtype=dtype)
    tiny = np.finfo(dtype).tiny
    for _ in range(num_iter):
        active = dF >= dF_tol
        if not active.any():
            break
        weighted = lnL * outer_rows(qs)
        new = []
        for f in range(F):
            others = tuple(1 + i for i in range(F) if i != f)
            qL = weighted.sum(axis=others) / np.maximum(qs[f], tiny)
            new.append(softmax_rows(qL + log_prior[f]))
        vfe = _free_energy(new, log_prior, lnL)
        qs = [np.where(active[:, None], n, o) for n, o in zip(new, qs, strict=True)]
        dF = np.where(active, np.abs(prev - vfe), dF)
        prev = np.where(active, vfe, prev)
    return qs


def outer_rows(qs: list[np.ndarray]) -> np.ndarray:
    """Joint ``(N, S_0, ..., S_{F-1})`` from per-factor ``(N, S_f)`` (any leading dims work)."""
    joint = qs[0]
    for q in qs[1:]:
        lead = q.shape[:-1] + (1,) * (joint.ndim - q.ndim + 1)
        joint = joint[..., None] * q.reshape(lead + q.shape[-1:])
    return joint


def _free_energy(
    qs: list[np.ndarray], log_prior: list[np.ndarray], lnL: np.ndarray | None
) -> np.ndarray:
    vfe = np.zeros(qs[0].shape[0], dtype=qs[0].dtype)
    for q, lp in zip(qs, log_prior, strict=True):
        vfe += (q * np.log(q + EPS)).sum(axis=1) - (q * lp).sum(axis=1)
    if lnL is not None:
        vfe -= (outer_rows(qs) * lnL).reshape(lnL.shape[0], -1).sum(axis=1)
    return vfe
