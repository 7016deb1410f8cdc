"""A broker set up by ``edge-agent-host broker init``: every client can be only itself.

What it prevents: on an open broker any client could be any node -- forged belief batches, task
messages and retained presence were accepted, because the broker let anyone write any topic. Here
the generated ``mosquitto.conf`` runs as it is (a real mosquitto on a free loopback port):

* connecting needs a certificate of the broker's CA (anonymous clients, clients without a
  certificate and clients with another CA's certificate are refused), and a revoked identity
  loses its open session's rights at the next reload and cannot connect again;
* two real daemons, configured from their generated ``mqtt.toml``, coordinate through it, and
  nothing they publish is refused;
* a client holding node A's identity tries to publish B's birth, state, telemetry, events,
  results, beliefs, task messages and actions, a fake node, and hub commands: the broker
  refuses every one (PUBACK "not authorized") and none reaches a client subscribed as the hub;
  lies on A's own topics (a task announced in B's name) are dropped by B;
* the hub works over mutual TLS from the CLI: ``fleet``, ``tasks announce``, ``command ping``,
  ``deploy``.

A machine without mosquitto fails these tests with the way to install it; they never skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from msgspec.structs import replace
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.coordination.messages import TaskAnnounce, TaskBids, TaskSpec
from edge_agent.fleet.protocol import (
    ActionBatch,
    BeliefBatch,
    Birth,
    Body,
    Command,
    CommandResult,
    CountsDelta,
    Envelope,
    Event,
    EventKind,
    LearningDelta,
    NodeState,
    ResultCode,
    Telemetry,
    decode,
    encode,
)
from edge_agent.fleet.protocol import DecodeError as ProtocolDecodeError
from edge_agent_host.fleetctl import FleetStore
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO
from tests.integration.fleet.test_deploy import sha_of
from tests.integration.fleet.test_fleet_daemon import FLEET, TOPICS, Node, wait_until
from tests.integration.hub.test_hubd import Hub
from tests.support.broker import MosquittoBroker, MosquittoMissingError, free_port
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

FORGED_TS = 12345.0
"""The envelope time of every forged message: none may reach the hub."""
HOST_ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"}

GROUPS = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 30
source = { type = "sim" }
sink = { type = "sim" }
[groups.coordination]
capabilities = ["grid"]
[groups.coordination.sharing]
factors = [0]
"""


# ------------------------------------------------------------------------------------- helpers
def host_tool(*args: str, timeout: float = 120) -> str:
    """``edge-agent-host ARGS``; fails the test on a non-zero exit."""
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
        env=HOST_ENV,
    )
    assert out.returncode == 0, f"{args[:2]} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def broker_init(out: Path, port: int, *args: str) -> Path:
    host_tool(*("broker", "init", "--fleet", FLEET, "--port", str(port), "--out", str(out)), *args)
    return out


def start_broker(workdir: Path, config: Path, port: int) -> MosquittoBroker:
    try:
        broker = MosquittoBroker(workdir, port=port, config_file=config)
    except MosquittoMissingError as err:
        pytest.fail(str(err))
    broker.start()
    return broker


def envelope(node: str, body: Body, *, seq: int = 1, ts: float = FORGED_TS) -> bytes:
    env = Envelope(
        type=body.TYPE, node=node, seq=seq, bdseq=7, ts=ts, clock_synced=False, body=body
    )
    return encode(env)


