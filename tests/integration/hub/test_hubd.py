"""The hub service (``edge-agent-hub``) with real parts: mosquitto, real daemons, the service as
a process, SQLite and a real PostgreSQL started by the test (``postgres.py``).

* a fleet recorded completely (every telemetry and event number of every node process), with
  presence, births, deaths, the command journal, and the CLI reading it, on both engines;
* two replicas splitting the traffic through an MQTT 5 shared subscription, nothing lost;
* PostgreSQL killed and restarted while the nodes publish: the hub holds the messages, says so
  (status, log, exit status of ``status``), and writes every one afterwards;
* malformed and forged messages counted (status, Prometheus) and dropped;
* the data layer's scenarios (``tests/unit/host/hub/storage/test_database.py``) on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from msgspec.structs import replace
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.fleet.protocol import Envelope, Event, EventKind, Telemetry, encode
from edge_agent_host.fleetctl import FleetClient
from edge_agent_host.hub.config.hub_toml import load_hub_config
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import PostgresEngine
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.daemon.test_daemon import REPO, NotifySocket
from tests.integration.fleet.test_fleet_daemon import FLEET, TOPICS, Node, wait_until
from tests.support.broker import MosquittoBroker
from tests.support.postgres import PostgresMissingError, PostgresServer, find_pg_bindir
from tests.unit.host.hub.learning.test_catch_up_store import CATCH_UP_SCENARIOS
from tests.unit.host.hub.learning.test_policy import POLICY_SCENARIOS
from tests.unit.host.hub.learning.test_store import LEARNING_SCENARIOS
from tests.unit.host.hub.rollouts.test_runner import ROLLOUT_SCENARIOS
from tests.unit.host.hub.storage.test_database import SCENARIOS

pytestmark = pytest.mark.integration

WAIT_S = 60.0
GROUP = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 20
source = { type = "sim" }
sink = { type = "sim" }
"""


# ------------------------------------------------------------------------------------ fixtures
def _server() -> PostgresServer:
    try:
        return PostgresServer()
    except PostgresMissingError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def pg_shared() -> Iterator[PostgresServer]:
    """One server for the tests that only need a database of their own."""
    server = _server()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A server of this test's own (it may be stopped and started)."""
    server = _server()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


_databases = iter(range(1, 1_000_000))


