"""Crash-safe snapshots: corruption handling, compression, restoring, write budget, SIGKILL
safety (the file format itself: ``test_format.py``)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.daemon.snapshots.format import MAGIC, read_snapshot
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.errors import SnapshotError

REPO = Path(__file__).resolve().parents[4]


def two_snapshots(store: SnapshotStore) -> tuple[dict[str, npt.NDArray[Any]], Path]:
    """Save an older snapshot (returned arrays) and a newer one (returned path)."""
    older: dict[str, npt.NDArray[Any]] = {
        "qs": np.full((4, 3), 0.25, dtype=np.float32),
        "steps": np.arange(4, dtype=np.int64),
    }
    store.save(older, {"generation": 1}, now=0.0)
    newer: dict[str, npt.NDArray[Any]] = {
        "qs": np.full((4, 3), 0.5, dtype=np.float32),
        "steps": np.arange(8, dtype=np.int64),
    }
    info = store.save(newer, {"generation": 2}, now=1.0)
    assert info is not None
    return older, info.path


def snapshot_names(state_dir: Path) -> list[str]:
    return sorted(p.name for p in state_dir.iterdir() if p.is_file())


# --- recovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["magic", "version", "header", "data", "trailer"])
def test_bit_flip_sets_snapshot_aside_and_loads_the_older_one(tmp_path: Path, where: str) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    older, newer = two_snapshots(store)
    data = bytearray(newer.read_bytes())
    position = {
        "magic": 2,
        "version": 7,
        "header": 20,
        "data": len(data) - 40,
        "trailer": len(data) - 1,
    }
    data[position[where]] ^= 0x10
    newer.write_bytes(data)

    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.seq == 1
    assert loaded.meta == {"generation": 1}
    np.testing.assert_array_equal(loaded.arrays["qs"], older["qs"])
    np.testing.assert_array_equal(loaded.arrays["steps"], older["steps"])

    assert not newer.exists()
    (moved,) = (tmp_path / "corrupt").iterdir()
    assert moved.name.startswith("snapshot-0000000002.eas.")
    assert moved.read_bytes() == bytes(data)
    assert len(fresh.corrupt_events) == 1
    file, reason = fresh.corrupt_events[0]
    assert file == str(moved)
    expected_reason = {
        "magic": "bad magic",
        "version": "unknown format version",
        "header": "sha256 mismatch",
        "data": "sha256 mismatch",
        "trailer": "sha256 mismatch",
    }[where]
    assert expected_reason in reason
    assert fresh.stats()["corrupt_found"] == 1


@pytest.mark.parametrize("keep_fraction", [0.0, 0.02, 0.05, 0.5, 0.999])
def test_truncated_snapshot_is_detected(tmp_path: Path, keep_fraction: float) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    _, newer = two_snapshots(store)
    data = newer.read_bytes()
    newer.write_bytes(data[: int(len(data) * keep_fraction)])

    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.meta == {"generation": 1}
    ((_, reason),) = fresh.corrupt_events
    assert "truncated" in reason


def test_unknown_format_version_is_set_aside(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    _, newer = two_snapshots(store)
    data = bytearray(newer.read_bytes())
    data[6:8] = (4).to_bytes(2, "big")
    newer.write_bytes(data)
    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.seq == 1
    assert fresh.corrupt_events[0][1] == "unknown format version 4 (this build reads [1, 2, 3])"


def belief_history(agents: int = 200, steps: int = 64, states: int = 100) -> np.ndarray:
    """uint8 beliefs as the daemon keeps them: nearly one-hot, a few states above zero."""
    rng = np.random.default_rng(0)
    qs = np.zeros((steps, agents, states), np.uint8)
    idx = rng.integers(0, states, size=(steps, agents))
    np.put_along_axis(qs, idx[..., None], 255, axis=2)
    qs[:, :, 1] = rng.integers(0, 3, size=(steps, agents))
    return qs


def test_large_arrays_are_compressed_small_ones_and_noise_stay_raw(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "history.qs": belief_history(),
        "noise": rng.integers(0, 256, size=20_000, dtype=np.uint8),  # does not compress
        "small": np.arange(10, dtype=np.int64),
    }
    compressed = SnapshotStore(tmp_path / "z", max_writes_per_hour=10).save(arrays, {}, now=0.0)
    plain = SnapshotStore(tmp_path / "p", max_writes_per_hour=10, compress=False).save(
        arrays, {}, now=0.0
    )
    assert compressed is not None
    assert plain is not None
    assert plain.path.read_bytes()[:8] == compressed.path.read_bytes()[:8] == MAGIC
    raw_total = sum(a.nbytes for a in arrays.values())
    assert plain.nbytes > raw_total
    assert compressed.nbytes < raw_total - 0.9 * arrays["history.qs"].nbytes
    codecs = {}
    for path in (compressed.path, plain.path):
        loaded = read_snapshot(path)
        codecs[path] = [loaded.arrays._stored[name].compressed for name in arrays]
        for name, original in arrays.items():
            restored = loaded.arrays[name]
            assert restored.dtype == original.dtype
            assert restored.shape == original.shape
            assert restored.tobytes() == original.tobytes(), name
            assert restored.flags.writeable
    assert codecs == {compressed.path: [True, False, False], plain.path: [False, False, False]}


def test_large_arrays_are_compressed_once_as_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each array is compressed once, chunk by chunk, as it is written (nothing compressed is
    kept); one that does not compress is written raw over its compressed bytes (the last one
    too: the file ends where it does). The file reads back the same, the same arrays give the
    same bytes, and the header (padded to where the data begins) reads with any reader."""
    import zlib

    from edge_agent.daemon.snapshots import format as snapshots

    rng = np.random.default_rng(2)
    arrays = {
        "history.qs": belief_history(),
        "beliefs": np.repeat(rng.random((50, 1)).astype(np.float32), 2000, axis=1),
        "noise": rng.integers(0, 256, size=20_000, dtype=np.uint8),  # last: rewritten raw
    }
    compressions = []
    real = zlib.compressobj
    monkeypatch.setattr(zlib, "compressobj", lambda *a: compressions.append(a) or real(*a))
    monkeypatch.setattr(snapshots, "_CHUNK_BYTES", 4096)  # many chunks per array
    streamed = SnapshotStore(tmp_path / "streamed", max_writes_per_hour=10).save(
        arrays, {"many": list(range(300))}, now=0.0
    )
    assert streamed is not None
    assert len(compressions) == 3  # each array once
    loaded = read_snapshot(streamed.path)
    stored = loaded.arrays._stored
    assert [stored[k].compressed for k in arrays] == [True, True, False]
    assert stored["noise"].start + stored["noise"].stored + 32 == streamed.nbytes
    for name, original in arrays.items():
        assert loaded.arrays[name].tobytes() == original.tobytes(), name
    assert loaded.meta == {"many": list(range(300))}
    again = SnapshotStore(tmp_path / "again", max_writes_per_hour=10).save(arrays, {}, now=0.0)
    assert again is not None
    body = slice(-1032, -32)  # past the header's creation time, before the digest
    assert again.path.read_bytes()[body] == streamed.path.read_bytes()[body]
    assert streamed.nbytes < sum(a.nbytes for a in arrays.values()) / 2


