"""The minimum-cost assignment over sparse integer costs, against scipy's optimum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from edge_agent.coordination.assignment import (
    COST_LIMIT,
    COST_SCALE,
    Assignment,
    Edges,
    assign,
    edges_of,
    fixed_point,
)

MISSING = 10**12
# Each test on the compiled search and on its Python twin (conftest.py).
pytestmark = pytest.mark.usefixtures("assignment_path")


def random_instance(
    rng: np.random.Generator, n_lists: int, n_cols: int, density: float, spread: int = 1000
) -> tuple[np.ndarray, np.ndarray, Edges]:
    """Edge lists with costs in ``[-spread/4, spread)`` (many ties when ``spread`` is small) and a
    dense matrix of them with ``MISSING`` where no edge is."""
    costs = rng.integers(-spread // 4, spread, (n_lists, n_cols))
    mask = rng.random((n_lists, n_cols)) < density
    lists, cols = np.nonzero(mask)
    return costs, mask, edges_of(lists, cols, costs[lists, cols], n_lists)


def optimum(dense: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(most rows matchable, least cost of a matching of that many rows), by scipy."""
    cost = np.where(mask, dense, MISSING)
    r, c = linear_sum_assignment(cost)
    real = cost[r, c] < MISSING
    return int(real.sum()), int(cost[r, c][real].sum())


def check(row_list: np.ndarray, edges: Edges, dense: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n_cols = dense.shape[1]
    col = assign(row_list, edges, n_cols)
    matched = np.flatnonzero(col >= 0)
    assert len(set(col[matched].tolist())) == matched.size  # a column holds at most one row
    assert mask[row_list[matched], col[matched]].all()  # only along edges
    rows_dense = dense[row_list]
    rows_mask = mask[row_list]
    most, _ = optimum(rows_dense, rows_mask)
    assert matched.size == most  # as many rows as can be matched at once
    _, least = optimum(rows_dense[matched], rows_mask[matched])
    assert int(rows_dense[matched, col[matched]].sum()) == least  # at the least cost
    return col


@pytest.mark.parametrize("seed", range(40))
def test_it_finds_the_optimum_of_random_sparse_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 40))
    n_cols = int(rng.integers(1, 60))
    dense, mask, edges = random_instance(rng, n_rows, n_cols, float(rng.uniform(0.05, 1.0)))
    check(np.arange(n_rows), edges, dense, mask)


@pytest.mark.parametrize("seed", range(20))
def test_slots_of_one_role_share_their_costs(seed: int) -> None:
    """Rows that use one edge list (a role's slots) are matched to distinct agents, at the
    optimum of the slots expanded into a matrix, with many ties (costs 0 ... 3)."""
    rng = np.random.default_rng(100 + seed)
    n_lists, n_cols = int(rng.integers(1, 10)), int(rng.integers(1, 40))
    dense, mask, edges = random_instance(rng, n_lists, n_cols, 0.4, spread=4)
    row_list = np.repeat(np.arange(n_lists), rng.integers(1, 5, n_lists))
    check(row_list, edges, dense, mask)


def test_the_rows_matched_are_the_first_that_can_be_in_row_order() -> None:
    """Two rows want the one column: the first in order gets it, whatever it costs; a row no
    path reaches stays unmatched and changes nothing for the others."""
    edges = edges_of(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([50, 1, 9]), 3)
    assert assign(np.array([0, 1, 2]), edges, 2).tolist() == [0, 1, -1]
    edges = edges_of(np.array([0, 1]), np.array([0, 0]), np.array([50, 1]), 2)
    assert assign(np.array([0, 1]), edges, 1).tolist() == [0, -1]
    assert assign(np.array([1, 0]), edges, 1).tolist() == [0, -1]


def test_ties_go_to_the_lower_column_and_the_result_does_not_depend_on_edge_order() -> None:
    rng = np.random.default_rng(7)
    dense, mask, edges = random_instance(rng, 12, 30, 0.5, spread=3)
    rows = np.repeat(np.arange(12), 2)
    first = assign(rows, edges, 30)
    lists, cols = np.nonzero(mask)
    for _ in range(5):
        p = rng.permutation(lists.size)
        shuffled = edges_of(lists[p], cols[p], dense[lists[p], cols[p]], 12)
        assert assign(rows, shuffled, 30).tolist() == first.tolist()
    every = edges_of(np.zeros(3, dtype=np.int64), np.array([2, 0, 1]), np.zeros(3, np.int64), 1)
    assert assign(np.array([0, 0]), every, 3).tolist() == [0, 1]


def test_fixed_point_is_exact_for_float32_and_bounded() -> None:
    costs = np.array([0.5, -133.08, 1e-3, 3.0e38, -3.0e38, 12.345678], dtype=np.float32)
    q = fixed_point(costs)
    assert q.dtype == np.int64
    assert q[0] == COST_SCALE // 2
    assert q[1] == round(float(np.float32(-133.08)) * COST_SCALE)
    assert q[2] == 1  # 1.024 rounds to 1
    assert q[3] == COST_LIMIT
    assert q[4] == -COST_LIMIT
    assert np.array_equal(fixed_point(costs.astype(np.float64)), q)  # the float32 value, either way


