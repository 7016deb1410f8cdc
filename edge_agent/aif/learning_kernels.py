"""Dirichlet learning's pure batched kernels: the count increments of ``A``, ``B`` and ``D``.

pymdp's ``update_A``, ``update_B`` and ``update_D`` (0.0.7.1) for ``N`` agents at once. The maths
(``pA``, ``pB``, ``pD`` are Dirichlet concentration parameters, "counts", of the same shapes as
``A``, ``B``, ``D``):

* ``A``: ``pA[m] += lr_pA * mask_A[m] * (onehot(o_m) ⊗ qs_0 ⊗ ... ⊗ qs_{F-1})``
* ``B``: ``pB[f][:, :, a_f] += lr_pB * mask_B[f][:, :, a_f] * (qs_f ⊗ qs_prev_f)``, where ``a_f``
  is the action that led from ``qs_prev`` to ``qs`` (the action taken at the previous step)
* ``D``: ``pD[f] += lr_pD * (pD[f] > 0) * qs_f`` for the posterior a trial is summarised by

and the table an agent infers with is the counts' expectation, ``A = pA / pA.sum(axis=0)``
(:func:`normalise`); the information gain a policy promises about the counts is
:func:`param_info_gain`. The counts the increments are added to are
:mod:`edge_agent.aif.learning_counts`; the object that calls these kernels each tick, and keeps
their scratch, is :class:`edge_agent.aif.learning.Learner`.

Shapes: ``N`` agents; ``qs[f]`` ``(N, S_f)`` float; ``obs`` ``(N, M)`` int; ``actions``
``(N, F)`` int. The joint state space is ``S = S_0 * ... * S_{F-1}`` in C order (pymdp's
``spm_cross``). Kernels take every array as an argument and write into ``out`` where one is
given: no state, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: pymdp's ``EPS_VAL``, added inside ``spm_wnorm``.
EPS = 1e-16


def joint_states(qs: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """``(N, S)`` outer product of the factor marginals per agent, C order over factors.

    Without ``out`` the result is read-only to the caller: for one factor it is ``qs[0]``
    itself (no copy in the tick)."""
    n = qs[0].shape[0]
    joint = qs[0]
    for q in qs[1:]:
        joint = (joint[:, :, None] * q[:, None, :]).reshape(n, -1)
    if out is None:
        return joint
    np.copyto(out, joint)
    return out


def joint_states_major(
    qs: Sequence[np.ndarray], out: np.ndarray, factors_out: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """``(S, N)``: :func:`joint_states` state-major (agent index last), written into the
    C-contiguous ``out`` of that shape. One or two factors: the factors copied state-major
    into ``factors_out`` (``(S_f, N)`` each, ``out``'s dtype), then one product over rows of
    ``N`` agents, nothing allocated; more: the outer products of :func:`joint_states`, copied.

    The products are taken in ``out``'s dtype: float32 posteriors into a float64 ``out`` give
    exact products. (Multiplied in float32, near-certain beliefs, e.g. ``1e-30 * 1e-18``, give
    subnormal products, which cost the processor ten times a normal one.)"""
    n = qs[0].shape[0]
    if len(qs) == 1:
        np.copyto(out, qs[0].T)
    elif len(qs) == 2:
        a, b = factors_out
        np.copyto(a, qs[0].T)
        np.copyto(b, qs[1].T)
        np.multiply(a[:, None, :], b[None, :, :], out=out.reshape(a.shape[0], b.shape[0], n))
    else:
        np.copyto(out, joint_states(qs).T)
    return out


def onehot(
    index: np.ndarray, size: int, out: np.ndarray | None = None, dtype: type = np.float64
) -> np.ndarray:
    """``(N, size)`` rows with a 1 at ``index[n]``."""
    n = index.shape[0]
    if out is None:
        out = np.zeros((n, size), dtype=dtype)
    else:
        out.fill(0.0)
    out[np.arange(n), index] = 1.0
    return out


def _grouped(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Agents grouped by ``index`` (an outcome or an action): ``(order, values, starts)`` with
    ``index[order]`` sorted, ``values`` the distinct indices and ``starts`` where each begins."""
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=size)
    values = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts[values])[:-1]))
    return order, values, starts


