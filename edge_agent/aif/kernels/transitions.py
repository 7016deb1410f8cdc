"""Transitions: one factor's ``B``, dense or column-sparse, and beliefs propagated through it.

Part of :mod:`edge_agent.aif.kernels` (the package docstring has the whole picture). Every function
takes all its inputs as arguments; no I/O, no clock, no logging, no Python loop over agents (loops
run over action values and sparse-table layers, which are model constants). :func:`propagate` and
:func:`propagate_per_agent` are the general path's: agent-major ``(n_agents, ...)`` arrays, results
allocated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.quant import SPARSE_RATIO, LogU8, SparseColumns, decode_log_u8
from edge_agent.arrays import distinct


# --------------------------------------------------------------------------------------------
# transitions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DenseTransition:
    """``BT[u]`` is ``B[:, :, u].T`` so that ``q @ BT[u]`` predicts the next state."""

    BT: np.ndarray  # (U, S, S')

    @property
    def nbytes(self) -> int:
        return int(self.BT.nbytes)


@dataclass(frozen=True, eq=False)
class SparseTransition:
    """Per action, layers of ``(target, source, weight)`` with unique targets in each layer.

    ``out[..., tgt] += q[..., src] * w`` layer by layer predicts the next state; deterministic
    transitions have ``w is None`` and usually one layer that covers every target.
    """

    num_states: int
    layers: tuple[tuple[tuple[IndexArray, IndexArray, np.ndarray | None], ...], ...]  # [u][layer]
    full_first: tuple[bool, ...]  # [u]: first layer's targets are exactly 0..S-1 in order

    @functools.cached_property
    def entries(self) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
        """Every layer's entries in one run (actions, then layers, in order): their action,
        target and source, and where each layer starts (``len(layers)`` starts, one end)."""
        acts, tgts, srcs, starts = [], [], [], [0]
        for u, per_u in enumerate(self.layers):
            for tgt, src, _ in per_u:
                acts.append(np.full(len(tgt), u, dtype=np.intp))
                tgts.append(np.asarray(tgt, dtype=np.intp))
                srcs.append(np.asarray(src, dtype=np.intp))
                starts.append(starts[-1] + len(tgt))
        empty = np.zeros(0, dtype=np.intp)
        return (
            np.concatenate(acts) if acts else empty,
            np.concatenate(tgts) if tgts else empty,
            np.concatenate(srcs) if srcs else empty,
            np.asarray(starts, dtype=np.intp),
        )

    @functools.cached_property
    def layer_index(self) -> tuple[tuple[int, int], ...]:
        """``(action, layer)`` of each layer in :attr:`entries` order."""
        return tuple((u, j) for u, per_u in enumerate(self.layers) for j in range(len(per_u)))

    @property
    def nbytes(self) -> int:
        total = 0
        for per_u in self.layers:
            for tgt, src, w in per_u:
                total += tgt.nbytes + src.nbytes + (w.nbytes if w is not None else 0)
        return total


Transition = DenseTransition | SparseTransition


def make_transition(B: np.ndarray | LogU8 | SparseColumns, dtype: type[np.floating]) -> Transition:
    """Compile one factor's transitions from a dense float table or a quantized one.

    Column-sparse tables (quantized ``SparseColumns``, or dense float tables with at most
    ``S / SPARSE_RATIO`` non-zeros per column) become a :class:`SparseTransition`; the weights are
    the table's own values, so both forms compute the same products.
    """
    if isinstance(B, LogU8):
        B = decode_log_u8(B)
    if isinstance(B, np.ndarray):
        S, _, U = B.shape
        nonzero = B != 0
        k = int(nonzero.sum(axis=0).max())
        if k * SPARSE_RATIO > S:
            return DenseTransition(BT=np.ascontiguousarray(B.transpose(2, 1, 0), dtype=dtype))
        order = np.argsort(~nonzero, axis=0, kind="stable")[:k]  # non-zero rows first, (k, S, U)
        weights = np.take_along_axis(B, order, axis=0)
        return _sparse_transition(S, order, weights, dtype)
    S = B.num_states
    k, _, U = B.index.shape
    dense_w = np.ones((k, S, U)) if B.values is None else decode_log_u8(B.values)
    return _sparse_transition(S, B.index.astype(np.intp), dense_w, dtype)


def _sparse_transition(
    S: int, index: np.ndarray, weights: np.ndarray, dtype: type[np.floating]
) -> SparseTransition:
    """Layers from ``k`` (target, weight) entries per column (``index``, ``weights``: (k, S, U))."""
    k, _, U = index.shape
    per_u = []
    full_first = []
    for u in range(U):
        tgt = index[:, :, u].astype(np.intp).ravel()
        src = np.broadcast_to(np.arange(S), (k, S)).ravel()
        w = weights[:, :, u].ravel()
        keep = w > 0
        tgt, src, w = tgt[keep], src[keep], w[keep]
        # Split into layers where each target appears at most once.
        order = np.lexsort((src, tgt))
        tgt, src, w = tgt[order], src[order], w[order]
        # Each entry's rank among its target's (the entries are sorted by target): its index
        # less the index where its target's run starts.
        starts = np.flatnonzero(np.diff(tgt, prepend=-1))
        rank = np.arange(len(tgt)) - np.repeat(starts, np.diff(starts, append=len(tgt)))
        layers = []
        for r in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == r
            wr = w[sel].astype(dtype)
            layers.append((tgt[sel], src[sel], None if np.all(wr == 1) else wr))
        per_u.append(tuple(layers))
        full_first.append(bool(layers) and np.array_equal(layers[0][0], np.arange(S)))
    return SparseTransition(num_states=S, layers=tuple(per_u), full_first=tuple(full_first))


def refreshed_transition(
    old: Transition,
    B: np.ndarray | LogU8 | SparseColumns,
    columns: NDArray[np.bool_],
    dtype: type[np.floating],
) -> Transition:
    """What :func:`make_transition` makes of ``B``, a table whose columns other than ``columns``
    (a ``(S, U)`` mask: source state, action) are those ``old`` was made from. A dense ``old``
    whose new columns keep it dense (each has as many non-zeros as a dense table has) gets only
    those columns written, into a copy of its table; otherwise the transitions are made whole
    (a sparse one's layers follow every column's non-zeros)."""
    if isinstance(old, DenseTransition) and not isinstance(B, SparseColumns):
        if isinstance(B, LogU8):
            cols = decode_log_u8(LogU8(codes=B.codes[:, columns], top=B.top[columns],
                                       step=B.step[columns]))  # fmt: skip
        else:
            cols = np.asarray(B, dtype=np.float64)[:, columns]
        S = old.BT.shape[1]
        if np.all(np.count_nonzero(cols, axis=0) * SPARSE_RATIO > S):
            source, action = np.nonzero(columns)  # the order of cols' columns
            BT = old.BT.copy()
            BT[action, source, :] = cols.T
            BT.setflags(write=False)
            return DenseTransition(BT=BT)
    if isinstance(old, SparseTransition):
        same = _reweighted(old, B, columns, dtype)
        if same is not None:
            return same
    return make_transition(B, dtype)


def _moved_columns(B: np.ndarray | LogU8 | SparseColumns, columns: NDArray[np.bool_]) -> np.ndarray:
    """``(S, n)`` float64: ``B``'s columns ``columns`` (a ``(S, U)`` mask, in its C order) dense,
    as :func:`make_transition` reads them (int8: decoded)."""
    if isinstance(B, np.ndarray):
        return np.asarray(B, dtype=np.float64)[:, columns]
    if isinstance(B, LogU8):
        return decode_log_u8(LogU8(codes=B.codes[:, columns], top=B.top[columns],
                                   step=B.step[columns]))  # fmt: skip
    index = B.index[:, columns].astype(np.intp)  # (k, n)
    n = index.shape[1]
    weights = (np.ones(index.shape) if B.values is None else decode_log_u8(LogU8(
        codes=B.values.codes[:, columns], top=B.values.top[columns],
        step=B.values.step[columns])))  # fmt: skip
    out = np.zeros((B.num_states, n))
    keep = weights > 0  # (padding: target 0, weight 0)
    out[index[keep], np.broadcast_to(np.arange(n), index.shape)[keep]] = weights[keep]
    return out


def _reweighted(
    old: SparseTransition,
    B: np.ndarray | LogU8 | SparseColumns,
    columns: NDArray[np.bool_],
    dtype: type[np.floating],
) -> SparseTransition | None:
    """What :func:`make_transition` makes of ``B`` when its columns ``columns`` keep the
    non-zeros ``old`` has there (a learned table's support is its counts'): ``old``'s layers
    with only the weights of those columns' entries read again (the targets and sources are
    ``old``'s own arrays; a layer with no such entry is ``old``'s). None when a column's
    non-zeros are not ``old``'s there (make the transitions whole then)."""
    cols = _moved_columns(B, columns)  # (S, n)
    S, U = columns.shape
    position = np.full(S * U, -1, dtype=np.intp)
    position[np.flatnonzero(columns)] = np.arange(cols.shape[1])
    acts, tgts, srcs, starts = old.entries
    where = position[srcs * U + acts]
    sel = where >= 0
    values = cols[tgts[sel], where[sel]]
    # every non-zero of the moved columns must be one of old's entries there, and each > 0
    if not np.all(values > 0) or len(values) != np.count_nonzero(cols):
        return None
    hit = np.flatnonzero(sel)  # the moved columns' entries, in order; values[i] is hit[i]'s
    layer_of = np.searchsorted(starts, hit, side="right") - 1
    layers = [list(per_u) for per_u in old.layers]
    where_layer = old.layer_index
    for i in distinct(layer_of):
        u, j = where_layer[int(i)]
        tgt, src, w = layers[u][j]
        mine = layer_of == i
        full = np.ones(len(tgt), dtype=dtype) if w is None else np.array(w, dtype=dtype)
        full[hit[mine] - starts[i]] = values[mine]
        layers[u][j] = (tgt, src, None if np.all(full == 1) else full)
    new = SparseTransition(num_states=old.num_states, layers=tuple(map(tuple, layers)),
                           full_first=old.full_first)  # fmt: skip
    new.__dict__["entries"] = old.entries  # (the same structure: its entries are old's)
    new.__dict__["layer_index"] = old.layer_index
    return new


