"""What a node takes of what its peers say about others (``docs/coordination.md``, "What a sync
may say").

A ``task_sync`` relays facts about other nodes, so that a node that was cut off catches up; a
node with a valid identity could use it to speak for the others (issue 29). :class:`RelayAdmission`
keeps what this node has seen each peer say *itself* -- on the peer's own topics, which a broker
ACL lets only the peer write -- and lets a relayed fact through only as far as its subject said
it. It owns two bounded tables (the oldest node is forgotten first):

* ``born``: per node, the newest session (``bdseq``) this node saw it announce online (a birth
  or an ``online`` state): bids of a later session are lies that would outlive its will;
* ``newest``: per node, the largest ``bdseq`` of any message of its own: a session below it is
  over, whatever a relay says.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from edge_agent.coordination.ledger import TaskBoard, bid_rows, bids_from_columns, seq_key
from edge_agent.coordination.messages import Release, ReleaseStatus, TaskSpec, TaskSync
from edge_agent.coordination.signing import PeerKeys, release_bytes, spec_bytes

__all__ = ["RelayAdmission"]


class RelayAdmission:
    """The relay limits of one node's ledger ``board`` (module docstring)."""

    def __init__(self, board: TaskBoard, peer_keys: PeerKeys, fleet: str, max_nodes: int) -> None:
        self.board = board
        self.peer_keys = peer_keys
        self.fleet = fleet
        self.max_nodes = max_nodes
        self._born: OrderedDict[str, int] = OrderedDict()
        self._newest: OrderedDict[str, int] = OrderedDict()

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

    def session_over(self, node: str, bdseq: int) -> bool:
        """Whether this node knows, from ``node`` itself, that session ``bdseq`` of it ended: it
        saw that session's will or death, or a message of a later session."""
        return self.board.is_dead(node, bdseq) or bdseq < self._newest.get(node, -1)

    # what a peer says --------------------------------------------------------------------------
    def bids_allowed(self, node: str, bdseq: int) -> bool:
        """Whether ``node``'s bids of session ``bdseq`` count: only of a session seen born (a
        larger number would outlive the sender's death: its will ends the session it
        registered)."""
        return bdseq <= self._born.get(node, -1)

    def closes_unknown_epoch(self, rel: Release) -> bool:
        """Whether a done/expired release says more than its sender can know: it may close a
        task only up to the largest epoch this node knows for it (a tombstone from the future
        would close rounds not yet announced), and an open round only when this node's award
        gives it to the releasing agent (or to no one)."""
        if rel.status is ReleaseStatus.ABANDONED:
            return False
        board = self.board
        floor = board.epoch(rel.task)
        if floor is None:
            return False
        if rel.epoch > floor:
            return True
        if rel.epoch < floor or not board.is_open(rel.task):
            return False
        winner = board.award().get(rel.task)
        return winner is not None and winner.holder != (rel.node, rel.group, rel.agent)

    def spec_signed(self, spec: TaskSpec, signature: bytes) -> bool:
        """Whether ``signature`` is the spec's announcer's (checked against the task key the
        announcer published on its own ``tasks`` topic; False while that key is unknown)."""
        return self.peer_keys.verify(spec.announced_by, spec_bytes(self.fleet, spec), signature)

    def admit_sync(self, sender: str, part: TaskSync) -> tuple[TaskSync, int]:
        """What of a peer's sync part this node takes, and how many facts it left out that would
        have changed the ledger (an honest sync has some too: facts about a live third node,
        which that node sends itself).

        * bids: only the sender's own (a node's bids reach every peer from the node itself,
          directly or in its own syncs), of a session this node has seen born; a bid of any
          other node is dropped;
        * dead sessions: only sessions that ``node`` itself has since replaced (this node saw a
          message of a later session of it); the end of a node's current session comes from
          its own retained will or death;
        * consumed agents: the sender's own, or of sessions that are over (as above);
        * tombstones: only as the holder's signed release (``closers``), checked against the
          key the holder published, and not beyond the epoch this node knows for the task;
          bare tombstones (``closed``) are ignored;
        * specs: only with their announcer's signature, checked against the key the announcer
          published (a spec of a larger epoch or another goal than its announcer signed is a
          forgery).
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
            if c.node == sender or self.session_over(c.node, c.bdseq):
                consumed.append(c)
            elif board.consumed.get((c.node, c.group, c.agent), -1) < seq_key(c.bdseq, c.bseq):
                refused += 1
        refused += sum(1 for tomb in part.closed if board.closed.get(tomb.task, -1) < tomb.epoch)
        closers: list[Release] = []
        sigs: list[bytes] = []
        for i, rel in enumerate(part.closers):
            if board.closed.get(rel.task, -1) >= rel.epoch:
                continue  # nothing new (not worth checking its signature)
            sig = part.closer_signature(i)
            if self.closes_unknown_epoch(rel) or not self.peer_keys.verify(
                rel.node, release_bytes(self.fleet, rel), sig
            ):
                refused += 1
                continue
            closers.append(rel)
            sigs.append(sig)
        specs: list[TaskSpec] = []
        spec_sigs: list[bytes] = []
        for i, spec in enumerate(part.tasks):
            cur = board.specs.get(spec.task)
            if cur is not None and cur.order_key() >= spec.order_key():
                continue  # nothing new (not worth checking its signature)
            sig = part.task_signature(i)
            if not self.spec_signed(spec, sig):
                refused += 1
                continue
            specs.append(spec)
            spec_sigs.append(sig)
        cols = part.bids
        if cols.n_bids:
            own = cols.nodes.index(sender) if sender in cols.nodes else -1
            born = np.int64(self._born.get(sender, -1))
            keep = (cols.column("node_index") == own) & (cols.column("bdseq") <= born)
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