#: Modalities with at most this many outcomes sum their ``A`` increment as one product
#: ``onehot(o)^T @ joint`` (``N * O`` multiply-adds, fewer calls than a sort and a reduceat).
FEW_OUTCOMES = 8


def a_increment_shared(
    obs_m: np.ndarray, joint: np.ndarray, num_obs: int, onehot_out: np.ndarray | None = None,
    rows_out: np.ndarray | None = None, *, outcomes: np.ndarray | None = None,
) -> FloatArray:
    """``(O, S)``: the sum over agents of ``onehot(o) ⊗ joint``.

    With ``onehot_out`` (an ``(O, N)`` float64 scratch, for ``O <= FEW_OUTCOMES``) it is one
    product ``onehot(o) @ joint`` (two calls, only the ``(O, S)`` result allocated; ``joint``
    may be the transposed view of a state-major :func:`joint_states_major`). Otherwise the
    agents are grouped by outcome (one sort) and each group's rows summed in one ``reduceat``:
    O(N S) additions and nothing of size ``N * O``; ``rows_out`` (``joint``'s shape and dtype,
    C-contiguous) takes the grouped rows instead of a new array. ``outcomes``: ``(O, 1)``
    intp ``0 .. O - 1`` (made here if not given)."""
    if onehot_out is not None:
        np.equal(obs_m, np.arange(num_obs)[:, None] if outcomes is None else outcomes,
                 out=onehot_out)
        summed: FloatArray = onehot_out @ joint
        return summed
    order, values, starts = _grouped(obs_m, num_obs)
    if rows_out is None:
        rows = joint[order]
    else:  # every index is in range (a permutation): "clip" skips numpy's checked temporary
        rows = joint.take(order, axis=0, out=rows_out, mode="clip")
    out: FloatArray = np.zeros((num_obs, joint.shape[1]))
    out[values] = np.add.reduceat(rows, starts, axis=0, dtype=np.float64)
    return out


#: A likelihood's support (:func:`support_index`) and its entries (:func:`support_entries`).
ASupport = tuple[tuple[np.ndarray, FloatArray], np.ndarray, np.ndarray]

#: A likelihood's rows are gathered by their support when no row has more than this share of
#: the states in it (grid10: 5 of 100).
SPARSE_SUPPORT = 0.25


def support_index(mask: np.ndarray) -> tuple[np.ndarray, FloatArray] | None:
    """``(columns, weights)``, both ``(O, k)``: the support of each row of ``mask`` ``(O, S)``
    (``k`` the most any row has; a shorter row padded with column 0 and weight 0, the others
    weight 1), or ``None`` when some row's support is more than ``SPARSE_SUPPORT`` of ``S``."""
    S = mask.shape[1]
    per_row = mask.sum(axis=1)
    k = max(1, int(per_row.max()))
    if k > SPARSE_SUPPORT * S:
        return None
    order = np.argsort(~mask, axis=1, kind="stable")[:, :k]  # support columns first, in order
    weights = (np.arange(k)[None, :] < per_row[:, None]).astype(np.float64)
    columns = np.where(weights > 0, order, 0).astype(np.intp)
    return columns, weights


def a_increment_support(
    obs_m: np.ndarray, joint: np.ndarray, support: tuple[np.ndarray, FloatArray], *,
    rows_offset: np.ndarray, cols_out: np.ndarray, vals_out: np.ndarray, gathered_out: np.ndarray,
    dense: bool = True,
) -> FloatArray | None:
    """``(O, S)``: :func:`a_increment_shared` in the columns of each outcome's support only (the
    update's mask removes the others): ``N * k`` gathered entries summed in one weighted
    ``bincount``, ``N * S`` read only where they count.

    ``joint`` ``(N, S)`` C-contiguous; ``support`` from :func:`support_index` (``k`` columns);
    ``rows_offset`` ``(N, 1)`` intp ``n * S``; scratch ``cols_out`` ``(N, k)`` intp, ``vals_out``
    ``(N, k)`` float64, ``gathered_out`` ``(N, k)`` in ``joint``'s dtype. ``dense=False``:
    no sum, ``None``; the ``N * k`` entries are left in ``cols_out`` (index into the ``(O, S)``
    increment, flattened) and ``vals_out`` (their values, 0 for a pad)."""
    columns, weights = support
    S = joint.shape[1]
    num_obs = columns.shape[0]
    # (the methods: np.take would add a Python wrapper to each call)
    columns.take(obs_m, axis=0, out=cols_out, mode="clip")
    weights.take(obs_m, axis=0, out=vals_out, mode="clip")
    np.add(cols_out, rows_offset, out=cols_out)  # index into joint, flattened
    joint.reshape(-1).take(cols_out, out=gathered_out, mode="clip")
    np.multiply(vals_out, gathered_out, out=vals_out)
    np.subtract(cols_out, rows_offset, out=cols_out)
    cols_out += (obs_m * S)[:, None]  # index into the (O, S) increment, flattened
    if not dense:  # the entries themselves: cols_out (flat index), vals_out (value)
        return None
    summed: FloatArray = np.bincount(
        cols_out.reshape(-1), weights=vals_out.reshape(-1), minlength=num_obs * S
    ).astype(np.float64, copy=False)
    return summed.reshape(num_obs, S)


