"""The hub's spool (what it acknowledged and has not stored) and its database thread (calls
with a deadline), with real files and real threads."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_agent_host.hub.storage.dbthread import DatabaseOverdueError, DatabaseThread
from edge_agent_host.hub.traffic import spool as spool_module
from edge_agent_host.hub.traffic.spool import Spool, SpoolRecord


def killed(spool: Spool) -> None:
    """What the process's death does to a spool: its descriptors close (the lock goes), nothing
    else happens (no fsync, no file removed)."""
    for fd in (spool._fd, spool._lock_fd):
        if fd >= 0:
            os.close(fd)


def record(n: int, topic: str = "ea/v1/f/node/n1/telemetry") -> SpoolRecord:
    return SpoolRecord(topic, bytes([n % 256]) * (n + 1), n % 2 == 0, 1000.0 + n)


def test_what_is_not_released_is_read_again_after_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 60)  # two or three records a segment
    first = Spool(tmp_path / "spool")
    assert first.open() == []
    segments = [first.append(record(n)) for n in range(10)]
    done = [s for s in segments if s < segments[4]]  # the first segments, stored entirely
    first.release(done)
    killed(first)  # no close(): what is not released is in the files
    second = Spool(tmp_path / "spool")
    left = second.open()
    replayed = [r for _, r in left]
    # Whole segments are kept: every record not released is heard again (and a few stored ones
    # of a partly released segment: the writes are idempotent), none of a released segment.
    assert replayed == [record(n) for n in range(len(done), 10)]
    assert second.stats()["replayed"] == 10 - len(done)
    assert second.pending() == 10 - len(done)
    second.release([seg for seg, _ in left])
    assert second.pending() == 0
    second.close()
    assert list((tmp_path / "spool").glob("*.spool")) == []


def test_one_process_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    first.open()
    with pytest.raises(OSError, match="another edge-agent-hub process uses this spool"):
        Spool(tmp_path / "spool").open()
    first.close()
    again = Spool(tmp_path / "spool")
    assert again.open() == []
    again.close()


def test_a_released_spool_stays_small_and_full_segments_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path / "spool")
    spool.open()
    held = [spool.append(record(20)) for _ in range(30)]  # ~45 bytes each: several segments
    assert len(set(held)) > 3
    assert len(list((tmp_path / "spool").glob("*.spool"))) == len(set(held))
    spool.release(held)
    files = list((tmp_path / "spool").glob("*.spool"))
    assert len(files) == 1  # the current one, truncated
    assert files[0].stat().st_size == 0
    assert spool.pending() == 0


def test_a_torn_last_record_ends_the_replay_and_is_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    for n in range(3):
        spool.append(record(n))
    path = next((tmp_path / "spool").glob("*.spool"))
    data = path.read_bytes()
    path.write_bytes(data[:-2])  # a power cut in the middle of the last record
    killed(spool)
    again = Spool(tmp_path / "spool")
    left = again.open()
    assert [r for _, r in left] == [record(0), record(1)]
    assert again.stats()["torn"] == 1


def test_a_refusing_disk_holds_in_memory_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 10)  # every record starts a segment
    spool = Spool(tmp_path / "spool")
    spool.open()
    first = spool.append(record(1))
    assert first >= 0
    (tmp_path / "spool" / f"{first + 1:010d}.spool").mkdir()  # the next segment cannot be made
    assert spool.append(record(2)) == -1
    assert not spool.durable
    assert spool.stats()["errors"] == 1
    assert spool.append(record(3)) >= 0  # a segment further on can: durable again
    assert spool.durable


def test_unsynced_records_and_their_age_are_the_power_cut_window(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", sync_interval_s=3600)
    spool.open()
    spool.append(record(1))
    spool.append(record(2))
    stats = spool.stats()
    assert stats["unsynced"] == 2
    assert stats["unsynced_s"] >= 0
    spool.sync_due(time.monotonic())  # not due yet
    assert spool.stats()["unsynced"] == 2
    spool.sync()
    assert spool.stats()["unsynced"] == 0
    assert spool.stats()["syncs"] == 1


def test_a_call_past_its_deadline_is_aborted_and_reported(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
    thread = DatabaseThread()
    waits = []
    release = threading.Event()

    def endless() -> object:
        # A statement that runs until interrupted (a recursive CTE with no end).
        return conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        ).fetchone()

    with pytest.raises(DatabaseOverdueError, match=r"no answer within 0\.5 s"):
        thread.call(endless, 0.5, while_waiting=lambda: waits.append(1), abort=conn.interrupt)
    assert thread.overdue == 1
    deadline = time.monotonic() + 30
    while thread.busy and time.monotonic() < deadline:  # the interrupt makes it come back
        time.sleep(0.01)
    assert not thread.busy
    assert thread.call(lambda: 42, 5, while_waiting=release.set, abort=conn.interrupt) == 42
    with pytest.raises(ZeroDivisionError):
        thread.call(lambda: 1 // 0, 5, while_waiting=release.set, abort=conn.interrupt)
    thread.stop()
    conn.close()


def test_while_a_call_hangs_new_calls_fail_at_once() -> None:
    thread = DatabaseThread()
    stuck = threading.Event()
    with pytest.raises(DatabaseOverdueError):
        thread.call(lambda: stuck.wait(30), 0.2, while_waiting=lambda: None, abort=lambda: None)
    assert thread.busy
    waited: list[int] = []
    with pytest.raises(DatabaseOverdueError, match="has not come back"):
        thread.call(lambda: 1, 10, while_waiting=lambda: waited.append(1), abort=lambda: None)
    assert waited == []  # refused at once, never queued behind the stuck call to wait
    stuck.set()
    deadline = time.monotonic() + 30
    while thread.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread.call(lambda: 2, 10, while_waiting=lambda: None, abort=lambda: None) == 2
    thread.stop()
