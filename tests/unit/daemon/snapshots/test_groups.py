"""The groups' state in and out of snapshots (edge_agent.daemon.snapshots.groups): real groups built
by admission, a real snapshot store in a temporary directory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile, load_profiles
from edge_agent.daemon.admission import admit
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.snapshots.format import read_snapshot
from edge_agent.daemon.snapshots.groups import SNAPSHOT_FORMAT, restore_groups, save_groups
from edge_agent.daemon.snapshots.store import SnapshotStore

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


def built(tmp_path: Path, profiles: dict[str, FirmwareProfile], grid: int) -> list[GroupRuntime]:
    path = tmp_path / f"cfg{grid}.toml"
    path.write_text(
        f"""[daemon]
profile = "x86-dev"
state_dir = "{tmp_path / "state"}"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {grid}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[[groups]]
name = "tmaze"
model = {{ type = "builtin", name = "tmaze" }}
count = 3
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""
    )
    return admit(read_config(path, profiles=profiles))[2]


def test_groups_saved_come_back_where_name_model_and_size_match(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_writes_per_hour=10)
    events: list[tuple[str, str, str]] = []

    def event(kind: str, severity: str, detail: str) -> None:
        events.append((kind, severity, detail))

    with caplog.at_level(logging.INFO, logger="edge_agent.daemon.snapshots.groups"):
        assert restore_groups(store, built(tmp_path, profiles, 4), event, "; a note") is None
    assert f"fresh start: no snapshot to restore in {store.state_dir}; a note" in caplog.text
    saved = built(tmp_path, profiles, 4)
    for g in saved:
        for _ in range(3):
            g.tick(1.0)
    info = save_groups(store, saved, "cfg4.toml", force=True)
    assert info is not None
    snap = read_snapshot(info.path)
    assert snap.meta["format"] == SNAPSHOT_FORMAT
    assert snap.meta["config"] == "cfg4.toml"
    assert snap.meta["groups"] == {g.name: g.snapshot_meta() for g in saved}
    # A grid of another size is passed over; the T-maze comes back as it was saved.
    fresh = built(tmp_path, profiles, 5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_agent.daemon.snapshots.groups"):
        assert restore_groups(store, fresh, event) == str(info.path)
    assert "restored tmaze (3 agents) from snapshot" in caplog.text
    assert "snapshot group grid not restored: no group of that name, model and size" in caplog.text
    for key, value in saved[1].state().items():
        np.testing.assert_array_equal(fresh[1].state()[key], value, err_msg=key)
    assert events == []
    for g in [*saved, *fresh]:
        g.release()
