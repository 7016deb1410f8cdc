"""The task ledger's state and what it answers: the board's facts as stored, its queries, the
award and the teams computed from it, and the digest.

:class:`BoardState` holds the replicated ledger's facts (tasks, bids, releases, dead sessions),
interns the names in them, answers queries (owner, epoch, valid bids, holds), computes the
one-agent award (:func:`award`) and the teams (:mod:`~edge_agent.coordination.team_award`) from
them, and keeps the set-hash digest of the canonical facts; dropping what no longer counts
(consumed agents, dead sessions, a round's bids) is here too, as every reader settles first.
How facts merge in, and the sync parts, are :class:`~edge_agent.coordination.ledger.TaskBoard`'s
(``docs/coordination.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

import msgspec
import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.assignment import fixed_point
from edge_agent.coordination.messages import (
    DIGEST_BYTES,
    MAX_ROLES,
    Release,
    TaskSpec,
)
from edge_agent.fleet.names import UINT32
from tests.support.main15.bid_table import BidTable, Row
from tests.support.main15.team_award import (
    SALT_BITS,
    FillRecord,
    RoleBids,
    RoleTable,
    counted_holds,
    fill_recorded,
    refill,
)

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


def holder_hashes(node: str, group: str, agents: list[int]) -> NDArray[np.uint64]:
    """``stable_hash64((node, group, agent))`` of each of ``agents``: the tuple's msgpack is
    a three-element array's header, the two names (encoded once) and the agent."""
    encode = msgspec.msgpack.encode
    base = hashlib.blake2b(b"\x93" + encode(node) + encode(group), digest_size=8)
    digests: list[bytes] = []
    copy, append = base.copy, digests.append
    for a in agents:  # the prefix's state copied: a third cheaper than hashing it again
        h = copy()
        h.update(encode(a))
        append(h.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


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


_NO_IDS: Final = np.empty(0, dtype=np.int64)


class _RoleColumns(NamedTuple):
    """The open team tasks' roles as the team award takes them, and what a bid row needs of
    its task, by the task's index in the list (:meth:`BoardState._role_columns`)."""

    position: dict[str, int]
    """Each task's index in the list."""
    role_task: NDArray[np.int64]
    """Each role's task."""
    slots: NDArray[np.int64]
    """Each role's slots."""
    none_done: NDArray[np.int64]
    """Zeros, one a role: no part done (not to be written to)."""
    first_role: NDArray[np.int64]
    """Each task's first role (an index into the roles)."""
    n_roles: NDArray[np.int64]
    """Each task's number of roles."""
    salts: NDArray[np.uint64]
    """Each task's part of its bids' tie-breaks (:meth:`BoardState._salt_of`)."""


class BoardState:
    """The ledger's facts as stored and what is computed from them (the queries, the award, the
    teams, the digest); :class:`~edge_agent.coordination.ledger.TaskBoard` merges facts into it
    and syncs it."""

    specs_version: int = 0
    """Counts the changes to ``specs`` (what is kept of them elsewhere is checked by it)."""

    _role_cols: tuple[int, list[str], _RoleColumns | None] = (-1, [], None)
    """:meth:`_role_columns` as of ``specs_version`` and its list of tasks."""
    _canon: tuple[int, NDArray[np.int64]] = (-1, _NO_IDS)
    """:meth:`_canonical` as of the number of holders."""

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
        self._n_holders = 0
        """Holder ids made (they are dense: ``0 ... _n_holders - 1``, never dropped)."""
        self._agent_maps: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        """Per ``(node id, group id)``, its agents that are holders (sorted) and their ids: every
        holder is in one (:meth:`_new_holders` keeps them)."""
        self._id_of: dict[tuple[int, int], dict[int, int]] = {}
        """Per ``(node id, group id)``, its map as a dict, made when one holder is looked up
        (:meth:`_holder_id`: a sync's relayed bids, a bid at a time) and dropped when the map
        grows."""
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
        self._fill_record: tuple[NDArray[np.int64], FillRecord] | None = None
        """The last team fill's record and the holders its columns are (team_award.refill)."""
        self.refills = 0
        """Team awards whose fill was the last one's less the slots members took since."""
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
        """The holder id of ``node/group/agent``, made when it has none (None: no room)."""
        _, ids = self._new_holders(node, group, [agent])
        return int(ids[0]) if ids.size else None

    def _holder_id(self, n: int, g: int, agent: int) -> int | None:
        """The holder id of agent ``agent`` of node id ``n``'s group id ``g`` (None: none)."""
        id_of = self._id_of.get((n, g))
        if id_of is None:
            known, ids = self._agent_maps.get((n, g), (_NO_INTS, _NO_INTS))
            id_of = self._id_of[(n, g)] = dict(zip(known.tolist(), ids.tolist(), strict=True))
        return id_of.get(agent)

    def _new_holders(
        self, node: str, group: str, agents: Sequence[int] | NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Holder ids for ``node/group``'s distinct ``agents``, made for those that have none
        in one batch (looked up in the group's sorted map, their ids, hashes and columns made
        as arrays; a full board counts the rest in ``overflow``): ``(agents, ids)`` of each
        that has one or there was room for, those that had one first, then the new ones in
        the order given (arrays: a formation's peers bring thousands). The ids are made in the
        order given, so every merge order of the same facts makes the same ids as before."""
        n = self._node(node)
        if n is None:
            return _NO_INTS, _NO_INTS
        g = self._groups(group)
        want = np.asarray(agents, dtype=np.int64).reshape(-1)
        known, ids = self._agent_maps.get((n, g), (_NO_INTS, _NO_INTS))
        at = np.searchsorted(known, want)
        have = at < known.size
        have[have] = known[at[have]] == want[have]
        old_agents, old_ids = want[have], ids[at[have]]
        new = want[~have]
        room = max(0, self.max_holders - self._n_holders)
        if new.size > room:
            self.overflow += new.size - room
            new = new[:room]
        if not new.size:
            return old_agents, old_ids
        first = self._n_holders
        end = self._n_holders = first + new.size
        made = np.arange(first, end, dtype=np.int64)
        names = new.tolist()
        consumed: list[int] | int = (
            [self.consumed.get((node, group, a), -1) for a in names] if self.consumed else -1
        )
        for arr, values in (
            (self._holder_node, n),
            (self._holder_group, g),
            (self._holder_agent, new),
            (self._holder_consumed, consumed),
            (self._holder_hash, holder_hashes(node, group, names).view(np.int64)),
        ):
            arr.ensure(end)
            arr.data[first:end] = values
        merged = np.concatenate([known, new])
        order = np.argsort(merged, kind="stable")
        self._agent_maps[(n, g)] = (merged[order], np.concatenate([ids, made])[order])
        self._id_of.pop((n, g), None)
        return np.concatenate([old_agents, new]), np.concatenate([old_ids, made])

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
        h = None if n is None or g is None else self._holder_id(n, g, bid.agent)
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
        # Every task's rows in one set of columns: a few numpy calls, not a few a task.
        named = [(task, per) for task in tasks if (per := self.bids.get(task)) is not None]
        if not named:
            return out
        parts = [per.arrays() for _, per in named]
        keys = np.concatenate([p[0] for p in parts])
        held = np.concatenate([p[3] for p in parts])
        mine = np.flatnonzero(held)
        mine = mine[self._holder_node.data[keys[mine] // ROLE_SPAN] == n]
        if not mine.size:
            return out
        where = np.repeat(np.arange(len(parts)), [p[0].size for p in parts])[mine].tolist()
        costs = np.concatenate([p[1] for p in parts])[mine].tolist()
        seqs = np.concatenate([p[2] for p in parts])[mine].tolist()
        for t, key, cost, k in zip(where, keys[mine].tolist(), costs, seqs, strict=True):
            task = named[t][0]
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
        if per.nodes is None:
            keys = per.arrays()[0]
            present = np.zeros(len(self._nodes.names), dtype=bool)
            present[self._holder_node.data[keys // ROLE_SPAN]] = True
            per.nodes = frozenset(np.flatnonzero(present).tolist())
        return per.nodes.issuperset(wanted)

    def is_team(self, task: str) -> bool:
        """Whether ``task``'s spec (as this board has it) asks for a team."""
        spec = self.specs.get(task)
        return spec is not None and spec.is_team

    def award(self) -> dict[str, Bid]:
        """The one-agent tasks' award: :func:`award` over the current facts and the agents that
        hold no team slot (the same result, vectorised; cached). It needs the team tasks'
        counted holds, not their fill, and those only when a one-agent task has bids: a node
        of one-agent tasks pays nothing for teams, and one of teams computes their rows and
        fill only when asked (:meth:`teams`)."""
        version, single = self._single
        if version == self.version:
            return single
        singles = {t: e for t, e in self.open_epochs().items() if not self.specs[t].is_team}
        if any(t in self.bids for t in singles):
            _, _, roles, rows, holders, _ = self._team_input()
            members = counted_holds(roles, rows, len(holders))
            single = self._single_award(singles, {int(h) for h in holders[rows.col[members]]})
        else:  # no one-agent task has bids: nothing to award, the teams' rows not needed
            single = {}
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
                h = self._holder_id(n, g, bid.agent)
                c = None if h is None else rank.get(h)
                if c is not None:
                    busy[c] = True
        # Members that only took slots the last fill gave them change nothing it computes
        # (team_award.refill): a formation's holds come in many messages.
        again = None
        last = self._fill_record
        if last is not None and not single and np.array_equal(last[0], holders):
            again = refill(last[1], roles, rows, members, busy)
        if again is None:
            filled, record = fill_recorded(roles, rows, members, busy, len(team_tasks))
        else:
            filled, record = again
            self.refills += 1
        self._fill_record = None if record is None or single else (holders, record)
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
        cols = self._role_columns(tasks)
        done = cols.none_done
        if self.team_done:  # parts finished: a role's done slots (at most its slots)
            finished = [(cols.position[task], rel.role_index)
                        for task, parts in self.team_done.items() if task in cols.position
                        for rel, _ in parts.values()]  # fmt: skip
            if finished:
                t_of, r_of = np.array(finished, dtype=np.int64).reshape(-1, 2).T
                ok = (r_of >= 0) & (r_of < cols.n_roles[t_of])
                done = np.bincount(cols.first_role[t_of[ok]] + r_of[ok], minlength=done.size)
                done = np.minimum(done, cols.slots)
        roles = RoleTable(cols.role_task, cols.slots, done)
        tables = self.bids
        have = [t for t, task in enumerate(tasks) if task in tables]
        parts = [tables[tasks[t]].arrays() for t in have]
        where, n_roles, salts = (cols.first_role[have], cols.n_roles[have],
                                 cols.salts[have])  # fmt: skip
        empty = np.empty(0, dtype=np.int64)
        if not parts:
            no_bids = RoleBids(empty, empty, empty, empty, np.empty(0, dtype=bool), empty)
            return roles, no_bids, empty, np.empty(0, dtype=np.float64)
        keys = np.concatenate([p[0] for p in parts])
        role = keys % ROLE_SPAN
        sizes = [p[0].size for p in parts]
        base, limit, task_salt = (np.repeat(where, sizes), np.repeat(n_roles, sizes),
                                  np.repeat(salts, sizes))  # fmt: skip
        ok = role < limit  # admission refuses a role past the spec's; a spec taken over may differ
        keys, role, base, task_salt = keys[ok], role[ok], base[ok], task_salt[ok]
        costs = np.concatenate([p[1] for p in parts])[ok]
        seqs = np.concatenate([p[2] for p in parts])[ok]
        held = np.concatenate([p[3] for p in parts])[ok]
        holder = keys // ROLE_SPAN
        # Holder ids are dense (0 ... holders made - 1): a mask finds the distinct ones, in
        # the canonical order of every holder, and an array indexed by id maps each to its
        # column.
        seen = np.zeros(self._n_holders, dtype=bool)
        seen[holder] = True
        order = self._canonical()
        canon = order[seen[order]]
        col_of = np.empty(seen.size, dtype=np.int64)
        col_of[canon] = np.arange(canon.size)
        col = col_of[holder]
        # The tie-break: a hash of (task, role, holder), the same on every node.
        mixed = _splitmix(
            self._holder_hash.data[holder].view(np.uint64)
            ^ task_salt
            ^ (role.astype(np.uint64) * _ODD[1])
        )
        salt = (mixed >> np.uint64(64 - SALT_BITS)).astype(np.int64)
        bids = RoleBids(base + role, col, fixed_point(costs), seqs, held, salt)
        return roles, bids, canon, costs

    def _canonical(self) -> NDArray[np.int64]:
        """Every holder id in canonical order (node name, group name, agent: ids are unique
        to their triple, so the order is too), kept while no holder is made (the team awards
        of a formation after every peer's bids came; a node or group named since without a
        holder changes no holder's place among the others)."""
        made, order = self._canon
        if made == self._n_holders:
            return order
        n = self._n_holders
        order = np.lexsort(
            (
                self._holder_agent.data[:n],
                self._groups.ranks()[self._holder_group.data[:n]],
                self._nodes.ranks()[self._holder_node.data[:n]],
            )
        )
        self._canon = (n, order)
        return order

    def _role_columns(self, tasks: list[str]) -> _RoleColumns:
        """The team tasks' roles as columns (:class:`_RoleColumns`), kept while the specs and
        the list of tasks are the same (a formation's every team award)."""
        version, key, cols = self._role_cols
        if version == self.specs_version and key == tasks and cols is not None:
            return cols
        role_task: list[int] = []
        slots: list[int] = []
        first_role: list[int] = []
        n_roles: list[int] = []
        for t, task in enumerate(tasks):
            first_role.append(len(slots))
            spec_slots = [role.agents for role in self.specs[task].slots()]
            n_roles.append(len(spec_slots))
            role_task += [t] * len(spec_slots)
            slots += spec_slots
        cols = _RoleColumns(
            {task: t for t, task in enumerate(tasks)},
            np.array(role_task, dtype=np.int64),
            np.array(slots, dtype=np.int64),
            np.zeros(len(slots), dtype=np.int64),
            np.array(first_role, dtype=np.int64),
            np.array(n_roles, dtype=np.int64),
            np.array([self._salt_of(task) for task in tasks], dtype=np.uint64),
        )
        self._role_cols = (self.specs_version, list(tasks), cols)
        return cols

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
        self._bids_hashes([(t, per) for t, per in self.bids.items() if per.digest is None])
        total = 0
        for per in self.bids.values():
            total = (total + (per.digest or 0)) & _MASK64
        packed = self._hash.value.to_bytes(16, "little") + total.to_bytes(8, "little")
        result = hashlib.blake2b(packed, digest_size=DIGEST_BYTES).digest()
        self._digest = (self.version, result)
        return result

    def _bids_hashes(self, tables: list[tuple[str, BidTable]]) -> None:
        """Each table's hash of its rows (``per.digest``), the tables' rows in one pass: the
        sum of a hash per row of its task, holder, cost, ``(bdseq, bseq)``, role and hold. A
        table whose hash was kept through its changes since (``per.digest_base``) hashes only
        the rows that came (added) and went (taken): a formation's peers' first bids add rows
        to every task's table, its holds replace rows one at a time, and every ``task_state``
        that came between two of them hashed every row again."""
        parts = []  # (table's index, its rows or new slots, task salt)
        bases: list[tuple[BidTable, int]] = []
        changed: list[Row] = []  # the kept tables' rows that came and went, a table's together
        changed_of: list[tuple[int, int, int]] = []  # (table's index, its rows, task salt)
        for task, per in tables:
            if not len(per):
                per.digest, per.digest_base, per.unhashed, per.changed = 0, None, [], []
                continue
            salt = self._task_salt(task)
            if per.digest_base is None:
                parts.append((len(bases), per.arrays(), salt))
                bases.append((per, 0))
                continue
            if per.unhashed:  # new slots since (BidTable.add_new)
                new = per.unhashed
                rows = (
                    np.concatenate([c[0] for c in new]),
                    np.concatenate([c[1] for c in new]),
                    np.concatenate([np.full(c[0].size, c[2], dtype=np.int64) for c in new]),
                    np.concatenate([c[3] for c in new]),
                )
                parts.append((len(bases), rows, salt))
            if per.changed:
                changed_of.append((len(bases), len(per.changed), salt))
                changed += per.changed
            bases.append((per, per.digest_base))
        totals = [base for _, base in bases]
        if changed:
            keys, costs, seqs, held, sign = zip(*changed, strict=True)
            cols = (
                np.array(keys, dtype=np.int64),
                np.array(costs, dtype=np.float64),
                np.array(seqs, dtype=np.int64),
                np.array(held, dtype=bool),
            )
            parts.append((-1, cols, 0))
        if parts:
            sizes = [a[0].size for _, a, _ in parts]
            salts = [t for _, _, t in parts]
            if changed:  # the last part: its rows' salts and signs, and a sum a table
                sizes[-1:] = [n for _, n, _ in changed_of]
                salts[-1:] = [t for _, _, t in changed_of]
            x = self._row_hashes(
                np.concatenate([a[0] for _, a, _ in parts]),
                np.concatenate([a[1] for _, a, _ in parts]),
                np.concatenate([a[2] for _, a, _ in parts]).view(np.uint64) * _ODD[1],
                np.concatenate([a[3] for _, a, _ in parts]),
                np.repeat(np.array(salts, dtype=np.uint64), sizes),
            )
            if changed:
                gone = np.flatnonzero(np.array(sign, dtype=np.int64) < 0) + (x.size - len(sign))
                x[gone] = np.negative(x[gone])  # uint64: a row gone takes its hash away
            starts = np.cumsum([0, *sizes[:-1]])  # every part has rows: no empty segment
            sums = np.add.reduceat(x, starts).tolist()  # uint64: wraps modulo 2**64
            owners = [j for j, _, _ in parts[:-1]] if changed else [j for j, _, _ in parts]
            owners += [j for j, _, _ in changed_of]
            for j, total in zip(owners, sums, strict=True):
                totals[j] += int(total)
        for (per, _), total in zip(bases, totals, strict=True):
            per.digest, per.digest_base = total & _MASK64, None
            per.unhashed, per.changed = [], []

    def _row_hashes(
        self,
        keys: NDArray[np.int64],
        costs: NDArray[np.float64],
        seq_term: NDArray[np.uint64] | np.uint64,
        held: NDArray[np.bool_],
        salt: NDArray[np.uint64],
    ) -> NDArray[np.uint64]:
        """The digest's hash of each bid row (:meth:`_bids_hashes`): ``seq_term`` is its seq's
        (as uint64) times ``_ODD[1]``, ``salt`` its task's hash times ``_ODD[2]``."""
        x = self._holder_hash.data[keys // ROLE_SPAN].view(np.uint64)
        x = x ^ (costs.view(np.uint64) * _ODD[0]) ^ seq_term
        # A team task's role and hold flag (0 for a one-agent task's bids: their hash is as it
        # was before teams, so that nodes of both versions agree on one-agent ledgers).
        slot = (keys % ROLE_SPAN + ROLE_SPAN * held).astype(np.uint64)
        return _splitmix(x ^ (slot * _ODD[3]) ^ salt)

    def _task_salt(self, task: str) -> int:
        """``task``'s hash in the digest's bid rows, times ``_ODD[2]`` (modulo 2**64)."""
        th = self._task_hash.get(task)
        if th is None:
            th = self._task_hash[task] = stable_hash64(("task", task))
        return (th * int(_ODD[2])) & _MASK64

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

    # -- settling: dropping what no longer counts ---------------------------------------------
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
            self.specs_version += 1
            self.spec_sigs.pop(task, None)
