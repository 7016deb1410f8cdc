"""Preallocated circular histories for a group of agents.

A :class:`HistoryRing` keeps the last ``capacity`` ticks of a group of ``n_agents`` agents, one
*field* per kind of record (observations, actions, quantized beliefs, timestamps, ...). The caller
declares the fields; the ring only knows their shapes and dtypes::

    ring = HistoryRing(
        n_agents=1000,
        capacity=64,
        fields={
            "obs": ((2,), np.int16),      # (M,) outcome index per modality
            "action": ((1,), np.uint8),   # (F,) control per factor
            "qs": ((12,), np.uint8),      # (sum S_f,) quantized posterior over states
            "t": ((), np.float64),        # monotonic seconds
        },
    )
    ring.append(obs=obs, action=action, qs=qs, t=t)   # each (n_agents, *field_shape)
    recent = ring.window("obs", 16)                    # (16, n_agents, 2), oldest first

Memory layout: every field owns one *arena* of shape ``(capacity, n_agents, *field_shape)``.
It is time-major, so one append is one contiguous row write per field. Every field also owns a
*scratch* buffer of ``max_window`` rows (default: the capacity), used only when a requested window
wraps around the end of the arena. Both are allocated once, in ``__init__`` (and again only by
:meth:`HistoryRing.resize` and :meth:`HistoryRing.resize_agents`), so the exact footprint is known
before anything is allocated::

    bytes = (capacity + max_window) * n_agents * sum over fields of (prod(field_shape) * itemsize)

Groups that read windows every tick (neural policies reading their last ``T`` observations) set
``max_window=T``; groups that only record (Active Inference agents) set ``max_window=0`` and pay for
no scratch: a wrapped window is then returned as a fresh copy (fine off the tick path).

:meth:`HistoryRing.bytes_needed` computes it so that the memory budget can be reserved first.

Appends are O(1) and allocate nothing that outlives the call. Windows that do not wrap are
read-only views of the arena; windows that wrap are read-only views of the field's scratch buffer.
Either way a window is only valid until the next call that changes the ring (or, for a wrapped
window, the next :meth:`HistoryRing.window` call on the same field): copy it if you must keep it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from edge_agent.core.contract import StateReader
from edge_agent.errors import InputError

__all__ = ["FieldSpec", "HistoryRing"]

#: A field's per-agent shape and dtype, as passed to :class:`HistoryRing`.
FieldSpec = tuple[tuple[int, ...], DTypeLike]

#: Key of the lifetime append counter in :meth:`HistoryRing.state_dict`.
TOTAL_APPENDED_KEY = "_total_appended"


def _field_specs(
    fields: Mapping[str, FieldSpec],
) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Validate and normalise field declarations to ``name -> (shape, np.dtype)``."""
    if not isinstance(fields, Mapping) or len(fields) == 0:
        raise InputError("a history ring needs at least one field, e.g. {'obs': ((M,), np.int16)}")
    specs: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
    for name, spec in fields.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise InputError(
                f"history field name {name!r} must be a Python identifier not starting with '_'"
            )
        try:
            raw_shape, raw_dtype = spec
        except (TypeError, ValueError) as err:
            raise InputError(
                f"history field {name!r}: expected (shape, dtype), got {spec!r}"
            ) from err
        if not isinstance(raw_shape, tuple | list):
            raise InputError(f"history field {name!r}: shape {raw_shape!r} is not a tuple of ints")
        try:
            shape = tuple(operator.index(d) for d in raw_shape)
        except TypeError as err:
            raise InputError(
                f"history field {name!r}: shape {raw_shape!r} is not a tuple of ints"
            ) from err
        if any(d < 1 for d in shape):
            raise InputError(f"history field {name!r}: shape {shape} has a dimension below 1")
        try:
            dtype = np.dtype(raw_dtype)
        except TypeError as err:
            raise InputError(f"history field {name!r}: {raw_dtype!r} is not a dtype") from err
        if dtype.kind not in "biuf" or dtype.hasobject:
            raise InputError(
                f"history field {name!r}: dtype {dtype} is not a bool, integer or float dtype"
            )
        specs[name] = (shape, dtype)
    return specs


