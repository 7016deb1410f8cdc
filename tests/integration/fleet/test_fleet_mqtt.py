"""FleetLink + MqttTransport against a real mosquitto, with real processes and signals.

The node under test is this file run as a script (``python test_fleet_mqtt.py node ...``): a
small daemon loop around FleetLink that publishes numbered events, one per 10 ms tick, flushes
the outbox at the end of every tick and then prints ``flushed N`` -- so every N it printed is
durable. The tests watch the wire with a plain paho subscriber.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import msgspec
import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.fleet.comms.base import Backoff, TransportEvent, TransportEventKind
from edge_agent.fleet.comms.mqtt import MqttSettings, MqttTransport, TlsSettings
from edge_agent.fleet.link import FleetLink
from edge_agent.fleet.outbox import Outbox
from edge_agent.fleet.protocol import (
    Birth,
    Command,
    DecodeError,
    Envelope,
    Event,
    NodeState,
    RebirthRequest,
    Telemetry,
    decode,
    encode,
)
from edge_agent.fleet.topics import Topics
from tests.support.broker import MosquittoBroker, free_port

pytestmark = pytest.mark.integration

FLEET = "itest"
TOPICS = Topics(FLEET)
REPO = Path(__file__).resolve().parents[3]
WAIT_S = 120.0  # a safety net: every wait ends on an event, not on time


# The node process ---------------------------------------------------------------------------


def node_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node", default="pi-01")
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--telemetry-every-s", type=float, default=0.0)
    parser.add_argument("--max-payload", type=int, default=64 * 1024)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    transport = MqttTransport(
        MqttSettings(
            client_id=f"ea-{args.node}", port=args.port, keepalive_s=5, connect_timeout_s=2.0
        ),
        backoff=Backoff(initial_s=0.05, max_s=0.4, stable_after_s=1.0),
    )
    outbox = Outbox(args.state_dir / "outbox.log", max_inflight=16)
    link = FleetLink(
        transport,
        outbox,
        args.node,
        FLEET,
        args.state_dir,
        birth={"software_version": "test", "profile": "itest", "budget_bytes": 1 << 20},
        max_payload_bytes=args.max_payload,
        rebirth_min_interval_s=0.0,
    )
    link.start()
    published = 0
    reported = -1
    next_telemetry = 0.0
    started = time.monotonic()
    while not stop.is_set():
        link.pump()
        link.receive()
        if published < args.events:
            published += 1
            link.publish_event("other", f"event {published}", data={"n": published})
        now = time.monotonic()
        if args.telemetry_every_s and now >= next_telemetry:
            next_telemetry = now + args.telemetry_every_s
            link.publish_telemetry(
                {
                    "uptime_s": now - started,
                    "rss_bytes": 0,
                    "budget_used_bytes": 0,
                    "budget_total_bytes": 0,
                    "ticks": 0,
                    "tick_p50_ms": 0.0,
                    "tick_p99_ms": 0.0,
                    "overruns": 0,
                }
            )
        link.flush()
        if published != reported:
            print(f"flushed {published}", flush=True)
            reported = published
        time.sleep(0.01)
    link.stop(drain_timeout_s=2.0)
    outbox.close()
    return 0


# Test helpers -------------------------------------------------------------------------------


class NodeProc:
    """The node script in a subprocess, its stdout collected by a thread."""

    def __init__(self, broker: MosquittoBroker, state_dir: Path, *args: str) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = state_dir / f"stderr-{time.monotonic_ns()}.log"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "node",
                "--port",
                str(broker.port),
                "--state-dir",
                str(state_dir),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())

    def flushed(self) -> int:
        """The highest event number the node reported durable."""
        counts = [int(x.split()[1]) for x in list(self.lines) if x.startswith("flushed ")]
        return max(counts, default=0)

    def wait_flushed(self, n: int) -> None:
        wait_until(lambda: self.flushed() >= n, f"node to flush {n} events", self)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def send_signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)

    def terminate(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(15)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def wait_until(cond: Callable[[], bool], what: str, node: NodeProc | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    detail = f"\nnode stderr:\n{node.stderr()}" if node is not None else ""
    pytest.fail(f"timed out waiting for {what}{detail}")


class Sniffer:
    """A plain paho MQTT v5 client that records every message of the fleet."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "sniffer") -> None:
        self._lock = threading.Lock()
        self.received: list[tuple[str, Envelope | None, bool]] = []
        self.subacks = 0
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(0.02, 0.2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        wait_until(lambda: self.subacks >= 1, "the sniffer to subscribe")

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(TOPICS.fleet_all(), qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        with self._lock:
            self.subacks += 1

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            env: Envelope | None = decode(msg.payload)
        except DecodeError:
            env = None
        with self._lock:
            self.received.append((msg.topic, env, bool(msg.retain)))

    def envelopes(self, msg_type: str) -> list[Envelope]:
        with self._lock:
            return [e for _, e, _ in self.received if e is not None and e.type == msg_type]

    def event_numbers(self) -> list[int]:
        out = []
        for env in self.envelopes("event"):
            assert isinstance(env.body, Event)
            n = env.body.data.get("n")
            if isinstance(n, int):
                out.append(n)
        return out

    def states(self) -> list[tuple[bool, int, bool]]:
        """(online, bdseq, retained) of every state message seen."""
        with self._lock:
            items = [(e, r) for _, e, r in self.received if e is not None and e.type == "state"]
        out = []
        for env, retained in items:
            assert isinstance(env.body, NodeState)
            out.append((env.body.online, env.bdseq, retained))
        return out

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def resubscribed_after(self, count: int) -> Callable[[], bool]:
        return lambda: self.subacks > count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sniffer(mosquitto: MosquittoBroker) -> Iterator[Sniffer]:
    s = Sniffer(mosquitto)
    yield s
    s.close()


@pytest.fixture
def nodes() -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    yield started
    for node in started:
        node.close()


# Tests --------------------------------------------------------------------------------------


def test_no_event_lost_across_three_broker_crashes(
    mosquitto: MosquittoBroker, sniffer: Sniffer, nodes: list[NodeProc], tmp_path: Path
) -> None:
    total = 300
    node = NodeProc(mosquitto, tmp_path / "node", "--events", str(total))
    nodes.append(node)
    for k in range(3):
        node.wait_flushed(60 * (k + 1))
        mosquitto.kill()
        time.sleep(0.3)  # the node keeps publishing into its outbox and retries the broker
        # Freeze the node while the broker comes back, so the sniffer is subscribed again
        # before the node can publish: the broker keeps nothing for absent subscribers.
        node.send_signal(signal.SIGSTOP)
        subacks = sniffer.subacks
        mosquitto.start()
        wait_until(sniffer.resubscribed_after(subacks), "the sniffer to resubscribe")
        node.send_signal(signal.SIGCONT)
    node.wait_flushed(total)
    wait_until(lambda: set(sniffer.event_numbers()) >= set(range(1, total + 1)), "all events")
    numbers = sniffer.event_numbers()
    assert sorted(set(numbers)) == list(range(1, total + 1))
    # One birth per connection session, each with a new bdseq.
    births = [b.bdseq for b in sniffer.envelopes("birth")]
    assert len(births) >= 4
    assert births == sorted(set(births))
    # A clean stop: a death, then the will's retained offline state with the last bdseq.
    assert node.terminate() == 0
    wait_until(lambda: bool(sniffer.states()) and not sniffer.states()[-1][0], "offline state")
    assert sniffer.states()[-1][1] == births[-1]
    assert len(sniffer.envelopes("death")) == 1


def test_outbox_delivers_after_node_sigkill_during_outage(
    mosquitto: MosquittoBroker, sniffer: Sniffer, nodes: list[NodeProc], tmp_path: Path
) -> None:
    state = tmp_path / "node"
    node = NodeProc(mosquitto, state, "--events", "1000000")
    nodes.append(node)
    node.wait_flushed(50)
    mosquitto.kill()
    at_outage = node.flushed()
    node.wait_flushed(at_outage + 100)  # at least 100 events exist only in the outbox
    node.kill()
    durable = node.flushed()
    seen_before = set(sniffer.event_numbers())
    assert max(seen_before, default=0) < durable - 90
    subacks = sniffer.subacks
    mosquitto.start()
    wait_until(sniffer.resubscribed_after(subacks), "the sniffer to resubscribe")
    drainer = NodeProc(mosquitto, state)  # same state dir and outbox, publishes nothing new
    nodes.append(drainer)
    wait_until(lambda: set(sniffer.event_numbers()) >= set(range(1, durable + 1)), "the backlog")
    births = [b.bdseq for b in sniffer.envelopes("birth")]
    assert births == sorted(set(births))
    assert len(births) == 2  # one per process, bdseq persisted across the SIGKILL


def test_malformed_input_is_counted_and_the_node_keeps_running(
    mosquitto: MosquittoBroker, sniffer: Sniffer, nodes: list[NodeProc], tmp_path: Path
) -> None:
    node = NodeProc(
        mosquitto, tmp_path / "node", "--telemetry-every-s", "0.1", "--max-payload", "4096"
    )
    nodes.append(node)
    wait_until(lambda: bool(sniffer.envelopes("birth")), "the birth", node)
    cmd = Command(target="pi-01", nonce=b"n" * 16, expires=2e9, key_id="k", name="ping")
    good = encode(
        Envelope(type="command", node="hub", seq=0, bdseq=0, ts=1.0, clock_synced=True, body=cmd)
    )
    raw = msgspec.msgpack.decode(good)
    bad = {
        "not_msgpack": b"\xc1garbage",
        "not_a_map": msgspec.msgpack.encode([1, 2, 3]),
        "version": msgspec.msgpack.encode({**raw, "v": 2}),
        "unknown_type": msgspec.msgpack.encode({**raw, "type": "teleport"}),
        "schema": msgspec.msgpack.encode({**raw, "body": {**raw["body"], "extra": 1}}),
        "oversized": b"\x00" * 5000,
        "type_mismatch": encode(
            Envelope(
                type="event",
                node="hub",
                seq=0,
                bdseq=0,
                ts=1.0,
                clock_synced=True,
                body=Event(kind="other"),
            )
        ),
    }
    for payload in bad.values():
        sniffer.publish(TOPICS.command("pi-01"), payload)
    rebirth = Envelope(
        type="rebirth",
        node="hub",
        seq=1,
        bdseq=0,
        ts=1.0,
        clock_synced=True,
        body=RebirthRequest(reason="test"),
    )
    sniffer.publish(TOPICS.rebirth("pi-01"), encode(rebirth))

    def counters() -> dict[str, int | float]:
        tel = sniffer.envelopes("telemetry")
        if not tel:
            return {}
        body = tel[-1].body
        assert isinstance(body, Telemetry)
        return body.counters

    wait_until(
        lambda: (
            all(counters().get(f"link.malformed.{r}") == 1 for r in bad)
            and counters().get("link.rebirths_received") == 1
        ),
        "telemetry to count every malformed message",
        node,
    )
    wait_until(lambda: len(sniffer.envelopes("birth")) == 2, "the rebirth", node)
    assert node.proc.poll() is None
    seen = len(sniffer.envelopes("telemetry"))
    wait_until(lambda: len(sniffer.envelopes("telemetry")) > seen + 2, "more telemetry", node)


def test_birth_retained_state_will_and_bdseq(
    mosquitto: MosquittoBroker, sniffer: Sniffer, nodes: list[NodeProc], tmp_path: Path
) -> None:
    state = tmp_path / "node"
    first = NodeProc(mosquitto, state)
    nodes.append(first)
    wait_until(lambda: bool(sniffer.envelopes("birth")), "the first birth", first)
    (birth,) = sniffer.envelopes("birth")
    assert isinstance(birth.body, Birth)
    assert birth.body.profile == "itest"
    wait_until(lambda: sniffer.states() == [(True, birth.bdseq, False)], "online state", first)

    late = Sniffer(mosquitto, "late-joiner")
    try:
        wait_until(lambda: len(late.received) >= 2, "retained messages for a late joiner")
        assert (True, birth.bdseq, True) in late.states()
        assert [b.bdseq for b in late.envelopes("birth")] == [birth.bdseq]
    finally:
        late.close()

    first.kill()  # SIGKILL: the broker sees the socket close and publishes the will
    wait_until(lambda: sniffer.states()[-1][:2] == (False, birth.bdseq), "the will")
    assert sniffer.envelopes("death") == []  # no clean death from a killed process

    second = NodeProc(mosquitto, state)
    nodes.append(second)
    wait_until(lambda: len(sniffer.envelopes("birth")) == 2, "the second birth", second)
    assert sniffer.envelopes("birth")[1].bdseq == birth.bdseq + 1
    wait_until(lambda: sniffer.states()[-1] == (True, birth.bdseq + 1, False), "online again")


def test_backoff_grows_when_the_broker_drops_the_client_after_connack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that accepts the client and hangs up at once must not be hammered: each short
    session is followed by a longer wait, the back-off never reset by them.

    Read from events, not from the machine's speed: the server hangs up only after the client's
    SUBSCRIBE, which the transport sends once it took the session as up (so every session is a
    real one on both sides, however slow the machine); the schedule is the one the transport
    computed and logged (``reconnecting ... in X s``), and each wait measured is at least its
    delay (a loaded machine only makes waits longer). ``connect_timeout_s`` and
    ``stable_after_s`` are far above anything here: they only guard a hang."""
    caplog.set_level(logging.INFO, logger="edge_agent.fleet.comms.mqtt")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    sessions: list[tuple[float, float, bool]] = []  # (accepted, hung up, the client subscribed)
    done = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted = time.monotonic()
            with conn:
                conn.settimeout(60.0)
                try:
                    conn.recv(4096)  # CONNECT
                    conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK v5: success, no properties
                    first = conn.recv(4096)  # the client's SUBSCRIBE (0x82): it took the session
                    subscribed = first[:1] == b"\x82"
                    # Hang up with a FIN, then read until the client closes (a close() with
                    # something unread would send a RST instead).
                    hung_up = time.monotonic()
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(4096):
                        pass
                except OSError:
                    continue
            sessions.append((accepted, hung_up, subscribed))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = MqttTransport(
        MqttSettings(client_id="kicked", port=port, connect_timeout_s=60.0),
        backoff=Backoff(initial_s=0.05, max_s=10.0, jitter=0.0, stable_after_s=600.0),
    )
    transport.subscribe("ea/v1/kicked/#")
    try:
        transport.connect()
        wait_until(lambda: len(sessions) >= 5, "five connection attempts")
    finally:
        transport.disconnect(timeout_s=5.0)
        done.set()
        thread.join(5)
        server.close()
    assert all(subscribed for _, _, subscribed in sessions[:5]), sessions  # each one was up
    delays = [
        float(r.getMessage().rsplit(" in ", 1)[1].removesuffix(" s"))
        for r in caplog.records
        if r.getMessage().startswith("MQTT reconnecting to ")
    ]
    assert delays[:4] == [0.05, 0.10, 0.20, 0.40], delays  # doubling, never reset
    # ... and waited: from each hang-up to the next attempt at least the delay (up to the
    # rounding of the clocks; a slow machine only adds to it).
    waits = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(sessions)][:4]
    for got, want in zip(waits, delays, strict=False):
        assert got >= want * 0.9, waits
    kinds = [e.kind for e in transport.events.drain()]
    assert kinds.count(TransportEventKind.CONNECTED) >= 5
    assert kinds.count(TransportEventKind.CONNECTED) == kinds.count(TransportEventKind.DISCONNECTED)


def test_transport_without_broker_reports_nothing_and_publishes_nothing() -> None:
    transport = MqttTransport(  # nothing listens on a free_port, and it is never a source port
        MqttSettings(client_id="lonely", port=free_port(), connect_timeout_s=1.0),
        backoff=Backoff(initial_s=0.02, max_s=0.05),
    )
    try:
        transport.connect()
        wait_until(lambda: transport.connect_attempts >= 3, "reconnect attempts")
        assert transport.publish("ea/v1/x/y", b"p") is None
        assert not transport.is_connected
        assert len(transport.events) == 0
    finally:
        transport.disconnect()


def test_whoever_sees_the_transport_connected_finds_its_connected_event_queued(
    mosquitto: MosquittoBroker,
) -> None:
    """The link reads the transport's events in its pump; a caller that waited for
    ``is_connected`` must find the CONNECTED event there, not behind it (the uplink's
    reconnect test waits so). The queue's put is slowed for that event, which opens the window
    wide: a transport that said connected before queueing it is caught every run."""
    transport = MqttTransport(
        MqttSettings(client_id="seen", port=mosquitto.port),
        backoff=Backoff(initial_s=0.05, max_s=0.2),
    )
    put = transport.events.put

    def slow_put(event: TransportEvent) -> bool:
        if event.kind is TransportEventKind.CONNECTED:
            time.sleep(0.5)
        return put(event)

    transport.events.put = slow_put  # type: ignore[method-assign]
    try:
        transport.connect()
        wait_until(lambda: transport.is_connected, "the transport to connect")
        kinds = [event.kind for event in transport.events.drain()]
        assert kinds == [TransportEventKind.CONNECTED], kinds
    finally:
        transport.disconnect()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Key identifiers and the CA's key usage: Python 3.13's default TLS context verifies
        # strictly (VERIFY_X509_STRICT) and refuses a chain without them.
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_with_password_and_a_refused_login(tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path / "tls")
    broker = MosquittoBroker(
        tmp_path / "broker", certfile=cert, keyfile=key, users={"node": "s3cret"}
    )
    broker.start()

    def transport(client_id: str, password: str) -> MqttTransport:
        settings = MqttSettings(
            client_id=client_id,
            port=broker.port,
            username="node",
            password=password,
            tls=TlsSettings(ca_file=str(ca)),
            connect_timeout_s=2.0,
        )
        return MqttTransport(settings, backoff=Backoff(initial_s=0.05, max_s=0.1))

    good = transport("tls-good", "s3cret")
    bad = transport("tls-bad", "wrong")
    try:
        good.subscribe("t/#", 1, no_local=False)
        good.connect()
        bad.connect()
        wait_until(lambda: good.is_connected, "the TLS connection")
        handle = good.publish("t/x", b"hello", 1)
        assert handle is not None
        wait_until(lambda: len(good.incoming) == 1, "the message back over TLS")
        message = good.incoming.get()
        assert message is not None
        assert (message.topic, message.payload) == ("t/x", b"hello")
        events: list[TransportEvent] = []

        def collected_two() -> bool:
            events.extend(good.events.drain())
            return len(events) >= 2

        # mosquitto forwards the message before it sends the PUBACK: wait for both.
        wait_until(collected_two, "the PUBACK")
        assert [e.kind for e in events] == [TransportEventKind.CONNECTED, TransportEventKind.ACK]
        assert (events[1].handle, events[1].reason_code) == (handle, 0)
        wait_until(lambda: bad.connect_attempts >= 3, "the refused client to retry")
        assert not bad.is_connected
        assert len(bad.events) == 0  # a refused CONNACK is not a session
    finally:
        good.disconnect()
        bad.disconnect()
        broker.kill()


if __name__ == "__main__":
    if sys.argv[1:2] != ["node"]:
        sys.exit("usage: test_fleet_mqtt.py node --port N --state-dir DIR [...]")
    sys.exit(node_main(sys.argv[2:]))
