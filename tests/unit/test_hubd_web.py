"""The hub's HTTP side without a fleet: the health rule, the metrics a snapshot turns into, the
shipped Grafana dashboard asking only for metrics the hub exports, and the server's bounds."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from importlib import resources
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent_host.hubd import web
from edge_agent_host.hubd.web import FleetSnapshot, WebServer, collector_for, health_of

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
    }
    base.update(over)
    base["health"] = health_of(base, NOW)
    return base


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({}, "green"),
        ({"online": False}, "red"),
        ({"telemetry_ts": None}, "red"),
        ({"telemetry_ts": NOW - 31}, "red"),
        ({"rss_bytes": 44 * MB}, "amber"),
        ({"tick_p99_ms": 150.0}, "amber"),
        ({"cpu_temp_c": 80.0}, "amber"),
        ({"outbox_depth": 5000}, "amber"),
        ({"rss_bytes": None, "tick_p99_ms": None, "cpu_temp_c": None}, "green"),
    ],
)
def test_health_at_a_glance(over: dict[str, Any], expected: str) -> None:
    assert node(**over)["health"] == expected


def snapshot() -> FleetSnapshot:
    nodes = [
        node(node="pi-1"),
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


class Holder:
    def __init__(self, snap: FleetSnapshot) -> None:
        self.snapshot = snap


def scrape(snap: FleetSnapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector_for(Holder(snap)))
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
    assert values[("edge_agent_hub_queue_depth", ())] == 3
    assert values[("edge_agent_hub_db_up", ())] == 1
    assert not any(name == "edge_agent_hub_id" for name, _ in values)  # strings are not gauges


def test_the_grafana_dashboard_asks_only_for_exported_metrics() -> None:
    exported = {name for name, _ in scrape(snapshot())}
    raw = resources.files("edge_agent_host.hubd").joinpath("grafana/edge-agent-fleet.json")
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


def test_the_page_uses_nothing_from_outside() -> None:
    page = resources.files("edge_agent_host.hubd").joinpath("web/index.html").read_text()
    assert "/api/fleet.json" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no CDN, no fonts


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code)


def test_the_server_answers_from_the_snapshot_and_refuses_beyond_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = WebServer("127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        server.snapshot = snapshot()
        with urllib.request.urlopen(f"{url}/api/fleet.json", timeout=10) as answer:
            data = json.loads(answer.read())
        assert [n["node"] for n in data["nodes"]] == ["pi-1", "pi-2", "pi-3"]
        assert data["rollouts"][0]["id"] == "r1"
        # Every slot taken (requests in flight): the next one gets 503 at once, nothing queues.
        # (The request above may still hold its slot for a moment after its answer was read.)
        for _ in range(web.MAX_REQUESTS):
            assert server._slots.acquire(timeout=10)
        try:
            assert get(f"{url}/metrics") == 503
            assert server.refused == 1
        finally:
            for _ in range(web.MAX_REQUESTS):
                server._slots.release()
        assert get(f"{url}/metrics") == 200
        assert get(f"{url}/../etc/passwd") == 404
    finally:
        server.stop()
    assert not server._thread.is_alive()


def test_the_outbox_depth_is_read_from_the_daemons_own_telemetry_counters() -> None:
    from edge_agent.fleet.protocol import OutboxCounters, as_builtins, validate

    counters = dict.fromkeys(OutboxCounters.__struct_fields__, 0) | {"depth_rows": 7, "full": False}
    telemetry = {"outbox": as_builtins(validate(OutboxCounters, counters))}
    assert web._outbox_depth(telemetry) == 7
    assert web._outbox_depth({}) is None


def test_a_taken_port_is_a_config_error_naming_the_line() -> None:
    import socket

    from edge_agent.errors import ConfigError
    from edge_agent_host.hubd.config import parse_hub_config
    from edge_agent_host.hubd.service import web_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = f'[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
        with pytest.raises(ConfigError) as err:
            web_server(parse_hub_config(text, "hub.toml"))
    assert str(err.value).startswith("hub.toml:4: http.port: cannot listen on 127.0.0.1:"), err
    assert web_server(parse_hub_config("[http]\nenabled = false\n", "hub.toml")) is None