def test_nothing_to_match() -> None:
    empty = edges_of(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), 2)
    assert assign(np.array([0, 1]), empty, 5).tolist() == [-1, -1]
    assert assign(np.empty(0, np.int64), empty, 5).size == 0


class PlainAssignment:
    """The search as it was first written (every row of the frontier relaxed, every column
    scanned at each step): the reference :class:`Assignment` must match to the bit."""

    def __init__(self, edges: Edges, n_cols: int, capacity: int) -> None:
        self.indptr, self.cols = edges.indptr, edges.cols
        self.costs = edges.costs - edges.costs.min() if edges.costs.size else edges.costs
        self.rows = 0
        self.row_list = np.zeros(capacity, dtype=np.int64)
        self.u = np.zeros(capacity, dtype=np.int64)
        self.v = np.zeros(n_cols, dtype=np.int64)
        self.col4row = np.full(capacity, -1, dtype=np.int64)
        self.row4col = np.full(n_cols, -1, dtype=np.int64)

    def add(self, g: int) -> int:
        cur = self.rows
        if cur >= self.row_list.size:
            return -1
        self.row_list[cur], self.col4row[cur], self.u[cur] = g, -1, 0
        n = self.v.size
        spc, path, done = np.full(n, INF), np.zeros(n, np.int64), np.zeros(n, bool)
        frontier, visited, min_val = [cur], [], 0
        while True:
            for i in sorted(frontier):
                lo, hi = self.indptr[self.row_list[i]], self.indptr[self.row_list[i] + 1]
                js = self.cols[lo:hi]
                r = min_val + self.costs[lo:hi] - self.u[i] - self.v[js]
                better = (r < spc[js]) & ~done[js]
                spc[js[better]], path[js[better]] = r[better], i
            masked = np.where(done, INF, spc)
            if masked.min() >= INF:
                return -1
            min_val = masked.min()
            ties = np.flatnonzero(masked == min_val)
            free = ties[self.row4col[ties] < 0]
            if free.size:
                sink = int(free[0])
                done[sink] = True
                break
            done[ties] = True
            frontier = self.row4col[ties].tolist()
            visited += frontier
        self.u[cur] += min_val
        rows = np.array(visited, dtype=np.int64)
        self.u[rows] += min_val - spc[self.col4row[rows]]
        self.v[done] -= min_val - spc[done]
        self.rows += 1
        j = sink
        while True:
            i = int(path[j])
            self.row4col[j] = i
            self.col4row[i], j = j, int(self.col4row[i])
            if i == cur:
                return int(self.col4row[cur])


INF = 1 << 62


@pytest.mark.parametrize("seed", range(30))
def test_a_role_s_slots_added_at_once_are_as_added_one_by_one_to_the_bit(seed: int) -> None:
    """:meth:`Assignment.add_slots` (the slots that need no search in one step, the others
    searched touching only the columns reached) against the plain search row by row: the same
    columns, row potentials and column potentials after every role, ties and contention
    included (costs 0 ... spread, lists sharing columns)."""
    rng = np.random.default_rng(300 + seed)
    n_lists, n_cols = int(rng.integers(1, 30)), int(rng.integers(1, 80))
    spread = int(rng.choice([3, 50, 10**6]))
    _, _, edges = random_instance(rng, n_lists, n_cols, float(rng.uniform(0.05, 0.8)), spread)
    slots = rng.integers(1, 6, n_lists)
    order = rng.permutation(n_lists)
    capacity = int(rng.integers(1, slots.sum() + 2))
    fast, plain = Assignment(edges, n_cols, capacity), PlainAssignment(edges, n_cols, capacity)
    for g in order.tolist():
        got = fast.add_slots(g, int(slots[g]))
        want = 0
        while want < slots[g] and plain.add(g) >= 0:
            want += 1
        assert got == want
        assert fast.rows == plain.rows
        assert np.array_equal(fast.col4row, plain.col4row)
        assert np.array_equal(fast.row4col, plain.row4col)
        assert np.array_equal(fast.u[: fast.rows], plain.u[: plain.rows])
        assert np.array_equal(fast.v, plain.v)


def least_cost_sets(row_list: np.ndarray, dense: np.ndarray, mask: np.ndarray) -> set[frozenset]:
    """Every least-cost assignment of the rows, as a set of ``(list, column)`` pairs, by
    trying every one."""
    from itertools import permutations

    best, found = None, set()
    for cols in permutations(range(dense.shape[1]), row_list.size):
        if not mask[row_list, cols].all():
            continue
        cost = int(dense[row_list, cols].sum())
        pairs = frozenset(zip(row_list.tolist(), cols, strict=True))
        if best is None or cost < best:
            best, found = cost, {pairs}
        elif cost == best:
            found.add(pairs)
    return found


