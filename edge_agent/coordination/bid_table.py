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
from typing import Final, NamedTuple

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

SMALL: Final = 16
"""Up to this many rows a merge compares them in Python (:meth:`BidTable._merge_small`): a
node bids a task's ``k`` cheapest agents per role, a handful of rows per task per message."""


def _merged(old: np.ndarray, new: np.ndarray, put: IntArray, old_rows: BoolArray) -> np.ndarray:
    out = np.empty(old_rows.size, dtype=old.dtype)
    out[old_rows] = old
    out[put] = new
    return out


class BidTable:
    """The rows, sorted by slot key (module docstring)."""

    __slots__ = ("costs", "digest", "held", "keys", "seqs")

    def __init__(self) -> None:
        self.keys: IntArray = _EMPTY_I
        self.costs: FloatArray = np.empty(0, dtype=np.float64)
        self.seqs: IntArray = _EMPTY_I
        self.held: BoolArray = np.empty(0, dtype=bool)
        self.digest: int | None = None
        """The ledger's hash of these rows (None: not computed since they changed)."""

    def __len__(self) -> int:
        return int(self.keys.size)

    def arrays(self) -> tuple[IntArray, FloatArray, IntArray, BoolArray]:
        """``(keys, costs, seqs, held)``; not to be written to."""
        return self.keys, self.costs, self.seqs, self.held

    def find(self, key: int) -> int:
        """The row of slot ``key``, or -1."""
        i = int(np.searchsorted(self.keys, key))
        return i if i < self.keys.size and int(self.keys[i]) == key else -1

    def merge(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, *, room: int
    ) -> Merged:
        """Merge one message's rows of this task, all of sequence ``seq``: per slot key the
        input's best row (lowest cost, then a hold), which replaces the table's row when it
        is larger (module docstring); at most ``room`` new slots are added, the first in the
        input's order."""
        if keys.size == 0:
            return Merged(0, 0, 0)
        if keys.size <= SMALL:
            return self._merge_small(keys, costs, seq, held, room)
        return self._merge_rows(keys, costs, seq, held, room)

    def _merge_rows(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
    ) -> Merged:
        """:meth:`merge` in a few dozen numpy calls, whatever the number of rows."""
        # The input's best row per slot key, in the order of its first appearance.
        order = np.lexsort((~held, costs, keys))
        sk = keys[order]
        first = np.ones(sk.size, dtype=bool)
        first[1:] = sk[1:] != sk[:-1]
        best = order[first]
        appeared = np.minimum.reduceat(order, np.flatnonzero(first))
        best = best[np.argsort(appeared, kind="stable")]
        keys, costs, held = keys[best], costs[best], held[best]
        at = np.searchsorted(self.keys, keys)
        found = at < self.keys.size
        found[found] = self.keys[at[found]] == keys[found]
        # A slot held already: replaced when (seq, -cost, held) is larger than what it has.
        old = at[found]
        old_seq, old_cost, old_held = self.seqs[old], self.costs[old], self.held[old]
        new_cost, new_held = costs[found], held[found]
        larger = (seq > old_seq) | (
            (seq == old_seq)
            & ((new_cost < old_cost) | ((new_cost == old_cost) & new_held & ~old_held))
        )
        replaced = int(larger.sum())
        if replaced:
            rows = old[larger]
            self.seqs[rows] = seq
            self.costs[rows] = new_cost[larger]
            self.held[rows] = new_held[larger]
        fresh = np.flatnonzero(~found)
        refused = max(0, fresh.size - max(room, 0))
        if refused:
            fresh = fresh[: fresh.size - refused]
        if fresh.size:
            fresh = fresh[np.argsort(keys[fresh])]
            if self.keys.size == 0:
                self.keys, self.costs, self.held = keys[fresh], costs[fresh], held[fresh]
                self.seqs = np.full(fresh.size, seq, dtype=np.int64)
            else:
                # Where each new row goes among the old ones (both sorted), and the old around.
                total = self.keys.size + fresh.size
                put = at[fresh] + np.arange(fresh.size)
                old_rows = np.ones(total, dtype=bool)
                old_rows[put] = False
                self.keys = _merged(self.keys, keys[fresh], put, old_rows)
                self.costs = _merged(self.costs, costs[fresh], put, old_rows)
                self.seqs = _merged(self.seqs, np.full(fresh.size, seq, np.int64), put, old_rows)
                self.held = _merged(self.held, held[fresh], put, old_rows)
        if replaced or fresh.size:
            self.digest = None
        return Merged(replaced + int(fresh.size), int(fresh.size), refused)

    def _merge_small(
        self, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
    ) -> Merged:
        """:meth:`merge` for a few rows (a node's bids for one task, usually): the same
        result, the rows compared one by one in Python, where a few dozen numpy calls on a
        handful of rows cost more than the work; only new slots are inserted with numpy."""
        best: dict[int, tuple[float, bool]] = {}
        for k, c, h in zip(keys.tolist(), costs.tolist(), held.tolist(), strict=True):
            cur = best.get(k)
            if cur is None or c < cur[0] or (c == cur[0] and h and not cur[1]):
                best[k] = (c, h)
            elif not math.isfinite(c):  # not the wire's (it refuses them): numpy's order
                return self._merge_rows(keys, costs, seq, held, room)
        if not all(math.isfinite(c) for c, _ in best.values()):
            return self._merge_rows(keys, costs, seq, held, room)
        at = np.searchsorted(self.keys, list(best)).tolist()
        n_old = int(self.keys.size)
        old_keys, old_seqs, old_costs, old_held = self.keys, self.seqs, self.costs, self.held
        replaced = 0
        fresh: list[int] = []
        for j, (k, (c, h)) in enumerate(best.items()):
            i = at[j]
            if i < n_old and int(old_keys[i]) == k:
                s0, c0, h0 = int(old_seqs[i]), float(old_costs[i]), bool(old_held[i])
                if seq > s0 or (seq == s0 and (c < c0 or (c == c0 and h and not h0))):
                    old_seqs[i], old_costs[i], old_held[i] = seq, c, h
                    replaced += 1
            else:
                fresh.append(j)
        refused = max(0, len(fresh) - max(room, 0))
        if refused:
            del fresh[len(fresh) - refused :]
        if fresh:
            items = list(best.items())
            rows = sorted(fresh, key=lambda j: items[j][0])
            new_keys = np.array([items[j][0] for j in rows], dtype=np.int64)
            new_costs = np.array([items[j][1][0] for j in rows], dtype=np.float64)
            new_held = np.array([items[j][1][1] for j in rows], dtype=bool)
            new_seqs = np.full(len(rows), seq, dtype=np.int64)
            if n_old == 0:
                self.keys, self.costs, self.held = new_keys, new_costs, new_held
                self.seqs = new_seqs
            else:
                put = np.array([at[j] for j in rows], dtype=np.int64) + np.arange(len(rows))
                old_rows = np.ones(n_old + len(rows), dtype=bool)
                old_rows[put] = False
                self.keys = _merged(self.keys, new_keys, put, old_rows)
                self.costs = _merged(self.costs, new_costs, put, old_rows)
                self.seqs = _merged(self.seqs, new_seqs, put, old_rows)
                self.held = _merged(self.held, new_held, put, old_rows)
        if replaced or fresh:
            self.digest = None
        return Merged(replaced + len(fresh), len(fresh), refused)

    def drop(self, gone: BoolArray) -> int:
        """Remove the rows where ``gone`` is True; returns how many."""
        n = int(gone.sum())
        if n:
            keep = ~gone
            self.keys, self.costs = self.keys[keep], self.costs[keep]
            self.seqs, self.held = self.seqs[keep], self.held[keep]
            self.digest = None
        return n
