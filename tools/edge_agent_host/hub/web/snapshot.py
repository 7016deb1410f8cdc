"""What the page, ``/api/fleet.json`` and ``/metrics`` show: the fleet as the service's loop last
read it.

The service's loop (the only database user on its thread) builds a :class:`FleetSnapshot` every
``[hub] status_interval_s`` -- every node with its newest telemetry, the recent rollouts -- and
hands it over by swapping one reference (:class:`~.server.WebServer`), so a scrape or a page
never touches the database nor waits for it.

Presence (``presence`` in the JSON, ``edge_agent_hub_nodes{state}``) is the fleet tables' rule,
:func:`edge_agent_host.fleet.presence.presence`: ``online``, ``silent`` (its retained state says
online, but nothing live came for ``[hub] silent_after_s``: a node the broker locked out),
``offline``, ``unknown``.

A node's **condition**, at a glance (the page's dot; ``health`` in the JSON, its filter and the
``edge_agent_hub_nodes_health`` metric: the names scripts and dashboards read, kept; "health"
itself is the groups' measures): **red** not online (offline, silent,
unknown), or no telemetry for 3 x its period (30 s by default); **amber** RSS over 90 % of the
budget, tick p99 over 100 ms, CPU above 75 °C, an outbox holding over 1,000 messages, or a
group whose observations are out of its bundle's calibrated range (its ``input_out_of_range``
alert raised: a faulty sensor, docs/neural-agents.md); **green** otherwise.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge_agent_host.fleet.presence import SILENT_AFTER_S, presence
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.web.fleet_view import bundles_of, deployments_by_node, rollout_failures

__all__ = [
    "KEY_MEASURES",
    "FleetSnapshot",
    "GroupHealthHistory",
    "build_snapshot",
    "condition_of",
    "group_summaries",
    "team_summary",
]

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
    #: Team tasks as the online nodes report them (:func:`team_summary`).
    teams: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "taken": self.taken,
            "hub": self.hub,
            "nodes": self.nodes,
            "rollouts": self.rollouts,
            "groups": self.groups,
            "learning_rounds": self.learning_rounds,
            "teams": self.teams,
        }


#: A node's team counters (its ``coord.*`` telemetry, docs/coordination.md) as the snapshot
#: keeps them.
TEAM_COUNTERS: Final = {
    "teams_open": "coord.teams_open",
    "teams_formed": "coord.teams_formed",
    "team_slots_vacant": "coord.team_slots_vacant",
    "team_repairs": "coord.team_repairs",
    "team_form_s_max": "coord.team_form_s_max",
    "team_repair_s_max": "coord.team_repair_s_max",
}


def team_summary(nodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The fleet's team tasks from its online nodes' counters: every node holds the same award,
    so a figure is the largest any node reports (teams formed and repairs: since that node's
    daemon started; formation and repair times: the worst it saw). Empty without teams."""
    live = [n for n in nodes if n.get("online") and n.get("teams_open") is not None]
    if not any(n.get("teams_open") or n.get("teams_formed") for n in live):
        return {}
    out: dict[str, Any] = {"nodes": len(live)}
    for key in TEAM_COUNTERS:
        values = [float(n[key]) for n in live if n.get(key) is not None]
        out[key] = max(values) if values else None
    return out


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
    return [
        _group_summary(group, windows, now, history) for group, windows in sorted(by_group.items())
    ]


def _group_summary(
    group: str,
    windows: list[Mapping[str, Any]],
    now: float,
    history: GroupHealthHistory | None,
) -> dict[str, Any]:
    """One group's summary over its nodes' newest windows (:func:`group_summaries`)."""
    reported = {m for h in windows for m in (h.get("measures") or {})}
    key = next((m for m in KEY_MEASURES if m in reported), None)
    means = [float(h["measures"][key]["mean"]) for h in windows if key in (h.get("measures") or {})]
    mean = sum(means) / len(means) if means else None
    points: list[tuple[float, float]] = []
    if history is not None and mean is not None:
        points = history.add(group, now, mean)
    return {
        "group": group,
        "nodes": len(windows),
        "models": sorted({str(h.get("model")) for h in windows}),
        "measure": key,
        "mean": mean,
        "drift_alarms": sum(bool((h.get("drift") or {}).get("alarm")) for h in windows),
        "history": [[ts, v] for ts, v in points],
    }


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


def condition_of(node: Mapping[str, Any], now: float) -> str:
    """The node's condition: green / amber / red (the module docstring's rule)."""
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
    DatabaseUnavailableError); each node's presence as of ``now`` (``silent_after_s``: ``[hub]
    silent_after_s``); each group's health summary (a point more in ``history``'s plots)."""
    now = time.time() if now is None else now
    rollouts, deployments = _recent_rollouts(db)
    group_health = _group_health_by_node(db)
    nodes = [
        _node_row(row, deployments, group_health, silent_after_s, now) for row in db.fleet()
    ]
    return FleetSnapshot(
        taken=now,
        hub=dict(hub),
        nodes=nodes,
        rollouts=rollouts,
        groups=group_summaries(nodes, now, history),
        learning_rounds=LearningStore(db).recent_rounds(limit=10),
        teams=team_summary(nodes),
    )


def _recent_rollouts(
    db: HubDatabase,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The newest 10 rollouts, each with its failed nodes, and each node's row in the newest one
    that names it (the page's per-node deployment column, :mod:`.fleet_view`)."""
    store = RolloutStore(db)
    summaries = [store.get(rollout_id).summary() for rollout_id in store.ids(limit=10)]
    deployments = deployments_by_node(summaries)
    for summary in summaries:
        summary["failed_nodes"] = rollout_failures(summary)
        summary.pop("nodes", None)
    return summaries, deployments


def _group_health_by_node(db: HubDatabase) -> dict[str, dict[str, Any]]:
    """Each node's groups' newest health window (docs/health.md), by node and group."""
    out: dict[str, dict[str, Any]] = {}
    for h in db.latest_health():
        out.setdefault(h["node"], {})[h["group"]] = {
            k: h.get(k) for k in ("ts", "window_s", "model", "agent_steps", "measures", "drift")
        }
    return out


def _node_row(
    row: Mapping[str, Any],
    deployments: Mapping[str, dict[str, Any]],
    group_health: Mapping[str, dict[str, Any]],
    silent_after_s: float,
    now: float,
) -> dict[str, Any]:
    """One node as the page, the JSON and the metrics show it, from its registry row."""
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
        # Team tasks as the node's award has them (docs/coordination.md).
        **{key: _counter(t, counter) for key, counter in TEAM_COUNTERS.items()},
    }
    node["health"] = condition_of(node, now)  # the API's name of a node's condition
    return node
