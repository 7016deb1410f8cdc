"""Durable store-and-forward for QoS 1 messages, in SQLite (WAL).

Contract
--------
- Every message is inserted here before it is sent, and its row is deleted only when the broker
  acknowledged it (PUBACK). Nothing is kept in paho's or the broker's session memory.
- Durability is per class (``ClassPolicy.durable``), because an SD card wears with every commit
  (a commit costs ~16 KB of page writes whatever the message size):

  - **durable** classes (event, result, coordination): a transaction holding one is committed
    after ``commit_every`` writes, after ``commit_interval_s`` (checked on the next call), on
    :meth:`Outbox.commit_due` (the FleetLink calls it at the end of every tick) and at the start
    of :meth:`Outbox.pump`, so such a message never goes on the wire before it is committed. **A
    durable message is durable once ``commit_due()`` (or ``flush()``) returned.**
  - **relaxed** classes (telemetry, action): written to the same table in the open transaction
    and sent from it at once; the transaction is committed every ``relaxed_commit_interval_s``
    (or with the next durable message). When every row written since the last commit has been
    acknowledged by then and nothing else changed, the transaction is rolled back instead: with a
    healthy broker, relaxed traffic writes nothing to storage. A relaxed message survives a
    broker outage like any other; a crash (SIGKILL, power cut) loses the relaxed messages that
    were neither acknowledged nor committed: at most ``relaxed_commit_interval_s`` of them.

  With WAL and ``synchronous=NORMAL`` a committed transaction survives the daemon being
  SIGKILLed (the WAL is in the OS page cache); a power cut can lose the last transactions before
  a WAL checkpoint, unless ``synchronous_full=True`` (fsync on every commit). Deletions of acked
  rows are committed with the next commit, so a crash can re-send a few acked messages: delivery
  is at-least-once.
- Bounded in bytes (payload + topic per row). Per-class policy: ``drop_oldest`` classes
  (telemetry) make room by deleting their own oldest rows and, when nothing of theirs is left to
  drop, drop the new message (counted ``dropped``); other classes (event, action, result,
  coordination) are kept: a new one first evicts drop-oldest rows, and if it still does not fit
  it is refused with :class:`OutboxFullError`, counted ``refused``, and :attr:`Outbox.full_alarm`
  is raised until the depth falls below ``low_water`` of the bound.
- Per-class TTL on the wall clock: expired rows are deleted (counted ``expired``) when met by the
  pump and in a sweep every ``expire_every_s``. A clock step moves expiry with it.
- Our own in-flight window: at most ``max_inflight`` sent-but-unacked rows. After a reconnect
  (:meth:`Outbox.on_connection_lost`), everything unacked is sent again from the oldest row.
- A PUBACK with an error reason code (>= 0x80, e.g. not authorised) deletes the row and counts it
  ``rejected``: retrying cannot succeed; 0x97 (quota exceeded) keeps it for the next session.
  The log says so by the reason's name, at most one line per ``refusal_log_interval_s`` (60 s):
  the first refusal at once, then how many more, per reason (a revoked node has every message
  refused and would otherwise write a line for each).

Damage and storage errors (reported to the :class:`~edge_agent.state_faults.StateFaults` it is
given, part ``outbox``; nothing here stops the daemon):

- A database that is damaged -- not a database, corrupt (SQLite's ``quick_check`` runs at open),
  another schema, a directory in its place -- is moved aside as ``NAME.corrupt-STAMP`` with its
  ``-wal``/``-shm`` files, at open or when SQLite reports corruption later, and a fresh one is
  started: the messages it held are lost (counted ``recovered``).
- When the storage refuses the database at open (a full disk, a read-only file system) the outbox
  runs *volatile*: in memory, bounded by ``min(max_bytes, VOLATILE_MAX_BYTES)``, and
  :meth:`Outbox.flush` tries the file again every ``retry_interval_s``; when it opens, the rows in
  memory are copied into it (the in-flight window restarts: at-least-once).
- When a commit fails for want of space, the transaction's new messages are lost (counted
  ``lost``) and what was committed before stays and is sent; :attr:`Outbox.commit_failing` says
  so until a commit (or a probe write every ``retry_interval_s``) succeeds again, so that the
  caller can send what matters without durability meanwhile.

Single-threaded: one owner thread calls every method (the daemon loop, via the FleetLink).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.comms.base import reason_text
from edge_agent.fsutil import SQLITE_SIDECARS, not_a_file, sqlite_damaged
from edge_agent.state_faults import StateFaults

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
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
_COLUMNS: Final = ("id", "cls", "topic", "payload", "retain", "created", "expires", "size")


class OutboxFullError(EdgeAgentError):
    """The outbox is full of messages that must be kept; the new one was refused."""


class OutboxStorageError(EdgeAgentError):
    """The storage refused to store the message (a full disk); it was not kept."""


class _DamagedError(Exception):
    """The database opened but is not one this build can use (schema, quick_check)."""


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    drop_oldest: bool
    """True: when full, older rows of this class are dropped (telemetry). False: keep, refuse."""
    ttl_s: float
    """Rows older than this are deleted unsent."""
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cls TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_class ON messages (cls, id);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires);
"""