def new_database(server: PostgresServer) -> str:
    return server.create_database(f"hub_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    started: list[Hub] = []
    yield started
    for hub in started:
        hub.kill()


# --------------------------------------------------------------------------------- the service
def sqlite_table() -> str:
    return '[database]\ntype = "sqlite"\n'


class Hub:
    """One ``edge-agent-hub run`` process with its own config, state directory and notify socket."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        broker: MosquittoBroker,
        database: str,
        *,
        share_group: str = "",
        extra_hub: str = "",
        extra_mqtt: str = "",
    ) -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "state"
        self.config = self.dir / "hub.toml"
        self.config.write_text(
            f"""
[hub]
id = "{name}"
state_dir = "{self.state}"
status_interval_s = 0.3
log_level = "info"
{extra_hub}

[mqtt]
port = {broker.port}
fleet = "{FLEET}"
share_group = "{share_group}"
keepalive_s = 5
reconnect_initial_s = 0.05
reconnect_max_s = 0.5
{extra_mqtt}

[queue]
report_interval_s = 1.0

{database}
"""
        )
        self.log_path = self.dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        self.notify = NotifySocket(self.dir / "notify.sock")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent_host.hub", "run", "--config", str(self.config)],
                env={**self.env(), "NOTIFY_SOCKET": str(self.notify.path)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            self.notify.wait_for("READY=1", 60)
        except AssertionError:
            pytest.fail(f"{self.name} did not start:\n{self.log()}")

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def wait_status(
        self, cond: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_S
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status()
            if last and self.proc is not None and last.get("pid") == self.proc.pid and cond(last):
                return last
            time.sleep(0.05)
        pytest.fail(f"{self.name}: timed out waiting for {what}; status {json.dumps(last)[:2000]}")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent_host.hub",
                command,
                "--config",
                str(self.config),
                *rest,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
            env=self.env(),
        )

    def database(self) -> HubDatabase:
        """The service's database, opened for reading as the CLI does."""
        from edge_agent_host.hub.cli import open_database

        return open_database(load_hub_config(self.config))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.notify is not None:
            self.notify.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --------------------------------------------------------------------------------- checking
def recorded_numbers(db: HubDatabase, node: str) -> tuple[list[int], list[int]]:
    """The ``telemetry.n`` and event ``n`` of every row the hub holds for ``node``."""
    tel = [int(t["body"]["counters"]["telemetry.n"]) for t in db.telemetry(node, limit=1_000_000)]
    events = [int(e["data"]["n"]) for e in db.events(node=node, limit=1_000_000)]
    return sorted(tel), sorted(events)


def published(node: Node) -> tuple[int, int]:
    final = node.status()
    assert final["state"] == "stopped"
    return final["fleet"]["telemetry_published"], final["fleet"]["events_published"]


def wait_recorded(
    db_of: Callable[[], HubDatabase], node: Node, timeout: float = WAIT_S
) -> tuple[int, int]:
    """Wait until the hub holds every telemetry and event number ``node`` published, each
    exactly once; returns the counts."""
    sent_tel, sent_ev = published(node)
    want = (list(range(1, sent_tel + 1)), list(range(1, sent_ev + 1)))
    got: tuple[list[int], list[int]] = ([], [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = db_of()
        try:
            got = recorded_numbers(db, node.name)
        finally:
            db.close()
        if got == want:
            return sent_tel, sent_ev
        time.sleep(0.2)
    missing_tel = sorted(set(want[0]) - set(got[0]))
    missing_ev = sorted(set(want[1]) - set(got[1]))
    dup = len(got[0]) - len(set(got[0])), len(got[1]) - len(set(got[1]))
    pytest.fail(
        f"{node.name}: sent {sent_tel} telemetry / {sent_ev} events; missing telemetry "
        f"{missing_tel[:20]}, events {missing_ev[:20]}; duplicates {dup}"
    )


def db_rows(hub: Hub, what: Callable[[HubDatabase], Any]) -> Any:
    db = hub.database()
    try:
        return what(db)
    finally:
        db.close()


def start_nodes(
    tmp_path: Path, broker: MosquittoBroker, nodes: list[Node], names: list[str], **config: Any
) -> list[Node]:
    made = [
        Node(tmp_path, broker, name, groups=GROUP, tick_hz=10, telemetry_s=0.2, **config)
        for name in names
    ]
    nodes.extend(made)
    for node in made:
        node.start(wait_ready=False)
    for node in made:
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)
    return made


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_service_records_the_fleet(
    engine: str,
    *,
    mosquitto: MosquittoBroker,
    pg_shared: PostgresServer,
    nodes: list[Node],
    hubs: list[Hub],
    tmp_path: Path,
) -> None:
    trusted = tmp_path / "trusted"
    pair = generate_keypair(trusted, "hub")
    if engine == "sqlite":
        table = sqlite_table()
    else:
        table = pg_shared.config_table(new_database(pg_shared), tmp_path / "db-password")
    hub = Hub(tmp_path, "hub-a", mosquitto, table, extra_mqtt=f'hub_keys_dir = "{trusted}"')
    hubs.append(hub)
    hub.start()
    n1, n2, n3 = start_nodes(tmp_path, mosquitto, nodes, ["n1", "n2", "n3"], keys_dir=trusted)

    def fleet() -> dict[str, dict[str, Any]]:
        return {r["node"]: r for r in db_rows(hub, lambda db: db.fleet())}

    wait_until(
        lambda: (
            (rows := fleet()).keys() == {"n1", "n2", "n3"}
            and all(r["online"] and r["birth"] and r["telemetry"] for r in rows.values())
        ),
        "three nodes online with births and telemetry",
        WAIT_S,
    )
    # A command sent by the operator's client is journaled with its result.
    key = load_signing_key(pair.private_path)
    with FleetClient(fleet=FLEET, port=mosquitto.port, key=key) as c:
        c.connect()
        result = c.command("n1", "ping", timeout_s=30)
        assert result.code.value == "ok"
    wait_until(
        lambda: any(
            r["name"] == "ping" and r["code"] == "ok" and r["verified"]
            for r in db_rows(hub, lambda db: db.commands())
        ),
        "the journaled ping and its result",
    )
    # A crash: n3's will makes it offline.
    n3.kill()
    wait_until(lambda: fleet()["n3"]["online"] is False, "n3 offline")
    out = hub.cli("fleet")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert sorted(lines) == ["n1", "n2", "n3"]
    assert " online " in lines["n1"]
    assert "grid=20" in lines["n1"]
    assert " offline " in lines["n3"]
    status = hub.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "hub-a" in status.stdout
    assert "3 nodes (2 online)" in status.stdout

    # Clean stops: a death each, and every message of every process in the database. Each node
    # first publishes five telemetry messages (waited for: how many it sent by now depends on
    # how fast the machine ran the steps above).
    for node in (n1, n2):
        node.wait_status(
            lambda st: st.get("fleet", {}).get("telemetry_published", 0) >= 5,
            f"{node.name}: five telemetry messages",
        )
    assert n1.stop() == 0
    assert n2.stop() == 0
    for node in (n1, n2):
        sent_tel, sent_ev = wait_recorded(hub.database, node)
        assert sent_tel >= 5
        assert sent_ev >= 2  # started, connected
    rows = fleet()
    assert (rows["n1"]["deaths"], rows["n1"]["death_reason"], rows["n1"]["online"]) == (
        1,
        "shutdown",
        False,
    )
    groups = db_rows(hub, lambda db: db.groups())
    assert {(g["node"], g["group"], g["agents"]) for g in groups} == {
        ("n1", "grid", 20),
        ("n2", "grid", 20),
        ("n3", "grid", 20),
    }
    events = hub.cli("events", "--node", "n1", "--limit", "100")
    assert events.returncode == 0, events.stderr
    assert "connectivity" in events.stdout
    history = hub.cli("telemetry", "n1", "--json")
    assert len(history.stdout.splitlines()) == published(n1)[0]

    assert hub.stop() == 0
    final = hub.status()
    assert final["state"] == "stopped"
    assert final["queue"]["depth"] == 0
    assert final["database"]["lost_at_stop"] == 0
    assert final["dropped_malformed"] == final["dropped_forged"] == 0
    assert hub.cli("status").returncode == 3  # not running any more


def test_two_replicas_share_the_traffic_and_lose_nothing(
    mosquitto: MosquittoBroker,
    pg_shared: PostgresServer,
    nodes: list[Node],
    hubs: list[Hub],
    tmp_path: Path,
) -> None:
    table = pg_shared.config_table(new_database(pg_shared), tmp_path / "db-password")
    replicas = [Hub(tmp_path, name, mosquitto, table, share_group="hubs") for name in ("a", "b")]
    hubs.extend(replicas)
    for hub in replicas:
        hub.start()
    for hub in replicas:
        hub.wait_status(lambda s: s["mqtt"]["connected"] and s["database"]["up"], "connected")
    fleet = start_nodes(tmp_path, mosquitto, nodes, ["r1", "r2", "r3"])
    for hub in replicas:
        hub.wait_status(
            lambda s: s["heard"].get("received.telemetry", 0) >= 10, "a share of the telemetry"
        )
    for node in fleet:
        assert node.stop() == 0
    total_tel = total_ev = 0
    for node in fleet:
        sent_tel, sent_ev = wait_recorded(replicas[0].database, node)
        total_tel += sent_tel
        total_ev += sent_ev
    # Each message went to exactly one replica (no broker restart here, so no re-sends); the
    # status files are rewritten every 0.3 s, so wait for the ones written after the last.
    statuses: list[dict[str, Any]] = []

    def heard(kind: str) -> list[int]:
        return [s.get("heard", {}).get(f"received.{kind}", 0) for s in statuses]

    def counted() -> bool:
        statuses[:] = [hub.status() for hub in replicas]
        return sum(heard("telemetry")) >= total_tel and sum(heard("event")) >= total_ev

    wait_until(counted, "both replicas' status to count every message", WAIT_S)
    heard_tel = heard("telemetry")
    assert (sum(heard_tel), sum(heard("event"))) == (total_tel, total_ev)
    # Both took a fair part. Not a matter of speed: mosquitto hands a shared subscription's
    # messages to the group's members in turn, one each, whatever their speed (subs.c:
    # subs__shared_process), and queues a member's share while it is away; both subscribed
    # before the nodes started. So each gets about half; a fifth leaves room for the order in
    # which the subscriptions of the two replicas came.
    assert all(n >= total_tel // 5 for n in heard_tel), heard_tel
    # Presence is not shared: every replica hears every birth and state.
    for s in statuses:
        assert s["heard"]["received.birth"] >= 3
        assert s["heard"]["received.state"] >= 3
    # Each replica wrote its part; the one database has them all, each once.
    assert all(s["database"]["written"] > 0 for s in statuses)
    out = replicas[0].cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replica    a " in out.stdout
    assert "replica    b " in out.stdout
    for hub in replicas:
        assert hub.stop() == 0


def test_a_database_outage_loses_nothing_within_the_bound(
    mosquitto: MosquittoBroker,
    postgres: PostgresServer,
    nodes: list[Node],
    hubs: list[Hub],
    tmp_path: Path,
) -> None:
    table = postgres.config_table(new_database(postgres), tmp_path / "db-password")
    hub = Hub(tmp_path, "hub-a", mosquitto, table)
    hubs.append(hub)
    hub.start()
    fleet = start_nodes(tmp_path, mosquitto, nodes, ["o1", "o2"])
    hub.wait_status(lambda s: s["database"]["written"] >= 20, "writes")

    postgres.kill()  # a crash: connections drop, nothing answers
    down = hub.wait_status(
        lambda s: not s["database"]["up"] and s["queue"]["depth"] >= 20, "messages held"
    )
    assert down["state"] == "degraded"
    out = hub.cli("status")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DOWN for" in out.stdout
    assert "the database cannot be read" in out.stdout
    wait_until(lambda: "messages held" in hub.log(), "the once-per-interval report", 10)
    assert hub.log().count("database unreachable:") == 1  # the transition, once
    time.sleep(2.0)  # keep publishing while it is down

    postgres.start()
    hub.wait_status(
        lambda s: s["database"]["up"] and s["queue"]["depth"] == 0, "the held messages written"
    )
    assert "is back after" in hub.log()
    for node in fleet:
        assert node.stop() == 0
    for node in fleet:
        wait_recorded(hub.database, node)
    final = hub.wait_status(lambda s: s["queue"]["depth"] == 0, "nothing held")
    assert final["database"]["outages"] == 1
    assert final["queue"]["dropped"] == 0
    assert final["queue"]["high_water"] >= 20
    assert hub.stop() == 0


def test_malformed_and_forged_messages_are_counted_and_dropped(
    mosquitto: MosquittoBroker, nodes: list[Node], hubs: list[Hub], tmp_path: Path
) -> None:
    trusted = tmp_path / "trusted"
    pair = generate_keypair(trusted, "hub")
    prom = tmp_path / "hub.prom"
    hub = Hub(
        tmp_path,
        "hub-a",
        mosquitto,
        sqlite_table(),
        extra_hub=f'prometheus_textfile = "{prom}"',
        extra_mqtt=f'hub_keys_dir = "{trusted}"',
    )
    hubs.append(hub)
    hub.start()
    (node,) = start_nodes(tmp_path, mosquitto, nodes, ["m1"], keys_dir=trusted)
    hub.wait_status(lambda s: s["heard"].get("received.telemetry", 0) >= 3, "telemetry")

    forger = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="forger",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    forger.connect(mosquitto.host, mosquitto.port)
    forger.loop_start()

    def envelope(msg_type: str, body: Any, node: str = "m1") -> Envelope:
        return Envelope(
            type=msg_type, node=node, seq=1, bdseq=1, ts=time.time(), clock_synced=True, body=body
        )

    tel = Telemetry(
        uptime_s=0,
        rss_bytes=0,
        budget_used_bytes=0,
        budget_total_bytes=0,
        ticks=0,
        tick_p50_ms=0,
        tick_p99_ms=0,
        overruns=0,
    )
    key = load_signing_key(pair.private_path)
    with FleetClient(fleet=FLEET, port=mosquitto.port, key=key) as signer:
        signed = signer.make_command("m1", "ping")
    bad = [
        (TOPICS.telemetry("m1"), b"\xc1 not msgpack"),
        (TOPICS.event("m1"), b"\x81\xa1v\x02"),  # {"v": 2}
        (TOPICS.event("m1"), b"\x00" * (300 * 1024)),
        (TOPICS.telemetry("m1"), encode(envelope("event", Event(kind=EventKind.OTHER)))),
        (TOPICS.telemetry("m1"), encode(envelope("telemetry", tel, node="ghost"))),
        (
            TOPICS.command("m1"),
            encode(envelope("command", replace(signed, name="snapshot"), "hub")),
        ),
        (
            TOPICS.command("m1"),
            encode(envelope("command", replace(signed, key_id="x"), "hub")),
        ),
        (TOPICS.command("m2"), encode(envelope("command", signed, "hub"))),
    ]
    for topic, payload in bad:
        forger.publish(topic, payload, qos=1).wait_for_publish(10)
    forger.loop_stop()
    forger.disconnect()
    expected = {
        "malformed.not_msgpack": 1,
        "malformed.version": 1,
        "malformed.oversized": 1,
        "malformed.type_mismatch": 1,
        "forged.node_mismatch": 1,
        "forged.signature": 1,
        "forged.unknown_key": 1,
        "forged.target": 1,
    }
    status = hub.wait_status(
        lambda s: all(s["heard"].get(k) == n for k, n in expected.items()), "every refusal counted"
    )
    assert (status["dropped_malformed"], status["dropped_forged"]) == (4, 4)
    before = status["heard"]["received.telemetry"]
    hub.wait_status(
        lambda s: s["heard"]["received.telemetry"] > before + 3, "the node's telemetry after it"
    )
    # Nothing of it reached the database: no ghost node, no command, no event of the forger.
    rows = db_rows(hub, lambda db: (db.fleet(), db.commands(), db.events(node="m1")))
    assert [r["node"] for r in rows[0]] == ["m1"]
    assert rows[1] == []
    assert all("name" in e["data"] for e in rows[2])  # the daemon's own events only
    wait_until(
        lambda: (
            prom.exists()
            and 'edge_agent_hub_heard_forged_node_mismatch_total{hub="hub-a"} 1' in prom.read_text()
        ),
        "the Prometheus file",
    )
    text = prom.read_text()
    assert 'edge_agent_hub_heard_malformed_oversized_total{hub="hub-a"} 1' in text
    assert 'edge_agent_hub_db_up{hub="hub-a"} 1' in text
    assert node.stop() == 0
    assert hub.stop() == 0


@pytest.mark.parametrize(
    "scenario",
    SCENARIOS + ROLLOUT_SCENARIOS + LEARNING_SCENARIOS + CATCH_UP_SCENARIOS + POLICY_SCENARIOS,
    ids=lambda f: f.__name__[len("check_") :],
)
def test_the_data_layer_on_postgresql(pg_shared: PostgresServer, scenario: Any) -> None:
    """The same statements as on SQLite (tests/unit/host/hub/storage/test_database.py), on
    PostgreSQL."""
    engine = PostgresEngine(
        host=pg_shared.host,
        port=pg_shared.port,
        dbname=new_database(pg_shared),
        user=pg_shared.user,
        password=pg_shared.password,
        sslmode="disable",
    )
    db = HubDatabase(engine)
    db.open()
    try:
        scenario(db)
    finally:
        db.close()
    second = HubDatabase(engine)  # replicas starting together: migrations run once
    second.open()
    assert second.schema_version == db.schema_version
    second.close()


def test_a_missing_postgresql_fails_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PostgresMissingError, match=r"apt-get install postgresql"):
        find_pg_bindir("/nonexistent/*/bin")


def test_the_shipped_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    from edge_agent_host.hub.cli import unit_text
    from tests.integration.packaging.test_systemd_unit import systemd_analyze, unit_problems, verify

    fake = tmp_path / "edge-agent-hub"
    fake.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    fake.chmod(0o755)
    text = unit_text().replace("/opt/edge-agent-hub/venv/bin/edge-agent-hub run", f"{fake} run")
    assert f"ExecStart={fake} run --config /etc/edge-agent-hub/hub.toml" in text
    unit = tmp_path / "edge-agent-hub.service"
    unit.write_text(text, encoding="utf-8")
    result = verify(unit)
    assert result.returncode == 0, result.stderr
    assert unit_problems(result, unit) == []
    security = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match is not None, security.stdout + security.stderr
    assert float(match.group(1)) <= 2.0, security.stdout  # 1.4 with systemd 252, as the daemon's