def entry_weights(trans: SparseTransition) -> np.ndarray:
    """float64: every entry's weight, in :attr:`SparseTransition.entries` order (1 in a layer
    whose weights are all one)."""
    parts = [np.ones(len(tgt)) if w is None else np.asarray(w, dtype=np.float64)
             for per_u in trans.layers for tgt, _, w in per_u]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0)


def source_rows(trans: SparseTransition, sources: IndexArray, u: int) -> np.ndarray:
    """``(len(sources), S)`` float64: row ``i`` is ``B[:, sources[i], u]`` (what
    :func:`propagate` gives a one-hot belief on each source), from the entries directly."""
    acts, tgts, srcs, _ = trans.entries
    S = trans.num_states
    position = np.full(S, -1, dtype=np.intp)
    position[sources] = np.arange(len(sources))
    pick = (acts == u) & (position[srcs] >= 0)
    rows = np.zeros((len(sources), S))
    rows[position[srcs[pick]], tgts[pick]] = entry_weights(trans)[pick]
    return rows


def same_structure(old: Transition, new: Transition) -> bool:
    """Whether ``new`` has ``old``'s layout: both dense (same shape), or both sparse with the same
    (target, source) entries in every action's layers (the weights may differ): the tables built
    from a transition's structure alone (index maps, the planners' slots, the scratch sizes)
    then serve both."""
    if isinstance(old, DenseTransition) or isinstance(new, DenseTransition):
        return (
            isinstance(old, DenseTransition)
            and isinstance(new, DenseTransition)
            and old.BT.shape == new.BT.shape
        )
    if old.num_states != new.num_states or len(old.layers) != len(new.layers):
        return False
    for mine, theirs in zip(old.layers, new.layers, strict=True):
        if len(mine) != len(theirs):
            return False
        for (t0, s0, _), (t1, s1, _) in zip(mine, theirs, strict=True):
            if not ((t0 is t1 or np.array_equal(t0, t1)) and (s0 is s1 or np.array_equal(s0, s1))):
                return False
    return True


