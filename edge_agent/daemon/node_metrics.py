"""Every number the daemon reports, registered once: the status file, telemetry and Prometheus.

:func:`make_metrics` builds the daemon's :class:`~edge_agent.service.metrics.Metrics` registry
from one read-only view of the running daemon (:class:`MetricsView`, which the service
implements): its own numbers (daemon, tick, fleet, outbox, commands, deployments, MQTT input,
snapshots, power, sd_notify, state files, coordination), every group's (:meth:`GroupRuntime.metrics
<edge_agent.daemon.group_runtime.GroupRuntime.metrics>`) and the families of numbers the groups'
kinds add up over the node (:func:`register_families`: planning, learning, declared by the kind,
:class:`~edge_agent.core.contract.MetricFamily`). The readers read the view when the registry
is read (at most about once a second, on the loop's thread), so a reload's new groups and budget
are what they see. Nothing here changes the daemon or imports its service module;
:mod:`edge_agent.daemon.metric_help` says what each number means.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from edge_agent import __version__
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.core.budget import MemoryBudget, RssSampler
from edge_agent.core.health_window import HealthSummary
from edge_agent.daemon import metric_help
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.protection import Protection
from edge_agent.daemon.scheduler import TickClock, TickStats
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.service.metrics import Metrics
from edge_agent.service.systemd import SdNotifier
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:  # imported only by a daemon with [mqtt] enabled
    from edge_agent.coordination.runtime import CoordinationRuntime
    from edge_agent.core.contract import MetricFamily
    from edge_agent.daemon.uplink import FleetUplink

__all__ = [
    "DAEMON_GAUGES",
    "GROUP_GAUGES",
    "SNAPSHOT_GAUGES",
    "TICK_GAUGES",
    "DeploymentCounters",
    "MetricsView",
    "make_metrics",
    "register_families",
]

_PYTHON: Final = ".".join(str(n) for n in sys.version_info[:3])

#: The keys of each metrics reader that are gauges (the others only grow: counters).
DAEMON_GAUGES: Final = (
    "started_at",
    "uptime_s",
    "rss_bytes",
    "rss_peak_bytes",
    "budget_used_bytes",
    "budget_total_bytes",
    "agents",
    "groups",
    "paused_groups",
    "cpu_temp_c",
    "throttled",
    "thermal_critical",
)
TICK_GAUGES: Final = ("hz", "p50_ms", "p99_ms")
SNAPSHOT_GAUGES: Final = (
    "last_write_time",
    "last_write_bytes",
    "last_duration_s",
    "last_seq",
    "writes_in_last_hour",
    "max_writes_per_hour",
)
#: Every group's numbers that are gauges (a kind's own: its :class:`MetricFamily`).
GROUP_GAUGES: Final = ("agents", "paused", "bytes_per_agent")


class DeploymentCounters(Protocol):
    """The node's deployment, as the metrics see it."""

    def counters(self) -> dict[str, int]: ...


class MetricsView(Protocol):
    """What the metrics read of the running daemon (on the loop's thread)."""

    profile: FirmwareProfile
    budget: MemoryBudget
    groups: list[GroupRuntime]
    rss: RssSampler
    stats: TickStats
    clock: TickClock
    started_wall: float
    started_mono: float
    protection: Protection
    snapshots: SnapshotStore
    notifier: SdNotifier
    reloads_ok: int
    reloads_refused: int
    uplink: FleetUplink | None
    coordination: CoordinationRuntime | None
    state_faults: StateFaults

    @property
    def ab_switch(self) -> DeploymentCounters: ...

    @property
    def total_agents(self) -> int: ...


