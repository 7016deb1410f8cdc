"""Runtime state heals itself: each store moves damaged state aside and starts fresh, and keeps
working from memory when the storage refuses writes (a full disk).

Real files throughout. A full disk is simulated in-process here (an ``ENOSPC``/``EIO`` raised
where the write would fail); ``tests/integration/daemon/test_state_recovery.py`` fills a real
tmpfs under a real daemon.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import replace

from edge_agent import cli, fsutil
from edge_agent.bundle.signing import TrustedKeys, key_id, sign_bytes
from edge_agent.cli import run as cli_run
from edge_agent.daemon import status as status_view
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.errors import BundleError, ConfigError, EdgeAgentError, SnapshotError
from edge_agent.fleet import commands as commands_module
from edge_agent.fleet import link as link_module
from edge_agent.fleet import outbox as outbox_module
from edge_agent.fleet.commands import CommandVerifier, NonceStore
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.deploy import DeployManager
from edge_agent.fleet.link import STATE_FILE, FleetLink
from edge_agent.fleet.outbox import VOLATILE_MAX_BYTES, Outbox
from edge_agent.fleet.protocol import (
    Command,
    Envelope,
    Event,
    EventKind,
    ResultCode,
    encode,
)
from edge_agent.fleet.record_log import RecordLog
from edge_agent.state_faults import Recovery, StateFaults, StorageNotice

NOW = 1_800_000_000.0
FLEET = "plant"
NODE = "pi-01"


def garbage(path: Path, kind: str) -> bytes | None:
    """Damage ``path`` the way ``kind`` says; the bytes now in it (None for a directory)."""
    for stale in (path, *(Path(f"{path}{s}") for s in fsutil.SQLITE_SIDECARS)):
        if kind == "directory" or stale != path:
            stale.unlink(missing_ok=True)
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_text("a directory where a file should be")
        return None
    if kind == "random":
        data = os.urandom(8192)
    elif kind == "truncated":
        data = path.read_bytes()[: len(path.read_bytes()) // 2]
    elif kind == "empty_header":
        data = b"SQLite format 3\x00" + b"\x00" * 84
    else:
        raise AssertionError(kind)
    path.write_bytes(data)
    return data


def aside(directory: Path, name: str) -> list[Path]:
    return fsutil.moved_aside(directory, name)


def sqlite_error(code: int, message: str) -> sqlite3.DatabaseError:
    cls = sqlite3.OperationalError if code != sqlite3.SQLITE_CORRUPT else sqlite3.DatabaseError
    err = cls(message)
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, topic: str, payload: bytes, retain: bool) -> Hashable | None:
        self.sent.append(payload)
        return len(self.sent)


# ----------------------------------------------------------------------------------- fsutil
def test_move_aside_names_bounds_and_sidecars(tmp_path: Path) -> None:
    clock = iter([NOW + i for i in (0, 0, 1, 2, 3)])
    db = tmp_path / "x.sqlite3"
    moved = []
    for i in range(5):
        db.write_bytes(b"db %d" % i)
        Path(f"{db}-wal").write_bytes(b"wal %d" % i)
        sidecars = fsutil.SQLITE_SIDECARS
        moved.append(fsutil.move_aside(db, sidecars=sidecars, clock=lambda: next(clock)))
    # Two in the same second get -1; only the newest three stay, each with its -wal.
    assert moved[0].name == "x.sqlite3.corrupt-20270115T080000Z"
    assert moved[1].name == "x.sqlite3.corrupt-20270115T080000Z-1"
    assert [p.name for p in aside(tmp_path, "x.sqlite3")] == [p.name for p in moved[2:]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in moved[2:]] + [f"{p.name}-wal" for p in moved[2:]]
    )
    assert moved[4].read_bytes() == b"db 4"
    assert Path(f"{moved[4]}-wal").read_bytes() == b"wal 4"


def test_move_aside_into_a_directory_keeps_the_newest_of_any_name(tmp_path: Path) -> None:
    into = tmp_path / "corrupt"
    for i in range(4):
        (tmp_path / f"f{i}").write_text(str(i))
        fsutil.move_aside(tmp_path / f"f{i}", into=into, keep=2, clock=lambda i=i: NOW + i)
    assert sorted(p.name.split(".")[0] for p in into.iterdir()) == ["f2", "f3"]
    # A moved-aside directory goes like a file.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    fsutil.move_aside(tmp_path / "d", keep=0)
    assert not (tmp_path / "d").exists()
    assert aside(tmp_path, "d") == []


def test_storage_errors_are_not_damage() -> None:
    assert fsutil.is_storage_error(OSError(errno.ENOSPC, "full"))
    assert fsutil.is_storage_error(OSError(errno.EROFS, "read-only"))
    assert not fsutil.is_storage_error(IsADirectoryError(errno.EISDIR, "dir"))
    full = sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full")
    corrupt = sqlite_error(sqlite3.SQLITE_CORRUPT, "database disk image is malformed")
    other = sqlite_error(sqlite3.SQLITE_ERROR, "no such column: x")
    assert fsutil.is_storage_error(full)
    assert not fsutil.sqlite_damaged(full, opening=True)
    assert fsutil.sqlite_damaged(corrupt, opening=False)
    assert fsutil.sqlite_damaged(other, opening=True)  # opening: not our schema
    assert not fsutil.sqlite_damaged(other, opening=False)  # running: never delete on a bug


# ------------------------------------------------------------------------------ state faults
def test_state_faults_log_a_part_once_a_minute_and_fold_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mono = [0.0]
    faults = StateFaults(monotonic=lambda: mono[0], wall=lambda: NOW)
    err = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.ERROR, logger="edge_agent.state_faults"):
        for second in range(0, 130, 5):
            mono[0] = float(second)
            faults.storage_error("sequence", err, "save bdseq")
        faults.storage_error("outbox", err, "commit")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # sequence at 0, 60 and 120 s; outbox once
    assert "(11 more since the last such line)" in lines[1]
    notices = faults.take_notices()
    assert [(n.part, n.folded) for n in notices if isinstance(n, StorageNotice)] == [
        ("sequence", 0),
        ("sequence", 11),
        ("sequence", 11),
        ("outbox", 0),
    ]
    metrics = faults.metrics()
    assert metrics["storage_errors.sequence"] == 26
    assert metrics["storage_errors"] == 27
    assert metrics["storage_failing"] == 2
    faults.storage_ok("sequence")
    status = faults.status()
    assert status["storage_failing"] == ["outbox"]
    assert status["last_storage_error"]["part"] == "outbox"
    assert "No space left" in status["last_storage_error"]["error"]


# ----------------------------------------------------------------------------------- outbox
@pytest.mark.parametrize("kind", ["random", "empty_header", "directory"])
def test_a_damaged_outbox_is_moved_aside_and_a_fresh_one_works(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "outbox.log"
    with Outbox(path) as box:
        for i in range(400):
            box.put("t/x", os.urandom(300) + b"%d" % i, "event")
    damaged = garbage(path, kind)
    faults = StateFaults()
    box = Outbox(path, faults=faults)
    assert box.recovered == 1
    assert not box.volatile
    assert box.depth_rows == 0
    assert faults.moved["outbox"] == 1
    (moved,) = aside(tmp_path, "outbox.log")
    if damaged is not None:
        assert moved.read_bytes() == damaged
    else:
        assert (moved / "inside").is_file()
    ((notice),) = faults.take_notices()
    assert isinstance(notice, Recovery)
    assert notice.moved_to == str(moved)
    wire = Wire()
    box.put("t/y", b"after", "event")
    box.flush()
    assert box.pump(wire) == 1
    assert box.on_ack(1)
    box.close()
    with Outbox(path) as again:  # the fresh file is a good outbox
        assert again.recovered == 0
        assert again.depth_rows == 0


def test_a_truncated_outbox_keeps_the_messages_before_the_cut(tmp_path: Path) -> None:
    """A file cut short is what a crash in the middle of a commit leaves: the torn record is
    dropped (counted, logged), every whole record before it is kept, nothing is moved aside."""
    path = tmp_path / "outbox.log"
    with Outbox(path, commit_every=1) as box:  # one record a commit
        for i in range(400):
            box.put("t/x", os.urandom(300) + b"%d" % i, "event")
    garbage(path, "truncated")
    cut = path.stat().st_size
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    log, whole_records = RecordLog.open(copy, outbox_module.MAGIC)
    log.close()
    assert 100 < len(whole_records) < 400
    faults = StateFaults()
    with Outbox(path, faults=faults, max_inflight=1000) as box:
        assert (box.recovered, box.torn) == (0, 1)
        assert faults.moved["outbox"] == 0
        assert box.depth_rows == len(whole_records)
        wire = Wire()
        assert box.pump(wire) == box.depth_rows
        assert [p[300:] for p in wire.sent] == [b"%d" % i for i in range(box.depth_rows)]
        assert path.stat().st_size < cut  # the torn tail is gone: new records follow whole ones
        box.put("t/y", b"after", "event")
    with Outbox(path, max_inflight=1000) as again:
        assert again.torn == 0
        assert list(again.payloads())[-1] == b"after"


def test_corruption_found_while_running_starts_a_fresh_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    faults = StateFaults()
    box = Outbox(path, faults=faults)
    box.put("t/x", b"one", "event")
    box.flush()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the committed message's last byte, behind the outbox's back
    path.write_bytes(bytes(data))
    assert box.pump(Wire()) == 0  # the read failed its CRC: moved aside, started fresh
    assert box.recovered == 1
    assert box.lost == 1
    assert len(aside(tmp_path, "outbox.log")) == 1
    box.put("t/x", b"two", "event")
    wire = Wire()
    assert box.pump(wire) == 1
    box.close()


def test_a_full_disk_at_open_runs_the_outbox_in_memory_then_moves_it_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.log"
    with Outbox(path) as box:
        box.put("t/old", b"from before", "event")
    real_open = RecordLog.open_with
    full = [True]

    def open_with(*args: Any, **kwargs: Any) -> Any:
        if full[0]:
            raise OSError(errno.EIO, "Input/output error")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(outbox_module.RecordLog, "open_with", open_with)
    faults = StateFaults()
    box = Outbox(path, max_bytes=64 * 1024 * 1024, faults=faults, retry_interval_s=0.0)
    assert box.volatile
    assert box.capacity == VOLATILE_MAX_BYTES  # RAM, whatever max_bytes says
    assert faults.failing("outbox")
    assert path.exists()  # a good file is never moved aside for a storage error
    box.put("t/new", b"while full", "event")
    box.flush()  # retries: still full
    assert box.volatile
    full[0] = False
    box.flush()  # retries: the file opens, the message in memory moves there
    assert not box.volatile
    assert not faults.failing("outbox")
    wire = Wire()
    assert box.pump(wire) == 2
    assert wire.sent == [b"from before", b"while full"]
    box.close()
    with Outbox(path) as again:  # and it is in the file
        assert list(again.payloads()) == [b"from before", b"while full"]


def refuse_writes(box: Outbox) -> None:
    """The outbox's file refuses every append from now on (a full disk)."""

    def append(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    box._log.append = append  # type: ignore[method-assign,union-attr]


def accept_writes(box: Outbox) -> None:
    del box._log.append  # type: ignore[union-attr]  # the class's again: space again


def test_a_commit_refused_for_space_loses_that_batch_and_keeps_sending(tmp_path: Path) -> None:
    faults = StateFaults()
    box = Outbox(tmp_path / "outbox.log", faults=faults, retry_interval_s=3600.0)
    box.put("t/x", b"committed", "event")
    box.flush()
    refuse_writes(box)
    box.put("t/x", b"lost 1", "event")
    box.put("t/x", b"lost 2", "telemetry")
    box.flush()  # no exception: counted
    assert box.lost == 2
    assert box.commit_failing
    assert box.depth_rows == 1
    assert faults.errors["outbox"] == 1
    wire = Wire()
    assert box.pump(wire) == 1  # what was committed before still goes out
    assert wire.sent == [b"committed"]
    accept_writes(box)
    box.put("t/x", b"next", "event")
    box.flush()
    assert not box.commit_failing
    assert not faults.failing("outbox")
    box.close()


def test_a_failing_outbox_probes_the_storage_until_it_takes_writes_again(tmp_path: Path) -> None:
    faults = StateFaults()
    box = Outbox(tmp_path / "outbox.log", faults=faults, retry_interval_s=0.0)
    refuse_writes(box)
    box.put("t/x", b"lost", "event")
    box.flush()
    assert box.commit_failing
    box.flush()  # nothing to commit: a probe write, refused too
    assert box.commit_failing
    assert faults.errors["outbox"] == 2
    box.put("t/x", b"lost too", "event")
    box.flush()  # an open transaction is committed (and fails), never probed over
    assert faults.errors["outbox"] == 3
    assert box.lost == 2
    accept_writes(box)
    box.flush()  # the probe succeeds
    assert not box.commit_failing
    assert not faults.failing("outbox")
    box.close()


# ------------------------------------------------------------------------------ nonce store
TRUSTED_KEY = Ed25519PrivateKey.generate()
KEYS = TrustedKeys([TRUSTED_KEY.public_key()])


def signed(expires: float, nonce: bytes | None = None) -> Command:
    cmd = Command(
        target=NODE,
        nonce=nonce or os.urandom(16),
        expires=expires,
        key_id=key_id(TRUSTED_KEY.public_key()),
        name="ping",
    )
    return replace(cmd, signature=sign_bytes(TRUSTED_KEY, cmd.signing_bytes(FLEET)))


def verifier(store: NonceStore, now: Callable[[], float]) -> CommandVerifier:
    return CommandVerifier(KEYS, fleet=FLEET, node_id=NODE, nonces=store, max_ttl_s=600, clock=now)


@pytest.mark.parametrize("kind", ["random", "truncated", "directory"])
def test_a_lost_nonce_store_refuses_what_it_may_have_obeyed(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "command_nonces.log"
    now = [NOW]
    store = NonceStore(path, clock=lambda: now[0], lost_floor_s=600)
    old = signed(NOW + 60)
    assert verifier(store, lambda: now[0]).verify(old) is None  # obeyed once
    for _ in range(200):
        store.record(os.urandom(16), NOW + 60)
    store.close()
    now[0] = NOW + 10
    garbage(path, kind)
    faults = StateFaults()
    store = NonceStore(path, clock=lambda: now[0], lost_floor_s=600, faults=faults)
    assert faults.moved["nonces"] == 1
    assert store.replay_floor == NOW + 10 + 600
    v = verifier(store, lambda: now[0])
    replay = v.verify(old)
    assert replay is not None
    assert replay.code is ResultCode.EXPIRED
    assert replay.data == {"replay_floor": NOW + 610}
    # A command that expires before the floor may also be a replay; at the floor it cannot be.
    assert v.verify(signed(NOW + 600)).code is ResultCode.EXPIRED  # type: ignore[union-attr]
    assert v.verify(signed(NOW + 610)) is None
    store.close()
    # The floor survives a restart (it is in the new database).
    store = NonceStore(path, clock=lambda: now[0], lost_floor_s=600)
    assert store.replay_floor == NOW + 610
    assert verifier(store, lambda: now[0]).verify(old).code is ResultCode.EXPIRED  # type: ignore[union-attr]
    store.close()


def test_a_missing_nonce_store_is_lost_only_when_the_node_ran_before(tmp_path: Path) -> None:
    first = NonceStore(tmp_path / "a.log", clock=lambda: NOW, missing_is_lost=False)
    assert first.replay_floor == 0.0
    first.close()
    deleted = NonceStore(
        tmp_path / "b.log", clock=lambda: NOW, missing_is_lost=True, lost_floor_s=3600
    )
    assert deleted.replay_floor == NOW + 3600
    assert deleted.lost.startswith("missing")
    deleted.close()


def test_a_nonce_store_the_storage_refuses_fails_closed_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = RecordLog.open
    full = [True]

    def open_log(path: Path, magic: bytes) -> tuple[RecordLog, list[bytes]]:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, magic)

    monkeypatch.setattr(commands_module.RecordLog, "open", open_log)
    faults = StateFaults()
    store = NonceStore(tmp_path / "n.log", clock=lambda: NOW, faults=faults, retry_interval_s=0.0)
    assert not store.available
    busy = verifier(store, lambda: NOW).verify(signed(NOW + 60))
    assert busy is not None
    assert busy.code is ResultCode.BUSY
    assert faults.failing("nonces")
    assert not list(tmp_path.iterdir())  # nothing was moved aside or created
    full[0] = False
    assert verifier(store, lambda: NOW).verify(signed(NOW + 60)) is None
    assert not faults.failing("nonces")
    store.close()


def test_a_nonce_write_refused_for_space_refuses_the_command(tmp_path: Path) -> None:
    store = NonceStore(tmp_path / "n.log", clock=lambda: NOW)

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store._log.append = full  # type: ignore[method-assign,union-attr]
    cmd = signed(NOW + 60)
    outcome = verifier(store, lambda: NOW).verify(cmd)
    assert outcome is not None
    assert outcome.code is ResultCode.BUSY
    assert len(store) == 0
    store.close()


# -------------------------------------------------------------------------- sequence file
class Mono:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_link(root: Path, broker: MemoryBroker, faults: StateFaults, mono: Mono) -> FleetLink:
    return FleetLink(
        MemoryTransport(broker, f"ea-{NODE}"),
        Outbox(root / "outbox.log"),
        NODE,
        FLEET,
        root,
        monotonic=mono,
        clock_sync_check=lambda: True,
        faults=faults,
        save_retry_s=30.0,
    )


@pytest.mark.parametrize("kind", ["directory", "not_json", "no_bdseq"])
def test_a_damaged_sequence_file_is_moved_aside_and_the_count_restarts(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / STATE_FILE
    for stale in (path, *(Path(f"{path}{s}") for s in fsutil.SQLITE_SIDECARS)):
        if kind == "directory" or stale != path:
            stale.unlink(missing_ok=True)
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("{not json" if kind == "not_json" else json.dumps({"bdseq": -4}))
    faults = StateFaults()
    link = make_link(tmp_path, MemoryBroker(), faults, Mono())
    assert link.bdseq is None
    assert faults.moved["sequence"] == 1
    link.start()
    link.pump()
    assert link.online
    assert link.bdseq == 0
    assert json.loads(path.read_text())["bdseq"] == 0
    link.outbox.close()


def test_a_full_disk_never_stops_the_link_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = link_module.write_atomic
    full = [True]

    def write_atomic(path: Path, data: bytes, **kwargs: Any) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, **kwargs)

    monkeypatch.setattr(link_module, "write_atomic", write_atomic)
    broker, faults, mono = MemoryBroker(), StateFaults(), Mono()
    link = make_link(tmp_path, broker, faults, mono)
    with caplog.at_level(logging.INFO):
        link.start()
        link.pump()
        assert link.online  # connected although the bdseq could not be saved
        assert link.bdseq == 0
        for _ in range(3):  # reconnects, each failing to save: no traceback, counted
            link.transport.disconnect()  # type: ignore[attr-defined]
            link.pump()
            link.transport.connect(link._make_will)
            link.pump()
        assert link.online
        assert link.bdseq == 3  # kept in memory, still incremented per attempt
    assert faults.errors["sequence"] == 4
    assert not any(r.exc_info for r in caplog.records)
    assert not (tmp_path / STATE_FILE).exists()
    full[0] = False
    mono.now += 10
    link.pump()  # not yet due
    assert not (tmp_path / STATE_FILE).exists()
    mono.now += 30
    link.pump()  # retried: persisted now, while connected
    assert json.loads((tmp_path / STATE_FILE).read_text())["bdseq"] == 3
    assert not faults.failing("sequence")
    link.outbox.close()


def test_a_start_is_above_every_session_number_on_disk_the_outbox_included(
    tmp_path: Path,
) -> None:
    """Sessions whose number could not be saved (a full disk) may have left messages in the
    outbox: the next session starts above the newest number any of them carries."""
    (tmp_path / STATE_FILE).write_text(json.dumps({"bdseq": 4}))
    outbox = Outbox(tmp_path / "outbox.log")
    for bdseq in (5, 15, 9):
        env = Envelope(
            type="event", node=NODE, seq=1, bdseq=bdseq, ts=1.0, clock_synced=False,
            body=Event(kind=EventKind.ALARM, detail="left from a session"),
        )  # fmt: skip
        outbox.put("t", encode(env), "event")
    outbox.put("t", b"\xc1 not msgpack", "event")  # skipped
    outbox.flush()
    outbox.close()
    broker, faults, mono = MemoryBroker(), StateFaults(), Mono()
    link = make_link(tmp_path, broker, faults, mono)
    assert link.bdseq == 15
    link.start()
    link.pump()
    assert link.online
    assert link.bdseq == 16
    assert json.loads((tmp_path / STATE_FILE).read_text())["bdseq"] == 16
    link.outbox.close()


def test_a_full_disk_writes_the_number_over_the_old_file_and_the_stop_saves_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = link_module.write_atomic
    full = [False]

    def write_atomic(path: Path, data: bytes, **kwargs: Any) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, **kwargs)

    monkeypatch.setattr(link_module, "write_atomic", write_atomic)
    broker, faults, mono = MemoryBroker(), StateFaults(), Mono()
    link = make_link(tmp_path, broker, faults, mono)
    link.start()
    link.pump()
    assert link.bdseq == 0
    full[0] = True
    for _ in range(12):  # sessions 1 ... 12 with the disk full
        link.transport.disconnect()  # type: ignore[attr-defined]
        link.pump()
        link.transport.connect(link._make_will)  # type: ignore[attr-defined]
        link.pump()
    assert link.bdseq == 12
    text = (tmp_path / STATE_FILE).read_text()
    assert json.loads(text)["bdseq"] == 12  # over the old file, padded to its length
    assert faults.failing("sequence")
    full[0] = False
    link.stop()  # the storage is back: saved the ordinary way on the way out
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved == {"bdseq": 12, "node": NODE, "fleet": FLEET}
    assert not faults.failing("sequence")
    link.outbox.close()


