"""The hub service's loop on the in-memory broker and a SQLite that can be switched off:
what it records, what it drops and counts, and how it holds messages while the database is
unreachable (status, metrics, a log line per report interval) and writes them afterwards."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from edge_agent.bundle.signing import TrustedKeys, key_id, sign_bytes
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.protocol import (
    Command,
    Envelope,
    Event,
    EventKind,
    NodeState,
    RebirthRequest,
    decode,
    encode,
)
from edge_agent.fleet.topics import Topics
from edge_agent.service.systemd import SdNotifier
from edge_agent_host.hub.config.hub_toml import parse_hub_config
from edge_agent_host.hub.service.loop import HubService, State
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.unit.host.hub.storage.test_database import birth, count, telemetry_body

FLEET = "unit"
TOPICS = Topics(FLEET)


class _Switch:
    """A connection that fails like a server that went away while ``engine.down``."""

    def __init__(self, conn: sqlite3.Connection, engine: SwitchableEngine) -> None:
        self._conn = conn
        self._engine = engine

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self._engine.down:
            raise sqlite3.OperationalError("the server closed the connection (test)")
        if self._engine.hanging.is_set():  # a stopped server: no answer until aborted
            self._engine.hung_threads.add(threading.current_thread().name)
            self._engine.released.wait(60)
            raise sqlite3.OperationalError("the connection was shut down (test)")
        if self._engine.full and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, params)

    def interrupt(self) -> None:
        self._engine.released.set()
        self._conn.interrupt()

    def cursor(self) -> Any:
        if self._engine.down:
            raise sqlite3.OperationalError("the server closed the connection (test)")
        return self._conn.cursor()

    def close(self) -> None:
        self._conn.close()


class SwitchableEngine(SqliteEngine):
    down = False
    full = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hanging = threading.Event()
        self.released = threading.Event()
        self.hung_threads: set[str] = set()
        """Threads that waited in a hung call: the database's, never the service loop's."""

    def connect(self) -> Any:
        if self.down:
            raise sqlite3.OperationalError("connection refused (test)")
        return _Switch(super().connect(), self)


class Node:
    """A fake node on the memory broker: publishes envelopes with its own sequence."""

    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.name = name
        self.seq = 0
        self.transport = MemoryTransport(broker, f"node-{name}")
        self.transport.connect()

    def send(self, topic: str, body: Any, *, node: str | None = None, retain: bool = False) -> None:
        env = Envelope(
            type=body.TYPE,
            node=node or self.name,
            seq=self.seq,
            bdseq=1,
            ts=time.time(),
            clock_synced=True,
            body=body,
        )
        self.seq += 1
        assert self.transport.publish(topic, encode(env), 1, retain) is not None

    def raw(self, topic: str, payload: bytes) -> None:
        assert self.transport.publish(topic, payload, 1) is not None


def make_service(
    tmp_path: Path,
    broker: MemoryBroker,
    *,
    max_messages: int = 100_000,
    deadline_s: float = 30.0,
    **kwargs: Any,
) -> tuple[HubService, SwitchableEngine]:
    text = f"""
[hub]
id = "hub-unit"
state_dir = "{tmp_path / "state"}"
status_interval_s = 0.1

[mqtt]
fleet = "{FLEET}"

[queue]
report_interval_s = 0.3
max_messages = {max_messages}

