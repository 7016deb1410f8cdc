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
   forming, in task order. A forming team is awarded whole or not at all: the first team (in
   that order) with a slot left empty is taken out and the assignment made again without it,
   until every forming team left is whole -- the teams formed are the first, in task order,
   that can be formed together, each at least cost. (A role with fewer bidders than vacant
   slots takes its team out at once.) At most one assignment per forming team.

So a team that formed keeps its members (late bids, a healed partition's extra bids, another
team's repair never move them: only the award's holds decide who is in), a member that leaves
(its node died, its session ended, it released its slot) leaves a vacancy that the bids already
held fill without touching the others, and two teams never share an agent. Everything is an
integer (fixed-point costs, ``(bdseq, bseq)`` as one int64, agents by their canonical rank), so
every node holding the same bids computes the same award, to the bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.assignment import assign, edges_of

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


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
    out = np.zeros(bids.role.size, dtype=bool)
    n_roles = roles.task.size
    if n_roles == 0:
        return out
    held = np.bincount(bids.role[members], minlength=n_roles)
    vacant = np.maximum(roles.slots - roles.done - held, 0)
    if not vacant.any():
        return out
    formed = np.zeros(n_tasks, dtype=bool)
    formed[roles.task[(held > 0) | (roles.done > 0)]] = True
    usable = np.flatnonzero(~members & ~busy[bids.col])
    if usable.size == 0:
        return out
    edges = edges_of(bids.role[usable], bids.col[usable], bids.cost[usable], n_roles)
    n_cols = int(busy.size)
    # Slots in award order: formed teams' first (a repair before a new team), then by task.
    role_order = np.lexsort((np.arange(n_roles), roles.task, ~formed[roles.task]))
    slot_role = np.repeat(role_order, vacant[role_order])
    # A forming team with a role that fewer agents bid on than it has vacant slots cannot form.
    bidders = np.bincount(bids.role[usable], minlength=n_roles)
    active = np.ones(n_tasks, dtype=bool)
    active[roles.task[(bidders < vacant) & ~formed[roles.task]]] = False
    while True:
        rows = slot_role[active[roles.task[slot_role]]]
        col4row = assign(rows, edges, n_cols)
        short = roles.task[rows[col4row < 0]]
        short = short[~formed[short]]
        if short.size == 0:
            break
        # A forming team is whole or nothing: the first one left short (rows are in task order,
        # so every team before it is whole) goes, and the teams after it are tried again
        # without it.
        active[short[0]] = False
    matched = col4row >= 0
    # The bid row of each (role, agent) matched.
    keys = bids.role[usable] * n_cols + bids.col[usable]
    order = np.argsort(keys, kind="stable")
    want = rows[matched] * n_cols + col4row[matched]
    out[usable[order[np.searchsorted(keys[order], want)]]] = True
    return out