@pytest.mark.parametrize("count", [1, 7, 40, 400])
def test_the_header_is_padded_to_where_the_data_begins(tmp_path: Path, count: int) -> None:
    """Whatever the offsets turn out to be, the header ends within the 64 bytes before the
    data: many small arrays (short offsets) and few large ones."""
    arrays = {f"a{i}": np.full(10 + 97 * i, i, dtype=np.int32) for i in range(count)}
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(arrays, {}, now=0.0)
    assert info is not None
    loaded = read_snapshot(info.path)
    for name, original in arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], original)


def test_a_compressed_array_that_does_not_inflate_is_set_aside(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    store.save({"qs": belief_history(), "gen": np.array([0])}, {"generation": 0}, now=0.0)
    info = store.save({"qs": belief_history(), "gen": np.array([1])}, {"generation": 1}, now=1.0)
    assert info is not None
    data = bytearray(info.path.read_bytes())
    # Damage the deflate stream and make the checksum agree, as a bad writer would.
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    body = bytes(data[:-32])
    data[-32:] = hashlib.sha256(body).digest()
    info.path.write_bytes(data)
    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.meta == {"generation": 0}
    assert "qs" in fresh.corrupt_events[0][1]


def test_a_group_restores_from_a_snapshot_read_straight_into_its_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's restore: each array of a group is inflated chunk by chunk straight into the
    group's own (chunks that end inside a value), none is kept by the snapshot, and the restored
    group equals the saved one, history included."""
    from edge_agent.aif.planning import PlanningPolicy
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.daemon.snapshots import format as snapshots
    from edge_agent.sim.registry import builtin_model, make_env

    n, model = 3000, builtin_model("grid10")

    def group() -> AifAgentGroup:
        return AifAgentGroup(
            model, n, history_capacity=8, history_beliefs="map",
            planning=PlanningPolicy(every=4), name="grid",
        )

    saved, world = group(), make_env("grid10", n, seed=3)
    obs = world.reset()
    for t in range(11):
        obs = world.step(saved.step(obs, now=float(t)))
    arrays = {f"group.grid.{k}": v for k, v in saved.state_dict().items()}
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(arrays, {}, now=0.0)
    assert info is not None
    monkeypatch.setattr(snapshots, "_CHUNK_BYTES", 4099)  # odd: chunks split float32 values
    loaded = read_snapshot(info.path)
    compressed = [name for name, item in loaded.arrays._stored.items() if item.compressed]
    assert "group.grid.qs0" in compressed
    assert "group.grid.history.obs" in compressed
    restored = group()
    restored.load_state_dict(loaded.arrays.under("group.grid."))
    assert loaded.arrays._keep == {}  # nothing inflated was kept beside the group
    want, got = saved.state_dict(), restored.state_dict()
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert np.array_equal(restored.step(obs, now=11.0), saved.step(obs, now=11.0))


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "made"])
def test_a_snapshot_with_priors_restores_a_group_that_keeps_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    """A snapshot of a group that kept its prior (every snapshot before ``keep_prior``)
    restores one that keeps none: its saved priors are read a block of rows at a time (from
    the compressed bytes, chunks that end inside a row), and where they are ``D`` the agent's
    prior is ``D``. The next ticks are those of the saved group, bit for bit; a snapshot of the
    group that keeps none restores one that keeps it the same."""
    from edge_agent.aif.planning import PlanningPolicy
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.daemon.snapshots import format as snapshots
    from edge_agent.sim.registry import builtin_model, make_env

    n, model = 3000, builtin_model("grid10")

    def group(keep_prior: bool) -> AifAgentGroup:
        return AifAgentGroup(
            model, n, history_capacity=8, history_beliefs="map", name="grid",
            planning=PlanningPolicy(every=4), block_size=256, keep_prior=keep_prior,
        )

    saved, world = group(keep), make_env("grid10", n, seed=3)
    obs = world.reset()
    for t in range(11):
        obs = world.step(saved.step(obs, now=float(t)))
    saved.reset(np.arange(n) % 5 == 0)  # between ticks: their prior is D
    arrays = {f"group.grid.{k}": v for k, v in saved.state_dict().items()}
    assert ("group.grid.prior0" in arrays) == keep
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(arrays, {}, now=0.0)
    assert info is not None
    monkeypatch.setattr(snapshots, "_CHUNK_BYTES", 4099)
    loaded = read_snapshot(info.path)
    if keep:
        assert loaded.arrays._stored["group.grid.prior0"].compressed
    restored = group(not keep)
    restored.load_state_dict(loaded.arrays.under("group.grid."))
    assert loaded.arrays._keep == {}
    for t in range(11, 16):
        actions = saved.step(obs, now=float(t))
        np.testing.assert_array_equal(restored.step(obs, now=float(t)), actions)
        for a, b in zip(restored.qs, saved.qs, strict=True):
            np.testing.assert_array_equal(a, b)
        obs = world.step(actions)


def status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/self/status has no {key}")


def test_reading_a_large_snapshot_holds_a_few_chunks_of_it(tmp_path: Path) -> None:
    """Verified and copied into an array of its own, a snapshot of 112 MB (56 MB stored) never
    has more than a few chunks of its file resident: each is given back once read. Reading the
    file whole held all of it beside the state it restores."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 200, 24 << 20).astype(np.float32)  # 96 MB, stored in about 40
    noise = rng.integers(0, 255, 16 << 20, dtype=np.uint8)  # stays raw
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(
        {"values": values, "noise": noise}, {}, now=0.0
    )
    assert info is not None
    assert info.nbytes > 40 << 20
    out, out_noise = np.ones_like(values), np.ones_like(noise)  # resident before the count
    del values, noise
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts from now
    before = status_bytes("VmRSS")
    loaded = read_snapshot(info.path)
    loaded.arrays.read_into("values", out)
    loaded.arrays.read_into("noise", out_noise)
    peak = status_bytes("VmHWM")
    assert (out < 200).all()
    assert out.max() == 199
    assert peak - before < 24 << 20, f"{(peak - before) / 2**20:.1f} MB above the state"


def test_rows_of_a_snapshot_array_come_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.daemon.snapshots import format as snapshots

    rows = np.arange(5000 * 7, dtype=np.float32).reshape(5000, 7)
    noise = np.random.default_rng(0).random((300, 3))  # stays raw
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(
        {"rows": rows, "noise": noise}, {}, now=0.0
    )
    assert info is not None
    monkeypatch.setattr(snapshots, "_CHUNK_BYTES", 1001)
    arrays = read_snapshot(info.path).arrays
    assert arrays._stored["rows"].compressed
    assert not arrays._stored["noise"].compressed
    for name, want in (("rows", rows), ("noise", noise)):
        for per in (1, 64, 333, 10_000):
            got = list(arrays.iter_rows(name, per))
            assert all(len(g) == per for g in got[:-1])
            np.testing.assert_array_equal(np.concatenate(got), want)


def test_a_snapshot_array_of_another_shape_is_refused_on_restore(tmp_path: Path) -> None:
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.errors import InputError
    from edge_agent.sim.registry import builtin_model

    model = builtin_model("grid10")
    small = AifAgentGroup(model, 2000, name="grid")
    arrays = {f"group.grid.{k}": v for k, v in small.state_dict().items()}
    info = SnapshotStore(tmp_path, max_writes_per_hour=10).save(arrays, {}, now=0.0)
    assert info is not None
    bigger = AifAgentGroup(model, 2001, name="grid")
    refused = r"group 'grid' snapshot 'action' has shape \(2000, 1\), expected \(2001, 1\)"
    with pytest.raises(InputError, match=refused):
        bigger.load_state_dict(read_snapshot(info.path).arrays.under("group.grid."))


def test_no_usable_snapshot_gives_none(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, max_writes_per_hour=1).load_latest() is None
    (tmp_path / "snapshot-0000000001.eas").write_bytes(b"")
    (tmp_path / "snapshot-0000000002.eas").write_bytes(
        b"not a snapshot at all, but long enough" * 3
    )
    store = SnapshotStore(tmp_path, max_writes_per_hour=1)
    assert store.load_latest() is None
    assert [reason for _, reason in store.corrupt_events] == [
        "not a snapshot (bad magic)",
        "truncated: 0 bytes",
    ]
    assert snapshot_names(tmp_path) == []


def test_corrupt_snapshot_that_cannot_be_moved_is_skipped_then_deleted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    _, newer = two_snapshots(store)
    newer.write_bytes(newer.read_bytes()[:-1])
    (tmp_path / "corrupt").write_bytes(b"a file where the directory should be")

    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.seq == 1
    ((where, _),) = fresh.corrupt_events
    assert where == str(newer)
    assert newer.exists()
    # The unusable file does not count as one of the `keep` snapshots and goes at the next save.
    info = fresh.save({"a": np.zeros(1)}, {}, now=0.0)
    assert info is not None
    assert snapshot_names(tmp_path) == ["corrupt", "snapshot-0000000001.eas", info.path.name]


def test_corrupt_directory_keeps_only_the_newest(tmp_path: Path) -> None:
    for seq in range(1, 5):
        (tmp_path / f"snapshot-{seq:010d}.eas").write_bytes(b"garbage")
    store = SnapshotStore(tmp_path, max_writes_per_hour=1, keep_corrupt=2)
    assert store.load_latest() is None
    assert len(store.corrupt_events) == 4
    assert len(list((tmp_path / "corrupt").iterdir())) == 2


def test_leftover_temp_files_are_removed_and_counted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    two_snapshots(store)
    (tmp_path / ".snapshot-k3j2l1.tmp").write_bytes(b"EASNAP\x00\x01half a snapsh")
    (tmp_path / ".snapshot-zz.tmp").write_bytes(b"")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    fresh = SnapshotStore(tmp_path, max_writes_per_hour=10)
    loaded = fresh.load_latest()
    assert loaded is not None
    assert loaded.seq == 2
    assert fresh.temp_files_removed == 2
    assert fresh.stats()["temp_files_removed"] == 2
    assert snapshot_names(tmp_path) == [
        "notes.tmp",
        "snapshot-0000000001.eas",
        "snapshot-0000000002.eas",
    ]


# --- writing -------------------------------------------------------------------------------------


def test_only_the_newest_keep_snapshots_stay(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=100, keep=3)
    for i in range(6):
        store.save({"i": np.array([i])}, {"i": i}, now=float(i))
    assert snapshot_names(tmp_path) == [f"snapshot-{seq:010d}.eas" for seq in (4, 5, 6)]
    # A new store continues the sequence instead of reusing numbers.
    again = SnapshotStore(tmp_path, max_writes_per_hour=100, keep=3)
    info = again.save({"i": np.array([6])}, {"i": 6}, now=0.0)
    assert info is not None
    assert info.seq == 7


def test_write_is_fsynced_then_renamed_then_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
        events.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    info = store.save({"a": np.ones(1000)}, {}, now=0.0)
    assert info is not None
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir"]
    temp = events[0][1]
    assert Path(temp).parent == tmp_path
    assert Path(temp).name.startswith(".snapshot-")
    assert events[1][1] == f"{temp} -> {info.path}"
    assert events[2][1] == str(tmp_path)


def test_failed_write_leaves_older_snapshots_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=10)
    store.save({"a": np.zeros(4)}, {"n": 1}, now=0.0)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SnapshotError, match="No space left"):
        store.save({"a": np.ones(4)}, {"n": 2}, now=1.0)
    monkeypatch.undo()
    assert snapshot_names(tmp_path) == ["snapshot-0000000001.eas"]
    stats = store.stats(now=2.0)
    assert stats["write_errors"] == 1
    assert stats["writes"] == 1
    assert stats["writes_in_last_hour"] == 2  # the failed attempt still wrote to the card
    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.meta == {"n": 1}