# ------------------------------------------------------------------------- overlay, journal
@pytest.mark.parametrize("what", ["overlay", "journal", "bundles"])
def test_damaged_deployment_state_is_moved_aside_at_start(tmp_path: Path, what: str) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    kept = bundles / ("a" * 64 + ".tar")
    kept.write_bytes(b"a deployed bundle")
    if what == "overlay":
        (tmp_path / "deployed.json").write_text('{"version": 1, "groups": {"g": 5}}')
    elif what == "journal":
        (bundles / "deploy.json").mkdir()
    else:
        kept.unlink()
        bundles.rmdir()
        bundles.write_text("a file where the bundles directory should be")
    faults = StateFaults()
    manager = DeployManager(tmp_path, bundle_keys=None, faults=faults)
    manager.recover()
    assert faults.moved[what] == 1
    assert manager.journal is None
    assert manager.overlay.entries == {}
    assert bundles.is_dir()
    if what == "overlay":
        assert manager.overlay.recovered
        assert "damaged" in manager.overlay.load_error
        assert kept.exists()  # the overlay can be put back by hand
        assert len(aside(tmp_path, "deployed.json")) == 1
    elif what == "journal":
        assert len(aside(bundles, "deploy.json")) == 1
    else:
        (moved,) = aside(tmp_path, "bundles")
        assert moved.read_text().startswith("a file")


