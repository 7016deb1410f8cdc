"""``/metrics``: the fleet snapshot and the hub's own status as Prometheus metric families.

The one module that imports ``prometheus_client`` (the ``hub`` extra): the web server imports it
when it starts, which ``[http] enabled`` asks for and ``check-config`` checks the extra for.

Per-node values are exported for online nodes only: the last numbers of an offline or silent
node are history (the page and the database have them), not current values. Each family is
made by one function from one part of the snapshot or the status; the numbers that are one
family each with nothing but a name, a help text and a key are tables (:data:`NODE_GAUGES` and
the tables beside each status part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from edge_agent_host.fleet.presence import PRESENCES
from edge_agent_host.hub.learning.catch_up_store import RESULTS as CATCH_UP_RESULTS
from edge_agent_host.hub.learning.checks import Refusal
from edge_agent_host.hub.web.snapshot import FleetSnapshot

__all__ = ["NODE_GAUGES", "collector_for"]

Family = Any
"""A ``prometheus_client`` metric family."""

Status = Mapping[str, Any]
"""The hub's status (:meth:`~edge_agent_host.hub.service.loop.HubService.status`)."""

#: (metric, help, the snapshot row's key, scale, online nodes only): one gauge per node each.
NODE_GAUGES: Final[tuple[tuple[str, str, str, float, bool], ...]] = (
    ("edge_agent_hub_node_online", "1 when the node is online (0: offline, silent or unknown)",
     "online", 1.0, False),
    ("edge_agent_hub_node_last_seen_timestamp_seconds", "When the node was last heard (Unix time)",
     "last_seen", 1.0, False),
    ("edge_agent_hub_node_rss_bytes", "The node's resident memory (online nodes)",
     "rss_bytes", 1.0, True),
    ("edge_agent_hub_node_budget_bytes",
     "The node's memory budget, its firmware profile (online nodes)", "budget_bytes", 1.0, True),
    ("edge_agent_hub_node_tick_p50_seconds", "The node's tick time, median (online nodes)",
     "tick_p50_ms", 1e-3, True),
    ("edge_agent_hub_node_tick_p99_seconds",
     "The node's tick time, 99th percentile (online nodes)", "tick_p99_ms", 1e-3, True),
    ("edge_agent_hub_node_cpu_temperature_celsius", "The node's CPU temperature (online nodes)",
     "cpu_temp_c", 1.0, True),
    ("edge_agent_hub_node_outbox_messages", "Messages held in the node's outbox (online nodes)",
     "outbox_depth", 1.0, True),
    ("edge_agent_hub_node_outbox_uncommitted_messages",
     "Outbox messages neither acknowledged nor committed: what a crash of the node would lose "
     "(online nodes)", "outbox_uncommitted_rows", 1.0, True),
    ("edge_agent_hub_node_outbox_uncommitted_seconds",
     "Age of the node's uncommitted outbox transaction (online nodes)",
     "outbox_uncommitted_s", 1.0, True),
    ("edge_agent_hub_node_observations_checked",
     "Agent-steps the node's neural groups checked against their bundles' calibrated ranges "
     "since its daemon started (online nodes)", "observations_checked", 1.0, True),
    ("edge_agent_hub_node_observations_out_of_range",
     "Agent-steps of the node's neural groups with an observation outside the calibrated range "
     "since its daemon started (online nodes)", "observations_out_of_range", 1.0, True),
    ("edge_agent_hub_node_groups_out_of_range",
     "The node's groups whose share of observations out of range raised the input_out_of_range "
     "alert and has not fallen back (online nodes)", "groups_out_of_range", 1.0, True),
    ("edge_agent_hub_node_teams_open", "Team tasks open in the node's award", "teams_open", 1.0,
     True),
    ("edge_agent_hub_node_teams_formed",
     "Team tasks whose every slot was filled, since the node's daemon started", "teams_formed",
     1.0, True),
    ("edge_agent_hub_node_team_slots_vacant",
     "Slots of formed teams nobody fills now (repairs waiting for a bidder)",
     "team_slots_vacant", 1.0, True),
    ("edge_agent_hub_node_team_repairs",
     "Slots of formed teams filled again after a member left, since the daemon started",
     "team_repairs", 1.0, True),
    ("edge_agent_hub_node_team_formation_seconds",
     "Longest time from a team task's announcement to every slot filled, on the node",
     "team_form_s_max", 1.0, True),
    ("edge_agent_hub_node_team_repair_seconds",
     "Longest time a formed team's slot stayed vacant before it was filled again",
     "team_repair_s_max", 1.0, True),
)  # fmt: skip


