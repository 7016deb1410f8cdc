"""Durable store-and-forward for QoS 1 messages, in an append-only file of framed records.

Contract
--------
- Every message is stored here before it is sent, and it is deleted only when the broker
  acknowledged it (PUBACK). Nothing is kept in paho's or the broker's session memory.
- The file (:mod:`edge_agent.fleet.record_log`: records framed by their length and CRC32) holds
  one ``put`` record per message and ``delete`` records naming messages gone; the messages held
  are what the file says once read from the start. The open **transaction** is what was written
  since the last commit: its messages are in memory (and sent from there), the deletions of
  committed messages wait as a list. A commit appends them in one ``write``; with
  ``synchronous_full=True`` it is also ``fsync``-ed.
- Durability is per class (``ClassPolicy.durable``), because an SD card wears with every write:

  - **durable** classes (event, result, coordination): a transaction holding one is committed
    after ``commit_every`` writes, after ``commit_interval_s`` (checked on the next call), on
    :meth:`Outbox.commit_due` (the FleetLink calls it at the end of every tick) and at the start
    of :meth:`Outbox.pump`, so such a message never goes on the wire before it is committed. **A
    durable message is durable once ``commit_due()`` (or ``flush()``) returned.**
  - **relaxed** classes (telemetry, action): held in the open transaction and sent from it at
    once; the transaction is committed every ``relaxed_commit_interval_s`` (or with the next
    durable message). When every message written since the last commit has been acknowledged by
    then and nothing else changed, nothing is written (counted as a ``rollback``): with a healthy
    broker, relaxed traffic writes nothing to storage. Relaxed messages still in flight then
    stay in the next transaction. A relaxed message survives a broker outage like any other; a
    crash (SIGKILL, power cut) loses the relaxed messages that were neither acknowledged nor
    committed: at most ``relaxed_commit_interval_s`` of them.

  A committed transaction survives the daemon being SIGKILLed (the ``write`` returned: the data
  are in the OS page cache, what SQLite's WAL with ``synchronous=NORMAL`` gave before); a power
  cut can lose the last transactions not yet written back by the kernel, unless
  ``synchronous_full=True`` (``fsync`` on every commit). Deletions of acked messages are
  written with the next commit, so a crash can re-send a few acked messages: delivery is
  at-least-once. A crash in the middle of a commit leaves a torn last record: it is dropped when
  the file is read (counted ``torn``, logged), so that transaction is lost, as an uncommitted one.
- The file is **compacted** (rewritten with only the messages held, crash safely) after a commit
  when it is over :data:`COMPACT_MIN_BYTES` and more than twice what those messages take.
- Bounded in bytes (payload + topic per message). Per-class policy: ``drop_oldest`` classes
  (telemetry) make room by deleting their own oldest messages and, when nothing of theirs is left
  to drop, drop the new message (counted ``dropped``); other classes (event, action, result,
  coordination) are kept: a new one first evicts drop-oldest messages, and if it still does not
  fit it is refused with :class:`OutboxFullError`, counted ``refused``, and
  :attr:`Outbox.full_alarm` is raised until the depth falls below ``low_water`` of the bound.
- Per-class TTL on the wall clock: expired messages are deleted (counted ``expired``) when met by
  the pump and in a sweep every ``expire_every_s``. A clock step moves expiry with it.
- Our own in-flight window: at most ``max_inflight`` sent-but-unacked messages. After a reconnect
  (:meth:`Outbox.on_connection_lost`), everything unacked is sent again from the oldest.
- A PUBACK with an error reason code (>= 0x80, e.g. not authorised) deletes the message and counts
  it ``rejected``: retrying cannot succeed; 0x97 (quota exceeded) keeps it for the next session.
  The log says so by the reason's name, at most one line per ``refusal_log_interval_s`` (60 s):
  the first refusal at once, then how many more, per reason (a revoked node has every message
  refused and would otherwise write a line for each).

What stays in memory: an index of the messages held in columns
(:mod:`edge_agent.fleet.outbox_index`: per message its id, expiry, size, class and topic as
indexes into interned tables, where its record is in the file; 49 bytes a message held, measured
with tracemalloc over 20,000, at most 53); the payloads and record fields of the messages not in
the file: the open transaction's (and, while volatile, every message's). A committed payload is
read from the file (``pread``, checked against its CRC) when it is sent. Opening reads the whole
file once (its records decoded into the columns one at a time, the payloads not kept).

Damage and storage errors (reported to the :class:`~edge_agent.state_faults.StateFaults` it is
given, part ``outbox``; nothing here stops the daemon):

- A file that is damaged -- not an outbox (another kind of file, an old SQLite outbox in its
  place), a record it cannot decode, a directory in its place -- is moved aside as
  ``NAME.corrupt-STAMP`` at open, or when a message read to be sent fails its CRC later, and a
  fresh one is started: the messages it held are lost (counted ``recovered``).
- ``legacy``: the SQLite outbox of earlier versions (``outbox.sqlite3``). When it exists and the
  file does not, its messages are read once (:func:`~edge_agent.fleet.old_sqlite.read_old`,
  the only time ``sqlite3`` is imported), written to the new file, and the old database is
  deleted; a damaged one is moved aside.
- When the storage refuses the file at open (a full disk, a read-only file system) the outbox
  runs *volatile*: in memory, bounded by ``min(max_bytes, VOLATILE_MAX_BYTES)``, and
  :meth:`Outbox.flush` tries the file again every ``retry_interval_s``; when it opens, the
  messages in memory are written to it (the in-flight window restarts: at-least-once).
- When a commit fails for want of space, the transaction's new messages are lost (counted
  ``lost``) and what was committed before stays and is sent; :attr:`Outbox.commit_failing` says
  so until a commit (or a probe write every ``retry_interval_s``) succeeds again, so that the
  caller can send what matters without durability meanwhile.

Single-threaded: one owner thread calls every method (the daemon loop, via the FleetLink).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.comms.base import reason_text
from edge_agent.fleet.old_sqlite import read_old, remove_old
from edge_agent.fleet.outbox_index import GONE, RETAIN, OutboxIndex
from edge_agent.fleet.outbox_records import (
    HEAD,
    MAGIC,
    PROBE,
    Reader,
    delete_record,
    put_record,
)
from edge_agent.fleet.record_log import FRAME, LogDamagedError, RecordLog, write_log
from edge_agent.fsutil import not_a_file
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

PUBACK_QUOTA_EXCEEDED: Final = 0x97
_REFUSAL_HINTS: Final = {
    0x87: " (the broker's ACL does not let this identity write that topic: a revoked identity, "
    "or a topic outside its rights, docs/security.md)",
}
#: The most a volatile (in-memory) outbox holds, whatever ``max_bytes`` says: it is RAM.
VOLATILE_MAX_BYTES: Final = 4 * 1024 * 1024
PART: Final = "outbox"
#: A relaxed-only transaction is committed after this many writes at the latest.
RELAXED_MAX_WRITES: Final = 65536
#: The file is compacted only when it is larger than this (and than twice what it holds).
COMPACT_MIN_BYTES: Final = 1024 * 1024


class OutboxFullError(EdgeAgentError):
    """The outbox is full of messages that must be kept; the new one was refused."""


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    drop_oldest: bool
    """True: when full, older messages of this class are dropped (telemetry). False: keep."""
    ttl_s: float
    """Messages older than this are deleted unsent."""
    durable: bool = True
    """True: committed before it is sent (end of tick). False: committed at the relaxed interval
    (see the module docstring): a crash can lose the unacknowledged ones of that interval."""


DEFAULT_POLICIES: Final[Mapping[str, ClassPolicy]] = MappingProxyType(
    {
        # A telemetry sample is a gauge the next one supersedes.
        "telemetry": ClassPolicy(drop_oldest=True, ttl_s=3600.0, durable=False),
        "event": ClassPolicy(drop_oldest=False, ttl_s=7 * 86400.0),
        # An action is worth little once late: sent at once, never held up by a commit.
        "action": ClassPolicy(drop_oldest=False, ttl_s=300.0, durable=False),
        "result": ClassPolicy(drop_oldest=False, ttl_s=86400.0),
        # Task messages (docs/coordination.md): releases and syncs must not be dropped, but a
        # bid or a ledger digest is worthless after minutes.
        "coordination": ClassPolicy(drop_oldest=False, ttl_s=600.0),
    }
)

Send = Callable[[str, bytes, bool], Hashable | None]
"""``send(topic, payload, retain)`` -> a handle for the ACK, or None when it could not be sent."""


@dataclass(slots=True)
class _Inflight:
    row_id: int
    size: int
    topic: str


_Kept = tuple[bytes, float, str, str, bool, float]
"""A message not in the file: its payload, created, class, topic, retain, expires (its record's
fields, so that a commit writes it without reading the index)."""


class Outbox:
    """Durable, bounded QoS 1 message store with an in-flight window. See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        policies: Mapping[str, ClassPolicy] = DEFAULT_POLICIES,
        max_inflight: int = 16,
        commit_every: int = 256,
        commit_interval_s: float = 0.5,
        relaxed_commit_interval_s: float = 300.0,
        expire_every_s: float = 5.0,
        low_water: float = 0.8,
        synchronous_full: bool = False,
        clock: Callable[[], float] = time.time,
        faults: StateFaults | None = None,
        retry_interval_s: float = 60.0,
        refusal_log_interval_s: float = 60.0,
        legacy: str | Path | None = None,
    ) -> None:
        if max_bytes < 1024:
            raise EdgeAgentError(f"outbox max_bytes is {max_bytes}, need >= 1024")
        if not 1 <= max_inflight <= 65535 or commit_every < 1 or not 0 < low_water <= 1:
            raise EdgeAgentError("outbox needs 1 <= max_inflight <= 65535, commit_every >= 1")
        if not policies:
            raise EdgeAgentError("outbox needs at least one message class policy")
        self.path = Path(path)
        self.legacy = Path(legacy) if legacy is not None else None
        self.max_bytes = max_bytes
        self.policies = dict(policies)
        self.max_inflight = max_inflight
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.relaxed_commit_interval_s = relaxed_commit_interval_s
        self.expire_every_s = expire_every_s
        self.low_water = low_water
        self.synchronous_full = synchronous_full
        self.faults = faults if faults is not None else StateFaults()
        self.retry_interval_s = retry_interval_s
        self.refusal_log_interval_s = refusal_log_interval_s
        self._clock = clock
        # Refusals counted since the last log line, by reason code: (count, first row, last row).
        self._refusals: dict[int, tuple[int, int, int]] = {}
        self._refusal_line_at: float | None = None
        self._inflight: dict[Hashable, _Inflight] = {}
        self._inflight_rows: set[int] = set()
        self._cursor = 0
        self._writes = 0
        self._txn_started = 0.0
        self._next_expire = 0.0
        self.full_alarm = False
        self.stored = self.sent = self.acked = self.rejected = 0
        self.expired = self.dropped = self.refused = 0
        self.lost = self.recovered = self.torn = self.migrated = 0
        self.compactions = 0
        self.commit_failing = False
        # Every message held, in columns sorted by id (ids only grow: oldest first), and the
        # payload and creation time of those not in the file (uncommitted, or volatile).
        self._index = OutboxIndex()
        self._mem: dict[int, _Kept] = {}
        self._next_id = 1
        self._file_bytes = 0  # what the messages in the file take there (their frames)
        # The open transaction: messages it stored that are still here (in memory), committed
        # messages it deleted (their deletion is written at the commit), whether it holds a
        # durable message, whether it is open at all.
        self._txn_open = False
        self._txn_live: set[int] = set()
        self._txn_dead: list[int] = []
        self._durable_pending = False
        self.commits = self.rollbacks = 0
        self._retry_at = time.monotonic() + retry_interval_s
        self.depth_rows = self.depth_bytes = 0
        self._log = self._open_file()
        self.volatile = self._log is None
        if self.volatile:
            logger.warning(
                "outbox %s: running in memory (at most %d bytes, lost on a restart) until the "
                "file can be written",
                self.path,
                self.capacity,
            )

    # Opening --------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """The bound in bytes now: ``max_bytes``, or less while volatile (it is RAM then)."""
        return min(self.max_bytes, VOLATILE_MAX_BYTES) if self.volatile else self.max_bytes

    @property
    def low_water_bytes(self) -> int:
        return int(self.capacity * self.low_water)

    def _open_file(self) -> RecordLog | None:
        """The file, its messages read into :attr:`_index` (after moving a damaged one aside,
        migrating an old SQLite outbox); None when the storage refuses it (then the outbox runs
        volatile and retries later)."""
        legacy = self.legacy
        old = legacy is not None and os.path.lexists(legacy) and not os.path.lexists(self.path)
        if old and legacy is not None and not self._migrate(legacy):
            return None
        for _ in range(2):
            reason = "not a regular file" if not_a_file(self.path) else ""
            if not reason:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    reader = Reader()
                    log, _ = RecordLog.open_with(self.path, MAGIC, reader)
                except LogDamagedError as err:
                    reason = str(err)
                except OSError as err:
                    self.faults.storage_error(PART, err, f"open {self.path}")
                    return None
                else:
                    try:
                        if log.dropped_bytes:  # a crash in the middle of a commit
                            self.torn += 1
                        log.drop_tail()
                    except OSError as err:
                        log.close()
                        self.faults.storage_error(PART, err, f"open {self.path}")
                        return None
                    self._adopt(reader.index)
                    self._remove_legacy()
                    return log
            moved = self.faults.move_aside(PART, self.path, reason)
            if moved is None:
                return None
            self.recovered += 1
        return None

    def _adopt(self, index: OutboxIndex) -> None:
        """Hold the messages the file said (nothing is held before: a volatile outbox's messages
        are renumbered after them by :meth:`_become_durable`)."""
        self._index = index
        self._mem = {}
        held = index.held()
        self._file_bytes = int(np.sum(self._lengths(held))) + FRAME.size * len(held)
        if len(held):
            self._next_id = max(self._next_id, int(index.ids[held[-1]]) + 1)
        self._recount()

    def _lengths(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The lengths of the ``put`` records of the messages at ``positions``."""
        index = self._index
        extra = np.asarray(index.class_bytes, np.int64) + HEAD
        return index.size[positions].astype(np.int64) + extra[index.cls[positions]]

    def _length(self, pos: int) -> int:
        index = self._index
        return index.size.item(pos) + HEAD + index.class_bytes[index.cls.item(pos)]

    def _migrate(self, legacy: Path) -> bool:
        """Write an old SQLite outbox's messages to the new file and delete it (a damaged one
        is moved aside). False when the storage refuses it."""

        def read(conn: sqlite3.Connection) -> list[bytes]:
            import sqlite3  # noqa: PLC0415  (imported by read_old already: for its errors)

            (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            query = (
                "SELECT cls, topic, payload, retain, created, expires FROM messages ORDER BY id"
            )
            return [
                put_record(
                    n, cls, topic, payload, retain=bool(retain), created=created, expires=expires
                )
                for n, (cls, topic, payload, retain, created, expires) in enumerate(
                    conn.execute(query), start=1
                )
            ]

        old = read_old(legacy, read, faults=self.faults, part=PART)
        if old is None:
            return False
        if old.value is None:  # damaged: moved aside
            self.recovered += 1
            return True
        records = old.value
        try:  # all of it or nothing: the old database goes only once the new file is whole
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_log(self.path, MAGIC, records)
        except OSError as err:
            self.faults.storage_error(PART, err, f"write {self.path}")
            return False
        self.migrated = len(records)
        logger.info("outbox: %d message(s) moved from %s to %s", len(records), legacy, self.path)
        return True

    def _remove_legacy(self) -> None:
        """The old SQLite outbox, once its messages are in the file (or it was moved aside)."""
        if self.legacy is not None:
            remove_old(self.legacy)

    def _recount(self) -> None:
        index = self._index
        held = index.held()
        self.depth_rows = len(held)
        self.depth_bytes = int(np.sum(index.size[held], dtype=np.int64))

    # Damage and storage errors --------------------------------------------------------------
    def _failed(self, err: OSError, action: str) -> None:
        """A write failed (the storage refused it): the transaction's new messages are lost, a
        storage error is counted; the file is as it was before the write."""
        index = self._index
        found = index.find_many(np.fromiter(self._txn_live, np.int64, len(self._txn_live)))
        lost = np.sort(found[found >= 0])
        for row_id in self._txn_live:
            self._mem.pop(row_id, None)
        self.depth_rows -= len(lost)
        self.depth_bytes -= int(np.sum(index.size[lost], dtype=np.int64))
        index.remove(lost)
        self.lost += len(lost)
        self._txn_reset()
        if len(lost):
            self.on_connection_lost()  # rows in flight may be gone: resend what is left
        self.faults.storage_error(PART, err, action)
        if not self.volatile:
            self.commit_failing = True
            self._retry_at = time.monotonic() + self.retry_interval_s

    def _start_fresh(self, reason: str) -> None:
        """The open file turned out damaged: close it, move it aside, open a new one."""
        self.lost += self.depth_rows
        if self._log is not None:
            self._log.close()
        self._log = None
        self._index = OutboxIndex()
        self._mem = {}
        self._file_bytes = 0
        self._txn_reset()
        if not self.volatile:
            moved = self.faults.move_aside(PART, self.path, reason)
            if moved is not None:
                self.recovered += 1
                self._log = self._open_file()
        self.volatile = self._log is None
        self.commit_failing = False
        self.on_connection_lost()
        self._recount()

    def _retry(self) -> None:
        """Every ``retry_interval_s`` while the storage refused us: a volatile outbox tries the
        file again (and moves its messages there); a failing one probes with a small write."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + self.retry_interval_s
        if self.volatile:
            self._become_durable()
            return
        assert self._log is not None
        try:
            self._log.append([PROBE], sync=self.synchronous_full)
        except OSError as err:
            self._failed(err, "write (a probe)")
            return
        self.commit_failing = False
        self.faults.storage_ok(PART)

    def _become_durable(self) -> None:
        before = (self._index, self._mem, self._next_id)
        old, mem = self._index, self._mem
        self._index, self._mem = OutboxIndex(), {}
        self._next_id = 1
        log = self._open_file()
        if log is None:  # back as they were
            self._index, self._mem, self._next_id = before
            self._recount()
            return
        index = self._index
        held = old.held().tolist()
        base = log.size
        records: list[bytes] = []
        for pos in held:  # after what the file holds, under new ids, in their order
            row_id = self._next_id + len(records)
            payload, created, cls, topic, retain, expires = mem[int(old.ids[pos])]
            records.append(
                put_record(
                    row_id, cls, topic, payload, retain=retain, created=created, expires=expires
                )
            )
        try:
            log.append(records, sync=self.synchronous_full)
        except OSError as err:
            log.close()
            self._index, self._mem, self._next_id = before
            self._file_bytes = 0
            self._recount()
            self.faults.storage_error(PART, err, f"copy the messages in memory to {self.path}")
            return
        for pos, record in zip(held, records, strict=True):
            cls, topic = old.classes[int(old.cls[pos])], old.topics[int(old.topic[pos])]
            retain, expires = bool(old.flags[pos] & RETAIN), float(old.expires[pos])
            index.append(
                self._next_id,
                cls,
                topic,
                expires=expires,
                at=base,
                size=int(old.size[pos]),
                retain=retain,
            )
            self._next_id += 1
            base += FRAME.size + len(record)
            self._file_bytes += FRAME.size + len(record)
        self._log = log
        self.volatile = False
        self._txn_reset()
        self.on_connection_lost()  # the messages have new ids: the window starts again
        self._recount()
        self.faults.storage_ok(PART)
        logger.info(
            "outbox %s: on disk again, %d message(s) moved there from memory", self.path, len(held)
        )

    # Writing --------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, cls: str, *, retain: bool = False) -> int | None:
        """Store one message; returns its id, or None when a drop-oldest class had no room.

        Raises :class:`OutboxFullError` when a keep class does not fit.
        """
        policy = self.policies.get(cls)
        if policy is None:
            raise EdgeAgentError(f"unknown outbox class {cls!r}; known: {sorted(self.policies)}")
        size = len(payload) + len(topic.encode())  # the records' own overhead is not counted
        limit = self.capacity
        if size > limit:
            self.refused += 1
            raise OutboxFullError(
                f"a {size}-byte {cls} message can never fit the {limit}-byte outbox"
            )
        now = self._clock()
        if self.depth_bytes + size > limit:
            self._make_room(size, cls if policy.drop_oldest else None, now)
        if self.depth_bytes + size > limit:
            if policy.drop_oldest:
                self.dropped += 1
                return None
            self.refused += 1
            if not self.full_alarm:
                logger.error(
                    "outbox %s is full (%d bytes): refusing %s", self.path, self.depth_bytes, cls
                )
            self.full_alarm = True
            raise OutboxFullError(
                f"outbox full: {self.depth_bytes} of {limit} bytes used by messages that "
                f"must be kept; a {size}-byte {cls} message was refused"
            )
        self._begin()
        row_id = self._next_id
        self._next_id += 1
        self._index.append(
            row_id, cls, topic, expires=now + policy.ttl_s, at=-1, size=size, retain=retain
        )
        self._mem[row_id] = (bytes(payload), now, cls, topic, retain, now + policy.ttl_s)
        self._txn_live.add(row_id)
        if policy.durable:
            self._durable_pending = True
        self.stored += 1
        self.depth_rows += 1
        self.depth_bytes += size
        self._wrote()
        return row_id

    def _make_room(self, size: int, own_cls: str | None, now: float) -> None:
        """Expire, then drop oldest messages of drop-oldest classes until ``size`` fits."""
        self.expire(now)
        if own_cls is not None:
            victims = [own_cls]
        else:
            victims = [name for name, p in self.policies.items() if p.drop_oldest]
        limit = self.capacity
        for name in victims:
            if self.depth_bytes + size <= limit:
                return
            index = self._index
            cls = index.class_index(name)
            n = index.n
            mine = (index.cls[:n] == cls) & ((index.flags[:n] & GONE) == 0)
            for row_id in self._inflight_rows:
                pos = index.find(row_id)
                if pos >= 0:
                    mine[pos] = False
            positions = np.flatnonzero(mine)
            if not len(positions):
                continue
            # The oldest first, until the new message fits (or all of them).
            freed = np.cumsum(index.size[positions], dtype=np.int64)
            fits = np.flatnonzero(self.depth_bytes - freed + size <= limit)
            doomed = positions if not len(fits) else positions[: int(fits[0]) + 1]
            self._delete_at(doomed, len(doomed))
            self.dropped += len(doomed)

    def _delete(self, ids: list[int]) -> None:
        index = self._index
        if len(ids) == 1:  # an ack, a rejection, an expiry met by the pump
            pos = index.find(ids[0])
            self._delete_at([pos] if pos >= 0 else [], 1)
            return
        found = index.find_many(np.asarray(ids, np.int64))
        self._delete_at(np.unique(found[found >= 0]), len(ids))

    def _delete_at(self, positions: npt.NDArray[np.int64] | list[int], writes: int) -> None:
        """Delete the messages at ``positions`` (held ones, each once, in order), counted as
        ``writes`` writes of the transaction."""
        self._begin()
        index = self._index
        if isinstance(positions, list):  # one message (or none): without array operations
            for pos in positions:
                row_id, size = index.ids.item(pos), index.size.item(pos)
                if index.at.item(pos) < 0:
                    self._txn_live.discard(row_id)  # never written: nothing to undo in the file
                    self._mem.pop(row_id, None)
                else:
                    self._txn_dead.append(row_id)  # a committed message deleted: keep that
                    self._file_bytes -= FRAME.size + self._length(pos)
                self.depth_rows -= 1
                self.depth_bytes -= size
            index.remove(positions)
            self._deleted(writes)
            return
        in_file = index.at[positions] >= 0
        for row_id in index.ids[positions[~in_file]].tolist():
            self._txn_live.discard(row_id)  # never written: nothing to undo in the file
            self._mem.pop(row_id, None)
        if in_file.any():  # committed messages deleted: keep that
            kept = positions[in_file]
            self._txn_dead.extend(index.ids[kept].tolist())
            self._file_bytes -= int(np.sum(self._lengths(kept))) + FRAME.size * len(kept)
        self.depth_rows -= len(positions)
        self.depth_bytes -= int(np.sum(index.size[positions], dtype=np.int64))
        index.remove(positions)
        self._deleted(writes)

    def _deleted(self, writes: int) -> None:
        self._wrote(writes)
        if self.full_alarm and self.depth_bytes <= self.low_water_bytes:
            self.full_alarm = False
            logger.info("outbox %s is below its low-water mark again", self.path)

    def _begin(self) -> None:
        if not self._txn_open:
            self._txn_open = True
            self._txn_started = time.monotonic()
            self._writes = 0

    def _wrote(self, n: int = 1) -> None:
        self._writes += n
        age = time.monotonic() - self._txn_started
        if self._durable_pending:
            if self._writes >= self.commit_every or age >= self.commit_interval_s:
                self.flush()
        elif self._writes >= RELAXED_MAX_WRITES:
            self.flush()

    def _txn_reset(self) -> None:
        self._txn_open = False
        self._txn_live.clear()
        self._txn_dead.clear()
        self._durable_pending = False
        self._writes = 0

    def commit_due(self) -> None:
        """Commit when the open transaction holds a durable message or the relaxed interval
        has passed (the FleetLink calls this at the end of every tick). Never raises."""
        relaxed_only = self._txn_open and not self._durable_pending
        if relaxed_only and time.monotonic() - self._txn_started < self.relaxed_commit_interval_s:
            if self.volatile or self.commit_failing:
                self._retry()
            return
        self.flush()

    def flush(self) -> None:
        """Commit everything written so far. Messages put before this call are now durable.

        A transaction whose messages were all acknowledged or are still in flight, and that
        deleted nothing committed before, writes nothing (a ``rollback``; the ones in flight
        stay in the next transaction). Never raises for the storage: a failed commit is counted
        (see the module docstring). While the storage refuses writes, this is also where they
        are retried.
        """
        if self.volatile:
            self._retry()  # to the file, with what is in memory (committed or not)
        if self._txn_open:
            keep = bool(self._txn_dead) or self._durable_pending
            carry = [] if keep else [r for r in self._txn_live if r in self._inflight_rows]
            if not keep and len(carry) == len(self._txn_live):
                self.rollbacks += 1
                self._txn_reset()
                if carry:  # in flight, not yet acknowledged: still held, in a new transaction
                    self._begin()
                    self._txn_live.update(carry)
                    return
            else:
                try:
                    self._commit()
                except OSError as err:
                    self._failed(err, "commit")
                    return
                self.commits += 1
            if self.commit_failing:
                self.commit_failing = False
                self.faults.storage_ok(PART)
        elif self.commit_failing:
            self._retry()  # nothing to commit: probe with a small write when due
        self._txn_reset()

    def _commit(self) -> None:
        """Append the transaction: its messages still held, the deletions of committed ones.
        Raises :class:`OSError` (nothing was written)."""
        log = self._log
        if log is None:  # volatile: the messages stay in memory
            return
        index, mem = self._index, self._mem
        live = sorted(self._txn_live)
        records: list[bytes] = []
        for row_id in live:
            payload, created, cls, topic, retain, expires = mem[row_id]
            records.append(
                put_record(
                    row_id, cls, topic, payload, retain=retain, created=created, expires=expires
                )
            )
        if self._txn_dead:
            records.append(delete_record(self._txn_dead))
        base = log.size
        log.append(records, sync=self.synchronous_full)
        if len(live) <= 16:
            positions = [index.find(row_id) for row_id in live]
        else:
            positions = index.find_many(np.asarray(live, np.int64)).tolist()
        for row_id, pos, record in zip(live, positions, records, strict=False):
            del mem[row_id]
            index.at[pos] = base
            base += FRAME.size + len(record)
            self._file_bytes += FRAME.size + len(record)
        if not mem:  # a dict keeps its largest table: a backlog's would stay allocated
            self._mem = {}
        self._txn_reset()
        if log.size > max(COMPACT_MIN_BYTES, 2 * self._file_bytes):
            self._compact(log)

    def _compact(self, log: RecordLog) -> None:
        """Rewrite the file with the messages it holds only (crash safely); a failure leaves
        it as it was (counted)."""
        index = self._index
        held = index.held()
        committed = held[index.at[held] >= 0]
        places = index.at[committed].tolist()
        lengths = self._lengths(committed)

        def records() -> Iterator[bytes]:
            for at, length in zip(places, lengths.tolist(), strict=True):
                yield log.read(at, length)

        try:
            log.rewrite(records(), sync=True)
        except OSError as err:
            self.faults.storage_error(PART, err, f"compact {self.path}")
            return
        except LogDamagedError as err:
            self._start_fresh(f"{err} (while compacting)")
            return
        frames = lengths + FRAME.size
        ends = np.cumsum(frames)
        index.at[committed] = len(MAGIC) + ends - frames
        self._file_bytes = int(ends[-1]) if len(ends) else 0
        self.compactions += 1

    def _payload(self, row_id: int, pos: int | None = None) -> bytes:
        """A message's payload: in memory, or read from the file. Raises
        :class:`LogDamagedError` when its record there is damaged, :class:`OSError`."""
        kept = self._mem.get(row_id)
        if kept is not None:
            return kept[0]
        assert self._log is not None
        index = self._index
        if pos is None:
            pos = index.find(row_id)
        cls, topic = index.cls.item(pos), index.topics[index.topic.item(pos)]
        record = self._log.read(index.at.item(pos), self._length(pos))
        return record[HEAD + index.class_bytes[cls] + len(topic.encode()) :]

    # Sending --------------------------------------------------------------------------------
    def pump(self, send: Send) -> int:
        """Send stored messages, oldest first, while the in-flight window has room.

        Returns how many were sent. Stops at the first ``send`` that returns None (not
        connected). An :class:`EdgeAgentError` from ``send`` (e.g. an invalid topic) rejects that
        message for good.
        """
        now = self._clock()
        if now >= self._next_expire:
            self.expire(now)
        if self._refusals_due(now):
            self._log_refusals(now)
        self.commit_due()  # a durable message is committed before it is sent
        sent = 0
        while len(self._inflight) < self.max_inflight:
            # The first messages after the cursor, oldest first; those at or before it are the
            # ones in flight (and kept for quota).
            batch = self._index.after(self._cursor, self.max_inflight - len(self._inflight))
            if not batch:
                break
            index = self._index
            for row_id in batch:
                pos = index.find(row_id)
                if pos < 0 or row_id in self._inflight_rows:
                    self._cursor = row_id
                    continue
                if index.expires.item(pos) <= now:
                    self._cursor = row_id
                    self._delete([row_id])
                    self.expired += 1
                    continue
                size = index.size.item(pos)
                kept = self._mem.get(row_id)
                if kept is not None:
                    payload, topic, retain = kept[0], kept[3], kept[4]
                else:
                    topic = index.topics[index.topic.item(pos)]
                    retain = bool(index.flags.item(pos) & RETAIN)
                    try:
                        payload = self._payload(row_id, pos)
                    except (LogDamagedError, OSError) as err:
                        self._unreadable(err)
                        return sent
                try:
                    handle = send(topic, payload, retain)
                except EdgeAgentError as err:
                    logger.error("outbox: rejecting row %d for %s: %s", row_id, topic, err)
                    self._cursor = row_id
                    self._delete([row_id])
                    self.rejected += 1
                    continue
                if handle is None:
                    return sent
                self._cursor = row_id
                self._inflight[handle] = _Inflight(row_id, size, topic)
                self._inflight_rows.add(row_id)
                self.sent += 1
                sent += 1
        return sent

    def _unreadable(self, err: LogDamagedError | OSError) -> None:
        """A message's record could not be read back: damage starts a fresh file; an I/O
        error is a storage error (the message stays and is tried again)."""
        if isinstance(err, LogDamagedError):
            self._start_fresh(f"{err} (while reading a message to send)")
        else:
            self.faults.storage_error(PART, err, "read a message")

    def topic_in_flight(self, handle: Hashable) -> str | None:
        """The topic of the message in flight under ``handle`` (None: not one of ours)."""
        entry = self._inflight.get(handle)
        return None if entry is None else entry.topic

    def on_ack(self, handle: Hashable, reason_code: int = 0) -> bool:
        """A PUBACK arrived; delete the message. False when ``handle`` is not one of ours."""
        entry = self._inflight.pop(handle, None)
        if entry is None:
            return False
        self._inflight_rows.discard(entry.row_id)
        if reason_code == PUBACK_QUOTA_EXCEEDED:
            return True  # stays stored; sent again after the next reconnect
        if reason_code >= 0x80:
            self.rejected += 1
            self._log_refusal(entry.row_id, reason_code)
        else:
            self.acked += 1
        self._delete([entry.row_id])
        return True

    def _log_refusal(self, row_id: int, code: int) -> None:
        """Say a refusal by its reason's name: at once when no line was written for
        ``refusal_log_interval_s``, otherwise counted for the next line (:meth:`_refusals_due`)."""
        now = self._clock()
        if self._refusals_due(now):
            self._log_refusals(now)
        if self._refusal_line_at is None:
            logger.error(
                "outbox: the broker refused row %d: %s%s",
                row_id,
                reason_text(code),
                _REFUSAL_HINTS.get(code, ""),
            )
            self._refusal_line_at = now
            return
        n, first, _ = self._refusals.get(code, (0, row_id, row_id))
        self._refusals[code] = (n + 1, first, row_id)

    def _refusals_due(self, now: float) -> bool:
        """An interval has passed since the last refusal line (or the clock went back)."""
        at = self._refusal_line_at
        return at is not None and not at <= now < at + self.refusal_log_interval_s

    def _log_refusals(self, now: float) -> None:
        """One line per reason for the refusals counted since the last line; the next refusal
        is logged at once when there were none."""
        since = now - (self._refusal_line_at or now)
        for code, (n, first, last) in sorted(self._refusals.items()):
            logger.error(
                "outbox: the broker refused %d more row%s (%d..%d) in the last %.0f s: %s%s",
                n,
                "" if n == 1 else "s",
                first,
                last,
                since,
                reason_text(code),
                _REFUSAL_HINTS.get(code, ""),
            )
        self._refusal_line_at = now if self._refusals else None
        self._refusals.clear()

    def on_connection_lost(self) -> None:
        """Forget the in-flight window: every unacked message is sent again, oldest first."""
        self._inflight.clear()
        self._inflight_rows.clear()
        self._cursor = 0

    def expire(self, now: float | None = None) -> int:
        """Delete messages past their TTL (not those in flight); returns how many."""
        now = self._clock() if now is None else now
        self._next_expire = now + self.expire_every_s
        index = self._index
        n = index.n
        if not index.live:
            return 0
        due = (index.expires[:n] <= now) & ((index.flags[:n] & GONE) == 0)
        for row_id in self._inflight_rows:
            pos = index.find(row_id)
            if pos >= 0:
                due[pos] = False
        doomed = np.flatnonzero(due)
        if not len(doomed):
            return 0
        self._delete_at(doomed, len(doomed))
        self.expired += len(doomed)
        return len(doomed)

    # Reading --------------------------------------------------------------------------------
    def payloads(self) -> Iterator[bytes]:
        """Every stored message's payload, oldest first (at start: the FleetLink reads the
        newest session number any of them carries)."""
        index = self._index
        for row_id in index.ids[index.held()].tolist():
            if index is not self._index or index.find(row_id) < 0:
                continue
            try:
                yield self._payload(row_id)
            except (LogDamagedError, OSError) as err:
                self._unreadable(err)
                return

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def stats(self) -> dict[str, int | float | bool]:
        """Counters and depths; ``uncommitted_rows`` and ``uncommitted_s`` are what a crash
        would lose now: relaxed messages neither acknowledged nor committed, and how long the
        transaction holding them has been open."""
        return {
            "stored": self.stored,
            "sent": self.sent,
            "acked": self.acked,
            "rejected": self.rejected,
            "expired": self.expired,
            "dropped": self.dropped,
            "refused": self.refused,
            "depth_rows": self.depth_rows,
            "depth_bytes": self.depth_bytes,
            "inflight": len(self._inflight),
            "max_bytes": self.max_bytes,
            "full": self.full_alarm,
            "lost": self.lost,
            "recovered": self.recovered,
            "volatile": self.volatile,
            "commit_failing": self.commit_failing,
            "uncommitted_rows": len(self._txn_live),
            "uncommitted_s": round(time.monotonic() - self._txn_started, 1)
            if self._txn_live
            else 0.0,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "torn": self.torn,
            "file_bytes": self._log.size if self._log is not None else 0,
        }

    def close(self) -> None:
        """Commit and close. The outbox cannot be used afterwards."""
        try:
            self.flush()
        finally:
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