@pytest.mark.parametrize("seed", range(120))
def test_unique_says_whether_another_assignment_of_the_lists_is_as_cheap(seed: int) -> None:
    """Against every assignment tried: rows of one list (a role's slots) that swap columns are
    the same assignment; few distinct costs make many ties."""
    rng = np.random.default_rng(seed)
    n_lists, n_cols = int(rng.integers(1, 4)), int(rng.integers(2, 7))
    dense, mask, edges = random_instance(
        rng, n_lists, n_cols, float(rng.uniform(0.4, 1.0)), spread=int(rng.choice([4, 12, 1000]))
    )
    row_list = np.sort(rng.integers(0, n_lists, int(rng.integers(1, min(4, n_cols) + 1))))
    solver = Assignment(edges, n_cols, row_list.size)
    added = np.array([g for g in row_list.tolist() if solver.add(g) >= 0], dtype=np.int64)
    sets = least_cost_sets(added, dense, mask)  # of the rows it holds
    held = frozenset(zip(added.tolist(), solver.columns().tolist(), strict=True))
    assert held in sets
    assert solver.unique() == (len(sets) == 1)


def test_unique_sees_a_swap_a_free_column_and_a_role_s_own_slots() -> None:
    # Two lists, two columns, the swap as cheap: not unique.
    swap = edges_of(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([1, 2, 2, 3]), 2)
    solver = Assignment(swap, 2, 2)
    assert solver.add(0) >= 0
    assert solver.add(1) >= 0
    assert not solver.unique()
    # A free column as cheap as the one taken: not unique.
    free = edges_of(np.array([0, 0]), np.array([0, 1]), np.array([5, 5]), 1)
    solver = Assignment(free, 2, 1)
    assert solver.add(0) == 0
    assert not solver.unique()
    # Two slots of one list on its two columns: one assignment, however they are numbered.
    own = edges_of(np.array([0, 0]), np.array([0, 1]), np.array([5, 5]), 1)
    solver = Assignment(own, 2, 2)
    assert solver.add_slots(0, 2) == 2
    assert solver.unique()


def unique_by_lists(solver: Assignment) -> bool:
    """:meth:`Assignment.unique`'s rule list by list, with sets and Kahn's order: the
    reference the vectorised rule is checked against on instances too large to enumerate."""
    n = solver.rows
    lists, held = solver.row_list[:n], solver.col4row[:n]
    owner = np.full(solver.n_cols, -1, dtype=np.int64)
    owner[held] = lists
    points: dict[int, set[int]] = {}
    to_free: set[int] = set()
    starts: set[int] = set()
    for g in np.unique(lists).tolist():
        mine = lists == g
        lo, hi = int(solver.indptr[g]), int(solver.indptr[g + 1])
        js = solver.cols[lo:hi]
        tight = np.isin(solver.costs[lo:hi] - solver.v[js], solver.u[:n][mine])
        others = owner[js[tight]]
        if (others < 0).any():
            to_free.add(g)
        points[g] = set(others[(others >= 0) & (others != g)].tolist())
        if (solver.v[held[mine]] == 0).any():
            starts.add(g)
    reach, stack = set(starts), list(starts)
    while stack:
        for h in points[stack.pop()]:
            if h not in reach:
                reach.add(h)
                stack.append(h)
    if reach & to_free:
        return False
    indegree = dict.fromkeys(points, 0)
    for targets in points.values():
        for h in targets:
            indegree[h] += 1
    ready = [g for g, d in indegree.items() if d == 0]
    peeled = 0
    while ready:
        g = ready.pop()
        peeled += 1
        for h in points[g]:
            indegree[h] -= 1
            if indegree[h] == 0:
                ready.append(h)
    return peeled == len(points)


def larger_instance(seed: int) -> Assignment:
    """Up to 40 roles of up to 4 slots over 80 columns, added in a random order, few distinct
    costs in most (many ties)."""
    rng = np.random.default_rng(seed)
    n_lists, n_cols = int(rng.integers(1, 41)), int(rng.integers(2, 81))
    _, _, edges = random_instance(
        rng, n_lists, n_cols, float(rng.uniform(0.05, 0.6)), spread=int(rng.choice([3, 8, 10**6]))
    )
    slots = rng.integers(1, 5, n_lists)
    solver = Assignment(edges, n_cols, int(slots.sum()))
    for g in rng.permutation(n_lists).tolist():
        solver.add_slots(g, int(slots[g]))
    return solver


@pytest.mark.parametrize("seed", range(200))
def test_unique_is_the_list_by_list_rule_on_larger_instances(seed: int) -> None:
    solver = larger_instance(seed)
    assert solver.unique() == unique_by_lists(solver)


def test_the_larger_instances_give_both_answers() -> None:
    """The cases above are not all one answer (else the comparison could not fail)."""
    answers = [larger_instance(seed).unique() for seed in range(200)]
    assert 20 <= sum(answers) <= 180
