"""The bounded queue in front of the database: fleet messages wait here until they are written.

The listener puts every valid message in on the transport's thread; the service's loop takes
batches out, writes them, and gives a batch back (to the head, in order) when the database could
not take it. So while the database is down messages wait here, in order, up to ``max_messages``
and ``max_bytes`` (payload bytes).

Overflow policy (the outbox's, turned around): telemetry and health are periodic and downsampled
anyway (:data:`PERIODIC`: "telemetry" below means both), so

* a telemetry message that does not fit is dropped (``dropped.telemetry``, ``dropped.health``);
* any other message (presence, birth, death, event, result, command) evicts the oldest held
  telemetry until it fits (``evicted_telemetry``); with no telemetry left to evict it is dropped
  too (``dropped.{type}``).

A batch given back may take the queue over its bound by at most that batch; nothing is dropped for
it. Every count is in :meth:`HeldMessages.stats`.

With a :class:`~.spool.Spool`, :meth:`HeldMessages.put` appends the message
to it first (so that what the broker was acknowledged survives the process), and a message leaves
the spool when the service calls :meth:`HeldMessages.done` (written or refused by the database)
or when the overflow policy drops it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from edge_agent.fleet.protocol import Envelope
from edge_agent_host.hub.traffic.spool import Spool, SpoolRecord

__all__ = ["PERIODIC", "TELEMETRY", "Heard", "HeldMessages"]

TELEMETRY: Final = "telemetry"
#: The message types a full queue drops first: periodic, and downsampled in the database anyway.
PERIODIC: Final = frozenset({TELEMETRY, "health"})


@dataclass(frozen=True, slots=True)
class Heard:
    """One valid fleet message, as the listener enqueues it.

    ``node`` is the node the topic names (the sender; for a command, its target), ``received``
    the hub's wall clock at arrival, ``size`` the payload's bytes (what the queue's byte bound
    counts), ``verified`` whether a command's signature was checked against the hub keys,
    ``segment`` the spool segment holding it (-1: in memory only).
    """

    kind: str
    node: str
    envelope: Envelope
    retained: bool
    received: float
    size: int
    verified: bool = False
    segment: int = -1


class HeldMessages:
    """A bounded, thread-safe FIFO of :class:`Heard` messages (policy: module docstring)."""

    def __init__(self, max_messages: int, max_bytes: int, spool: Spool | None = None) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"bounds must be >= 1, got {max_messages}, {max_bytes}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.spool = spool
        self._telemetry: deque[tuple[int, Heard]] = deque()
        self._other: deque[tuple[int, Heard]] = deque()
        self._cond = threading.Condition(threading.RLock())
        self._ordinal = 0
        self._bytes = 0
        self._memory_only = 0
        self.accepted = 0
        self.evicted_telemetry = 0
        self.given_back = 0
        self.high_water = 0
        self.dropped: dict[str, int] = {}

    # producer side (the transport's thread) -------------------------------------------------
    def put(self, item: Heard, record: SpoolRecord | None = None) -> bool:
        """Hold ``item`` (spooling ``record``, the message as heard, first); False when the
        policy dropped it (and counted it)."""
        with self._cond:
            if record is not None and self.spool is not None:
                item = replace(item, segment=self.spool.append(record))
            if item.segment < 0:
                self._memory_only += 1
            if not self._fits(item.size):
                if item.kind in PERIODIC:
                    return self._drop(item)
                while self._telemetry and not self._fits(item.size):
                    _, old = self._telemetry.popleft()
                    self._bytes -= old.size
                    self.evicted_telemetry += 1
                    self._release((old,))
                if not self._fits(item.size):
                    return self._drop(item)
            self._ordinal += 1
            (self._telemetry if item.kind in PERIODIC else self._other).append(
                (self._ordinal, item)
            )
            self._bytes += item.size
            self.accepted += 1
            self.high_water = max(self.high_water, self._depth())
            self._cond.notify()
            return True

    def _fits(self, size: int) -> bool:
        return self._depth() < self.max_messages and self._bytes + size <= self.max_bytes

    def _drop(self, item: Heard) -> bool:
        self.dropped[item.kind] = self.dropped.get(item.kind, 0) + 1
        self._release((item,))
        return False

    def _release(self, items: Sequence[Heard]) -> None:
        segments = [item.segment for item in items]
        with self._cond:
            self._memory_only -= sum(1 for segment in segments if segment < 0)
        self.forget(segments)

    def forget(self, segments: Sequence[int]) -> None:
        """Release spooled records by segment number (one entry per record)."""
        if self.spool is not None:
            self.spool.release(list(segments))

    def _depth(self) -> int:
        return len(self._telemetry) + len(self._other)

    # consumer side (the service's loop) -----------------------------------------------------
    def take(self, max_items: int) -> list[Heard]:
        """Remove and return up to ``max_items`` messages, oldest first (arrival order)."""
        out: list[Heard] = []
        with self._cond:
            tel, other = self._telemetry, self._other
            while len(out) < max_items and (tel or other):
                source = tel if not other or (tel and tel[0][0] < other[0][0]) else other
                _, item = source.popleft()
                self._bytes -= item.size
                out.append(item)
        return out

    def give_back(self, items: Sequence[Heard]) -> None:
        """Put a batch that was not written back at the head, in its order (never dropped)."""
        if not items:
            return
        with self._cond:
            # Ordinals before every held one keep the merge in take() in arrival order.
            first = min(
                (q[0][0] for q in (self._telemetry, self._other) if q), default=self._ordinal + 1
            )
            for offset, item in enumerate(reversed(items), start=1):
                queue = self._telemetry if item.kind in PERIODIC else self._other
                queue.appendleft((first - offset, item))
                self._bytes += item.size
            self.given_back += len(items)
            self._cond.notify()

    def done(self, items: Sequence[Heard]) -> None:
        """``items`` (taken before) are stored or refused for good: out of the spool."""
        self._release(items)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for something to be held; whether something is."""
        with self._cond:
            if not self._depth():
                self._cond.wait(timeout_s)
            return self._depth() > 0

    def __len__(self) -> int:
        with self._cond:
            return self._depth()

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def stats(self) -> dict[str, int]:
        """Depth, bytes, bounds and counters (``dropped.{type}`` per message type)."""
        with self._cond:
            out = {
                "depth": self._depth(),
                "depth_telemetry": len(self._telemetry),
                "bytes": self._bytes,
                "max_messages": self.max_messages,
                "max_bytes": self.max_bytes,
                "accepted": self.accepted,
                "evicted_telemetry": self.evicted_telemetry,
                "given_back": self.given_back,
                "high_water": self.high_water,
                "memory_only": self._memory_only,
                "dropped": sum(self.dropped.values()),
            }
            out.update({f"dropped.{kind}": n for kind, n in sorted(self.dropped.items())})
            return out
