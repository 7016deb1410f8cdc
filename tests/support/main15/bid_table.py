"""One task's bids at its current round, in columns sorted by slot, merged a message at a time.

A *slot key* is ``holder * ROLE_SPAN + role`` (the ledger's holder ids,
:data:`~edge_agent.coordination.ledger.ROLE_SPAN`). Per slot key the table keeps one row: the
bid with the largest ``seq`` (``(bdseq, bseq)`` as one int64), then the lowest cost, then a hold
over a plain bid -- a maximum, so the table holds the same rows whatever order the bids came in.
Every operation is a few numpy calls over the rows it touches: no Python loop per bid, so a
message of thousands of bids merges in the time of a few dozen array operations. Pure: no
clock, no I/O; the ledger (:class:`~edge_agent.coordination.ledger.TaskBoard`) decides what may
be merged (valid sessions, agents not consumed, the bound on bids).
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class Merged(NamedTuple):
    """What :meth:`BidTable.merge` did."""

    changed: int
    """Rows of the input that changed the table (new slots and slots replaced)."""
    added: int
    """Of them, new slots."""
    refused: int
    """New slots left out for want of ``room``."""


_EMPTY_I = np.empty(0, dtype=np.int64)
_MASK64: Final = (1 << 64) - 1

Row: TypeAlias = tuple[int, float, int, bool, int]
"""A row as the digest hashes it, and its sign: key, cost, seq, held; 1 came, -1 gone."""

MAX_DELTA: Final = 64
"""The changes a table's hash is kept through (:attr:`BidTable.digest_base`) before the next
digest hashes all of its rows again: the bound on ``unhashed`` (chunks) and ``changed`` (rows)."""

SMALL: Final = 64
"""Up to this many rows a merge compares them in Python (:meth:`BidTable._merge_small`): a
node bids a task's ``k`` cheapest agents per role, a handful to a few dozen rows per task per
message (64 measured a little faster than 16 or 32 on a 20-node team formation)."""


def _merged(old: np.ndarray, new: np.ndarray, put: IntArray, old_rows: BoolArray) -> np.ndarray:
    out = np.empty(old_rows.size, dtype=old.dtype)
    out[old_rows] = old
    out[put] = new
    return out


def _rows(
    keys: IntArray, costs: FloatArray, seqs: IntArray, held: BoolArray, sign: int
) -> list[Row]:
    """Rows as :attr:`BidTable.changed` keeps them."""
    return list(
        zip(
            keys.tolist(),
            costs.tolist(),
            seqs.tolist(),
            held.tolist(),
            [sign] * int(keys.size),
            strict=True,
        )
    )


class BidTable:
    """The rows, sorted by slot key (module docstring). New slots a few-row merge brings are
    kept aside (``_pending``) and inserted together when the rows are next read: a formation
    brings a task a few new slots per message from every peer, and inserting each message's
    into the columns copied them all each time. Rows the caller knows to be new slots
    (:meth:`add_new`) wait aside as the message's arrays (``_chunks``), with no look-up."""

    __slots__ = (
        "_chunks",
        "_costs",
        "_held",
        "_keys",
        "_pending",
        "_seqs",
        "changed",
        "digest",
        "digest_base",
        "nodes",
        "unhashed",
    )

    def __init__(self) -> None:
        self._keys: IntArray = _EMPTY_I
        self._costs: FloatArray = np.empty(0, dtype=np.float64)
        self._seqs: IntArray = _EMPTY_I
        self._held: BoolArray = np.empty(0, dtype=bool)
        self._pending: dict[int, tuple[float, int, bool]] = {}
        """New slots not yet in the columns: key -> (cost, seq, held)."""
        self._chunks: list[tuple[IntArray, FloatArray, int, BoolArray]] = []
        """New slots not yet in the columns (:meth:`add_new`), none in ``_pending``."""
        self.digest: int | None = 0
        """The ledger's hash of these rows (None: not computed since they changed): a sum of a
        hash a row, 0 for none, so that a new table's first rows are hashed alone."""
        self.digest_base: int | None = None
        """When ``digest`` is None only because rows were added, replaced or dropped since it
        was made (up to :data:`MAX_DELTA`): the digest of the rows then, to which the ledger
        adds the hashes of the rows that came since (``unhashed``, ``changed``) and from which
        it takes those of the rows gone (``changed``); else None (every row hashed again)."""
        self.unhashed: list[tuple[IntArray, FloatArray, int, BoolArray]] = []
        """The new slots added since ``digest_base`` (as :meth:`add_new` took them)."""
        self.changed: list[Row] = []
        """The rows replaced, replacing, added and dropped since ``digest_base`` otherwise, one
        at a time: a formation's holds replace a row a message."""
        self.nodes: frozenset[int] | None = frozenset()
        """The ledger's ids of the nodes these rows' holders are of (None: not computed since
        the rows changed; :meth:`~edge_agent.coordination.board_state.BoardState.bid_by_all`
        asks it of every team round every tick while a formation's bids come in). A new
        table has none, and the ledger's merge keeps the set (the nodes of a message's rows
        added to it), so a formation's tables need not be flushed to answer."""

    def __len__(self) -> int:
        return int(self._keys.size) + len(self._pending) + sum(c[0].size for c in self._chunks)

    @property
    def keys(self) -> IntArray:
        self._flush()
        return self._keys

    @property
    def costs(self) -> FloatArray:
        self._flush()
        return self._costs

    @property
    def seqs(self) -> IntArray:
        self._flush()
        return self._seqs

    @property
    def held(self) -> BoolArray:
        self._flush()
        return self._held

    def arrays(self) -> tuple[IntArray, FloatArray, IntArray, BoolArray]:
        """``(keys, costs, seqs, held)``; not to be written to."""
        self._flush()
        return self._keys, self._costs, self._seqs, self._held

    def find(self, key: int) -> int:
        """The row of slot ``key``, or -1."""
        self._flush()
        i = int(np.searchsorted(self._keys, key))
        return i if i < self._keys.size and int(self._keys[i]) == key else -1

    def merge(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, *, room: int
    ) -> Merged:
        """Merge one message's rows of this task, all of sequence ``seq``: per slot key the
        input's best row (lowest cost, then a hold), which replaces the table's row when it
        is larger (module docstring); at most ``room`` new slots are added, the first in the
        input's order."""
        if keys.size == 0:
            return Merged(0, 0, 0)
        if self._chunks:  # their keys are looked up in the columns only
            self._flush()
        if keys.size <= SMALL:
            return self._merge_small(keys, costs, seq, held, room)
        self._flush()
        return self._merge_rows(keys, costs, seq, held, room)

    def add_new(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, *, room: int
    ) -> Merged:
        """:meth:`merge` of rows the caller knows to be new slots: distinct keys, none in the
        table (of agents the ledger saw first in this message), finite costs. The first
        ``room`` are kept as they are, put in the columns with the rest at the next read: no
        look-up, no copy of the columns."""
        take = min(int(keys.size), max(room, 0))
        if take:
            chunk = (keys[:take], costs[:take], seq, held[:take])
            self._chunks.append(chunk)
            if self._keep_hash(1):  # a row hash sums: the new rows' is added to it
                self.unhashed.append(chunk)
        return Merged(take, take, int(keys.size) - take)

    def add_hashed(  # noqa: PLR0917 (add_new's and the two the ledger knows)
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, hashed: int, node: int
    ) -> None:
        """:meth:`add_new` of all the rows (the caller checked the room), whose row hashes
        the ledger made with the message's (``hashed``, their sum modulo 2**64): added to
        the table's hash, which stays valid when it was; the holders are of node ``node``,
        added to ``nodes`` when known."""
        self._chunks.append((keys, costs, seq, held))
        if self.digest is not None:
            self.digest = (self.digest + hashed) & _MASK64
        elif self.digest_base is not None:
            self.digest_base = (self.digest_base + hashed) & _MASK64
        if self.nodes is not None and node not in self.nodes:
            self.nodes = self.nodes | {node}

    def _insert(self, keys: IntArray, costs: FloatArray, seq: IntArray, held: BoolArray) -> None:
        """Put new slots (sorted, none in the columns) among the rows."""
        if self._keys.size == 0:
            self._keys, self._costs, self._seqs, self._held = keys, costs, seq, held
            return
        put = np.searchsorted(self._keys, keys) + np.arange(keys.size)
        old_rows = np.ones(self._keys.size + keys.size, dtype=bool)
        old_rows[put] = False
        self._keys = _merged(self._keys, keys, put, old_rows)
        self._costs = _merged(self._costs, costs, put, old_rows)
        self._seqs = _merged(self._seqs, seq, put, old_rows)
        self._held = _merged(self._held, held, put, old_rows)

    def _flush(self) -> None:
        if not self._pending and not self._chunks:
            return
        pending, chunks = self._pending, self._chunks
        self._pending, self._chunks = {}, []
        if not pending:  # a formation's usual: the peers' new slots only (add_hashed)
            self._flush_chunks(chunks)
            return
        keys = [np.fromiter(pending, dtype=np.int64, count=len(pending))]
        costs = [np.fromiter((r[0] for r in pending.values()), np.float64, len(pending))]
        seqs = [np.fromiter((r[1] for r in pending.values()), np.int64, len(pending))]
        held = [np.fromiter((r[2] for r in pending.values()), bool, len(pending))]
        for k, c, _, h in chunks:
            keys.append(k)
            costs.append(c)
            held.append(h)
        if chunks:  # each chunk's one seq, repeated over its rows in one call
            seqs.append(
                np.repeat(
                    np.fromiter((ch[2] for ch in chunks), np.int64, len(chunks)),
                    np.fromiter((ch[0].size for ch in chunks), np.int64, len(chunks)),
                )
            )
        all_keys = np.concatenate(keys)
        order = np.argsort(all_keys)
        self._insert(
            all_keys[order],
            np.concatenate(costs)[order],
            np.concatenate(seqs)[order],
            np.concatenate(held)[order].astype(bool),
        )

    def _flush_chunks(self, chunks: list[tuple[IntArray, FloatArray, int, BoolArray]]) -> None:
        """:meth:`_flush` of new slots that are chunks only (none pending)."""
        if len(chunks) == 1:
            k, c, s, h = chunks[0]
            order = np.argsort(k)
            self._insert(k[order], c[order], np.full(k.size, s, dtype=np.int64), h[order])
            return
        sizes = [ch[0].size for ch in chunks]
        keys = np.concatenate([ch[0] for ch in chunks])
        order = np.argsort(keys)
        self._insert(
            keys[order],
            np.concatenate([ch[1] for ch in chunks])[order],
            np.repeat(np.array([ch[2] for ch in chunks], dtype=np.int64), sizes)[order],
            np.concatenate([ch[3] for ch in chunks])[order].astype(bool),
        )

    def _merge_rows(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
    ) -> Merged:
        """:meth:`merge` in a few dozen numpy calls, whatever the number of rows (nothing
        pending)."""
        # The input's best row per slot key, in the order of its first appearance.
        order = np.lexsort((~held, costs, keys))
        sk = keys[order]
        first = np.ones(sk.size, dtype=bool)
        first[1:] = sk[1:] != sk[:-1]
        best = order[first]
        appeared = np.minimum.reduceat(order, np.flatnonzero(first))
        best = best[np.argsort(appeared, kind="stable")]
        keys, costs, held = keys[best], costs[best], held[best]
        at = np.searchsorted(self._keys, keys)
        found = at < self._keys.size
        found[found] = self._keys[at[found]] == keys[found]
        # A slot held already: replaced when (seq, -cost, held) is larger than what it has.
        old = at[found]
        old_seq, old_cost, old_held = self._seqs[old], self._costs[old], self._held[old]
        new_cost, new_held = costs[found], held[found]
        larger = (seq > old_seq) | (
            (seq == old_seq)
            & ((new_cost < old_cost) | ((new_cost == old_cost) & new_held & ~old_held))
        )
        replaced = int(larger.sum())
        gone: list[Row] = []
        if replaced:
            rows = old[larger]
            gone = _rows(self._keys[rows], old_cost[larger], old_seq[larger], old_held[larger], -1)
            self._seqs[rows] = seq
            self._costs[rows] = new_cost[larger]
            self._held[rows] = new_held[larger]
        fresh = np.flatnonzero(~found)
        refused = max(0, fresh.size - max(room, 0))
        if refused:
            fresh = fresh[: fresh.size - refused]
        if fresh.size:
            fresh = fresh[np.argsort(keys[fresh])]
            self._insert(keys[fresh], costs[fresh], np.full(fresh.size, seq, np.int64), held[fresh])
        if replaced or fresh.size:
            came = np.concatenate((np.flatnonzero(found)[larger], fresh))
            if self._keep_hash(len(gone) + came.size):
                self.changed += gone
                self.changed += _rows(
                    keys[came], costs[came], np.full(came.size, seq), held[came], 1
                )
        return Merged(replaced + int(fresh.size), int(fresh.size), refused)

    def _merge_small(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
    ) -> Merged:
        """:meth:`merge` for a few rows (a node's bids for one task, usually): the same
        result, the rows compared one by one in Python, where a few dozen numpy calls on a
        handful of rows cost more than the work; new slots wait in ``_pending``."""
        best: dict[int, tuple[float, bool]] = {}
        for k, c, h in zip(keys.tolist(), costs.tolist(), held.tolist(), strict=True):
            cur = best.get(k)
            if cur is None or c < cur[0] or (c == cur[0] and h and not cur[1]):
                best[k] = (c, h)
        if not all(math.isfinite(c) for c, _ in best.values()):  # never the wire's
            self._flush()
            return self._merge_rows(keys, costs, seq, held, room)
        n_old = int(self._keys.size)
        at = np.searchsorted(self._keys, list(best)).tolist() if n_old else []
        pending = self._pending
        changed: list[Row] = []  # the rows replaced, as they were, and those replacing them
        fresh: list[int] = []
        for j, (k, (c, h)) in enumerate(best.items()):
            mine = pending.get(k)
            if mine is not None:
                c0, s0, h0 = mine
                if seq > s0 or (seq == s0 and (c < c0 or (c == c0 and h and not h0))):
                    pending[k] = (c, seq, h)
                    changed += ((k, c0, s0, h0, -1), (k, c, seq, h, 1))
            elif n_old and at[j] < n_old and int(self._keys[at[j]]) == k:
                i = at[j]
                s0, c0, h0 = int(self._seqs[i]), float(self._costs[i]), bool(self._held[i])
                if seq > s0 or (seq == s0 and (c < c0 or (c == c0 and h and not h0))):
                    self._seqs[i], self._costs[i], self._held[i] = seq, c, h
                    changed += ((k, c0, s0, h0, -1), (k, c, seq, h, 1))
            else:
                fresh.append(k)
        refused = max(0, len(fresh) - max(room, 0))
        if refused:
            del fresh[len(fresh) - refused :]
        for k in fresh:
            c, h = best[k]
            pending[k] = (c, seq, h)
        replaced = len(changed) // 2
        if (replaced or fresh) and self._keep_hash(len(changed) + len(fresh)):
            self.changed += changed
            self.changed += [(k, best[k][0], seq, best[k][1], 1) for k in fresh]
        return Merged(replaced + len(fresh), len(fresh), refused)

    def _keep_hash(self, n: int) -> bool:
        """The rows change by ``n`` more (rows, or a chunk of them): whether the table's hash
        is kept through the change (a row hash sums, modulo 2**64: the next digest takes the
        hashes of the rows gone from ``digest_base`` and adds those of the rows that came),
        as it is when it was known and the changes stay within :data:`MAX_DELTA`; else every
        row is hashed again. The nodes are computed again (the ledger's merge keeps them)."""
        if self.digest is not None:
            self.digest_base, self.unhashed, self.changed = self.digest, [], []
        self.digest = self.nodes = None
        if self.digest_base is None:
            return False
        if len(self.unhashed) + len(self.changed) + n > MAX_DELTA:
            self._rows_changed()
            return False
        return True

    def _rows_changed(self) -> None:
        """Rows changed untracked: every row is hashed again at the next digest."""
        self.digest = self.digest_base = self.nodes = None
        self.unhashed, self.changed = [], []

    def drop(self, gone: BoolArray) -> int:
        """Remove the rows where ``gone`` (over :meth:`arrays`' rows) is True; returns how
        many."""
        self._flush()
        n = int(gone.sum())
        if n:
            keep = ~gone
            if self._keep_hash(n):
                self.changed += _rows(
                    self._keys[gone], self._costs[gone], self._seqs[gone], self._held[gone], -1
                )
            self._keys, self._costs = self._keys[keep], self._costs[keep]
            self._seqs, self._held = self._seqs[keep], self._held[keep]
        return n
