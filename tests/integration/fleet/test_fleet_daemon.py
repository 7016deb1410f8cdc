"""edge-agentd on a real mosquitto: telemetry and events through outages and crashes, hub
commands (good, bad and hostile), agent I/O over MQTT.

The daemons are real processes (``python -m edge_agent run``) with a test-owned NOTIFY_SOCKET;
the tests listen to the fleet with a plain paho client and command it with the hub's client.
Helpers here are shared by ``test_deploy.py`` and ``test_hub_cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import replace

from edge_agent.bundle.signing import key_id, sign_bytes
from edge_agent.fleet.agent_io import encode_observations
from edge_agent.fleet.protocol import (
    ActionBatch,
    Birth,
    CommandResult,
    Envelope,
    Event,
    ResultCode,
    Telemetry,
    encode,
)
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleetctl import FleetClient
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.daemon.test_daemon import REPO, Daemon, NotifySocket
from tests.integration.fleet.test_fleet_mqtt import Sniffer
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration

FLEET = "itest"  # the fleet of test_fleet_mqtt.py's Sniffer
TOPICS = Topics(FLEET)
WAIT_S = 120.0  # a safety net: every wait ends on an event, not on time

GRID_GROUP = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 30
source = { type = "sim" }
sink = { type = "sim" }
"""

IO_GROUP = """
[[groups]]
name = "io"
model = { type = "builtin", name = "grid10" }
count = 12
source = { type = "mqtt", topic = "sensors/io/+" }
sink = { type = "mqtt", topic = "actuators/io" }
"""


def fleet_config(
    path: Path,
    state: Path,
    port: int,
    node: str,
    *,
    groups: str = GRID_GROUP,
    keys_dir: Path | None = None,
    telemetry_s: float = 0.2,
    tick_hz: float = 20,
    mqtt_extra: str = "",
) -> Path:
    keys = f'trusted_keys_dir = "{keys_dir}"' if keys_dir is not None else ""
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = {tick_hz}
log_level = "info"
{keys}

{groups}

[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
fleet = "{FLEET}"
node_id = "{node}"
keepalive_s = 5
telemetry_interval_s = {telemetry_s}
reconnect_initial_s = 0.05
reconnect_max_s = 0.3
{mqtt_extra}
"""
    )
    return path


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Until ``cond()`` holds. A look that takes a while (a command-line tool's process) is
    followed by a pause as long: looking takes at most half a core from what it waits for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        looked = time.monotonic()
        if cond():
            return
        time.sleep(max(0.02, time.monotonic() - looked))
    pytest.fail(f"timed out waiting for {what}")


def status_view(state: Path) -> str:
    """``edge-agent status`` as a person sees it."""
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--status-file", str(state / "status.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 3), out.stderr
    return out.stdout


def status_of(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def wait_status(
    state: Path, cond: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_S
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = status_of(state)
        return bool(last) and cond(last)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last status: {json.dumps(last)[:1500]}")


class Listener(Sniffer):
    """The fleet tests' sniffer (``test_fleet_mqtt.py``), also on ``extra`` topics, with views
    per node and the daemon's own message numbers."""

    def __init__(self, broker: MosquittoBroker, extra: tuple[str, ...] = ()) -> None:
        self.extra = extra
        super().__init__(broker, client_id=f"listener-{os.urandom(3).hex()}")

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(TOPICS.fleet_all(), 1), *((t, 1) for t in self.extra)])

    def envelopes(self, msg_type: str, node: str | None = None) -> list[Envelope]:
        return [e for e in super().envelopes(msg_type) if node is None or e.node == node]

    def on_topic(self, prefix: str) -> list[Envelope]:
        with self._lock:
            return [e for t, e, _ in self.received if e is not None and t.startswith(prefix)]

    def telemetry(self, node: str) -> list[Telemetry]:
        return [e.body for e in self.envelopes("telemetry", node) if isinstance(e.body, Telemetry)]

    def events(self, node: str) -> list[Event]:
        return [e.body for e in self.envelopes("event", node) if isinstance(e.body, Event)]

    def telemetry_numbers(self, node: str, started_at: float | None = None) -> set[int]:
        return {
            int(t.counters["telemetry.n"])
            for t in self.telemetry(node)
            if started_at is None or t.counters.get("daemon.started_at") == started_at
        }

    def event_numbers(self, node: str | None = None) -> set[int]:
        events = self.events(node) if node is not None else []
        return {n for ev in events if isinstance(n := ev.data.get("n"), int)}


