"""An append-only file of framed records: the storage of the fleet's small durable stores.

Layout: an 8-byte magic that names the store and its format (``b"EANONCE1"``), then records, each
a frame ``<length: u32 LE> <crc32 of the payload: u32 LE>`` followed by ``length`` payload bytes.
What a payload means is the owner's business (the nonce store's nonces, the outbox's messages and
their deletions).

Guarantees
----------
- :meth:`RecordLog.append` writes its records with one ``write`` call, at the end of the file.
  Once it returned, the records survive the process being killed (they are in the OS page cache);
  with ``sync=True`` they were also ``fsync``-ed, so they survive a power cut.
- Reading (:meth:`RecordLog.open`) stops at the first frame that is incomplete, too long or fails
  its CRC: a torn tail (a crash in the middle of an append) or damage. What follows it is dropped;
  the owner is told how many bytes (:attr:`RecordLog.dropped_bytes`) and decides what that means:
  it truncates the file to its good prefix (:meth:`RecordLog.drop_tail`), so that new records never
  follow garbage, or it moves the file aside (a tail longer than one record is damage, not a torn
  append: the nonce store's rule, see :class:`~edge_agent.fleet.commands.NonceStore`).
- An append that fails (a full disk) is undone: the file is truncated back to where it was, so a
  partial frame never stays; the error (an :class:`OSError`) goes to the caller.
- :meth:`RecordLog.rewrite` replaces the whole file with the records given (compaction), crash
  safely (:func:`~edge_agent.fsutil.atomic_writer`): after a crash the file holds either the old
  records or the new ones.
- A file whose magic is not the one expected (another file, random bytes, a SQLite database) raises
  :class:`LogDamagedError`: the owner moves it aside (:mod:`edge_agent.state_faults`).

Single-threaded: one owner calls every method.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TypeVar

from edge_agent.fsutil import atomic_writer

logger = logging.getLogger(__name__)

__all__ = ["FRAME", "MAX_RECORD_BYTES", "LogDamagedError", "RecordLog", "frames", "write_log"]

FRAME: Final = struct.Struct("<II")
"""A record's frame: the payload's length and its CRC32."""
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
"""A frame that says more is damage, not a record (no store writes one this large)."""
MAGIC_BYTES: Final = 8


T = TypeVar("T")


class LogDamagedError(Exception):
    """The file is not a record log of the expected kind (its magic differs)."""


def frames(payloads: Iterable[bytes]) -> bytes:
    """The records ``payloads`` framed, ready to be written in one piece."""
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(FRAME.pack(len(payload), zlib.crc32(payload)))
        parts.append(payload)
    return b"".join(parts)


def write_log(path: str | Path, magic: bytes, payloads: Iterable[bytes]) -> None:
    """Create (or replace) the log at ``path`` holding ``payloads``, crash safely and ``fsync``-ed:
    after a crash it is either all there or not there (a migration writes its new file so, before
    it deletes the old one). Raises :class:`OSError`."""
    with atomic_writer(path, durable=True, mode=0o600) as fh:
        fh.write(magic)
        for payload in payloads:
            fh.write(FRAME.pack(len(payload), zlib.crc32(payload)))
            fh.write(payload)


class RecordLog:
    """One open record log. Use :meth:`open`; see the module docstring."""

    def __init__(self, path: Path, magic: bytes, fd: int, size: int) -> None:
        self.path = path
        self.magic = magic
        self._fd = fd
        self.size = size
        """The file's length in bytes (the magic included)."""
        self.records = 0
        """Records written to the file since it was opened or rewritten, the ones read included."""
        self.dropped_bytes = 0
        """Bytes dropped from the tail when it was opened (a torn or damaged record)."""

        self._undo = False  # an append failed and could not be undone yet

    @classmethod
    def open(cls, path: str | Path, magic: bytes) -> tuple[RecordLog, list[bytes]]:
        """Open (or create) the log at ``path``; returns it and the payloads it holds, oldest
        first. Raises :class:`LogDamagedError` for a file of another kind, :class:`OSError` when
        the storage refuses it."""
        return cls.open_with(path, magic, lambda payload, _at: bytes(payload))

    @classmethod
    def open_with(
        cls, path: str | Path, magic: bytes, decode: Callable[[memoryview, int], T]
    ) -> tuple[RecordLog, list[T]]:
        """:meth:`open`, keeping ``decode(payload, at)`` of each record instead of its bytes
        (``at``: the offset of the record's frame in the file, for :meth:`read`), so that a
        large log is never held in memory twice. ``decode`` may raise :class:`LogDamagedError`."""
        if len(magic) != MAGIC_BYTES:
            raise ValueError(f"a record log's magic is {MAGIC_BYTES} bytes, not {len(magic)}")
        target = Path(path)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "rb", closefd=False) as fh:
                data = fh.read()
            if magic.startswith(data):  # new, or a crash while it was being created
                os.ftruncate(fd, 0)
                os.write(fd, magic)
                os.fsync(fd)
                return cls(target, magic, fd, MAGIC_BYTES), []
            if data[:MAGIC_BYTES] != magic:
                raise LogDamagedError(
                    f"not a {magic.decode('ascii', 'replace')} record log "
                    f"(it starts with {data[:MAGIC_BYTES]!r})"
                )
            payloads, good = _parse(data, decode)
            log = cls(target, magic, fd, good)
            log.records = len(payloads)
            log.dropped_bytes = len(data) - good
        except BaseException:
            os.close(fd)
            raise
        return log, payloads

    def drop_tail(self) -> None:
        """Truncate the file to the records read (after a torn or damaged tail), logged.
        Raises :class:`OSError`."""
        if not self.dropped_bytes:
            return
        os.ftruncate(self._fd, self.size)
        os.fsync(self._fd)
        logger.warning(
            "%s: a torn or damaged record at byte %d; the last %d byte(s) were dropped",
            self.path,
            self.size,
            self.dropped_bytes,
        )
        self.dropped_bytes = 0

    def append(self, payloads: Iterable[bytes], *, sync: bool) -> None:
        """Write ``payloads`` as records at the end, in one ``write``; ``sync``: ``fsync`` too.
        Raises :class:`OSError` (the file is then as it was)."""
        if self.dropped_bytes:
            raise RuntimeError(f"{self.path}: a damaged tail is still there (drop_tail first)")
        if self._undo:  # the last failed append left part of itself: cut it first
            os.ftruncate(self._fd, self.size)
            self._undo = False
        items = list(payloads)
        data = frames(items)
        if not data:
            return
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                short = f"short write to {self.path}: {written} of {len(data)} bytes"
                raise OSError(errno.ENOSPC, short)
            if sync:
                os.fsync(self._fd)
        except OSError:
            self._undo = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
                self._undo = False
            raise
        self.size += len(data)
        self.records += len(items)

    def read(self, at: int, length: int) -> bytes:
        """The payload of the record whose frame is at ``at`` and whose payload is ``length``
        bytes (as :meth:`open_with` and :func:`frames` placed it), checked against its CRC.
        Raises :class:`LogDamagedError` when it no longer is that record, :class:`OSError`."""
        data = os.pread(self._fd, FRAME.size + length, at)
        if len(data) == FRAME.size + length:
            size, crc = FRAME.unpack_from(data)
            payload = data[FRAME.size :]
            if size == length and zlib.crc32(payload) == crc:
                return payload
        raise LogDamagedError(f"the record at byte {at} of {self.path} is damaged")

    def rewrite(self, payloads: Iterable[bytes], *, sync: bool = True) -> None:
        """Replace the file with the magic and ``payloads`` only (compaction), crash safely;
        ``payloads`` is consumed one at a time (it may read this log: the old file stays open
        until the new one replaced it). Raises :class:`OSError` (the file is then as it was)."""
        size, records = MAGIC_BYTES, 0
        with atomic_writer(self.path, durable=sync, mode=0o600) as fh:
            fh.write(self.magic)
            for payload in payloads:
                fh.write(FRAME.pack(len(payload), zlib.crc32(payload)))
                fh.write(payload)
                size += FRAME.size + len(payload)
                records += 1
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = fd
        self.size = size
        self.records = records
        self.dropped_bytes = 0
        self._undo = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _parse(data: bytes, decode: Callable[[memoryview, int], T]) -> tuple[list[T], int]:
    """The decoded payloads of ``data`` (a whole file) and the length of its good prefix."""
    payloads: list[T] = []
    pos = MAGIC_BYTES
    end = len(data)
    view = memoryview(data)
    while pos + FRAME.size <= end:
        length, crc = FRAME.unpack_from(data, pos)
        start = pos + FRAME.size
        if length > MAX_RECORD_BYTES or start + length > end:
            break
        payload = view[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        payloads.append(decode(payload, pos))
        pos = start + length
    return payloads, pos
