"""A minimum-cost assignment of rows (a team task's slots) to columns (agents) over a sparse
graph (the bids), in integers: the same result, to the bit, on every CPU.

:func:`fixed_point` turns bid costs (float32 on the wire) into integers. :class:`Assignment`
matches rows to columns with shortest augmenting paths (the Jonker-Volgenant family, as Crouse's
rectangular variant that scipy's ``linear_sum_assignment`` uses), adding one row at a time in the
order given, with row and column potentials that keep every reduced cost non-negative, so that
after every row added the matching is one of least total cost for the rows it holds. A search
takes every column at the least distance at once (a tie of many agents is one step, not one per
agent) and prefers a free column, then the lowest index. Every number is an int64 and every tie
is broken by index, so nodes holding the same bids compute the same assignment. The state can be
saved and restored, so a caller can try a group of rows and take it back (a team that cannot be
formed whole).

Rows that share a cost row share one edge list (a role's slots: every slot of a role costs an
agent the same), in CSR form: ``edges.indptr[g]:edges.indptr[g + 1]`` are the columns
``edges.cols`` and costs ``edges.costs`` of list ``g``.

:func:`assign` adds rows in order and leaves a row that no augmenting path reaches unmatched, so
the rows matched are the first maximal set, in row order, that can be matched at once (the
greedy basis of the transversal matroid: a row has no augmenting path later if it has none now),
at least cost. Pure: no I/O, no clock.

The search and the potentials' update are also compiled, in the compiled tick's library
(``edge_agent/aif/kernels/native/assignment.c``: the same integers, the same ties, so the same
columns and potentials to the bit): an :class:`Assignment` made where :func:`unavailable` says
None adds its rows there (:meth:`Assignment.add_slots` as many rows in one call), and this
module's Python is the reference twin the tests compare it with, and the path without a C
compiler (or with ``EDGE_AGENT_NATIVE_TICK=0`` in the environment, read when an assignment is
made). Its arrays are the same numpy arrays either way (:meth:`Assignment.save`,
:meth:`Assignment.restore`, :meth:`Assignment.unique` read and write them in Python).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.kernels.native import binding
from edge_agent.core.native_pass import library_refusal

IntArray = NDArray[np.int64]

COST_SCALE: Final = 1024
"""Fixed-point units per unit of cost: a cost is kept to 1/1024 (about 0.001 nats)."""
COST_LIMIT: Final = 1 << 20
"""Fixed-point costs are clipped to ``[-COST_LIMIT, COST_LIMIT]`` (+-1,024 nats: every cost a
model computes is far inside, ``MIN_BID_COST`` is -134), so that a cost with its tie-break
(:mod:`~edge_agent.coordination.team_award`) and sums of them over a path of up to
:data:`MAX_ROWS` rows stay inside int64."""
MAX_ROWS: Final = 1 << 12
"""Rows one assignment holds at most (team slots filled in one award)."""
_INF: Final = np.int64(1 << 62)
_NONE: Final = np.empty(0, dtype=np.int64)
SYMBOL: Final = "edge_assign_add_slots"
"""The library's function the compiled assignment calls (``assignment.h``)."""
_ARRAYS: Final = 11  # the arrays it takes, in assignment.h's order


def unavailable(library: ctypes.CDLL | None = None) -> str | None:
    """Why an :class:`Assignment` made now would search in Python (None: in the compiled
    library; ``library``: that library instead of the package's)."""
    return library_refusal((SYMBOL,), library)


def _compiled(library: ctypes.CDLL | None) -> Callable[..., int] | None:
    """The compiled search, typed (None: :func:`unavailable` says why not)."""
    if unavailable(library) is not None:
        return None
    lib = library or binding.load()
    add_slots = lib.edge_assign_add_slots
    add_slots.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 5]
    add_slots.restype = ctypes.c_int64
    return add_slots


def _one_per_list(frontier: IntArray, row_list: IntArray, u: IntArray) -> list[int]:
    """Of the rows ``frontier``, in increasing order, one per edge list: the largest ``u``,
    the lower row on a tie (:meth:`Assignment._search`)."""
    if frontier.size == 1:
        return [int(frontier[0])]
    rows = np.sort(frontier)
    lists = row_list[rows]
    order = np.lexsort((rows, -u[rows], lists))
    first = np.ones(order.size, dtype=bool)
    first[1:] = lists[order[1:]] != lists[order[:-1]]
    out: list[int] = np.sort(rows[order[first]]).tolist()
    return out


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


