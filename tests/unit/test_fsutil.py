"""write_atomic: the new content or the old, never a mix; nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent import fsutil
from edge_agent.fsutil import atomic_writer, write_atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new", mode=0o640)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def fail_halfway() -> None:
        with atomic_writer(path) as fh:
            fh.write(b"half of the ne")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk"):
        fail_halfway()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_mkdir_prefix_and_non_durable(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    with atomic_writer(path, durable=False, mkdir=True, prefix=".status-", suffix=".part") as fh:
        names = os.listdir(path.parent)
        assert len(names) == 1
        assert names[0].startswith(".status-")
        assert names[0].endswith(".part")
        fh.write(b"{}")
    assert path.read_bytes() == b"{}"


def test_the_written_out_sqlite_result_codes_are_sqlites() -> None:
    import sqlite3

    unavailable = {
        sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY, sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_AUTH,
    }  # fmt: skip
    assert unavailable == fsutil._SQLITE_UNAVAILABLE
    assert {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB} == fsutil._SQLITE_DAMAGED
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert fsutil.is_storage_error(full)
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
    assert not fsutil.is_storage_error(corrupt)
    assert fsutil.sqlite_damaged(corrupt, opening=False)
