"""The operator's client's memory (``tools/edge_agent_host/fleetctl/store.py``) feeds a node's
presence as the hub's store does: any message registers a node, every live one of any kind is
when it was last seen, a retained one never is."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.protocol import Birth, Body, Envelope, NodeState, Telemetry, encode
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleet.presence import presence
from edge_agent_host.fleetctl import FleetClient, FleetStore

NOW = 1_800_000_000.0
TOPICS = Topics("f")


def rows(store: FleetStore) -> dict[str, dict[str, object]]:
    return {row["node"]: row for row in store.nodes()}  # type: ignore[misc]


def test_a_retained_message_registers_a_node_and_a_live_one_sees_it(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "c.sqlite3")
    store.heard("pi-1", live=False, now=NOW)
    store.node("pi-1", online=True, bdseq=1)
    row = rows(store)["pi-1"]
    assert (row["first_seen"], row["last_seen"]) == (NOW, None)
    assert presence(row, 60.0, NOW + 30) == "online"
    assert presence(row, 60.0, NOW + 61) == "silent"  # heard only in retained messages
    store.heard("pi-1", live=False, now=NOW + 100)  # retained again, in a later run
    assert rows(store)["pi-1"]["first_seen"] == NOW
    store.heard("pi-1", live=True, now=NOW + 200)
    row = rows(store)["pi-1"]
    assert (row["first_seen"], row["last_seen"]) == (NOW, NOW + 200)
    assert presence(row, 60.0, NOW + 230) == "online"
    store.heard("pi-1", live=True, now=NOW + 150)  # an older live message does not go back
    assert rows(store)["pi-1"]["last_seen"] == NOW + 200
    store.close()


def envelope(node: str, seq: int, body: Body) -> bytes:
    return encode(Envelope(type=body.TYPE, node=node, seq=seq, bdseq=1, ts=time.time(),
                           clock_synced=True, body=body))  # fmt: skip


def telemetry() -> Telemetry:
    return Telemetry(
        uptime_s=1.0, rss_bytes=1, budget_used_bytes=1, budget_total_bytes=2, ticks=1,
        tick_p50_ms=1.0,
        tick_p99_ms=1.0, overruns=0,
    )  # fmt: skip


def test_the_client_counts_telemetry_as_seen(tmp_path: Path) -> None:
    broker = MemoryBroker()
    node = MemoryTransport(broker, "pi-1")
    node.connect()
    node.publish(TOPICS.node_state("pi-1"), envelope("pi-1", 0, NodeState(online=True)), 1, True)
    node.publish(TOPICS.birth("pi-1"), envelope("pi-1", 1, Birth(
        software_version="1", profile="x86-dev", budget_bytes=1)), 1, True)  # fmt: skip
    store = FleetStore(tmp_path / "c.sqlite3")
    client = FleetClient(fleet="f", transport=MemoryTransport(broker, "hub"), store=store)
    client.connect()
    client.listen(0.2)  # the retained state and birth only
    row = rows(store)["pi-1"]
    assert row["last_seen"] is None
    assert row["first_seen"] is not None
    before = time.time()
    node.publish(TOPICS.telemetry("pi-1"), envelope("pi-1", 2, telemetry()), 1, False)
    client.listen(0.2)
    seen = rows(store)["pi-1"]["last_seen"]
    assert isinstance(seen, float)
    assert seen >= before
    client.close()


def test_a_file_of_an_older_client_gets_first_seen(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as old, old:  # closed, not only committed
        old.execute(
            "CREATE TABLE nodes (node TEXT PRIMARY KEY, online INTEGER, bdseq INTEGER, "
            "birth TEXT, last_seen REAL, deaths INTEGER NOT NULL DEFAULT 0)"
        )
        old.execute("INSERT INTO nodes (node, online) VALUES ('pi-1', 1)")
    store = FleetStore(path)
    assert rows(store)["pi-1"]["first_seen"] is None  # taken at its word until heard again
    store.heard("pi-1", live=False, now=NOW)
    assert rows(store)["pi-1"]["first_seen"] == NOW
    store.close()


def test_a_file_that_is_no_database_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "not.sqlite3"
    path.write_text("hello, I am text " * 100)
    with pytest.raises(Exception, match="cannot use it as the client's database") as caught:
        FleetStore(path)
    assert "\n" not in str(caught.value)
