"""Damaged state and a full disk never stop edge-agentd: real daemons, a real mosquitto.

Each kind of damage in the state directory (a random or truncated outbox, a damaged or missing
nonce store, a directory where the sequence file or the status file should be, a file where the
snapshot directory should be, a garbled overlay) is met at start: the daemon reaches READY,
ticks, and reports what it moved aside in its status file and as an event. A replayed signed
command stays refused after the nonce store was lost. The full-disk test mounts a small tmpfs
(root only; it fails, never skips, without it) and fills it before the daemon starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent import fsutil
from edge_agent.fleet.protocol import Command, CommandResult, ResultCode
from edge_agent_host.fleetctl import FleetClient
from tests.integration.daemon.test_daemon import Daemon, NotifySocket
from tests.integration.fleet.test_fleet_daemon import (
    Listener,
    Node,
    fleet_config,
    hub_for,
    hub_key,
    wait_until,
)
from tests.support.broker import MosquittoBroker
from tests.support.old_stores import old_outbox

pytestmark = pytest.mark.integration
__all__ = ["hub_key"]  # a fixture of test_fleet_daemon.py, used here


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(6000))


def _truncated_old_outbox(path: Path) -> None:
    """The SQLite outbox of earlier versions, cut short: damaged, found when it is migrated."""
    old_outbox(path, [("event", "t/x", os.urandom(400), False, 0.0, 4e9) for _ in range(300)])
    for sidecar in fsutil.SQLITE_SIDECARS:  # checkpointed into the file when it closed
        Path(f"{path}{sidecar}").unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "x").write_text("in the way")


def _file(path: Path) -> None:
    path.write_text("a file where a directory should be")


def _garbled_json(path: Path) -> None:
    path.write_text('{"version": 1, "groups": {"grid": "not an entry"')


#: damage -> (file or directory in the state dir, how to damage it, the part that reports it)
DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "outbox_random": ("outbox.log", _random, "outbox"),
    "outbox_old_truncated": ("outbox.sqlite3", _truncated_old_outbox, "outbox"),
    "nonces_random": ("command_nonces.log", _random, "nonces"),
    "nonces_directory": ("command_nonces.log", _directory, "nonces"),
    "sequence_directory": ("fleet_link.json", _directory, "sequence"),
    "sequence_garbled": ("fleet_link.json", _garbled_json, "sequence"),
    "snapshots_file": ("snapshots", _file, "snapshots"),
    "overlay_garbled": ("deployed.json", _garbled_json, "overlay"),
    "status_directory": ("status.json", _directory, "status"),
}
#: The damages met together by one daemon: each file or directory damaged one way in each set
#: (a daemon's start meets every kind of damage on its own path, so one start checks several;
#: two sets because three files are damaged two ways each).
DAMAGE_SETS: tuple[tuple[str, ...], ...] = (
    ("outbox_random", "nonces_random", "sequence_directory", "snapshots_file",
     "overlay_garbled", "status_directory"),
    ("outbox_old_truncated", "nonces_directory", "sequence_garbled"),
)  # fmt: skip


@pytest.fixture
def listener(mosquitto: MosquittoBroker) -> Iterator[Listener]:
    sniff = Listener(mosquitto)
    yield sniff
    sniff.close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


def recovered_events(listener: Listener, node: str, part: str) -> list[Any]:
    return [
        e
        for e in listener.events(node)
        if e.data.get("name") == "state_recovered" and e.data.get("part") == part
    ]


def test_every_kind_of_damage_is_in_one_set() -> None:
    met = [damage for damages in DAMAGE_SETS for damage in damages]
    assert sorted(met) == sorted(DAMAGE)  # each once
    for damages in DAMAGE_SETS:  # one way per file in a set
        names = [DAMAGE[damage][0] for damage in damages]
        assert len(set(names)) == len(names), damages


@pytest.mark.parametrize("damages", DAMAGE_SETS, ids="+".join)
def test_each_kind_of_damage_is_moved_aside_and_the_daemon_runs(
    mosquitto: MosquittoBroker,
    listener: Listener,
    nodes: list[Node],
    tmp_path: Path,
    damages: tuple[str, ...],
) -> None:
    node = Node(tmp_path, mosquitto, "pi-11")
    nodes.append(node)
    node.state.mkdir(parents=True)
    for damage in damages:
        name, make, _part = DAMAGE[damage]
        make(node.state / name)
    node.start()  # READY=1 (the daemon of old exited 2 here)
    wait_until((node.state / "status.json").is_file, "a status file")
    status = node.wait_status(
        lambda s: s["tick"]["ticks"] >= 10 and s["fleet"]["online"], "ticks and the broker"
    )
    files = status["state_files"]
    assert files["moved_aside"] == {DAMAGE[d][2]: 1 for d in damages}, files
    recovered = {r["path"]: r for r in files["recovered"]}
    assert len(recovered) == len(files["recovered"]) == len(damages), files
    for damage in damages:
        name, _make, part = DAMAGE[damage]
        recovery = recovered[str(node.state / name)]
        moved = Path(recovery["moved_to"])
        assert moved.name.startswith(f"{name}.corrupt-")
        assert fsutil.moved_aside(node.state, name) == [moved]
        assert status["counters"][f"state.moved_aside.{part}"] == 1
        # The event reaches the fleet as an alarm (through the fresh outbox).
        wait_until(
            lambda part=part: bool(recovered_events(listener, "pi-11", part)),
            f"the state_recovered event of {part}",
        )
        (event,) = recovered_events(listener, "pi-11", part)
        assert event.kind.value == "alarm"
        assert event.data["moved_to"] == str(moved)
    recoveries = [e for e in status["events"] if e["kind"] == "state_recovered"]
    assert len(recoveries) >= 1, status["events"]
    # What was rebuilt works: telemetry flows, the status file is rewritten.
    count = len(listener.telemetry("pi-11"))
    wait_until(lambda: len(listener.telemetry("pi-11")) > count + 2, "telemetry")
    assert node.stop() == 0
    assert "Traceback" not in node.log()


def _answer(hub: FleetClient, cmd: Command, node: str) -> CommandResult:
    hub.send(cmd, to=node)
    return hub.wait_result(cmd.nonce, 20)


@pytest.mark.parametrize("loss", ["random", "deleted"])
def test_a_replayed_command_stays_refused_after_the_nonce_store_is_lost(
    mosquitto: MosquittoBroker,
    nodes: list[Node],
    tmp_path: Path,
    hub_key: tuple[Path, Ed25519PrivateKey],
    loss: str,
) -> None:
    keys_dir, key = hub_key
    node = Node(tmp_path, mosquitto, "pi-12", keys_dir=keys_dir)
    nodes.append(node)
    node.start()
    db = node.state / "command_nonces.log"
    with hub_for(mosquitto, key, "pi-12") as hub:
        good = hub.make_command("pi-12", "ping", ttl_s=600)
        assert _answer(hub, good, "pi-12").code is ResultCode.OK
        assert node.stop() == 0
        for stale in (db, *(Path(f"{db}{s}") for s in fsutil.SQLITE_SIDECARS)):
            stale.unlink(missing_ok=True)
        if loss == "random":
            _random(db)
        node.start()
        status = node.wait_status(lambda s: s["fleet"]["online"], "online again")
        floor = status["fleet"]["nonces"]["replay_floor"]
        assert floor is not None
        assert floor >= good.expires  # the old command lies below the floor
        # The replay is refused although the store that knew its nonce is gone.
        replay = _answer(hub, good, "pi-12")
        assert replay.code is ResultCode.EXPIRED, replay
        assert replay.data["replay_floor"] == floor
        assert "lost its record of used nonces" in replay.detail
        # A command that expires after the floor cannot have been seen: obeyed, once.
        fresh = hub.make_command("pi-12", "ping", ttl_s=3600)
        assert _answer(hub, fresh, "pi-12").code is ResultCode.OK
        assert _answer(hub, fresh, "pi-12").code is ResultCode.REPLAYED
        # The floor outlives another restart (it is kept in the new store).
        assert node.stop() == 0
        node.start()
        node.wait_status(lambda s: s["fleet"]["online"], "online after the second restart")
        assert _answer(hub, good, "pi-12").code is ResultCode.EXPIRED
    status = node.status()
    if loss == "random":
        assert status["state_files"]["moved_aside"] == {}  # this process found a good store
        assert len(fsutil.moved_aside(node.state, db.name)) == 1
    assert node.stop() == 0


# ------------------------------------------------------------------------------- full disk
HOW_TO_RUN = (
    "this test mounts a 1 MiB tmpfs to fill it and needs root (mount -t tmpfs); run it as "
    "root: sudo .venv/bin/python -m pytest "
    "tests/integration/daemon/test_state_recovery.py -k full_disk"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards. Fails (does not skip) without the capability."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail(f"not root: {HOW_TO_RUN}")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"mount failed ({done.stderr.strip()}): {HOW_TO_RUN}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last block; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(64):  # and the last partial blocks
        try:
            (directory / f"f{i}").write_bytes(b"\0" * 512)
        except OSError:
            break
    return filler


def test_a_full_disk_never_stops_ticking_or_reconnecting(
    mosquitto: MosquittoBroker,
    listener: Listener,
    small_disk: Path,
    tmp_path: Path,
    hub_key: tuple[Path, Ed25519PrivateKey],
) -> None:
    keys_dir, key = hub_key
    state = small_disk / "state"
    state.mkdir()
    status_file = tmp_path / "status.json"  # on another file system, like /run under systemd
    config = fleet_config(tmp_path / "cfg.toml", state, mosquitto.port, "pi-13", keys_dir=keys_dir)
    text = config.read_text()
    config.write_text(text.replace(str(state / "status.json"), str(status_file)))
    filler = fill(small_disk)
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(config, notify)
    log = config.with_suffix(".log")

    def status() -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def wait_status(cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        wait_until(lambda: bool(status()) and cond(status()), what)
        return status()

    try:
        notify.wait_for("READY=1", 60)  # the daemon of old exited 2 here
        s = wait_status(
            lambda s: s["tick"]["ticks"] >= 20 and s["fleet"]["online"],
            "ticks and a connection with the disk full",
        )
        files = s["state_files"]
        for part in ("outbox", "nonces", "sequence"):
            assert files["storage_errors"].get(part, 0) >= 1, files
        assert files["moved_aside"] == {}  # full is not damaged: nothing is moved aside
        assert "No space left on device" in json.dumps(files) or "full" in json.dumps(files)
        assert s["counters"]["state.storage_errors"] >= 3
        assert s["fleet"]["link"]["outbox.volatile"] is True
        assert not (state / "fleet_link.json").exists()
        # Seen by the fleet: the birth, and telemetry that carries the storage errors.
        wait_until(lambda: bool(listener.envelopes("birth", "pi-13")), "the birth")
        wait_until(
            lambda: any(
                t.counters.get("state.storage_errors", 0) >= 3 for t in listener.telemetry("pi-13")
            ),
            "telemetry with the storage errors",
        )
        with hub_for(mosquitto, key, "pi-13") as hub:  # fail closed: no nonce can be recorded
            assert hub.command("pi-13", "ping", timeout_s=20).code is ResultCode.BUSY
        # Reconnecting keeps working, one attempt after the other, without a traceback.
        connects = s["fleet"]["link"]["connects"]
        mosquitto.restart()
        s = wait_status(
            lambda s: s["fleet"]["online"] and s["fleet"]["link"]["connects"] > connects,
            "a reconnect with the disk full",
        )
        assert not (state / "fleet_link.json").exists()
        # Space again: the next connection attempt persists the sequence number.
        filler.unlink()
        for extra in small_disk.glob("f*"):
            extra.unlink()
        connects = s["fleet"]["link"]["connects"]
        mosquitto.restart()
        s = wait_status(
            lambda s: (
                s["fleet"]["online"]
                and s["fleet"]["link"]["connects"] > connects
                and "sequence" not in s["state_files"]["storage_failing"]
            ),
            "the sequence file saved once there is space",
        )
        saved = json.loads((state / "fleet_link.json").read_text())
        assert saved["bdseq"] == s["fleet"]["link"]["bdseq"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        notify.close()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    # Logged, but at most once a minute per part: not one line per connection attempt.
    assert text.count("sequence: cannot save bdseq") <= 2, text[-3000:]
