"""The hub's read-only HTTP side: Prometheus metrics, the fleet as JSON, and one fleet page.

The service's loop (the only database user on its thread) builds a :class:`FleetSnapshot` every
``[hub] status_interval_s`` -- every node with its newest telemetry, the recent rollouts -- and
hands it over by swapping one reference. The HTTP server (stdlib, on its own thread, at most
``MAX_REQUESTS`` requests at once: others get 503) only reads the newest snapshot, so a scrape or
a page never touches the database nor waits for it.

Routes: ``/metrics`` (Prometheus text format, ``prometheus_client``), ``/api/fleet.json``,
``/`` (the page: static HTML + vanilla JS that polls the JSON, no build step, no external
resource), ``/healthz``. Only GET and HEAD.

Health at a glance (the page's dot, ``health`` in the JSON): **red** offline, or no telemetry for
3 x its period (30 s by default); **amber** RSS over 90 % of the budget, tick p99 over 100 ms,
CPU above 75 °C, or an outbox holding over 1,000 messages; **green** otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final

from edge_agent_host.hubd.fleet_view import (
    FleetQuery,
    bundles_of,
    deployments_by_node,
    fleet_page,
    rollout_failures,
)
from edge_agent_host.hubd.rollout_store import RolloutStore
from edge_agent_host.hubd.store import HubDatabase

logger = logging.getLogger(__name__)

__all__ = ["FleetSnapshot", "WebServer", "build_snapshot", "collector_for", "health_of"]

MAX_REQUESTS: Final = 8
STALE_AFTER_S: Final = 30.0
RSS_AMBER: Final = 0.9
P99_AMBER_MS: Final = 100.0
TEMP_AMBER_C: Final = 75.0
OUTBOX_AMBER: Final = 1000


@dataclass(frozen=True)
class FleetSnapshot:
    """What the page and the metrics show, as of ``taken`` (wall clock)."""

    taken: float = 0.0
    hub: dict[str, Any] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "taken": self.taken,
            "hub": self.hub,
            "nodes": self.nodes,
            "rollouts": self.rollouts,
        }


def _outbox_depth(telemetry: Mapping[str, Any]) -> int | None:
    outbox = telemetry.get("outbox")
    if isinstance(outbox, Mapping) and isinstance(outbox.get("depth_rows"), int):
        return int(outbox["depth_rows"])
    return None


def health_of(node: Mapping[str, Any], now: float) -> str:
    """green / amber / red (the module docstring's rule)."""
    if not node.get("online"):
        return "red"
    ts = node.get("telemetry_ts")
    if ts is None or now - float(ts) > STALE_AFTER_S:
        return "red"
    rss, budget = node.get("rss_bytes"), node.get("budget_bytes")
    if rss and budget and rss > RSS_AMBER * budget:
        return "amber"
    if (node.get("tick_p99_ms") or 0.0) > P99_AMBER_MS:
        return "amber"
    if (node.get("cpu_temp_c") or 0.0) > TEMP_AMBER_C:
        return "amber"
    if (node.get("outbox_depth") or 0) > OUTBOX_AMBER:
        return "amber"
    return "green"


def build_snapshot(
    db: HubDatabase, hub: Mapping[str, Any], now: float | None = None
) -> FleetSnapshot:
    """Read the registry and the recent rollouts (raises DatabaseUnavailableError)."""
    now = time.time() if now is None else now
    # The page's per-node bundle and deployment columns (fleet_view.py): the newest 10 rollouts,
    # each node's row in the newest one that names it, and each rollout's failed nodes.
    store = RolloutStore(db)
    summaries = [store.get(rollout_id).summary() for rollout_id in store.ids(limit=10)]
    deployments = deployments_by_node(summaries)
    rollouts = []
    for summary in summaries:
        summary["failed_nodes"] = rollout_failures(summary)
        summary.pop("nodes", None)
        rollouts.append(summary)
    nodes = []
    for row in db.fleet():
        t = row.get("telemetry") or {}
        birth = row.get("birth") or {}
        node = {
            "node": row["node"],
            "online": bool(row.get("online")),
            "last_seen": row.get("last_seen"),
            "telemetry_ts": row.get("telemetry_ts"),
            "software_version": row.get("software_version"),
            "profile": row.get("profile"),
            "groups": sorted((birth.get("groups") or {}).keys()),
            "rss_bytes": t.get("rss_bytes"),
            "budget_bytes": t.get("budget_total_bytes") or birth.get("budget_bytes"),
            "tick_p50_ms": t.get("tick_p50_ms"),
            "tick_p99_ms": t.get("tick_p99_ms"),
            "cpu_temp_c": t.get("cpu_temp_c"),
            "outbox_depth": _outbox_depth(t),
            "bundles": bundles_of(birth),
            "deployment": deployments.get(row["node"]),
        }
        node["health"] = health_of(node, now)
        nodes.append(node)
    return FleetSnapshot(taken=now, hub=dict(hub), nodes=nodes, rollouts=rollouts)


def collector_for(source: Any) -> Any:
    """A ``prometheus_client`` collector of ``source.snapshot`` (read at every scrape)."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - the hub extra

    def node_gauge(
        name: str, doc: str, nodes: Iterable[Mapping[str, Any]], key: str, scale: float = 1.0
    ) -> Any:
        g = GaugeMetricFamily(name, doc, labels=["node"])
        for n in nodes:
            value = n.get(key)
            if value is not None:
                g.add_metric([n["node"]], float(value) * scale)
        return g

    class FleetCollector:
        def collect(self) -> Iterable[Any]:
            snap: FleetSnapshot = source.snapshot
            nodes = snap.nodes
            online = sum(n["online"] for n in nodes)
            g = GaugeMetricFamily(
                "edge_agent_hub_nodes", "Nodes in the registry, by presence", labels=["state"]
            )
            g.add_metric(["online"], online)
            g.add_metric(["offline"], len(nodes) - online)
            yield g
            g = GaugeMetricFamily(
                "edge_agent_hub_nodes_health", "Nodes by health at a glance", labels=["health"]
            )
            for health in ("green", "amber", "red"):
                g.add_metric([health], sum(n["health"] == health for n in nodes))
            yield g
            yield node_gauge(
                "edge_agent_hub_node_online", "1 when the node is online", nodes, "online"
            )
            yield node_gauge(
                "edge_agent_hub_node_rss_bytes", "The node's resident memory", nodes, "rss_bytes"
            )
            yield node_gauge(
                "edge_agent_hub_node_budget_bytes",
                "The node's memory budget (its firmware profile)",
                nodes,
                "budget_bytes",
            )
            yield node_gauge(
                "edge_agent_hub_node_tick_p50_seconds", "Tick p50", nodes, "tick_p50_ms", 1e-3
            )
            yield node_gauge(
                "edge_agent_hub_node_tick_p99_seconds", "Tick p99", nodes, "tick_p99_ms", 1e-3
            )
            yield node_gauge(
                "edge_agent_hub_node_cpu_temperature_celsius",
                "CPU temperature",
                nodes,
                "cpu_temp_c",
            )
            yield node_gauge(
                "edge_agent_hub_node_outbox_depth",
                "Messages held in the outbox",
                nodes,
                "outbox_depth",
            )
            yield node_gauge(
                "edge_agent_hub_node_last_seen_timestamp_seconds",
                "When the node was last heard (Unix time)",
                nodes,
                "last_seen",
            )
            nodes_g = GaugeMetricFamily(
                "edge_agent_hub_rollout_nodes",
                "A rollout's nodes by state",
                labels=["rollout", "group", "state"],
            )
            wave_g = GaugeMetricFamily(
                "edge_agent_hub_rollout_wave",
                "The wave a rollout is at (1-based)",
                labels=["rollout"],
            )
            waves_g = GaugeMetricFamily(
                "edge_agent_hub_rollout_waves", "A rollout's number of waves", labels=["rollout"]
            )
            state_g = GaugeMetricFamily(
                "edge_agent_hub_rollout_state",
                "1 for a rollout's current state",
                labels=["rollout", "state"],
            )
            for r in snap.rollouts:
                counts = {"ok": r["nodes_done"], "failed": r["nodes_failed"]}
                counts["other"] = r["nodes_total"] - r["nodes_done"] - r["nodes_failed"]
                for state, count in counts.items():
                    nodes_g.add_metric([r["id"], r["group"], state], count)
                wave_g.add_metric([r["id"]], r["wave"])
                waves_g.add_metric([r["id"]], r["waves"])
                state_g.add_metric([r["id"], r["state"]], 1)
            yield from (nodes_g, wave_g, waves_g, state_g)
            for key, value in snap.hub.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    yield GaugeMetricFamily(
                        f"edge_agent_hub_{key}", f"The hub's {key}", value=value
                    )

    return FleetCollector()


class WebServer:
    """The HTTP side on its own thread; ``snapshot`` is swapped by the service's loop."""

    def __init__(self, listen: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

        self.snapshot = FleetSnapshot()
        self.registry = CollectorRegistry()
        self.registry.register(collector_for(self))
        self._generate = generate_latest
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self.requests = 0
        self.refused = 0
        page = resources.files("edge_agent_host.hubd").joinpath("web/index.html").read_bytes()
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edge-agent-hub"

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http: %s", format % args)

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, *, head: bool) -> None:
                if not server._slots.acquire(blocking=False):
                    server.refused += 1
                    self._send(503, "text/plain", b"busy\n", head)
                    return
                try:
                    server.requests += 1
                    path, _, query = self.path.partition("?")
                    if path == "/metrics":
                        body = server._generate(server.registry)
                        self._send(200, "text/plain; version=0.0.4; charset=utf-8", body, head)
                    elif path == "/api/fleet.json":  # filtered and paged: fleet_view.py
                        try:
                            wanted = FleetQuery.parse(query)
                        except ValueError as err:
                            self._send(400, "text/plain", f"{err}\n".encode(), head)
                        else:
                            answer = fleet_page(server.snapshot.as_json(), wanted)
                            self._send(200, "application/json", json.dumps(answer).encode(), head)
                    elif path in ("/", "/index.html"):
                        self._send(200, "text/html; charset=utf-8", page, head)
                    elif path == "/healthz":
                        self._send(200, "text/plain", b"ok\n", head)
                    else:
                        self._send(404, "text/plain", b"not found\n", head)
                finally:
                    server._slots.release()

            def _send(self, code: int, kind: str, body: bytes, head: bool) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((listen, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(10)
        self.httpd.server_close()
