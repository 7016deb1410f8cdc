"""The hub service's broker session outlives the process.

The hub's MQTT session used to be clean: what the fleet published while no hub was connected, and
what the broker had sent to a hub that was SIGKILLed before acknowledging it, was lost. Now the
service resumes a persistent session (fixed client id, ``clean_start`` False, ``[mqtt]
session_expiry_s``) on the broker ``edge-agent-host broker init`` configured (TLS client
certificates, the ACL, ``persistence``, bounded queues), with real node daemons, a loader that
publishes as a node identity of its own, and the real service on SQLite:

* the hub stopped (SIGTERM), the nodes publish, the hub started again: every telemetry and event
  number of every daemon, and every sequence the loader was acknowledged, is in the database once;
* the hub frozen (SIGSTOP) in the middle of the loader's bounded burst, so that the broker has
  sent it messages it will never acknowledge, the burst finished, the hub SIGKILLed and started
  again: nothing the nodes handed to the broker is missing. The broker
  re-sends what it had delivered unacknowledged and the spool replays what was acknowledged and
  not stored, so a message may be heard twice: the store keeps one row (telemetry, events and
  results are unique by ``(node, seq, ts)``);
* the hub stopped, the loader publishes, the broker restarts (SIGTERM): ``persistence`` kept the
  hub's session and its queue, which arrives when the hub starts.
"""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.fleet.protocol import Envelope, Telemetry, encode
from tests.integration.fleet.test_fleet_daemon import TOPICS, Node, wait_until
from tests.integration.hub.test_hubd import (
    Hub,
    db_rows,
    hubs,  # noqa: F401 - fixture
    nodes,  # noqa: F401 - fixture
    sqlite_table,
    wait_recorded,
)
from tests.integration.hub.test_hubd_faults import (
    secure_broker,  # noqa: F401 - fixture
    secure_hub,
    start_secure_nodes,
)
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration

NODES = ("n1", "n2")
LOADER = "load"


class Loader:
    """A node identity (``load``) that publishes numbered telemetry at QoS 1 as fast as the
    broker acknowledges it; ``acked`` holds the sequence numbers the broker took."""

    def __init__(self, broker: MosquittoBroker, files: Path) -> None:
        self._lock = threading.Lock()
        self._seq_of: dict[int, int] = {}
        self._early: dict[int, Any] = {}
        self.acked: set[int] = set()
        self.refused: list[str] = []
        self.sent = 0
        self._connected = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=LOADER,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        ctx = ssl.create_default_context(cafile=str(files / "ca.crt"))
        ctx.load_cert_chain(files / f"{LOADER}.crt", files / f"{LOADER}.key")
        self.client.tls_set_context(ctx)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self._connected.wait(30), "the loader did not connect"

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._lock:
            seq = self._seq_of.pop(mid, None)
            if seq is None:  # the PUBACK came before publish() returned the mid
                self._early[mid] = rc
            else:
                self._settle(seq, rc)

    def _settle(self, seq: int, rc: Any) -> None:
        if rc.is_failure:
            self.refused.append(str(rc))
        else:
            self.acked.add(seq)

    def publish(self, count: int) -> None:
        """Publish the next ``count`` sequence numbers (paho queues beyond its window)."""
        for _ in range(count):
            self.sent += 1
            seq = self.sent
            env = Envelope(
                type=Telemetry.TYPE,
                node=LOADER,
                seq=seq,
                bdseq=1,
                ts=time.time(),
                clock_synced=True,
                body=Telemetry(
                    uptime_s=float(seq),
                    rss_bytes=0,
                    budget_used_bytes=0,
                    budget_total_bytes=1,
                    ticks=seq,
                    tick_p50_ms=0.0,
                    tick_p99_ms=0.0,
                    overruns=0,
                ),
            )
            # Not under the lock: paho holds its own while it calls on_publish.
            info = self.client.publish(TOPICS.telemetry(LOADER), encode(env), qos=1)
            with self._lock:
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._seq_of[info.mid] = seq
                else:
                    self._settle(seq, early)

    def wait_acked(self, timeout: float = 120.0) -> set[int]:
        """Every sequence published so far acknowledged by the broker (none refused)."""
        wait_until(lambda: len(self.acked) + len(self.refused) >= self.sent, "PUBACKs", timeout)
        assert not self.refused, self.refused[:5]
        return set(self.acked)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def session_hub(tmp: Path, broker: MosquittoBroker, clients: Path) -> Hub:
    """The hub service configured from ``clients/hub-a/hub.toml`` as written, on SQLite."""
    return secure_hub(tmp, broker, clients, sqlite_table())


def start_fleet(tmp: Path, broker: MosquittoBroker, clients: Path, into: list[Node]) -> list[Node]:
    return start_secure_nodes(tmp, broker, clients, NODES, into)


def loader_rows(hub: Hub) -> list[int]:
    rows = db_rows(hub, lambda db: db.telemetry(LOADER, limit=1_000_000))
    return sorted(int(r["seq"]) for r in rows)