[database]
type = "sqlite"
reconnect_initial_s = 0.05
reconnect_max_s = 0.1
operation_deadline_s = {deadline_s}
"""
    config = parse_hub_config(text, "hub.toml").config
    path = config.sqlite_path
    assert path is not None
    engine = SwitchableEngine(path)
    transport = MemoryTransport(broker, "hub-unit")
    service = HubService(config, engine=engine, transport=transport, **kwargs)
    return service, engine


def run_until(service: HubService, cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.step(wait_s=0.02)
        if cond():
            return
    pytest.fail(f"timed out waiting for {what}; status {service.status_line()}")


def test_records_the_fleet_and_drops_what_is_malformed_or_forged(tmp_path: Path) -> None:
    broker = MemoryBroker()
    pair = generate_keypair(tmp_path / "keys", "hub")
    keys = TrustedKeys.from_dir(tmp_path / "keys")
    signer = load_signing_key(pair.private_path)
    service, _engine = make_service(tmp_path, broker, hub_keys=keys)
    service.start()
    n1 = Node(broker, "n1")
    n1.send(TOPICS.node_state("n1"), NodeState(online=True), retain=True)
    n1.send(TOPICS.birth("n1"), birth(10), retain=True)
    for _ in range(3):
        n1.send(TOPICS.telemetry("n1"), telemetry_body())
    n1.send(TOPICS.event("n1"), Event(kind=EventKind.OTHER, detail="hello"))
    # Malformed: not msgpack; a type that does not belong on the topic; not a protocol topic.
    n1.raw(TOPICS.telemetry("n1"), b"\xc1garbage")
    n1.send(TOPICS.telemetry("n1"), Event(kind=EventKind.OTHER))
    # Forged: telemetry in n2's name on n1's topic; commands no trusted key signed.
    n1.send(TOPICS.telemetry("n1"), telemetry_body(), node="n2")
    good = Command(
        target="n1", nonce=os.urandom(16), expires=time.time() + 60, key_id="", name="ping"
    )
    good = replace(good, key_id=key_id(signer.public_key()))
    good = replace(good, signature=sign_bytes(signer, good.signing_bytes(FLEET)))
    n1.send(TOPICS.command("n1"), good, node="hub")
    n1.send(TOPICS.command("n1"), replace(good, nonce=b"\x01" * 16), node="hub")
    n1.send(TOPICS.command("n1"), replace(good, key_id="nobody"), node="hub")
    n1.send(TOPICS.command("n2"), replace(good, nonce=b"\x02" * 16), node="hub")
    chunk = Command(target="n1", nonce=b"\x03" * 16, expires=0.0, key_id="", name="deploy_chunk")
    n1.send(TOPICS.command("n1"), chunk, node="hub")
    run_until(service, lambda: not service.queue and service.db.written >= 7, "the writes")
    service.request_stop()
    service.shutdown()

    heard = service.listener.counts()
    assert heard["received.telemetry"] == 3
    assert heard["malformed.not_msgpack"] == 1
    assert heard["malformed.type_mismatch"] == 1
    assert heard["forged.node_mismatch"] == 1
    assert heard["forged.signature"] == 1  # another nonce: the signature no longer matches
    assert heard["forged.unknown_key"] == 1
    assert heard["forged.target"] == 1
    assert heard["ignored.deploy_chunk"] == 1
    assert service.listener.dropped() == 6
    status = service.status()
    assert (status["dropped_malformed"], status["dropped_forged"]) == (2, 4)
    assert status["counters"]["hub.heard.forged.node_mismatch"] == 1
    assert status["state"] == "stopped"

    db = service.db
    db.open()
    (row,) = db.fleet()  # n2 never got a row: everything in its name was forged
    assert (row["node"], row["online"]) == ("n1", True)
    assert row["birth"]["groups"]["grid"]["agents"] == 10
    assert count(db, "telemetry") == 3
    assert [e["detail"] for e in db.events()] == ["hello"]
    (cmd,) = db.commands()
    assert (cmd["name"], cmd["verified"], cmd["nonce"]) == ("ping", True, good.nonce.hex())
    (replica,) = db.hubs()
    assert replica["hub_id"] == "hub-unit"
    assert replica["status"]["state"] in ("running", "stopped")
    db.close()
    on_file = (tmp_path / "state" / "status.json").read_text()
    assert '"state": "stopped"' in on_file


def test_database_outage_holds_messages_says_so_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent_host.hub")
    broker = MemoryBroker()
    service, engine = make_service(tmp_path, broker)
    service.start()
    node = Node(broker, "n1")
    node.send(TOPICS.birth("n1"), birth(), retain=True)
    run_until(service, lambda: service.db.written == 1, "the birth")

    engine.down = True
    for _ in range(20):
        node.send(TOPICS.telemetry("n1"), telemetry_body())
    node.send(TOPICS.event("n1"), Event(kind=EventKind.ALARM, detail="during the outage"))
    run_until(service, lambda: service.state is State.DEGRADED, "the hub to notice")
    started = time.monotonic()
    while time.monotonic() - started < 1.0:  # more than three report intervals (0.3 s)
        service.step(wait_s=0.02)
    status = service.status()
    assert status["state"] == "degraded"
    assert status["database"]["up"] is False
    assert status["database"]["down_s"] > 0.5
    assert "test" in status["database"]["last_error"]
    assert status["queue"]["depth"] == 21
    assert status["counters"]["hub.db.up"] == 0
    assert status["counters"]["hub.queue.depth"] == 21
    assert "DATABASE DOWN" in service.status_line()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("database unreachable:" in w for w in warnings) == 1  # at the transition
    reports = [w for w in warnings if "21 messages held" in w]
    assert 2 <= len(reports) <= 4  # then once per report interval, not per attempt

    engine.down = False
    run_until(service, lambda: service.state is State.RUNNING and not service.queue, "recovery")
    assert any("is back after" in r.getMessage() for r in caplog.records)
    db = service.db
    assert count(db, "telemetry") == 20
    assert [e["detail"] for e in db.events()] == ["during the outage"]
    assert service.status()["database"]["outages"] == 1
    service.request_stop()
    service.shutdown()


def test_a_full_queue_drops_telemetry_first_and_counts_it(tmp_path: Path) -> None:
    broker = MemoryBroker()
    service, engine = make_service(tmp_path, broker, max_messages=100)
    service.start()
    engine.down = True
    service.step(wait_s=0.01)
    node = Node(broker, "n1")
    for _ in range(150):
        node.send(TOPICS.telemetry("n1"), telemetry_body())
    for i in range(10):
        node.send(TOPICS.event("n1"), Event(kind=EventKind.OTHER, detail=f"e{i}"))
    stats = service.queue.stats()
    assert (stats["depth"], stats["dropped.telemetry"], stats["evicted_telemetry"]) == (100, 50, 10)
    assert service.status()["heard"]["queue_full"] == 50
    engine.down = False
    run_until(service, lambda: not service.queue and service.db.is_open, "the writes")
    assert count(service.db, "telemetry") == 90
    assert [e["detail"] for e in service.db.events()] == [f"e{i}" for i in range(10)]
    service.request_stop()
    service.shutdown()


def test_a_node_without_a_known_birth_is_asked_for_one(tmp_path: Path) -> None:
    broker = MemoryBroker()
    service, _ = make_service(tmp_path, broker)
    service.listener.birth_grace_s = 0.0
    service.start()
    asked: list[Envelope] = []
    spy = MemoryTransport(broker, "spy")
    spy.on_message = lambda m: asked.append(decode(m.payload))
    spy.subscribe(TOPICS.rebirth("n7"), 1, no_local=False)
    spy.connect()
    node = Node(broker, "n7")
    node.send(TOPICS.telemetry("n7"), telemetry_body())
    node.send(TOPICS.telemetry("n7"), telemetry_body())
    service._request_rebirths()
    service._request_rebirths()  # within rebirth_interval_s: not again
    assert len(asked) == 1
    assert isinstance(asked[0].body, RebirthRequest)
    assert asked[0].node == "hub-unit"
    node.send(TOPICS.birth("n7"), birth())
    assert service.listener.nodes_without_birth() == []
    service.request_stop()
    service.shutdown()


def test_stop_writes_what_is_held(tmp_path: Path) -> None:
    broker = MemoryBroker()
    service, _ = make_service(tmp_path, broker)
    service.start()
    node = Node(broker, "n1")
    for _ in range(30):
        node.send(TOPICS.telemetry("n1"), telemetry_body())
    assert len(service.queue) == 30  # nothing written yet: the loop has not run
    service.request_stop()
    service.shutdown()
    assert service.lost_at_stop == 0
    service.db.open()
    assert count(service.db, "telemetry") == 30
    service.db.close()


def test_stop_with_the_database_down_says_what_it_could_not_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    service, engine = make_service(tmp_path, broker, drain_timeout_s=0.5)
    service.start()
    engine.down = True
    node = Node(broker, "n1")
    for _ in range(5):
        node.send(TOPICS.telemetry("n1"), telemetry_body())
    service.step(wait_s=0.01)
    started = time.monotonic()
    service.request_stop()
    service.shutdown()
    took = time.monotonic() - started
    # It tried for drain_timeout_s (a lower bound: a slow machine only adds to it), and not for
    # the default drain of 10 s: besides the 0.5 s of trying, stopping is a few file writes, so
    # 9 s leaves a slow machine 8 s of slack that only a drain ignoring its timeout would use.
    assert 0.5 * 0.9 <= took < 9.0, took
    assert service.lost_at_stop == 5
    assert "stopping with 5 held messages not written" in caplog.text
    on_file = (tmp_path / "state" / "status.json").read_text()
    assert '"lost_at_stop": 5' in on_file


class CountingNotifier(SdNotifier):
    """sd_notify without a socket: keeps when each watchdog ping would have gone."""

    def __init__(self) -> None:
        super().__init__(env={})
        self.pings: list[float] = []

    def watchdog(self) -> bool:
        self.pings.append(time.monotonic())
        return True


def test_a_hung_database_call_is_an_outage_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent_host.hub")
    broker = MemoryBroker()
    notifier = CountingNotifier()
    service, engine = make_service(tmp_path, broker, notifier=notifier, deadline_s=2.0)
    service.start()
    node = Node(broker, "n1")
    node.send(TOPICS.birth("n1"), birth(), retain=True)
    run_until(service, lambda: service.db.written == 1, "the birth")

    engine.hanging.set()
    hung_at = time.monotonic()
    for _ in range(10):
        node.send(TOPICS.telemetry("n1"), telemetry_body())
    run_until(service, lambda: service.state is State.DEGRADED, "the overdue call noticed")
    status = service.status()
    assert status["database"]["overdue"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("database unreachable: no answer within 2 s" in w for w in warnings), warnings
    assert status["queue"]["depth"] == 10  # held, in order, none lost
    assert engine.released.is_set()  # the connection was aborted, the call came back
    # The hung call waited on the database's thread, never on the loop's (this one): a loop
    # blocked in the driver would not ping at all. And the loop keeps pinging meanwhile.
    assert engine.hung_threads, "the hung call never ran"
    assert threading.current_thread().name not in engine.hung_threads, engine.hung_threads
    run_until(
        service,
        lambda: sum(t >= hung_at for t in notifier.pings) >= 2,
        "two watchdog pings since the database hung",
        timeout=60.0,
    )

    engine.hanging.clear()
    engine.released.clear()
    run_until(service, lambda: service.state is State.RUNNING and not service.queue, "recovery")
    assert count(service.db, "telemetry") == 10
    assert service.status()["database"]["outages"] == 1
    service.request_stop()
    service.shutdown()


def test_a_database_that_opens_but_cannot_write_is_one_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent_host.hub")
    broker = MemoryBroker()
    service, engine = make_service(tmp_path, broker)
    service.start()
    node = Node(broker, "n1")
    node.send(TOPICS.birth("n1"), birth(), retain=True)
    run_until(service, lambda: service.db.written == 1, "the birth")

    engine.full = True  # a full disk: connections open, writes fail
    node.send(TOPICS.telemetry("n1"), telemetry_body())
    run_until(service, lambda: service.state is State.DEGRADED, "the failed write")
    opens = service.db.opens
    run_until(service, lambda: service.db.opens >= opens + 5, "several reconnections")
    assert service.status()["database"]["outages"] == 1
    assert service.state is State.DEGRADED  # a connection that opens does not end the outage
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unreachable:" in m for m in messages) == 1
    assert not any("is back after" in m for m in messages)

    engine.full = False
    run_until(service, lambda: service.state is State.RUNNING and not service.queue, "recovery")
    assert service.status()["database"]["outages"] == 1
    assert sum("is back after" in r.getMessage() for r in caplog.records) == 1
    service.request_stop()
    service.shutdown()