def collector_for(source: Any) -> Any:
    """A ``prometheus_client`` collector of ``source.snapshot``, ``source.hub_status`` and
    ``source.connection_counts()`` (read at every scrape)."""

    class FleetCollector:
        def collect(self) -> Iterable[Family]:
            snap: FleetSnapshot = source.snapshot
            live = [n for n in snap.nodes if n["online"]]
            yield from _fleet_families(snap.nodes)
            yield from _node_families(snap.nodes, live)
            yield from _health_families(live)
            yield from _rollout_families(snap.rollouts)
            yield from _hub_families(getattr(source, "hub_status", {}))
            yield _http_family(getattr(source, "connection_counts", dict)())

    return FleetCollector()


# the fleet, from the snapshot --------------------------------------------------------------------
def _fleet_families(nodes: Sequence[Mapping[str, Any]]) -> Iterable[Family]:
    """The nodes in the registry by presence, and by condition (its label keeps the name
    ``health``, which dashboards and alert rules read)."""
    g = GaugeMetricFamily(
        "edge_agent_hub_nodes",
        "Nodes in the registry, by presence (silent: its state says online, nothing came from it "
        "for [hub] silent_after_s)",
        labels=["state"],
    )
    for here in PRESENCES:
        g.add_metric([here], sum(n["presence"] == here for n in nodes))
    yield g
    g = GaugeMetricFamily(
        "edge_agent_hub_nodes_health",
        "Nodes by condition at a glance (green, amber, red; docs/hub.md)",
        labels=["health"],
    )
    for condition in ("green", "amber", "red"):
        g.add_metric([condition], sum(n["health"] == condition for n in nodes))
    yield g


def _node_families(
    nodes: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]
) -> Iterable[Family]:
    """One gauge per node of each of :data:`NODE_GAUGES`."""
    for name, doc, key, scale, online_only in NODE_GAUGES:
        g = GaugeMetricFamily(name, doc, labels=["node"])
        for n in live if online_only else nodes:
            value = n.get(key)
            if value is not None:
                g.add_metric([n["node"]], float(value) * scale)
        yield g


def _health_families(live: Iterable[Mapping[str, Any]]) -> Iterable[Family]:
    """The online nodes' groups' newest health window. Series: per node and group, at most one
    per measure of the closed vocabulary (13) and stat (mean, p95), one count per measure, and
    the drift detector's alarm, statistic and threshold."""
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


def _rollout_families(rollouts: Iterable[Mapping[str, Any]]) -> Iterable[Family]:
    """The recent rollouts: their nodes by state, their wave, their number of waves, their state."""
    nodes_g = GaugeMetricFamily(
        "edge_agent_hub_rollout_nodes",
        "A rollout's nodes by state",
        labels=["rollout", "group", "state"],
    )
    wave_g = GaugeMetricFamily(
        "edge_agent_hub_rollout_wave", "The wave a rollout is at (1-based)", labels=["rollout"]
    )
    waves_g = GaugeMetricFamily(
        "edge_agent_hub_rollout_waves", "A rollout's number of waves", labels=["rollout"]
    )
    state_g = GaugeMetricFamily(
        "edge_agent_hub_rollout_state",
        "1 for a rollout's current state",
        labels=["rollout", "state"],
    )
    for r in rollouts:
        counts = {"ok": r["nodes_done"], "failed": r["nodes_failed"]}
        counts["other"] = r["nodes_total"] - r["nodes_done"] - r["nodes_failed"]
        for state, count in counts.items():
            nodes_g.add_metric([r["id"], r["group"], state], count)
        wave_g.add_metric([r["id"]], r["wave"])
        waves_g.add_metric([r["id"]], r["waves"])
        state_g.add_metric([r["id"], r["state"]], 1)
    yield from (nodes_g, wave_g, waves_g, state_g)


