"""The fleet snapshot the hub's HTTP side shows: a node's condition, and a node's telemetry read
the daemon's way."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent_host.hub.web import snapshot as web
from edge_agent_host.hub.web.snapshot import FleetSnapshot, condition_of

NOW = 1_800_000_000.0
MB = 2**20


def node(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": "pi-1",
        "online": True,
        "last_seen": NOW - 1,
        "telemetry_ts": NOW - 1,
        "rss_bytes": 30 * MB,
        "budget_bytes": 48 * MB,
        "tick_p50_ms": 2.0,
        "tick_p99_ms": 9.0,
        "cpu_temp_c": 55.0,
        "outbox_depth": 0,
        "outbox_uncommitted_rows": 3,
        "outbox_uncommitted_s": 1.5,
    }
    base.update(over)
    if "presence" in over:  # the snapshot's "online" is presence's
        base["online"] = over["presence"] == "online"
    else:
        base["presence"] = "online" if base["online"] else "offline"
    base["health"] = condition_of(base, NOW)
    return base


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({}, "green"),
        ({"online": False}, "red"),
        ({"presence": "silent"}, "red"),
        ({"telemetry_ts": None}, "red"),
        ({"telemetry_ts": NOW - 31}, "red"),
        ({"rss_bytes": 44 * MB}, "amber"),
        ({"tick_p99_ms": 150.0}, "amber"),
        ({"cpu_temp_c": 80.0}, "amber"),
        ({"outbox_depth": 5000}, "amber"),
        ({"groups_out_of_range": 1}, "amber"),
        ({"groups_out_of_range": 0, "observations_out_of_range": 12}, "green"),
        ({"rss_bytes": None, "tick_p99_ms": None, "cpu_temp_c": None}, "green"),
    ],
)
def test_a_nodes_condition_at_a_glance(over: dict[str, Any], expected: str) -> None:
    assert node(**over)["health"] == expected


GRID_HEALTH: dict[str, Any] = {
    "grid": {
        "ts": NOW - 1,
        "window_s": 10.0,
        "model": "grid10@1",
        "agent_steps": 1000,
        "measures": {"excess_surprise": {"mean": 0.01, "p95": 1.2, "n": 1000}},
        "drift": {"alarm": False, "statistic": 0.5, "threshold": 50.0, "since": None},
    }
}


def snapshot() -> FleetSnapshot:
    nodes = [
        node(node="pi-1", group_health=GRID_HEALTH),
        node(node="pi-2", online=False, rss_bytes=None),
        node(node="pi-3", cpu_temp_c=80.0),
    ]
    rollout = {
        "id": "r1",
        "group": "grid",
        "state": "running",
        "wave": 1,
        "waves": 3,
        "nodes_total": 10,
        "nodes_done": 4,
        "nodes_failed": 1,
    }
    hub = {"id": "hub-a", "state": "running", "db_up": 1, "queue_depth": 3}
    return FleetSnapshot(taken=NOW, hub=hub, nodes=nodes, rollouts=[rollout])


def test_the_outbox_depth_is_read_from_the_daemons_own_telemetry_counters() -> None:
    from edge_agent.fleet.protocol import OutboxCounters, as_builtins, validate

    counters = dict.fromkeys(OutboxCounters.__struct_fields__, 0) | {"depth_rows": 7, "full": False}
    telemetry = {"outbox": as_builtins(validate(OutboxCounters, counters))}
    assert web._outbox_depth(telemetry) == 7
    assert web._outbox_depth({}) is None
