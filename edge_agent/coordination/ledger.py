"""The award rule and the replicated ledger of task allocation.

:func:`award` is a pure function of the set of bids. :class:`TaskBoard` is the replicated ledger
(tasks, bids, releases, dead sessions): every fact merges by a maximum or a union, so nodes that
hold the same facts hold the same board, whatever the order the facts came in, and compute the
same award (``docs/coordination.md``). A task id belongs to one announcer, the one that ranks
first of all that announced it (:meth:`TaskBoard.owner_key`: the fleet's authority, a hub,
before every node; then by name), so that every node ends with the same owner whatever order
the announcements came in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

import msgspec
import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.assignment import fixed_point
from edge_agent.coordination.bid_table import BidTable
from edge_agent.coordination.messages import (
    DIGEST_BYTES,
    MAX_BIDS_PER_MESSAGE,
    MAX_ROLES,
    BidColumns,
    Consumed,
    DeadSession,
    Release,
    ReleaseStatus,
    TaskSpec,
    TaskSync,
)
from edge_agent.coordination.team_award import (
    SALT_BITS,
    RoleBids,
    RoleTable,
    counted_holds,
    fill,
)
from edge_agent.fleet.names import UINT32

#: Largest ``P * S`` for which :class:`TaskPreferences` keeps each holder's utility along every
#: policy precomputed (single-factor models); above it, the policy tree is walked every tick.
PRECOMPUTE_MAX: Final = 4096
#: Largest session number (``bdseq``) the ledger takes: ``(bdseq, bseq)`` is kept as one int64
#: (:func:`seq_key`). A node's session number grows by one per connection, so no node reaches
#: it; a fact that claims a larger one is refused (it used to overflow the ledger's arrays).
MAX_SESSION: Final = (1 << 31) - 1
#: Facts of each kind (specs, closers with their specs, consumed agents, dead sessions) in one
#: part of a sync: at most 1,296 bytes per fact of each kind with their signatures (64-character
#: names, the largest numbers), so a part stays under the 256 KiB message limit (tested).
FACTS_PER_PART: Final = 192
TEAM_FACTS_PER_PART: Final = 64
"""Team specs and their members' releases in one part of a sync: a team spec of 16 roles with
the longest names, and a release, are each under 2.5 KB with their signatures (tested)."""
MAX_ROUNDS: Final = 1024
"""Rounds a task may run past its newest signed spec: the largest epoch a bid or an ``abandoned``
release may name is the spec's epoch plus this (:func:`round_limit`). Re-auctions (a holder gave
up or died) move a task one round each; a task re-auctioned this often under one announcement
stays in its last round (a dead holder's task goes to the next bidder of that round). Every node
of a fleet must use the same number."""
AUTHORITY: Final = 0
"""The rank of an announcer that speaks with the fleet's authority (a hub: its task key is one
of the hub keys the node obeys) in :meth:`TaskBoard.owner_key`."""
ANNOUNCER: Final = 1
"""The rank of any other announcer (a node)."""


def round_limit(epoch: int) -> int:
    """The largest epoch a peer may name for a task whose newest signed spec has ``epoch``."""
    return min(epoch + MAX_ROUNDS, UINT32 - 1)


# --------------------------------------------------------------------------------------------
# the award rule
# --------------------------------------------------------------------------------------------
class Bid(NamedTuple):
    task: str
    epoch: int
    node: str
    group: str
    agent: int
    cost: float
    bdseq: int
    bseq: int
    role: int = 0
    """The role of a team task it is for (0 for a one-agent task)."""
    held: bool = False
    """A hold: the agent took its slot of the team (team tasks only)."""

    @property
    def holder(self) -> tuple[str, str, int]:
        return (self.node, self.group, self.agent)


class Team(NamedTuple):
    """A team task as the award has it (:mod:`~edge_agent.coordination.team_award`)."""

    task: str
    epoch: int
    slots: tuple[int, ...]
    """Slots per role (the spec's own role first)."""
    members: tuple[Bid, ...]
    """The agents filling its slots, by role then holder: holds (``held``) and bids the
    assignment chose."""
    done: tuple[Release, ...]
    """The members that finished their part (their ``done`` releases of this round)."""

    @property
    def size(self) -> int:
        return sum(self.slots)

    @property
    def vacant(self) -> int:
        return self.size - len(self.members) - len(self.done)

    @property
    def formed(self) -> bool:
        """Whether a member took its slot (a hold) or finished: the team exists, and a slot
        left vacant is repaired (re-filled) rather than the team formed anew."""
        return bool(self.done) or any(m.held for m in self.members)

    def member(self, holder: tuple[str, str, int]) -> Bid | None:
        return next((m for m in self.members if m.holder == holder), None)


def award(open_epochs: Mapping[str, int], bids: Iterable[Bid]) -> dict[str, Bid]:
    """The award rule: a pure function of the set of bids.

    1. Only bids on an open task at its current epoch count (and on its only role: a bid with
       a role or a hold is for a team task's slot).
    2. Per ``(task, epoch, node, group, agent)`` the bid with the largest ``(bdseq, bseq)``
       counts (a re-bid replaces an earlier one); on equal sequence, the lower cost.
    3. Bids are taken in increasing ``(cost, task, node, group, agent)`` order (strings compare
       by code point); a bid wins when its task has no winner yet and its agent holds no task.

    So every agent holds at most one task and every task at most one agent; the result depends
    on the set of bids only, not on their order or duplicates. It is the greedy assignment:
    when every task has at least as many distinct bidders as there are open tasks, every task
    gets an agent.
    """
    best: dict[tuple[str, int, str, str, int], Bid] = {}
    for b in bids:
        if open_epochs.get(b.task) != b.epoch or b.role or b.held:
            continue
        key = (b.task, b.epoch, b.node, b.group, b.agent)
        cur = best.get(key)
        if cur is None or (b.bdseq, b.bseq, -b.cost) > (cur.bdseq, cur.bseq, -cur.cost):
            best[key] = b
    order = sorted(best.values(), key=lambda b: (b.cost, b.task, b.node, b.group, b.agent))
    out: dict[str, Bid] = {}
    taken: set[tuple[str, str, int]] = set()
    for b in order:
        if b.task in out or b.holder in taken:
            continue
        out[b.task] = b
        taken.add(b.holder)
        if len(out) == len(open_epochs):
            break
    return out


# --------------------------------------------------------------------------------------------
# the replicated ledger
# --------------------------------------------------------------------------------------------
ROLE_SPAN: Final = MAX_ROLES
"""A stored bid's key is ``holder * ROLE_SPAN + role``."""


def seq_key(bdseq: int, bseq: int) -> int:
    """``(bdseq, bseq)`` as one int that orders the same way (both are uint32)."""
    return (bdseq << 32) | bseq


class _Intern:
    """Names to dense ids (for vectorised look-ups); ids are local to one board."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def ranks(self) -> NDArray[np.int64]:
        """Rank of every id by its name (code point order)."""
        order = sorted(range(len(self.names)), key=self.names.__getitem__)
        out = np.empty(len(order), dtype=np.int64)
        out[order] = np.arange(len(order))
        return out


class _Growable:
    """A 1-D int64 array that doubles when it fills; unset entries hold ``fill``."""

    def __init__(self, fill: int) -> None:
        self.fill = fill
        self.data = np.full(16, fill, dtype=np.int64)

    def ensure(self, n: int) -> None:
        if n > self.data.size:
            grown = np.full(max(n, 2 * self.data.size), self.fill, dtype=np.int64)
            grown[: self.data.size] = self.data
            self.data = grown


class _SetHash:
    """An order-independent hash of a set of facts, updated in O(1) per added/removed fact:
    the sum of the facts' 128-bit BLAKE2b hashes modulo 2**128."""

    MOD: Final = 1 << 128

    def __init__(self) -> None:
        self.value = 0

    @staticmethod
    def _h(fact: tuple[object, ...]) -> int:
        packed = msgspec.msgpack.encode(fact)
        return int.from_bytes(hashlib.blake2b(packed, digest_size=16).digest(), "little")

    def add(self, fact: tuple[object, ...]) -> None:
        self.value = (self.value + self._h(fact)) % self.MOD

    def remove(self, fact: tuple[object, ...]) -> None:
        self.value = (self.value - self._h(fact)) % self.MOD


_NO_INTS: Final = np.empty(0, dtype=np.int64)


def _int64s(values: Sequence[int] | NDArray[np.integer]) -> NDArray[np.int64]:
    """``values`` as int64; one outside int64 (a caller's, never the wire's) becomes -1."""
    arr = np.asarray(values)
    if arr.dtype.kind == "i" or (arr.dtype.kind == "u" and arr.dtype.itemsize < 8):
        return arr.astype(np.int64, copy=False)
    return np.array([v if -(1 << 63) <= v < 1 << 63 else -1 for v in values], dtype=np.int64)


def _done_fact(rel: Release) -> tuple[object, ...]:
    """A team member's finished part, as the digest holds it."""
    return ("done", rel.task, rel.epoch, rel.node, rel.group, rel.agent, rel.role_index)


def stable_hash64(fact: tuple[object, ...]) -> int:
    """A 64-bit hash of ``fact`` that is the same on every node (BLAKE2b of its msgpack)."""
    packed = msgspec.msgpack.encode(fact)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


_MASK64: Final = (1 << 64) - 1
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)
_ODD: Final = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0xD6E8FEB86659FD93),
)


