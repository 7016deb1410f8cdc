"""The award rule of team tasks, as pure functions of the bids on their roles.

A team task has roles (:meth:`~edge_agent.coordination.messages.TaskSpec.slots`); role ``g``
has ``slots[g]`` slots, of which ``done[g]`` are finished (a member released its part as done)
and the rest are to be filled, each by one agent. A bid row is an agent's cost for one role;
a *hold* is a bid row its agent's node sent once the agent took its slot. The award:

1. **Holds** (:func:`counted_holds`): of an agent's holds, the newest counts (largest
   ``(bdseq, bseq)``, then the lower role); of a role's, the cheapest ``slots - done`` (then
   the lower agent): those agents are the role's members, whatever else was bid.
2. (The caller's: the one-agent tasks' greedy award over the agents left.)
3. **Fill** (:func:`fill`): the vacant slots get agents by a minimum-cost assignment over the
   bids of the agents still free (:func:`~edge_agent.coordination.assignment.assign`), the
   slots of *formed* teams (with a member holding or done) first, then those of teams still
   forming, in task order. A forming team is awarded whole or not at all: its slots are added
   to the assignment together, and when one of them cannot be filled the assignment goes back
   to what it was before the team (:meth:`~edge_agent.coordination.assignment.Assignment.save`)
   -- the teams formed are the first, in task order, that can be formed together, and the
   assignment of their slots is one of least total cost. (A role with fewer bidders than
   vacant slots is not tried.) One search per slot, at most, and at most
   :data:`~edge_agent.coordination.assignment.MAX_ROWS` slots filled in one award (the teams
   past it wait for slots to free).

So a team that formed keeps its members (late bids, a healed partition's extra bids, another
team's repair never move them: only the award's holds decide who is in), a member that leaves
(its node died, its session ended, it released its slot) leaves a vacancy that the bids already
held fill without touching the others, and two teams never share an agent. Everything is an
integer (fixed-point costs, ``(bdseq, bseq)`` as one int64, agents by their canonical rank), so
every node holding the same bids computes the same award, to the bit.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.arrays import distinct
from edge_agent.coordination.assignment import MAX_ROWS, Assignment, edges_of

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

SALT_BITS: Final = 14
"""Bits of a bid row's tie-break (:attr:`RoleBids.salt`)."""
_TIE_SCALE: Final = 1 << (SALT_BITS + MAX_ROWS.bit_length() - 1)
"""What a fixed-point cost unit weighs against the salts: more than the salts of every row of
an assignment together, so a salt only ever chooses between assignments of equal cost."""


class RoleTable(NamedTuple):
    """The roles of the open team tasks, in award order (tasks by name, then role index)."""

    task: IntArray
    """``(G,)`` the task (its index in award order) of each role."""
    slots: IntArray
    """``(G,)`` slots of each role."""
    done: IntArray
    """``(G,)`` slots of each role already done."""


class RoleBids(NamedTuple):
    """The bid rows on those roles (one per ``(role, agent)``)."""

    role: IntArray
    """Index into the :class:`RoleTable`."""
    col: IntArray
    """The agent's canonical rank (``0 ... n_cols - 1``): lower wins a tie."""
    cost: IntArray
    """Fixed-point cost (:func:`~edge_agent.coordination.assignment.fixed_point`)."""
    seq: IntArray
    """``(bdseq, bseq)`` as one int64."""
    held: BoolArray
    salt: IntArray
    """A tie-break per row in ``[0, 2**SALT_BITS)``, the same on every node (a hash of the
    task, the role and the agent's names): the fill's costs are ``cost * 2**(SALT_BITS + 12) +
    salt``, so among assignments of equal cost one is chosen by their salts, and that choice
    does not depend on which members already hold (module docstring)."""


