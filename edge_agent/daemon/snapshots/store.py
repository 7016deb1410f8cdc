"""Where snapshots live: ``state_dir/snapshot-<seq>.eas``, written atomically (temporary file,
fsync, rename, directory fsync) within a write budget per hour, the newest ``keep`` kept, the
latest good one read back at start.

A snapshot is one file (:mod:`edge_agent.daemon.snapshots.format`), written by
:meth:`SnapshotStore.save` and read back by :meth:`SnapshotStore.load_latest`. A process killed at
any instant leaves either the previous snapshots or the new one, never half a file under a snapshot
name: the bytes go to a temporary file in the same directory, are flushed and ``fsync``-ed, renamed
over the final name with ``os.replace`` and the directory is ``fsync``-ed before older snapshots are
deleted.

One process owns a state directory: it calls :meth:`SnapshotStore.load_latest` once at start-up
(which also removes the temporary files a crash left behind) and then saves.

Damage and storage (reported to the :class:`~edge_agent.state_faults.StateFaults` the store is
given, part ``snapshots``): an unusable snapshot file is moved to ``corrupt/``; anything but a
directory where the snapshot directory should be is moved aside (``snapshots.corrupt-STAMP``) and
a fresh directory made, at start or when a save meets it; a write the storage refuses (a full
disk) is counted as a storage error (and ``write_errors``), and the next save is the retry.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from edge_agent.daemon.snapshots.format import (
    FORMAT_VERSION,
    SNAPSHOT_NAME,
    LoadedSnapshot,
    check_arrays,
    placeholder_header,
    read_verified,
    write_body,
)
from edge_agent.errors import SnapshotError
from edge_agent.fsutil import atomic_writer, is_storage_error, not_a_dir
from edge_agent.state_faults import StateFaults

logger = logging.getLogger(__name__)


__all__ = ["PART", "SnapshotInfo", "SnapshotStore"]

_HOUR_S = 3600.0
_TEMP_PREFIX = ".snapshot-"
_TEMP_SUFFIX = ".tmp"
_CORRUPT_DIR = "corrupt"
PART = "snapshots"



@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What :meth:`SnapshotStore.save` wrote."""

    path: Path
    seq: int
    nbytes: int
    duration_s: float
    created: float
    """Wall-clock time (``time.time()``) stored in the header."""