def test_hourly_write_budget_is_a_sliding_window(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=3, keep=10)

    def save(now: float, force: bool = False) -> bool:
        return store.save({"a": np.zeros(1)}, {}, now=now, force=force) is not None

    assert [save(0.0), save(10.0), save(20.0)] == [True, True, True]
    assert save(30.0) is False
    assert save(3599.0) is False
    assert store.skipped_by_rate_limit == 2
    assert save(3600.0) is True  # the write at 0 s has left the window
    assert save(3605.0) is False  # 10, 20 and 3600 are inside it
    assert save(3606.0, force=True) is True  # the final snapshot at shutdown bypasses the limit
    stats = store.stats(now=3606.0)
    assert stats["writes_in_last_hour"] == 3  # 20, 3600 and the forced 3606
    assert stats["writes"] == 5
    assert stats["skipped_by_rate_limit"] == 3
    assert save(3615.0) is False  # the forced write counts
    assert save(3620.0) is True
    assert len(snapshot_names(tmp_path)) == 6


def test_stats_are_json_and_track_writes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_writes_per_hour=4)
    empty = store.stats(now=0.0)
    assert empty["writes"] == 0
    assert empty["last_write_time"] is None
    info = store.save({"a": np.zeros(1000, np.float32)}, {"k": "v"}, now=5.0)
    assert info is not None
    stats = json.loads(json.dumps(store.stats(now=6.0)))
    assert stats["writes"] == 1
    assert stats["bytes_written_total"] == stats["last_write_bytes"] == info.nbytes
    assert info.nbytes > 4000
    assert stats["last_write_time"] == info.created
    assert stats["last_duration_s"] == info.duration_s > 0
    assert stats["last_seq"] == 1
    assert stats["writes_in_last_hour"] == 1
    assert stats["max_writes_per_hour"] == 4
    assert store.stats(now=5.0 + 3600)["writes_in_last_hour"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_writes_per_hour": 0},
        {"max_writes_per_hour": 1, "keep": 0},
        {"max_writes_per_hour": 1, "keep_corrupt": -1},
    ],
)
def test_bad_store_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SnapshotStore(tmp_path, **kwargs)


