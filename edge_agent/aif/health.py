"""Pure batched kernels of a group's health measures (``docs/health.md``): how well the agents'
model predicted what they observed, and what their beliefs did with it.

Every function takes its arrays and returns one value per agent, ``(r,)`` float64 over the ``r``
agents it is given (a group's sampled rows: :class:`~edge_agent.core.health.AifHealth` picks
them); no state, no I/O. Shapes:

- ``prior[f]``, ``qs[f]``: ``(r, S_f)`` the beliefs about factor ``f`` before the observation
  (the prior predictive's states) and after it (the posterior);
- ``joint``: ``(r, S)`` the product of the factors' beliefs, C order (last factor fastest);
- ``A[m]``: ``(O_m, S)`` one likelihood for every agent (a compiled model's ``A_rows``), or
  ``(r, O_m, S)`` each agent's own (per-agent learning);
- ``obs``: ``(r, M)`` integer outcomes; ``p_o[m]``: ``(r, O_m)`` the predicted outcome
  distribution ``p(o_m) = sum_s A_m(o_m | s) prior(s)``.

Logs take pymdp's ``EPS`` inside (``ln(p + EPS)``), as the inference does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.aif.constants import EPS

__all__ = [
    "belief_change",
    "entropy",
    "expected_log_likelihood",
    "free_energy",
    "joint_beliefs",
    "outcome_entropy",
    "predicted_outcomes",
    "preference",
    "surprise",
]


def joint_beliefs(qs: Sequence[np.ndarray]) -> np.ndarray:
    """``(r, S)`` float64: the outer product of the factors' beliefs ``qs[f] (r, S_f)`` per
    agent, C order over factors (the layout of ``A_rows``' columns)."""
    joint = np.asarray(qs[0], dtype=np.float64)
    r = joint.shape[0]
    for q in qs[1:]:
        joint = (joint[:, :, None] * np.asarray(q, dtype=np.float64)[:, None, :]).reshape(r, -1)
    return joint


def predicted_outcomes(A: Sequence[np.ndarray], joint: np.ndarray) -> list[np.ndarray]:
    """``p(o_m)`` per agent and modality, ``(r, O_m)`` float64: ``A_m (O_m, S) @ joint`` (or
    each agent's own ``A_m (r, O_m, S)``), summed in ``A``'s dtype (a float32 model's table is
    not copied to float64: the sample's beliefs are cast to it instead)."""
    out: list[np.ndarray] = []
    for a in A:
        q = joint if joint.dtype == a.dtype else joint.astype(a.dtype)
        p = q @ a.T if a.ndim == 2 else np.einsum("ros,rs->ro", a, q)
        out.append(np.asarray(p, dtype=np.float64))
    return out


def surprise(p_o: Sequence[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """``-sum_m ln p(o_m)``: each agent's surprise (nats) of its outcomes under the outcome
    distributions it predicted, the modalities' surprises added up."""
    r = obs.shape[0]
    total = np.zeros(r)
    rows = np.arange(r)
    for m, p in enumerate(p_o):
        total -= np.log(p[rows, obs[:, m]] + EPS)
    return total


def outcome_entropy(p_o: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_m H[p(o_m)]``: the entropy (nats) of each agent's predicted outcome distributions,
    the surprise it expects; :func:`surprise` less this is the excess surprise, whose mean is 0
    when the outcomes come from the distributions predicted."""
    total = np.zeros(p_o[0].shape[0])
    for p in p_o:
        total -= (p * np.log(p + EPS)).sum(axis=1)
    return total


def entropy(q: np.ndarray) -> np.ndarray:
    """``H[q] = -sum q ln q`` of each row of ``q (r, K)`` (the policy posterior's entropy)."""
    q = np.asarray(q, dtype=np.float64)
    out: np.ndarray = -(q * np.log(q + EPS)).sum(axis=1)
    return out


def belief_change(qs: Sequence[np.ndarray], prior: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_f KL(q_f || prior_f)`` (nats): how far the observation moved each agent's beliefs
    (the factors are independent under the mean field, so their divergences add)."""
    total = np.zeros(qs[0].shape[0])
    for q, p in zip(qs, prior, strict=True):
        q64 = np.asarray(q, dtype=np.float64)
        log_q = np.add(q64, EPS)
        np.log(log_q, out=log_q)
        log_p = np.add(p, EPS, dtype=np.float64)
        np.log(log_p, out=log_p)
        log_q -= log_p
        log_q *= q64
        total += log_q.sum(axis=1)
    return total


def free_energy(
    qs: Sequence[np.ndarray],
    prior: Sequence[np.ndarray],
    A: Sequence[np.ndarray],
    obs: np.ndarray,
) -> np.ndarray:
    """Variational free energy (nats) of each agent's posterior, pymdp's ``calc_free_energy``:
    ``sum_f KL(q_f || prior_f) - sum_s q(s) sum_m ln A_m(o_m | s)``, ``q(s)`` the joint of the
    factors' posteriors (an upper bound on the surprise, equal to it for the exact posterior):
    :func:`belief_change` less :func:`expected_log_likelihood`."""
    out: np.ndarray = belief_change(qs, prior) - expected_log_likelihood(qs, A, obs)
    return out


def expected_log_likelihood(
    qs: Sequence[np.ndarray], A: Sequence[np.ndarray], obs: np.ndarray
) -> np.ndarray:
    """``sum_s q(s) sum_m ln A_m(o_m | s)`` of each agent, ``q(s)`` the joint of the factors'
    posteriors ``qs``: the accuracy term of the free energy."""
    joint = joint_beliefs(qs)
    r = obs.shape[0]
    rows = np.arange(r)
    log_lik = np.zeros_like(joint)
    for m, a in enumerate(A):
        picked = a[obs[:, m]] if a.ndim == 2 else a[rows, obs[:, m]]  # (r, S)
        log_a = np.add(picked, EPS, dtype=np.float64)
        np.log(log_a, out=log_a)
        log_lik += log_a
    log_lik *= joint
    out: np.ndarray = log_lik.sum(axis=1)
    return out


def preference(lnC: Sequence[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """``sum_m lnC_m[o_m]`` (nats): the log preference of each agent's outcomes, ``lnC_m`` the
    normalised ``ln softmax(C_m)`` of the model (so 0 is the most a modality gives when one
    outcome is all it prefers, and models of other ``C`` offsets compare)."""
    total = np.zeros(obs.shape[0])
    for m, c in enumerate(lnC):
        total += np.asarray(c, dtype=np.float64)[obs[:, m]]
    return total