def wait_loader_stored(hub: Hub, want: set[int], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    got: list[int] = []
    while time.monotonic() < deadline:
        got = loader_rows(hub)
        if got == sorted(want):
            return
        time.sleep(0.2)
    missing = sorted(want - set(got))
    pytest.fail(f"{len(want)} acknowledged, {len(got)} rows; missing {missing[:20]} ...")


def resumed(status: dict[str, Any]) -> bool:
    """The status says the broker still had the hub's session when it connected (counted a
    moment after CONNACK: the queue it delivers may be stored first)."""
    return bool(status["counters"].get("hub.mqtt.sessions_resumed", 0) >= 1)


def subscribed(hub: Hub, loader: Loader) -> set[int]:
    """Wait until the hub's new session holds its subscriptions (its READY comes before them):
    probes until one reaches the database. The probes the broker took before the subscriptions
    had no subscriber (nothing could store them): returned, to be left out of what must arrive."""
    for _ in range(120):
        loader.publish(1)
        acked = loader.wait_acked()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            stored = set(loader_rows(hub))
            if stored:
                return acked - stored
            time.sleep(0.05)
    pytest.fail("no probe of the loader reached the hub's database")


def test_what_the_fleet_publishes_while_the_hub_is_stopped_arrives_once_when_it_starts(
    tmp_path: Path,
    secure_broker: tuple[MosquittoBroker, Path],  # noqa: F811 - fixture
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
) -> None:
    broker, clients = secure_broker
    hub = session_hub(tmp_path, broker, clients)
    hubs.append(hub)
    hub.start()
    loader = Loader(broker, clients / LOADER)
    try:
        unheard = subscribed(hub, loader)
        assert hub.stop() == 0  # SIGTERM: a normal DISCONNECT; the broker keeps the session

        fleet = start_fleet(tmp_path, broker, clients, nodes)
        for node in fleet:
            node.wait_status(
                lambda s: s["fleet"]["telemetry_published"] >= 5, "telemetry published"
            )
        loader.publish(500)
        acked = loader.wait_acked()
        for node in fleet:
            assert node.stop() == 0
    finally:
        loader.close()

    hub.start()
    for node in fleet:
        sent_tel, _ = wait_recorded(hub.database, node)
        assert sent_tel >= 5
    wait_loader_stored(hub, acked - unheard)
    status = hub.wait_status(resumed, "the session resumed")
    assert "the broker's session resumed" in hub.log()
    assert status["queue"]["dropped"] == 0
    assert hub.stop() == 0
    assert "Traceback" not in hub.log(), hub.log()[-3000:]


def test_a_hub_killed_mid_flow_loses_nothing_the_fleet_handed_to_the_broker(
    tmp_path: Path,
    secure_broker: tuple[MosquittoBroker, Path],  # noqa: F811 - fixture
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
) -> None:
    broker, clients = secure_broker
    hub = session_hub(tmp_path, broker, clients)
    hubs.append(hub)
    hub.start()
    loader = Loader(broker, clients / LOADER)
    try:
        unheard = subscribed(hub, loader)
        fleet = start_fleet(tmp_path, broker, clients, nodes)
        hub.wait_status(lambda s: s["database"]["written"] >= 20, "the fleet written")
        heard = hub.status()["heard"].get("received.telemetry", 0)
        loader.publish(1500)  # a bounded burst; the hub dies in its middle
        hub.wait_status(
            lambda s: s["heard"].get("received.telemetry", 0) >= heard + 300, "the burst heard"
        )
        assert hub.proc is not None
        # Frozen, then killed: what the broker has sent it by then (its in-flight window) is
        # delivered and never acknowledged, whatever the speed of this machine.
        os.kill(hub.proc.pid, signal.SIGSTOP)
        loader.publish(1500)
        acked = loader.wait_acked()  # handed to the broker
        assert len(acked) == loader.sent  # every one, none refused
        hub.proc.kill()
        hub.proc.wait(10)
        for node in fleet:  # they publish on meanwhile
            node.wait_status(
                lambda s: s["fleet"]["telemetry_published"] >= 10, "telemetry published"
            )
        hub.start()
        for node in fleet:
            assert node.stop() == 0
    finally:
        loader.close()

    for node in fleet:
        wait_recorded(hub.database, node)
    wait_loader_stored(hub, acked - unheard)
    status = hub.wait_status(
        lambda s: s["queue"]["depth"] == 0 and s["spool"]["pending"] == 0 and resumed(s),
        "nothing held, the session resumed",
    )
    assert status["queue"]["dropped"] == 0
    assert hub.stop() == 0
    assert "Traceback" not in hub.log(), hub.log()[-3000:]


def test_what_the_broker_queued_for_an_absent_hub_survives_a_broker_restart(
    tmp_path: Path,
    secure_broker: tuple[MosquittoBroker, Path],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
) -> None:
    """``persistence true``: the broker saves the hub's session and its queue when it stops and
    reads them back when it starts."""
    broker, clients = secure_broker
    hub = session_hub(tmp_path, broker, clients)
    hubs.append(hub)
    hub.start()
    loader = Loader(broker, clients / LOADER)
    try:
        unheard = subscribed(hub, loader)
        assert hub.stop() == 0
        loader.publish(300)
        acked = loader.wait_acked()
    finally:
        loader.close()
    broker.stop()  # SIGTERM: an orderly restart (a crash loses what was queued since the save)
    broker.start()
    hub.start()
    wait_loader_stored(hub, acked - unheard)
    hub.wait_status(resumed, "the session resumed")
    assert hub.stop() == 0