def support_entries(
    support: tuple[np.ndarray, FloatArray], S: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(entry, flat)`` for a :func:`support_index` ``(columns, weights)`` of an ``(O, S)``
    mask: ``entry`` ``(O, k)`` intp numbers the mask's ``R`` true entries in C order (a short
    row's pads are numbered ``R``), ``flat`` ``(R,)`` intp is each one's index into the table
    flattened."""
    columns, weights = support
    real = weights > 0
    R = int(real.sum())
    entry = np.full(columns.shape, R, dtype=np.intp)
    entry[real] = np.arange(R)
    rows = np.broadcast_to(np.arange(columns.shape[0])[:, None], columns.shape)
    flat = (rows[real] * S + columns[real]).astype(np.intp)
    return entry, flat


def a_sums_support(
    obs_m: np.ndarray, joint: np.ndarray, columns: np.ndarray, entry: np.ndarray, R: int, *,
    rows_offset: np.ndarray, index_out: np.ndarray, gathered_out: np.ndarray,
    values_out: np.ndarray,
) -> FloatArray:
    """``(R,)`` float64: :func:`a_increment_support` at the mask's ``R`` true entries only
    (numbered by ``entry``, :func:`support_entries`): the ``N * k`` gathered values summed
    into ``R`` bins (the pads into one more, dropped), nothing of the table's size.

    ``joint`` ``(N, S)`` C-contiguous; ``columns`` ``(O, k)`` the support's columns;
    ``rows_offset`` ``(N, 1)`` intp ``n * S``; scratch ``index_out`` ``(N, k)`` intp,
    ``gathered_out`` ``(N, k)`` in ``joint``'s dtype and ``values_out`` ``(N, k)`` float64
    (the same array when ``joint`` is float64). The sums are those of
    :func:`a_increment_support`, bit for bit (the same entries added in the same order)."""
    columns.take(obs_m, axis=0, out=index_out, mode="clip")
    np.add(index_out, rows_offset, out=index_out)  # index into joint, flattened
    joint.reshape(-1).take(index_out, out=gathered_out, mode="clip")
    if values_out is not gathered_out:  # bincount's weights are float64 (else it converts)
        np.copyto(values_out, gathered_out)
    entry.take(obs_m, axis=0, out=index_out, mode="clip")
    sums = np.bincount(index_out.reshape(-1), weights=values_out.reshape(-1), minlength=R + 1)
    # float64 already (bincount with weights): asarray only says so to every numpy's stubs
    return np.asarray(sums[:R], dtype=np.float64)


def b_increment_shared(
    qs_f: np.ndarray, qs_prev_f: np.ndarray, action_f: np.ndarray, num_controls: int
) -> np.ndarray:
    """``(S, S, U)`` float64: per action ``u``, the sum over the agents that took it of
    ``qs ⊗ qs_prev``: the agents grouped by action (one sort), one ``(S, n_u) @ (n_u, S)``
    product per action taken (O(N S^2) in all, in the posteriors' dtype, the posteriors
    scaled by :data:`B_PRODUCT_SCALE` and the sums back in float64, as in
    :func:`b_increment_support`: no subnormal products of near-certain float32 beliefs)."""
    s = qs_f.shape[1]
    order, values, starts = _grouped(action_f, num_controls)
    now, before = qs_f[order], qs_prev_f[order]  # copies: ``now`` is scaled in place
    np.multiply(now, now.dtype.type(B_PRODUCT_SCALE), out=now)
    ends = [*starts[1:], len(order)]
    out = np.zeros((s, s, num_controls))
    for u, start, end in zip(values, starts, ends, strict=True):
        np.multiply(now[start:end].T @ before[start:end], 1.0 / B_PRODUCT_SCALE,
                    out=out[:, :, u], dtype=np.float64)
    return out


@dataclass(frozen=True)
class TransitionSupport:
    """Where a transition mask ``(S, S, U)`` is true, column by column: ``targets`` ``(k, U, S)``
    intp, the rows ``t`` with ``mask[t, s, u]`` (``k`` the most any column has; a shorter
    column padded with row 0), ``weights`` ``(k, U, S)`` float64 (1, or 0 for a pad) and
    ``flat`` ``(k, U, S)`` intp, each entry's index into the table flattened (C order)."""

    targets: np.ndarray
    weights: FloatArray
    flat: np.ndarray
    #: Whether some column has fewer targets than ``k`` (some weight is 0).
    padded: bool
    #: ``(U, 1)`` intp, ``0 .. U - 1``: what the agents' actions are compared with.
    actions: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.targets.nbytes + self.weights.nbytes + self.flat.nbytes + self.actions.nbytes


def transition_support(mask: np.ndarray) -> TransitionSupport | None:
    """The :class:`TransitionSupport` of ``mask`` ``(S, S, U)``, or ``None`` when some column
    has more than ``SPARSE_SUPPORT`` of the states in it (grid10's moves: one target each)."""
    S, _, U = mask.shape
    per_action = [support_index(np.ascontiguousarray(mask[:, :, u].T)) for u in range(U)]
    if any(s is None for s in per_action):
        return None
    k = max(s[0].shape[1] for s in per_action if s is not None)
    targets = np.zeros((k, U, S), dtype=np.intp)
    weights = np.zeros((k, U, S))
    for u, found in enumerate(per_action):
        assert found is not None
        columns, w = found  # (S, k_u): per column s its targets, padded
        targets[: columns.shape[1], u] = columns.T
        weights[: w.shape[1], u] = w.T
    s_index = np.arange(S)[None, None, :]
    u_index = np.arange(U)[None, :, None]
    flat = (targets * S + s_index) * U + u_index
    return TransitionSupport(targets=targets, weights=weights, flat=flat,
                             padded=bool((weights == 0).any()),
                             actions=np.arange(U, dtype=np.intp)[:, None])


def b_support_scratch(support: TransitionSupport, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
    """The scratch of :func:`b_increment_support` that does not grow with the agents: a chunk's
    ``local_offset``, ``index`` and ``gathered`` rows, the ``partial`` and ``sums`` of one
    chunk and slot, in ``dtype``, and the float64 ``values`` the counts gain; and the
    ``entries`` of :func:`b_entries_support` (with ``values``, for up to ``U`` agents)."""
    k, U, S = support.targets.shape
    rows = max(1, B_CHUNK // S)
    return {
        "offset": np.arange(rows)[:, None] * S + np.zeros((1, S), dtype=np.intp),
        "index": np.empty((rows, S), dtype=np.intp),
        "gathered": np.empty((rows, S), dtype=dtype),
        "partial": np.empty((U, S), dtype=dtype),
        "sums": np.empty((k, U, S), dtype=dtype),
        "values": np.empty((k, U, S)),
        "entries": np.empty((k, U, S), dtype=np.intp),
    }


#: :func:`b_increment_support` scales the gathered posteriors by this power of two before it
#: multiplies them by the previous ones (and the sums back, exactly): two float32 beliefs of
#: 1e-20 multiply into a subnormal number, which x86-64 computes on slowly; scaled, every
#: product of beliefs above 1e-33 is normal, and a sum over fewer than 2^28 agents stays below
#: float32's largest number.
B_PRODUCT_SCALE = 2.0**100
#: :func:`b_increment_support` works through this many agent-states (``agents * S``) at a
#: time: its scratch does not grow with the group, and stays in the cache.
B_CHUNK = 1 << 15


def b_increment_support(
    qs_f: np.ndarray, qs_prev_f: np.ndarray, action_f: np.ndarray, support: TransitionSupport,
    *, acted: np.ndarray | None = None, local_offset: np.ndarray, index_out: np.ndarray,
    gathered_out: np.ndarray, onehot_out: np.ndarray, partial_out: np.ndarray,
    sums_out: np.ndarray, values_out: np.ndarray,
) -> np.ndarray:
    """``values_out`` ``(k, U, S)`` float64: :func:`b_increment_shared` at the entries of
    ``support`` only (the update's mask removes the others): ``values_out[j, u, s]`` is the sum,
    over the agents that took ``u`` (and ``acted``, ``(N,)`` bool, when given), of
    ``qs[n, t] * qs_prev[n, s]`` with ``t = support.targets[j, u, s]`` (a pad's sum is left for
    its weight 0 to remove).

    ``C`` agents at a time (``C`` the rows of the scratch) and per target slot ``j``: each
    agent's posterior gathered at its own action's targets (one gather through a flat index,
    ``local_offset`` ``(C, S)`` intp holding ``c * S`` for the agent's row ``c`` of the
    chunk), times its previous posterior, summed per action in one product with the agents'
    one-hot actions: ``O(N S k)`` against the ``O(N S^2)`` of the dense products, no sort and
    nothing allocated. The gathered posteriors are scaled by :data:`B_PRODUCT_SCALE` first
    and the sums back in float64 at the end (powers of two: the same roundings), so that
    near-certain float32 beliefs do not multiply into subnormal numbers (nor lose digits to
    them). Scratch: ``index_out`` ``(C, S)`` intp, ``gathered_out`` ``(C, S)``, ``onehot_out``
    ``(U, N)``, ``partial_out`` ``(U, S)`` in the posteriors' dtype, ``sums_out`` ``(k, U,
    S)``."""
    targets = support.targets
    k = targets.shape[0]
    n = qs_f.shape[0]
    C = index_out.shape[0]
    np.equal(action_f, support.actions, out=onehot_out)
    if acted is not None:
        np.multiply(onehot_out, acted, out=onehot_out)
    if n == 0:
        sums_out.fill(0.0)
    scale = sums_out.dtype.type(B_PRODUCT_SCALE)
    for start in range(0, n, C):
        end = min(n, start + C)
        c = end - start
        index, gathered = index_out[:c], gathered_out[:c]
        now = qs_f[start:end].reshape(-1)
        for j in range(k):
            targets[j].take(action_f[start:end], axis=0, out=index, mode="clip")
            np.add(index, local_offset[:c], out=index)
            now.take(index, out=gathered, mode="clip")
            np.multiply(gathered, scale, out=gathered)
            np.multiply(gathered, qs_prev_f[start:end], out=gathered)
            if start == 0:  # the first chunk's sums (0 + x is x: the same roundings)
                np.matmul(onehot_out[:, :end], gathered, out=sums_out[j])
            else:
                np.matmul(onehot_out[:, start:end], gathered, out=partial_out)
                np.add(sums_out[j], partial_out, out=sums_out[j])
    np.multiply(sums_out, 1.0 / B_PRODUCT_SCALE, out=values_out, dtype=np.float64)
    return values_out


def b_entries_support(
    qs_f: np.ndarray, qs_prev_f: np.ndarray, action_f: np.ndarray, support: TransitionSupport,
    *, acted: np.ndarray | None = None, local_offset: np.ndarray, index_out: np.ndarray,
    gathered_out: np.ndarray, entries_out: np.ndarray, values_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's own terms of :func:`b_increment_support`, not summed (for a few agents:
    fewer terms than the support has entries), to be added where they fall: ``(entries,
    values)``, both ``(k, n, S)``, ``entries[j, n, s]`` the index into the table flattened of
    ``(t, s, a_n)`` with ``t = support.targets[j, a_n, s]`` and ``values[j, n, s] = qs[n, t] *
    qs_prev[n, s]``, multiplied in float64 (exact for float32 beliefs, and never subnormal),
    0 for a pad or an agent not in ``acted``.

    ``local_offset`` ``(>= n, S)`` intp holding ``c * S`` in row ``c``; scratch ``index_out``
    ``(n, S)`` intp, ``gathered_out`` ``(n, S)`` in the posteriors' dtype, ``entries_out``
    ``(k, n, S)`` intp and ``values_out`` ``(k, n, S)`` float64."""
    now = qs_f.reshape(-1)
    for j in range(support.targets.shape[0]):
        support.targets[j].take(action_f, axis=0, out=index_out, mode="clip")
        np.add(index_out, local_offset[: len(action_f)], out=index_out)
        now.take(index_out, out=gathered_out, mode="clip")
        np.multiply(gathered_out, qs_prev_f, out=values_out[j], dtype=np.float64)
        support.flat[j].take(action_f, axis=0, out=entries_out[j], mode="clip")
        if support.padded:  # a pad's value 0
            np.multiply(values_out[j], support.weights[j].take(action_f, axis=0),
                        out=values_out[j])
    if acted is not None:
        np.multiply(values_out, acted[:, None], out=values_out)
    return entries_out, values_out


def forget(counts: np.ndarray, prior: np.ndarray, forgetting: float) -> None:
    """In place: ``counts <- prior + (1 - forgetting) * (counts - prior)``."""
    if forgetting:
        counts -= prior
        counts *= 1.0 - forgetting
        counts += prior


def wnorm(counts: np.ndarray) -> np.ndarray:
    """pymdp's ``spm_wnorm``: ``1 / sum(p) - 1 / p`` over axis 0, with ``EPS`` added to ``p``
    (the expected change of ``ln A`` per count, for the parameter information gain)."""
    p = counts + EPS
    out: np.ndarray = 1.0 / p.sum(axis=0) - 1.0 / p
    return out


def normalise(counts: np.ndarray, axis: int = 0) -> np.ndarray:
    """The expectation of the Dirichlet: counts over their sum along ``axis`` (in float64,
    whatever the counts are stored in)."""
    p = np.asarray(counts, dtype=np.float64)
    out: np.ndarray = p / p.sum(axis=axis, keepdims=True)
    return out


def param_info_gain(
    qs: Sequence[np.ndarray],
    A: Sequence[np.ndarray],
    B: Sequence[np.ndarray],
    *,
    pA: dict[int, np.ndarray],
    pB: dict[int, np.ndarray],
    policies: np.ndarray,
) -> FloatArray:
    """``(N, P)``: the information gain about ``pA`` and ``pB`` each policy promises (pymdp
    0.0.7.1's ``calc_pA_info_gain`` + ``calc_pB_info_gain``, summed over the policy's steps).

    ``qs[f]`` ``(N, S_f)`` the current posteriors; ``A``, ``B`` the tables the agents plan with;
    ``pA``/``pB`` the counts by modality/factor (only those tables count); ``policies``
    ``(P, L, F)``. Per policy, the predicted states move one step at a time (one ``(N, S_f)``
    matrix product per factor and step), so the scratch is ``O(N * S)`` whatever ``P`` is.
    """
    n = qs[0].shape[0]
    wA = {m: (wnorm(p) * (p > 0)).reshape(p.shape[0], -1) for m, p in pA.items()}
    A_flat = {m: A[m].reshape(A[m].shape[0], -1) for m in pA}
    wB = {f: wnorm(p) * (p > 0) for f, p in pB.items()}
    P, L, F = policies.shape
    out = np.zeros((n, P))
    for p in range(P):
        current = [np.asarray(q, dtype=np.float64) for q in qs]
        for t in range(L):
            actions = policies[p, t]
            nxt = [current[f] @ B[f][:, :, int(actions[f])].T for f in range(F)]
            for f, w in wB.items():  # -qs_pi[t][f] . (wB[:, :, a] @ previous_qs[f])
                out[:, p] -= np.einsum(
                    "ns,ns->n", nxt[f], current[f] @ w[:, :, int(actions[f])].T
                )
            if wA:
                joint = nxt[0]
                for f in range(1, F):
                    joint = (joint[:, :, None] * nxt[f][:, None, :]).reshape(n, -1)
                for m, w in wA.items():  # -qo . (wA @ qs_pi)
                    out[:, p] -= np.einsum("no,no->n", joint @ A_flat[m].T, joint @ w.T)
            current = nxt
    return out
