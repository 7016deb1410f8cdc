"""The team award: holds first, then a minimum-cost fill, whole teams or none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from edge_agent.coordination.team_award import (
    RoleBids,
    RoleTable,
    counted_holds,
    fill,
    fill_recorded,
    refill,
)

I64 = np.int64
# Each test on the compiled search and on its Python twin (conftest.py).
pytestmark = pytest.mark.usefixtures("assignment_path")


def table(task: list[int], slots: list[int], done: list[int] | None = None) -> RoleTable:
    return RoleTable(
        np.array(task, I64), np.array(slots, I64), np.array(done or [0] * len(task), I64)
    )


def bids(
    rows: list[tuple[int, int, int]], held: list[bool] | None = None, seq: list[int] | None = None
) -> RoleBids:
    """``(role, col, cost)`` rows."""
    r = np.array(rows, I64).reshape(-1, 3)
    n = len(rows)
    return RoleBids(
        r[:, 0],
        r[:, 1],
        r[:, 2],
        np.array(seq or [1] * n, I64),
        np.array(held or [False] * n, bool),
        np.zeros(n, I64),
    )


def award(
    roles: RoleTable, b: RoleBids, n_cols: int, busy: list[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(counted holds, fills) as boolean masks over the rows."""
    members = counted_holds(roles, b, n_cols)
    taken = np.zeros(n_cols, bool)
    taken[b.col[members]] = True
    taken[list(busy)] = True
    n_tasks = int(roles.task.max()) + 1 if roles.task.size else 0
    return members, fill(roles, b, members, taken, n_tasks)


def test_an_agent_s_newest_hold_counts_and_a_role_keeps_its_cheapest_holds() -> None:
    roles = table([0, 1], [1, 2])
    b = bids(
        [(0, 0, 5), (1, 0, 1), (1, 1, 3), (1, 2, 3), (1, 3, 2)],
        held=[True, True, True, True, True],
        seq=[2, 1, 1, 1, 1],  # agent 0 held role 1 first, then role 0
    )
    members = counted_holds(roles, b, 4)
    # agent 0: its newest hold (role 0); role 1 has room for 2: agent 3 (cost 2), then of the
    # two at cost 3 the lower agent (1).
    assert members.tolist() == [True, False, True, False, True]


def test_a_role_s_done_slots_leave_less_room_for_holds() -> None:
    roles = table([0], [2], done=[1])
    b = bids([(0, 0, 1), (0, 1, 2)], held=[True, True])
    assert counted_holds(roles, b, 2).tolist() == [True, False]


def test_a_team_that_cannot_be_completed_gets_nobody() -> None:
    """Task 0 needs three agents, only two bid: neither is held back from task 1, which needs
    one of them."""
    roles = table([0, 1], [3, 1])
    b = bids([(0, 0, 1), (0, 1, 1), (1, 1, 9)])
    members, filled = award(roles, b, 2)
    assert not members.any()
    assert filled.tolist() == [False, False, True]


def test_a_formed_team_s_vacancy_is_filled_first_and_may_stay_part_filled() -> None:
    """Task 0 formed (agent 0 holds); its two vacant slots get what can fill them (one agent)
    before the forming task 1 is considered, which then cannot be completed."""
    roles = table([0, 1], [3, 1])
    b = bids([(0, 0, 1), (0, 1, 5), (1, 1, 1)], held=[True, False, False])
    members, filled = award(roles, b, 2)
    assert members.tolist() == [True, False, False]
    assert filled.tolist() == [False, True, False]


def test_members_keep_their_slots_whatever_cheaper_bids_come() -> None:
    roles = table([0], [2])
    b = bids([(0, 0, 9), (0, 1, 9), (0, 2, 0), (0, 3, 0)], held=[True, True, False, False])
    members, filled = award(roles, b, 4)
    assert members.tolist() == [True, True, False, False]
    assert not filled.any()


def test_agents_busy_elsewhere_fill_nothing() -> None:
    roles = table([0], [1])
    b = bids([(0, 0, 0), (0, 1, 5)])
    _, filled = award(roles, b, 2, busy=[0])
    assert filled.tolist() == [False, True]


def random_teams(rng: np.random.Generator, n_tasks: int, n_cols: int, density: float):
    task, slots = [], []
    for t in range(n_tasks):
        for _ in range(int(rng.integers(1, 3))):
            task.append(t)
            slots.append(int(rng.integers(1, 4)))
    roles = table(task, slots)
    cost = rng.integers(0, 1000, (len(task), n_cols))
    mask = rng.random(cost.shape) < density
    g, c = np.nonzero(mask)
    return (
        roles,
        bids(list(zip(g.tolist(), c.tolist(), cost[g, c].tolist(), strict=True))),
        cost,
        mask,
    )


