"""A minimum-cost assignment of rows (a team task's slots) to columns (agents) over a sparse
graph (the bids), in integers: the same result, to the bit, on every CPU.

:func:`fixed_point` turns bid costs (float32 on the wire) into integers; :func:`assign` matches
rows to columns with shortest augmenting paths (the Jonker-Volgenant family, as Crouse's
rectangular variant that scipy's ``linear_sum_assignment`` uses), one row at a time, in the
order given. Every number is an int64 and every tie is broken by index, so nodes holding the
same bids compute the same assignment.

Rows that share a cost row share one edge list (a role's slots: every slot of a role costs an
agent the same), in CSR form: ``edges.indptr[g]:edges.indptr[g + 1]`` are the columns
``edges.cols`` and costs ``edges.costs`` of list ``g``; row ``i`` uses list ``row_list[i]``.

What it returns: a row that no augmenting path reaches is left unmatched (``-1``), so the rows
matched are the first maximal set, in row order, that can be matched at once (the greedy basis
of the transversal matroid: a row has no augmenting path later if it has none now), and among
the matchings of that set it is one of least total cost. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

COST_SCALE: Final = 1024
"""Fixed-point units per unit of cost: a cost is kept to 1/1024 (about 0.001 nats)."""
COST_LIMIT: Final = 1 << 40
"""Fixed-point costs are clipped to ``[-COST_LIMIT, COST_LIMIT]`` (about +-1e9 nats), so that
sums over a path of up to 4,096 rows stay far inside int64."""
_INF: Final = np.int64(1 << 62)


def fixed_point(costs: NDArray[np.floating]) -> IntArray:
    """``round(cost * COST_SCALE)``, clipped to ``COST_LIMIT``: exact for a float32 (its
    float64 is exact, the product by a power of two too, and ``rint`` rounds half to even the
    same way everywhere)."""
    scaled = np.rint(np.asarray(costs, dtype=np.float64) * COST_SCALE)
    return np.clip(scaled, -COST_LIMIT, COST_LIMIT).astype(np.int64)


class Edges(NamedTuple):
    """Edge lists in CSR form (module docstring)."""

    indptr: IntArray
    cols: IntArray
    costs: IntArray


def edges_of(lists: IntArray, cols: IntArray, costs: IntArray, n_lists: int) -> Edges:
    """CSR edge lists from flat ``(list, col, cost)`` triples; within a list the triples keep
    their order. At most one triple per ``(list, col)``."""
    order = np.argsort(lists, kind="stable")
    counts = np.bincount(lists, minlength=n_lists)
    indptr = np.zeros(n_lists + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Edges(indptr, cols[order].astype(np.int64), costs[order].astype(np.int64))


def assign(row_list: IntArray, edges: Edges, n_cols: int) -> IntArray:
    """The column of every row (``-1``: unmatched), see the module docstring.

    ``row_list (R,)``: each row's edge list; ``edges``: integer costs, any sign; ``n_cols``:
    columns are ``0 ... n_cols - 1`` (a lower index wins a tie).
    """
    n_rows = int(row_list.size)
    col4row = np.full(n_rows, -1, dtype=np.int64)
    if n_rows == 0 or n_cols == 0 or edges.cols.size == 0:
        return col4row
    # Non-negative costs (a constant shift changes no choice: every matching of the rows matched
    # has as many edges), so the reduced costs start non-negative with zero potentials.
    costs = edges.costs - edges.costs.min()
    indptr, cols = edges.indptr, edges.cols
    u = np.zeros(n_rows, dtype=np.int64)
    v = np.zeros(n_cols, dtype=np.int64)
    row4col = np.full(n_cols, -1, dtype=np.int64)
    spc = np.empty(n_cols, dtype=np.int64)  # shortest path costs of this row's search
    path = np.empty(n_cols, dtype=np.int64)
    done = np.empty(n_cols, dtype=bool)  # columns whose shortest path is final (SC)
    masked = np.empty(n_cols, dtype=np.int64)
    for cur in range(n_rows):
        spc.fill(_INF)
        done.fill(False)
        visited_rows = [cur]
        min_val = np.int64(0)
        i = cur
        sink = -1
        while True:
            g = row_list[i]
            lo, hi = indptr[g], indptr[g + 1]
            js = cols[lo:hi]
            r = min_val + costs[lo:hi] - u[i] - v[js]
            better = (r < spc[js]) & ~done[js]
            if better.any():
                jb = js[better]
                spc[jb] = r[better]
                path[jb] = i
            np.copyto(masked, spc)
            masked[done] = _INF
            lowest = masked.min()
            if lowest >= _INF:
                break  # no augmenting path from this row: it stays unmatched
            ties = np.flatnonzero(masked == lowest)
            free = ties[row4col[ties] < 0]
            j = int(free[0] if free.size else ties[0])
            min_val = lowest
            done[j] = True
            if row4col[j] < 0:
                sink = j
                break
            i = int(row4col[j])
            visited_rows.append(i)
        if sink < 0:
            continue
        # Potentials: every edge's reduced cost stays >= 0, the matched ones at 0.
        u[cur] += min_val
        for i in visited_rows[1:]:
            u[i] += min_val - spc[col4row[i]]
        v[done] -= min_val - spc[done]
        j = sink
        while True:
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, int(col4row[i])
            if i == cur:
                break
    return col4row
