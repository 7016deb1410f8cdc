"""What a node takes of what its peers say, about other nodes and about tasks
(``docs/coordination.md``, "What a sync may say").

A ``task_sync`` relays facts about other nodes, so that a node that was cut off catches up; a
node with a valid identity could use it to speak for the others. :class:`RelayAdmission`
keeps what this node has seen each peer say *itself* -- on the peer's own topics, which a broker
ACL lets only the peer write -- and lets a relayed fact through only as far as its subject said
it. It owns two bounded tables (the oldest node is forgotten first):

* ``born``: per node, the newest session (``bdseq``) this node saw it announce online (a birth
  or an ``online`` state): bids of a later session are lies that would outlive its will;
* ``newest``: per node, the largest ``bdseq`` of any message of its own: a session below it is
  over, whatever a relay says.

What a node says about a *task* is bounded by what the task's announcer signed: a bid or an
``abandoned`` release may name an epoch up to :data:`MAX_ROUNDS` past the task's newest signed
spec this node holds, and none for a task without one; a ``done`` or ``expired`` release closes
only a task whose signed spec this node holds (or that comes with it, in a sync), up to the same
limit. Otherwise a node could raise a task's epoch to the end of
the uint32 range with one bid of its own, win that round and close it there for good (no
announcement could go higher). A bid's cost must be at least
:data:`~edge_agent.coordination.utility.MIN_BID_COST`, the lowest any model can compute.

A task id is one announcer's (:meth:`~edge_agent.coordination.ledger.TaskBoard.owner_key`): a
spec, announced or relayed, of an announcer that the task's owner ranks before is refused, so
a node cannot re-announce the hub's task in its own name (at a higher epoch, to push it to the
end of the range and close it there).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum
from typing import NamedTuple

import msgspec
import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.ledger import (
    MAX_ROUNDS,
    MAX_SESSION,
    TaskBoard,
    bid_rows,
    bids_from_columns,
    round_limit,
    seq_key,
)
from edge_agent.coordination.messages import (
    BidColumns,
    Release,
    ReleaseStatus,
    TaskBids,
    TaskSpec,
    TaskSync,
)
from edge_agent.coordination.signing import PeerKeys, release_bytes, spec_bytes
from edge_agent.coordination.utility import MIN_BID_COST

__all__ = ["MAX_ROUNDS", "AdmittedBids", "RelayAdmission", "Verdict"]

_NO_ROWS: NDArray[np.int64] = np.empty(0, dtype=np.int64)
_NO_COSTS: NDArray[np.float64] = np.empty(0, dtype=np.float64)

TASK_LISTS_KEPT = 64
"""The lists of tasks :meth:`RelayAdmission._task_columns` keeps (all dropped when full)."""


class Verdict(Enum):
    """What a node takes of a release its sender sent directly."""

    TAKE = "take"
    """All of it."""
    CONSUME = "consume"
    """Only that the sender's agent's bids are used up: an ``abandoned`` release of a task's last
    round (:data:`MAX_ROUNDS`) has no next round to open."""
    REFUSE = "refuse"
    """Only that the sender's agent's bids are used up; the rest says more than the sender can
    know (counted ``relays_refused``)."""


class AdmittedBids(NamedTuple):
    """The part of a ``task_bids`` message a node takes, as :meth:`TaskBoard.add_bids` wants it:
    the bids as arrays, one entry per bid (no Python object per bid: a formation's message
    brings about a thousand)."""

    tasks: list[str]
    epochs: list[int]
    task_index: NDArray[np.int64]
    agents: NDArray[np.int64]
    costs: NDArray[np.float64]
    """As the wire's float32, exactly."""
    roles: NDArray[np.int64] | None = None
    holds: NDArray[np.bool_] | None = None