class Saved(NamedTuple):
    """An :class:`Assignment`'s state (:meth:`Assignment.save`)."""

    rows: int
    u: IntArray
    v: IntArray
    col4row: IntArray
    row4col: IntArray


class Assignment:
    """Rows added one at a time (:meth:`add`) to a least-cost assignment over ``edges``.

    ``capacity``: the most rows it will hold; ``n_cols``: columns are ``0 ... n_cols - 1``;
    ``native``: False for the Python twin, True for the compiled search (``library``: that
    build instead of the package's), None (the default) for the compiled one where
    :func:`unavailable` says None.
    """

    def __init__(
        self,
        edges: Edges,
        n_cols: int,
        capacity: int,
        *,
        native: bool | None = None,
        library: ctypes.CDLL | None = None,
    ) -> None:
        self.indptr = np.ascontiguousarray(edges.indptr, dtype=np.int64)
        self._bounds: list[int] = edges.indptr.tolist()  # a search's slices, as Python ints
        self.cols = np.ascontiguousarray(edges.cols, dtype=np.int64)
        # Non-negative costs (a constant shift changes no choice: every matching of the rows
        # matched has as many edges), so reduced costs start non-negative at zero potentials.
        costs = np.asarray(edges.costs, dtype=np.int64)
        self.costs = costs - costs.min() if costs.size else costs.copy()
        self.n_cols = n_cols
        self.rows = 0
        self.row_list = np.zeros(capacity, dtype=np.int64)
        self.u = np.zeros(capacity, dtype=np.int64)
        self.v = np.zeros(n_cols, dtype=np.int64)
        self.col4row = np.full(capacity, -1, dtype=np.int64)
        self.row4col = np.full(n_cols, -1, dtype=np.int64)
        self._spc = np.full(n_cols, _INF, dtype=np.int64)  # a search's path costs (_INF: unseen)
        self._path = np.empty(n_cols, dtype=np.int64)
        self._unique: bool | None = None  # unique()'s answer, until the rows change
        self._add_slots = None if native is False else _compiled(library)
        if native and self._add_slots is None:
            raise RuntimeError(f"no compiled assignment: {unavailable(library)}")
        self._bind()

    def _bind(self) -> None:
        """The addresses of the arrays the compiled search works on (written in place, never
        replaced), and its scratch."""
        if self._add_slots is not None:
            self._scratch = np.empty(3 * self.n_cols + 5 * self.row_list.size, dtype=np.int64)
            held = (self.indptr, self.cols, self.costs, self.row_list, self.u, self.v,
                    self.col4row, self.row4col, self._spc, self._path, self._scratch)
            self._arrays = (ctypes.c_void_p * _ARRAYS)(*(a.ctypes.data for a in held))

    def __getstate__(self) -> dict[str, object]:
        """A copy (``copy.deepcopy`` of a board holding a fill's record) has arrays of its
        own: the addresses are made again for them (:meth:`__setstate__`)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_arrays", "_scratch")}
        state["_add_slots"] = self._add_slots is not None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        native = state.pop("_add_slots")
        self.__dict__.update(state)
        self._add_slots = _compiled(None) if native else None
        self._bind()

    @property
    def native(self) -> bool:
        """Whether rows are added by the compiled search."""
        return self._add_slots is not None

    def save(self) -> Saved:
        return Saved(self.rows, self.u.copy(), self.v.copy(), self.col4row.copy(),
                     self.row4col.copy())  # fmt: skip

    def restore(self, saved: Saved) -> None:
        self._unique = None
        self.rows = saved.rows
        self.u[:] = saved.u
        self.v[:] = saved.v
        self.col4row[:] = saved.col4row
        self.row4col[:] = saved.row4col

    def add(self, g: int) -> int:
        """Add a row of edge list ``g``; returns its column, or -1 when no augmenting path
        reaches a free column or the assignment holds ``capacity`` rows already (the row is
        then not added, and nothing changes)."""
        cur = self.rows
        if cur >= self.row_list.size:
            return -1
        if self._add_slots is not None:
            if not self._add_slots(self._arrays, self.n_cols, self.row_list.size, cur, g, 1):
                return -1
            self._unique = None
            self.rows += 1
            return int(self.col4row[cur])
        self._unique = None
        self.row_list[cur] = g
        self.col4row[cur] = -1
        self.u[cur] = 0
        found = self._search(cur)
        if found is None:
            return -1
        sink, min_val, rows, done, seen = found
        # Potentials: every edge's reduced cost stays >= 0, the matched ones at 0.
        spc = self._spc
        self.u[cur] += min_val
        self.u[rows] += min_val - spc[self.col4row[rows]]
        self.v[done] -= min_val - spc[done]
        spc[seen] = _INF
        self.rows += 1
        j = sink
        while True:
            i = int(self._path[j])
            self.row4col[j] = i
            self.col4row[i], j = j, int(self.col4row[i])
            if i == cur:
                break
        return int(self.col4row[cur])

    def add_slots(self, g: int, count: int) -> int:
        """Add ``count`` rows of edge list ``g`` (a role's slots) as :meth:`add` would one
        after the other, and stop at the first that cannot be added; returns how many were.

        The same result, to the bit (columns and potentials), in one step for the rows that
        need no search: when the first ``p`` of the list's columns in order of reduced cost
        ``costs - v`` (a tie: the lower column) are all free, :meth:`add` would give the
        ``i``-th row the ``i``-th of them (each search finds the earlier ones at a distance no
        greater than its own, held by rows of the same list, and no shorter path), leave every
        row's potential at the ``p``-th reduced cost and lower the ``i``-th column's by the
        difference. The rest are searched one by one. (The compiled search adds them all one
        by one, in one call: the same result.)"""
        if self._add_slots is not None:
            added: int = self._add_slots(self._arrays, self.n_cols, self.row_list.size,
                                         self.rows, g, count)
            if added:
                self._unique = None
                self.rows += added
            return added
        lo, hi = int(self.indptr[g]), int(self.indptr[g + 1])
        cur = self.rows
        direct = min(count, hi - lo, self.row_list.size - cur)
        if direct > 0:
            js = self.cols[lo:hi]
            r = self.costs[lo:hi] - self.v[js]
            if direct < r.size:  # the first ``direct`` in (r, column) order are at r <= kth
                kth = np.partition(r, direct - 1)[direct - 1]
                near = np.flatnonzero(r <= kth)
                first = near[np.lexsort((js[near], r[near]))[:direct]]
            else:
                first = np.lexsort((js, r))
            free = self.row4col[js[first]] < 0
            direct = direct if free.all() else int(np.argmin(free))
        if direct > 0:
            self._unique = None
            chosen, r_chosen = js[first[:direct]], r[first[:direct]]
            rows = np.arange(cur, cur + direct)
            last = r_chosen[-1]
            self.row_list[rows] = g
            self.u[rows] = last
            self.v[chosen] -= last - r_chosen
            self.col4row[rows] = chosen
            self.row4col[chosen] = rows
            self.rows += direct
        added = direct
        while added < count and self.add(g) >= 0:
            added += 1
        return added

    def _search(self, cur: int) -> tuple[int, np.int64, IntArray, IntArray, IntArray] | None:
        """Shortest augmenting path from row ``cur`` (Dijkstra on reduced costs, every column at
        the least distance taken at once): ``(free column reached, its distance, the rows the
        search went through, the columns whose distance is final, every column it reached)``,
        or None when no free column can be reached.

        It touches only the columns it reaches (``_spc`` is back to unseen for the others), and
        of several rows of one edge list reached at one distance it relaxes one: the row of the
        largest potential, the lower on a tie, whose path to every column is no longer than
        another's of the list (so the paths and distances are those of relaxing every row)."""
        spc, path, u, v = self._spc, self._path, self.u, self.v
        bounds, cols, costs, row_list = self._bounds, self.cols, self.costs, self.row_list
        frontier = np.array([cur], dtype=np.int64)
        visited: list[IntArray] = []
        final: list[IntArray] = []
        seen: list[IntArray] = []
        waiting = _NONE  # columns reached, distance not final
        min_val = np.int64(0)
        while True:
            # Relax the edges of the rows reached at this distance, lower rows first (on a tie
            # a column keeps the path through the lower row); a final column is never improved
            # (reduced costs are >= 0).
            for i in _one_per_list(frontier, row_list, u):
                g = int(row_list[i])
                lo, hi = bounds[g], bounds[g + 1]
                js = cols[lo:hi]
                r = costs[lo:hi] - v[js]
                r += min_val - u[i]  # (integers: the same sum in any order)
                old = spc[js]
                better = r < old
                jb = js[better]
                if jb.size:
                    new = jb[old[better] == _INF]
                    spc[jb] = r[better]
                    path[jb] = i
                    if new.size:
                        seen.append(new)
                        waiting = np.concatenate((waiting, new)) if waiting.size else new
            if waiting.size == 0:
                if seen:
                    spc[np.concatenate(seen)] = _INF
                return None
            dist = spc[waiting]
            min_val = dist.min()
            at = dist == min_val
            ties = waiting[at]
            waiting = waiting[~at]
            free = ties[self.row4col[ties] < 0]
            if free.size:
                sink = free.min()
                final.append(sink.reshape(1))
                rows = np.concatenate(visited) if visited else _NONE
                return int(sink), min_val, rows, np.concatenate(final), np.concatenate(seen)
            final.append(ties)
            frontier = self.row4col[ties]
            visited.append(frontier)

    def unique(self) -> bool:
        """Whether the rows held have one least-cost assignment as a set of ``(edge list,
        column)`` pairs (rows of one list are interchangeable: which of a role's slots an agent
        fills is no other assignment).

        The potentials are an optimal dual (every reduced cost ``costs - u - v`` is >= 0, zero
        on the matched edges, and a column with ``v < 0`` is matched), so another least-cost
        assignment uses only zero-reduced-cost ("tight") edges and leaves free only columns
        with ``v == 0``; it differs from this one by alternating cycles and paths. Over lists
        (a list points to the lists holding the columns it has tight edges to): another exists
        exactly when that graph has a cycle, or a list holding a column with ``v == 0`` reaches
        (itself included) a list with a tight edge to a free column. Kept until rows change."""
        if self._unique is None:
            self._unique = self._one_least()
        return self._unique

    def _one_least(self) -> bool:
        n = self.rows
        if n == 0:
            return True
        lists, held = self.row_list[:n], self.col4row[:n]
        # The lists held, compactly numbered 0 ... k - 1, and each one's potential (rows of a
        # list share it: a matched edge is tight and no edge of the list is below it).
        gs, row_k = np.unique(lists, return_inverse=True)
        k = gs.size
        u_k = np.empty(k, dtype=np.int64)
        u_k[row_k] = self.u[:n]
        owner = np.full(self.n_cols, -1, dtype=np.int64)
        owner[held] = row_k
        # Every edge of those lists at once: its list, its column, whether it is tight.
        lo, counts = self.indptr[gs], self.indptr[gs + 1] - self.indptr[gs]
        edge_k = np.repeat(np.arange(k), counts)
        at = np.arange(edge_k.size) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
        js = self.cols[at]
        tight = self.costs[at] - self.v[js] == u_k[edge_k]
        src, dst = edge_k[tight], owner[js[tight]]
        to_free = np.zeros(k, dtype=bool)
        to_free[src[dst < 0]] = True
        points = np.zeros((k, k), dtype=bool)  # list -> a list holding a column it is tight to
        other = (dst >= 0) & (dst != src)
        points[src[other], dst[other]] = True
        # A list that reaches a free column from a column that may be left free: another one.
        reach = np.zeros(k, dtype=bool)
        reach[row_k[self.v[held] == 0]] = True
        frontier = reach
        while frontier.any():
            frontier = points[frontier].any(axis=0) & ~reach
            reach |= frontier
        if (reach & to_free).any():
            return False
        # A cycle (peeling lists nothing points to leaves some): another one.
        alive = np.ones(k, dtype=bool)
        indegree = points.sum(axis=0)
        while True:
            bare = alive & (indegree == 0)
            if not bare.any():
                return not alive.any()
            alive &= ~bare
            indegree -= points[bare].sum(axis=0)

    def columns(self) -> IntArray:
        """The column of every row added, in the order added."""
        out: IntArray = self.col4row[: self.rows].copy()
        return out


def assign(row_list: IntArray, edges: Edges, n_cols: int) -> IntArray:
    """The column of every row (``-1``: unmatched), rows added in order (module docstring).

    ``row_list (R,)``: each row's edge list; ``edges``: integer costs, any sign; ``n_cols``:
    columns are ``0 ... n_cols - 1`` (a lower index wins a tie).
    """
    out = np.full(row_list.size, -1, dtype=np.int64)
    if row_list.size == 0 or n_cols == 0 or edges.cols.size == 0:
        return out
    solver = Assignment(edges, n_cols, row_list.size)
    added = []
    for i, g in enumerate(row_list.tolist()):
        if solver.add(g) >= 0:
            added.append(i)
    out[added] = solver.columns()
    return out