@dataclass(slots=True)
class _Inflight:
    row_id: int
    size: int
    topic: str


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
    ) -> None:
        if max_bytes < 1024:
            raise EdgeAgentError(f"outbox max_bytes is {max_bytes}, need >= 1024")
        if not 1 <= max_inflight <= 65535 or commit_every < 1 or not 0 < low_water <= 1:
            raise EdgeAgentError("outbox needs 1 <= max_inflight <= 65535, commit_every >= 1")
        if not policies:
            raise EdgeAgentError("outbox needs at least one message class policy")
        self.path = Path(path)
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
        self.lost = self.recovered = 0
        self.commit_failing = False
        # The open transaction: rows it inserted that are still there, whether it holds a durable
        # message, whether it changed rows committed before (then it must be committed).
        self._txn_live: set[int] = set()
        self._txn_first_id = 0
        self._durable_pending = False
        self._txn_keep = False
        self.commits = self.rollbacks = 0
        self._retry_at = time.monotonic() + retry_interval_s
        self.depth_rows = self.depth_bytes = 0
        conn = self._open_file()
        self.volatile = conn is None
        self._conn = conn if conn is not None else self._connect(":memory:")
        if self.volatile:
            logger.warning(
                "outbox %s: running in memory (at most %d bytes, lost on a restart) until the "
                "file can be written",
                self.path,
                self.capacity,
            )
        self._recount()

    # Opening --------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """The bound in bytes now: ``max_bytes``, or less while volatile (it is RAM then)."""
        return min(self.max_bytes, VOLATILE_MAX_BYTES) if self.volatile else self.max_bytes

    @property
    def low_water_bytes(self) -> int:
        return int(self.capacity * self.low_water)

    def _open_file(self) -> sqlite3.Connection | None:
        """The database file, after moving a damaged one aside; None when the storage refuses
        it (then the outbox runs volatile and retries later)."""
        for _ in range(2):
            reason = "not a regular file" if not_a_file(self.path) else ""
            if not reason:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    return self._connect(self.path)
                except _DamagedError as err:
                    reason = str(err)
                except (sqlite3.DatabaseError, OSError) as err:
                    if isinstance(err, OSError) or not sqlite_damaged(err, opening=True):
                        self.faults.storage_error(PART, err, f"open {self.path}")
                        return None
                    reason = f"{type(err).__name__}: {err}"
            moved = self.faults.move_aside(PART, self.path, reason, sidecars=SQLITE_SIDECARS)
            if moved is None:
                return None
            self.recovered += 1
        return None

    def _connect(self, target: str | Path) -> sqlite3.Connection:
        """Open ``target`` (a path, or ``:memory:``), check it and create the schema."""
        durable = target != ":memory:"
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            if durable:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.warning("outbox %s: journal_mode is %s, not WAL", target, mode)
                sync = "FULL" if self.synchronous_full else "NORMAL"
                conn.execute(f"PRAGMA synchronous={sync}")
                (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
                if check != "ok":
                    raise _DamagedError(f"quick_check: {check}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _DamagedError(f"schema version {version}, this build reads {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
            columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(messages)"))
            if columns != _COLUMNS:
                raise _DamagedError(f"a messages table with columns {columns}, not this outbox's")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _recount(self) -> None:
        rows, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM messages"
        ).fetchone()
        self.depth_rows = rows
        self.depth_bytes = size

    # Damage and storage errors --------------------------------------------------------------
    def _failed(self, err: sqlite3.DatabaseError, action: str) -> None:
        """A statement failed: roll the transaction back, then move a damaged database aside
        and start fresh, or count a storage error. The transaction's new messages are lost."""
        with contextlib.suppress(sqlite3.DatabaseError):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        self.lost += len(self._txn_live)
        had_txn_rows = bool(self._txn_live)
        self._txn_reset()
        if had_txn_rows:
            self.on_connection_lost()  # rows in flight may be gone: resend what is left
        if sqlite_damaged(err, opening=False):
            self._start_fresh(f"{type(err).__name__}: {err} (while trying to {action})")
            return
        self.faults.storage_error(PART, err, action)
        if not self.volatile:
            self.commit_failing = True
            self._retry_at = time.monotonic() + self.retry_interval_s
        try:
            self._recount()
        except sqlite3.DatabaseError as again:
            if sqlite_damaged(again, opening=False):
                self._start_fresh(f"{type(again).__name__}: {again}")

    def _start_fresh(self, reason: str) -> None:
        """The open database turned out damaged: close it, move it aside, open a new one."""
        lost = self.depth_rows
        with contextlib.suppress(sqlite3.DatabaseError):
            self._conn.close()
        conn = None
        if not self.volatile:
            moved = self.faults.move_aside(PART, self.path, reason, sidecars=SQLITE_SIDECARS)
            if moved is not None:
                self.recovered += 1
                conn = self._open_file()
        self.volatile = conn is None
        self._conn = conn if conn is not None else self._connect(":memory:")
        self.commit_failing = False
        self.lost += lost
        self.on_connection_lost()
        self._recount()

    def _retry(self) -> None:
        """Every ``retry_interval_s`` while the storage refused us: a volatile outbox tries the
        file again (and moves its rows there); a failing one probes with a small write."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + self.retry_interval_s
        if self.volatile:
            self._become_durable()
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            self._failed(err, "write (a probe)")
            return
        self.commit_failing = False
        self.faults.storage_ok(PART)

    def _become_durable(self) -> None:
        conn = self._open_file()
        if conn is None:
            return
        rows = self._conn.execute(
            "SELECT cls, topic, payload, retain, created, expires, size FROM messages ORDER BY id"
        ).fetchall()
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO messages (cls, topic, payload, retain, created, expires, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            conn.close()
            self.faults.storage_error(PART, err, f"copy the messages in memory to {self.path}")
            return
        self._conn.close()
        self._conn = conn
        self.volatile = False
        self._txn_reset()
        self.on_connection_lost()  # the rows have new ids: the window starts again
        self._recount()
        self.faults.storage_ok(PART)
        logger.info(
            "outbox %s: on disk again, %d message(s) moved there from memory", self.path, len(rows)
        )

    # Writing --------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, cls: str, *, retain: bool = False) -> int | None:
        """Store one message; returns its row id, or None when a drop-oldest class had no room.

        Raises :class:`OutboxFullError` when a keep class does not fit.
        """
        policy = self.policies.get(cls)
        if policy is None:
            raise EdgeAgentError(f"unknown outbox class {cls!r}; known: {sorted(self.policies)}")
        size = len(payload) + len(topic.encode())  # SQLite's own overhead is not counted
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
        try:
            self._begin()
            cur = self._conn.execute(
                "INSERT INTO messages (cls, topic, payload, retain, created, expires, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cls, topic, bytes(payload), int(retain), now, now + policy.ttl_s, size),
            )
        except sqlite3.DatabaseError as err:
            self._failed(err, "store a message")
            self.lost += 1
            raise OutboxStorageError(f"outbox {self.path}: cannot store a {cls}: {err}") from err
        if cur.lastrowid is None:
            raise EdgeAgentError("SQLite did not report the new outbox row id")
        if not self._txn_live and not self._txn_first_id:
            self._txn_first_id = cur.lastrowid
        self._txn_live.add(cur.lastrowid)
        if policy.durable:
            self._durable_pending = True
        self.stored += 1
        self.depth_rows += 1
        self.depth_bytes += size
        self._wrote()
        return cur.lastrowid

    def _make_room(self, size: int, own_cls: str | None, now: float) -> None:
        """Expire, then drop oldest rows of drop-oldest classes until ``size`` fits."""
        self.expire(now)
        if own_cls is not None:
            victims = [own_cls]
        else:
            victims = [name for name, p in self.policies.items() if p.drop_oldest]
        limit = self.capacity
        for name in victims:
            if self.depth_bytes + size <= limit:
                return
            rows = self._select("SELECT id, size FROM messages WHERE cls = ? ORDER BY id", (name,))
            doomed: list[tuple[int]] = []
            freed = 0
            for row_id, row_size in rows:
                if row_id in self._inflight_rows:
                    continue
                doomed.append((row_id,))
                freed += row_size
                if self.depth_bytes - freed + size <= limit:
                    break
            if doomed:
                self._delete(doomed, freed)
                self.dropped += len(doomed)

    def _select(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        """Rows of a query; none when the database failed (handled by :meth:`_failed`)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as err:
            self._failed(err, "read messages")
            return []

    def _delete(self, ids: list[tuple[int]], size: int) -> None:
        try:
            self._begin()
            self._conn.executemany("DELETE FROM messages WHERE id = ?", ids)
        except sqlite3.DatabaseError as err:
            self._failed(err, "delete messages")  # they stay, and are sent again: at-least-once
            return
        for (row_id,) in ids:
            if row_id in self._txn_live:
                self._txn_live.discard(row_id)
            else:
                self._txn_keep = True  # a committed row deleted: keep that
        self.depth_rows -= len(ids)
        self.depth_bytes -= size
        self._wrote(len(ids))
        if self.full_alarm and self.depth_bytes <= self.low_water_bytes:
            self.full_alarm = False
            logger.info("outbox %s is below its low-water mark again", self.path)

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")
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
        self._txn_live.clear()
        self._txn_first_id = 0
        self._durable_pending = self._txn_keep = False
        self._writes = 0

    def commit_due(self) -> None:
        """Commit when the open transaction holds a durable message or the relaxed interval
        has passed (the FleetLink calls this at the end of every tick). Never raises."""
        relaxed_only = self._conn.in_transaction and not self._durable_pending
        if relaxed_only and time.monotonic() - self._txn_started < self.relaxed_commit_interval_s:
            if self.volatile or self.commit_failing:
                self._retry()
            return
        self.flush()

    def flush(self) -> None:
        """Commit everything written so far. Messages put before this call are now durable.

        A transaction whose rows were all acknowledged, and that changed nothing committed
        before, is rolled back instead: nothing of it needs to reach storage.
        Never raises for the storage: a failed commit is counted (see the module docstring).
        While the storage refuses writes, this is also where they are retried.
        """
        if self.volatile:
            self._retry()  # to the file, with what is in memory (committed or not)
        if self._conn.in_transaction:
            keep = self._txn_keep or self._durable_pending
            carry = [] if keep else [r for r in self._txn_live if r in self._inflight_rows]
            needless = not keep and len(carry) == len(self._txn_live)
            try:
                rows = self._carried(carry)
                self._conn.execute("ROLLBACK" if needless else "COMMIT")
            except sqlite3.DatabaseError as err:
                self._failed(err, "commit")
                return
            if needless:
                self.rollbacks += 1
                if self._txn_first_id:  # its row ids are free again: send them when reused
                    self._cursor = min(self._cursor, self._txn_first_id - 1)
                self._txn_reset()
                if rows:
                    self._carry_over(rows)
                    return
            else:
                self.commits += 1
            if self.commit_failing:
                self.commit_failing = False
                self.faults.storage_ok(PART)
        elif self.commit_failing:
            self._retry()  # nothing to commit: probe with a small write when due
        self._txn_reset()

    def _carried(self, row_ids: list[int]) -> list[tuple[Any, ...]]:
        """The rows of relaxed messages still in flight, read before a rollback drops them."""
        if not row_ids:
            return []
        rows: list[tuple[Any, ...]] = []
        for row_id in sorted(row_ids):
            rows.extend(
                self._conn.execute(
                    "SELECT id, cls, topic, payload, retain, created, expires, size "
                    "FROM messages WHERE id = ?",
                    (row_id,),
                ).fetchall()
            )
        return rows

    def _carry_over(self, rows: list[tuple[Any, ...]]) -> None:
        """After a rollback: the relaxed messages that were in flight (sent, not yet acked) go
        into a new transaction, under new ids that their in-flight entries now point to. So a
        broker that goes away before acknowledging them still finds them here."""
        by_row = {entry.row_id: handle for handle, entry in self._inflight.items()}
        try:
            self._begin()
            for old_id, cls, topic, payload, retain, created, expires, size in rows:
                cur = self._conn.execute(
                    "INSERT INTO messages (cls, topic, payload, retain, created, expires, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (cls, topic, payload, retain, created, expires, size),
                )
                new_id = cur.lastrowid
                assert new_id is not None
                if not self._txn_first_id:
                    self._txn_first_id = new_id
                self._txn_live.add(new_id)
                self._cursor = max(self._cursor, new_id)  # already sent
                handle = by_row.get(old_id)
                if handle is not None:
                    self._inflight[handle] = _Inflight(new_id, size, topic)
                self._inflight_rows.discard(old_id)
                self._inflight_rows.add(new_id)
        except sqlite3.DatabaseError as err:
            self._failed(err, "carry messages in flight over")

    # Sending --------------------------------------------------------------------------------
    def pump(self, send: Send) -> int:
        """Send stored rows, oldest first, while the in-flight window has room.

        Returns how many were sent. Stops at the first ``send`` that returns None (not
        connected). An :class:`EdgeAgentError` from ``send`` (e.g. an invalid topic) rejects that
        row for good.
        """
        now = self._clock()
        if now >= self._next_expire:
            self.expire(now)
        if self._refusals_due(now):
            self._log_refusals(now)
        self.commit_due()  # a durable message is committed before it is sent
        sent = 0
        while len(self._inflight) < self.max_inflight:
            rows = self._select(
                "SELECT id, topic, payload, retain, expires, size FROM messages "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (self._cursor, self.max_inflight - len(self._inflight)),
            )
            if not rows:
                break
            for row_id, topic, payload, retain, expires, size in rows:
                if row_id in self._inflight_rows:
                    self._cursor = row_id
                    continue
                if expires <= now:
                    self._cursor = row_id
                    self._delete([(row_id,)], size)
                    self.expired += 1
                    continue
                try:
                    handle = send(topic, payload, bool(retain))
                except EdgeAgentError as err:
                    logger.error("outbox: rejecting row %d for %s: %s", row_id, topic, err)
                    self._cursor = row_id
                    self._delete([(row_id,)], size)
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

    def topic_in_flight(self, handle: Hashable) -> str | None:
        """The topic of the message in flight under ``handle`` (None: not one of ours)."""
        entry = self._inflight.get(handle)
        return None if entry is None else entry.topic

    def on_ack(self, handle: Hashable, reason_code: int = 0) -> bool:
        """A PUBACK arrived; delete the row. False when ``handle`` is not one of ours."""
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
        self._delete([(entry.row_id,)], entry.size)
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
        """Forget the in-flight window: every unacked row is sent again, oldest first."""
        self._inflight.clear()
        self._inflight_rows.clear()
        self._cursor = 0

    def expire(self, now: float | None = None) -> int:
        """Delete rows past their TTL (not those in flight); returns how many."""
        now = self._clock() if now is None else now
        self._next_expire = now + self.expire_every_s
        rows = self._select("SELECT id, size FROM messages WHERE expires <= ?", (now,))
        doomed = [(row_id,) for row_id, _ in rows if row_id not in self._inflight_rows]
        if not doomed:
            return 0
        size = sum(s for row_id, s in rows if row_id not in self._inflight_rows)
        self._delete(doomed, size)
        self.expired += len(doomed)
        return len(doomed)

    # Reading --------------------------------------------------------------------------------
    def payloads(self) -> Iterator[bytes]:
        """Every stored message's payload, oldest first (at start: the FleetLink reads the
        newest session number any of them carries)."""
        for (payload,) in self._select("SELECT payload FROM messages ORDER BY id", ()):
            yield bytes(payload)

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
        }

    def close(self) -> None:
        """Commit and close. The outbox cannot be used afterwards."""
        try:
            self.flush()
        finally:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
