"""After a full disk the next start announces a new session, never an old one again.

A node's session number (``bdseq``) orders everything it says: peers that saw session 15 die
ignore messages of sessions up to 15. The daemon used to keep the number only in memory while the
disk was full, so the next two starts both announced the last number saved before it filled.
Here a real daemon, on the broker ``edge-agent-host broker init`` configured (TLS, ACL), keeps its
state on a 1 MiB tmpfs that is filled to the last block; the broker restarts three times (three
sessions), the daemon is stopped and started twice with the disk still full, and every birth has
a number above the one before. When space returns, the number is saved the ordinary way.

Needs root for the tmpfs (``mount -t tmpfs``); without it the test fails with how to run it.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.integration.daemon.test_daemon import Daemon, NotifySocket
from tests.integration.daemon.test_state_recovery import fill, small_disk
from tests.integration.fleet.test_broker_acl import Client, broker_init, start_broker
from tests.integration.fleet.test_fleet_daemon import TOPICS, wait_until
from tests.support.broker import free_port

pytestmark = pytest.mark.integration
__all__ = ["small_disk"]  # a fixture of test_state_recovery.py, used here


def test_after_a_full_disk_every_start_announces_a_new_session(
    tmp_path: Path, small_disk: Path
) -> None:
    port = free_port()
    out = broker_init(tmp_path / "pki", port, "--node", "pi-d", "--hub", "hub")
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    clients = out / "clients"
    state = small_disk / "state"
    config = tmp_path / "pi-d.toml"
    config.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{tmp_path / "status.json"}"
tick_hz = 10
log_level = "info"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 4
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

{(clients / "pi-d" / "mqtt.toml").read_text()}keepalive_s = 5
reconnect_initial_s = 0.05
reconnect_max_s = 0.3
"""
    )
    sniffer = Client(broker, clients / "hub", subscribe=TOPICS.birth("pi-d")).ready()
    daemons: list[Daemon] = []
    notify: list[NotifySocket] = []

    def start() -> Daemon:
        notify.append(NotifySocket(tmp_path / f"n{len(notify)}.sock"))
        daemon = Daemon(config, notify[-1])
        daemons.append(daemon)
        notify[-1].wait_for("READY=1", 60)
        return daemon

    def births() -> list[int]:
        return [e.bdseq for t, e, _ in sniffer.heard if e is not None and t == TOPICS.birth("pi-d")]

    def next_birth(after: int, what: str) -> int:
        wait_until(lambda: any(b > after for b in births()[-1:]), what)
        return births()[-1]

    def saved() -> int:
        value: int = json.loads((state / "fleet_link.json").read_text())["bdseq"]
        return value

    try:
        daemon = start()
        assert next_birth(-1, "the first session") == 0
        assert saved() == 0
        filler = fill(small_disk)
        last = 0
        # Each birth above the one before (a daemon whose first reconnection fails on a busy
        # machine starts one session more: above, never the same again).
        for _ in range(3):  # three sessions with the disk full
            broker.restart()
            bdseq = next_birth(last, "a new session after the broker restarted")
            assert bdseq > last, births()
            last = bdseq
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        for _ in range(2):  # two starts, the disk still full: each one a new session
            daemon = start()
            bdseq = next_birth(last, "the session of a start with the disk full")
            assert bdseq > last, births()
            last = bdseq
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        assert saved() == last  # written over the old file in place
        # Space again: the stop saves the number the ordinary way (a new file).
        daemon = start()
        last = next_birth(last, "the session after space came back")
        filler.unlink()
        for extra in small_disk.glob("f*"):
            extra.unlink()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert saved() == last
        assert (
            "sequence"
            not in json.loads((tmp_path / "status.json").read_text())["state_files"][
                "storage_failing"
            ]
        )
        seen = births()  # in order, each once or again when the sniffer reconnected
        assert seen == sorted(seen)
        assert (seen[0], seen[-1]) == (0, last)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()
        for n in notify:
            n.close()
        sniffer.close()
        broker.kill()
    log = config.with_suffix(".log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
