"""A bid message's merge as main did it before the twelfth pass (ec728b6a): ``add_bids`` as it
was (every task's epoch checked by a call), holder ids in a dict of ``(node id, group id,
agent)`` tuples made one agent at a time, the per-``(node, group)`` sorted maps kept only by
:meth:`TaskBoard._holders_of`, and a bid table's new rows' seqs made a chunk at a time. The
oracle the batched merge is compared with to the bit (tests/unit/coordination/
test_batched_holders.py), and what the formation's one-process A/B puts back
(:func:`old_merge`)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import msgspec
import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination import engine_io
from edge_agent.coordination.assignment import fixed_point
from edge_agent.coordination.messages import TaskBids
from edge_agent.coordination.relay_admission import (
    _NO_COSTS,
    _NO_ROWS,
    AdmittedBids,
    RelayAdmission,
)
from edge_agent.coordination.team_award import SALT_BITS, RoleBids, RoleTable
from edge_agent.coordination.utility import MIN_BID_COST
from tests.support.main15 import board_state
from tests.support.main15.bid_table import (
    BidTable,
    BoolArray,
    FloatArray,
    IntArray,
    Merged,
)
from tests.support.main15.board_state import (
    _MASK64,
    _ODD,
    MAX_SESSION,
    ROLE_SPAN,
    Bid,
    BoardState,
    _int64s,
    _splitmix,
    seq_key,
    stable_hash64,
)
from tests.support.main15.ledger import _ZERO, TaskBoard, _TaskRows

_NO_INTS = np.empty(0, dtype=np.int64)


@contextmanager
def main15_merge() -> Iterator[None]:
    """Every node's ledger made while inside (``EngineIO``'s board) main's before the sixteenth
    pass (:mod:`tests.support.main15`: a bid table a task); boards made inside must only be
    used inside. The other oracles here patch that copy, and put it in the nodes too."""
    saved = engine_io.TaskBoard
    engine_io.TaskBoard = TaskBoard  # type: ignore[misc]
    try:
        yield
    finally:
        engine_io.TaskBoard = saved  # type: ignore[misc]


def _dict(board: BoardState) -> dict[tuple[int, int, int], int]:
    holders: dict[tuple[int, int, int], int] | None = board.__dict__.get("_old_holders")
    if holders is None:
        holders = board.__dict__["_old_holders"] = {}
    return holders


def _new_holders(
    self: TaskBoard, node: str, group: str, agents: list[int] | NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    agents = [int(a) for a in agents]
    holders = _dict(self)
    n = self._node(node)
    if n is None:
        return _NO_INTS, _NO_INTS
    g = self._groups(group)
    keys = [(n, g, a) for a in agents]
    if not holders.keys().isdisjoint(keys):
        have = [(a, h) for a in agents if (h := holders.get((n, g, a))) is not None]
        known = {a for a, _ in have}
        made, made_ids = _new_holders(self, node, group, [a for a in agents if a not in known])
        return (
            np.concatenate([np.array([a for a, _ in have], dtype=np.int64), made]),
            np.concatenate([np.array([h for _, h in have], dtype=np.int64), made_ids]),
        )
    room = max(0, self.max_holders - len(holders))
    if len(agents) > room:
        self.overflow += len(agents) - room
        agents, keys = agents[:room], keys[:room]
    if not agents:
        return _NO_INTS, _NO_INTS
    first = len(holders)
    ids = range(first, first + len(agents))
    holders.update(zip(keys, ids, strict=True))
    self._n_holders = len(holders)
    end = first + len(agents)
    hashes = board_state.holder_hashes(node, group, agents)
    consumed: list[int] | int = (
        [self.consumed.get((node, group, a), -1) for a in agents] if self.consumed else -1
    )
    for arr, values in (
        (self._holder_node, n),
        (self._holder_group, g),
        (self._holder_agent, agents),
        (self._holder_consumed, consumed),
        (self._holder_hash, hashes.view(np.int64)),
    ):
        arr.ensure(end)
        arr.data[first:end] = values
    return self._holder_agent.data[first:end].copy(), np.arange(first, end, dtype=np.int64)


def _holders_of(
    self: TaskBoard, node: str, group: str, agents: NDArray[np.int64]
) -> NDArray[np.int64]:
    maps = self.__dict__.setdefault("_old_agent_maps", {})
    n, g = self._nodes.ids[node], self._groups(group)
    known, ids = maps.get((n, g), (_NO_INTS, _NO_INTS))
    at = np.searchsorted(known, agents)
    found = at < known.size
    found[found] = known[at[found]] == agents[found]
    if not found.all():
        new, first = np.unique(agents[~found], return_index=True)
        made, made_ids = _new_holders(self, node, group, new[np.argsort(first)].tolist())
        if made.size:
            merged = np.concatenate([known, made])
            order = np.argsort(merged, kind="stable")
            known, ids = merged[order], np.concatenate([ids, made_ids])[order]
            maps[(n, g)] = (known, ids)
        at = np.searchsorted(known, agents)
        found = at < known.size
        found[found] = known[at[found]] == agents[found]
    out = np.full(agents.size, -1, dtype=np.int64)
    out[found] = ids[at[found]]
    return out


def _holder_id(self: TaskBoard, n: int, g: int, agent: int) -> int | None:
    return _dict(self).get((n, g, agent))


def _add_bids(  # noqa: PLR0917 (main's signature)
    self: TaskBoard,
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
    usable: list[BidTable | None] = []
    for task, epoch in zip(tasks, epochs, strict=True):
        # A bid's epoch counts even when the bid does not: floors depend on every bid seen.
        ok, raised = self._accepts_epoch(task, epoch)
        changed |= raised
        if not ok:
            usable.append(None)
            continue
        per = self.bids.get(task)  # (a table made only when the task has none)
        if per is None:
            per = self.bids[task] = BidTable()
        usable.append(per)
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
    first_new = len(_dict(self))
    h = self._holders_of(node, group, agent[rows])
    fresh = h >= 0
    fresh[fresh] = key > self._holder_consumed.data[h[fresh]]
    rows, h = rows[fresh], h[fresh]
    slot = h * ROLE_SPAN + role[rows]
    cost = np.asarray(costs, dtype=np.float64)[rows]
    t_rows = t_of[rows]
    by_task = np.argsort(t_rows, kind="stable")  # each task's rows, in the message's order
    bounds = np.flatnonzero(np.diff(t_rows[by_task])) + 1
    # A task's rows are new slots, added with no look-up (BidTable.add_new), when their
    # agents are new to the ledger (holder ids made by this message: no table has a row of
    # them), their slots distinct and their costs finite: a node's first bids.
    new = (h >= first_new) & np.isfinite(cost)
    by_slot = np.lexsort((slot, t_rows))
    twice = (slot[by_slot[1:]] == slot[by_slot[:-1]]) & (
        t_rows[by_slot[1:]] == t_rows[by_slot[:-1]]
    )
    new[by_slot[1:][twice]] = False
    all_new = (
        np.logical_and.reduceat(new[by_task], np.r_[0, bounds]).tolist() if by_task.size else []
    )
    inserted = 0
    # Each task's rows are one slice of the rows in task order (views, not a copy a task).
    slot, cost, held = slot[by_task], cost[by_task], held[rows[by_task]]
    starts: list[int] = np.r_[0, bounds].tolist() if by_task.size else []
    ends = [*starts[1:], int(by_task.size)] if starts else []
    first_task = t_rows[by_task[starts]].tolist() if starts else []
    for j, (lo, hi, t) in enumerate(zip(starts, ends, first_task, strict=True)):
        per = usable[t]
        if per is None:  # not reached: the rows are of usable tasks
            continue
        merge = per.add_new if all_new[j] else per.merge
        merged = merge(slot[lo:hi], cost[lo:hi], key, held[lo:hi], room=self.max_bids - self.n_bids)
        self.n_bids += merged.added
        self.overflow += merged.refused
        inserted += merged.changed
    self.stale_bids += n - inserted
    if inserted:
        self._changed()
    return changed or inserted > 0


def _flush(self: BidTable) -> None:
    if not self._pending and not self._chunks:
        return
    pending, chunks = self._pending, self._chunks
    self._pending, self._chunks = {}, []
    keys = [np.fromiter(pending, dtype=np.int64, count=len(pending))]
    costs = [np.fromiter((r[0] for r in pending.values()), np.float64, len(pending))]
    seqs = [np.fromiter((r[1] for r in pending.values()), np.int64, len(pending))]
    held = [np.fromiter((r[2] for r in pending.values()), bool, len(pending))]
    for k, c, s, h in chunks:
        keys.append(k)
        costs.append(c)
        seqs.append(np.full(k.size, s, dtype=np.int64))
        held.append(h)
    all_keys = np.concatenate(keys)
    order = np.argsort(all_keys)
    self._insert(
        all_keys[order],
        np.concatenate(costs)[order],
        np.concatenate(seqs)[order],
        np.concatenate(held)[order].astype(bool),
    )


_PATCHES = [(TaskBoard, "add_bids", _add_bids),
            (TaskBoard, "_new_holders", _new_holders), (TaskBoard, "_holders_of", _holders_of),
            (TaskBoard, "_holder_id", _holder_id), (BidTable, "_flush", _flush)]  # fmt: skip


@contextmanager
def old_merge() -> Iterator[None]:
    """Every :class:`TaskBoard` made and merged as before the pass while inside (one process's
    A/B: boards made inside must only be used inside)."""
    saved = [(cls, name, cls.__dict__.get(name)) for cls, name, _ in _PATCHES]
    for cls, name, f in _PATCHES:
        setattr(cls, name, f)
    try:
        with main15_merge():
            yield
    finally:
        for cls, name, value in saved:
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


# -- main's merge and admission before the fourteenth pass (58dc0a30) -------------------------
# add_bids with a BidTable call a task (BidTable.add_new: the digest hashes its rows later) and
# admit_bids with three calls a task (epoch_limit, the spec's roles, is_team): the oracle of
# the merge and admission over arrays (test_batched_holders.py), and what
# benchmarks/ab_coordination_merge.py --against main puts back.


def _main_add_bids(  # noqa: PLR0917 (main's)
    self: TaskBoard,
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
    usable: list[BidTable | None] = []
    floors, closed, fact_floor = self.floor, self.closed, self._fact_floor
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
                usable.append(None)
                continue
        per = self.bids.get(task)  # (a table made only when the task has none)
        if per is None:
            per = self.bids[task] = BidTable()
        usable.append(per)
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
    first_new = self._n_holders
    h = self._holders_of(node, group, agent[rows])
    fresh = h >= 0
    fresh[fresh] = key > self._holder_consumed.data[h[fresh]]
    rows, h = rows[fresh], h[fresh]
    slot = h * ROLE_SPAN + role[rows]
    cost = np.asarray(costs, dtype=np.float64)[rows]
    t_rows = t_of[rows]
    by_task = np.argsort(t_rows, kind="stable")  # each task's rows, in the message's order
    bounds = np.flatnonzero(np.diff(t_rows[by_task])) + 1
    # A task's rows are new slots, added with no look-up (BidTable.add_new), when their
    # agents are new to the ledger (holder ids made by this message: no table has a row of
    # them), their slots distinct and their costs finite: a node's first bids.
    new = (h >= first_new) & np.isfinite(cost)
    by_slot = np.lexsort((slot, t_rows))
    twice = (slot[by_slot[1:]] == slot[by_slot[:-1]]) & (
        t_rows[by_slot[1:]] == t_rows[by_slot[:-1]]
    )
    new[by_slot[1:][twice]] = False
    all_new = (
        np.logical_and.reduceat(new[by_task], np.r_[0, bounds]).tolist() if by_task.size else []
    )
    inserted = 0
    # Each task's rows are one slice of the rows in task order (views, not a copy a task).
    slot, cost, held = slot[by_task], cost[by_task], held[rows[by_task]]
    starts: list[int] = np.r_[0, bounds].tolist() if by_task.size else []
    ends = [*starts[1:], int(by_task.size)] if starts else []
    first_task = t_rows[by_task[starts]].tolist() if starts else []
    for j, (lo, hi, t) in enumerate(zip(starts, ends, first_task, strict=True)):
        per = usable[t]
        if per is None:  # not reached: the rows are of usable tasks
            continue
        merge = per.add_new if all_new[j] else per.merge
        merged = merge(slot[lo:hi], cost[lo:hi], key, held[lo:hi], room=self.max_bids - self.n_bids)
        self.n_bids += merged.added
        self.overflow += merged.refused
        inserted += merged.changed
    self.stale_bids += n - inserted
    if inserted:
        self._changed()
    return changed or inserted > 0


def _main_admit_bids(
    self: RelayAdmission, node: str, bdseq: int, body: TaskBids
) -> tuple[AdmittedBids, int]:
    """What this node takes of ``node``'s ``task_bids`` of session ``bdseq``, and how many
    bids it refused: all of them for a session not seen born; a task's bids (and its
    epoch, which would raise the task's floor) when the epoch is beyond
    :meth:`epoch_limit`; a bid whose cost is below ``MIN_BID_COST``."""
    epochs, task_index, agents, costs = body.arrays()
    if not self.bids_allowed(node, bdseq):
        return AdmittedBids([], [], _NO_ROWS, _NO_ROWS, _NO_COSTS), body.n_bids
    limits = np.array([self.epoch_limit(t) for t in body.tasks], dtype=np.int64)
    task_ok = epochs.astype(np.int64) <= limits
    roles, holds = body.team_columns()
    row_ok = (
        task_ok[task_index]
        & (costs >= MIN_BID_COST)
        & self._slot_ok(body.tasks, task_index, roles, holds)
    )
    renumber = np.cumsum(task_ok) - 1
    team = body.roles is not msgspec.UNSET or body.holds is not msgspec.UNSET
    admitted = AdmittedBids(
        tasks=[t for t, ok in zip(body.tasks, task_ok.tolist(), strict=True) if ok],
        epochs=epochs[task_ok].tolist(),
        task_index=renumber[task_index[row_ok]],
        agents=agents[row_ok].astype(np.int64),
        costs=costs[row_ok].astype(np.float64),
        roles=roles[row_ok].astype(np.int64) if team else None,
        holds=holds[row_ok].astype(bool) if team else None,
    )
    return admitted, int(row_ok.size - row_ok.sum())


_MAIN_PATCHES = [(TaskBoard, "add_bids", _main_add_bids),
                 (RelayAdmission, "admit_bids", _main_admit_bids)]  # fmt: skip


@contextmanager
def main_merge() -> Iterator[None]:
    """Every bid message admitted and merged as main did before the fourteenth pass while
    inside (the rest of the ledger as now)."""
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in _MAIN_PATCHES]
    for cls, name, f in _MAIN_PATCHES:
        setattr(cls, name, f)
    try:
        with main15_merge():
            yield
    finally:
        for cls, name, value in saved:
            setattr(cls, name, value)


# -- main's bid tables, digest and team rows after the fourteenth pass (f08b930d) -------------
# A table's row replaced or dropped made its whole table hashed again at the next digest, and
# the team award's rows were made a task and a role at a time: the oracle of the fifteenth pass
# (test_batched_holders.py) and what benchmarks/ab_coordination_merge.py --against main puts
# back.


def _p14_add_new(
    self: BidTable, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, *, room: int
) -> Merged:
    """:meth:`merge` of rows the caller knows to be new slots: distinct keys, none in the
    table (of agents the ledger saw first in this message), finite costs. The first
    ``room`` are kept as they are, put in the columns with the rest at the next read: no
    look-up, no copy of the columns."""
    take = min(int(keys.size), max(room, 0))
    if take:
        chunk = (keys[:take], costs[:take], seq, held[:take])
        self._chunks.append(chunk)
        if self.digest is not None:  # a row hash sums: the new rows' is added to it
            self.digest_base, self.unhashed = self.digest, [chunk]
        elif self.digest_base is not None:
            self.unhashed.append(chunk)
        self.digest = self.nodes = None
    return Merged(take, take, int(keys.size) - take)


def _p14_merge_rows(  # noqa: PLR0917 (main's)
    self: BidTable, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
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
        (seq == old_seq) & ((new_cost < old_cost) | ((new_cost == old_cost) & new_held & ~old_held))
    )
    replaced = int(larger.sum())
    if replaced:
        rows = old[larger]
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
        self._rows_changed()
    return Merged(replaced + int(fresh.size), int(fresh.size), refused)


def _p14_merge_small(  # noqa: PLR0917 (main's)
    self: BidTable, keys: IntArray, costs: FloatArray, seq: int, held: BoolArray, room: int
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
    replaced = 0
    fresh: list[int] = []
    for j, (k, (c, h)) in enumerate(best.items()):
        mine = pending.get(k)
        if mine is not None:
            c0, s0, h0 = mine
            if seq > s0 or (seq == s0 and (c < c0 or (c == c0 and h and not h0))):
                pending[k] = (c, seq, h)
                replaced += 1
        elif n_old and at[j] < n_old and int(self._keys[at[j]]) == k:
            i = at[j]
            s0, c0, h0 = int(self._seqs[i]), float(self._costs[i]), bool(self._held[i])
            if seq > s0 or (seq == s0 and (c < c0 or (c == c0 and h and not h0))):
                self._seqs[i], self._costs[i], self._held[i] = seq, c, h
                replaced += 1
        else:
            fresh.append(k)
    refused = max(0, len(fresh) - max(room, 0))
    if refused:
        del fresh[len(fresh) - refused :]
    for k in fresh:
        c, h = best[k]
        pending[k] = (c, seq, h)
    if replaced or fresh:
        self._rows_changed()
    return Merged(replaced + len(fresh), len(fresh), refused)


def _p14_rows_changed(self: BidTable) -> None:
    """Rows replaced, inserted or dropped: every row is hashed again at the next digest."""
    self.digest = self.digest_base = self.nodes = None
    self.unhashed = []


def _p14_drop(self: BidTable, gone: BoolArray) -> int:
    """Remove the rows where ``gone`` (over :meth:`arrays`' rows) is True; returns how
    many."""
    self._flush()
    n = int(gone.sum())
    if n:
        keep = ~gone
        self._keys, self._costs = self._keys[keep], self._costs[keep]
        self._seqs, self._held = self._seqs[keep], self._held[keep]
        self._rows_changed()
    return n


def _p14_bids_hashes(self: BoardState, tables: list[tuple[str, BidTable]]) -> None:
    """Each table's hash of its rows (``per.digest``), the tables' rows in one pass: the
    sum of a hash per row of its task, holder, cost, ``(bdseq, bseq)``, role and hold. A
    table that only took new slots since its last hash (``per.digest_base``) hashes only
    theirs: a formation's peers' first bids add rows to every task's table, and every
    ``task_state`` that came between two of them hashed every row again."""
    parts = []
    bases = []
    for task, per in tables:
        if not len(per):
            per.digest, per.digest_base, per.unhashed = 0, None, []
            continue
        th = self._task_hash.get(task)
        if th is None:
            th = self._task_hash[task] = stable_hash64(("task", task))
        if per.digest_base is not None:  # only new slots since: their rows' hashes added
            new = per.unhashed
            rows = (
                np.concatenate([c[0] for c in new]),
                np.concatenate([c[1] for c in new]),
                np.concatenate([np.full(c[0].size, c[2], dtype=np.int64) for c in new]),
                np.concatenate([c[3] for c in new]),
            )
            bases.append(per.digest_base)
        else:
            rows = per.arrays()
            bases.append(0)
        parts.append((per, rows, (th * int(_ODD[2])) & _MASK64))
    if not parts:
        return
    sizes = [a[0].size for _, a, _ in parts]
    keys = np.concatenate([a[0] for _, a, _ in parts])
    costs = np.concatenate([a[1] for _, a, _ in parts])
    seqs = np.concatenate([a[2] for _, a, _ in parts])
    held = np.concatenate([a[3] for _, a, _ in parts])
    salt = np.repeat(np.array([t for _, _, t in parts], dtype=np.uint64), sizes)
    x = self._row_hashes(keys, costs, seqs.view(np.uint64) * _ODD[1], held, salt)
    starts = np.cumsum([0, *sizes[:-1]])  # every table has rows: no empty segment
    sums = np.add.reduceat(x, starts).tolist()  # uint64: wraps modulo 2**64
    for (per, _, _), base, total in zip(parts, bases, sums, strict=True):
        per.digest, per.digest_base, per.unhashed = (base + int(total)) & _MASK64, None, []


def _p14_role_bids(
    self: BoardState, tasks: list[str]
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
    n_roles = [self.specs[task].n_roles for task in tasks if task in self.bids]
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
    # Holder ids are dense (0 ... holders made - 1): a mask finds the distinct ones in
    # order, and an array indexed by id maps each to its column.
    seen = np.zeros(self._n_holders, dtype=bool)
    seen[holder] = True
    uniq = np.flatnonzero(seen)
    canon = uniq[
        np.lexsort(
            (
                self._holder_agent.data[uniq],
                self._groups.ranks()[self._holder_group.data[uniq]],
                self._nodes.ranks()[self._holder_node.data[uniq]],
            )
        )
    ]
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


def _p14_holds_of(self: BoardState, node: str, tasks: Iterable[str]) -> list[Bid]:
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


def _p14_flush(self: BidTable) -> None:
    if not self._pending and not self._chunks:
        return
    pending, chunks = self._pending, self._chunks
    self._pending, self._chunks = {}, []
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


def _p14_add_bids(  # noqa: PLR0917 (main's)
    self: TaskBoard,
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
    usable: list[BidTable | None] = []
    floors, closed, fact_floor = self.floor, self.closed, self._fact_floor
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
                usable.append(None)
                continue
        per = self.bids.get(task)  # (a table made only when the task has none)
        if per is None:
            per = self.bids[task] = BidTable()
        usable.append(per)
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
    first_new = self._n_holders
    h = self._holders_of(node, group, agent[rows])
    fresh = h >= 0
    fresh[fresh] = key > self._holder_consumed.data[h[fresh]]
    rows, h = rows[fresh], h[fresh]
    slot = h * ROLE_SPAN + role[rows]
    cost = np.asarray(costs, dtype=np.float64)[rows]
    t_rows = t_of[rows]
    by_task = np.argsort(t_rows, kind="stable")  # each task's rows, in the message's order
    bounds = np.flatnonzero(np.diff(t_rows[by_task])) + 1
    # A task's rows are new slots, added with no look-up (BidTable.add_new), when their
    # agents are new to the ledger (holder ids made by this message: no table has a row of
    # them), their slots distinct and their costs finite: a node's first bids.
    new = (h >= first_new) & np.isfinite(cost)
    by_slot = np.lexsort((slot, t_rows))
    twice = (slot[by_slot[1:]] == slot[by_slot[:-1]]) & (
        t_rows[by_slot[1:]] == t_rows[by_slot[:-1]]
    )
    new[by_slot[1:][twice]] = False
    if not by_task.size:
        self.stale_bids += n
        return changed
    starts = np.concatenate((_ZERO, bounds))
    all_new = np.logical_and.reduceat(new[by_task], starts)
    # Each task's rows are one slice of the rows in task order (views, not a copy a task).
    rows_of = _TaskRows(
        [tasks[t] for t in t_rows[by_task[starts]].tolist()],
        [usable[t] for t in t_rows[by_task[starts]].tolist()],
        starts,
        slot[by_task],
        cost[by_task],
        held[rows[by_task]],
        key,
        node_id,
    )
    if by_task.size <= self.max_bids - self.n_bids:
        inserted = self._merge_all(rows_of, all_new)
    else:
        inserted = self._merge_each(rows_of, all_new.tolist())
    self.stale_bids += n - inserted
    if inserted:
        self._changed()
    return changed or inserted > 0


def _p14_merge_all(self: TaskBoard, rows: _TaskRows, all_new: NDArray[np.bool_]) -> int:
    """:meth:`add_bids`' rows into their tables when there is room for every one (no
    task's new slots are cut): the tasks whose rows are all new slots take them as they
    are, with the digest's hashes of their rows made here for the whole message at once
    (:meth:`_bids_hashes`' rows; :meth:`BidTable.add_hashed`); the others merge. The rows
    that changed a table."""
    slot, cost, held, key, node = rows.slot, rows.cost, rows.held, rows.key, rows.node
    starts = rows.starts.tolist()
    ends = [*starts[1:], int(slot.size)]
    sums: list[int] = [0] * len(starts)  # (read only for a task whose rows are new)
    if all_new.any():
        salts = np.array([self._task_salt(t) for t in rows.tasks], dtype=np.uint64)
        seq_term = np.array([(key * int(_ODD[1])) & _MASK64], dtype=np.uint64)
        sizes = np.diff(np.append(rows.starts, slot.size))
        x = self._row_hashes(slot, cost, seq_term, held, np.repeat(salts, sizes))
        sums = np.add.reduceat(x, rows.starts).tolist()  # uint64: wraps modulo 2**64
    inserted = added = 0
    for lo, hi, per, fresh, hashed in zip(
        starts, ends, rows.tables, all_new.tolist(), sums, strict=True
    ):
        if per is None:  # not reached: the rows are of usable tasks
            continue
        if fresh:
            per.add_hashed(slot[lo:hi], cost[lo:hi], key, held[lo:hi], hashed, node)
            added += hi - lo
            inserted += hi - lo
        else:
            # The rows it changes are of the message's node: its nodes, when known, are
            # those and that one (bid_by_all asks them of every team round every tick).
            known = per.nodes
            merged = per.merge(slot[lo:hi], cost[lo:hi], key, held[lo:hi], room=hi - lo)
            if merged.changed and known is not None:
                per.nodes = known if node in known else known | {node}
            added += merged.added
            inserted += merged.changed
    self.n_bids += added
    return inserted


def _p14_holder_hashes(node: str, group: str, agents: list[int]) -> NDArray[np.uint64]:
    """``stable_hash64((node, group, agent))`` of each of ``agents``: the tuple's msgpack is
    a three-element array's header, the two names (encoded once) and the agent."""
    encode = msgspec.msgpack.encode
    base = hashlib.blake2b(b"\x93" + encode(node) + encode(group), digest_size=8)
    digests = []
    for a in agents:  # the prefix's state copied: a third cheaper than hashing it again
        h = base.copy()
        h.update(encode(a))
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


_INIT = BidTable.__init__


def _p14_init(self: BidTable) -> None:
    _INIT(self)
    self.digest = None  # a new table's hash made from its rows at the next digest


_MAIN14_PATCHES = [(BidTable, "__init__", _p14_init), (BidTable, "add_new", _p14_add_new),
                   (BidTable, "_merge_rows", _p14_merge_rows),
                   (BidTable, "_merge_small", _p14_merge_small),
                   (BidTable, "_rows_changed", _p14_rows_changed), (BidTable, "drop", _p14_drop),
                   (BoardState, "_bids_hashes", _p14_bids_hashes),
                   (BoardState, "_role_bids", _p14_role_bids),
                   (BoardState, "holds_of", _p14_holds_of),
                   (BidTable, "_flush", _p14_flush), (TaskBoard, "add_bids", _p14_add_bids),
                   (TaskBoard, "_merge_all", _p14_merge_all),
                   (board_state, "holder_hashes", _p14_holder_hashes)]  # fmt: skip


@contextmanager
def main14_merge() -> Iterator[None]:
    """Every bid table merged and hashed, and every team award's rows made, as main did after
    the fourteenth pass (f08b930d) while inside (tables made inside must only be used inside)."""
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in _MAIN14_PATCHES]
    for cls, name, f in _MAIN14_PATCHES:
        setattr(cls, name, f)
    try:
        with main15_merge():
            yield
    finally:
        for cls, name, value in saved:
            setattr(cls, name, value)