class RelayAdmission:
    """The relay limits of one node's ledger ``board`` (module docstring)."""

    def __init__(self, board: TaskBoard, peer_keys: PeerKeys, fleet: str, max_nodes: int) -> None:
        self.board = board
        self.peer_keys = peer_keys
        self.fleet = fleet
        self.max_nodes = max_nodes
        self._born: OrderedDict[str, int] = OrderedDict()
        self._newest: OrderedDict[str, int] = OrderedDict()
        self._columns: dict[
            tuple[str, ...], tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]
        ] = {}
        """:meth:`_task_columns` per list of tasks, as of ``board.specs_version``."""
        self._columns_version = -1

    # what a node says itself ---------------------------------------------------------------------
    def heard_from(self, node: str, bdseq: int) -> None:
        """A message of ``node``'s own, of its session ``bdseq``."""
        self._raise(self._newest, node, bdseq)

    def born_in(self, node: str, bdseq: int) -> None:
        """``node`` announced session ``bdseq`` online (a birth, or an ``online`` state)."""
        self._raise(self._born, node, bdseq)

    def _raise(self, table: OrderedDict[str, int], node: str, bdseq: int) -> None:
        if table.get(node, -1) < bdseq:
            table[node] = bdseq
        table.move_to_end(node)
        while len(table) > self.max_nodes:
            table.popitem(last=False)

    def born_session(self, node: str) -> int:
        """The newest session ``node`` was seen born in; -1 when none was."""
        return self._born.get(node, -1)

    def live_peers(self, me: str) -> int:
        """Peers (not ``me``) whose newest session seen born is not dead."""
        dead = self.board.dead
        return sum(1 for n, b in self._born.items() if n != me and b > dead.get(n, -1))

    def live_peer_names(self, me: str) -> list[str]:
        """The peers :meth:`live_peers` counts."""
        dead = self.board.dead
        return [n for n, b in self._born.items() if n != me and b > dead.get(n, -1)]

    def session_over(self, node: str, bdseq: int) -> bool:
        """Whether this node knows, from ``node`` itself, that session ``bdseq`` of it ended: it
        saw that session's will or death, or a message of a later session."""
        return self.board.is_dead(node, bdseq) or bdseq < self._newest.get(node, -1)

    # what a peer says --------------------------------------------------------------------------
    def bids_allowed(self, node: str, bdseq: int) -> bool:
        """Whether ``node``'s bids of session ``bdseq`` count: only of a session seen born (a
        larger number would outlive the sender's death: its will ends the session it
        registered)."""
        return bdseq <= min(self._born.get(node, -1), MAX_SESSION)

    def epoch_limit(self, task: str, spec: TaskSpec | None = None) -> int:
        """The largest epoch a peer may name for ``task``: :data:`MAX_ROUNDS` past the newest
        signed spec this node holds for it (or ``spec``, relayed with the fact and checked: it
        alone when its announcer ranks before the held spec's, which it then replaces, and not
        at all when it ranks after); -1 when it has none."""
        held = self.board.specs.get(task)
        if held is not None and spec is not None and spec.announced_by != held.announced_by:
            owner_key = self.board.owner_key
            if owner_key(spec.announced_by) < owner_key(held.announced_by):
                held = None
            else:
                spec = None
        epochs = [s.epoch for s in (held, spec) if s is not None]
        if not epochs:
            return -1
        return round_limit(max(epochs))

    def admit_bids(self, node: str, bdseq: int, body: TaskBids) -> tuple[AdmittedBids, int]:
        """What this node takes of ``node``'s ``task_bids`` of session ``bdseq``, and how many
        bids it refused: all of them for a session not seen born; a task's bids (and its
        epoch, which would raise the task's floor) when the epoch is beyond
        :meth:`epoch_limit`; a bid whose cost is below ``MIN_BID_COST``."""
        epochs, task_index, agents, costs = body.arrays()
        if not self.bids_allowed(node, bdseq):
            return AdmittedBids([], [], _NO_ROWS, _NO_ROWS, _NO_COSTS), body.n_bids
        limits, n_roles, is_team = self._task_columns(body.tasks)
        task_ok = epochs.astype(np.int64) <= limits
        roles, holds = body.team_columns()
        ti = task_index.astype(np.int64)
        # Rows whose role is one of their task's (as its signed spec here says) and that hold
        # only a team task's slot: a one-agent task has role 0 and no holds.
        slot_ok = (roles.astype(np.int64) < n_roles[ti]) & (is_team[ti] | (holds == 0))
        row_ok = task_ok[task_index] & (costs >= MIN_BID_COST) & slot_ok
        renumber = np.cumsum(task_ok) - 1
        team = body.roles is not msgspec.UNSET or body.holds is not msgspec.UNSET
        every = bool(task_ok.all())
        admitted = AdmittedBids(
            tasks=list(body.tasks)
            if every
            else [t for t, ok in zip(body.tasks, task_ok.tolist(), strict=True) if ok],
            epochs=epochs[task_ok].tolist(),
            task_index=renumber[task_index[row_ok]],
            agents=agents[row_ok].astype(np.int64),
            costs=costs[row_ok].astype(np.float64),
            roles=roles[row_ok].astype(np.int64) if team else None,
            holds=holds[row_ok].astype(bool) if team else None,
        )
        return admitted, int(row_ok.size - row_ok.sum())

    def _task_columns(
        self, tasks: list[str]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """Per task of a bid message, from the signed specs this node holds: its
        :meth:`epoch_limit`, its number of roles (1 without a spec) and whether it is a team
        task. Kept per list of tasks until a spec changes (a formation's peers bid on the same
        tasks in the same messages: one look-up of the list instead of three calls a task);
        at most :data:`TASK_LISTS_KEPT` lists."""
        board = self.board
        if self._columns_version != board.specs_version:
            self._columns.clear()
            self._columns_version = board.specs_version
        key = tuple(tasks)
        cols = self._columns.get(key)
        if cols is None:
            specs = [board.specs.get(t) for t in tasks]
            cols = (
                np.array(
                    [-1 if s is None else round_limit(s.epoch) for s in specs], dtype=np.int64
                ),
                np.array([1 if s is None else s.n_roles for s in specs], dtype=np.int64),
                np.array([s is not None and s.is_team for s in specs], dtype=bool),
            )
            if len(self._columns) >= TASK_LISTS_KEPT:
                self._columns.clear()
            self._columns[key] = cols
        return cols

    def _slot_ok(
        self,
        tasks: list[str],
        task_index: NDArray[np.integer],
        roles: NDArray[np.uint8],
        holds: NDArray[np.uint8],
    ) -> NDArray[np.bool_]:
        """Rows whose role is one of their task's (as its signed spec here says) and that hold
        only a team task's slot: a one-agent task has role 0 and no holds."""
        n_roles = np.array(
            [spec.n_roles if (spec := self.board.specs.get(t)) else 1 for t in tasks],
            dtype=np.int64,
        )
        team = np.array([self.board.is_team(t) for t in tasks], dtype=bool)
        ti = task_index.astype(np.int64)
        ok: NDArray[np.bool_] = (roles.astype(np.int64) < n_roles[ti]) & (team[ti] | (holds == 0))
        return ok

    def release_verdict(self, rel: Release) -> Verdict:
        """What this node takes of a release its holder sent directly (:class:`Verdict`)."""
        if rel.bdseq > MAX_SESSION:
            return Verdict.REFUSE
        if rel.status is ReleaseStatus.ABANDONED:
            limit = self.epoch_limit(rel.task)
            if rel.epoch > limit:
                return Verdict.REFUSE
            return Verdict.CONSUME if rel.epoch == limit else Verdict.TAKE
        return Verdict.REFUSE if self.closes_unknown_epoch(rel) else Verdict.TAKE

    def merge_release(self, rel: Release, verdict: Verdict, signature: bytes = b"") -> bool:
        """Merge a release into the ledger as far as ``verdict`` says: all of it, or only that
        its agent's bids are used up. True when it was refused (the caller counts it)."""
        if verdict is Verdict.TAKE:
            self.board.add_release(rel, signature)
            return False
        self.board.add_consumed(rel.node, rel.group, rel.agent, rel.bdseq, rel.bseq)
        return verdict is Verdict.REFUSE

    def closes_unknown_epoch(self, rel: Release, spec: TaskSpec | None = None) -> bool:
        """Whether a done/expired release says more than its sender can know: it may close
        only a task whose signed spec this node holds (or ``spec``, relayed with it), not
        beyond :meth:`epoch_limit`, only up to the largest epoch this node knows for it (a
        tombstone from the future would close rounds not yet announced), and an open round only
        when this node's award gives it to the releasing agent (or to no one). A task this node
        knows only from ``spec`` (a peer that joined after it closed) may be closed at any
        epoch up to the limit."""
        if rel.status is ReleaseStatus.ABANDONED or rel.epoch > self.epoch_limit(rel.task, spec):
            return True
        board = self.board
        floor = board.epoch(rel.task)
        if floor is None:
            return False
        if rel.epoch > floor:
            return True
        if rel.epoch < floor or not board.is_open(rel.task):
            return False
        holder = (rel.node, rel.group, rel.agent)
        team = board.teams().get(rel.task)
        if team is not None:
            # A member's part, or a slot of its role that nobody fills.
            member = team.member(holder)
            if member is not None:
                return member.role != rel.role_index
            role = rel.role_index
            if role >= len(team.slots):
                return True
            filled = sum(m.role == role for m in team.members)
            filled += sum(d.role_index == role for d in team.done)
            return filled >= team.slots[role]
        winner = board.award().get(rel.task)
        return winner is not None and winner.holder != holder

    def spec_signed(self, spec: TaskSpec, signature: bytes) -> bool:
        """Whether ``signature`` is the spec's announcer's (checked against the task key the
        announcer published on its own ``tasks`` topic; False while that key is unknown)."""
        return self.peer_keys.verify(spec.announced_by, spec_bytes(self.fleet, spec), signature)

    def admit_sync(self, sender: str, part: TaskSync) -> tuple[TaskSync, int]:
        """What of a peer's sync part this node takes, and how many facts it left out that would
        have changed the ledger (an honest sync has some too: facts about a live third node,
        which that node sends itself).

        * bids: only the sender's own (a node's bids reach every peer from the node itself,
          directly or in its own syncs), of a session this node has seen born, at an epoch up
          to :meth:`epoch_limit`, at a cost of at least ``MIN_BID_COST``; a bid of any other
          node is dropped;
        * dead sessions: only sessions that ``node`` itself has since replaced (this node saw a
          message of a later session of it); the end of a node's current session comes from
          its own retained will or death;
        * consumed agents: the sender's own, or of sessions that are over (as above);
        * specs: only with their announcer's signature, checked against the key the announcer
          published (a spec of a larger epoch or another goal than its announcer signed is a
          forgery), and only of an announcer the task's owner does not rank before
          (:meth:`~edge_agent.coordination.ledger.TaskBoard.owner_key`: a task id is one
          announcer's);
        * tombstones: only as the holder's signed ``done``/``expired`` release (``closers``),
          checked against the key the holder published, for a task whose signed spec this node
          holds or takes from this part, and not beyond the epoch this node knows for the task
          (:meth:`closes_unknown_epoch`); bare tombstones (``closed``) and ``abandoned``
          releases among the closers are ignored.
        """
        board = self.board
        refused = 0
        dead = []
        for d in part.dead:
            if d.bdseq < self._newest.get(d.node, -1):
                dead.append(d)
            elif not board.is_dead(d.node, d.bdseq):
                refused += 1
        consumed = []
        for c in part.consumed:
            if c.bdseq <= MAX_SESSION and (c.node == sender or self.session_over(c.node, c.bdseq)):
                consumed.append(c)
            elif board.consumed.get((c.node, c.group, c.agent), -1) < seq_key(c.bdseq, c.bseq):
                refused += 1
        refused += sum(1 for tomb in part.closed if board.closed.get(tomb.task, -1) < tomb.epoch)
        specs: list[TaskSpec] = []
        spec_sigs: list[bytes] = []
        relayed: dict[str, TaskSpec] = {}
        for i, spec in enumerate(part.tasks):
            if board.outranked(spec):
                refused += 1  # the task id is another announcer's
                continue
            cur = board.specs.get(spec.task)
            if (
                cur is not None
                and cur.announced_by == spec.announced_by
                and cur.order_key() >= spec.order_key()
            ):
                continue  # nothing new (not worth checking its signature)
            sig = part.task_signature(i)
            if not self.spec_signed(spec, sig):
                refused += 1
                continue
            specs.append(spec)
            spec_sigs.append(sig)
            if self._supersedes(spec, relayed.get(spec.task)):
                relayed[spec.task] = spec
        closers: list[Release] = []
        sigs: list[bytes] = []
        for i, rel in enumerate(part.closers):
            if board.closed.get(rel.task, -1) >= rel.epoch:
                continue  # nothing new (not worth checking its signature)
            sig = part.closer_signature(i)
            if self.closes_unknown_epoch(rel, relayed.get(rel.task)) or not self.peer_keys.verify(
                rel.node, release_bytes(self.fleet, rel), sig
            ):
                refused += 1
                continue
            closers.append(rel)
            sigs.append(sig)
        cols = part.bids
        if cols.n_bids:
            keep = self._own_valid_rows(sender, cols)
            if not keep.all():
                others = bid_rows(cols, ~keep)
                refused += sum(1 for bid in bids_from_columns(others) if not board.knows(bid))
                cols = bid_rows(cols, keep)
        admitted = TaskSync(
            tasks=specs,
            task_sigs=b"".join(spec_sigs),
            consumed=consumed,
            dead=dead,
            bids=cols,
            closers=closers,
            closer_sigs=b"".join(sigs),
        )
        return admitted, refused

    def _supersedes(self, spec: TaskSpec, other: TaskSpec | None) -> bool:
        """Whether ``spec`` is the one a board keeps of the two: the spec of the announcer that
        ranks first, and of one announcer's, the larger."""
        if other is None:
            return True
        if spec.announced_by != other.announced_by:
            owner_key = self.board.owner_key
            return owner_key(spec.announced_by) < owner_key(other.announced_by)
        return spec.order_key() > other.order_key()

    def _own_valid_rows(self, sender: str, cols: BidColumns) -> NDArray[np.bool_]:
        """Rows of relayed bid columns that are ``sender``'s own, of a session seen born, at an
        epoch within :meth:`epoch_limit` and a cost of at least ``MIN_BID_COST``."""
        own = cols.nodes.index(sender) if sender in cols.nodes else -1
        born = np.int64(min(self._born.get(sender, -1), MAX_SESSION))
        limits = np.array([self.epoch_limit(t) for t in cols.tasks], dtype=np.int64)
        task_index = cols.column("task_index").astype(np.int64)
        roles, holds = cols.team_columns()
        keep: NDArray[np.bool_] = (
            (cols.column("node_index") == own)
            & (cols.column("bdseq").astype(np.int64) <= born)
            & (cols.column("epoch").astype(np.int64) <= limits[task_index])
            & (cols.column("cost").astype(np.float64) >= MIN_BID_COST)
            & self._slot_ok(cols.tasks, task_index, roles, holds)
        )
        return keep