def dense_table(trans: Transition) -> np.ndarray:
    """``B`` ``(S, S, U)`` float64 as ``trans`` holds it (its values in the compute dtype, as
    the kernels read them)."""
    if isinstance(trans, DenseTransition):
        return np.asarray(trans.BT, dtype=np.float64).transpose(2, 1, 0).copy()
    S = trans.num_states
    out = np.zeros((S, S, len(trans.layers)))
    for u, layers in enumerate(trans.layers):
        for tgt, src, w in layers:
            out[tgt, src, u] += 1.0 if w is None else np.asarray(w, dtype=np.float64)
    return out


def support_table(trans: Transition) -> NDArray[np.bool_]:
    """``(S, S, U)`` bool: where :func:`dense_table` of ``trans`` is non-zero, without making
    that table (a sparse table's entries add into distinct cells: a cell is non-zero where one
    of its weights is)."""
    if isinstance(trans, DenseTransition):
        dense: NDArray[np.bool_] = (trans.BT != 0).transpose(2, 1, 0)
        return dense
    S = trans.num_states
    out = np.zeros((S, S, len(trans.layers)), dtype=np.bool_)
    for u, layers in enumerate(trans.layers):
        for tgt, src, w in layers:
            if w is None:
                out[tgt, src, u] = True
            else:
                keep = np.asarray(w) != 0
                out[tgt[keep], src[keep], u] = True
    return out


def propagate(trans: Transition, q: np.ndarray, u: int) -> np.ndarray:
    """Predicted next state ``B[:, :, u] @ q`` for every row of ``q`` (shape ``(..., S)``)."""
    if isinstance(trans, DenseTransition):
        pred: np.ndarray = q @ trans.BT[u]
        return pred
    layers = trans.layers[u]
    if trans.full_first[u]:
        _, src, w = layers[0]
        out = np.take(q, src, axis=-1)
        if w is not None:
            out *= w
        rest = layers[1:]
    else:
        out = np.zeros(q.shape, dtype=q.dtype)
        rest = layers
    for tgt, src, w in rest:
        contrib = np.take(q, src, axis=-1)
        if w is not None:
            contrib *= w
        out[..., tgt] += contrib
    return out


def propagate_per_agent(trans: Transition, q: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``B[:, :, actions[n]] @ q[n]`` for every agent ``n``: loops over action values only."""
    out = np.empty_like(q)
    for u in distinct(actions):
        sel = actions == u
        out[sel] = propagate(trans, q[sel], int(u))
    return out