def counted_holds(roles: RoleTable, bids: RoleBids, n_cols: int) -> BoolArray:
    """The hold rows that make their agents members (step 1 of the module docstring)."""
    out = np.zeros(bids.role.size, dtype=bool)
    rows = np.flatnonzero(bids.held)
    if rows.size == 0:
        return out
    # Per agent its newest hold: sort by (agent, -seq, role), keep each agent's first.
    order = rows[np.lexsort((bids.role[rows], -bids.seq[rows], bids.col[rows]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = bids.col[order[1:]] != bids.col[order[:-1]]
    newest = order[first]
    # Per role its cheapest holds, as many as it has room for.
    order = newest[np.lexsort((bids.col[newest], bids.cost[newest], bids.role[newest]))]
    g = bids.role[order]
    start = np.searchsorted(g, g, side="left")
    rank = np.arange(order.size) - start
    room = roles.slots[g] - roles.done[g]
    out[order[rank < room]] = True
    return out


class FillRecord(NamedTuple):
    """A fill whose every team was whole, with nothing but members busy: what :func:`refill`
    needs to give the next fill without an assignment when members only took slots it gave
    them, and its assignment, which says whether it was the only one of least cost
    (:meth:`~edge_agent.coordination.assignment.Assignment.unique`: asked only then, off the
    first award's path)."""

    roles: RoleTable
    members: IntArray
    """Sorted ``role * n_cols + col`` of the member rows."""
    filled: IntArray
    """Sorted ``role * n_cols + col`` of the filling rows."""
    usable: tuple[IntArray, IntArray, IntArray, IntArray]
    """``(role, col, cost, salt)`` of the rows the assignment could use, in row order."""
    n_cols: int
    solver: Assignment


def _keys(bids: RoleBids, rows: BoolArray, n_cols: int) -> IntArray:
    keys: IntArray = np.sort(bids.role[rows] * n_cols + bids.col[rows])
    return keys


def _usable_rows(bids: RoleBids, members: BoolArray, busy: BoolArray) -> IntArray:
    rows: IntArray = np.flatnonzero(~members & ~busy[bids.col])
    return rows


def fill(
    roles: RoleTable,
    bids: RoleBids,
    members: BoolArray,
    busy: BoolArray,
    n_tasks: int,
) -> BoolArray:
    """The bid rows that fill vacant slots (step 3 of the module docstring).

    ``members``: the rows already members (counted holds); ``busy (n_cols,)``: agents that
    cannot fill a slot (members, winners of one-agent tasks). Returns the filling rows.
    """
    return fill_recorded(roles, bids, members, busy, n_tasks)[0]


def refill(
    record: FillRecord, roles: RoleTable, bids: RoleBids, members: BoolArray, busy: BoolArray
) -> tuple[BoolArray, FillRecord] | None:
    """:func:`fill`'s result, without an assignment, when it is provably ``record``'s fill less
    the slots members took since (None otherwise): the same roles, the members of then and
    some of the agents its fill gave a slot, now holding that slot, the rows the assignment
    can use those of then less the new members' rows, nothing else busy (``busy`` only the
    members' agents, as then). Then the assignment of then without the new members' slots is
    one of least cost for the slots left (any cheaper one, with the new members, would have
    been cheaper then), and then it was the only one, so the fill's is it: what the fill
    computes is unchanged, it is computed no more (a formation's members take their slots in
    many messages, and each was a fill of every slot on every node: issue 55)."""
    n_cols = record.n_cols
    if busy.size != n_cols or not all(
        np.array_equal(a, b) for a, b in zip(record.roles, roles, strict=True)
    ):
        return None
    now = _keys(bids, members, n_cols)
    if now.size < record.members.size or busy.sum() != distinct(bids.col[members]).size:
        return None
    taken = np.setdiff1d(now, record.members, assume_unique=True)
    if (
        taken.size + record.members.size != now.size
        or not np.isin(taken, record.filled, assume_unique=True).all()
    ):
        return None
    usable = _usable_rows(bids, members, busy)
    role, col, cost, salt = record.usable
    kept = ~np.isin(col, taken % n_cols)
    if not (
        np.array_equal(bids.role[usable], role[kept])
        and np.array_equal(bids.col[usable], col[kept])
        and np.array_equal(bids.cost[usable], cost[kept])
        and np.array_equal(bids.salt[usable], salt[kept])
    ):
        return None
    if taken.size and not record.solver.unique():
        return None  # (with no new member it is the same fill whatever the assignments)
    filled = np.setdiff1d(record.filled, taken, assume_unique=True)
    out = np.zeros(bids.role.size, dtype=bool)
    out[usable] = np.isin(bids.role[usable] * n_cols + bids.col[usable], filled)
    usable_now = (bids.role[usable], bids.col[usable], bids.cost[usable], bids.salt[usable])
    return out, FillRecord(roles, now, filled, usable_now, n_cols, record.solver)


def fill_recorded(
    roles: RoleTable,
    bids: RoleBids,
    members: BoolArray,
    busy: BoolArray,
    n_tasks: int,
) -> tuple[BoolArray, FillRecord | None]:
    """:func:`fill`, and its :class:`FillRecord` when every team was whole and only members
    were busy (else None)."""
    out = np.zeros(bids.role.size, dtype=bool)
    n_roles = roles.task.size
    n_cols = int(busy.size)
    if n_roles == 0:
        return out, None
    held = np.bincount(bids.role[members], minlength=n_roles)
    vacant = np.maximum(roles.slots - roles.done - held, 0)
    if not vacant.any():
        return out, None
    formed = np.zeros(n_tasks, dtype=bool)
    formed[roles.task[(held > 0) | (roles.done > 0)]] = True
    usable = _usable_rows(bids, members, busy)
    if usable.size == 0:
        return out, None
    cost = bids.cost[usable] * _TIE_SCALE + bids.salt[usable]
    edges = edges_of(bids.role[usable], bids.col[usable], cost, n_roles)
    solver = Assignment(edges, n_cols, min(int(vacant.sum()), MAX_ROWS))
    rows: list[int] = []  # the role of each slot the solver holds, in the order added
    # A formed team's vacant slots first (a repair before a new team), as many as can be filled.
    for g in np.flatnonzero(formed[roles.task]).tolist():
        rows += [g] * solver.add_slots(g, int(vacant[g]))
    # Then each forming team in task order, whole or not at all.
    bidders = np.bincount(bids.role[usable], minlength=n_roles)
    by_task = np.argsort(roles.task, kind="stable")  # each task's roles, in order
    bounds = np.searchsorted(roles.task[by_task], np.arange(n_tasks + 1)).tolist()
    role_of, wants = by_task.tolist(), vacant.tolist()
    short = (bidders < vacant).tolist()
    for t in np.flatnonzero(~formed).tolist():
        mine = role_of[bounds[t] : bounds[t + 1]]
        if not mine or any(short[g] for g in mine):
            continue  # a role with fewer bidders than slots: it cannot form
        saved = solver.save()
        added: list[int] = []
        for g in mine:
            got = solver.add_slots(g, wants[g])
            added += [g] * got
            if got < wants[g]:
                break
        if len(added) < sum(wants[g] for g in mine):
            solver.restore(saved)
        else:
            rows += added
    col4row = solver.columns()
    row_role = np.array(rows, dtype=np.int64)
    # The bid row of each (role, agent) matched.
    keys = bids.role[usable] * n_cols + bids.col[usable]
    order = np.argsort(keys, kind="stable")
    want = row_role * n_cols + col4row
    out[usable[order[np.searchsorted(keys[order], want)]]] = True
    only_members = int(busy.sum()) == distinct(bids.col[members]).size
    if len(rows) != int(vacant.sum()) or not only_members:
        return out, None  # a team left out, or agents busy that are no members
    usable_rows = (bids.role[usable], bids.col[usable], bids.cost[usable], bids.salt[usable])
    record = FillRecord(
        roles, _keys(bids, members, n_cols), np.sort(want), usable_rows, n_cols, solver
    )
    return out, record
