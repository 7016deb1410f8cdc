"""The held messages on disk: what the hub acknowledged to the broker but has not stored yet.

paho acknowledges a QoS 1 message (PUBACK) when the hub's message callback returns; from then on
the broker and the node's outbox have forgotten it. So the listener appends every message it
holds to this spool *before* returning, and the service releases it once the database has it
(written or refused) or the queue's overflow policy dropped it. A hub that is killed (SIGKILL,
the systemd watchdog, the OOM killer) loses nothing it acknowledged: at the next start the
records still in the spool are heard again. A segment is kept whole until every record in it is
released, so a few records stored before the kill may be heard again too: the writes are
idempotent, nothing is counted twice.

Files: ``{state_dir}/spool/NNNNNNNNNN.spool``, appended to one at a time; a new segment starts
when the current one passes :data:`SEGMENT_BYTES`. A segment whose every record was released is
deleted (the current one is truncated instead), so with a healthy database the spool stays near
empty. Record: ``crc32 (4) | payload length (4) | received (float64) | retain (1) | topic length
(2) | topic | payload`` (big-endian), the CRC over everything after it; a record cut short by a
power cut ends that segment's replay (counted ``torn``).

Durability: an appended record is in the OS page cache at once, which survives the process being
killed. Surviving a power cut needs an fsync: :meth:`Spool.sync` runs every ``[queue]
spool_sync_interval_s`` (0: after every record), so a power cut loses at most that window; its
rows and age are :meth:`Spool.stats` ``unsynced`` and ``unsynced_s``.

When the disk refuses a record (full, read-only) the message is still held, in memory only:
``errors`` counts it, :attr:`Spool.durable` is False until an append succeeds again, and the
service says so in its status and log.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

__all__ = ["SEGMENT_BYTES", "Spool", "SpoolRecord"]

SEGMENT_BYTES: Final = 8 * 1024 * 1024
_HEAD = struct.Struct(">IIdBH")
_SUFFIX = ".spool"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One message as the broker delivered it, with the hub's clock at arrival."""

    topic: str
    payload: bytes
    retain: bool
    received: float