def make_metrics(d: MetricsView, families: set[str]) -> Metrics:
    """Every number the status file, telemetry and the Prometheus text file report, read from
    ``d``; the families of the groups ``d`` runs now are registered too, their names added to
    ``families`` (later ones: :func:`register_families`)."""
    metrics = Metrics()
    metrics.register_info(
        "build",
        lambda: {"version": __version__, "python": _PYTHON},
        help="The edge-agent version the daemon runs, and its Python.",
    )
    metrics.register_info(
        "profile",
        lambda: {"profile": d.profile.name},
        help="The firmware profile the daemon runs with.",
    )
    metrics.register(
        "daemon",
        lambda: _daemon_metrics(d),
        gauges=DAEMON_GAUGES,
        help="daemon",
        describe=metric_help.DAEMON,
    )
    metrics.register(
        "tick",
        lambda: _tick_metrics(d),
        gauges=TICK_GAUGES,
        help="tick loop",
        describe=metric_help.TICK,
    )
    metrics.register_summary(
        "tick_duration_seconds", lambda: _tick_summary(d), help=metric_help.TICK_DURATION
    )
    metrics.register(
        "fleet",
        lambda: {} if d.uplink is None else d.uplink.metrics(),
        help="fleet uplink",
        describe=metric_help.FLEET,
    )
    metrics.register(
        "outbox",
        lambda: _outbox_exposure(d),
        gauges=("*",),
        help="outbox messages a crash would lose now",
    )
    metrics.register(
        "commands",
        lambda: {} if d.uplink is None else d.uplink.commands.stats(),
        gauges=("pending", "nonces"),
        help="hub commands",
        describe=metric_help.COMMANDS,
        parts=metric_help.COMMAND_PARTS,
    )
    metrics.register(
        "deploy",
        d.ab_switch.counters,
        help="deployments",
        describe=metric_help.DEPLOY,
    )
    metrics.register("io", lambda: _io_metrics(d), help="MQTT agent input", describe=metric_help.IO)
    metrics.register(
        "snapshots",
        d.snapshots.stats,
        gauges=SNAPSHOT_GAUGES,
        help="snapshots",
        describe=metric_help.SNAPSHOTS,
    )
    metrics.register(
        "power",
        lambda: {} if d.protection.power is None else d.protection.power.as_dict(),
        gauges=("*",),
        help="Raspberry Pi firmware flags",
        describe=metric_help.POWER,
    )
    metrics.register(
        "systemd",
        d.notifier.stats,
        gauges=("enabled",),
        help="sd_notify",
        describe=metric_help.SYSTEMD,
    )
    metrics.register(
        "state",
        d.state_faults.metrics,
        gauges=("storage_failing",),
        help="state files moved aside and storage errors",
        describe=metric_help.STATE,
        parts=metric_help.STATE_PARTS,
    )
    metrics.register(
        "",
        lambda: {} if d.coordination is None else d.coordination.telemetry_counters(),
        gauges=("*",),
        help="coordination",
    )
    metrics.register_groups(
        lambda: {g.name: g.metrics() for g in d.groups},
        gauges=GROUP_GAUGES,
        help="group",
        describe=metric_help.GROUP,
    )
    for name, read, help_ in _health_families(d):
        metrics.register_labelled(name, read, help=help_)
    register_families(metrics, d, families)
    return metrics