# --- a real process killed mid-write ------------------------------------------------------------

WRITER = """
import os, sys, time
from pathlib import Path
import numpy as np
from edge_agent.daemon.snapshots.store import SnapshotStore

state_dir, first, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
store = SnapshotStore(state_dir, max_writes_per_hour=1_000_000, keep=2)
ramp = np.arange(4_000_000, dtype=np.uint32)  # 16 MB of history per snapshot
i = first
while True:
    arrays = {"history": ramp + np.uint32(i), "qs": np.full((512, 64), i, dtype=np.float32)}
    info = store.save(arrays, {"i": i})
    print(i, flush=True)
    if mode == "hold" and i == first:
        real_replace = os.replace
        def held_replace(src, dst):
            print("renaming", flush=True)
            time.sleep(30)
            real_replace(src, dst)
        os.replace = held_replace
    i += 1
"""


def expected_arrays(i: int) -> dict[str, npt.NDArray[Any]]:
    return {
        "history": np.arange(4_000_000, dtype=np.uint32) + np.uint32(i),
        "qs": np.full((512, 64), i, dtype=np.float32),
    }


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"writer printed nothing within {timeout} s; stderr:\n{err}")
    return proc.stdout.readline().strip()


@pytest.mark.integration
def test_sigkill_mid_write_always_leaves_a_complete_snapshot(tmp_path: Path) -> None:
    """Kill a real writer at random moments, and once while its temp file awaits the rename."""
    rng = random.Random(20240521)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    modes = ["random", "hold", "random", "random", "hold", "random"]
    for round_no, mode in enumerate(modes):
        first = round_no * 1000
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(first), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert read_line(proc, timeout=20.0) == str(first)
            if mode == "hold":
                assert read_line(proc, timeout=20.0) == "renaming"
            else:
                time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.kill()
            out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        reported = [int(line) for line in out.split() if line.isdigit()]
        last_done = max(reported, default=first)

        store = SnapshotStore(tmp_path, max_writes_per_hour=1)
        loaded = store.load_latest()
        assert loaded is not None, f"round {round_no}"
        assert store.corrupt_events == [], f"round {round_no}"
        i = loaded.meta["i"]
        if mode == "hold":
            assert i == first
            assert store.temp_files_removed == 1
        else:
            assert i in (last_done, last_done + 1), (round_no, i, last_done)
        for name, array in expected_arrays(i).items():
            np.testing.assert_array_equal(loaded.arrays[name], array)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
