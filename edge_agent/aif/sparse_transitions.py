"""Each agent's own transition table kept on its support: pure batched float64 kernels.

A learned ``B[f]`` is non-zero only where its prior counts are (the counts grow on the table's
support, and the table is their expectation): grid10's moves have one target per column, 500
of its 50,000 entries. :class:`SparseTransitions` keeps each agent's table on that support,
row by row, so that applying it to a belief, the prior of the next tick and every one-step
policy's predicted state, reads ``N x U x S x k`` values instead of ``N x U x S x S``, and a
refresh normalises only the ``(agent, action)`` tables that moved, by gathering their counts
on the support (:func:`normalise_touched`).

Shapes: a table ``(S, S, U)`` (pymdp's ``B[f]``: next state, state, action); per-agent counts
``(N, S, S, U)``; ``q`` ``(N, S)``; actions ``(N,)`` int.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_agent.aif.learning_kernels import support_index, transition_support

__all__ = [
    "SparseTransitions",
    "apply_action",
    "apply_all",
    "apply_each",
    "dense",
    "fill_from_table",
    "normalise_touched",
    "sparse_transitions",
]


class SparseTransitions(NamedTuple):
    """``N`` agents' ``B[f]`` on one support ``(S, S, U)`` they share.

    ``values`` ``(N, U, S, k)`` float64: ``B[n, i, sources[u, i, r], u]``, 0 for a pad (a row
    with fewer than ``k`` sources); ``sources`` ``(U, S, k)`` intp, the states each row is
    reached from (a pad: 0); ``rows`` ``(U, S, k)`` intp, each entry's index into the table
    flattened (C order, ``(S, S, U)``); ``weights`` ``(U, S, k)`` float64, 1 or 0 for a pad;
    ``columns`` ``(U, S, kc)`` intp and ``column_weights`` ``(U, S, kc)``: the same for each
    column (the entries a column's sum adds)."""

    values: np.ndarray
    sources: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    columns: np.ndarray
    column_weights: np.ndarray

    @property
    def per_agent_nbytes(self) -> int:
        """One agent's values."""
        return int(self.values[0].nbytes) if len(self.values) else 0


def sparse_transitions(support: np.ndarray, n_agents: int) -> SparseTransitions | None:
    """The structure of ``n_agents`` tables on ``support`` ``(S, S, U)`` bool (values 0), or
    ``None`` when some row or column of some action has more than
    :data:`~edge_agent.aif.learning_kernels.SPARSE_SUPPORT` of the states in it (a dense table
    is applied faster as it is)."""
    S, _, U = support.shape
    by_row = [support_index(np.ascontiguousarray(support[:, :, u])) for u in range(U)]
    by_column = transition_support(support)
    if by_column is None or any(found is None for found in by_row):
        return None
    k = max(found[0].shape[1] for found in by_row if found is not None)
    sources = np.zeros((U, S, k), dtype=np.intp)
    weights = np.zeros((U, S, k))
    for u, found in enumerate(by_row):
        assert found is not None
        cols, w = found
        sources[u, :, : cols.shape[1]] = cols
        weights[u, :, : w.shape[1]] = w
    rows = (np.arange(S)[None, :, None] * S + sources) * U + np.arange(U)[:, None, None]
    return SparseTransitions(
        values=np.zeros((n_agents, U, S, k)),
        sources=sources,
        rows=rows,
        weights=weights,
        columns=np.ascontiguousarray(by_column.flat.transpose(1, 2, 0)),
        column_weights=np.ascontiguousarray(by_column.weights.transpose(1, 2, 0)),
    )


def fill_from_table(st: SparseTransitions, table: np.ndarray) -> None:
    """Every agent's values from one table ``(S, S, U)`` (zero outside the support)."""
    np.multiply(table.reshape(-1)[st.rows], st.weights, out=st.values[0])
    st.values[1:] = st.values[0]


def normalise_touched(
    st: SparseTransitions, counts: np.ndarray, agents: np.ndarray, actions: np.ndarray
) -> None:
    """``values[agents[i], actions[i]]`` become the counts' expectation: each entry over its
    column's sum (pymdp's ``B = pB / pB.sum(0)``; the counts are 0 off the support).
    ``counts`` ``(N, S, S, U)``; ``agents``, ``actions`` ``(m,)`` intp."""
    flat = counts.reshape(counts.shape[0], -1)
    who = agents[:, None, None]
    column_sums = np.einsum("msk,msk->ms", flat[who, st.columns[actions]],
                            st.column_weights[actions], dtype=np.float64)
    numerators = np.asarray(flat[who, st.rows[actions]], dtype=np.float64)
    denominators = column_sums[np.arange(len(agents))[:, None, None], st.sources[actions]]
    out = np.zeros_like(numerators)
    np.divide(numerators, denominators, out=out, where=st.weights[actions] > 0)
    st.values[agents, actions] = out


def apply_action(st: SparseTransitions, q: np.ndarray, u: int) -> np.ndarray:
    """``(N, S)``: every agent's ``B[:, :, u] @ q[n]``."""
    out: np.ndarray = np.einsum("nsk,nsk->ns", st.values[:, u], q[:, st.sources[u]])
    return out


def apply_each(st: SparseTransitions, q: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``(N, S)``: each agent's ``B[:, :, action[n]] @ q[n]``."""
    n = np.arange(q.shape[0])
    gathered = q[n[:, None, None], st.sources[action]]
    out: np.ndarray = np.einsum("nsk,nsk->ns", st.values[n, action], gathered)
    return out


def apply_all(st: SparseTransitions, q: np.ndarray) -> np.ndarray:
    """``(N, U, S)``: every agent's ``B[:, :, u] @ q[n]`` for every action ``u``."""
    out: np.ndarray = np.einsum("nusk,nusk->nus", st.values, q[:, st.sources])
    return out


def dense(st: SparseTransitions) -> np.ndarray:
    """``(N, S, S, U)``: the agents' tables in full (for inspection and tests)."""
    n, U, S, _ = st.values.shape
    out = np.zeros((n, S * S * U))
    for u in range(U):
        keep = st.weights[u] > 0
        out[:, st.rows[u][keep]] = st.values[:, u][:, keep]
    return out.reshape(n, S, S, U)