def _health_families(
    d: MetricsView,
) -> list[tuple[str, Callable[[], list[tuple[dict[str, str], object]]], str]]:
    """The groups' health over their last reporting window (docs/health.md), labelled by group
    and measure (a closed vocabulary: the label sets are bounded)."""

    def per_measure(field: str) -> Callable[[], list[tuple[dict[str, str], object]]]:
        def read() -> list[tuple[dict[str, str], object]]:
            return [
                ({"group": g.name, "measure": name}, getattr(stats, field))
                for g in d.groups
                if g.health is not None
                for name, stats in g.health.measures.items()
            ]

        return read

    def per_group(value: Callable[[HealthSummary], object]) -> Callable[
        [], list[tuple[dict[str, str], object]]
    ]:
        def read() -> list[tuple[dict[str, str], object]]:
            return [
                ({"group": g.name}, value(g.health)) for g in d.groups if g.health is not None
            ]

        return read

    def drift(field: str) -> Callable[[HealthSummary], object]:
        return lambda h: None if h.drift is None else getattr(h.drift, field)

    return [
        ("group_health_mean", per_measure("mean"), metric_help.HEALTH["mean"]),
        ("group_health_p95", per_measure("p95"), metric_help.HEALTH["p95"]),
        ("group_health_samples", per_measure("n"), metric_help.HEALTH["samples"]),
        ("group_health_z", per_measure("z"), metric_help.HEALTH["z"]),
        ("group_health_agent_steps", per_group(lambda h: h.agent_steps),
         metric_help.HEALTH["agent_steps"]),
        ("group_drift_alarm", per_group(drift("alarm")), metric_help.HEALTH["drift_alarm"]),
        ("group_drift_statistic", per_group(drift("statistic")),
         metric_help.HEALTH["drift_statistic"]),
        ("group_drift_threshold", per_group(drift("threshold")),
         metric_help.HEALTH["drift_threshold"]),
    ]


def register_families(metrics: Metrics, d: MetricsView, registered: set[str]) -> None:
    """A reader for each family of numbers the groups' kinds add up over the node (planning,
    learning: :class:`~edge_agent.core.contract.MetricFamily`) that is not in ``registered``
    yet, the first time a group of such a kind runs (at start, or after a reload); the names
    registered are added to ``registered``."""
    for g in d.groups:
        for family in g.metric_families():
            if family.name in registered:
                continue
            registered.add(family.name)
            metrics.register(
                family.name,
                _totals_of(family, d),
                gauges=family.gauges,
                help=family.help,
                describe=family.describe,
            )
            metrics.add_group_keys(family.group_gauges, family.group_describe)


def _totals_of(family: MetricFamily, d: MetricsView) -> Callable[[], dict[str, float | int]]:
    return lambda: family.total([g.metrics() for g in d.groups])


def _daemon_metrics(d: MetricsView) -> dict[str, object]:
    thermal = d.protection.thermal
    return {
        "started_at": d.started_wall,
        "uptime_s": round(time.monotonic() - d.started_mono, 3),
        "rss_bytes": d.rss.last,
        "rss_peak_bytes": d.rss.peak,
        "budget_used_bytes": d.budget.used,
        "budget_total_bytes": d.budget.total,
        "agents": d.total_agents,
        "groups": len(d.groups),
        "paused_groups": sum(1 for g in d.groups if g.paused),
        "cpu_temp_c": thermal.last_temp_c,
        "throttled": thermal.throttled,
        "thermal_critical": thermal.critical,
        "reloads_ok": d.reloads_ok,
        "reloads_refused": d.reloads_refused,
    }


def _tick_metrics(d: MetricsView) -> dict[str, object]:
    p50, p99 = d.stats.percentiles_ms()
    return {
        "hz": round(d.clock.hz, 4),
        "ticks": d.stats.ticks,
        "overruns": d.stats.overruns,
        "missed": d.stats.missed,
        "p50_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
    }


def _tick_summary(d: MetricsView) -> tuple[dict[float, float], float, int]:
    p50, p99 = d.stats.percentiles_ms()
    return {0.5: p50 / 1e3, 0.99: p99 / 1e3}, d.stats.busy_s, d.stats.ticks


def _outbox_exposure(d: MetricsView) -> dict[str, Any]:
    """``uncommitted_rows`` and ``uncommitted_s`` of the outbox (telemetry, the status)."""
    if d.uplink is None:
        return {}
    stats = d.uplink.outbox.stats()
    return {k: stats[k] for k in ("uncommitted_rows", "uncommitted_s")}


def _io_metrics(d: MetricsView) -> dict[str, int]:
    io = dict.fromkeys(("obs_rows", "rows_rejected", "batches_rejected"), 0)
    io["stale_agent_ticks"] = io["subscriptions_refused"] = 0
    for g in d.groups:
        for name, value in g.input_counters().items():
            io[name] = io.get(name, 0) + value
    return io
