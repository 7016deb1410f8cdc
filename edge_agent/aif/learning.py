"""Dirichlet learning of ``A``, ``B`` and ``D``: pure batched kernels and the counts they update.

pymdp's ``update_A``, ``update_B`` and ``update_D`` (0.0.7.1) for ``N`` agents at once. The maths
(``pA``, ``pB``, ``pD`` are Dirichlet concentration parameters, "counts", of the same shapes as
``A``, ``B``, ``D``):

* ``A``: ``pA[m] += lr_pA * mask_A[m] * (onehot(o_m) ⊗ qs_0 ⊗ ... ⊗ qs_{F-1})``
* ``B``: ``pB[f][:, :, a_f] += lr_pB * mask_B[f][:, :, a_f] * (qs_f ⊗ qs_prev_f)``, where ``a_f``
  is the action that led from ``qs_prev`` to ``qs`` (the action taken at the previous step)
* ``D``: ``pD[f] += lr_pD * (pD[f] > 0) * qs_f`` for the posterior a trial is summarised by

and the table an agent infers with is the counts' expectation, ``A = pA / pA.sum(axis=0)``.

Conventions, pymdp's unless said (``docs/learning.md`` lists them for users):

* **The mask** of an ``A``/``B`` update is the support of the normalised table the agent used
  (pymdp's ``A[m] > 0``): before the first refresh that is the table the model was given, after
  it the support of the counts. Once a table is refreshed from its counts the two agree, so a
  :class:`DirichletCounts` keeps one boolean mask per table and switches it at the first refresh.
* **Scopes.** ``shared``: one set of counts for all agents of a group; a tick's increment is the
  sum of every agent's (one batched reduction, a matrix product). ``per_agent``: counts of shape
  ``(N, ...)``; each agent's increment touches only its own row (one gather-scatter).
* **Forgetting** (not in pymdp): before each update, ``p <- p0 + (1 - forgetting) * (p - p0)``,
  a decay toward the prior ``p0`` so that a world that changed is learned again. With
  ``forgetting = 0`` the update is pymdp's exactly.
* **Deltas for the fleet.** Besides the counts, :class:`DirichletCounts` accumulates the
  experience added since the last report (``experience``, one model's size whatever the scope,
  unaffected by forgetting) and a ``version`` that every update increments, so a node can publish
  "what I learned since version v" and a hub can add such deltas to a prior.

Shapes: ``N`` agents; ``qs[f]`` ``(N, S_f)`` float; ``obs`` ``(N, M)`` int; ``actions``
``(N, F)`` int. The joint state space is ``S = S_0 * ... * S_{F-1}`` in C order (pymdp's
``spm_cross``). Kernels take every array as an argument and write into ``out`` where one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ModelError

Scope = Literal["shared", "per_agent"]
#: What counts are stored in (see ``COUNTS_STORAGE_BOUND``).
CountsDtype = Literal["float64", "float32"]
FloatArray = NDArray[np.float64]

#: pymdp's ``EPS_VAL``, added inside ``spm_wnorm``.
EPS = 1e-16


# -- pure kernels ---------------------------------------------------------------------------------
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


# -- settings and state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LearningSettings:
    """What a group learns and how (pymdp's names: ``lr_pA``, ``lr_pB``, ``lr_pD``).

    ``modalities``/``factors``: the indices learned (``None``: every table that has counts).
    ``forgetting`` in ``[0, 1)``: the share of the learned difference from the prior lost at
    each update (0 = pymdp, no forgetting).
    """

    lr_pA: float = 1.0
    lr_pB: float = 1.0
    lr_pD: float = 1.0
    forgetting: float = 0.0
    scope: Scope = "shared"
    #: ``float32`` halves the counts' memory (per-agent scope); its error against float64
    #: counts is bounded by :func:`counts_storage_bound`.
    counts_dtype: CountsDtype = "float64"

    def __post_init__(self) -> None:
        for name in ("lr_pA", "lr_pB", "lr_pD"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise ModelError(f"{name} = {value}: a learning rate is a finite number >= 0")
        if not 0.0 <= self.forgetting < 1.0:
            raise ModelError(f"forgetting = {self.forgetting}: expected 0 <= forgetting < 1")
        if self.scope not in ("shared", "per_agent"):
            raise ModelError(f"scope = {self.scope!r}: expected 'shared' or 'per_agent'")
        if self.counts_dtype not in ("float64", "float32"):
            raise ModelError(
                f"counts_dtype = {self.counts_dtype!r}: expected 'float64' or 'float32'"
            )


def check_counts(name: str, counts: np.ndarray, table: np.ndarray) -> FloatArray:
    """Validate Dirichlet counts against the table they parameterise; one clear line if not."""
    p = np.asarray(counts, dtype=np.float64)
    if p.shape != table.shape:
        raise ModelError(
            f"p{name} has shape {p.shape}, expected {table.shape} (the shape of {name})"
        )
    if not np.all(np.isfinite(p)):
        raise ModelError(f"p{name} has NaN or infinite counts")
    if np.any(p < 0):
        raise ModelError(f"p{name} has negative counts (a Dirichlet count is >= 0)")
    never = (table > 0) & (p <= 0)
    if np.any(never):
        where = tuple(int(i) for i in np.argwhere(never)[0])
        raise ModelError(
            f"p{name} is 0 at {where} where {name} is {float(table[where]):.3g}: "
            "a zero count can never be learned and would make that entry 0 at the first update"
        )
    return p


#: Unit roundoff of float32 storage: a stored value is the exact one times ``1 + d``, |d| <= it.
FLOAT32_ROUNDOFF = 2.0**-24


def counts_storage_bound(updates: int, largest_count: float) -> float:
    """Bound on ``|c32 - c64|`` for any count after ``updates`` updates: counts stored in float32
    against the same updates applied to float64 counts (the increments themselves are computed
    in float64 either way).

    Every update rounds a count at most 4 times (forgetting's subtract, scale and add back, then
    the increment), each time by at most ``FLOAT32_ROUNDOFF`` of a value below
    ``largest_count`` (the largest float64 count, prior or learned, over the run), and the prior
    is rounded once when stored; forgetting only shrinks earlier errors. Hence
    ``(4 * updates + 1) * 2**-24 * largest_count``. The table an agent uses, ``c / sum(c)``,
    then moves by at most ``2 * bound / column_sum`` per entry."""
    return (4 * updates + 1) * FLOAT32_ROUNDOFF * largest_count


@dataclass
class DirichletCounts:
    """The counts of one kind of table (``A``, ``B`` or ``D``) that a group learns.

    ``tables``: which modality/factor each entry is; ``prior``: the counts at load (forgetting
    decays toward them); ``counts``: now (``(N, ...)`` per agent, else the table's shape);
    ``mask``: where updates may land (see the module doc); ``experience``: the sum of every
    increment since :meth:`take_delta` (one table's shape whatever the scope).
    """

    kind: Literal["A", "B", "D"]
    tables: tuple[int, ...]
    prior: list[FloatArray]
    counts: list[FloatArray]
    mask: list[NDArray[np.bool_]]
    experience: list[FloatArray]
    scope: Scope = "shared"
    version: int = 0
    reported_version: int = 0
    #: The version at which the counts were last their prior (0 at load; :meth:`reset`).
    reset_at: int = 0
    refreshed: bool = False
    touched: list[NDArray[np.bool_]] = field(default_factory=list)
    #: Per table, the float64 scratch a shared update writes its gain into (no allocation
    #: per tick).
    scratch: list[FloatArray] = field(default_factory=list, repr=False)
    #: The mask each scratch is 0 outside of.
    _gain_masks: list[NDArray[np.bool_]] = field(default_factory=list, repr=False)

    @classmethod
    def create(
        cls,
        kind: Literal["A", "B", "D"],
        priors: dict[int, np.ndarray],
        tables: Sequence[np.ndarray],
        scope: Scope = "shared",
        n_agents: int = 1,
        *,
        dtype: CountsDtype = "float64",
    ) -> DirichletCounts:
        """Counts for the tables named in ``priors`` (index -> counts), checked against
        ``tables`` (the model's normalised ``A``, ``B`` or ``D``), stored in ``dtype``."""
        indices = tuple(sorted(priors))
        prior, counts, mask, experience, touched = [], [], [], [], []
        for i in indices:
            if not 0 <= i < len(tables):
                what = "modality" if kind == "A" else "factor"
                raise ModelError(
                    f"p{kind}{i}: learning asked for {what} {i}, the model has {len(tables)}"
                )
            p = check_counts(f"{kind}{i}", priors[i], tables[i])
            prior.append(p.astype(dtype))
            counts.append(np.broadcast_to(p, (n_agents, *p.shape)).astype(dtype)
                          if scope == "per_agent" else p.astype(dtype))
            # D's mask is its counts' support (pymdp's update_D); A's and B's the table's.
            mask.append(p > 0 if kind == "D" else tables[i] > 0)
            experience.append(np.zeros(p.shape, dtype=dtype))
            touched.append(np.zeros(p.shape[1:] if kind != "D" else (1,), dtype=bool))
        return cls(kind, indices, prior, counts, mask, experience, scope, touched=touched)

    @property
    def nbytes(self) -> int:
        """Bytes held: counts, prior, mask, experience and the touched-columns flags."""
        arrays = [*self.prior, *self.counts, *self.mask, *self.experience, *self.touched]
        return sum(a.nbytes for a in arrays)

    def add(self, slot: int, increment: np.ndarray, lr: float, forgetting: float) -> None:
        """One shared update of table ``slot`` (a position in ``tables``): forget, then add
        ``lr * mask * increment`` (``increment`` summed over agents)."""
        gain = self._gain(slot)  # lr * mask * increment: 0 outside the mask already
        np.multiply(increment, lr, out=gain, where=self.mask[slot])
        self._forget(slot, forgetting)
        self.counts[slot] += gain
        self.experience[slot] += gain
        if self.kind != "D":
            touched = self.touched[slot].reshape(-1)
            touched |= increment.reshape(increment.shape[0], -1).any(axis=0)
        self.version += 1

    def add_entries(
        self, slot: int, index: np.ndarray, values: FloatArray, lr: float, forgetting: float
    ) -> None:
        """:meth:`add` of an increment given by its entries: ``values`` (float64, scaled by
        ``lr`` in place) at ``index`` into the table flattened, repeats summed; the entries
        must lie in the mask (a support's, :func:`a_increment_support` with ``dense=False``)."""
        values *= lr
        self._forget(slot, forgetting)
        np.add.at(self.counts[slot].reshape(-1), index, values)
        np.add.at(self.experience[slot].reshape(-1), index, values)
        columns = self.touched[slot].size
        self.touched[slot].reshape(-1)[index[values != 0] % columns] = True
        self.version += 1

    def _gain(self, slot: int) -> FloatArray:
        """The float64 scratch of one shared update of table ``slot``: made at the first, and
        0 outside the slot's mask (filled with 0 again when the mask is replaced), so that
        :meth:`add` writes only where the mask is true."""
        while len(self.scratch) <= slot:
            self.scratch.append(np.zeros(self.prior[len(self.scratch)].shape))
            self._gain_masks.append(self.mask[len(self._gain_masks)])
        if self._gain_masks[slot] is not self.mask[slot]:
            self.scratch[slot].fill(0.0)
            self._gain_masks[slot] = self.mask[slot]
        return self.scratch[slot]

    def add_rows(
        self, slot: int, rows: tuple[np.ndarray, ...], increment: np.ndarray, lr: float,
        forgetting: float, *, agents: np.ndarray | None = None,
    ) -> None:
        """One per-agent update: agent ``n``'s counts gain ``lr * mask[rows] * increment[n]``
        at ``counts[n][rows_n]`` (``rows``: index arrays into the table, one per leading axis
        the agent's observation or action picks; ``increment`` ``(N, ...)`` the rest).
        ``agents``: the agents the rows are for (all by default); only their counts forget."""
        counts = self.counts[slot]
        if agents is None:
            agents = np.arange(counts.shape[0])
        self._forget(slot, forgetting, agents)
        if self.kind == "B":  # rows = (action,): counts[n, :, :, a_n]
            (action,) = rows
            gain = lr * np.moveaxis(self.mask[slot][:, :, action], -1, 0) * increment
            counts[agents, :, :, action] += gain
            np.add.at(self.experience[slot].transpose(2, 0, 1), action, gain)
            self.touched[slot][:, np.unique(action)] = True
        elif self.kind == "A":  # rows = (obs,): counts[n, o_n]
            (obs,) = rows
            gain = lr * self.mask[slot].reshape(self.mask[slot].shape[0], -1)[obs] * increment
            flat = counts.reshape(counts.shape[0], counts.shape[1], -1)
            flat[agents, obs] += gain
            np.add.at(self.experience[slot].reshape(self.experience[slot].shape[0], -1), obs, gain)
            self.touched[slot] |= (increment != 0).any(axis=0).reshape(self.touched[slot].shape)
        else:  # D: counts[n] += lr * (pD > 0) * qs_n
            gain = lr * self.mask[slot] * increment
            counts[agents] += gain
            self.experience[slot] += gain.sum(axis=0)
        self.version += 1

    def _forget(self, slot: int, forgetting: float, agents: np.ndarray | None = None) -> None:
        """Decay table ``slot`` toward its prior (per agent: the rows of ``agents``, all by
        default); the columns that still differ from it change, so they count as touched (an
        int8 refresh re-encodes them)."""
        if not forgetting:
            return
        counts = self.counts[slot]
        if self.scope == "per_agent" and agents is not None and len(agents) < len(counts):
            rows = counts[agents]
            if self.kind != "D":
                self.touched[slot] |= (rows != self.prior[slot]).any(axis=(0, 1))
            forget(rows, self.prior[slot], forgetting)
            counts[agents] = rows
            return
        if self.kind != "D":
            axes = (0, 1) if self.scope == "per_agent" else (0,)
            self.touched[slot] |= (counts != self.prior[slot]).any(axis=axes)
        forget(counts, self.prior[slot], forgetting)

    @property
    def learned(self) -> bool:
        """Whether the counts were updated since they were last their prior (until then the
        agents infer with the table the model was given)."""
        return self.version > self.reset_at

    def reset(self, tables: Sequence[np.ndarray]) -> None:
        """Back to the prior, as at load: counts, the experience not yet reported, the
        touched columns and the masks (the support of ``tables``, the model's own ``A``, ``B``
        or ``D`` by modality/factor, which the agents infer with again). The version goes on:
        ``version`` is bumped and becomes :attr:`reset_at` and the start of the next delta
        (:meth:`take_delta`), so a reader of deltas sees that the counts started over."""
        for slot, index in enumerate(self.tables):
            self.counts[slot][...] = self.prior[slot]  # per agent: every agent's row
            self.experience[slot].fill(0.0)
            self.touched[slot].fill(False)
            if self.kind != "D":
                self.mask[slot] = np.asarray(tables[index]) > 0
        self.refreshed = False
        self.version += 1
        self.reset_at = self.reported_version = self.version

    def normalised(self, slot: int) -> FloatArray:
        """The table the counts stand for (``(N, ...)`` per agent)."""
        axis = 1 if self.scope == "per_agent" else 0
        return normalise(self.counts[slot], axis=axis)

    def mark_refreshed(self) -> None:
        """The agents now infer with the normalised counts: masks become the counts' support
        (pymdp's ``A = norm(pA)`` after an update), touched columns are cleared."""
        if not self.refreshed and self.kind != "D":
            for slot, p in enumerate(self.prior):
                self.mask[slot] = p > 0
        self.refreshed = True
        for t in self.touched:
            t.fill(False)

    def take_delta(self) -> tuple[int, int, list[FloatArray]]:
        """``(from_version, to_version, experience)`` since the last call, then start anew."""
        delta = [e.copy() for e in self.experience]
        for e in self.experience:
            e.fill(0.0)
        start, self.reported_version = self.reported_version, self.version
        return start, self.version, delta


@dataclass(frozen=True, eq=False)
class LearningSpec:
    """What an agent group learns: prior counts by modality/factor, the settings, and how often
    the tables the agents infer with are refreshed from the counts (``refresh_every`` ticks;
    1 = every tick, pymdp's behaviour)."""

    pA: dict[int, np.ndarray] = field(default_factory=dict)
    pB: dict[int, np.ndarray] = field(default_factory=dict)
    pD: dict[int, np.ndarray] = field(default_factory=dict)
    settings: LearningSettings = field(default_factory=LearningSettings)
    refresh_every: int = 1
    #: Add the information gain about pA and pB to the expected free energy (pymdp's
    #: ``use_param_info_gain``): agents seek what they do not know yet.
    param_info_gain: bool = False

    def __post_init__(self) -> None:
        if not (self.pA or self.pB or self.pD):
            raise ModelError("learning asked for, but no pA, pB or pD counts were given")
        if self.refresh_every < 1:
            raise ModelError(f"refresh_every = {self.refresh_every}: expected >= 1 tick")


class _FewScratch(NamedTuple):
    """The few-outcome ``pA`` product's scratch, made for ``agents`` agents (a group that
    resizes gets another at its next tick)."""

    agents: int
    #: The state-major joint posterior ``(S_joint, N)`` (several factors), else ``qs[0]``.
    joint: np.ndarray
    #: The factors' state-major copies (two factors), else empty.
    factors: list[np.ndarray]
    #: The one-hot outcomes ``(O_m, N)`` by modality.
    onehots: dict[int, np.ndarray]


class Learner:
    """Updates a group's counts from one tick's experience: the batched driver of the kernels.

    ``pA``/``pB``/``pD`` map a modality/factor index to its prior counts (pymdp's keys ``pA0``..
    name them); ``A``, ``B``, ``D`` are the model's normalised tables. Call :meth:`learn_A` with
    this tick's observations and posteriors, :meth:`learn_B` with the posteriors before and after
    the action the agents took, :meth:`learn_D` with the posterior a trial is summarised by.
    """

    def __init__(
        self,
        A: Sequence[np.ndarray],
        B: Sequence[np.ndarray],
        D: Sequence[np.ndarray],
        *,
        pA: dict[int, np.ndarray] | None = None,
        pB: dict[int, np.ndarray] | None = None,
        pD: dict[int, np.ndarray] | None = None,
        settings: LearningSettings | None = None,
        n_agents: int = 1,
    ) -> None:
        self.settings = settings or LearningSettings()
        scope = self.settings.scope
        self.num_obs = tuple(int(a.shape[0]) for a in A)
        self.num_controls = tuple(int(b.shape[2]) for b in B)
        dtype = self.settings.counts_dtype
        self.pA = DirichletCounts.create("A", pA or {}, A, scope, n_agents,
                                         dtype=dtype) if pA else None
        self.pB = DirichletCounts.create("B", pB or {}, B, scope, n_agents,
                                         dtype=dtype) if pB else None
        self.pD = DirichletCounts.create("D", pD or {}, D, scope, n_agents,
                                         dtype=dtype) if pD else None
        self.num_states = tuple(int(d.shape[0]) for d in D)
        self.num_states_joint = int(np.prod(self.num_states))
        #: Scratch of the shared updates by name, sized by the agents of the last tick (a
        #: group that resizes gets new ones at its next tick, none in the ticks between).
        self._scratch: dict[str, np.ndarray] = {}
        #: Per pA slot: the mask it was made from and its support_index.
        self._supports: dict[int, tuple[np.ndarray, ASupport | None]] = {}
        #: Per pB slot: the mask it was made from, its transition_support and, when it has
        #: one, the scratch of the support's sums (posteriors' dtype) and values (float64).
        self._b_supports: dict[
            int, tuple[np.ndarray, TransitionSupport | None, dict[str, np.ndarray]]
        ] = {}
        #: The most the pB supports and their scratch take, over the masks a table can have
        #: (the model's table's support, the counts' from the first refresh on).
        self._b_support_nbytes = 0
        #: Per pA slot: whether its modality has few outcomes (the one-hot product), and then
        #: its outcomes ``(O, 1)`` to compare the observations with.
        tables_A = self.pA.tables if self.pA is not None else ()
        self._few = tuple(self.num_obs[m] <= FEW_OUTCOMES for m in tables_A)
        self._outcomes = {m: np.arange(self.num_obs[m], dtype=np.intp)[:, None]
                          for m, few in zip(tables_A, self._few, strict=True) if few}
        #: The few-outcome product's scratch for the agents of the last tick.
        self._few_scratch: _FewScratch | None = None
        if self.pB is not None and scope == "shared":
            for slot, prior in enumerate(self.pB.prior):
                sizes = [0]
                for mask in (self.pB.mask[slot], prior > 0):
                    support = transition_support(mask)
                    if support is not None:  # and its scratch, posteriors of 8 bytes at most
                        sizes.append(support.nbytes + sum(
                            a.nbytes for a in b_support_scratch(support, np.dtype(np.float64))
                            .values()))
                self._b_support_nbytes += max(sizes)

    def _support(self, slot: int) -> ASupport | None:
        """:func:`support_index` of ``pA`` table ``slot``'s mask and its
        :func:`support_entries`, made again when the mask is replaced (at the first refresh)."""
        assert self.pA is not None
        mask = self.pA.mask[slot]
        cached = self._supports.get(slot)
        if cached is None or cached[0] is not mask:
            flat_mask = mask.reshape(mask.shape[0], -1)
            support = support_index(flat_mask)
            found = None if support is None else (
                support, *support_entries(support, flat_mask.shape[1])
            )
            cached = self._supports[slot] = (mask, found)
        return cached[1]

    def _transition_support(
        self, slot: int, dtype: np.dtype[Any]
    ) -> tuple[TransitionSupport | None, dict[str, np.ndarray]]:
        """:func:`transition_support` of ``pB`` table ``slot``'s mask and its scratch
        (:func:`b_support_scratch`), made again when the mask is replaced (at the first refresh)
        or the posteriors' dtype changes."""
        assert self.pB is not None
        mask = self.pB.mask[slot]
        cached = self._b_supports.get(slot)
        if cached is None or cached[0] is not mask or (
            cached[1] is not None and cached[2]["sums"].dtype != dtype
        ):
            support = transition_support(mask)
            scratch = {} if support is None else b_support_scratch(support, dtype)
            cached = self._b_supports[slot] = (mask, support, scratch)
        return cached[1], cached[2]

    def _buffer(
        self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any] | None = None
    ) -> np.ndarray:
        """The scratch ``name`` of ``shape`` and ``dtype`` (float64 by default), made again
        only when either changes."""
        want = np.dtype(np.float64) if dtype is None else dtype
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != want:
            buf = self._scratch[name] = np.empty(shape, dtype=want)
        return buf

    @property
    def counts(self) -> list[DirichletCounts]:
        return [c for c in (self.pA, self.pB, self.pD) if c is not None]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.counts)

    @property
    def gain_nbytes(self) -> int:
        """The shared updates' scratch of one model's size: the float64 gain, one per learned
        ``A``/``B`` table, and the support of each learned ``B`` with its sums and values
        (:func:`transition_support`; the larger of the two masks it can have). None per
        agent: the per-agent scope writes into the counts' rows."""
        if self.settings.scope != "shared":
            return 0
        dense = sum(p.size * 8 for c in self.counts if c.kind != "D" for p in c.prior)
        return dense + self._b_support_nbytes

    def scratch_bytes_per_agent(self, itemsize: int) -> int:
        """Bound on the shared updates' scratch per agent (:meth:`_buffer`), for posteriors of
        ``itemsize`` bytes: the state-major joint, the one-hot tables of few-outcome modalities,
        and per other modality the grouped rows or the support gather (``k <= S / 4``); for
        ``B``, the agent's one-hot action (of the learned factor with the most actions)."""
        if self.settings.scope != "shared":
            return 0
        total = 0
        if self.pB is not None:  # per agent: its one-hot action (the rest is per model)
            total += itemsize * max(self.num_controls[f] for f in self.pB.tables)
        if self.pA is None:
            return total
        S = self.num_states_joint
        few = [self.num_obs[m] <= FEW_OUTCOMES for m in self.pA.tables]
        if any(few):  # the joint and, for several factors, each factor state-major
            total += 8 * S + (8 * sum(self.num_states) if len(self.num_states) > 1 else 0)
        for m, is_few in zip(self.pA.tables, few, strict=True):
            total += 8 * self.num_obs[m] if is_few else 0
        if not all(few):
            total += S * max(itemsize, 8) + (S // 4 + 1) * (16 + max(itemsize, 8)) + 8
        return total

    def learn_A(  # noqa: N802 - pymdp's table names
        self, obs: np.ndarray, qs: Sequence[np.ndarray]
    ) -> None:
        """``obs`` ``(N, M)``, ``qs[f]`` ``(N, S_f)``: the posterior after observing ``obs``."""
        if self.pA is None:
            return
        s = self.settings
        n = qs[0].shape[0]
        shared = s.scope == "shared"
        few = self._few
        plan = self._few_scratch
        if shared and any(few) and (plan is None or plan.agents != n):
            several = len(qs) > 1
            plan = self._few_scratch = _FewScratch(
                n,
                self._buffer("joint", (self.num_states_joint, n)) if several else qs[0],
                [self._buffer(f"factor{f}", (q.shape[1], n)) for f, q in enumerate(qs)]
                if len(qs) == 2 else [],
                {m: self._buffer(f"onehot{m}", (self.num_obs[m], n))
                 for m, is_few in zip(self.pA.tables, few, strict=True) if is_few},
            )
        if shared and any(few) and len(qs) > 1:
            assert plan is not None
            # One product into a state-major buffer; its transposed view is (N, S).
            joint = joint_states_major(qs, plan.joint, plan.factors).T
        else:
            joint = joint_states(qs)
        for slot, m in enumerate(self.pA.tables):
            found = self._support(slot) if shared and not few[slot] else None
            if found is not None and joint.flags.c_contiguous:
                support, entry, flat = found
                k = entry.shape[1]
                S = joint.shape[1]
                offset = self._scratch.get(f"rows_offset{S}")
                if offset is None or offset.shape[0] != n:
                    offset = self._scratch[f"rows_offset{S}"] = np.arange(n)[:, None] * S
                cols = self._buffer("support_cols", (n, k), np.dtype(np.intp))
                vals = self._buffer("support_vals", (n, k))
                gathered = self._buffer("support_gathered", (n, k), joint.dtype)
                if n * k <= len(flat):
                    # Fewer entries than the support has (few agents): each is added where
                    # it falls.
                    a_increment_support(obs[:, m], joint, support, rows_offset=offset,
                                        cols_out=cols, vals_out=vals, gathered_out=gathered,
                                        dense=False)
                    self.pA.add_entries(slot, cols.reshape(-1), vals.reshape(-1), s.lr_pA,
                                        s.forgetting)
                else:  # summed per entry of the support, then added there
                    sums = a_sums_support(
                        obs[:, m], joint, support[0], entry, len(flat), rows_offset=offset,
                        index_out=cols, gathered_out=vals if joint.dtype == vals.dtype
                        else gathered, values_out=vals)
                    self.pA.add_entries(slot, flat, sums, s.lr_pA, s.forgetting)
            elif shared:
                onehot_out = rows_out = None
                if few[slot]:
                    assert plan is not None
                    onehot_out = plan.onehots[m]
                else:
                    rows_out = self._buffer("rows", joint.shape, joint.dtype)
                inc = a_increment_shared(obs[:, m], joint, self.num_obs[m], onehot_out, rows_out,
                                         outcomes=self._outcomes.get(m))
                self.pA.add(slot, inc.reshape(self.pA.prior[slot].shape), s.lr_pA, s.forgetting)
            else:
                self.pA.add_rows(slot, (obs[:, m],), joint, s.lr_pA, s.forgetting)

    def learn_B(  # noqa: N802 - pymdp's table names
        self,
        qs: Sequence[np.ndarray],
        qs_prev: Sequence[np.ndarray],
        actions: np.ndarray,
        acted: np.ndarray | None = None,
    ) -> None:
        """``actions`` ``(N, F)``: what each agent did between ``qs_prev`` and ``qs``;
        ``acted`` ``(N,)`` bool: the agents that did act (a trial's first step has no
        transition to learn from; ``None``: all)."""
        if self.pB is None:
            return
        s = self.settings
        if acted is not None and acted.all():
            acted = None
        if s.scope == "shared":
            for slot in range(len(self.pB.tables)):
                self._learn_B_shared(slot, qs, qs_prev, actions, acted)
            return
        agents = None if acted is None else np.flatnonzero(acted)
        if agents is not None:
            qs = [q[agents] for q in qs]
            qs_prev = [q[agents] for q in qs_prev]
            actions = actions[agents]
        for slot, f in enumerate(self.pB.tables):
            outer = qs[f][:, :, None] * qs_prev[f][:, None, :]
            self.pB.add_rows(slot, (actions[:, f],), outer, s.lr_pB, s.forgetting,
                             agents=agents)

    def _learn_B_shared(  # noqa: N802 - pymdp's table names
        self, slot: int, qs: Sequence[np.ndarray], qs_prev: Sequence[np.ndarray],
        actions: np.ndarray, acted: np.ndarray | None,
    ) -> None:
        """One shared ``pB`` table's update from the agents that ``acted`` (all: ``None``):
        on the support of its mask when that is sparse (:func:`b_increment_support`, the
        entries added where they fall; at most ``U`` agents: each agent's terms,
        :func:`b_entries_support`), else the dense products of :func:`b_increment_shared`."""
        assert self.pB is not None
        s = self.settings
        f = self.pB.tables[slot]
        q, q_prev, action = qs[f], qs_prev[f], actions[:, f]
        support, scratch = self._transition_support(slot, q.dtype)
        if support is None:
            if acted is not None:
                q, q_prev, action = q[acted], q_prev[acted], action[acted]
            inc = b_increment_shared(q, q_prev, action, self.num_controls[f])
            self.pB.add(slot, inc, s.lr_pB, s.forgetting)
            return
        n = q.shape[0]
        k, U, S = support.targets.shape
        if n <= min(U, scratch["index"].shape[0]):
            # Fewer terms than the support has entries (a few agents): each is added where it
            # falls.
            entries, terms = b_entries_support(
                q, q_prev, action, support, acted=acted, local_offset=scratch["offset"],
                index_out=scratch["index"][:n], gathered_out=scratch["gathered"][:n],
                entries_out=scratch["entries"].reshape(-1)[: k * n * S].reshape(k, n, S),
                values_out=scratch["values"].reshape(-1)[: k * n * S].reshape(k, n, S),
            )
            self.pB.add_entries(slot, entries.reshape(-1), terms.reshape(-1), s.lr_pB,
                                s.forgetting)
            return
        values = b_increment_support(
            np.ascontiguousarray(q), q_prev, action, support, acted=acted,
            local_offset=scratch["offset"], index_out=scratch["index"],
            gathered_out=scratch["gathered"],
            onehot_out=self._buffer("b_onehot", (self.num_controls[f], n), q.dtype),
            partial_out=scratch["partial"], sums_out=scratch["sums"],
            values_out=scratch["values"],
        )
        if support.padded:
            np.multiply(values, support.weights, out=values)  # a pad's value 0
        self.pB.add_entries(slot, support.flat.reshape(-1), values.reshape(-1), s.lr_pB,
                            s.forgetting)

    def learn_D(  # noqa: N802 - pymdp's table names
        self, qs: Sequence[np.ndarray], agents: np.ndarray | None = None
    ) -> None:
        """``qs[f]`` ``(n, S_f)``: the posterior that sums a trial up, for the ``agents`` whose
        trial ended (per-agent counts; all by default)."""
        if self.pD is None:
            return
        s = self.settings
        for slot, f in enumerate(self.pD.tables):
            if s.scope == "shared":
                self.pD.add(slot, qs[f].sum(axis=0), s.lr_pD, s.forgetting)
            else:
                self.pD.add_rows(slot, (), qs[f], s.lr_pD, s.forgetting, agents=agents)