class Client:
    """A paho MQTT v5 client over TLS: records what it hears, and the broker's answer (PUBACK
    reason) to each QoS 1 publish. ``files``: a ``clients/NAME`` directory (its ``ca.crt`` and
    its certificate, unless ``cert`` is False); ``ca``: trust another CA file."""

    def __init__(
        self,
        broker: MosquittoBroker,
        files: Path,
        *,
        cert: bool = True,
        ca: Path | None = None,
        tls: bool = True,
        client_id: str | None = None,
        subscribe: str | None = None,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.connack: str | None = None
        self.subacks = 0
        self.acks: dict[int, str] = {}
        self.heard: list[tuple[str, Envelope | None, bool]] = []
        self.subscribe = subscribe
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{os.urandom(3).hex()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if tls:
            ctx = ssl.create_default_context(cafile=str(ca or files / "ca.crt"))
            if cert:
                ctx.load_cert_chain(files / f"{files.name}.crt", files / f"{files.name}.key")
            self.client.tls_set_context(ctx)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(*will, qos=1, retain=True)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        try:
            self.client.connect(broker.host, broker.port, keepalive=5)
        except (OSError, ssl.SSLError) as err:
            self.connack = f"refused: {err}"
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self._lock:
            self.connack = str(rc)
        if self.subscribe and not rc.is_failure:
            client.subscribe(self.subscribe, qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        with self._lock:
            self.subacks += 1

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._lock:
            self.acks[mid] = str(rc)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            env: Envelope | None = decode(msg.payload)
        except ProtocolDecodeError:
            env = None
        with self._lock:
            self.heard.append((msg.topic, env, bool(msg.retain)))

    def connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.connack is not None:
                    return self.connack == "Success"
            time.sleep(0.02)
        return False

    def ready(self) -> Client:
        """Connected and, with ``subscribe``, subscribed; fails the test otherwise."""
        assert self.connected(), f"not connected: {self.connack}"
        if self.subscribe:
            wait_until(lambda: self.subacks >= 1, "the subscription")
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> str:
        """Publish at QoS 1; the broker's PUBACK reason ("Success", "Not authorized", ...)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.acks:
                    return self.acks[info.mid]
            time.sleep(0.01)
        pytest.fail(f"no PUBACK for {topic}")

    def sync(self) -> None:
        """A round trip to the broker (a QoS 1 publish and its PUBACK, whatever the answer):
        mosquitto writes to this client in order, and paho reads in order, so whatever the
        broker had sent this client before is heard when this returns (a barrier, instead of
        sleeping and hoping)."""
        self.publish(f"ea/v1/{FLEET}/sync/{os.urandom(4).hex()}", b"")

    def forged(self) -> list[tuple[str, Envelope]]:
        with self._lock:
            return [(t, e) for t, e, _ in self.heard if e is not None and e.ts == FORGED_TS]

    def states(self, node: str) -> list[bool]:
        with self._lock:
            return [
                e.body.online
                for t, e, _ in self.heard
                if e is not None and isinstance(e.body, NodeState) and t == TOPICS.node_state(node)
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT, as a crash does: the broker sends the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


AUCTION = """
[coordination.auction]
window_s = 1.0
complete_at_goal = false
state_every_s = 0.5
"""


def secure_node(
    tmp: Path,
    broker: MosquittoBroker,
    name: str,
    clients: Path,
    keys: Path,
    *,
    groups: str = GROUPS,
    tick_hz: float = 10,
    telemetry_s: float = 0.5,
    tail: str = AUCTION,
    hub_keys: Path | None = None,
) -> Node:
    """A daemon whose ``[mqtt]`` is the generated ``clients/NAME/mqtt.toml`` (plus test pacing);
    ``groups`` and ``tail`` (tables after ``[mqtt]``): the coordinating grid by default.
    ``keys`` is its ``[daemon] trusted_keys_dir`` (the bundle keys); with ``hub_keys``, its
    ``[mqtt] hub_keys_dir`` (the hub's command keys: two directories, as docs/fleet.md says),
    else commands are verified with ``keys`` too."""
    node = Node(tmp, broker, name)
    state = node.state
    node.config.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = {tick_hz}
log_level = "info"
trusted_keys_dir = "{keys}"
{groups}
{(clients / name / "mqtt.toml").read_text()}keepalive_s = 5
{f'hub_keys_dir = "{hub_keys}"' if hub_keys is not None else ""}
telemetry_interval_s = {telemetry_s}
reconnect_initial_s = 0.05
reconnect_max_s = 0.3
{tail}"""
    )
    return node


def coord(node: Node) -> dict[str, Any]:
    status = node.status()
    if status.get("pid") != node.pid:
        return {}
    section: dict[str, Any] = status.get("coordination") or {}
    return section


def metric(node: Node, key: str) -> float:
    return float(coord(node).get("metrics", {}).get(key, 0.0))


def hub_args(clients: Path, broker: MosquittoBroker, name: str = "hub") -> list[str]:
    files = clients / name
    return [
        *("--port", str(broker.port), "--fleet", FLEET, "--hub-id", name),
        *("--ca-file", str(files / "ca.crt")),
        *("--cert-file", str(files / f"{name}.crt"), "--key-file", str(files / f"{name}.key")),
    ]


@pytest.fixture
def brokers() -> Iterator[list[MosquittoBroker]]:
    started: list[MosquittoBroker] = []
    yield started
    for broker in started:
        broker.kill()


# ------------------------------------------------------------------------------------- tests
def test_only_identities_of_the_broker_s_ca_connect_and_revocation_locks_one_out(
    tmp_path: Path, brokers: list[MosquittoBroker]
) -> None:
    port = free_port()
    out = broker_init(tmp_path / "pki", port, "--node", "pi-a", "--node", "pi-b")
    other = broker_init(tmp_path / "other-pki", free_port(), "--node", "pi-a")
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    brokers.append(broker)
    clients = out / "clients"

    # Anonymous (plain MQTT on the TLS port), TLS without a certificate, a certificate of
    # another CA with the same name: no CONNACK; the broker's log says why.
    for probe in (
        Client(broker, clients / "pi-a", tls=False),
        Client(broker, clients / "pi-a", cert=False),
        Client(broker, other / "clients" / "pi-a", ca=clients / "pi-a" / "ca.crt"),
    ):
        assert not probe.connected(2.0), probe.connack
        probe.close()
    log = broker.log()
    assert "peer did not return a certificate" in log
    assert "certificate verify failed" in log

    # pi-a's identity works; it reads pi-b's beliefs and writes only its own topics.
    offline = envelope("pi-a", NodeState(online=False), ts=2.0)
    watcher = Client(
        broker,
        clients / "pi-a",
        subscribe=TOPICS.all_nodes("beliefs"),
        will=(TOPICS.node_state("pi-a"), offline),
    ).ready()
    pi_b = Client(broker, clients / "pi-b").ready()
    batch = BeliefBatch.from_arrays("g", 1, np.arange(2), np.zeros((2, 3), np.uint8))
    assert pi_b.publish(TOPICS.beliefs("pi-b"), envelope("pi-b", batch, ts=1.0)) != (
        "Not authorized"
    )
    wait_until(lambda: len(watcher.heard) == 1, "pi-a to hear pi-b's beliefs")

    # Revoked: its certificate goes into the CRL and every topic is denied to it; after a
    # reload its open session can neither write nor read, and it cannot connect again.
    host_tool("broker", "revoke", "--out", str(out), "pi-a")
    broker.reload()  # returns once mosquitto has reloaded
    assert watcher.publish(TOPICS.telemetry("pi-a"), b"x") == "Not authorized"
    pi_b.publish(TOPICS.beliefs("pi-b"), envelope("pi-b", batch, seq=2, ts=1.0))
    watcher.sync()  # had the broker forwarded pi-b's beliefs, they would be in by now
    assert len(watcher.heard) == 1
    again = Client(broker, clients / "pi-a")
    assert not again.connected(2.0), again.connack
    # When its session ends, the broker refuses its will too: its retained state is not
    # changed (docs/security.md: the hub calls such a node 'silent').
    pi_b.close()
    presence = Client(broker, clients / "pi-b", subscribe=TOPICS.node_state("pi-a")).ready()
    watcher.drop()
    wait_until(lambda: "Client pi-a closed its connection" in broker.log(), "the session's end")
    presence.sync()  # the broker handles a will as the session ends: any would be in by now
    assert presence.states("pi-a") == []
    for client in (presence, again):
        client.close()
    assert broker.log().count("certificate verify failed") >= 2  # the other CA, the revoked


def test_password_identities_are_bound_the_same_way(
    tmp_path: Path, brokers: list[MosquittoBroker]
) -> None:
    port = free_port()
    out = broker_init(tmp_path / "pki", port, "--node", "pi-a", "--auth", "password")
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    brokers.append(broker)
    files = out / "clients" / "pi-a"
    password = (files / "password").read_text().strip()
    wrong = Client(broker, files, cert=False, username="pi-a", password=password + "x")
    assert not wrong.connected(), wrong.connack
    nobody = Client(broker, files, cert=False)
    assert not nobody.connected(), nobody.connack
    node = Client(broker, files, cert=False, username="pi-a", password=password).ready()
    state = NodeState(online=True)
    assert node.publish(TOPICS.node_state("pi-a"), envelope("pi-a", state)) != "Not authorized"
    assert node.publish(TOPICS.node_state("pi-b"), envelope("pi-b", state)) == "Not authorized"
    for client in (wrong, nobody, node):
        client.close()


def test_a_node_s_identity_cannot_speak_for_another_node_nor_for_the_hub(
    tmp_path: Path, brokers: list[MosquittoBroker]
) -> None:
    port = free_port()
    out = broker_init(tmp_path / "pki", port, "--node", "pi-a", "--node", "pi-b", "--hub", "hub")
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    brokers.append(broker)
    clients = out / "clients"
    trusted = tmp_path / "trusted"
    hub_key = generate_keypair(trusted, "hub")
    ci_key = generate_keypair(trusted, "ci")
    nodes = [secure_node(tmp_path, broker, name, clients, trusted) for name in ("pi-a", "pi-b")]
    a, b = nodes
    probes: list[Client] = []
    try:
        for node in nodes:
            node.start(wait_ready=False)
        for node in nodes:
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        wait_until(lambda: all(metric(n, "live_nodes") == 2 for n in nodes), "the daemons to meet")
        wait_until(
            lambda: all(metric(n, "belief_msgs_received") > 0 for n in nodes),
            "beliefs to flow both ways",
        )
        sniffer = Client(broker, clients / "hub", subscribe=TOPICS.fleet_all()).ready()
        probes.append(sniffer)
        wait_until(lambda: sniffer.states("pi-b") == [True], "pi-b's retained state")

        # Node A's machine is taken over: the daemon stops, the attacker connects with its
        # certificate -- and with pi-b's client id, which the broker replaces by the identity:
        # it takes over pi-a's session (pi-a's will: offline), never pi-b's.
        # Its will claims pi-b went offline.
        a.signal(signal.SIGSTOP)
        will = (TOPICS.node_state("pi-b"), envelope("pi-b", NodeState(online=False)))
        forger = Client(broker, clients / "pi-a", client_id="ea-itest-pi-b", will=will).ready()
        wait_until(lambda: sniffer.states("pi-a")[-1:] == [False], "pi-a's session taken over")

        spec = TaskSpec(
            task="forged", epoch=0, capability="grid", goal_state=1, announced_by="pi-b"
        )
        bids = TaskBids.from_arrays(
            "grid", 1, ["forged"], epochs=[0], task_index=np.zeros(3, np.int64),
            agents=np.arange(3), costs=np.full(3, -1e9),
        )  # fmt: skip
        beliefs = BeliefBatch.from_arrays("grid", 1, np.arange(30), np.zeros((30, 10), np.uint8))
        telemetry = Telemetry(
            uptime_s=0, rss_bytes=0, budget_used_bytes=0, budget_total_bytes=0, ticks=0,
            tick_p50_ms=0, tick_p99_ms=0, overruns=0,
        )  # fmt: skip
        forgeries: list[tuple[str, Body, bool]] = [
            (TOPICS.birth("pi-b"), Birth(software_version="x", profile="x", budget_bytes=0), True),
            (TOPICS.node_state("pi-b"), NodeState(online=False), True),
            (TOPICS.telemetry("pi-b"), telemetry, False),
            (TOPICS.event("pi-b"), Event(kind=EventKind.ALARM, detail="forged"), False),
            (TOPICS.command_result("pi-b"), CommandResult(
                nonce=b"n" * 16, name="ping", code=ResultCode.OK), False),
            (TOPICS.tasks("pi-b"), bids, False),
            (TOPICS.learning("pi-b"), LearningDelta(
                group="grid", model="grid@1", model_sha256="ab" * 32, seq=1, tables=[CountsDelta(
                    table="B0", shape=(2, 2, 1), columns=bytes(4), values=bytes(8),
                    experience=1, lr=1.0)]), False),
            (TOPICS.tasks("pi-b"), TaskAnnounce(tasks=[spec], sigs=bytes(64)), False),
            (TOPICS.action("pi-b", "grid"), ActionBatch.from_arrays(
                "grid", 1, np.arange(2), np.zeros((2, 1), np.uint8)), False),
            (TOPICS.birth("ghost"), Birth(software_version="x", profile="x", budget_bytes=0), True),
            (TOPICS.node_state("ghost"), NodeState(online=True), True),
            (TOPICS.tasks("hub"), TaskAnnounce(
                tasks=[replace(spec, announced_by="hub")], sigs=bytes(64)), False),
        ]  # fmt: skip
        forgeries += [(TOPICS.beliefs("pi-b"), beliefs, False)] * 20
        answers = [
            forger.publish(topic, envelope(topic.split("/")[4], body, seq=i), retain=retain)
            for i, (topic, body, retain) in enumerate(forgeries)
        ]
        command = Command(
            target="pi-b", nonce=os.urandom(16), expires=time.time() + 60, key_id="", name="ping"
        )
        answers.append(forger.publish(TOPICS.command("pi-b"), envelope("hub", command)))
        assert answers == ["Not authorized"] * (len(forgeries) + 1)

        # A lie on its own topic passes the broker, and pi-b drops it: a task in pi-b's name.
        malformed = metric(b, "malformed")
        lie = TaskAnnounce(tasks=[replace(spec, task="lie")], sigs=bytes(64))
        assert forger.publish(TOPICS.tasks("pi-a"), envelope("pi-a", lie, ts=2.0)) == "Success"
        wait_until(lambda: metric(b, "malformed") > malformed, "pi-b to drop the lie")
        forger.drop()
        a.signal(signal.SIGCONT)
        wait_until(lambda: sniffer.states("pi-a")[-1:] == [True], "pi-a back online")
        sniffer.sync()  # anything the broker forwarded before is in by now
        assert sniffer.forged() == []
        assert sniffer.states("pi-b") == [True]  # never knocked off, never forged offline
        assert b.status()["fleet"]["online"]
        # The daemon's `ssl` is imported on first use (edge_agent.daemon.footprint): here, by TLS.
        assert "libssl" in Path(f"/proc/{b.pid}/maps").read_text()
        sniffer.close()  # the hub's own connections below use the same identity

        # The hub over mutual TLS: the fleet as it is, tasks, a ping, a deployment.
        db = tmp_path / "hub.sqlite3"
        hub = hub_args(clients, broker)
        host_tool("hub", *hub, "--db", str(db), "fleet", "--wait", "1.5")
        store = FleetStore(db)
        try:
            rows = {row["node"]: row for row in store.nodes()}
        finally:
            store.close()
        assert sorted(rows) == ["pi-a", "pi-b"]  # no ghost
        assert [rows["pi-a"]["online"], rows["pi-b"]["online"]] == [True, True]
        assert rows["pi-b"]["birth"]["groups"]["grid"]["agents"] == 30

        announced = host_tool(
            "tasks", *hub, "announce", "--key", str(hub_key.private_path), "--capability",
            "grid", "--count", "4", "--goal-states", "100", "--wait", "15", "--json",
        )  # fmt: skip
        held = json.loads(announced)["tasks"]
        assert sorted(held) == ["t0000", "t0001", "t0002", "t0003"]
        for node in nodes:
            assignment = coord(node).get("assignment", {})
            assert {"forged", "lie"}.isdisjoint(assignment)

        pong = host_tool(
            "hub", *hub, "--db", str(db), "command", "--key", str(hub_key.private_path),
            "--all", "--wait", "1.0", "ping",
        )  # fmt: skip
        assert pong.count("ping ok") == 2, pong
        tar = bundle_tar(tmp_path, ci_key.private_path)
        deployed = host_tool(
            "hub", *hub, "--db", str(db), "deploy", str(tar), "--key",
            str(hub_key.private_path), "--group", "grid", "--node", "pi-b", "--wait", "0.3",
            "--chunk-size", "8192", "--watch-ticks", "5",
        )  # fmt: skip
        assert "pi-b: deploy ok" in deployed, deployed
        b.wait_status(
            lambda s: s["deploy"]["overlay"].get("grid") == sha_of(tar, trusted), "the switch"
        )

        # Nothing either daemon published (through its outbox) was refused by the ACL.
        for node in nodes:
            link = node.status()["fleet"]["link"]
            assert link["outbox.rejected"] == 0, (node.name, link)
            assert link["outbox.acked"] > 0
            assert metric(node, "task_msgs_sent") > 0
    finally:
        for probe in probes:
            probe.close()
        for node in nodes:
            if node.proc is not None:
                node.signal(signal.SIGCONT)  # a stopped daemon is killed all the same
            node.close()


def test_a_refused_connection_is_logged_by_its_reason_s_name(
    tmp_path: Path, brokers: list[MosquittoBroker]
) -> None:
    """The broker's CONNACK refusal, by name, where the operator looks: a daemon with a wrong
    password, one whose identity was revoked, the hub service with a wrong password, and the
    operator's client with an identity the broker never heard of. (mosquitto 2 answers all of
    these ``0x87 not authorized``: the name is the broker's answer, whatever it is.)"""
    port = free_port()
    out = broker_init(
        tmp_path / "pki", port, *("--node", "pi-a", "--node", "pi-b", "--hub", "hub"),
        "--auth", "password",
    )  # fmt: skip
    clients = out / "clients"
    host_tool("broker", "revoke", "--out", str(out), "pi-b")
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    brokers.append(broker)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    keys = tmp_path / "trusted"
    generate_keypair(keys, "hub")

    def node_with(name: str, **swap: str) -> Node:
        node = secure_node(tmp_path, broker, name, clients, keys)
        text = node.config.read_text()
        for old, new in swap.items():
            text = text.replace(old, new)
        node.config.write_text(text)
        return node

    nodes = [
        node_with("pi-a", **{str(clients / "pi-a" / "password"): str(wrong)}),
        node_with("pi-b"),  # revoked before the broker started
    ]
    hub = Hub(
        tmp_path, "hub", broker, '[database]\ntype = "sqlite"\n',
        extra_mqtt=f'username = "hub"\npassword_file = "{wrong}"\n'
        f'tls = {{ enabled = true, ca_file = "{clients / "hub" / "ca.crt"}" }}\n',
    )  # fmt: skip
    refusal = "refused: 0x87 not authorized"
    try:
        for node in nodes:
            node.start(wait_ready=False)
        hub.start()
        for node in nodes:
            wait_until(lambda n=node: refusal in n.log(), f"{node.name} to log the refusal")
        wait_until(lambda: refusal in hub.log(), "the hub service to log the refusal")
        hub.wait_status(lambda st: bool(st["mqtt"]["refused"]), "the refusal in the hub's status")
        status = hub.cli("status")
        assert status.returncode == 1, status
        assert "NOT CONNECTED (refused: 0x87 not authorized)" in status.stdout, status.stdout
        # The operator's client: an identity the broker does not know.
        cli = subprocess.run(
            [sys.executable, "-m", "edge_agent_host.cli", "hub", "--port", str(port),
             "--fleet", FLEET, "--hub-id", "nobody", "--username", "nobody",
             "--password-file", str(wrong), "--ca-file", str(clients / "hub" / "ca.crt"),
             "fleet", "--wait", "0"],
            capture_output=True, text=True, cwd=REPO, timeout=120, check=False, env=HOST_ENV,
        )  # fmt: skip
        assert cli.returncode != 0
        assert cli.stderr.strip().splitlines() == [  # one line, not a warning per attempt
            f"error: no connection to the broker 127.0.0.1:{port} within 10 s: the broker "
            "refused it: 0x87 not authorized"
        ], cli.stderr
    finally:
        for node in nodes:
            node.close()
        hub.kill()