def _http_family(counts: Mapping[str, int]) -> Family:
    """The web server's connections, by how they ended."""
    http = CounterMetricFamily(
        "edge_agent_hub_http_connections",
        "HTTP connections, by how they ended (answered, closed idle or slow, evicted for a newer "
        "one, refused at the bound, wrong Host, client hung up)",
        labels=["outcome"],
    )
    for outcome, n in sorted(counts.items()):
        http.add_metric([outcome], n)
    return http


# the hub itself, from its status -----------------------------------------------------------------
#: (metric suffix, the status's key, help): one family each, of one part of the status.
Numbers = tuple[tuple[str, str, str], ...]


def _numbers(
    kind: Callable[..., Family], prefix: str, table: Numbers, values: Mapping[str, Any]
) -> Iterable[Family]:
    """One family of ``kind`` (a counter or a gauge) per row of ``table``, its value read from
    ``values`` (0 when absent)."""
    for name, key, doc in table:
        yield kind(f"{prefix}_{name}", doc, value=float(values.get(key) or 0))


DATABASE_COUNTERS: Final[Numbers] = (
    ("messages_written", "written", "Fleet messages written to the database"),
    ("messages_rejected", "rejected", "Fleet messages the database refused (dropped)"),
    ("outages", "outages", "Database outages (first failure to first commit)"),
    ("calls_overdue", "overdue", "Database calls that missed their deadline"),
    ("messages_lost_at_stop", "lost_at_stop", "Held messages not written at the last stop"),
)
DATABASE_PROCESS_COUNTERS: Final[Numbers] = (
    ("transactions", "hub.db.transactions", "Database transactions committed"),
    ("connections", "hub.db.opens", "Database connections opened"),
)
QUEUE_GAUGES: Final[Numbers] = (
    ("messages", "depth", "Fleet messages held for the database"),
    ("bytes", "bytes", "Payload bytes held for the database"),
    ("max_messages", "max_messages", "Messages held at most ([queue] max_messages)"),
    ("max_bytes", "max_bytes", "Payload bytes held at most ([queue] max_bytes)"),
    ("high_water_messages", "high_water", "Most messages held at once since the start"),
)
SPOOL_COUNTERS: Final[Numbers] = (
    ("replayed_messages", "replayed", "Spooled messages heard again at this start"),
    ("errors", "errors", "Messages the spool's disk refused (held in memory only)"),
    ("torn_segments", "torn", "Spool segments that ended in a partial record"),
)
MQTT_COUNTERS: Final[Numbers] = (
    ("connect_attempts", "hub.mqtt.connect_attempts", "Connection attempts to the broker"),
    ("sessions", "hub.mqtt.sessions_up", "Broker sessions established"),
    ("sessions_resumed", "hub.mqtt.sessions_resumed",
     "Broker connections that resumed the hub's session (what was queued for it came)"),
    ("handler_errors", "hub.mqtt.handler_errors", "Message handler failures"),
    ("rebirths_requested", "hub.mqtt.rebirths_requested", "Rebirth requests sent to nodes"),
)  # fmt: skip
ROLLOUT_RUNNER_COUNTERS: Final[Numbers] = (
    ("halts", "halts", "Rollouts halted by a failed criterion or the operator"),
    ("pauses", "pauses", "Rollouts paused by an inconclusive health verdict"),
    ("rollbacks", "rollbacks", "Rollouts rolled back"),
    ("waves_deployed", "waves_deployed", "Rollout waves deployed"),
    ("completed", "done", "Rollouts completed"),
    ("runner_errors", "errors", "Rollout runner rounds that failed"),
)


def _hub_families(status: Status) -> Iterable[Family]:
    """The hub's own numbers (its status, as of the last status write) in base units."""
    if not status:
        return
    for part in (
        _process_families,
        _heard_families,
        _database_families,
        _queue_families,
        _exposure_families,
        _mqtt_families,
        _health_dropped_families,
        _learning_families,
        _rollout_runner_families,
    ):
        yield from part(status)


