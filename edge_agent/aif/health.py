"""Pure batched kernels of a group's health measures (``docs/health.md``): how well the agents'
model predicted what they observed, and what their beliefs did with it.

Every function takes its arrays and returns one value per agent, ``(r,)`` float64 over the ``r``
agents it is given (a group's sampled rows: :class:`~edge_agent.core.health.AifHealth` picks
them), or for :func:`tick_measures` a row of those per measure; no state, no I/O. Shapes:

- ``prior[f]``, ``qs[f]``: ``(r, S_f)`` the beliefs about factor ``f`` before the observation
  (the prior predictive's states) and after it (the posterior);
- ``joint``: ``(r, S)`` the product of the factors' beliefs, C order (last factor fastest);
- ``A[m]``: ``(O_m, S)`` one likelihood for every agent (a compiled model's ``A_rows``), or
  ``(r, O_m, S)`` each agent's own (per-agent learning);
- ``obs``: ``(r, M)`` integer outcomes.

Logs take pymdp's ``EPS`` inside (``ln(p + EPS)``), as the inference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial
from typing import NamedTuple

import numpy as np

from edge_agent.aif.constants import EPS
from edge_agent.aif.kernels.inference import free_energy, joint_rows

__all__ = [
    "TICK_MEASURES",
    "InTickFold",
    "belief_change",
    "entropy",
    "joint_beliefs",
    "measures_of",
    "outcome_rows",
    "predictions",
    "preference",
    "tick_measures",
]


#: ``(r, K)`` -> ``(r,)``: each row's sum (the ufunc's own reduction: a measured tick's arrays
#: are small, and ``sum``'s and ``einsum``'s Python wrappers cost more than their arithmetic).
_add_rows = partial(np.add.reduce, axis=1)


def _side_by_side(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The ``(r, K_i)`` arrays as one ``(r, sum K_i)`` (the one itself when it is one)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


@lru_cache(maxsize=64)
def _offsets(num_obs: tuple[int, ...]) -> np.ndarray:
    """``(M,)``: where each modality's outcomes start in the tables side by side (read-only:
    one array per model's sizes, shared; at most 64 sizes kept, a daemon's models change)."""
    offsets = np.cumsum((0, *num_obs[:-1]))
    offsets.flags.writeable = False
    return offsets


def _tables_side_by_side(A: Sequence[np.ndarray], r: int) -> np.ndarray:
    """The modalities' ``A_m`` as one table: ``(sum O_m, S)`` when every agent has the same,
    ``(r, sum O_m, S)`` when some modality's are each agent's own (the others then repeated per
    agent)."""
    if len(A) == 1:
        return A[0]
    if all(a.ndim == A[0].ndim for a in A):
        return np.concatenate(A, axis=-2)
    return np.concatenate([a if a.ndim == 3 else np.broadcast_to(a, (r, *a.shape)) for a in A],
                          axis=1)


def joint_beliefs(qs: Sequence[np.ndarray]) -> np.ndarray:
    """``(r, S)`` float64: the outer product of the factors' beliefs ``qs[f] (r, S_f)`` per
    agent, C order over factors (the layout of ``A_rows``' columns)."""
    return joint_rows([q if q.dtype == np.float64 else q.astype(np.float64) for q in qs])


def entropy(q: np.ndarray) -> np.ndarray:
    """``H[q] = -sum q ln q`` of each row of ``q (r, K)`` (the policy posterior's entropy)."""
    q = np.asarray(q, dtype=np.float64)
    log_q = np.add(q, EPS)
    np.log(log_q, out=log_q)
    log_q *= q
    out: np.ndarray = np.negative(_add_rows(log_q))
    return out


def belief_change(qs: Sequence[np.ndarray], prior: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_f KL(q_f || prior_f)`` (nats): how far the observation moved each agent's beliefs
    (the factors are independent under the mean field, so their divergences add: one sum over
    the factors' states side by side), the free energy's complexity."""
    return _change_and_free(qs, prior)[0]


def _change_and_free(
    qs: Sequence[np.ndarray], prior: Sequence[np.ndarray], joint: np.ndarray | None = None,
    log_lik: np.ndarray | None = None, *, change: np.ndarray | None = None,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`belief_change` (into ``change`` when given) and, with ``log_lik`` ``(r, S)``
    and ``joint`` the posteriors' joint, the free energy
    (:func:`~edge_agent.aif.kernels.inference.free_energy`: the change less the accuracy; into
    ``free`` when given)."""
    q = np.asarray(_side_by_side(qs), dtype=np.float64)
    log_p = np.add(_side_by_side(prior), EPS, dtype=np.float64)
    np.log(log_p, out=log_p)
    if log_lik is None:
        return free_energy(q, log_p, axis=1, out=change), None
    change = np.empty(len(q)) if change is None else change
    return change, free_energy(q, log_p, joint, log_lik, axis=1, complexity=change, out=free,
                               weighted=log_lik)


#: The rows of :func:`tick_measures`, in order.
TICK_MEASURES = ("surprise", "excess_surprise", "free_energy", "belief_change")


class InTickFold(NamedTuple):
    """Health's buffers a tick that measures its sample folds it into
    (:data:`edge_agent.core.health.InTick`), views of one block ``(w, r)`` whose rows are the
    window's: the policy entropy ``entropy`` (its first row), the preference ``preference``
    (the next, with ``lnC``, health's ``ln softmax(C_m)`` side by side; both None: the model
    reports none), the :data:`TICK_MEASURES` ``measures`` ``(4, r)`` (its last four), and
    ``sums`` ``(2, w)``, each row's sum and sum of squares over the agents."""

    measures: np.ndarray
    entropy: np.ndarray
    lnC: np.ndarray | None
    preference: np.ndarray | None
    sums: np.ndarray


def tick_measures(
    prior: Sequence[np.ndarray],
    qs: Sequence[np.ndarray],
    A: Sequence[np.ndarray],
    obs: np.ndarray,
) -> np.ndarray:
    """``(4, r)`` float64, one row per :data:`TICK_MEASURES`, of the agents whose beliefs were
    ``prior`` before they saw ``obs`` and ``qs`` after it:

    - ``surprise``: ``-sum_m ln p(o_m)``, the outcomes' surprise under the outcome distributions
      ``p(o_m) = sum_s A_m(o_m | s) prior(s)`` the agents predicted (summed in ``A``'s dtype: a
      float32 model's table is not copied to float64, the beliefs are cast to it instead);
    - ``excess_surprise``: the surprise less the predicted distributions' entropy
      ``sum_m H[p(o_m)]``, the surprise expected: its mean is 0 when the outcomes come from the
      distributions predicted;
    - ``free_energy``: the variational free energy of the posterior, pymdp's
      ``calc_free_energy``: ``belief_change`` less the accuracy ``sum_s q(s) sum_m ln A_m(o_m |
      s)``, ``q(s)`` the joint of the factors' posteriors (an upper bound on the surprise, equal
      to it for the exact posterior);
    - ``belief_change``: :func:`belief_change`.

    The modalities' tables are taken side by side (``(sum O_m, S)``, or ``(r, sum O_m, S)``
    when some are each agent's own), so that the four cost a few dozen numpy calls whatever the
    number of modalities: a measured tick of a small group is mostly the fixed cost of its
    calls."""
    seen = outcome_rows(tuple(a.shape[-2] for a in A), obs)
    p, picked = predictions(joint_beliefs(prior), A, seen)
    return measures_of(prior, qs, p, picked, seen)


def outcome_rows(num_obs: tuple[int, ...], obs: np.ndarray) -> np.ndarray:
    """``(r, M)``: the rows of the modalities' tables side by side that the outcomes ``obs (r,
    M)`` are (each modality's outcome plus the outcomes of the modalities before it)."""
    out: np.ndarray = obs + _offsets(num_obs)
    return out


def predictions(
    joint_prior: np.ndarray, A: Sequence[np.ndarray], seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What of :func:`tick_measures` depends on the likelihood ``A`` the agents inferred with:
    ``p`` ``(r, sum O_m)`` float64, the outcome distributions ``p(o_m) = sum_s A_m(o_m | s)
    prior(s)`` side by side (summed in ``A``'s dtype), and ``picked`` ``(r, M, S)`` in ``A``'s
    dtype, each observed outcome's likelihood row ``A_m(o_m | .)``; ``joint_prior`` ``(r, S)``
    (:func:`joint_beliefs` of the prior), ``seen`` the outcomes (:func:`outcome_rows`). A
    group that holds measured ticks works these out at the tick (a learning group's tables
    change between ticks) and the rest later (:func:`measures_of`)."""
    r = seen.shape[0]
    table = _tables_side_by_side(A, r)
    q = joint_prior if joint_prior.dtype == table.dtype else joint_prior.astype(table.dtype)
    if table.ndim == 2:  # one table for every agent
        p = np.asarray(q @ table.T, dtype=np.float64)  # (r, sum O_m): p(o_m) side by side
        picked = table[seen]  # (r, M, S)
    else:  # each agent's own
        p = np.asarray(np.einsum("ros,rs->ro", table, q), dtype=np.float64)
        picked = table[np.arange(r)[:, None], seen]
    return p, picked


def measures_of(
    prior: Sequence[np.ndarray],
    qs: Sequence[np.ndarray],
    p: np.ndarray,
    picked: np.ndarray,
    seen: np.ndarray,
) -> np.ndarray:
    """:func:`tick_measures` from the :func:`predictions` ``p`` and ``picked`` of the agents
    that saw ``seen`` (:func:`outcome_rows`; ``p`` is overwritten): the rows of any number of
    ticks side by side are worked out at once."""
    r = seen.shape[0]
    out = np.empty((len(TICK_MEASURES), r))
    surprise, excess, free, change = out
    rows = np.arange(r)[:, None]
    log_p = np.add(p, EPS)
    np.log(log_p, out=log_p)
    np.negative(_add_rows(log_p[rows, seen]), out=surprise)
    np.add(surprise, _add_rows(np.multiply(p, log_p, out=p)), out=excess)  # less the entropy
    log_a = np.add(picked, EPS, dtype=np.float64)
    np.log(log_a, out=log_a)
    log_lik = _add_rows(log_a)  # (r, S): sum_m ln A_m(o_m | s)
    _change_and_free(qs, prior, joint_beliefs(qs), log_lik, change=change, free=free)
    return out


def preference(lnC: Sequence[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """``sum_m lnC_m[o_m]`` (nats): the log preference of each agent's outcomes, ``lnC_m`` the
    normalised ``ln softmax(C_m)`` of the model (so 0 is the most a modality gives when one
    outcome is all it prefers, and models of other ``C`` offsets compare)."""
    table = np.concatenate(lnC, dtype=np.float64)
    picked = table[obs + _offsets(tuple(c.shape[0] for c in lnC))]
    out: np.ndarray = _add_rows(picked)
    return out