class Spool:
    """An append-only journal of held messages in segments (see the module docstring).

    Thread-safe: the transport's thread appends, the service's loop releases and syncs.
    """

    def __init__(self, directory: Path, *, sync_interval_s: float = 1.0) -> None:
        self.directory = directory
        self.sync_interval_s = sync_interval_s
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._fd = -1
        self._lock_fd = -1
        self._segment = 0
        self._size = 0
        self._unsynced = 0
        self._unsynced_since: float | None = None
        self._last_sync = time.monotonic()
        self.durable = True
        self.appended = 0
        self.released = 0
        self.replayed = 0
        self.torn = 0
        self.errors = 0
        self.syncs = 0
        self.last_error = ""

    # start: what a previous process left -------------------------------------------------------
    def open(self) -> list[tuple[int, SpoolRecord]]:
        """Create and lock the directory, read what earlier runs left (``(segment, record)``,
        oldest first; each stays pending until released) and open a new segment for appends.
        Raises OSError when the directory cannot be made or read, or another process holds
        it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise OSError(err.errno, "another edge-agent-hub process uses this spool") from err
        left: list[tuple[int, SpoolRecord]] = []
        for number, path in self._segments():
            count = 0
            for record in self._read(path):
                left.append((number, record))
                count += 1
            if count:
                self._pending[number] = count
            else:
                path.unlink(missing_ok=True)
            self._segment = max(self._segment, number)
        self.replayed = len(left)
        with self._lock:
            self._new_segment()
        return left

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            stem = path.name[: -len(_SUFFIX)]
            if stem.isdigit():
                out.append((int(stem), path))
        return sorted(out)

    def _read(self, path: Path) -> Iterator[SpoolRecord]:
        data = path.read_bytes()
        at = 0
        while at + _HEAD.size <= len(data):
            crc, size, received, retain, topic_len = _HEAD.unpack_from(data, at)
            end = at + _HEAD.size + topic_len + size
            if end > len(data) or zlib.crc32(data[at + 4 : end]) != crc:
                break
            body = at + _HEAD.size
            try:
                topic = data[body : body + topic_len].decode()
            except UnicodeDecodeError:
                break
            yield SpoolRecord(topic, data[body + topic_len : end], bool(retain), received)
            at = end
        if at != len(data):
            self.torn += 1
            logger.warning(
                "spool %s: %d bytes at its end are not a whole record (a power cut while it "
                "was written?): ignored",
                path,
                len(data) - at,
            )

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:010d}{_SUFFIX}"

    def _new_segment(self) -> None:
        """Close the current segment and start the next (under the lock)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if not self._pending.get(self._segment):
                self._pending.pop(self._segment, None)
                self._path(self._segment).unlink(missing_ok=True)
        self._segment += 1
        self._size = 0
        self._fd = os.open(
            self._path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600
        )

    # the transport's thread ----------------------------------------------------------------
    def append(self, record: SpoolRecord) -> int:
        """Store ``record``; its segment number (to release it with), or -1 when the disk
        refused it (the message is then held in memory only)."""
        topic = record.topic.encode()
        rest = (
            _HEAD.pack(0, len(record.payload), record.received, int(record.retain), len(topic))[4:]
            + topic
            + record.payload
        )
        data = struct.pack(">I", zlib.crc32(rest)) + rest
        with self._lock:
            try:
                if self._fd < 0 or self._size >= SEGMENT_BYTES:
                    self._new_segment()
                os.write(self._fd, data)
            except OSError as err:
                return self._refused(err)
            self._size += len(data)
            self._pending[self._segment] = self._pending.get(self._segment, 0) + 1
            self.appended += 1
            self._unsynced += 1
            if self._unsynced_since is None:
                self._unsynced_since = time.monotonic()
            if not self.durable:
                self.durable = True
                logger.warning("spool %s takes records again", self.directory)
            segment = self._segment
        if self.sync_interval_s <= 0:
            self.sync()
        return segment

    def _refused(self, err: OSError) -> int:
        self.errors += 1
        self.last_error = f"{err.strerror or err}"
        if self.durable:
            self.durable = False
            logger.error(
                "spool %s refuses records (%s): held messages are in memory only, a killed hub "
                "would lose them",
                self.directory,
                self.last_error,
            )
        if self._fd >= 0:  # a partly written record would tear the segment: start another
            os.close(self._fd)
            self._fd = -1
        return -1

    # the service's loop ----------------------------------------------------------------------
    def release(self, segments: Iterator[int] | list[int]) -> None:
        """The records of these segment numbers (one entry per record) are stored or dropped."""
        with self._lock:
            for segment in segments:
                if segment < 0:
                    continue
                left = self._pending.get(segment, 0) - 1
                self.released += 1
                if left > 0:
                    self._pending[segment] = left
                    continue
                self._pending.pop(segment, None)
                if segment != self._segment:
                    self._path(segment).unlink(missing_ok=True)
                elif self._fd >= 0 and self._size:
                    try:
                        os.ftruncate(self._fd, 0)
                    except OSError as err:
                        logger.debug("spool: cannot truncate %s: %s", self.directory, err)
                    else:
                        self._size = 0
                        self._unsynced = 0
                        self._unsynced_since = None

    def sync_due(self, now: float) -> None:
        """fsync when records are unsynced and ``sync_interval_s`` has passed."""
        if self._unsynced and now - self._last_sync >= self.sync_interval_s:
            self.sync()

    def sync(self) -> None:
        with self._lock:
            fd, self._unsynced, self._unsynced_since = self._fd, 0, None
            self._last_sync = time.monotonic()
            if fd < 0:
                return
            try:
                os.fsync(fd)
            except OSError as err:
                logger.warning("spool %s: fsync failed: %s", self.directory, err)
                return
            self.syncs += 1

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                try:
                    os.fsync(self._fd)
                except OSError as err:
                    logger.warning("spool %s: fsync failed: %s", self.directory, err)
                os.close(self._fd)
                self._fd = -1
            if not self._pending.get(self._segment):
                self._path(self._segment).unlink(missing_ok=True)
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # and with it the lock
                self._lock_fd = -1

    # reading ---------------------------------------------------------------------------------
    def pending(self) -> int:
        """Records not yet released."""
        with self._lock:
            return sum(self._pending.values())

    def stats(self) -> dict[str, int | float | bool]:
        with self._lock:
            since = self._unsynced_since
            return {
                "durable": self.durable,
                "pending": sum(self._pending.values()),
                "segments": len(self._pending) + (self._segment not in self._pending),
                "appended": self.appended,
                "released": self.released,
                "replayed": self.replayed,
                "torn": self.torn,
                "errors": self.errors,
                "syncs": self.syncs,
                "unsynced": self._unsynced,
                "unsynced_s": 0.0 if since is None else round(time.monotonic() - since, 3),
            }