def _process_families(status: Status) -> Iterable[Family]:
    """This replica: its software and name, when it started, its state."""
    yield InfoMetricFamily(
        "edge_agent_hub_build",
        "The hub's software version and replica name",
        value={"version": str(status.get("version", "")), "hub": str(status.get("hub_id", ""))},
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


def _heard_families(status: Status) -> Iterable[Family]:
    """The listener's counts: messages heard by type, and dropped on arrival by class and
    reason."""
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
    heard: Mapping[str, int] = status.get("heard") or {}
    for key, n in sorted(heard.items()):
        kind, _, reason = key.partition(".")
        if kind == "received":
            received.add_metric([reason], n)
        else:
            dropped.add_metric([kind, reason or kind], n)
    yield from (received, dropped)


def _database_families(status: Status) -> Iterable[Family]:
    """The database now (up, how long down, the call under way, the schema) and its writes."""
    db: Mapping[str, Any] = status.get("database") or {}
    for name, value, doc in (
        ("up", float(bool(db.get("up"))), "1 when the database is connected"),
        ("down_seconds", float(db.get("down_s") or 0.0),
         "How long the current database outage has lasted (0 when up)"),
        ("call_seconds", float(db.get("busy_s") or 0.0),
         "How long the database call under way has been running (0 when none is)"),
        ("schema_version", float(db.get("schema_version") or 0), "The database's schema version"),
    ):  # fmt: skip
        yield GaugeMetricFamily(f"edge_agent_hub_database_{name}", doc, value=value)
    yield from _numbers(CounterMetricFamily, "edge_agent_hub_database", DATABASE_COUNTERS, db)
    yield from _numbers(
        CounterMetricFamily,
        "edge_agent_hub_database",
        DATABASE_PROCESS_COUNTERS,
        status.get("counters") or {},
    )


def _queue_families(status: Status) -> Iterable[Family]:
    """The queue in front of the database: what it holds, its bounds, what the full queue
    dropped."""
    queue: Mapping[str, Any] = status.get("queue") or {}
    yield from _numbers(GaugeMetricFamily, "edge_agent_hub_queue", QUEUE_GAUGES, queue)
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


def _exposure_families(status: Status) -> Iterable[Family]:
    """What a crash would cost now, and the spool that bounds it."""
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
        yield from _numbers(CounterMetricFamily, "edge_agent_hub_spool", SPOOL_COUNTERS, spool)


def _mqtt_families(status: Status) -> Iterable[Family]:
    """The broker connection."""
    mqtt: Mapping[str, Any] = status.get("mqtt") or {}
    yield GaugeMetricFamily(
        "edge_agent_hub_mqtt_connected",
        "1 when the hub is connected to the broker",
        value=float(bool(mqtt.get("connected"))),
    )
    yield from _numbers(
        CounterMetricFamily, "edge_agent_hub_mqtt", MQTT_COUNTERS, status.get("counters") or {}
    )


def _health_dropped_families(status: Status) -> Iterable[Family]:
    """Health windows this replica dropped, by reason."""
    health = CounterMetricFamily(
        "edge_agent_hub_health_dropped",
        "Health windows dropped by this replica: of a group the node's newest birth does not "
        "declare (unknown_group), or beyond [retention] health_groups_per_node (over_cap)",
        labels=["reason"],
    )
    for reason, n in sorted((status.get("health_dropped") or {}).items()):
        health.add_metric([reason], float(n))
    yield health


def _learning_families(status: Status) -> Iterable[Family]:
    """The learning deltas by status, and the catch-up deployments by result."""
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


def _rollout_runner_families(status: Status) -> Iterable[Family]:
    """This replica's rollout runner, when it has one."""
    rollouts: Mapping[str, Any] | None = status.get("rollouts")
    if rollouts:
        yield from _numbers(
            CounterMetricFamily, "edge_agent_hub_rollout", ROLLOUT_RUNNER_COUNTERS, rollouts
        )