class Node:
    """One daemon process with its own config, state directory and notify socket."""

    def __init__(self, tmp: Path, broker: MosquittoBroker, name: str, **config: Any) -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "state"
        self.config = fleet_config(self.dir / "cfg.toml", self.state, broker.port, name, **config)
        self._starts = 0
        self.proc: Daemon | None = None
        self.notify: NotifySocket | None = None

    def start(self, *, wait_ready: bool = True) -> None:
        self._starts += 1
        if self.notify is not None:
            self.notify.close()
        self.notify = NotifySocket(self.dir / f"n{self._starts}.sock")
        self.proc = Daemon(self.config, self.notify)
        if wait_ready:
            self.notify.wait_for("READY=1", 60)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.proc.pid

    def status(self) -> dict[str, Any]:
        return status_of(self.state)

    def wait_status(
        self, cond: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_S
    ) -> dict[str, Any]:
        pid = self.pid
        return wait_status(self.state, lambda s: s.get("pid") == pid and cond(s), what, timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.signal(sig)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def log(self) -> str:
        path = self.config.with_suffix(".log")
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        self.kill()
        if self.notify is not None:
            self.notify.close()


@pytest.fixture
def listener(mosquitto: MosquittoBroker) -> Iterator[Listener]:
    sniff = Listener(mosquitto, extra=("actuators/#",))
    yield sniff
    sniff.close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


@pytest.fixture
def hub_key(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    pair = generate_keypair(tmp_path / "hubkeys", "hub")
    return tmp_path / "hubkeys", load_signing_key(pair.private_path)


def restart_broker_while_frozen(broker: MosquittoBroker, sniff: Listener, *nodes: Node) -> None:
    """Start the broker with the nodes stopped (SIGSTOP) until the listener subscribed again:
    the broker keeps nothing for a subscriber that is not there yet."""
    for node in nodes:
        node.signal(signal.SIGSTOP)
    subacks = sniff.subacks
    broker.start()
    wait_until(lambda: sniff.subacks > subacks, "the listener to subscribe again")
    for node in nodes:
        node.signal(signal.SIGCONT)


def connects(sniff: Listener, node: str) -> int:
    """How many 'connected to the broker' events the node published."""
    return sum(
        e.kind.value == "connectivity" and e.severity.value == "info" for e in sniff.events(node)
    )


@contextmanager
def hub_for(
    broker: MosquittoBroker, key: Ed25519PrivateKey | None, node: str
) -> Iterator[FleetClient]:
    """A connected hub client that has seen ``node`` online with its birth."""
    with FleetClient(fleet=FLEET, port=broker.port, key=key) as hub:
        hub.connect()
        wait_until(hub_sees(hub, node), f"the hub to see {node}")
        yield hub


def hub_sees(hub: FleetClient, node: str) -> Callable[[], bool]:
    def seen() -> bool:
        hub.listen(0.1)
        view = hub.nodes.get(node)
        return view is not None and view.birth is not None and bool(view.online)

    return seen


# ----------------------------------------------------------------------------------------- tests
def test_telemetry_and_events_arrive_complete_across_broker_restarts(
    mosquitto: MosquittoBroker, listener: Listener, nodes: list[Node], tmp_path: Path
) -> None:
    node = Node(tmp_path, mosquitto, "pi-01")
    nodes.append(node)
    node.start()
    wait_until(lambda: len(listener.telemetry("pi-01")) >= 3, "telemetry")
    # The wire models are msgspec Structs: the daemon talks to the fleet without pydantic.
    assert "pydantic_core" not in Path(f"/proc/{node.pid}/maps").read_text()
    for kill in range(3):
        mosquitto.kill()
        node.wait_status(
            lambda s: s["fleet"]["link"]["outbox.depth_rows"] >= 3, "telemetry kept offline"
        )
        restart_broker_while_frozen(mosquitto, listener, node)
        connected = kill + 2  # the first connect, then one per restart
        wait_until(
            lambda n=connected: connects(listener, "pi-01") >= n,  # type: ignore[misc]
            f"reconnect {kill + 1}",
        )
    # Plain TCP: three lost connections went through paho's `except ssl.SSLWant...Error`
    # clauses, and OpenSSL was never loaded (edge_agent.daemon.footprint's stand-in for `ssl`).
    maps = Path(f"/proc/{node.pid}/maps").read_text()
    assert "libssl" not in maps
    assert "libcrypto" not in maps
    # Three outages held telemetry in the outbox: a record log (fleet/record_log.py), as the
    # nonce store; SQLite is never loaded (only to migrate an old database).
    assert "libsqlite3" not in maps
    assert "_sqlite3" not in maps
    assert node.stop() == 0
    final = node.status()
    assert final["state"] == "stopped"
    sent_telemetry = final["fleet"]["telemetry_published"]
    sent_events = final["fleet"]["events_published"]
    # At least the three seen before the first outage; how many more depends on the clock (the
    # outbox rows waited for during outages may be events). Completeness is what is checked.
    assert sent_telemetry >= 3
    assert sent_events >= 8  # started, connected, and lost + connected per restart
    wait_until(
        lambda: (
            listener.telemetry_numbers("pi-01") == set(range(1, sent_telemetry + 1))
            and listener.event_numbers("pi-01") == set(range(1, sent_events + 1))
        ),
        "every telemetry and event message",
    )
    # Counted by the envelope's sequence number too: at-least-once, never a hole in what the
    # outbox held (each message kept its seq through every re-send).
    stored = listener.envelopes("telemetry", "pi-01") + listener.envelopes("event", "pi-01")
    assert len({e.seq for e in stored}) == sent_telemetry + sent_events
    last = listener.telemetry("pi-01")[-1]
    assert last.outbox is not None
    assert last.counters["link.connects"] >= 4
    assert last.groups == {"grid": 30}
    assert last.budget_total_bytes > last.budget_used_bytes > 0
    assert final["fleet"]["link"]["outbox.depth_rows"] == 0


def test_outbox_delivers_after_a_sigkill_during_an_outage(
    mosquitto: MosquittoBroker, listener: Listener, nodes: list[Node], tmp_path: Path
) -> None:
    # Telemetry is relaxed (docs/fleet.md, durability): committed every outbox_commit_interval_s,
    # so a SIGKILL loses what was published since the last commit; events are committed every
    # tick and none may be lost.
    node = Node(tmp_path, mosquitto, "pi-02", mqtt_extra="outbox_commit_interval_s = 1")
    nodes.append(node)
    node.start()
    wait_until(lambda: len(listener.telemetry("pi-02")) >= 3, "telemetry")
    first_started = listener.telemetry("pi-02")[0].counters["daemon.started_at"]
    mosquitto.kill()
    before = node.wait_status(
        lambda s: not s["fleet"]["online"] and s["fleet"]["link"]["outbox.depth_rows"] >= 8,
        "a backlog in the outbox",
    )
    node.kill()  # SIGKILL: nothing is flushed on the way out
    sent_telemetry = before["fleet"]["telemetry_published"]
    sent_events = before["fleet"]["events_published"]
    uncommitted = before["fleet"]["link"]["outbox.uncommitted_rows"]
    # The exposure is in the status's counters (and so in telemetry and Prometheus) too.
    assert before["counters"]["outbox.uncommitted_rows"] == uncommitted
    age = before["counters"]["outbox.uncommitted_s"]
    assert age >= 0.0 if uncommitted else age == 0.0
    heard_before = max(listener.telemetry_numbers("pi-02"), default=0)
    assert heard_before < sent_telemetry - 5
    # The daemon starts and ticks with the broker down: READY does not wait for it.
    node.start()
    node.wait_status(
        lambda s: s["tick"]["ticks"] >= 10 and not s["fleet"]["online"], "ticks without a broker"
    )
    restart_broker_while_frozen(mosquitto, listener, node)
    committed = set(range(1, sent_telemetry - uncommitted + 1))
    wait_until(
        lambda: (
            listener.telemetry_numbers("pi-02", first_started) >= committed
            and listener.event_numbers("pi-02") >= set(range(1, sent_events + 1))
        ),
        "the first process's backlog",
    )
    # What was committed during the outage arrived: more than what was heard before it.
    assert max(committed) > heard_before, (sent_telemetry, uncommitted, heard_before)
    births = [b.bdseq for b in listener.envelopes("birth", "pi-02")]
    assert births == sorted(set(births))
    assert node.stop() == 0


def test_hub_commands_good_bad_and_hostile(
    mosquitto: MosquittoBroker,
    listener: Listener,
    nodes: list[Node],
    tmp_path: Path,
    hub_key: tuple[Path, Ed25519PrivateKey],
) -> None:
    keys_dir, key = hub_key
    node = Node(tmp_path, mosquitto, "pi-03", keys_dir=keys_dir)
    nodes.append(node)
    node.start()
    with hub_for(mosquitto, key, "pi-03") as hub:

        def ok(name: str, **args: Any) -> CommandResult:
            result = hub.command("pi-03", name, args, timeout_s=20)
            assert result.code is ResultCode.OK, result
            return result

        assert ok("ping").detail == "pong"
        ok("stop_group", group="grid")
        node.wait_status(lambda s: s["groups"][0]["paused_reason"] == "command", "paused")
        ok("start_group", group="grid")
        births = len(listener.envelopes("birth", "pi-03"))
        ok("resize_group", group="grid", agents=45)
        wait_until(lambda: len(listener.envelopes("birth", "pi-03")) > births, "a new birth")
        birth = listener.envelopes("birth", "pi-03")[-1].body
        assert isinstance(birth, Birth)
        assert birth.groups["grid"].agents == 45
        # The birth says which keys it verifies bundles with (its trusted_keys_dir: the hub's
        # here) and its tick rate, which a hub bounds its learning deltas by: a new rate, a new
        # birth.
        first = listener.envelopes("birth", "pi-03")[0].body
        assert isinstance(first, Birth)
        for said in (first, birth):  # the first birth too: sent as it connects
            assert said.bundle_keys == [key_id(key.public_key())]
            assert said.tick_hz == 20.0
        births = len(listener.envelopes("birth", "pi-03"))
        ok("set_tick_rate", hz=12.5)
        wait_until(lambda: len(listener.envelopes("birth", "pi-03")) > births, "a new birth")
        birth = listener.envelopes("birth", "pi-03")[-1].body
        assert isinstance(birth, Birth)
        assert birth.tick_hz == 12.5
        snap = ok("snapshot")
        assert Path(str(snap.data["path"])).is_file()
        status = node.wait_status(lambda s: s["tick"]["base_hz"] == 12.5, "the new tick rate")
        assert status["agents"] == 45
        assert not status["groups"][0]["paused"]

        # Refusals, each answered with its code.
        def answer(cmd: Any, topic_node: str = "pi-03") -> ResultCode:
            hub.send(cmd, to=topic_node)
            return hub.wait_result(cmd.nonce, 20).code

        good = hub.make_command("pi-03", "ping")
        sig = bytearray(good.signature)
        sig[5] ^= 0x40
        other = Ed25519PrivateKey.generate()
        foreign = replace(hub.make_command("pi-03", "ping"), key_id=key_id(other.public_key()))
        foreign = replace(foreign, signature=sign_bytes(other, foreign.signing_bytes(FLEET)))
        cases = [
            (
                replace(hub.make_command("pi-03", "ping"), signature=b""),
                "bad_signature",
            ),
            (replace(good, signature=bytes(sig)), "bad_signature"),
            (foreign, "unknown_key"),
            (hub.make_command("pi-03", "ping", ttl_s=-5), "expired"),
            (hub.make_command("pi-03", "ping", ttl_s=10_000), "bad_args"),
            (hub.make_command("pi-99", "ping"), "bad_args"),
            (hub.make_command("pi-03", "teleport"), "unknown_command"),
            (hub.make_command("pi-03", "resize_group", {"group": "grid", "agents": 0}), "bad_args"),
            (hub.make_command("pi-03", "stop_group", {"group": "nope"}), "bad_args"),
        ]
        assert [answer(cmd).value for cmd, _ in cases] == [code for _, code in cases]
        assert answer(good) is ResultCode.OK
        assert answer(good) is ResultCode.REPLAYED

        # Garbage on the command topic: counted by reason, never answered, never fatal.
        raw = msgspec.msgpack.decode(encode(_envelope(good)))
        garbage = {
            "not_msgpack": b"\xc1\xc1\xc1",
            "oversized": b"\x00" * (300 * 1024),
            "schema": msgspec.msgpack.encode({**raw, "body": {**raw["body"], "extra": 1}}),
            "type_mismatch": encode(_envelope(Event(kind="other"))),
        }
        for payload in garbage.values():
            listener.publish(TOPICS.command("pi-03"), payload)
        status = node.wait_status(
            lambda s: all(s["fleet"]["link"][f"malformed.{r}"] >= 1 for r in garbage),
            "the malformed messages counted",
        )
        commands = status["commands"]
        assert commands["refused.bad_signature"] == 2
        assert commands["unsigned"] == 1
        assert commands["refused.unknown_key"] == 1
        assert commands["refused.expired"] == 1
        assert commands["refused.replayed"] == 1
        assert commands["refused.bad_args"] == 2
        assert any(e.kind.value == "alarm" for e in listener.events("pi-03"))
        ticks = status["tick"]["ticks"]
        node.wait_status(lambda s: s["tick"]["ticks"] > ticks + 5, "still ticking")
        view = status_view(node.state)
        assert f"fleet      node pi-03 of {FLEET} at 127.0.0.1:{mosquitto.port}: online" in view
        assert "refused {" in view
        assert "malformed input: {" in view

        # The nonce store outlives the process: the accepted command stays a replay.
        assert node.stop() == 0
        node.start()
        # Online (connected and subscribed), not only started: a command sent before the new
        # session subscribes is lost, and a refusal is answered only once heard.
        node.wait_status(lambda s: bool(s.get("fleet", {}).get("online")), "the node online")
        assert answer(good) is ResultCode.REPLAYED


def _envelope(body: Any) -> Envelope:
    return Envelope(
        type=body.TYPE, node="hub", seq=0, bdseq=0, ts=1.0, clock_synced=True, body=body
    )


def test_observations_in_and_actions_out_over_mqtt(
    mosquitto: MosquittoBroker, listener: Listener, nodes: list[Node], tmp_path: Path
) -> None:
    node = Node(tmp_path, mosquitto, "pi-04", groups=IO_GROUP, telemetry_s=0.5)
    nodes.append(node)
    node.start()
    node.wait_status(lambda s: s["fleet"]["online"], "online")
    waiting = node.wait_status(lambda s: s["tick"]["ticks"] > 5, "ticks")
    io = waiting["groups"][0]["io"]
    assert io["waiting"] is True
    assert io["unobserved"] == 12
    assert listener.on_topic("actuators/") == []  # no observation yet: no action
    rng = np.random.default_rng(0)
    everyone = np.arange(12)
    for tick in range(15):
        ids = everyone if tick < 5 else everyone[::2]  # later only the even agents report
        obs = rng.integers(0, 100, size=(len(ids), 1))
        listener.publish("sensors/io/a", encode_observations("sensor", "io", tick, ids, obs))
        time.sleep(0.05)
    bad = {
        "agent_id": encode_observations("sensor", "io", 0, [3, 12], [[1], [2]]),
        "value": encode_observations("sensor", "io", 0, [1, 2], [[100], [5]]),
        "decode": b"not a message",
        "group": encode_observations("sensor", "zzz", 0, [1], [[1]]),
        "width": encode_observations("sensor", "io", 0, [1], [[1, 2]]),
    }
    for payload in bad.values():
        listener.publish("sensors/io/b", payload)
    status = node.wait_status(
        lambda s: (
            all(s["groups"][0]["io"]["rejected"].get(r) for r in bad)
            and s["groups"][0]["actions"]["batches"] >= 10
        ),
        "the rejected observations counted",
    )
    io = status["groups"][0]["io"]
    assert io["waiting"] is False
    assert io["rows"] >= 5 * 12
    assert io["rejected"]["value"] == 1  # one row of that batch; the other was kept
    assert io["stale_agent_ticks"] > 0  # the odd agents kept their last observation
    assert io["max_age_ticks"] > 1
    actions = [e.body for e in listener.on_topic("actuators/io")]
    assert len(actions) >= 10
    for batch in actions:
        assert isinstance(batch, ActionBatch)
        assert batch.group == "io"
        ids, values = batch.arrays()
        np.testing.assert_array_equal(ids, everyone)
        assert values.shape == (12, 1)
        assert ((values >= 0) & (values < 5)).all()
    ticks = [b.tick for b in actions if isinstance(b, ActionBatch)]
    assert ticks == sorted(ticks)  # once per tick, in order
    wait_until(
        lambda: any(e.kind.value == "rejected_input" for e in listener.events("pi-04")),
        "a rejected_input event",
    )
    assert node.stop() == 0
