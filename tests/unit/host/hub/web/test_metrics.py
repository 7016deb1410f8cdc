"""The metrics a snapshot and the hub's status turn into, and the shipped Grafana dashboard
asking only for metrics the hub exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.fleet.protocol import NodeState
from edge_agent_host.hub.learning.checks import Refusal
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.hub.web.fleet_view import FleetQuery, fleet_page
from edge_agent_host.hub.web.metrics import collector_for
from edge_agent_host.hub.web.snapshot import FleetSnapshot, build_snapshot, team_summary
from tests.unit.host.hub.storage.test_database import (
    health_birth,
    health_body,
    heard,
    telemetry_body,
    write_all,
)
from tests.unit.host.hub.web.test_snapshot import MB, NOW, snapshot

HUB_STATUS: dict[str, Any] = {
    "hub_id": "hub-a",
    "version": "9.9.9",
    "state": "degraded",
    "started_at": NOW - 100,
    "heard": {
        "received.telemetry": 40,
        "received.birth": 2,
        "malformed.schema": 3,
        "forged.node_mismatch": 1,
        "queue_full": 5,
    },
    "database": {"up": False, "down_s": 12.5, "written": 42, "outages": 2, "overdue": 1},
    "queue": {"depth": 3, "bytes": 300, "max_messages": 100, "dropped.telemetry": 5},
    "exposure": {"held": 3, "lost_if_killed": 0, "lost_if_power_cut": 2, "unsynced_s": 0.4},
    "spool": {"durable": True, "replayed": 7, "errors": 0, "torn": 0},
    "mqtt": {"connected": True},
    "counters": {"hub.mqtt.connect_attempts": 2, "hub.db.transactions": 9},
    "rollouts": {"halts": 1, "rollbacks": 1, "waves_deployed": 4, "done": 0, "errors": 0},
}


class Holder:
    def __init__(self, snap: FleetSnapshot, status: dict[str, Any] | None = None) -> None:
        self.snapshot = snap
        self.hub_status = status or {}

    def connection_counts(self) -> dict[str, int]:
        return {"answered": 5, "evicted": 2}


def scrape(
    snap: FleetSnapshot, status: dict[str, Any] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector_for(Holder(snap, status)))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_snapshot_becomes_these_metrics() -> None:
    values = scrape(snapshot())
    assert values[("edge_agent_hub_nodes", (("state", "online"),))] == 2
    assert values[("edge_agent_hub_nodes", (("state", "offline"),))] == 1
    assert values[("edge_agent_hub_nodes_health", (("health", "red"),))] == 1
    assert values[("edge_agent_hub_nodes_health", (("health", "amber"),))] == 1
    assert values[("edge_agent_hub_node_rss_bytes", (("node", "pi-1"),))] == 30 * MB
    assert ("edge_agent_hub_node_rss_bytes", (("node", "pi-2"),)) not in values  # unknown
    assert values[("edge_agent_hub_node_tick_p99_seconds", (("node", "pi-1"),))] == pytest.approx(
        0.009
    )
    assert values[("edge_agent_hub_node_cpu_temperature_celsius", (("node", "pi-3"),))] == 80
    labels = (("group", "grid"), ("rollout", "r1"))
    assert values[("edge_agent_hub_rollout_nodes", (*labels, ("state", "ok")))] == 4
    assert values[("edge_agent_hub_rollout_nodes", (*labels, ("state", "failed")))] == 1
    assert values[("edge_agent_hub_rollout_nodes", (*labels, ("state", "other")))] == 5
    assert values[("edge_agent_hub_rollout_wave", (("rollout", "r1"),))] == 1  # as its summary
    assert values[("edge_agent_hub_rollout_state", (("rollout", "r1"), ("state", "running")))]
    assert not any(name == "edge_agent_hub_id" for name, _ in values)  # strings are not gauges
    # An offline node's last numbers are not exported as if they were current.
    assert values[("edge_agent_hub_node_online", (("node", "pi-2"),))] == 0
    assert ("edge_agent_hub_node_tick_p99_seconds", (("node", "pi-2"),)) not in values
    assert ("edge_agent_hub_node_cpu_temperature_celsius", (("node", "pi-2"),)) not in values
    uncommitted = "edge_agent_hub_node_outbox_uncommitted_messages"
    assert values[(uncommitted, (("node", "pi-1"),))] == 3
    assert values[("edge_agent_hub_node_outbox_uncommitted_seconds", (("node", "pi-1"),))] == 1.5


def test_a_silent_node_is_counted_apart_and_its_last_values_are_not_exported(
    tmp_path: Path,
) -> None:
    """A revoked node (its session kept, its will refused) still says online in its retained
    state; the hub's snapshot, fleet.json and /metrics call it silent once nothing came from it
    for [hub] silent_after_s, as the fleet tables do (edge_agent_host.fleet.presence)."""
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    try:
        on = NodeState(online=True)
        for name, last_heard in (("pi-live", NOW - 5), ("pi-revoked", NOW - 120)):
            write_all(
                db,
                heard(name, on, retained=True, received=NOW - 3600),
                heard(name, telemetry_body(40), ts=last_heard, received=last_heard),
            )
        write_all(  # heard only in retained messages, known to the hub for 2 minutes
            db,
            heard("pi-retained", on, retained=True, received=NOW - 120),
            heard(
                "pi-retained", telemetry_body(3), ts=NOW - 9000, retained=True, received=NOW - 120
            ),
        )
        write_all(db, heard("pi-gone", NodeState(online=False), received=NOW - 120))
        snap = build_snapshot(db, {"id": "hub-a"}, now=NOW, silent_after_s=60.0)
        relaxed = build_snapshot(db, {"id": "hub-a"}, now=NOW, silent_after_s=600.0)
    finally:
        db.close()
    by_node = {n["node"]: n for n in snap.nodes}
    assert {n: row["presence"] for n, row in by_node.items()} == {
        "pi-gone": "offline",
        "pi-live": "online",
        "pi-retained": "silent",
        "pi-revoked": "silent",
    }
    assert by_node["pi-revoked"]["online"] is False
    assert by_node["pi-revoked"]["health"] == "red"
    assert by_node["pi-revoked"]["rss_bytes"] == 50 * MB  # history, on the page and in the JSON
    # The threshold is the config's: with 10 minutes, the revoked node is not silent yet.
    assert {n["node"]: n["presence"] for n in relaxed.nodes}["pi-revoked"] == "online"

    values = scrape(snap)
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in values.items()
        if name == "edge_agent_hub_nodes"
    }
    assert states == {"online": 1, "silent": 2, "offline": 1, "unknown": 0}
    assert values[("edge_agent_hub_node_online", (("node", "pi-revoked"),))] == 0
    assert values[("edge_agent_hub_node_online", (("node", "pi-live"),))] == 1
    assert values[
        ("edge_agent_hub_node_last_seen_timestamp_seconds", (("node", "pi-revoked"),))
    ] == (NOW - 120)
    for name in ("rss_bytes", "budget_bytes", "tick_p50_seconds", "tick_p99_seconds"):
        assert (f"edge_agent_hub_node_{name}", (("node", "pi-live"),)) in values, name
        assert (f"edge_agent_hub_node_{name}", (("node", "pi-revoked"),)) not in values, name
        assert (f"edge_agent_hub_node_{name}", (("node", "pi-retained"),)) not in values, name

    page = fleet_page(snap.as_json(), FleetQuery())
    assert (page["counts"]["online"], page["counts"]["silent"], page["counts"]["total"]) == (
        1,
        2,
        4,
    )
    assert page["counts"]["presence"] == {"online": 1, "silent": 2, "offline": 1, "unknown": 0}
    silent = fleet_page(snap.as_json(), FleetQuery.parse("presence=silent"))
    assert [n["node"] for n in silent["nodes"]] == ["pi-retained", "pi-revoked"]
    with pytest.raises(ValueError, match="presence: 'asleep'"):
        FleetQuery.parse("presence=asleep")


def test_the_hubs_own_numbers_become_these_metrics() -> None:
    values = scrape(snapshot(), HUB_STATUS)
    info = (("hub", "hub-a"), ("version", "9.9.9"))
    assert values[("edge_agent_hub_build_info", info)] == 1
    assert values[("edge_agent_hub_start_time_seconds", ())] == NOW - 100
    assert values[("edge_agent_hub_state", (("state", "degraded"),))] == 1
    assert values[("edge_agent_hub_state", (("state", "running"),))] == 0
    received = "edge_agent_hub_messages_received_total"
    assert values[(received, (("type", "telemetry"),))] == 40
    dropped = "edge_agent_hub_messages_dropped_total"
    assert values[(dropped, (("class", "malformed"), ("reason", "schema")))] == 3
    assert values[(dropped, (("class", "forged"), ("reason", "node_mismatch")))] == 1
    assert values[(dropped, (("class", "queue_full"), ("reason", "queue_full")))] == 5
    assert values[("edge_agent_hub_database_up", ())] == 0
    assert values[("edge_agent_hub_database_down_seconds", ())] == 12.5
    assert values[("edge_agent_hub_database_messages_written_total", ())] == 42
    assert values[("edge_agent_hub_database_outages_total", ())] == 2
    assert values[("edge_agent_hub_database_calls_overdue_total", ())] == 1
    assert values[("edge_agent_hub_database_transactions_total", ())] == 9
    assert values[("edge_agent_hub_queue_messages", ())] == 3
    assert values[("edge_agent_hub_queue_dropped_messages_total", (("type", "telemetry"),))] == 5
    assert values[("edge_agent_hub_exposure_messages", (("if", "power_cut"),))] == 2
    assert values[("edge_agent_hub_spool_replayed_messages_total", ())] == 7
    assert values[("edge_agent_hub_mqtt_connected", ())] == 1
    assert values[("edge_agent_hub_mqtt_connect_attempts_total", ())] == 2
    assert values[("edge_agent_hub_rollout_halts_total", ())] == 1
    assert values[("edge_agent_hub_rollout_rollbacks_total", ())] == 1
    assert values[("edge_agent_hub_http_connections_total", (("outcome", "evicted"),))] == 2


def promtool_check(text: bytes) -> None:
    """promtool takes the exposition as it is (Debian's prometheus package ships promtool)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_the_learning_deltas_become_counters_with_one_label_per_reason() -> None:
    """docs/fleet-learning.md: accepted, and refused by a fixed set of reasons (every one
    exported, zeros too: the label set does not depend on what the fleet sent); the catch-up
    deployments by result, a fixed set too."""
    learning = {"accepted": 12, "negative": 2, "mass": 1, "outlier": 3}
    values = scrape(snapshot(), {**HUB_STATUS, "learning": learning})
    assert values[("edge_agent_hub_learning_deltas_accepted_total", ())] == 12
    refused = {
        dict(labels)["reason"]: v
        for (name, labels), v in values.items()
        if name == "edge_agent_hub_learning_deltas_refused_total"
    }
    assert refused == {r.value: float(learning.get(r.value, 0)) for r in Refusal}
    assert not any("learning" in name for name, _ in scrape(snapshot(), HUB_STATUS))
    catch_ups = {"pending": 1, "ok": 4, "failed": 0, "offline": 0}
    status = {**HUB_STATUS, "learning": learning, "catch_ups": catch_ups}
    values = scrape(snapshot(), status)
    assert {
        dict(labels)["result"]: v
        for (name, labels), v in values.items()
        if name == "edge_agent_hub_learning_catch_ups"
    } == {"pending": 1.0, "ok": 4.0, "failed": 0.0, "offline": 0.0}
    registry = CollectorRegistry()
    registry.register(collector_for(Holder(snapshot(), status)))
    promtool_check(generate_latest(registry))


def test_the_grafana_dashboard_asks_only_for_exported_metrics() -> None:
    exported = {name for name, _ in scrape(snapshot(), HUB_STATUS)}
    raw = resources.files("edge_agent_host.hub").joinpath("grafana/edge-agent-fleet.json")
    dashboard = json.loads(raw.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 10
    for expr in exprs:
        names = set(re.findall(r"\bedge_agent_hub_[a-z0-9_]+", expr))
        assert names, expr
        assert names <= exported, f"{expr}: {names - exported} not exported by the hub"


def test_observations_out_of_range_go_from_a_nodes_telemetry_to_metrics(tmp_path: Path) -> None:
    """A node's neural groups count observations outside their bundles' calibrated ranges
    (edge_agent.neural.input_range); the hub exports the node's totals and an alerting group
    makes the node amber."""
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    try:
        body = msgspec.structs.replace(telemetry_body(40), budget_total_bytes=200 * MB)
        counters = {
            "telemetry.n": 1,
            "input_range.checked": 40_000,
            "input_range.out_of_range": 1_234,
            "input_range.alerting": 1,
            "input_range.groups": 2,
        }
        write_all(
            db,
            heard("pi-sensor", NodeState(online=True), retained=True, received=NOW - 60),
            heard(
                "pi-sensor",
                msgspec.structs.replace(body, counters=counters),
                ts=NOW - 1,
                received=NOW - 1,
            ),
            heard("pi-grid", NodeState(online=True), retained=True, received=NOW - 60),
            heard("pi-grid", body, ts=NOW - 1, received=NOW - 1),
        )
        snap = build_snapshot(db, {"id": "hub-a"}, now=NOW)
    finally:
        db.close()
    by_node = {n["node"]: n for n in snap.nodes}
    sensor = by_node["pi-sensor"]
    assert (sensor["observations_checked"], sensor["observations_out_of_range"]) == (40_000, 1_234)
    assert (sensor["groups_out_of_range"], sensor["health"]) == (1, "amber")
    grid = by_node["pi-grid"]  # no neural group: nothing counted, nothing exported
    assert grid["observations_out_of_range"] is None
    assert grid["health"] == "green"
    values = scrape(snap)
    label = (("node", "pi-sensor"),)
    assert values[("edge_agent_hub_node_observations_checked", label)] == 40_000
    assert values[("edge_agent_hub_node_observations_out_of_range", label)] == 1_234
    assert values[("edge_agent_hub_node_groups_out_of_range", label)] == 1
    assert ("edge_agent_hub_node_observations_out_of_range", (("node", "pi-grid"),)) not in values


def test_a_nodes_group_health_goes_from_its_health_message_to_metrics(tmp_path: Path) -> None:
    """Each group's newest health window: in the snapshot by group, and as the bounded series
    node x group x measure x stat (online nodes only, as every per-node metric)."""
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    try:
        write_all(
            db,
            heard("pi-a", NodeState(online=True), retained=True, received=NOW - 60),
            health_birth(node="pi-a", ts=NOW - 60),
            heard("pi-a", health_body(0.25, alarm=True), ts=NOW - 1, received=NOW - 1),
            heard("pi-off", NodeState(online=False), retained=True, received=NOW - 60),
            health_birth(node="pi-off", ts=NOW - 60),
            heard("pi-off", health_body(0.5), ts=NOW - 100, received=NOW - 100),
        )
        snap = build_snapshot(db, {"id": "hub-a"}, now=NOW)
    finally:
        db.close()
    by_node = {n["node"]: n for n in snap.nodes}
    grid = by_node["pi-a"]["group_health"]["grid"]
    assert (grid["model"], grid["agent_steps"], grid["window_s"]) == ("grid10@1", 1000, 10.0)
    assert grid["measures"]["excess_surprise"] == {"mean": 0.25, "p95": 1.25, "n": 1000}
    values = scrape(snap)
    at = (("group", "grid"), ("measure", "excess_surprise"), ("node", "pi-a"))
    assert values[("edge_agent_hub_group_health", (*at, ("stat", "mean")))] == 0.25
    assert values[("edge_agent_hub_group_health", (*at, ("stat", "p95")))] == 1.25
    assert values[("edge_agent_hub_group_health_samples", at)] == 1000
    cam = (("group", "cam"), ("measure", "confidence"), ("node", "pi-a"))
    assert values[("edge_agent_hub_group_health", (*cam, ("stat", "mean")))] == 0.9
    grid_at = (("group", "grid"), ("node", "pi-a"))
    assert values[("edge_agent_hub_group_drift_alarm", grid_at)] == 1
    assert values[("edge_agent_hub_group_drift_threshold", grid_at)] == 50.0
    assert ("edge_agent_hub_group_drift_alarm", (("group", "cam"), ("node", "pi-a"))) not in values
    assert not any(dict(labels).get("node") == "pi-off" for name, labels in values if
                   name.startswith("edge_agent_hub_group_"))  # fmt: skip
    # promtool takes the exposition as it is (Debian's prometheus package ships promtool).
    registry = CollectorRegistry()
    registry.register(collector_for(Holder(snap, None)))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(registry), capture_output=True,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    # The label set is bounded: the closed vocabulary of measures, two stats.
    stats = {
        dict(labels)["stat"] for name, labels in values if name == "edge_agent_hub_group_health"
    }
    assert stats == {"mean", "p95"}


def test_a_nodes_team_counters_go_from_its_telemetry_to_the_page_and_metrics(
    tmp_path: Path,
) -> None:
    """The coordination counters of team tasks (docs/coordination.md) in the snapshot per
    node, summed up for the page (the largest an online node reports: every node holds the
    same award), and as per-node gauges."""
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    try:
        body = telemetry_body(40)
        teams = {"coord.teams_open": 50, "coord.teams_formed": 50, "coord.team_slots_vacant": 1,
                 "coord.team_repairs": 7, "coord.team_form_s_max": 0.31,
                 "coord.team_repair_s_max": 0.6}  # fmt: skip
        write_all(
            db,
            heard("pi-a", NodeState(online=True), retained=True, received=NOW - 60),
            heard(
                "pi-a", msgspec.structs.replace(body, counters=teams), ts=NOW - 1, received=NOW - 1
            ),
            heard("pi-b", NodeState(online=True), retained=True, received=NOW - 60),
            heard(
                "pi-b",
                msgspec.structs.replace(body, counters={**teams, "coord.team_repairs": 4}),
                ts=NOW - 1,
                received=NOW - 1,
            ),
            heard("pi-c", NodeState(online=True), retained=True, received=NOW - 60),
            heard("pi-c", body, ts=NOW - 1, received=NOW - 1),  # no coordination
        )
        snap = build_snapshot(db, {"id": "hub-a"}, now=NOW)
    finally:
        db.close()
    by_node = {n["node"]: n for n in snap.nodes}
    assert by_node["pi-a"]["team_repairs"] == 7
    assert by_node["pi-c"]["teams_open"] is None
    assert snap.teams == {
        "nodes": 2, "teams_open": 50.0, "teams_formed": 50.0, "team_slots_vacant": 1.0,
        "team_repairs": 7.0, "team_form_s_max": 0.31, "team_repair_s_max": 0.6,
    }  # fmt: skip
    assert snap.as_json()["teams"] == snap.teams
    values = scrape(snap)
    label = (("node", "pi-b"),)
    assert values[("edge_agent_hub_node_teams_formed", label)] == 50
    assert values[("edge_agent_hub_node_team_slots_vacant", label)] == 1
    assert values[("edge_agent_hub_node_team_repairs", label)] == 4
    assert values[("edge_agent_hub_node_team_formation_seconds", label)] == pytest.approx(0.31)
    assert ("edge_agent_hub_node_teams_formed", (("node", "pi-c"),)) not in values
    assert team_summary([]) == {}
