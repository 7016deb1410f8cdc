"""Every task's bids at its current round in one set of columns, merged a message at a time.

A *slot key* is ``holder * ROLE_SPAN + role`` (the ledger's holder ids,
:data:`~edge_agent.coordination.ledger.ROLE_SPAN`); a row's *key* in the columns is its task's
slot among the columns' tasks (:attr:`BidRows.slot_of`) and its slot key, one int64
(``task slot << KEY_BITS | slot key``). Per key the columns keep one row: the bid with the
largest ``seq`` (``(bdseq, bseq)`` as one int64), then the lowest cost, then a hold over a plain
bid -- a maximum, so the columns hold the same rows whatever order the bids came in. Every
operation is a few numpy calls over the rows it touches, whatever the number of tasks: no
Python loop per bid nor per task, so a message of thousands of bids on dozens of tasks merges
in the time of a few dozen array operations. With each row the columns keep what the ledger
computes of it once, when it comes: its hash in the digest (the digest's bid part is their sum,
kept as rows come and go) and its tie-break in the team award (a function of its holder, task
and role only). Pure: no clock, no I/O; the ledger
(:class:`~edge_agent.coordination.ledger.TaskBoard`) decides what may be merged (valid sessions,
agents not consumed, the bound on bids) and computes the hashes.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
HashArray = NDArray[np.uint64]


class Merged(NamedTuple):
    """What :meth:`BidRows.merge` did."""

    changed: int
    """Rows of the input that changed the columns (new keys and keys replaced)."""
    added: int
    """Of them, new keys."""
    refused: int
    """New keys left out for want of ``room``."""


KEY_BITS: Final = 40
"""A slot key's bits in a row's key (the ledger's holders times ``ROLE_SPAN`` stay below)."""

_MASK64: Final = (1 << 64) - 1
_EMPTY_I: Final = np.empty(0, dtype=np.int64)


class BidRows:
    """The rows (module docstring), in columns of ``capacity`` entries of which the first ``n``
    are rows (in no order), and an index: the rows' keys sorted (``index_keys``) and the row of
    each (``index_rows``), so that a task's rows are one slice of the index, in slot key order.
    The rows from ``indexed`` on are not in the index yet: rows whose holders are new to the
    ledger (a peer's first bids) are appended with no look-up, and put in the index together
    when it is next read (:meth:`_index`: a formation's every peer's first bids in one sort,
    not an insertion a message).
    The columns grow by doubling up to ``max_rows`` (the ledger's ``max_bids``: it never merges
    more); rows dropped are compacted away at once. A task's slot is taken when its first
    rows may come (:meth:`task`) and given back when its rows go (:meth:`drop_task`)."""

    __slots__ = (
        "_free",
        "cost",
        "hash",
        "held",
        "index_keys",
        "index_rows",
        "indexed",
        "key",
        "max_rows",
        "n",
        "nodes",
        "salts",
        "seq",
        "slot_of",
        "task_slot",
        "tie",
        "total",
    )

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.n = 0
        cap = min(1024, max(max_rows, 1))
        self.key: IntArray = np.empty(cap, dtype=np.int64)
        """Each row's key (task slot and slot key)."""
        self.cost: FloatArray = np.empty(cap, dtype=np.float64)
        self.seq: IntArray = np.empty(cap, dtype=np.int64)
        self.held: BoolArray = np.empty(cap, dtype=bool)
        self.tie: IntArray = np.empty(cap, dtype=np.int64)
        """Each row's tie-break in the team award (the ledger's, made when the row came)."""
        self.hash: HashArray = np.empty(cap, dtype=np.uint64)
        """Each row's hash in the digest (the ledger's, made when the row came or changed)."""
        self.total = 0
        """The sum of the rows' ``hash`` modulo 2**64: the digest's bid part."""
        self.index_keys: IntArray = _EMPTY_I
        self.index_rows: IntArray = _EMPTY_I
        self.indexed = 0
        """The rows before it are in the index; those from it on are not (yet)."""
        self.slot_of: dict[str, int] = {}
        """Each task's slot, in the order the tasks took them (a task with no rows may have
        one: a message's tasks take theirs before its rows are checked)."""
        self._free: list[int] = []
        self.salts = np.zeros((0, 2), dtype=np.uint64)
        """Per task slot, the ledger's two salts of its task (digest, tie-break)."""
        self.nodes = np.zeros((0, 0), dtype=bool)
        """Per task slot and the ledger's node id, whether a row's holder is of that node."""

    def __len__(self) -> int:
        return self.n

    # -- tasks ----------------------------------------------------------------------------------
    def task(self, name: str, salts: tuple[int, int]) -> int:
        """``name``'s slot, taken when it has none (``salts``: its digest and tie-break
        salts, kept with the slot)."""
        t = self.slot_of.get(name)
        if t is not None:
            return t
        if self._free:
            t = self._free.pop()
        else:
            t = len(self.slot_of)
            if t >= self.salts.shape[0]:
                grown = max(16, 2 * self.salts.shape[0])
                self.salts = np.resize(self.salts, (grown, 2))
                nodes = np.zeros((grown, self.nodes.shape[1]), dtype=bool)
                nodes[: self.nodes.shape[0]] = self.nodes
                self.nodes = nodes
        self.slot_of[name] = t
        self.salts[t] = salts
        self.nodes[t] = False
        return t

    def span(self, t: int) -> tuple[int, int]:
        """Task slot ``t``'s rows: ``index_rows[lo:hi]``, in slot key order."""
        self._index()
        lo, hi = np.searchsorted(self.index_keys, [t << KEY_BITS, (t + 1) << KEY_BITS])
        return int(lo), int(hi)

    def rows_of(self, t: int) -> IntArray:
        lo, hi = self.span(t)
        return self.index_rows[lo:hi]

    def rows_of_tasks(self, slots: IntArray, *, held: bool = False) -> tuple[IntArray, IntArray]:
        """The rows of task slots ``slots`` (``held``: the holds only), a task's together in
        the order given, each's in slot key order: ``(rows, position in slots)``."""
        self._index()
        pos_of = np.full(self.salts.shape[0], -1, dtype=np.int64)
        pos_of[slots] = np.arange(slots.size)
        pos = pos_of[self.index_keys >> KEY_BITS]
        wanted = pos >= 0
        if held:
            wanted &= self.held[self.index_rows]
        sel = np.flatnonzero(wanted)
        pos = pos[sel]
        if slots.size > 1 and not bool((slots[1:] > slots[:-1]).all()):
            order = np.argsort(pos, kind="stable")  # (the index is in slot order)
            sel, pos = sel[order], pos[order]
        return self.index_rows[sel], pos

    def find(self, t: int, slot_key: int) -> int:
        """The row of task slot ``t``'s ``slot_key``, or -1."""
        k = (t << KEY_BITS) | slot_key
        self._index()
        i = int(np.searchsorted(self.index_keys, k))
        if i < self.index_keys.size and int(self.index_keys[i]) == k:
            return int(self.index_rows[i])
        return -1

    def has_nodes(self, t: int, nodes: list[int]) -> bool:
        """Whether task slot ``t`` has a row of each of the ledger's node ids ``nodes``."""
        row = self.nodes[t].tolist()
        width = len(row)
        return all(n < width and row[n] for n in nodes)

    # -- merging --------------------------------------------------------------------------------
    def merge(  # noqa: PLR0917 (a message's columns)
        self,
        task: IntArray,
        slot_key: IntArray,
        cost: FloatArray,
        seq: int,
        held: BoolArray,
        tie: IntArray,
        hashed: HashArray,
        node: int,
        *,
        room: int,
        unseen: BoolArray | None = None,
        room_order: IntArray | None = None,
    ) -> Merged:
        """Merge one message's rows (of node id ``node``), all of sequence ``seq``, with their
        tie-breaks and hashes: per key the input's best row (lowest cost, then a hold), which
        replaces the row there is when it is larger (module docstring); at most ``room`` new
        keys are added, the first by ``room_order`` (a row's rank; the input's order among
        equal ranks; none: the input's order). ``unseen``: the rows whose holders are new to
        the ledger (no row has their key: they are not looked up)."""
        if task.size == 0:
            return Merged(0, 0, 0)
        keys = (task << KEY_BITS) | slot_key
        # The input's best row per key, in key order (``best``), and where it first appeared
        # in the input (``appeared``: the order the room is given in).
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        twice = sk[1:] == sk[:-1]
        if not twice.any():  # a key a row (a node's message, usually): the rows as they are
            best = appeared = order
        else:
            order = np.lexsort((~held, cost, keys))
            starts = np.flatnonzero(np.concatenate(([True], ~twice)))
            best = order[starts]
            appeared = np.minimum.reduceat(order, starts)
        total, replaced = self.total, 0
        fresh, appeared_fresh = best, appeared
        if unseen is None or not bool(unseen.all()):  # (a peer's first bids: all new keys)
            self._index()
            best_keys = keys[best]
            at = np.searchsorted(self.index_keys, best_keys)
            found = at < self.index_keys.size
            found[found] = self.index_keys[at[found]] == best_keys[found]
            if found.any():
                # A key held already: replaced when (seq, -cost, held) is larger than what it
                # has.
                old = self.index_rows[at[found]]
                src = best[found]
                old_seq, old_cost, old_held = self.seq[old], self.cost[old], self.held[old]
                new_cost, new_held = cost[src], held[src]
                larger = (seq > old_seq) | (
                    (seq == old_seq)
                    & ((new_cost < old_cost) | ((new_cost == old_cost) & new_held & ~old_held))
                )
                replaced = int(np.count_nonzero(larger))
                if replaced:
                    rows, src = old[larger], src[larger]
                    total -= int(np.add.reduce(self.hash[rows]))
                    total += int(np.add.reduce(hashed[src]))
                    self.seq[rows] = seq
                    self.cost[rows] = cost[src]
                    self.held[rows] = held[src]
                    self.hash[rows] = hashed[src]
                    self._seen(task[src], node)
                new = ~found
                fresh, appeared_fresh = best[new], appeared[new]
        refused = max(0, fresh.size - max(room, 0))
        if refused:  # the first by room_order, then in the input's order, are kept
            if room_order is None:
                first = np.argsort(appeared_fresh, kind="stable")
            else:
                first = np.lexsort((appeared_fresh, room_order[appeared_fresh]))
            fresh = fresh[first[: fresh.size - refused]]
        if fresh.size:
            self._append(keys[fresh], cost[fresh], seq, held[fresh], tie[fresh], hashed[fresh])
            total += int(np.add.reduce(hashed[fresh]))
            self._seen(task[fresh], node)
        self.total = total & _MASK64
        return Merged(replaced + int(fresh.size), int(fresh.size), refused)

    def _seen(self, tasks: IntArray, node: int) -> None:
        self._nodes_for(node)
        self.nodes[tasks, node] = True

    def _nodes_for(self, node: int) -> None:
        """``nodes`` with a column for node id ``node`` (grown by doubling)."""
        if node >= self.nodes.shape[1]:
            nodes = np.zeros((self.nodes.shape[0], max(16, 2 * node + 1)), dtype=bool)
            nodes[:, : self.nodes.shape[1]] = self.nodes
            self.nodes = nodes

    def _append(  # noqa: PLR0917 (the columns)
        self,
        keys: IntArray,
        cost: FloatArray,
        seq: int,
        held: BoolArray,
        tie: IntArray,
        hashed: HashArray,
    ) -> None:
        lo = self.n
        hi = lo + keys.size
        if hi > self.key.size:
            self._grow(hi)
        self.n = hi
        self.key[lo:hi] = keys
        self.cost[lo:hi] = cost
        self.seq[lo:hi] = seq
        self.held[lo:hi] = held
        self.tie[lo:hi] = tie
        self.hash[lo:hi] = hashed

    def _index(self) -> None:
        """The rows not yet in the index put in it (their keys are in none of its)."""
        lo, hi = self.indexed, self.n
        if lo == hi:
            return
        self.indexed = hi
        # (each message's new rows came in key order: a merge of sorted runs, which the stable
        # sort's runs take in about half the time of a quicksort)
        order = np.argsort(self.key[lo:hi], kind="stable")
        keys = self.key[lo:hi][order]
        # each goes where searchsorted puts it, moved on by the new keys before it
        put = np.searchsorted(self.index_keys, keys) + np.arange(keys.size)
        size = self.index_keys.size + keys.size
        old = np.ones(size, dtype=bool)
        old[put] = False
        index_keys = np.empty(size, dtype=np.int64)
        index_keys[old] = self.index_keys
        index_keys[put] = keys
        index_rows = np.empty(size, dtype=np.int64)
        index_rows[old] = self.index_rows
        index_rows[put] = order + lo
        self.index_keys, self.index_rows = index_keys, index_rows

    def _grow(self, n: int) -> None:
        cap = min(max(n, 2 * self.key.size), max(self.max_rows, n))
        for name in ("key", "cost", "seq", "held", "tie", "hash"):
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    # -- dropping -------------------------------------------------------------------------------
    def drop(self, gone: BoolArray) -> int:
        """Remove the rows where ``gone`` (over the first ``n`` rows) is True; returns how
        many (the task slots' nodes are then the caller's to make again, :meth:`nodes_again`)."""
        n_gone = int(np.count_nonzero(gone))
        if not n_gone:
            return 0
        self.total = (self.total - int(np.add.reduce(self.hash[: self.n][gone]))) & _MASK64
        keep = np.flatnonzero(~gone)
        for name in ("key", "cost", "seq", "held", "tie", "hash"):
            col = getattr(self, name)
            col[: keep.size] = col[keep]
        new_row = np.full(self.n, -1, dtype=np.int64)
        new_row[keep] = np.arange(keep.size)
        self.n = int(keep.size)
        self.indexed = int(np.searchsorted(keep, self.indexed))  # the kept rows keep their order
        moved = new_row[self.index_rows]
        stay = moved >= 0
        self.index_keys, self.index_rows = self.index_keys[stay], moved[stay]
        return n_gone

    def drop_task(self, name: str) -> int:
        """Remove ``name``'s rows and give its slot back; returns how many rows."""
        t = self.slot_of.pop(name, None)
        if t is None:
            return 0
        self._free.append(t)
        lo, hi = self.span(t)
        if hi == lo:
            return 0
        gone = np.zeros(self.n, dtype=bool)
        gone[self.index_rows[lo:hi]] = True
        return self.drop(gone)

    def nodes_again(self, holder_node: IntArray, role_span: int) -> None:
        """The task slots' nodes made from the rows (after rows were dropped)."""
        self.nodes[:] = False
        if self.n:
            keys = self.key[: self.n]
            node = holder_node[(keys & ((1 << KEY_BITS) - 1)) // role_span]
            self._nodes_for(int(node.max()))
            self.nodes[keys >> KEY_BITS, node] = True