class SnapshotStore:
    """Snapshots in ``state_dir``, at most ``max_writes_per_hour`` of them per sliding hour.

    The write budget protects SD cards: :meth:`save` returns ``None`` and counts a skip when
    ``max_writes_per_hour`` writes were attempted in the last hour. ``force=True`` (the final
    snapshot at shutdown) bypasses the limit but still counts against it. The newest ``keep``
    snapshots are kept; unusable ones are moved to ``state_dir/corrupt/``, of which the newest
    ``keep_corrupt`` are kept for inspection (they can be as large as a snapshot).
    ``compress=False`` stores every array raw.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        max_writes_per_hour: int,
        keep: int = 2,
        keep_corrupt: int = 3,
        faults: StateFaults | None = None,
        compress: bool = True,
    ) -> None:
        if max_writes_per_hour < 1:
            raise ValueError(f"max_writes_per_hour must be >= 1, got {max_writes_per_hour}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if keep_corrupt < 0:
            raise ValueError(f"keep_corrupt must be >= 0, got {keep_corrupt}")
        self.state_dir = Path(state_dir)
        self.max_writes_per_hour = max_writes_per_hour
        self.keep = keep
        self.keep_corrupt = keep_corrupt
        self.compress = compress
        self.faults = faults if faults is not None else StateFaults()
        self._make_dir()

        self._lock = threading.Lock()
        # Monotonic times of the last max_writes_per_hour write attempts: a write is allowed when
        # the oldest of them is more than an hour old, which is exactly "fewer than max in the
        # last hour", so older entries never matter and the deque is bounded.
        self._write_times: collections.deque[float] = collections.deque(maxlen=max_writes_per_hour)
        try:
            existing = self._list_snapshots()
        except SnapshotError as err:  # the storage refuses the directory: the next save retries
            self.faults.storage_error(PART, err, f"list {self.state_dir}")
            existing = []
        self._next_seq = existing[0][0] + 1 if existing else 1
        self._unremovable: set[Path] = set()

        self.writes = 0
        self.write_errors = 0
        self.skipped_by_rate_limit = 0
        self.bytes_written_total = 0
        self.last_write_time: float | None = None
        self.last_write_bytes = 0
        self.last_duration_s: float | None = None
        self.last_seq: int | None = None
        self.temp_files_removed = 0
        self.corrupt_events: list[tuple[str, str]] = []
        """``(file, reason)`` per unusable snapshot found; ``file`` is where it was moved to."""

    def _make_dir(self) -> bool:
        """Create the snapshot directory, after moving aside what is in its place; False when
        the storage refuses (counted; the next save tries again)."""
        if not_a_dir(self.state_dir):
            self.faults.move_aside(PART, self.state_dir, "not a directory")
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            self.faults.storage_error(PART, err, f"create {self.state_dir}")
            return False
        return True

    # --- writing -------------------------------------------------------------------------------

    def save(
        self,
        arrays: Mapping[str, npt.NDArray[Any]],
        meta: Mapping[str, Any],
        now: float | None = None,
        force: bool = False,
    ) -> SnapshotInfo | None:
        """Write a snapshot of ``arrays`` and ``meta``; ``None`` if the hourly budget is spent.

        ``meta`` must be what JSON gives back unchanged (str keys; 64-bit int, finite float,
        str, bool, None, lists and maps of them). ``now`` is a ``time.monotonic()`` reading,
        used for the budget. The arrays are read while the file is written (a non-contiguous one
        is copied, one at a time): do not change them from another thread meanwhile. Raises
        :class:`SnapshotError` for an unsupported array or meta value (before any budget is
        used) and when writing fails (the attempt counts against the budget).
        """
        if now is None:
            now = time.monotonic()
        checked = check_arrays(arrays)
        created = time.time()
        header: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "created": created,
            "monotonic": float(now),
            "meta": dict(meta),
        }
        placeholder_header(header, checked)  # refuses bad meta now
        with self._lock:
            if not force and self._budget_spent(now):
                self.skipped_by_rate_limit += 1
                logger.debug("snapshot skipped: %d writes in the last hour", len(self._write_times))
                return None
            self._write_times.append(now)
            seq = self._next_seq
            self._next_seq += 1

        path = self.state_dir / f"snapshot-{seq:010d}.eas"
        started = time.perf_counter()
        try:
            if not self.state_dir.is_dir():
                self._make_dir()
            nbytes = self._write_atomically(path, header, checked)
        except OSError as err:
            with self._lock:
                self.write_errors += 1
            if is_storage_error(err):
                self.faults.storage_error(PART, err, f"write {path.name}")
            raise SnapshotError(f"writing snapshot {path} failed: {err}") from err
        self.faults.storage_ok(PART)
        duration = time.perf_counter() - started

        with self._lock:
            self.writes += 1
            self.bytes_written_total += nbytes
            self.last_write_time = created
            self.last_write_bytes = nbytes
            self.last_duration_s = duration
            self.last_seq = seq
        logger.debug("snapshot %s written: %d bytes in %.3f s", path.name, nbytes, duration)
        self._prune()
        return SnapshotInfo(path=path, seq=seq, nbytes=nbytes, duration_s=duration, created=created)

    def _budget_spent(self, now: float) -> bool:
        window = self._write_times
        return len(window) == window.maxlen and now - window[0] < _HOUR_S

    def _write_atomically(
        self, path: Path, header: dict[str, Any], arrays: list[tuple[str, npt.NDArray[Any]]]
    ) -> int:
        with atomic_writer(path, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX) as f:
            return write_body(f, header, arrays, self.compress)

    def _prune(self) -> None:
        """Delete all but the newest ``keep`` snapshots (and those known to be unusable)."""
        try:
            listed = self._list_snapshots()
        except SnapshotError as err:
            logger.warning("not pruning old snapshots: %s", err)
            return
        snapshots = [(seq, path) for seq, path in listed if path not in self._unremovable]
        for _, path in snapshots[self.keep :]:
            _remove(path)
        for path in list(self._unremovable):
            if _remove(path):
                self._unremovable.discard(path)

    # --- reading -------------------------------------------------------------------------------

    def load_latest(self) -> LoadedSnapshot | None:
        """The newest snapshot that verifies, or ``None`` if there is none.

        Removes temporary files left by a crashed write first. Each unusable snapshot met on the
        way (corrupt, truncated, unknown version, unreadable) is logged, moved to ``corrupt/``
        with a UTC timestamp suffix, recorded in :attr:`corrupt_events`, and the next older one is
        tried.
        """
        self.remove_temp_files()
        for _, path in self._list_snapshots():
            try:
                snapshot = read_verified(path)
            except SnapshotError as err:
                self._set_aside(path, str(err))
                continue
            logger.info(
                "loaded snapshot %s (%d bytes, %d arrays)",
                path.name,
                snapshot.nbytes,
                len(snapshot.arrays),
            )
            return snapshot
        return None

    def remove_temp_files(self) -> int:
        """Delete temporary files of interrupted writes; return how many were removed."""
        try:
            names = os.listdir(self.state_dir)
        except OSError as err:
            raise SnapshotError(f"cannot list {self.state_dir}: {err}") from err
        removed = 0
        for name in names:
            is_temp = name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)
            if is_temp and _remove(self.state_dir / name):
                removed += 1
        if removed:
            logger.warning(
                "removed %d temporary snapshot file(s) left by an interrupted write", removed
            )
            with self._lock:
                self.temp_files_removed += removed
        return removed

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move an unusable snapshot to ``corrupt/`` (the newest ``keep_corrupt`` stay there);
        one that cannot be moved is skipped now and deleted at the next save."""
        dest = self.faults.move_aside(
            PART,
            path,
            reason,
            into=self.state_dir / _CORRUPT_DIR,
            keep=self.keep_corrupt,
            notify=False,  # the daemon reports these as snapshot_corrupt events
        )
        if dest is None:
            self._unremovable.add(path)
        with self._lock:
            self.corrupt_events.append((str(path if dest is None else dest), reason))

    def _list_snapshots(self) -> list[tuple[int, Path]]:
        """``(seq, path)`` of the snapshot files, newest first."""
        found = []
        try:
            for entry in os.scandir(self.state_dir):
                match = SNAPSHOT_NAME.fullmatch(entry.name)
                if match is not None and entry.is_file(follow_symlinks=False):
                    found.append((int(match.group(1)), Path(entry.path)))
        except OSError as err:
            raise SnapshotError(f"cannot list {self.state_dir}: {err}") from err
        found.sort(reverse=True)
        return found

    # --- status --------------------------------------------------------------------------------

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """JSON-able counters for ``edge-agent status`` and telemetry (``now``: monotonic)."""
        if now is None:
            now = time.monotonic()
        with self._lock:
            in_last_hour = sum(1 for t in self._write_times if now - t < _HOUR_S)
            return {
                "writes": self.writes,
                "write_errors": self.write_errors,
                "skipped_by_rate_limit": self.skipped_by_rate_limit,
                "bytes_written_total": self.bytes_written_total,
                "last_write_time": self.last_write_time,
                "last_write_bytes": self.last_write_bytes,
                "last_duration_s": self.last_duration_s,
                "last_seq": self.last_seq,
                "writes_in_last_hour": in_last_hour,
                "max_writes_per_hour": self.max_writes_per_hour,
                "temp_files_removed": self.temp_files_removed,
                "corrupt_found": len(self.corrupt_events),
            }



# --- file system ---------------------------------------------------------------------------------


def _remove(path: Path) -> bool:
    """Unlink ``path``; ``True`` if it is gone. Failures are logged, never raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not remove %s: %s", path, err)
        return False
    return True
