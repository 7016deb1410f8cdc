"""The ledger's holder ids as main made them before the batched merge (ec728b6a): a dict of
``(node id, group id, agent)`` tuples, made one agent at a time, and the per-``(node, group)``
sorted maps kept only by :meth:`TaskBoard._holders_of`. The oracle the batched merge is compared
with to the bit (tests/unit/coordination/test_batched_holders.py), and what the formation's
one-process A/B puts back (:func:`old_holders`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination import board_state
from edge_agent.coordination.board_state import BoardState
from edge_agent.coordination.ledger import TaskBoard

_NO_INTS = np.empty(0, dtype=np.int64)


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


class OldHoldersBoard(TaskBoard):
    """A :class:`TaskBoard` whose holder ids are made and looked up as before the batch."""

    _new_holders = _new_holders  # type: ignore[assignment]
    _holders_of = _holders_of
    _holder_id = _holder_id


@contextmanager
def old_holders() -> Iterator[None]:
    """Every :class:`TaskBoard` made and merged as before the batch while inside (one process's
    A/B: boards made inside must only be used inside)."""
    saved = {name: TaskBoard.__dict__.get(name) for name in ("_new_holders", "_holders_of",
                                                             "_holder_id")}  # fmt: skip
    TaskBoard._new_holders = _new_holders  # type: ignore[method-assign,assignment]
    TaskBoard._holders_of = _holders_of  # type: ignore[method-assign]
    TaskBoard._holder_id = _holder_id  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(TaskBoard, name)
            else:
                setattr(TaskBoard, name, value)