# ------------------------------------------------------------------------ snapshots, status
def test_a_file_where_the_snapshot_directory_should_be(tmp_path: Path) -> None:
    snapdir = tmp_path / "snapshots"
    snapdir.write_bytes(b"not a directory")
    faults = StateFaults()
    store = SnapshotStore(snapdir, max_writes_per_hour=10, faults=faults)
    assert snapdir.is_dir()
    assert faults.moved["snapshots"] == 1
    assert store.load_latest() is None
    info = store.save({"a": np.arange(3)}, {}, now=0.0)
    assert info is not None
    # Replaced again while running: the next save moves it aside too.
    for p in snapdir.iterdir():
        p.unlink()
    snapdir.rmdir()
    snapdir.write_bytes(b"again")
    assert store.save({"a": np.arange(3)}, {}, now=1.0) is not None
    assert faults.moved["snapshots"] == 2
    assert len(aside(tmp_path, "snapshots")) == 2


def test_a_snapshot_write_refused_for_space_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = StateFaults()
    store = SnapshotStore(tmp_path / "snapshots", max_writes_per_hour=10, faults=faults)

    def no_space(*_args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edge_agent.daemon.snapshots.store.write_body", no_space)
    with pytest.raises(SnapshotError, match="No space"):
        store.save({"a": np.arange(3)}, {}, now=0.0)
    assert store.stats()["write_errors"] == 1
    assert faults.errors["snapshots"] == 1
    assert list((tmp_path / "snapshots").iterdir()) == []  # no temporary file left
    monkeypatch.undo()
    assert store.save({"a": np.arange(3)}, {}, now=1.0) is not None
    assert not faults.failing("snapshots")


def test_the_status_file_moves_a_directory_aside_and_counts_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "status.json"
    path.mkdir()
    faults = StateFaults()
    status_view.write_status(path, {"ok": 1}, faults)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert faults.moved["status"] == 1

    def no_space(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(status_view, "write_atomic", no_space)
    status_view.write_status(path, {"ok": 2}, faults)  # never raises
    assert faults.errors["status"] == 1
    assert faults.status()["storage_failing"] == ["status"]


# -------------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad key"), 2),
        (BundleError("bad signature"), 2),
        (EdgeAgentError("something at run time"), 1),
    ],
)
def test_run_exits_2_only_for_a_refused_configuration(
    monkeypatch: pytest.MonkeyPatch, error: EdgeAgentError, code: int
) -> None:
    def run(_args: Any) -> int:
        raise error

    monkeypatch.setattr(cli_run, "cmd_run", run)
    assert cli.main(["run", "--duration", "0"]) == code