def _check_count(what: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def _copy_last_rows(src: np.ndarray, head: int, rows: int, dst: np.ndarray) -> None:
    """Copy the newest ``rows`` rows of arena ``src`` (next write at ``head``) to ``dst[:rows]``,
    oldest first. ``dst`` may have a different agent dimension: the leading common agents are
    copied."""
    capacity = src.shape[0]
    agents = min(src.shape[1], dst.shape[1])
    start = (head - rows) % capacity
    first = min(rows, capacity - start)  # rows from start to the end of the arena
    dst[:first, :agents] = src[start : start + first, :agents]
    if first < rows:
        dst[first:rows, :agents] = src[: rows - first, :agents]


def _rotate_rows(arena: np.ndarray, k: int) -> None:
    """Rotate ``arena``'s rows in place so that row ``k`` comes first (three reversals, one row
    of scratch: no copy of the arena)."""
    spare = np.empty(arena.shape[1:], dtype=arena.dtype)

    def reverse(lo: int, hi: int) -> None:  # rows [lo, hi)
        hi -= 1
        while lo < hi:
            spare[...] = arena[lo]
            arena[lo] = arena[hi]
            arena[hi] = spare
            lo, hi = lo + 1, hi - 1

    reverse(0, k)
    reverse(k, arena.shape[0])
    reverse(0, arena.shape[0])


class HistoryRing:
    """The last ``capacity`` records of ``n_agents`` agents, one preallocated arena per field.

    Parameters
    ----------
    n_agents:
        Agents in the group (may be 0); every appended row holds one record per agent.
    capacity:
        Rows kept (at least 1); older rows are overwritten.
    fields:
        ``name -> (field_shape, dtype)``. ``field_shape`` is the per-agent shape (``()`` for one
        scalar per agent); dtypes are bool, integer or float.
    """

    __slots__ = (
        "_arenas",
        "_capacity",
        "_head",
        "_len",
        "_max_window",
        "_n_agents",
        "_scratch",
        "_specs",
        "_total",
    )

    def __init__(
        self,
        n_agents: int,
        capacity: int,
        fields: Mapping[str, FieldSpec],
        *,
        max_window: int | None = None,
    ) -> None:
        self._specs = _field_specs(fields)
        self._n_agents = _check_count("n_agents", n_agents, 0)
        self._capacity = _check_count("capacity", capacity, 1)
        self._max_window = None if max_window is None else _check_count("max_window", max_window, 0)
        self._head = 0  # index of the row the next append writes
        self._len = 0  # valid rows, <= capacity
        self._total = 0  # rows appended over the ring's lifetime
        self._arenas = self._allocate(self._capacity, self._n_agents)
        self._scratch = self._allocate(self._scratch_rows(self._capacity), self._n_agents)

    def _scratch_rows(self, capacity: int) -> int:
        return capacity if self._max_window is None else min(self._max_window, capacity)

    def _allocate(self, capacity: int, n_agents: int) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((capacity, n_agents, *shape), dtype=dtype)
            for name, (shape, dtype) in self._specs.items()
        }

    # ----------------------------------------------------------------------------------- sizes
    @classmethod
    def bytes_needed(
        cls,
        n_agents: int,
        capacity: int,
        fields: Mapping[str, FieldSpec],
        *,
        max_window: int | None = None,
    ) -> int:
        """Exact bytes an instance with these arguments allocates (arenas plus scratch)."""
        specs = _field_specs(fields)
        n = _check_count("n_agents", n_agents, 0)
        cap = _check_count("capacity", capacity, 1)
        scratch = cap if max_window is None else min(_check_count("max_window", max_window, 0), cap)
        per_row_agent = sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())
        return (cap + scratch) * n * per_row_agent

    @property
    def nbytes(self) -> int:
        """Bytes held by the arenas and scratch buffers (equals :meth:`bytes_needed`)."""
        return sum(a.nbytes for a in self._arenas.values()) + sum(
            s.nbytes for s in self._scratch.values()
        )

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def n_agents(self) -> int:
        return self._n_agents

    @property
    def total_appended(self) -> int:
        """Rows appended since construction (not reset by :meth:`clear` or resizes)."""
        return self._total

    @property
    def fields(self) -> Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """The declared fields, ``name -> (field_shape, dtype)`` (read-only)."""
        return MappingProxyType(self._specs)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (
            f"HistoryRing(n_agents={self._n_agents}, capacity={self._capacity}, "
            f"len={self._len}, fields={list(self._specs)})"
        )

    # ---------------------------------------------------------------------------------- append
    def append(self, **rows: ArrayLike) -> None:
        """Write one row for every field: ``rows[name]`` is ``(n_agents, *field_shape)``.

        All fields must be given. Every value is checked before any is written, so a refused append
        leaves the ring unchanged. Values in the field's own dtype are copied straight into the
        arena (the fast path). Other dtypes are accepted when numpy calls the cast safe, when
        integer values fit the field's integer range (checked), or from one float to another
        (rounded); anything else raises InputError. Nothing is allocated that outlives the call.
        """
        if len(rows) != len(self._specs) or any(name not in rows for name in self._specs):
            missing = sorted(set(self._specs) - set(rows))
            unexpected = sorted(set(rows) - set(self._specs))
            raise InputError(
                f"append needs exactly the fields {sorted(self._specs)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        for name, (shape, dtype) in self._specs.items():
            value = rows[name]
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
                rows[name] = value
            expected = (self._n_agents, *shape)
            if value.shape != expected:
                raise InputError(f"{name} has shape {value.shape}, expected {expected}")
            if value.dtype != dtype:
                _check_cast(name, value, dtype)
        head = self._head
        for name, arena in self._arenas.items():
            np.copyto(arena[head], rows[name], casting="unsafe")
        self._head = (head + 1) % self._capacity
        if self._len < self._capacity:
            self._len += 1
        self._total += 1

    def append_one(self, field: str, value: np.ndarray) -> None:
        """:meth:`append` for a ring of one field, without its per-call bookkeeping when
        ``value`` is already ``(n_agents, *field_shape)`` in the field's dtype (a group's hot
        path); anything else goes through :meth:`append` and its checks."""
        spec = self._specs.get(field)
        if (
            spec is None
            or len(self._specs) != 1
            or not isinstance(value, np.ndarray)
            or value.dtype != spec[1]
            or value.shape != (self._n_agents, *spec[0])
        ):
            self.append(**{field: value})
            return
        head = self._head
        np.copyto(self._arenas[field][head], value)
        self._head = (head + 1) % self._capacity
        if self._len < self._capacity:
            self._len += 1
        self._total += 1

    def claim_one(self) -> int:
        """The index of the row the next append writes in every field's arena
        (:meth:`arena`), counted as appended: the caller writes that row now, before the ring
        is read (a group whose compiled pass copies the tick's observations there itself)."""
        head = self._head
        self._head = (head + 1) % self._capacity
        if self._len < self._capacity:
            self._len += 1
        self._total += 1
        return head

    def arena(self, field: str) -> np.ndarray:
        """Field ``field``'s arena ``(capacity, n_agents, *field_shape)``, as stored (writable:
        for a caller that writes the row :meth:`claim_one` claimed); a new array after
        :meth:`resize` and :meth:`resize_agents`."""
        return self._arena(field)

    # --------------------------------------------------------------------------------- reading
    def _arena(self, field: str) -> np.ndarray:
        try:
            return self._arenas[field]
        except KeyError as err:
            raise InputError(
                f"history has no field {field!r}; fields are {sorted(self._specs)}"
            ) from err

    def _window_length(self, length: int | None) -> int:
        if length is None:
            return self._len
        length = _check_count("window length", length, 0)
        if length > self._len:
            raise InputError(f"window length {length} exceeds the {self._len} valid rows")
        return length

    def window(self, field: str, length: int | None = None) -> np.ndarray:
        """The last ``length`` rows of ``field`` (default: all valid rows), oldest first.

        Returns a read-only ``(length, n_agents, *field_shape)`` array. When the window does not
        wrap around the end of the arena it is a view of the arena; when it wraps, the rows are
        copied into the field's preallocated scratch buffer and a view of that is returned. The
        result is only valid until the next append, resize or clear, and a wrapped result also only
        until the next ``window`` call on the same field. Copy it to keep it.
        """
        arena = self._arena(field)
        n = self._window_length(length)
        start = (self._head - n) % self._capacity
        if start + n <= self._capacity:
            out = arena[start : start + n]
        else:
            scratch = self._scratch[field]
            if n > scratch.shape[0]:  # longer than max_window: a fresh copy, off the tick path
                scratch = np.empty((n, *arena.shape[1:]), dtype=arena.dtype)
            _copy_last_rows(arena, self._head, n, scratch)
            out = scratch[:n]
        out.flags.writeable = False
        return out

    def latest(self, field: str) -> np.ndarray:
        """Read-only view of the newest row of ``field``: ``(n_agents, *field_shape)``."""
        arena = self._arena(field)
        if self._len == 0:
            raise InputError(f"history is empty: no latest {field!r} row yet")
        out: np.ndarray = arena[(self._head - 1) % self._capacity]
        out.flags.writeable = False
        return out

    def agent_window(self, field: str, agent: int, length: int | None = None) -> np.ndarray:
        """A fresh copy of the last ``length`` rows of one agent: ``(length, *field_shape)``.

        Meant for status and debugging, not for the tick path.
        """
        arena = self._arena(field)
        agent = _check_count("agent", agent, 0)
        if agent >= self._n_agents:
            raise InputError(f"agent {agent} is out of range for a group of {self._n_agents}")
        n = self._window_length(length)
        out = np.empty((n, *arena.shape[2:]), dtype=arena.dtype)
        start = (self._head - n) % self._capacity
        first = min(n, self._capacity - start)
        out[:first] = arena[start : start + first, agent]
        out[first:] = arena[: n - first, agent]
        return out

    # -------------------------------------------------------------------------------- resizing
    def resize(self, capacity: int) -> None:
        """Change the number of rows kept, keeping the newest ``min(len, capacity)`` in order.

        ``total_appended`` is unchanged. See :meth:`_reallocate` for the memory peak.
        """
        capacity = _check_count("capacity", capacity, 1)
        if capacity != self._capacity:
            self._reallocate(capacity, self._n_agents)

    def resize_agents(self, n_agents: int) -> None:
        """Change the agent dimension, keeping the rows of agents ``0 .. min(old, new) - 1``.

        Agents added by a grow have zero-filled rows for the ticks before they joined. The row
        order, ``len``, ``capacity`` and ``total_appended`` are unchanged.
        """
        n_agents = _check_count("n_agents", n_agents, 0)
        if n_agents != self._n_agents:
            self._reallocate(self._capacity, n_agents)

    def _reallocate(self, capacity: int, n_agents: int) -> None:
        """Move the newest rows into new buffers of ``(capacity, n_agents, ...)``, once.

        The old scratch is released first, so the peak is the old arenas plus the new arenas and
        scratch. If an allocation fails the ring is left as it was (MemoryError propagates).
        Windows returned earlier keep the old buffers alive: drop them to free the memory.
        """
        kept = min(self._len, capacity)
        self._scratch = {}
        try:
            arenas = self._allocate(capacity, n_agents)
            scratch = self._allocate(self._scratch_rows(capacity), n_agents)
        except MemoryError:
            self._scratch = self._allocate(self._scratch_rows(self._capacity), self._n_agents)
            raise
        for name, arena in self._arenas.items():
            _copy_last_rows(arena, self._head, kept, arenas[name])
        self._arenas = arenas
        self._scratch = scratch
        self._capacity = capacity
        self._n_agents = n_agents
        self._len = kept
        self._head = kept % capacity

    def clear(self) -> None:
        """Forget every row. ``total_appended`` and the allocated buffers are kept."""
        self._head = 0
        self._len = 0

    # ------------------------------------------------------------------------------ snapshots
    def state_dict(self) -> dict[str, np.ndarray]:
        """A self-contained snapshot: every field's valid rows oldest first (fresh copies,
        ``(len, n_agents, *field_shape)``) and ``"_total_appended"`` as a 0-d int64 array."""
        state: dict[str, np.ndarray] = {}
        for name, arena in self._arenas.items():
            rows = np.empty((self._len, *arena.shape[1:]), dtype=arena.dtype)
            _copy_last_rows(arena, self._head, self._len, rows)
            state[name] = rows
        state[TOTAL_APPENDED_KEY] = np.array(self._total, dtype=np.int64)
        return state

    def state_views(self) -> dict[str, np.ndarray]:
        """:meth:`state_dict` without copies: the arenas are first rotated in place so that
        their valid rows are oldest first (the ring's contents do not change; windows taken
        before are invalid), then each field is a read-only view of its valid rows. Valid until
        the ring next changes: for writing a snapshot at once, where copies of a large group's
        history (a million grid10 agents, 64 steps: 256 MB) would double it."""
        start = (self._head - self._len) % self._capacity
        if start:
            for arena in self._arenas.values():
                _rotate_rows(arena, start)
        self._head = self._len % self._capacity
        state: dict[str, np.ndarray] = {}
        for name, arena in self._arenas.items():
            view = arena[: self._len]
            view.flags.writeable = False
            state[name] = view
        state[TOTAL_APPENDED_KEY] = np.array(self._total, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict` snapshot into this ring.

        The snapshot must have exactly this ring's fields with the same dtypes, agent count and
        field shapes; it may hold more rows than ``capacity``, in which case the newest are kept.
        Everything is validated before anything changes.
        """
        expected_keys = {*self._specs, TOTAL_APPENDED_KEY}
        if set(state) != expected_keys:
            missing = sorted(expected_keys - set(state))
            unexpected = sorted(set(state) - expected_keys)
            raise InputError(
                f"history snapshot keys do not match the ring: missing {missing}, "
                f"unexpected {unexpected}"
            )
        reader = state if isinstance(state, StateReader) else None
        rows: int | None = None
        for name, (shape, dtype) in self._specs.items():
            if reader is not None:
                value_shape, value_dtype = reader.spec(name)
            else:
                value = state[name]
                if not isinstance(value, np.ndarray):
                    raise InputError(f"history snapshot field {name!r} is not an array")
                value_shape, value_dtype = value.shape, value.dtype
            if value_dtype != dtype:
                raise InputError(
                    f"history snapshot field {name!r} has dtype {value_dtype}, expected {dtype}"
                )
            tail = (self._n_agents, *shape)
            if len(value_shape) != 1 + len(tail) or value_shape[1:] != tail:
                raise InputError(
                    f"history snapshot field {name!r} has shape {value_shape}, "
                    f"expected (rows, {', '.join(map(str, tail))})"
                )
            if rows is None:
                rows = value_shape[0]
            elif value_shape[0] != rows:
                raise InputError(
                    f"history snapshot field {name!r} has {value_shape[0]} rows, "
                    f"other fields have {rows}"
                )
        total_arr = state[TOTAL_APPENDED_KEY]
        if (
            not isinstance(total_arr, np.ndarray)
            or total_arr.shape != ()
            or total_arr.dtype.kind not in "iu"
        ):
            raise InputError(
                f"history snapshot {TOTAL_APPENDED_KEY!r} must be a 0-d integer array, "
                f"got {total_arr!r}"
            )
        total = int(total_arr)
        n_rows = rows if rows is not None else 0
        if total < n_rows:
            raise InputError(
                f"history snapshot {TOTAL_APPENDED_KEY!r} is {total}, below its {n_rows} rows"
            )
        kept = min(n_rows, self._capacity)
        for name in self._specs:
            if reader is not None and kept == n_rows:  # straight in, no copy of it made
                reader.read_into(name, self._arenas[name][:kept])
            else:
                self._arenas[name][:kept] = state[name][n_rows - kept :]
        self._len = kept
        self._head = kept % self._capacity
        self._total = total


def _check_cast(name: str, value: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Refuse a value whose cast to the field's dtype would lose information."""
    src = value.dtype
    if np.can_cast(src, dtype, casting="safe"):
        return
    if src.kind in "biu" and dtype.kind in "iu":
        if value.size == 0:
            return
        info = np.iinfo(dtype)
        low, high = int(value.min()), int(value.max())
        if low < info.min or high > info.max:
            raise InputError(
                f"{name} has values in [{low}, {high}] that do not fit the field dtype {dtype} "
                f"[{info.min}, {info.max}]"
            )
        return
    if src.kind == "f" and dtype.kind == "f":
        return  # a narrower float rounds the value (float64 timestamps should stay float64)
    raise InputError(f"{name} has dtype {src}, expected {dtype} (a {src}->{dtype} cast loses data)")