def _splitmix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser, element-wise (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


class TaskBoard:
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

    def __init__(
        self,
        *,
        max_tasks: int = 4096,
        max_bids: int = 1 << 17,
        max_tombstones: int = 1 << 16,
        max_consumed: int = 1 << 16,
        max_nodes: int = 4096,
        authority: Callable[[str], bool] | None = None,
    ) -> None:
        """``authority(announcer)``: whether ``announcer`` speaks with the fleet's authority (it
        then owns every task id it announces, :meth:`owner_key`); by default nobody does."""
        self.authority: Callable[[str], bool] = authority or (lambda _announcer: False)
        self.max_tasks = max_tasks
        self.max_bids = max_bids
        self.max_tombstones = max_tombstones
        self.max_consumed = max_consumed
        self.max_nodes = max_nodes
        self.max_holders = max_bids + max_consumed
        self.max_owners = max_tasks + max_tombstones
        self.owners: dict[str, tuple[int, str]] = {}
        """Per task id, its owner's :meth:`owner_key`. Kept while the task is known, closed
        ones too (a closed task's id stays its owner's); bounded by ``max_owners``."""
        self.specs: dict[str, TaskSpec] = {}
        self.spec_sigs: dict[str, bytes] = {}
        """Per task, its announcer's signature of ``specs[task]`` (when it came signed): what a
        sync relays with the spec (the board does not check it: its caller does)."""
        self.floor: dict[str, int] = {}
        self._fact_floor: dict[str, int] = {}
        """Per task, the largest epoch a bid or an ``abandoned`` release named (``epoch + 1``),
        whether or not it raised the floor: what :meth:`_rebind` keeps of a floor."""
        self.closed: dict[str, int] = {}
        self.closers: dict[str, tuple[Release, bytes]] = {}
        """Per closed task, the holder's signed release that closed it at ``closed[task]`` (when
        it came signed): what a sync relays instead of a bare tombstone."""
        self.closed_specs: dict[str, tuple[TaskSpec, bytes]] = {}
        """Per task in ``closers``, its signed spec when the closer came: a sync relays it with
        the closer, so that a peer that never knew the task can check the closer against what
        the task's announcer said (the spec of a closed task may be evicted from ``specs``)."""
        self.bids: dict[str, BidTable] = {}
        self.team_done: dict[str, dict[tuple[str, str, int], tuple[Release, bytes]]] = {}
        """Per open team task, its members' ``done`` releases of the current round (with their
        signatures): their slots are finished, and the task closes when all are."""
        self.team_closers: dict[str, list[tuple[Release, bytes]]] = {}
        """Per team task closed as done, the members' signed ``done`` releases that closed it
        (what a sync relays: a peer closes it only with every one of them)."""
        self.consumed: dict[tuple[str, str, int], int] = {}
        self.dead: dict[str, int] = {}
        self._live: set[str] = set()
        self._hash = _SetHash()
        self._nodes = _Intern()
        self._groups = _Intern()
        self._holders: dict[tuple[int, int, int], int] = {}
        self._agent_maps: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        """Per ``(node id, group id)``, its agents known as holders (sorted) and their ids."""
        self._unsettled = False
        """Consumed agents or dead sessions came since bids were last dropped for them
        (:meth:`_settle`)."""
        self._holder_node = _Growable(0)
        self._holder_group = _Growable(0)
        self._holder_agent = _Growable(0)
        self._holder_consumed = _Growable(-1)
        self._holder_hash = _Growable(0)
        self._task_hash: dict[str, int] = {}
        self._node_dead = _Growable(-1)
        self.n_bids = 0
        self.version = 0
        self.overflow = 0
        self.stale_bids = 0
        self._single: tuple[int, dict[str, Bid]] = (-1, {})
        self._teams: tuple[int, dict[str, Team]] = (-1, {})
        self._team_rows: tuple[
            int,
            tuple[
                dict[str, int],
                list[str],
                RoleTable,
                RoleBids,
                NDArray[np.int64],
                NDArray[np.float64],
            ]
            | None,
        ] = (-1, None)
        self._digest: tuple[int, bytes] = (-1, b"")

    # -- interning ------------------------------------------------------------------------------
    def _node(self, name: str) -> int | None:
        if name not in self._nodes.ids and len(self._nodes.names) >= self.max_nodes:
            self.overflow += 1
            return None
        i = self._nodes(name)
        self._node_dead.ensure(i + 1)
        return i

    def _holder(self, node: str, group: str, agent: int) -> int | None:
        n = self._node(node)
        if n is None:
            return None
        g = self._groups(group)
        key = (n, g, agent)
        h = self._holders.get(key)
        if h is None:
            if len(self._holders) >= self.max_holders:
                self.overflow += 1
                return None
            h = self._holders[key] = len(self._holders)
            signed = np.int64(np.uint64(stable_hash64((node, group, agent))).view(np.int64))
            for arr, value in (
                (self._holder_node, n),
                (self._holder_group, g),
                (self._holder_agent, agent),
                (self._holder_consumed, -1),
                (self._holder_hash, signed),
            ):
                arr.ensure(h + 1)
                arr.data[h] = value
            consumed = self.consumed.get((node, group, agent))
            if consumed is not None:
                self._holder_consumed.data[h] = consumed
        return h

    def _holder_name(self, h: int) -> tuple[str, str, int]:
        return (
            self._nodes.names[self._holder_node.data[h]],
            self._groups.names[self._holder_group.data[h]],
            int(self._holder_agent.data[h]),
        )

    # -- queries --------------------------------------------------------------------------------
    def owner_key(self, announcer: str) -> tuple[int, str]:
        """How ``announcer`` ranks as the owner of a task id: ``(rank, name)``, the smaller
        first; :data:`AUTHORITY` (a hub) before :data:`ANNOUNCER` (a node). The same on every
        node that knows the same hub keys, so every node binds an id to the same announcer,
        whatever order their announcements came in."""
        return (AUTHORITY if self.authority(announcer) else ANNOUNCER, announcer)

    def outranked(self, spec: TaskSpec) -> bool:
        """Whether ``spec``'s task id belongs to an announcer that ranks before its own."""
        bound = self.owners.get(spec.task)
        return bound is not None and bound < self.owner_key(spec.announced_by)

    def owner(self, task: str) -> str | None:
        """The announcer ``task`` belongs to (None while no spec of it came)."""
        bound = self.owners.get(task)
        return None if bound is None else bound[1]

    def epoch(self, task: str) -> int | None:
        return self.floor.get(task)

    def is_open(self, task: str) -> bool:
        return task in self._live and task in self.specs

    def open_epochs(self) -> dict[str, int]:
        specs = self.specs
        return {t: self.floor[t] for t in self._live if t in specs}

    def is_dead(self, node: str, bdseq: int) -> bool:
        return self.dead.get(node, -1) >= bdseq

    def bidders(self, task: str, node: str, group: str, role: int | None = None) -> set[int]:
        """Agents of ``node/group`` with a bid on ``task`` (on its ``role``, when given)."""
        self._settle()
        per = self.bids.get(task)
        n, g = self._nodes.ids.get(node), self._groups.ids.get(group)
        if per is None or n is None or g is None:
            return set()
        holder = per.keys // ROLE_SPAN
        mine = (self._holder_node.data[holder] == n) & (self._holder_group.data[holder] == g)
        if role is not None:
            mine &= per.keys % ROLE_SPAN == role
        return set(self._holder_agent.data[holder[mine]].tolist())

    def knows(self, bid: Bid) -> bool:
        """Whether this board holds ``bid`` or something that supersedes it (a later bid of
        the same agent, its consumption, its session's death, a later round, the task's end)."""
        if self.closed.get(bid.task, -1) >= bid.epoch or self.floor.get(bid.task, -1) > bid.epoch:
            return True
        key = seq_key(bid.bdseq, bid.bseq)
        if self.dead.get(bid.node, -1) >= bid.bdseq:
            return True
        if self.consumed.get((bid.node, bid.group, bid.agent), -1) >= key:
            return True
        n, g = self._nodes.ids.get(bid.node), self._groups.ids.get(bid.group)
        h = None if n is None or g is None else self._holders.get((n, g, bid.agent))
        per = self.bids.get(bid.task)
        if h is None or per is None:
            return False
        row = per.find(h * ROLE_SPAN + bid.role)
        return row >= 0 and int(per.seqs[row]) >= key

    def valid_bids(self, task: str) -> Iterator[Bid]:
        """Bids that count for ``task`` at its current epoch (all the stored ones)."""
        self._settle()
        epoch = self.floor.get(task)
        per = self.bids.get(task)
        if epoch is None or per is None:
            return
        keys, costs, seqs, helds = (a.tolist() for a in per.arrays())
        for key, cost, k, held in zip(keys, costs, seqs, helds, strict=True):
            yield Bid(
                task,
                epoch,
                *self._holder_name(key // ROLE_SPAN),
                cost,
                k >> 32,
                k & 0xFFFFFFFF,
                key % ROLE_SPAN,
                held,
            )

    def holds_of(self, node: str, tasks: Iterable[str]) -> list[Bid]:
        """``node``'s holds (bids flagged held) on ``tasks``."""
        self._settle()
        n = self._nodes.ids.get(node)
        out: list[Bid] = []
        if n is None:
            return out
        hn = self._holder_node.data
        for task in tasks:
            per = self.bids.get(task)
            if per is None:
                continue
            keys, costs, seqs, held = per.arrays()
            mine = np.flatnonzero(held & (hn[keys // ROLE_SPAN] == n))
            for key, cost, k in zip(
                keys[mine].tolist(), costs[mine].tolist(), seqs[mine].tolist(), strict=True
            ):
                out.append(
                    Bid(
                        task,
                        self.floor[task],
                        *self._holder_name(key // ROLE_SPAN),
                        cost,
                        k >> 32,
                        k & 0xFFFFFFFF,
                        key % ROLE_SPAN,
                        True,
                    )
                )
        return out

    def bid_by_all(self, task: str, nodes: Iterable[str]) -> bool:
        """Whether every one of ``nodes`` has a bid on ``task``'s current round here."""
        wanted = [self._nodes.ids.get(n) for n in nodes]
        if not wanted:
            return True
        self._settle()
        per = self.bids.get(task)
        if per is None or None in wanted:
            return False
        keys = per.arrays()[0]
        present = np.unique(self._holder_node.data[keys // ROLE_SPAN])
        return bool(np.isin(np.array(wanted, dtype=np.int64), present).all())

    def is_team(self, task: str) -> bool:
        """Whether ``task``'s spec (as this board has it) asks for a team."""
        spec = self.specs.get(task)
        return spec is not None and spec.is_team

    def award(self) -> dict[str, Bid]:
        """The one-agent tasks' award: :func:`award` over the current facts and the agents that
        hold no team slot (the same result, vectorised; cached). It needs the team tasks'
        counted holds, not their fill: a node of one-agent tasks pays nothing for teams, and
        one of teams computes their fill only when asked (:meth:`teams`)."""
        version, single = self._single
        if version == self.version:
            return single
        open_epochs, _, roles, rows, holders, _ = self._team_input()
        members = counted_holds(roles, rows, len(holders))
        single = self._single_award(
            {t: e for t, e in open_epochs.items() if not self.specs[t].is_team},
            {int(h) for h in holders[rows.col[members]]},
        )
        self._single = (self.version, single)
        return single

    def teams(self) -> dict[str, Team]:
        """The team tasks' award: every open team task with the members the award gives it
        (:mod:`~edge_agent.coordination.team_award`; cached)."""
        version, teams = self._teams
        if version == self.version:
            return teams
        single = self.award()
        open_epochs, team_tasks, roles, rows, holders, costs = self._team_input()
        members = counted_holds(roles, rows, len(holders))
        busy = np.zeros(len(holders), dtype=bool)
        busy[rows.col[members]] = True
        if single:
            rank = {int(h): c for c, h in enumerate(holders.tolist())}
            for bid in single.values():
                n, g = self._nodes.ids[bid.node], self._groups.ids[bid.group]
                c = rank.get(self._holders[(n, g, bid.agent)])
                if c is not None:
                    busy[c] = True
        filled = fill(roles, rows, members, busy, len(team_tasks))
        teams = self._team_view(
            team_tasks,
            open_epochs=open_epochs,
            roles=roles,
            rows=rows,
            costs=costs,
            chosen=members | filled,
            holders=holders,
        )
        self._teams = (self.version, teams)
        return teams

    def _team_input(
        self,
    ) -> tuple[
        dict[str, int], list[str], RoleTable, RoleBids, NDArray[np.int64], NDArray[np.float64]
    ]:
        """The open rounds, the open team tasks (by name), their roles and bids
        (:meth:`_role_bids`); cached until the ledger changes."""
        version, cached = self._team_rows
        if version == self.version and cached is not None:
            return cached
        self._settle()
        open_epochs = self.open_epochs()
        team_tasks = sorted(t for t in open_epochs if self.specs[t].is_team)
        data = (open_epochs, team_tasks, *self._role_bids(team_tasks))
        self._team_rows = (self.version, data)
        return data

    def _role_bids(
        self, tasks: list[str]
    ) -> tuple[RoleTable, RoleBids, NDArray[np.int64], NDArray[np.float64]]:
        """The team tasks' roles and bids as :mod:`~edge_agent.coordination.team_award` takes
        them, the holder id of every column (agents by their canonical rank: node name, group
        name, agent), and each bid row's cost as it came."""
        role_task: list[int] = []
        slots: list[int] = []
        done: list[int] = []
        first_role: list[int] = []
        for t, task in enumerate(tasks):
            first_role.append(len(slots))
            finished = [rel.role_index for rel, _ in self.team_done.get(task, {}).values()]
            for r, spec_role in enumerate(self.specs[task].slots()):
                role_task.append(t)
                slots.append(spec_role.agents)
                done.append(min(spec_role.agents, finished.count(r)))
        roles = RoleTable(
            np.array(role_task, dtype=np.int64),
            np.array(slots, dtype=np.int64),
            np.array(done, dtype=np.int64),
        )
        parts = [self.bids[t].arrays() for t in tasks if t in self.bids]
        where = [first_role[t] for t, task in enumerate(tasks) if task in self.bids]
        salts = [self._salt_of(task) for task in tasks if task in self.bids]
        n_roles = [len(self.specs[task].slots()) for task in tasks if task in self.bids]
        empty = np.empty(0, dtype=np.int64)
        if not parts:
            no_bids = RoleBids(empty, empty, empty, empty, np.empty(0, dtype=bool), empty)
            return roles, no_bids, empty, np.empty(0, dtype=np.float64)
        keys = np.concatenate([p[0] for p in parts])
        role = keys % ROLE_SPAN
        base = np.repeat(np.array(where, dtype=np.int64), [p[0].size for p in parts])
        limit = np.repeat(np.array(n_roles, dtype=np.int64), [p[0].size for p in parts])
        task_salt = np.repeat(np.array(salts, dtype=np.uint64), [p[0].size for p in parts])
        ok = role < limit  # admission refuses a role past the spec's; a spec taken over may differ
        keys, role, base, task_salt = keys[ok], role[ok], base[ok], task_salt[ok]
        costs = np.concatenate([p[1] for p in parts])[ok]
        seqs = np.concatenate([p[2] for p in parts])[ok]
        held = np.concatenate([p[3] for p in parts])[ok]
        holder = keys // ROLE_SPAN
        uniq = np.unique(holder)
        canon = uniq[
            np.lexsort(
                (
                    self._holder_agent.data[uniq],
                    self._groups.ranks()[self._holder_group.data[uniq]],
                    self._nodes.ranks()[self._holder_node.data[uniq]],
                )
            )
        ]
        col_of = np.empty(uniq.size, dtype=np.int64)
        col_of[np.searchsorted(uniq, canon)] = np.arange(uniq.size)
        col = col_of[np.searchsorted(uniq, holder)]
        # The tie-break: a hash of (task, role, holder), the same on every node.
        mixed = _splitmix(
            self._holder_hash.data[holder].view(np.uint64)
            ^ task_salt
            ^ (role.astype(np.uint64) * _ODD[1])
        )
        salt = (mixed >> np.uint64(64 - SALT_BITS)).astype(np.int64)
        bids = RoleBids(base + role, col, fixed_point(costs), seqs, held, salt)
        return roles, bids, canon, costs

    def _salt_of(self, task: str) -> int:
        """``task``'s part of its bids' tie-breaks (cached with its digest hash)."""
        th = self._task_hash.get(task)
        if th is None:
            th = self._task_hash[task] = stable_hash64(("task", task))
        return (th * int(_ODD[0])) & _MASK64

    def _team_view(
        self,
        tasks: list[str],
        *,
        open_epochs: Mapping[str, int],
        roles: RoleTable,
        rows: RoleBids,
        costs: NDArray[np.float64],
        chosen: NDArray[np.bool_],
        holders: NDArray[np.int64],
    ) -> dict[str, Team]:
        first = np.searchsorted(roles.task, np.arange(len(tasks)))
        by_task: dict[int, list[Bid]] = {}
        for i in np.flatnonzero(chosen).tolist():
            g = int(rows.role[i])
            t = int(roles.task[g])
            k = int(rows.seq[i])
            by_task.setdefault(t, []).append(
                Bid(
                    tasks[t],
                    open_epochs[tasks[t]],
                    *self._holder_name(int(holders[rows.col[i]])),
                    float(costs[i]),
                    k >> 32,
                    k & 0xFFFFFFFF,
                    g - int(first[t]),
                    bool(rows.held[i]),
                )
            )
        out: dict[str, Team] = {}
        for t, task in enumerate(tasks):
            members = sorted(by_task.get(t, ()), key=lambda b: (b.role, b.node, b.group, b.agent))
            done = sorted(
                (rel for rel, _ in self.team_done.get(task, {}).values()),
                key=lambda r: (r.role_index, r.node, r.group, r.agent),
            )
            out[task] = Team(
                task,
                open_epochs[task],
                tuple(role.agents for role in self.specs[task].slots()),
                tuple(members),
                tuple(done),
            )
        return out

    def _single_award(self, open_epochs: dict[str, int], excluded: set[int]) -> dict[str, Bid]:
        """:func:`award` over the one-agent tasks ``open_epochs``, without the holders
        ``excluded`` (team members)."""
        tasks = sorted(t for t in open_epochs if t in self.bids)
        out: dict[str, Bid] = {}
        if tasks:
            parts = [self.bids[t].arrays() for t in tasks]
            sizes = [p[0].size for p in parts]
            pos = np.repeat(np.arange(len(tasks)), sizes)
            keys = np.concatenate([p[0] for p in parts])
            held = np.concatenate([p[3] for p in parts])
            only = (keys % ROLE_SPAN == 0) & ~held  # a one-agent task's only role
            pos, holders = pos[only], keys[only] // ROLE_SPAN
            costs = np.concatenate([p[1] for p in parts])[only]
            seqs = np.concatenate([p[2] for p in parts])[only]
            order = np.lexsort(
                (
                    self._holder_agent.data[holders],
                    self._groups.ranks()[self._holder_group.data[holders]],
                    self._nodes.ranks()[self._holder_node.data[holders]],
                    pos,  # tasks are sorted by name, so a position is a rank
                    costs,
                )
            )
            taken: set[int] = set(excluded)
            n_tasks = len(tasks)
            pos_l, holders_l = pos[order].tolist(), holders[order].tolist()
            for i, t, h in zip(order.tolist(), pos_l, holders_l, strict=True):
                task = tasks[t]
                if task in out or h in taken:
                    continue
                k = int(seqs[i])
                out[task] = Bid(
                    task,
                    open_epochs[task],
                    *self._holder_name(h),
                    float(costs[i]),
                    k >> 32,
                    k & 0xFFFFFFFF,
                )
                taken.add(h)
                if len(out) == n_tasks:
                    break
        return out

    def digest(self) -> bytes:
        """16-byte hash of every fact that matters, independent of their order.

        Tasks, tombstones, consumed and dead entries are in a set hash updated on every change;
        bids are hashed per task (vectorised, cached until that task's bids change).
        """
        version, cached = self._digest
        if version == self.version:
            return cached
        self._settle()
        total = 0
        for task, per in self.bids.items():
            if per.digest is None:
                per.digest = self._bids_hash(task, per)
            total = (total + per.digest) & _MASK64
        packed = self._hash.value.to_bytes(16, "little") + total.to_bytes(8, "little")
        result = hashlib.blake2b(packed, digest_size=DIGEST_BYTES).digest()
        self._digest = (self.version, result)
        return result

    def _bids_hash(self, task: str, per: BidTable) -> int:
        if not len(per):
            return 0
        th = self._task_hash.get(task)
        if th is None:
            th = self._task_hash[task] = stable_hash64(("task", task))
        keys, costs, seqs, held = per.arrays()
        x = self._holder_hash.data[keys // ROLE_SPAN].view(np.uint64)
        x = x ^ (costs.view(np.uint64) * _ODD[0]) ^ (seqs.view(np.uint64) * _ODD[1])
        # A team task's role and hold flag (0 for a one-agent task's bids: their hash is as it
        # was before teams, so that nodes of both versions agree on one-agent ledgers).
        slot = (keys % ROLE_SPAN + ROLE_SPAN * held).astype(np.uint64)
        x = x ^ (slot * _ODD[3])
        x = _splitmix(x ^ np.uint64((th * int(_ODD[2])) & _MASK64))
        return int(x.sum(dtype=np.uint64))

    # -- canonical facts in the digest ----------------------------------------------------------
    def _spec_fact(self, spec: TaskSpec) -> tuple[object, ...]:
        return ("spec", spec.task, *spec.order_key()[1:])

    def _set_live(self, task: str, live: bool) -> None:
        if live == (task in self._live):
            return
        change = self._hash.add if live else self._hash.remove
        change(("floor", task, self.floor[task]))
        spec = self.specs.get(task)
        if spec is not None:
            change(self._spec_fact(spec))
        for rel, _ in self.team_done.get(task, {}).values():
            change(_done_fact(rel))
        if live:
            self._live.add(task)
        else:
            self._live.discard(task)

    def _update_live(self, task: str) -> None:
        """Live: not closed at its current epoch. Closed tasks keep their spec and floor (they
        matter only if a larger epoch reopens them) outside the digest."""
        self._set_live(task, self.floor.get(task, -1) > self.closed.get(task, -1))

    # -- merging facts --------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1

    def _settle(self) -> None:
        """Drop the bids of agents consumed and of sessions dead since the last call: one pass
        over the tasks with bids, vectorised, however many releases and deaths came (a bid a
        consumed agent or a dead session made counts for nothing meanwhile: it can win no award,
        as every reader settles first)."""
        if not self._unsettled:
            return
        self._unsettled = False
        consumed, dead = self._holder_consumed.data, self._node_dead.data
        hn = self._holder_node.data
        for per in self.bids.values():
            if not len(per):
                continue
            holder = per.keys // ROLE_SPAN
            gone = (per.seqs <= consumed[holder]) | ((per.seqs >> 32) <= dead[hn[holder]])
            self.n_bids -= per.drop(gone)

    def _drop_bids(self, task: str) -> None:
        """The round ended (a new one, or the task closed): its bids and finished parts go."""
        done = self.team_done.pop(task, None)
        if done and task in self._live:
            for rel, _ in done.values():
                self._hash.remove(_done_fact(rel))
        per = self.bids.pop(task, None)
        if per is not None:
            self.n_bids -= len(per)

    def _evict_closed(self) -> None:
        for task in [t for t in self.floor if t not in self._live]:
            del self.floor[task]
            self._fact_floor.pop(task, None)
            self.specs.pop(task, None)
            self.spec_sigs.pop(task, None)

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
        task_index: Sequence[int],
        agents: Sequence[int],
        costs: Sequence[float],
        roles: Sequence[int] | None = None,
        holds: Sequence[bool] | None = None,
    ) -> bool:
        """Merge one node's bid message (columnar, as :class:`TaskBids` carries it); ``roles``
        and ``holds`` per bid for team tasks (0 and False when None)."""
        if bdseq > MAX_SESSION:
            self.stale_bids += len(task_index)
            return False
        key = seq_key(bdseq, bseq)
        changed = False
        usable: list[BidTable | None] = []
        for task, epoch in zip(tasks, epochs, strict=True):
            # A bid's epoch counts even when the bid does not: floors depend on every bid seen.
            ok, raised = self._accepts_epoch(task, epoch)
            changed |= raised
            usable.append(self.bids.setdefault(task, BidTable()) if ok else None)
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
        ok_task = np.array([per is not None for per in usable], dtype=bool)
        rows = np.flatnonzero(ok_task[t_of] & (role >= 0) & (role < ROLE_SPAN) & (agent >= 0))
        h = self._holders_of(node, group, agent[rows])
        fresh = h >= 0
        fresh[fresh] = key > self._holder_consumed.data[h[fresh]]
        rows, h = rows[fresh], h[fresh]
        slot = h * ROLE_SPAN + role[rows]
        cost = np.asarray(costs, dtype=np.float64)[rows]
        t_rows = t_of[rows]
        by_task = np.argsort(t_rows, kind="stable")  # each task's rows, in the message's order
        bounds = np.flatnonzero(np.diff(t_rows[by_task])) + 1
        inserted = 0
        for part in np.split(by_task, bounds) if by_task.size else ():
            per = usable[int(t_rows[part[0]])]
            if per is None:  # not reached: the rows are of usable tasks
                continue
            merged = per.merge(
                slot[part], cost[part], key, held[rows[part]], room=self.max_bids - self.n_bids
            )
            self.n_bids += merged.added
            self.overflow += merged.refused
            inserted += merged.changed
        self.stale_bids += n - inserted
        if inserted:
            self._changed()
        return changed or inserted > 0

    def _holders_of(self, node: str, group: str, agents: NDArray[np.int64]) -> NDArray[np.int64]:
        """The holder id of each of ``node/group``'s ``agents`` (-1: no room for a new one),
        looked up in one vectorised step; agents new to the board get ids first, in order."""
        n, g = self._nodes.ids[node], self._groups(group)
        known, ids = self._agent_maps.get((n, g), (_NO_INTS, _NO_INTS))
        at = np.searchsorted(known, agents)
        found = at < known.size
        found[found] = known[at[found]] == agents[found]
        if not found.all():
            new, first = np.unique(agents[~found], return_index=True)
            made = []
            for agent in new[np.argsort(first)].tolist():
                h = self._holder(node, group, agent)
                if h is not None:
                    made.append((agent, h))
            if made:
                pairs = np.array(made, dtype=np.int64)
                merged = np.concatenate([known, pairs[:, 0]])
                order = np.argsort(merged, kind="stable")
                known, ids = merged[order], np.concatenate([ids, pairs[:, 1]])[order]
                self._agent_maps[(n, g)] = (known, ids)
            at = np.searchsorted(known, agents)
            found = at < known.size
            found[found] = known[at[found]] == agents[found]
        out = np.full(agents.size, -1, dtype=np.int64)
        out[found] = ids[at[found]]
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
            for t in self.bids
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
        for bid in bids_from_columns(part.bids):
            self.add_bid(bid)
        return self.version != before, held


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
