"""The rollout runner inside the hub service, on the in-memory broker: one broker connection (the
service's), commands out through it, the nodes' answers read back from the service's database,
and a broker that refuses the hub's commands halting the rollout at once with the reason by name.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.fleet.comms.base import reason_text
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import Command, CommandResult, Envelope, decode, encode
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.rollouts.plan import RolloutPlan
from edge_agent_host.hub.rollouts.runner import RolloutRunner
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.service.loop import HubService
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.hub.traffic.publisher import HubPublisher
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.unit.fleet.test_deploy import bundle_tar
from tests.unit.host.hub.service.test_loop import FLEET, make_service

TOPICS = Topics(FLEET)


def test_reason_codes_are_named() -> None:
    assert reason_text(0x87) == "0x87 not authorized"
    assert reason_text(0x8E) == "0x8e session taken over"
    assert reason_text(0x80) == "0x80 unspecified error"
    assert reason_text(0x42) == "0x42 unknown reason"


class DeployingNode:
    """A node on the memory broker that answers every ``deploy`` command ``ok`` (as a node whose
    group already runs the bundle does), or with ``code`` and ``detail`` (a bundle it cannot
    verify: ``failed``, ``verify: ...``; they may change between commands), and remembers the
    commands it got."""

    def __init__(
        self,
        broker: MemoryBroker,
        name: str,
        code: ResultCode = ResultCode.OK,
        detail: str = "bundle runs",
    ) -> None:
        self.name, self.code, self.detail = name, code, detail
        self.commands: list[Command] = []
        self._seq = 0
        self.transport = MemoryTransport(broker, name)
        self.transport.on_message = self._on_message
        self.transport.subscribe(TOPICS.command(name), 1)
        self.transport.connect()

    def _on_message(self, msg: Any) -> None:
        cmd = decode(msg.payload).body
        assert isinstance(cmd, Command)
        self.commands.append(cmd)
        result = CommandResult(nonce=cmd.nonce, name=cmd.name, code=self.code, detail=self.detail)
        env = Envelope(
            type=result.TYPE,
            node=self.name,
            seq=self._seq,
            bdseq=1,
            ts=time.time(),
            clock_synced=True,
            body=result,
        )
        self._seq += 1
        self.transport.publish(TOPICS.command_result(self.name), encode(env), 1)


def start_rollout(tmp_path: Path, service: HubService, nodes: list[str]) -> str:
    key = tmp_path / "keys"
    ci = generate_keypair(key, "ci").private_path
    plan = DeployPlan.from_bundle(bundle_tar(tmp_path, ci, policy_len=1))
    db = HubDatabase(service.db.engine)
    db.open()
    try:
        store = RolloutStore(db)
        store.put_bundle(plan.data, plan.sha256, plan.name, plan.version)
        rollout = RolloutPlan(
            group="grid", bundle_sha256=plan.sha256, waves=[1, len(nodes)], soak_s=0.0
        )
        return store.create(rollout, nodes)
    finally:
        db.close()


def runner_for(tmp_path: Path, *, busy_timeout_s: float = 5.0, deadline_s: float = 30.0) -> Any:
    """What ``rollout_runner`` gives the service: a runner over the service's publisher, with a
    database connection of its own (make_service's SQLite file)."""
    key = load_signing_key(generate_keypair(tmp_path / "hubkey", "hub").private_path)

    def runner(publisher: HubPublisher) -> RolloutRunner:
        def open_db() -> HubDatabase:
            engine = SqliteEngine(tmp_path / "state" / "hub.sqlite3", busy_timeout_s=busy_timeout_s)
            db = HubDatabase(engine)
            db.open()
            return db

        return RolloutRunner(
            open_db, publisher, key, owner="hub-unit", poll_s=0.05, deadline_s=deadline_s
        )

    return runner


def run_service(service: HubService, done: Any, what: str, timeout: float = 30.0) -> None:
    """The service's loop on this thread (the runner has its own) until ``done()``."""
    service.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            service.step(wait_s=0.02)
            if done():
                return
        pytest.fail(f"timed out waiting for {what}; status {service.status_line()}")
    finally:
        service.shutdown()


def rollout_summary(service: HubService, rollout_id: str) -> dict[str, Any]:
    db = HubDatabase(service.db.engine)
    db.open()
    try:
        return RolloutStore(db).get(rollout_id).summary()
    finally:
        db.close()


def test_the_runner_uses_the_service_s_connection_and_reads_results_from_its_database(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    nodes = [DeployingNode(broker, n) for n in ("pi-1", "pi-2")]
    service, _ = make_service(tmp_path, broker, rollouts=runner_for(tmp_path))
    rollout_id = start_rollout(tmp_path, service, ["pi-1", "pi-2"])
    connections: list[list[str]] = []

    def done() -> bool:
        connections.append(broker.connected_clients())
        return rollout_summary(service, rollout_id)["state"] == "done"

    run_service(service, done, "the rollout to finish")
    summary = rollout_summary(service, rollout_id)
    assert {n: r["state"] for n, r in summary["nodes"].items()} == {"pi-1": "ok", "pi-2": "ok"}
    # Waves count from 1 where the operator reads them: the nodes' rows and the last wave.
    assert (summary["wave"], summary["waves"]) == (2, 2)
    assert {n: r["wave"] for n, r in summary["nodes"].items()} == {"pi-1": 1, "pi-2": 2}
    assert [w["wave"] for w in summary["wave_table"]] == [1, 2]
    # One hub connection all along: the service's (the nodes have theirs).
    assert all(sorted(c) == ["hub-unit", "pi-1", "pi-2"] for c in connections), connections[:3]
    assert [len(n.commands) for n in nodes] == [1, 1]
    # The commands the runner sent are in the journal, verified (signed with the hub's key).
    db = HubDatabase(service.db.engine)
    db.open()
    try:
        journal = db.commands()
    finally:
        db.close()
    sent = {c.nonce.hex() for n in nodes for c in n.commands}
    assert {row["nonce"] for row in journal} == sent
    assert all(row["verified"] for row in journal), journal


def test_a_hung_database_does_not_hang_the_rollout_runner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's database calls have the service's deadline, so a hung database cannot hang
    it. Another connection holds SQLite's write lock and the runner's connection would wait 600 s
    for it, as a driver waits on a server that stopped answering: each call fails after the 0.5 s
    deadline, the runner says so and tries again, and stops at once when asked (before, it sat in
    the first write). When the lock goes, the rollout goes on to done."""
    broker = MemoryBroker()
    nodes = [DeployingNode(broker, n) for n in ("pi-1", "pi-2")]
    runner = runner_for(tmp_path, busy_timeout_s=600.0, deadline_s=0.5)
    service, _ = make_service(tmp_path, broker, rollouts=runner, deadline_s=0.5)
    rollout_id = start_rollout(tmp_path, service, ["pi-1", "pi-2"])
    rollouts = service.rollouts
    assert rollouts is not None
    ask(service, rollout_id, "pause")  # claimed and paused: the runner renews its lease, a write
    lock = sqlite3.connect(tmp_path / "state" / "hub.sqlite3", isolation_level=None)
    caplog.set_level(logging.WARNING, logger="edge_agent_host.hub.rollouts.runner")
    service.start()
    try:
        until(service, lambda: rollout_summary(service, rollout_id)["state"] == "paused", "paused")
        lock.execute("BEGIN IMMEDIATE")  # every other writer waits (WAL: readers do not)
        until(service, lambda: rollouts.status()["errors"] >= 3, "three overdue calls")
        status = rollouts.status()
        assert status["last_error"].startswith("the database: "), status
        lock.rollback()
        ask(service, rollout_id, "resume")
        until(
            service,
            lambda: rollout_summary(service, rollout_id)["state"] == "done",
            "the rollout to finish after the lock went",
            timeout=60.0,
        )
    finally:
        lock.close()
        stop_started = time.monotonic()
        service.shutdown()
    # Stopped at once, not after the write lock's 600 s busy timeout (where it sat before): a
    # bound far below 600 s decides, and 120 s is far above any working stop, however slow.
    assert time.monotonic() - stop_started < 120.0
    assert [len(n.commands) for n in nodes] == [1, 1]
    said = [r.getMessage() for r in caplog.records if r.name.endswith("rollouts.runner")]
    # One line when the database stopped answering, one when it answered again: not one a poll.
    assert sum("rollout runner: the database: " in m for m in said) == 1, said
    assert sum("the database answers again" in m for m in said) == 1, said


def ask(service: HubService, rollout_id: str, action: str) -> None:
    """What ``edge-agent-hub rollout pause|resume`` does: a request in the rollout's row."""
    db = HubDatabase(service.db.engine)
    db.open()
    try:
        RolloutStore(db).request(rollout_id, action)
    finally:
        db.close()


def until(service: HubService, cond: Any, what: str, timeout: float = 30.0) -> None:
    """The service's loop on this thread until ``cond()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.step(wait_s=0.02)
        if cond():
            return
    pytest.fail(f"timed out waiting for {what}; status {service.status_line()}")


def test_a_broker_that_refuses_the_hub_s_commands_halts_the_rollout_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()  # no node answers: a real broker delivers nothing it refuses
    service, _ = make_service(tmp_path, broker, rollouts=runner_for(tmp_path))
    rollout_id = start_rollout(tmp_path, service, ["pi-1", "pi-2"])
    broker.ack_reason_code = 0x87  # an identity without the hub role: every publish refused
    with caplog.at_level(logging.ERROR):
        run_service(
            service,
            lambda: rollout_summary(service, rollout_id)["state"] == "halted",
            "the halt",
        )
    # At once, for the broker's refusal (its reason by name), not at the deployment timeout
    # (600 s, which run_service's 30 s never reaches, and whose detail would say so).
    summary = rollout_summary(service, rollout_id)
    assert "0x87 not authorized" in summary["detail"], summary["detail"]
    assert summary["detail"].startswith("wave 1: the broker refused ea/v1/"), summary["detail"]
    assert summary["nodes"]["pi-1"]["state"] == "failed"
    assert "0x87 not authorized" in summary["nodes"]["pi-1"]["detail"]
    assert summary["nodes"]["pi-2"]["state"] == "pending"  # the later wave untouched
    assert any("0x87 not authorized" in r.getMessage() for r in caplog.records), caplog.text
    assert service.publisher.refused >= 1
    assert service.metrics.values()["hub.mqtt.publishes_refused"] >= 1


def test_refusals_are_logged_once_a_minute_per_topic_kind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    service, _ = make_service(tmp_path, broker)
    service.transport.connect()
    broker.ack_reason_code = 0x87
    with caplog.at_level(logging.ERROR):
        for node in ("pi-1", "pi-2", "pi-3"):
            assert service.publisher.publish(TOPICS.rebirth(node), _rebirth())
        deadline = time.monotonic() + 5
        while service.publisher.refused < 3 and time.monotonic() < deadline:
            service.publisher.drain()
    assert service.publisher.refused == 3
    assert [r.number for r in service.publisher.refusals_since(1)] == [2, 3]
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "0x87 not authorized" in lines[0]
    service.transport.disconnect()


def _rebirth() -> Any:
    from edge_agent.fleet.protocol import RebirthRequest

    return RebirthRequest(reason="test")


def test_publishes_of_a_lost_session_are_not_awaited_forever(tmp_path: Path) -> None:
    broker = MemoryBroker()
    service, _ = make_service(tmp_path, broker)
    service.transport.connect()
    broker.hold_acks = True  # the PUBACKs never come: the connection is lost first
    assert service.publisher.publish(TOPICS.rebirth("pi-1"), _rebirth())
    service.publisher.drain()
    assert service.publisher.stats()["awaiting_ack"] == 1
    broker.stop()
    service.publisher.drain()
    assert service.publisher.stats()["awaiting_ack"] == 0
    service.transport.disconnect()
