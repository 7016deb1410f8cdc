"""The replicated ledger of task allocation: how facts merge into it, and its sync.

:class:`TaskBoard` is the replicated ledger (tasks, bids, releases, dead sessions): every fact
merges by a maximum or a union, so nodes that hold the same facts hold the same board, whatever
the order the facts came in, and compute the same award (``docs/coordination.md``). A task id
belongs to one announcer, the one that ranks first of all that announced it
(:meth:`TaskBoard.owner_key`: the fleet's authority, a hub, before every node; then by name), so
that every node ends with the same owner whatever order the announcements came in. The board's
facts as stored, its queries, the award rule (:func:`award`, a pure function of the set of
bids), the teams and the digest are :mod:`~edge_agent.coordination.board_state`'s; here are the
merging of facts, the sync parts (:meth:`TaskBoard.sync_parts`, :meth:`TaskBoard.merge_sync`)
and bids packed in columns for the wire (:func:`bid_columns`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import msgspec
import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.board_state import (
    _MASK64,
    _NO_INTS,
    _ODD,
    ANNOUNCER,
    AUTHORITY,
    FACTS_PER_PART,
    MAX_ROUNDS,
    MAX_SESSION,
    PRECOMPUTE_MAX,
    ROLE_SPAN,
    TEAM_FACTS_PER_PART,
    Bid,
    BoardState,
    Team,
    _done_fact,
    _int64s,
    award,
    round_limit,
    seq_key,
    stable_hash64,
)
from edge_agent.coordination.messages import (
    MAX_BIDS_PER_MESSAGE,
    BidColumns,
    Consumed,
    DeadSession,
    Release,
    ReleaseStatus,
    TaskSpec,
    TaskSync,
)

__all__ = [
    "ANNOUNCER",
    "AUTHORITY",
    "FACTS_PER_PART",
    "MAX_ROUNDS",
    "MAX_SESSION",
    "PRECOMPUTE_MAX",
    "ROLE_SPAN",
    "TEAM_FACTS_PER_PART",
    "Bid",
    "TaskBoard",
    "Team",
    "abandon",
    "award",
    "bid_columns",
    "bid_rows",
    "bids_from_columns",
    "round_limit",
    "seq_key",
    "stable_hash64",
]


class TaskBoard(BoardState):
    """The ledger one node keeps of the fleet's auctions. Every fact merges by a maximum or a
    union, so two boards with the same facts are equal, whatever the order the facts came in
    (they compute the same :meth:`award` and have the same :meth:`digest`).

    Facts and how they merge:

    * a task's owner: of every announcer of a spec of the task, the first by :meth:`owner_key`
      (``(rank, name)``: the fleet's authority before every node, then by name); a spec of
      another announcer changes nothing, and one of an announcer that ranks before the owner
      takes the task over (:meth:`_rebind`);
    * a task's spec: of the owner's specs, the one with the largest :meth:`TaskSpec.order_key`;
    * a task's epoch (``floor``): the largest epoch seen in the owner's specs, a bid or an
      ``abandoned`` release (``epoch + 1``); raising it drops every bid of older epochs;
    * closed: per task the largest epoch a ``done``/``expired`` release was for; a task is
      *live* while its floor is above it, and *open* when it is live and has a spec;
    * consumed: per ``(node, group, agent)`` the largest ``(bdseq, bseq)`` of its releases; bids
      up to it no longer count (they are dropped);
    * dead: per node the largest ``bdseq`` known dead (offline will or death); that session's
      bids no longer count (they are dropped);
    * bids: per ``(task, node, group, agent, role)`` at the task's floor, the largest
      ``(bdseq, bseq)``, then the lowest cost (a hold -- a team member taking its slot -- is
      its agent's later bid on that role, flagged);
    * a team task's finished parts: per task at its floor, the members' ``done`` releases
      (``team_done``); the task closes when every slot is done. An ``abandoned`` release of a
      team task only uses up its agent's bids (the slot is repaired, the round stays).

    :meth:`award` is the one-agent tasks' award (:func:`award`, over the agents that hold no
    team slot), :meth:`teams` the team tasks' (:mod:`~edge_agent.coordination.team_award`).

    The digest is a set hash over the canonical facts -- live tasks' specs and floors, stored
    bids (which are exactly the valid ones), tombstones, consumed and dead entries -- kept up to
    date in O(1) per change. Bounded: ``max_tasks`` task entries (closed ones are evicted
    first), ``max_bids`` bids, ``max_tombstones``, ``max_consumed`` and ``max_nodes``; what does
    not fit is refused and counted in ``overflow``. Owners are kept for every task that has a
    floor or a tombstone (at most ``max_tasks + max_tombstones``).
    """

    # -- merging facts --------------------------------------------------------------------------
    def _raise_floor(self, task: str, epoch: int) -> bool:
        cur = self.floor.get(task)
        if cur is not None and epoch <= cur:
            return False
        if cur is None and len(self.floor) >= self.max_tasks:
            self._evict_closed()
        if cur is None and len(self.floor) >= self.max_tasks:
            self.overflow += 1
            return False
        self._drop_bids(task)
        if task in self._live:
            self._hash.remove(("floor", task, cur))
            self._hash.add(("floor", task, epoch))
        self.floor[task] = epoch
        self._update_live(task)
        self._changed()
        return True

    def add_spec(self, spec: TaskSpec, signature: bytes = b"") -> bool:
        """Merge a task spec (an announcement, or one part of a sync); ``signature``, its
        announcer's, is kept with it for syncs to relay. A spec of an announcer the task's
        owner ranks before changes nothing (False, :meth:`outranked`); one of an announcer that
        ranks before the owner takes the task over (:meth:`_rebind`)."""
        task = spec.task
        key = self.owner_key(spec.announced_by)
        bound = self.owners.get(task)
        if bound is not None and key > bound:
            return False
        if bound is None and len(self.owners) >= self.max_owners:
            self.overflow += 1
            return False
        changed = False
        if bound is not None and key < bound:
            self._rebind(task, spec, signature, key)
            changed = True
        changed |= self._raise_floor(task, spec.epoch)
        if task not in self.floor:
            return changed  # no room
        self.owners[task] = key
        cur = self.specs.get(task)
        if cur is None or spec.order_key() > cur.order_key():
            self.specs[task] = spec
            self.specs_version += 1
            if signature:
                self.spec_sigs[task] = signature
            else:
                self.spec_sigs.pop(task, None)
            if cur is None or cur.order_key()[1:] != spec.order_key()[1:]:
                if task in self._live:
                    if cur is not None:
                        self._hash.remove(self._spec_fact(cur))
                    self._hash.add(self._spec_fact(spec))
                self._changed()
                changed = True
        return changed

    def _rebind(self, task: str, spec: TaskSpec, signature: bytes, key: tuple[int, str]) -> None:
        """``spec``'s announcer ranks before ``task``'s owner: the task is its from now on.

        Its spec replaces the old owner's, and of what came under the old owner, only what
        ``spec`` allows stays: what a board that had ``spec`` first would have taken, since a
        peer's bids, releases and tombstones name epochs up to :func:`round_limit` of the
        owner's spec. So the floor goes back to the larger of ``spec``'s epoch and the largest
        epoch a bid or an ``abandoned`` release named within that limit (the old spec's own
        epoch no longer counts); a tombstone beyond the limit goes, with its closer; a kept
        tombstone's closer is relayed with ``spec`` from now on. Bids stay when the floor does.
        """
        self.owners[task] = key
        self._set_live(task, False)  # its facts leave the digest; what stays comes back below
        self.specs.pop(task, None)
        self.specs_version += 1
        self.spec_sigs.pop(task, None)
        limit = round_limit(spec.epoch)
        closed = self.closed.get(task)
        if closed is not None and closed > limit:
            self._hash.remove(("closed", task, closed))
            del self.closed[task]
            self.closers.pop(task, None)
            self.team_closers.pop(task, None)
            self.closed_specs.pop(task, None)
        elif task in self.closed_specs:
            if signature:
                self.closed_specs[task] = (spec, signature)
            else:
                del self.closed_specs[task]
        fact = self._fact_floor.get(task, -1)
        if fact > limit:
            fact = -1
            del self._fact_floor[task]
        if task in self.floor:
            floor = max(spec.epoch, fact)
            if floor != self.floor[task]:
                self._drop_bids(task)
                self.floor[task] = floor
            self._update_live(task)
        self._changed()

    def _accepts_epoch(self, task: str, epoch: int) -> tuple[bool, bool]:
        """(bids at ``epoch`` can be stored, the floor was raised)."""
        floor = self.floor.get(task)
        if self.closed.get(task, -1) >= epoch or (floor is not None and epoch < floor):
            accepted, raised = False, False
        elif floor is None or epoch > floor:
            raised = self._raise_floor(task, epoch)
            accepted = self.floor.get(task) == epoch
        else:
            accepted, raised = True, False
        if self.closed.get(task, -1) < epoch:
            self._note_epoch(task, epoch)
        return accepted, raised

    def _note_epoch(self, task: str, epoch: int) -> None:
        """A bid or an ``abandoned`` release named ``epoch`` for ``task`` (``_fact_floor``),
        whether or not it raised the floor (a spec of another owner may have raised it more)."""
        if task in self.floor and self._fact_floor.get(task, -1) < epoch:
            self._fact_floor[task] = epoch

    def add_bid(self, bid: Bid) -> bool:
        """Merge one bid. False when it changes nothing (stale, invalid, a duplicate)."""
        return self.add_bids(
            bid.node,
            bid.group,
            bid.bdseq,
            bid.bseq,
            [bid.task],
            epochs=[bid.epoch],
            task_index=[0],
            agents=[bid.agent],
            costs=[bid.cost],
            roles=[bid.role],
            holds=[bid.held],
        )

    def add_bids(
        self,
        node: str,
        group: str,
        bdseq: int,
        bseq: int,
        tasks: Sequence[str],
        *,
        epochs: Sequence[int],
        task_index: Sequence[int] | NDArray[np.integer],
        agents: Sequence[int] | NDArray[np.integer],
        costs: Sequence[float] | NDArray[np.floating],
        roles: Sequence[int] | NDArray[np.integer] | None = None,
        holds: Sequence[bool] | NDArray[np.bool_] | None = None,
    ) -> bool:
        """Merge one node's bid message (columnar, as :class:`TaskBids` carries it); ``roles``
        and ``holds`` per bid for team tasks (0 and False when None)."""
        if bdseq > MAX_SESSION:
            self.stale_bids += len(task_index)
            return False
        key = seq_key(bdseq, bseq)
        changed = False
        usable: list[int] = []  # each task's slot in the columns, -1: not usable
        floors, closed, fact_floor = self.floor, self.closed, self._fact_floor
        slot_of = self.rows.slot_of
        for task, epoch in zip(tasks, epochs, strict=True):
            # A bid's epoch counts even when the bid does not: floors depend on every bid seen.
            # The open round, already noted (a formation's every message after the first):
            # accepted, nothing raised nor noted, as _accepts_epoch says, without the call.
            if not (
                floors.get(task) == epoch
                and closed.get(task, -1) < epoch
                and fact_floor.get(task, -1) >= epoch
            ):
                ok, raised = self._accepts_epoch(task, epoch)
                changed |= raised
                if not ok:
                    usable.append(-1)
                    continue
            t = slot_of.get(task)  # (a slot taken only when the task has none)
            if t is None:
                t = self.rows.task(task, self._task_salts(task))
            usable.append(t)
        node_id = self._node(node)
        n = len(task_index)
        if node_id is None or self._node_dead.data[node_id] >= bdseq:
            self.stale_bids += n
            return changed
        if n == 0:
            return changed
        self._settle()
        t_of = _int64s(task_index)
        role = np.zeros(n, np.int64) if roles is None else _int64s(roles)
        held = np.zeros(n, bool) if holds is None else np.asarray(holds, dtype=bool)
        agent = _int64s(agents)
        slot_of_task = np.array(usable, dtype=np.int64)
        rows = np.flatnonzero(
            (slot_of_task[t_of] >= 0) & (role >= 0) & (role < ROLE_SPAN) & (agent >= 0)
        )
        first_new = self._n_holders  # holders made from here on have no rows anywhere
        h = self._holders_of(node, group, agent[rows])
        fresh = h >= 0
        fresh[fresh] = key > self._holder_consumed.data[h[fresh]]
        rows, h = rows[fresh], h[fresh]
        if not rows.size:
            self.stale_bids += n
            return changed
        slot = h * ROLE_SPAN + role[rows]
        cost = np.asarray(costs, dtype=np.float64)[rows]
        t_rows = t_of[rows]  # (the room is given by task, then in the message's order)
        unseen = h >= first_new
        held_rows = held[rows]
        task_slot = slot_of_task[t_rows]
        # What the ledger computes of a row, once, as it comes: its hash in the digest, its
        # tie-break in the team award (its task's two salts kept with the task's slot).
        salts = self.rows.salts[task_slot]
        seq_term = np.array([(key * int(_ODD[1])) & _MASK64], dtype=np.uint64)
        hashed = self._row_hashes(slot, cost, seq_term, held_rows, salts[:, 0])
        tie = self._tie_breaks(slot, salts[:, 1])
        merged = self.rows.merge(
            task_slot, slot, cost, key, held_rows, tie, hashed, node_id,
            room=self.max_bids - self.rows.n, unseen=unseen, room_order=t_rows,
        )  # fmt: skip
        self.overflow += merged.refused
        self.stale_bids += n - merged.changed
        if merged.changed:
            self._changed()
        return changed or merged.changed > 0

    def _holders_of(self, node: str, group: str, agents: NDArray[np.int64]) -> NDArray[np.int64]:
        """The holder id of each of ``node/group``'s ``agents`` (-1: no room for a new one),
        looked up in one vectorised step; agents new to the board get ids first, in order."""
        n, g = self._nodes.ids[node], self._groups(group)
        known, ids = self._agent_maps.get((n, g), (_NO_INTS, _NO_INTS))
        at = np.searchsorted(known, agents)
        found = at < known.size
        found[found] = known[at[found]] == agents[found]
        out = np.full(agents.size, -1, dtype=np.int64)
        out[found] = ids[at[found]]
        if not found.all():
            # The new agents get ids in the order they first appear: the ids made are those
            # of the first ones there was room for, each new agent's row given its own.
            new, first, inverse = np.unique(agents[~found], return_index=True, return_inverse=True)
            order = np.argsort(first)
            _, made = self._new_holders(node, group, new[order])
            id_of = np.full(new.size, -1, dtype=np.int64)
            id_of[order[: made.size]] = made
            out[~found] = id_of[inverse]
        return out

    def add_consumed(self, node: str, group: str, agent: int, bdseq: int, bseq: int) -> bool:
        if bdseq > MAX_SESSION:
            self.overflow += 1
            return False
        name_key = (node, group, agent)
        key = seq_key(bdseq, bseq)
        cur = self.consumed.get(name_key)
        if cur is not None and cur >= key:
            return False
        if cur is None and len(self.consumed) >= self.max_consumed:
            self.overflow += 1
            return False
        if cur is not None:
            self._hash.remove(("consumed", *name_key, cur))
        self._hash.add(("consumed", *name_key, key))
        self.consumed[name_key] = key
        h = self._holder(node, group, agent)
        if h is not None:
            self._holder_consumed.data[h] = key
            self._unsettled = True  # its bids up to key go (_settle)
        self._changed()
        return True

    def close(self, task: str, epoch: int) -> bool:
        """Merge a tombstone: ``task`` was done or expired at ``epoch``."""
        cur = self.closed.get(task)
        if cur is not None and cur >= epoch:
            return False
        if cur is None and len(self.closed) >= self.max_tombstones:
            self.overflow += 1
            return False
        if cur is not None:
            self._hash.remove(("closed", task, cur))
        self._hash.add(("closed", task, epoch))
        self.closed[task] = epoch
        if self.floor.get(task, -1) <= epoch:
            self._drop_bids(task)
        self._update_live(task)
        self._changed()
        return True

    def add_release(self, rel: Release, signature: bytes = b"") -> bool:
        """Merge a holder's release (its bids are consumed; done/expired close, abandoned
        re-auctions at ``epoch + 1``). ``signature``, the holder's, is kept with the tombstone
        it made, for syncs to relay (the board does not check it: its caller does). A release
        of a session beyond :data:`MAX_SESSION` changes nothing.

        Of a team task: ``abandoned`` only uses up the member's bids (its slot is vacant, the
        round goes on), ``done`` finishes the member's part (:attr:`team_done`; the last part
        closes the task), ``expired`` closes it."""
        if rel.bdseq > MAX_SESSION:
            self.overflow += 1
            return False
        changed = self.add_consumed(rel.node, rel.group, rel.agent, rel.bdseq, rel.bseq)
        team = self.is_team(rel.task)
        if rel.status is ReleaseStatus.ABANDONED:
            if not team:
                changed |= self._raise_floor(rel.task, rel.epoch + 1)
                self._note_epoch(rel.task, rel.epoch + 1)
        elif team and rel.status is ReleaseStatus.DONE:
            changed |= self._finish_part(rel, signature)
        else:
            changed |= self.close(rel.task, rel.epoch)
            if signature and self.closed.get(rel.task) == rel.epoch:
                cur = self.closers.get(rel.task)
                if cur is None or cur[0].epoch != rel.epoch:
                    self.closers[rel.task] = (rel, signature)
                    spec, spec_sig = self.specs.get(rel.task), self.spec_sigs.get(rel.task)
                    if spec is not None and spec_sig:
                        self.closed_specs[rel.task] = (spec, spec_sig)
        return changed

    def _finish_part(self, rel: Release, signature: bytes) -> bool:
        """A team member's ``done`` release of the current round: its slot is finished; when
        every slot of every role is, the task closes (:attr:`team_closers`)."""
        task = rel.task
        spec = self.specs[task]
        if self.floor.get(task) != rel.epoch or task not in self._live:
            return False
        done = self.team_done.setdefault(task, {})
        holder = (rel.node, rel.group, rel.agent)
        if rel.role_index >= len(spec.slots()):
            return False
        cur = done.get(holder)
        if cur is not None:
            # One part per agent: of two, the larger (bdseq, bseq, role) -- a maximum, so the
            # order they came in does not matter.
            old = cur[0]
            if (old.bdseq, old.bseq, old.role_index) >= (rel.bdseq, rel.bseq, rel.role_index):
                return False
            self._hash.remove(_done_fact(old))
        done[holder] = (rel, signature)
        self._hash.add(_done_fact(rel))
        self._changed()
        per_role = [0] * len(spec.slots())
        for part, _ in done.values():
            per_role[part.role_index] += 1
        if all(n >= role.agents for n, role in zip(per_role, spec.slots(), strict=True)):
            parts = sorted(done.values(), key=lambda p: (p[0].node, p[0].group, p[0].agent))
            self.close(task, rel.epoch)
            if all(sig for _, sig in parts):
                self.team_closers[task] = parts
                spec_sig = self.spec_sigs.get(task)
                if spec_sig:
                    self.closed_specs[task] = (spec, spec_sig)
        return True

    def add_dead(self, node: str, bdseq: int) -> list[Bid]:
        """Merge a dead session: its bids stop counting.

        Returns the winning bids it had just before (what the one-agent award gave its agents).
        Turning them into ``abandoned`` releases (:func:`abandon`) re-auctions those tasks at
        the next epoch; that is the caller's choice, so the board stays a function of its facts
        alone. Its team members leave their slots vacant, which the award fills again from the
        bids held (:meth:`teams`): the round goes on.
        """
        cur = self.dead.get(node)
        if cur is not None and cur >= bdseq:
            return []
        node_id = self._node(node)
        if node_id is None:
            return []
        held = [b for b in self.award().values() if b.node == node and b.bdseq <= bdseq]
        if cur is not None:
            self._hash.remove(("dead", node, cur))
        self._hash.add(("dead", node, bdseq))
        self.dead[node] = bdseq
        self._node_dead.data[node_id] = bdseq
        self._unsettled = True  # its bids go (_settle)
        self._changed()
        return held

    # -- sync -----------------------------------------------------------------------------------
    def sync_parts(self, own: str | None = None) -> list[TaskSync]:
        """The whole ledger as :class:`TaskSync` parts, each under the message limits. Specs go
        as their announcer signed them (a floor above a spec's epoch reaches peers in the bids
        of that round, which each bidder sends itself), and only signed ones; each closer goes
        with its task's signed spec, in the same part.

        Team tasks' facts (their specs, bids, holds and members' signed releases) go in parts of
        their own (:meth:`team_sync_parts`): a node of the version before teams refuses those
        parts whole and still takes the others. ``own``: only that node's bids go (a receiver
        takes no other node's bids from a sync: sending them was every sync's bulk)."""
        team = {t for t, spec in self.specs.items() if spec.is_team}
        specs = [
            (s, sig)
            for t, s in self.specs.items()
            if t in self._live and t not in team and (sig := self.spec_sigs.get(t))
        ]
        closers = [
            (*c, self.closed_specs.get(t))
            for t, e in self.closed.items()
            if (c := self.closers.get(t)) and c[0].epoch == e and not self._closes_team(t, c[0])
        ]
        consumed = [
            Consumed(node=n, group=g, agent=a, bdseq=k >> 32, bseq=k & 0xFFFFFFFF)
            for (n, g, a), k in self.consumed.items()
        ]
        dead = [DeadSession(node=n, bdseq=b) for n, b in self.dead.items()]
        bids = [
            b
            for t in self.rows.slot_of
            if t not in team
            for b in self.valid_bids(t)
            if own is None or b.node == own
        ]
        # Facts go in parts of their own, bids in others: a part of either kind stays under the
        # message limit (FACTS_PER_PART facts of each kind; or 8,192 bids).
        step = FACTS_PER_PART
        n_facts = max(math.ceil(len(x) / step) for x in (specs, closers, consumed, dead))
        parts = []
        for i in range(n_facts):
            sl = slice(i * step, (i + 1) * step)
            part_specs = specs[sl] + [c[2] for c in closers[sl] if c[2] is not None]
            parts.append(
                TaskSync(
                    tasks=[spec for spec, _ in part_specs],
                    task_sigs=b"".join(sig for _, sig in part_specs),
                    consumed=consumed[sl],
                    dead=dead[sl],
                    closers=[c[0] for c in closers[sl]],
                    closer_sigs=b"".join(c[1] for c in closers[sl]),
                )
            )
        for start in range(0, len(bids), MAX_BIDS_PER_MESSAGE):
            parts.append(TaskSync(bids=bid_columns(bids[start : start + MAX_BIDS_PER_MESSAGE])))
        if not parts:
            parts.append(TaskSync())
        return parts + self.team_sync_parts(own)

    def _closes_team(self, task: str, rel: Release) -> bool:
        """Whether ``rel``, the closer of ``task``, closed a team task (it relays with the
        team's facts)."""
        held = self.closed_specs.get(task)
        spec = held[0] if held is not None else self.specs.get(task)
        return spec is not None and spec.is_team

    def team_sync_parts(self, own: str | None = None) -> list[TaskSync]:
        """The team tasks' facts as :class:`TaskSync` parts: per task its signed spec with the
        signed releases of its members that a peer needs (the ``done`` parts of the current
        round, or what closed it), at most :data:`TEAM_FACTS_PER_PART` specs and releases in a
        part; then their bids and holds."""
        groups: list[tuple[tuple[TaskSpec, bytes], list[tuple[Release, bytes]]]] = []
        for task, spec in self.specs.items():
            sig = self.spec_sigs.get(task)
            if spec.is_team and task in self._live and sig:
                groups.append(((spec, sig), list(self.team_done.get(task, {}).values())))
        for task, epoch in self.closed.items():
            held = self.closed_specs.get(task)
            if held is None or not held[0].is_team:
                continue
            closed = [c for c in self.team_closers.get(task, []) if c[0].epoch == epoch]
            one = self.closers.get(task)
            if one is not None and one[0].epoch == epoch and not closed:
                closed = [one]
            if closed:
                groups.append((held, closed))
        parts: list[TaskSync] = []
        batch: list[tuple[tuple[TaskSpec, bytes], list[tuple[Release, bytes]]]] = []
        size = 0
        for group in groups:
            n = 1 + len(group[1])
            if batch and size + n > TEAM_FACTS_PER_PART:
                parts.append(_team_part(batch))
                batch, size = [], 0
            batch.append(group)
            size += n
        if batch:
            parts.append(_team_part(batch))
        bids = [
            b
            for t, s in self.specs.items()
            if s.is_team
            for b in self.valid_bids(t)
            if own is None or b.node == own
        ]
        for start in range(0, len(bids), MAX_BIDS_PER_MESSAGE):
            parts.append(TaskSync(bids=bid_columns(bids[start : start + MAX_BIDS_PER_MESSAGE])))
        return parts

    def merge_sync(self, part: TaskSync) -> tuple[bool, list[Bid]]:
        """Merge one sync part; returns (changed, what newly dead sessions held). Everything in
        it is taken as it is: what a receiver admits from a peer is its own decision
        (:meth:`~edge_agent.coordination.relay_admission.RelayAdmission.admit_sync` keeps only what
        the facts' subjects said)."""
        before = self.version
        for i, spec in enumerate(part.tasks):
            self.add_spec(spec, part.task_signature(i))
        for tomb in part.closed:
            self.close(tomb.task, tomb.epoch)
        for i, rel in enumerate(part.closers):
            self.add_release(rel, part.closer_signature(i))
        for c in part.consumed:
            self.add_consumed(c.node, c.group, c.agent, c.bdseq, c.bseq)
        held: list[Bid] = []
        for d in part.dead:
            held += self.add_dead(d.node, d.bdseq)
        self.add_bid_columns(part.bids)
        return self.version != before, held

    def add_bid_columns(self, cols: BidColumns) -> None:
        """Merge bids of any nodes, columnar (a sync's): one :meth:`add_bids` per bid message
        they came in (the same node, group, session and ``bseq``), as that message merged; the
        ledger it leaves is the one merging them a bid at a time leaves (the merge does not
        depend on the order). A message's rows naming one task at two epochs (not sent by this
        version) merge a bid at a time."""
        n = cols.n_bids
        if n == 0:
            return
        task = cols.column("task_index").astype(np.int64)
        epoch = cols.column("epoch").astype(np.int64)
        node = cols.column("node_index").astype(np.int64)
        bdseq = cols.column("bdseq").astype(np.int64)
        group = cols.column("group_index").astype(np.int64)
        agent = cols.column("agent").astype(np.int64)
        cost = cols.column("cost").astype(np.float64)
        bseq = cols.column("bseq").astype(np.int64)
        role_col, held_col = cols.team_columns()
        role, held = role_col.astype(np.int64), held_col.astype(bool)
        order = np.lexsort((task, bseq, bdseq, group, node))
        keys = np.stack((node, group, bdseq, bseq))[:, order]
        starts = np.flatnonzero(np.r_[True, (keys[:, 1:] != keys[:, :-1]).any(axis=0)])
        for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
            rows = order[lo:hi]
            tasks, first, local = np.unique(task[rows], return_index=True, return_inverse=True)
            epochs = epoch[rows][first]
            if not np.array_equal(epochs[local], epoch[rows]):
                for bid in bids_from_columns(bid_rows(cols, np.isin(np.arange(n), rows))):
                    self.add_bid(bid)
                continue
            r = int(rows[0])
            self.add_bids(
                cols.nodes[node[r]],
                cols.groups[group[r]],
                int(bdseq[r]),
                int(bseq[r]),
                [cols.tasks[t] for t in tasks.tolist()],
                epochs=epochs.tolist(),
                task_index=local,
                agents=agent[rows],
                costs=cost[rows],
                roles=role[rows],
                holds=held[rows],
            )


def _team_part(
    groups: list[tuple[tuple[TaskSpec, bytes], list[tuple[Release, bytes]]]],
) -> TaskSync:
    releases = [r for _, rs in groups for r in rs]
    return TaskSync(
        tasks=[spec for (spec, _), _ in groups],
        task_sigs=b"".join(sig for (_, sig), _ in groups),
        closers=[rel for rel, _ in releases],
        closer_sigs=b"".join(sig for _, sig in releases),
    )


def bid_columns(bids: Sequence[Bid]) -> BidColumns:
    """Pack bids of any nodes into a :class:`BidColumns`."""
    if not bids:
        return BidColumns()
    nodes = sorted({b.node for b in bids})
    groups = sorted({b.group for b in bids})
    tasks = sorted({b.task for b in bids})
    ni = {n: i for i, n in enumerate(nodes)}
    gi = {g: i for i, g in enumerate(groups)}
    ti = {t: i for i, t in enumerate(tasks)}
    return BidColumns(
        nodes=nodes,
        groups=groups,
        tasks=tasks,
        task_index=np.array([ti[b.task] for b in bids], "<u2").tobytes(),
        epoch=np.array([b.epoch for b in bids], "<u4").tobytes(),
        node_index=np.array([ni[b.node] for b in bids], "<u2").tobytes(),
        bdseq=np.array([b.bdseq for b in bids], "<u4").tobytes(),
        group_index=np.array([gi[b.group] for b in bids], "<u2").tobytes(),
        agent=np.array([b.agent for b in bids], "<u4").tobytes(),
        cost=np.array([b.cost for b in bids], "<f4").tobytes(),
        bseq=np.array([b.bseq for b in bids], "<u4").tobytes(),
        **_team_bid_columns(bids),
    )


def _team_bid_columns(bids: Sequence[Bid]) -> dict[str, bytes]:
    """The ``role`` and ``held`` columns, only when a bid is on a team task's role other than
    the first or is a hold (one-agent tasks' bids go as before teams)."""
    roles = np.array([b.role for b in bids], np.uint8)
    held = np.array([b.held for b in bids], np.uint8)
    if not roles.any() and not held.any():
        return {}
    return {"role": roles.tobytes(), "held": held.tobytes()}


def bid_rows(cols: BidColumns, keep: NDArray[np.bool_]) -> BidColumns:
    """The rows of ``cols`` where ``keep`` is True (name lists unchanged)."""
    if cols.n_bids == 0 or bool(keep.all()):
        return cols
    kept = {name: cols.column(name)[keep].tobytes() for name, _ in BidColumns._SIZES}
    role, held = cols.team_columns()
    if cols.role is not msgspec.UNSET:
        kept["role"] = role[keep].tobytes()
    if cols.held is not msgspec.UNSET:
        kept["held"] = held[keep].tobytes()
    return msgspec.structs.replace(cols, **kept)


def bids_from_columns(cols: BidColumns) -> Iterator[Bid]:
    if cols.n_bids == 0:
        return
    task = cols.column("task_index").tolist()
    epoch = cols.column("epoch").tolist()
    node = cols.column("node_index").tolist()
    bdseq = cols.column("bdseq").tolist()
    group = cols.column("group_index").tolist()
    agent = cols.column("agent").tolist()
    cost = cols.column("cost").tolist()
    bseq = cols.column("bseq").tolist()
    role_col, held_col = cols.team_columns()
    role, held = role_col.tolist(), held_col.astype(bool).tolist()
    for i in range(cols.n_bids):
        yield Bid(
            cols.tasks[task[i]],
            epoch[i],
            cols.nodes[node[i]],
            cols.groups[group[i]],
            agent[i],
            cost[i],
            bdseq[i],
            bseq[i],
            role[i],
            held[i],
        )


def abandon(bid: Bid, *, team: bool = False) -> Release:
    """The ``abandoned`` release of a winning bid (a one-agent task is re-auctioned at epoch +
    1); of a ``team`` task's member, with its role (its slot is filled again)."""
    return Release(
        task=bid.task,
        epoch=bid.epoch,
        node=bid.node,
        group=bid.group,
        agent=bid.agent,
        bdseq=bid.bdseq,
        bseq=bid.bseq,
        status=ReleaseStatus.ABANDONED,
        role=bid.role if team else msgspec.UNSET,
    )