@pytest.mark.parametrize("seed", range(25))
def test_with_bidders_enough_every_team_forms_at_the_optimum(seed: int) -> None:
    """Every role has more bidders than the slots in all: every team forms, one slot per agent,
    and the total cost is scipy's optimum over the slots (expanded into a matrix)."""
    rng = np.random.default_rng(seed)
    n_tasks = int(rng.integers(1, 12))
    roles, b, cost, mask = random_teams(rng, n_tasks, 120, 0.6)
    members, filled = award(roles, b, 120)
    assert not members.any()
    per_role = np.bincount(b.role[filled], minlength=roles.task.size)
    assert per_role.tolist() == roles.slots.tolist()  # every slot filled
    cols = b.col[filled]
    assert np.unique(cols).size == cols.size  # an agent holds at most one slot
    slot_role = np.repeat(np.arange(roles.task.size), roles.slots)
    dense = np.where(mask[slot_role], cost[slot_role], 10**9)
    r, c = linear_sum_assignment(dense)
    assert int(b.cost[filled].sum()) == int(dense[r, c].sum())


@pytest.mark.parametrize("seed", range(25))
def test_scarce_agents_form_whole_teams_only_the_same_whatever_the_row_order(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    roles, b, _, _ = random_teams(rng, int(rng.integers(2, 10)), int(rng.integers(3, 15)), 0.5)
    _members, filled = award(roles, b, int(b.col.max()) + 1 if b.col.size else 1)
    per_role = np.bincount(b.role[filled], minlength=roles.task.size)
    for t in np.unique(roles.task):
        got = per_role[roles.task == t]
        assert got.sum() == 0 or (got == roles.slots[roles.task == t]).all()  # whole or none
    assert np.unique(b.col[filled]).size == int(filled.sum())
    chosen = {(int(g), int(c)) for g, c in zip(b.role[filled], b.col[filled], strict=True)}
    p = rng.permutation(b.role.size)
    shuffled = RoleBids(*(x[p] for x in b))
    _, again = award(roles, shuffled, int(b.col.max()) + 1 if b.col.size else 1)
    assert {
        (int(g), int(c)) for g, c in zip(shuffled.role[again], shuffled.col[again], strict=True)
    } == chosen


def taking(b: RoleBids, rows: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(members, busy) when the agents of bid ``rows`` hold those slots."""
    members = np.zeros(b.role.size, bool)
    members[rows] = True
    busy = np.zeros(n_cols, bool)
    busy[b.col[rows]] = True
    return members, busy


@pytest.mark.parametrize("seed", range(40))
def test_a_refill_is_the_fill_once_members_took_slots_it_gave(seed: int) -> None:
    """Members take some of the slots a fill gave them, a few at a time, as holds come: each
    refill (when it gives one) is what the fill computes from scratch; with many ties (a small
    cost spread, no salt) it declines where the assignment was not the only one of least
    cost."""
    rng = np.random.default_rng(seed)
    roles, b, _, _ = random_teams(rng, int(rng.integers(1, 10)), 60, 0.5)
    if seed % 2:  # few distinct costs: ties
        b = b._replace(cost=b.cost % 7)
    n_tasks = int(roles.task.max()) + 1
    none = np.zeros(b.role.size, bool)
    filled, record = fill_recorded(roles, b, none, np.zeros(60, bool), n_tasks)
    chosen = rng.permutation(np.flatnonzero(filled))
    only = record is not None and record.solver.unique()
    refilled = 0
    for k in range(1, chosen.size + 1, 3):
        members, busy = taking(b, chosen[:k], 60)
        full = fill(roles, b, members, busy, n_tasks)
        again = None if record is None else refill(record, roles, b, members, busy)
        if again is not None:
            assert again[0].tolist() == full.tolist()
            refilled += 1
        record = (
            again[1] if again is not None else fill_recorded(roles, b, members, busy, n_tasks)[1]
        )
    if only:
        assert refilled  # the only assignment of least cost: every step is a refill


def test_a_refill_declines_what_could_change_the_fill() -> None:
    roles = table([0, 1], [1, 1])
    b = bids([(0, 0, 1), (0, 1, 5), (1, 1, 2), (1, 2, 9)])
    filled, record = fill_recorded(roles, b, np.zeros(4, bool), np.zeros(3, bool), 2)
    assert record is not None
    assert b.col[filled].tolist() == [0, 1]
    members, busy = taking(b, np.array([0]), 3)  # agent 0 holds the slot it was given
    again = refill(record, roles, b, members, busy)
    assert again is not None
    assert again[0].tolist() == fill(roles, b, members, busy, 2).tolist()
    members, busy = taking(b, np.array([1]), 3)  # agent 1 holds a slot it was not given
    assert refill(record, roles, b, members, busy) is None
    cheaper = b._replace(cost=np.array([1, 5, 2, 1]))  # another bid changed
    members, busy = taking(cheaper, np.array([0]), 3)
    assert refill(record, roles, cheaper, members, busy) is None
    busy[2] = True  # an agent busy elsewhere (a one-agent task's winner)
    assert refill(record, roles, b, members, busy) is None
    members, busy = taking(b, np.array([0]), 3)
    assert refill(record, table([0, 1], [1, 2]), b, members, busy) is None  # other roles
