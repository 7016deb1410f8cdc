"""write_atomic: the new content or the old, never a mix; nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
