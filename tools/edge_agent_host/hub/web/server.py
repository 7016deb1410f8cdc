"""The hub's read-only HTTP side: Prometheus metrics, the fleet as JSON, and one fleet page.

The service's loop (the only database user on its thread) builds a :class:`FleetSnapshot` every
``[hub] status_interval_s`` -- every node with its newest telemetry, the recent rollouts -- and
hands it over by swapping one reference, with the hub's status beside it. The HTTP server
(stdlib asyncio, one thread; bounds and timeouts in :class:`WebServer`) only reads those, so a
scrape or a page never touches the database nor waits for it.

Routes: ``/metrics`` (Prometheus text format, ``prometheus_client``), ``/api/fleet.json``,
``/`` (the page: static HTML + vanilla JS that polls the JSON, no build step, no external
resource), ``/healthz``. Only GET and HEAD.

Presence (``presence`` in the JSON, ``edge_agent_hub_nodes{state}``) is the fleet tables' rule,
:func:`edge_agent_host.fleet.presence.presence`: ``online``, ``silent`` (its retained state says
online, but nothing live came for ``[hub] silent_after_s``: a node the broker locked out),
``offline``, ``unknown``. Per-node metrics of a node that is not ``online`` are not exported (its
last numbers are history, not current values).

Health at a glance (the page's dot, ``health`` in the JSON): **red** not online (offline, silent,
unknown), or no telemetry for 3 x its period (30 s by default); **amber** RSS over 90 % of the
budget, tick p99 over 100 ms, CPU above 75 °C, an outbox holding over 1,000 messages, or a
group whose observations are out of its bundle's calibrated range (its ``input_out_of_range``
alert raised: a faulty sensor, docs/neural-agents.md); **green** otherwise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any, Final

from edge_agent_host.fleet.presence import PRESENCES, SILENT_AFTER_S, presence
from edge_agent_host.hub.learning.catch_up_store import RESULTS as CATCH_UP_RESULTS
from edge_agent_host.hub.learning.checks import Refusal
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.web.fleet_view import (
    FleetQuery,
    bundles_of,
    deployments_by_node,
    fleet_page,
    rollout_failures,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KEY_MEASURES",
    "FleetSnapshot",
    "GroupHealthHistory",
    "WebServer",
    "build_snapshot",
    "collector_for",
    "group_summaries",
    "health_of",
]

_HEAD_LIMIT: Final = 16 * 1024
_OUTCOMES: Final = ("answered", "timed_out", "evicted", "refused", "wrong_host", "hung_up")
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
    groups: list[dict[str, Any]] = field(default_factory=list)
    #: The newest learning rounds with their provenance (docs/fleet-learning.md).
    learning_rounds: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "taken": self.taken,
            "hub": self.hub,
            "nodes": self.nodes,
            "rollouts": self.rollouts,
            "groups": self.groups,
            "learning_rounds": self.learning_rounds,
        }


#: The measure a group's health is summed up by on the page, the first it reports of these.
KEY_MEASURES: Final = ("excess_surprise", "confidence", "score", "surprise")


class GroupHealthHistory:
    """The page's small plot per group: the fleet mean of the group's key measure
    (:data:`KEY_MEASURES`) at each of the last ``points`` snapshots, for at most ``max_groups``
    groups (the ones seen most recently stay). Kept in memory by the service (a restart starts
    the plots afresh); one thread (the service's loop) adds to it."""

    def __init__(self, points: int = 120, max_groups: int = 64) -> None:
        self.points = points
        self.max_groups = max_groups
        self._series: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()

    def add(self, group: str, ts: float, value: float) -> list[tuple[float, float]]:
        """Append one point; the group's series, oldest first."""
        series = self._series.get(group)
        if series is None:
            series = self._series[group] = deque(maxlen=self.points)
            while len(self._series) > self.max_groups:
                self._series.popitem(last=False)
        self._series.move_to_end(group)
        if not series or series[-1][0] < ts:
            series.append((ts, value))
        return list(series)


def group_summaries(
    nodes: Iterable[Mapping[str, Any]], now: float, history: GroupHealthHistory | None = None
) -> list[dict[str, Any]]:
    """Per group, over its online nodes' newest health windows: how many nodes report, the
    models they run, the key measure's fleet mean (and its plot's points with ``history``), the
    drift alarms."""
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for n in nodes:
        if not n.get("online"):
            continue
        for group, h in (n.get("group_health") or {}).items():
            by_group.setdefault(group, []).append(h)
    out = []
    for group, windows in sorted(by_group.items()):
        reported = {m for h in windows for m in (h.get("measures") or {})}
        key = next((m for m in KEY_MEASURES if m in reported), None)
        means = [
            float(h["measures"][key]["mean"]) for h in windows if key in (h.get("measures") or {})
        ]
        mean = sum(means) / len(means) if means else None
        points: list[tuple[float, float]] = []
        if history is not None and mean is not None:
            points = history.add(group, now, mean)
        out.append(
            {
                "group": group,
                "nodes": len(windows),
                "models": sorted({str(h.get("model")) for h in windows}),
                "measure": key,
                "mean": mean,
                "drift_alarms": sum(bool((h.get("drift") or {}).get("alarm")) for h in windows),
                "history": [[ts, v] for ts, v in points],
            }
        )
    return out


def _outbox_depth(telemetry: Mapping[str, Any]) -> int | None:
    outbox = telemetry.get("outbox")
    if isinstance(outbox, Mapping) and isinstance(outbox.get("depth_rows"), int):
        return int(outbox["depth_rows"])
    return None


def _counter(telemetry: Mapping[str, Any], key: str) -> float | None:
    """A number of the telemetry's ``counters`` (the daemon's metrics), None when absent."""
    counters = telemetry.get("counters")
    if isinstance(counters, Mapping):
        value = counters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
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
    if (node.get("groups_out_of_range") or 0) > 0:
        return "amber"
    return "green"


def build_snapshot(
    db: HubDatabase,
    hub: Mapping[str, Any],
    now: float | None = None,
    silent_after_s: float = SILENT_AFTER_S,
    history: GroupHealthHistory | None = None,
) -> FleetSnapshot:
    """Read the registry, the recent rollouts and learning rounds (raises
    DatabaseUnavailableError); each node's
    presence as of ``now`` (``silent_after_s``: ``[hub] silent_after_s``); each group's health
    summary (a point more in ``history``'s plots)."""
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
    group_health: dict[str, dict[str, Any]] = {}
    for h in db.latest_health():
        group_health.setdefault(h["node"], {})[h["group"]] = {
            k: h.get(k) for k in ("ts", "window_s", "model", "agent_steps", "measures", "drift")
        }
    nodes = []
    for row in db.fleet():
        t = row.get("telemetry") or {}
        birth = row.get("birth") or {}
        state = presence(row, silent_after_s, now)
        node = {
            "node": row["node"],
            "presence": state,
            "online": state == "online",
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
            # What a crash of the node would lose now (its relaxed outbox commits).
            "outbox_uncommitted_rows": _counter(t, "outbox.uncommitted_rows"),
            "outbox_uncommitted_s": _counter(t, "outbox.uncommitted_s"),
            # Observations outside the calibrated range (edge_agent.neural.input_range).
            "observations_checked": _counter(t, "input_range.checked"),
            "observations_out_of_range": _counter(t, "input_range.out_of_range"),
            "groups_out_of_range": _counter(t, "input_range.alerting"),
            # Each group's newest health window (docs/health.md), by group name.
            "group_health": group_health.get(row["node"], {}),
        }
        node["health"] = health_of(node, now)
        nodes.append(node)
    return FleetSnapshot(
        taken=now,
        hub=dict(hub),
        nodes=nodes,
        rollouts=rollouts,
        groups=group_summaries(nodes, now, history),
        learning_rounds=LearningStore(db).recent_rounds(limit=10),
    )


def _hub_families(status: Mapping[str, Any]) -> Iterable[Any]:
    """The hub's own numbers (its status, as of the last status write) in base units."""
    from prometheus_client.core import (  # noqa: PLC0415 - the hub extra
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    if not status:
        return
    hub = str(status.get("hub_id", ""))
    yield InfoMetricFamily(
        "edge_agent_hub_build",
        "The hub's software version and replica name",
        value={"version": str(status.get("version", "")), "hub": hub},
    )
    yield GaugeMetricFamily(
        "edge_agent_hub_start_time_seconds",
        "When this hub process started (Unix time)",
        value=float(status.get("started_at", 0.0)),
    )
    g = GaugeMetricFamily("edge_agent_hub_state", "1 for the hub's current state", labels=["state"])
    for state in ("starting", "running", "degraded", "stopping", "stopped"):
        g.add_metric([state], float(status.get("state") == state))
    yield g

    heard: Mapping[str, int] = status.get("heard") or {}
    received = CounterMetricFamily(
        "edge_agent_hub_messages_received",
        "Valid fleet messages heard, by message type",
        labels=["type"],
    )
    dropped = CounterMetricFamily(
        "edge_agent_hub_messages_dropped",
        "Fleet messages dropped on arrival, by class (malformed, forged, ignored, queue_full) "
        "and reason",
        labels=["class", "reason"],
    )
    for key, n in sorted(heard.items()):
        kind, _, reason = key.partition(".")
        if kind == "received":
            received.add_metric([reason], n)
        else:
            dropped.add_metric([kind, reason or kind], n)
    yield received
    yield dropped

    db: Mapping[str, Any] = status.get("database") or {}
    counters: Mapping[str, Any] = status.get("counters") or {}
    yield GaugeMetricFamily(
        "edge_agent_hub_database_up",
        "1 when the database is connected",
        value=float(bool(db.get("up"))),
    )
    yield GaugeMetricFamily(
        "edge_agent_hub_database_down_seconds",
        "How long the current database outage has lasted (0 when up)",
        value=float(db.get("down_s") or 0.0),
    )
    yield GaugeMetricFamily(
        "edge_agent_hub_database_call_seconds",
        "How long the database call under way has been running (0 when none is)",
        value=float(db.get("busy_s") or 0.0),
    )
    yield GaugeMetricFamily(
        "edge_agent_hub_database_schema_version",
        "The database's schema version",
        value=float(db.get("schema_version") or 0),
    )
    for name, key, doc in (
        ("messages_written", "written", "Fleet messages written to the database"),
        ("messages_rejected", "rejected", "Fleet messages the database refused (dropped)"),
        ("outages", "outages", "Database outages (first failure to first commit)"),
        ("calls_overdue", "overdue", "Database calls that missed their deadline"),
        ("messages_lost_at_stop", "lost_at_stop", "Held messages not written at the last stop"),
    ):
        yield CounterMetricFamily(
            f"edge_agent_hub_database_{name}", doc, value=float(db.get(key) or 0)
        )
    for name, key, doc in (
        ("transactions", "hub.db.transactions", "Database transactions committed"),
        ("connections", "hub.db.opens", "Database connections opened"),
    ):
        yield CounterMetricFamily(
            f"edge_agent_hub_database_{name}", doc, value=float(counters.get(key) or 0)
        )

    queue: Mapping[str, Any] = status.get("queue") or {}
    for name, key, doc in (
        ("messages", "depth", "Fleet messages held for the database"),
        ("bytes", "bytes", "Payload bytes held for the database"),
        ("max_messages", "max_messages", "Messages held at most ([queue] max_messages)"),
        ("max_bytes", "max_bytes", "Payload bytes held at most ([queue] max_bytes)"),
        ("high_water_messages", "high_water", "Most messages held at once since the start"),
    ):
        yield GaugeMetricFamily(
            f"edge_agent_hub_queue_{name}", doc, value=float(queue.get(key) or 0)
        )
    c = CounterMetricFamily(
        "edge_agent_hub_queue_dropped_messages",
        "Messages the full queue dropped, by message type",
        labels=["type"],
    )
    for key, n in sorted(queue.items()):
        if key.startswith("dropped."):
            c.add_metric([key.split(".", 1)[1]], n)
    yield c
    yield CounterMetricFamily(
        "edge_agent_hub_queue_evicted_telemetry_messages",
        "Held telemetry evicted to make room for other messages",
        value=float(queue.get("evicted_telemetry") or 0),
    )

    exposure: Mapping[str, Any] = status.get("exposure") or {}
    g = GaugeMetricFamily(
        "edge_agent_hub_exposure_messages",
        "Messages acknowledged to the broker and not in the database, by what would lose them "
        "(held: all of them; killed: not spooled; power_cut: not spooled or not fsynced)",
        labels=["if"],
    )
    g.add_metric(["held"], float(exposure.get("held") or 0))
    g.add_metric(["killed"], float(exposure.get("lost_if_killed") or 0))
    g.add_metric(["power_cut"], float(exposure.get("lost_if_power_cut") or 0))
    yield g
    yield GaugeMetricFamily(
        "edge_agent_hub_exposure_unsynced_seconds",
        "Age of the oldest spooled message not fsynced yet",
        value=float(exposure.get("unsynced_s") or 0.0),
    )
    spool: Mapping[str, Any] | None = status.get("spool")
    if spool:
        yield GaugeMetricFamily(
            "edge_agent_hub_spool_durable",
            "1 while the spool takes every held message",
            value=float(bool(spool.get("durable"))),
        )
        for name, key, doc in (
            ("replayed_messages", "replayed", "Spooled messages heard again at this start"),
            ("errors", "errors", "Messages the spool's disk refused (held in memory only)"),
            ("torn_segments", "torn", "Spool segments that ended in a partial record"),
        ):
            yield CounterMetricFamily(
                f"edge_agent_hub_spool_{name}", doc, value=float(spool.get(key) or 0)
            )

    mqtt: Mapping[str, Any] = status.get("mqtt") or {}
    yield GaugeMetricFamily(
        "edge_agent_hub_mqtt_connected",
        "1 when the hub is connected to the broker",
        value=float(bool(mqtt.get("connected"))),
    )
    for name, key, doc in (
        ("connect_attempts", "hub.mqtt.connect_attempts", "Connection attempts to the broker"),
        ("sessions", "hub.mqtt.sessions_up", "Broker sessions established"),
        (
            "sessions_resumed",
            "hub.mqtt.sessions_resumed",
            "Broker connections that resumed the hub's session (what was queued for it came)",
        ),
        ("handler_errors", "hub.mqtt.handler_errors", "Message handler failures"),
        ("rebirths_requested", "hub.mqtt.rebirths_requested", "Rebirth requests sent to nodes"),
    ):
        yield CounterMetricFamily(
            f"edge_agent_hub_mqtt_{name}", doc, value=float(counters.get(key) or 0)
        )

    health = CounterMetricFamily(
        "edge_agent_hub_health_dropped",
        "Health windows dropped by this replica: of a group the node's newest birth does not "
        "declare (unknown_group), or beyond [retention] health_groups_per_node (over_cap)",
        labels=["reason"],
    )
    for reason, n in sorted((status.get("health_dropped") or {}).items()):
        health.add_metric([reason], float(n))
    yield health

    yield from _learning_families(status)

    rollouts: Mapping[str, Any] | None = status.get("rollouts")
    if rollouts:
        for name, key, doc in (
            ("halts", "halts", "Rollouts halted by a failed criterion or the operator"),
            ("pauses", "pauses", "Rollouts paused by an inconclusive health verdict"),
            ("rollbacks", "rollbacks", "Rollouts rolled back"),
            ("waves_deployed", "waves_deployed", "Rollout waves deployed"),
            ("completed", "done", "Rollouts completed"),
            ("runner_errors", "errors", "Rollout runner rounds that failed"),
        ):
            yield CounterMetricFamily(
                f"edge_agent_hub_rollout_{name}", doc, value=float(rollouts.get(key) or 0)
            )


def _learning_families(status: Mapping[str, Any]) -> Iterable[Any]:
    """The learning deltas by status, and the catch-up deployments by result."""
    from prometheus_client.core import (  # noqa: PLC0415 - the hub extra
        CounterMetricFamily,
        GaugeMetricFamily,
    )

    learning: Mapping[str, Any] = status.get("learning") or {}
    if learning:
        yield CounterMetricFamily(
            "edge_agent_hub_learning_deltas_accepted",
            "Learning deltas the hub accepted (each (node, group, seq) once, fleet-wide)",
            value=float(learning.get("accepted") or 0),
        )
        refused = CounterMetricFamily(
            "edge_agent_hub_learning_deltas_refused",
            "Learning deltas the hub refused, by reason (docs/fleet-learning.md)",
            labels=["reason"],
        )
        for reason in Refusal:
            refused.add_metric([reason.value], float(learning.get(reason.value) or 0))
        yield refused

    catch_ups: Mapping[str, Any] | None = status.get("catch_ups")
    if catch_ups:
        family = GaugeMetricFamily(
            "edge_agent_hub_learning_catch_ups",
            "Catch-up deployments stored: a line's current version to a node's group behind it, "
            "by result (pending, ok, failed; docs/fleet-learning.md)",
            labels=["result"],
        )
        for result in CATCH_UP_RESULTS:
            family.add_metric([result], float(catch_ups.get(result) or 0))
        yield family


def _health_families(live: Iterable[Mapping[str, Any]]) -> Iterable[Any]:
    """The online nodes' groups' newest health window. Series: per node and group, at most one
    per measure of the closed vocabulary (13) and stat (mean, p95), one count per measure, and
    the drift detector's alarm, statistic and threshold."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - the hub extra

    value = GaugeMetricFamily(
        "edge_agent_hub_group_health",
        "A group's health measure over its newest window: its mean or 95th percentile over "
        "the window's agent-steps (docs/health.md; online nodes)",
        labels=["node", "group", "measure", "stat"],
    )
    samples = GaugeMetricFamily(
        "edge_agent_hub_group_health_samples",
        "The agent-steps (or samples) a group's health measure is over in its newest window",
        labels=["node", "group", "measure"],
    )
    steps = GaugeMetricFamily(
        "edge_agent_hub_group_health_agent_steps",
        "Agent-steps of a group in its newest health window",
        labels=["node", "group"],
    )
    window = GaugeMetricFamily(
        "edge_agent_hub_group_health_window_seconds",
        "The length of a group's newest health window",
        labels=["node", "group"],
    )
    alarm = GaugeMetricFamily(
        "edge_agent_hub_group_drift_alarm",
        "1 while a group's drift detector (Page-Hinkley on the excess surprise) is in alarm",
        labels=["node", "group"],
    )
    statistic = GaugeMetricFamily(
        "edge_agent_hub_group_drift_statistic",
        "A group's drift detector statistic (it alarms above its threshold)",
        labels=["node", "group"],
    )
    threshold = GaugeMetricFamily(
        "edge_agent_hub_group_drift_threshold",
        "The statistic a group's drift detector alarms at",
        labels=["node", "group"],
    )
    for n in live:
        for group, h in sorted((n.get("group_health") or {}).items()):
            at = [n["node"], group]
            steps.add_metric(at, float(h.get("agent_steps") or 0))
            window.add_metric(at, float(h.get("window_s") or 0.0))
            for measure, summary in sorted((h.get("measures") or {}).items()):
                value.add_metric([*at, measure, "mean"], float(summary["mean"]))
                value.add_metric([*at, measure, "p95"], float(summary["p95"]))
                samples.add_metric([*at, measure], float(summary["n"]))
            drift = h.get("drift")
            if drift is not None:
                alarm.add_metric(at, float(bool(drift["alarm"])))
                statistic.add_metric(at, float(drift["statistic"]))
                threshold.add_metric(at, float(drift["threshold"]))
    yield from (value, samples, steps, window, alarm, statistic, threshold)


def collector_for(source: Any) -> Any:
    """A ``prometheus_client`` collector of ``source.snapshot`` and ``source.hub_status`` (read
    at every scrape). Per-node values are exported for online nodes only: the last numbers of an
    offline or silent node are history (the page and the database have them), not current
    values."""
    from prometheus_client.core import (  # noqa: PLC0415 - the hub extra
        CounterMetricFamily,
        GaugeMetricFamily,
    )

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
            live = [n for n in nodes if n["online"]]
            g = GaugeMetricFamily(
                "edge_agent_hub_nodes",
                "Nodes in the registry, by presence (silent: its state says online, nothing "
                "came from it for [hub] silent_after_s)",
                labels=["state"],
            )
            for here in PRESENCES:
                g.add_metric([here], sum(n["presence"] == here for n in nodes))
            yield g
            g = GaugeMetricFamily(
                "edge_agent_hub_nodes_health", "Nodes by health at a glance", labels=["health"]
            )
            for health in ("green", "amber", "red"):
                g.add_metric([health], sum(n["health"] == health for n in nodes))
            yield g
            yield node_gauge(
                "edge_agent_hub_node_online",
                "1 when the node is online (0: offline, silent or unknown)",
                nodes,
                "online",
            )
            yield node_gauge(
                "edge_agent_hub_node_last_seen_timestamp_seconds",
                "When the node was last heard (Unix time)",
                nodes,
                "last_seen",
            )
            yield node_gauge(
                "edge_agent_hub_node_rss_bytes",
                "The node's resident memory (online nodes)",
                live,
                "rss_bytes",
            )
            yield node_gauge(
                "edge_agent_hub_node_budget_bytes",
                "The node's memory budget, its firmware profile (online nodes)",
                live,
                "budget_bytes",
            )
            yield node_gauge(
                "edge_agent_hub_node_tick_p50_seconds",
                "The node's tick time, median (online nodes)",
                live,
                "tick_p50_ms",
                1e-3,
            )
            yield node_gauge(
                "edge_agent_hub_node_tick_p99_seconds",
                "The node's tick time, 99th percentile (online nodes)",
                live,
                "tick_p99_ms",
                1e-3,
            )
            yield node_gauge(
                "edge_agent_hub_node_cpu_temperature_celsius",
                "The node's CPU temperature (online nodes)",
                live,
                "cpu_temp_c",
            )
            yield node_gauge(
                "edge_agent_hub_node_outbox_messages",
                "Messages held in the node's outbox (online nodes)",
                live,
                "outbox_depth",
            )
            yield node_gauge(
                "edge_agent_hub_node_outbox_uncommitted_messages",
                "Outbox messages neither acknowledged nor committed: what a crash of the node "
                "would lose (online nodes)",
                live,
                "outbox_uncommitted_rows",
            )
            yield node_gauge(
                "edge_agent_hub_node_outbox_uncommitted_seconds",
                "Age of the node's uncommitted outbox transaction (online nodes)",
                live,
                "outbox_uncommitted_s",
            )
            yield node_gauge(
                "edge_agent_hub_node_observations_checked",
                "Agent-steps the node's neural groups checked against their bundles' calibrated "
                "ranges since its daemon started (online nodes)",
                live,
                "observations_checked",
            )
            yield node_gauge(
                "edge_agent_hub_node_observations_out_of_range",
                "Agent-steps of the node's neural groups with an observation outside the "
                "calibrated range since its daemon started (online nodes)",
                live,
                "observations_out_of_range",
            )
            yield node_gauge(
                "edge_agent_hub_node_groups_out_of_range",
                "The node's groups whose share of observations out of range raised the "
                "input_out_of_range alert and has not fallen back (online nodes)",
                live,
                "groups_out_of_range",
            )
            yield from _health_families(live)
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
            yield from _hub_families(getattr(source, "hub_status", {}))
            http = CounterMetricFamily(
                "edge_agent_hub_http_connections",
                "HTTP connections, by how they ended (answered, closed idle or slow, evicted for "
                "a newer one, refused at the bound, wrong Host, client hung up)",
                labels=["outcome"],
            )
            counts = getattr(source, "connection_counts", dict)()
            for outcome, n in sorted(counts.items()):
                http.add_metric([outcome], n)
            yield http

    return FleetCollector()


class WebServer:
    """The HTTP side: one asyncio loop on its own thread (see the module docstring).

    An open connection costs a descriptor and a few kilobytes, never a thread. A client has
    ``timeout_s`` to send its request head and ``timeout_s`` to take the answer; at most
    ``max_connections`` are open (also at most a quarter of the process's descriptor limit, so
    that the broker and the database always find one): a new connection closes the oldest one
    that has not sent its request yet, or is closed itself when every open one is being answered.
    Connections are accepted one at a time, each only once the one before it has its place (an
    asyncio server accepts up to its backlog at once: at a low descriptor limit that burst took
    the descriptors the broker's reconnection needed), so the HTTP side never holds more than
    ``max_connections + 1`` descriptors for clients; the rest wait in the kernel's queue.
    One request per connection (``Connection: close``). A request whose ``Host`` is not
    localhost, an IP address, the listen address, this machine's name or one of
    ``allowed_hosts`` gets 421 (DNS rebinding). A client that hangs up is counted, not logged.
    ``snapshot`` and ``hub_status`` are swapped by the service's loop, read here.
    """

    def __init__(
        self,
        listen: str,
        port: int,
        *,
        allowed_hosts: Iterable[str] = (),
        max_connections: int = 64,
        timeout_s: float = 10.0,
    ) -> None:
        from prometheus_client import (  # noqa: PLC0415 - the hub extra
            CollectorRegistry,
            ProcessCollector,
            generate_latest,
        )

        self.snapshot = FleetSnapshot()
        self.hub_status: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        self.registry.register(collector_for(self))
        ProcessCollector(registry=self.registry)
        self._generate = generate_latest
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = max(2, min(max_connections, soft // 4))
        self.timeout_s = timeout_s
        self.allowed_hosts = frozenset(
            h.lower().strip("[]")
            for h in (*allowed_hosts, "localhost", listen, socket.gethostname())
        )
        self._counts: dict[str, int] = dict.fromkeys(_OUTCOMES, 0)
        self._waiting: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._starved = False
        self._page = resources.files("edge_agent_host.hub").joinpath("web/index.html").read_bytes()
        self._sock = socket.create_server((listen, port), backlog=128)
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="http", daemon=True)

    # what the status shows -------------------------------------------------------------------
    @property
    def requests(self) -> int:
        return self._counts["answered"]

    @property
    def refused(self) -> int:
        return self._counts["refused"] + self._counts["evicted"]

    def connection_counts(self) -> dict[str, int]:
        return dict(self._counts)

    # life ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(10)
        self._sock.close()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        accepting = asyncio.create_task(self._accept())
        self._ready.set()
        await self._stopped.wait()
        accepting.cancel()
        for writer in list(self._waiting):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(accepting, *self._tasks, return_exceptions=True)

    async def _accept(self) -> None:
        """Take connections from the kernel's queue one at a time (see the class docstring)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except OSError as err:
                # Out of descriptors (the rest of the process holds them): leave the client in
                # the kernel's queue and try again; one warning per shortage, no traceback.
                if not self._starved:
                    self._starved = True
                    logger.warning("http: cannot accept a connection now: %s", err)
                await asyncio.sleep(0.1)
                continue
            self._starved = False
            if self._open >= self.max_connections and not self._evict_one():
                self._counts["refused"] += 1
                conn.close()
            else:
                self._open += 1
                task = asyncio.create_task(self._connection(conn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # Let an evicted connection's close run before the next accept (an accept that
            # finds a client waiting does not yield to the loop by itself).
            await asyncio.sleep(0)

    # one connection --------------------------------------------------------------------------
    async def _connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_HEAD_LIMIT)
        except OSError:
            self._open -= 1
            self._counts["hung_up"] += 1
            conn.close()
            return
        try:
            self._waiting[writer] = None
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
                self._end_idle(writer)
                return
            except asyncio.LimitOverrunError:
                self._waiting.pop(writer, None)
                await self._reply(writer, 431, "text/plain", b"request head too large\n", False)
                return
            if self._waiting.pop(writer, "gone") == "gone":
                writer.transport.abort()  # evicted after its request came in: it lost the race
                return
            await self._answer(writer, head)
        except asyncio.CancelledError:
            writer.transport.abort()  # the server stops
            raise
        finally:
            self._open -= 1
            self._waiting.pop(writer, None)

    def _evict_one(self) -> bool:
        """Close the oldest connection that has not sent a request; False when none is left."""
        if not self._waiting:
            return False
        writer, _ = self._waiting.popitem(last=False)
        self._counts["evicted"] += 1
        writer.transport.abort()
        return True

    def _end_idle(self, writer: asyncio.StreamWriter) -> None:
        if self._waiting.pop(writer, "gone") != "gone":
            self._counts["timed_out"] += 1  # idle, slow, or hung up before its request
        writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        try:
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
        except ValueError:
            await self._reply(writer, 400, "text/plain", b"bad request\n", False)
            return
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await self._reply(writer, 501, "text/plain", b"only GET and HEAD\n", False)
            return
        if not self._host_allowed(headers.get("host")):
            self._counts["wrong_host"] += 1
            await self._reply(writer, 421, "text/plain", b"unknown Host\n", head_only)
            return
        path, _, query = target.partition("?")
        if path == "/metrics":
            body = self._generate(self.registry)
            await self._reply(
                writer, 200, "text/plain; version=0.0.4; charset=utf-8", body, head_only
            )
        elif path == "/api/fleet.json":  # filtered and paged: fleet_view.py
            try:
                wanted = FleetQuery.parse(query)
            except ValueError as err:
                await self._reply(writer, 400, "text/plain", f"{err}\n".encode(), head_only)
                return
            body = json.dumps(fleet_page(self.snapshot.as_json(), wanted)).encode()
            await self._reply(writer, 200, "application/json", body, head_only)
        elif path in ("/", "/index.html"):
            await self._reply(writer, 200, "text/html; charset=utf-8", self._page, head_only)
        elif path == "/healthz":
            await self._reply(writer, 200, "text/plain", b"ok\n", head_only)
        else:
            await self._reply(writer, 404, "text/plain", b"not found\n", head_only)

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        name = host.lower()
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)  # an address is its own origin: no rebinding
        except ValueError:
            return False
        return True

    async def _reply(
        self, writer: asyncio.StreamWriter, code: int, kind: str, body: bytes, head_only: bool
    ) -> None:
        reason = HTTPStatus(code).phrase
        head = (
            f"HTTP/1.1 {code} {reason}\r\n"
            f"Server: edge-agent-hub\r\n"
            f"Content-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            writer.write(head if head_only else head + body)
            await asyncio.wait_for(writer.drain(), self.timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            self._counts["hung_up"] += 1
            writer.transport.abort()
            return
        self._counts["answered"] += 1
        writer.close()
