"""The daemon's status: the JSON file ``edge-agent status`` reads, the systemd STATUS= line and
the demo's periodic report, all rendered from one read-only view of the running daemon.

:class:`StatusView` is what they read (the service implements it); nothing here changes the
daemon or imports its service module. The file is rewritten atomically every
``status_interval_s`` (tmpfs under systemd's ``RuntimeDirectory=``: no fsync); a write the storage
refuses is counted (part ``status`` of the daemon's :class:`~edge_agent.state_faults.StateFaults`,
logged at most once a minute) and tried again at the next interval, and anything that is not a
file in its place is moved aside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent import __version__
from edge_agent.config.daemon import DaemonConfig
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.core.budget import MemoryBudget, RssSampler, format_bytes
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.protection import Protection
from edge_agent.daemon.scheduler import TickClock, TickStats
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.fsutil import is_storage_error, not_a_file, write_atomic
from edge_agent.service.metrics import Metrics
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:  # imported only by a daemon with [mqtt] enabled
    from edge_agent.coordination.runtime import CoordinationRuntime
    from edge_agent.daemon.uplink import FleetUplink

logger = logging.getLogger(__name__)


class DeploymentStats(Protocol):
    """The node's deployment, as the status file shows it."""

    def stats(self) -> dict[str, Any]: ...


class StatusView(Protocol):
    """What the status file, the STATUS= line and the report show of the running daemon."""

    config: DaemonConfig
    config_digest: str  # config_digest(config), kept with it
    config_path: Path | None
    profile: FirmwareProfile
    budget: MemoryBudget
    groups: list[GroupRuntime]
    rss: RssSampler
    stats: TickStats
    clock: TickClock
    base_hz: float
    started_wall: float
    started_mono: float
    protection: Protection
    snapshots: SnapshotStore
    last_snapshot: dict[str, Any] | None
    restored_from: str | None
    reloads_ok: int
    reloads_refused: int
    last_reload_error: str
    metrics: Metrics
    events: list[dict[str, Any]]
    uplink: FleetUplink | None
    coordination: CoordinationRuntime | None
    state_faults: StateFaults

    @property
    def ab_switch(self) -> DeploymentStats: ...

    @property
    def state_name(self) -> str: ...

    @property
    def total_agents(self) -> int: ...

    @property
    def overlay_details(self) -> list[str]: ...


def status_path(config: DaemonConfig) -> Path:
    """``[daemon] status_file``, else ``$RUNTIME_DIRECTORY/status.json`` under systemd, else
    ``{state_dir}/status.json``."""
    if config.daemon.status_file is not None:
        return config.daemon.status_file
    runtime = os.environ.get("RUNTIME_DIRECTORY")  # systemd RuntimeDirectory= (tmpfs)
    if runtime:
        return Path(runtime.split(":")[0]) / "status.json"
    return config.daemon.status_path


def config_digest(config: DaemonConfig) -> str:
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def status(d: StatusView) -> dict[str, Any]:
    """The status file's content."""
    p50, p99 = d.stats.percentiles_ms()
    return {
        "pid": os.getpid(),
        "version": __version__,
        "state": d.state_name,
        "updated_at": time.time(),
        "started_at": d.started_wall,
        "uptime_s": round(time.monotonic() - d.started_mono, 3),
        "config": str(d.config_path) if d.config_path else "(embedded default)",
        "config_digest": d.config_digest,
        "profile": d.profile.name,
        "budget": d.budget.report(),
        "rss_bytes": d.rss.last,
        "rss_peak_bytes": d.rss.peak,
        "soft_limit_bytes": d.profile.soft_limit_bytes,
        "tick": {
            "hz": round(d.clock.hz, 4),
            "base_hz": d.base_hz,
            "ticks": d.stats.ticks,
            "p50_ms": round(p50, 4),
            "p99_ms": round(p99, 4),
            "overruns": d.stats.overruns,
            "missed": d.stats.missed,
        },
        "agents": d.total_agents,
        "groups": [g.describe() for g in d.groups],
        "thermal": {
            "temp_c": d.protection.thermal.last_temp_c,
            "throttled": d.protection.thermal.throttled,
            "throttle_c": d.protection.thermal.throttle_c,
            "critical": d.protection.thermal.critical,
            "critical_c": d.protection.thermal.critical_c,
        },
        # The Raspberry Pi firmware's under-voltage and throttling flags; None elsewhere.
        "power": None if d.protection.power is None else d.protection.power.as_dict(),
        "snapshots": {
            **d.snapshots.stats(),
            "last": d.last_snapshot,
            "restored_from": d.restored_from,
        },
        "reloads": {
            "ok": d.reloads_ok,
            "refused": d.reloads_refused,
            "last_error": d.last_reload_error,
        },
        "counters": d.metrics.values(),
        "degradations": d.protection.degradations[-10:],
        "events": d.events[-10:],
        "fleet": None if d.uplink is None else d.uplink.status(),
        "coordination": None if d.coordination is None else d.coordination.status(),
        "commands": None if d.uplink is None else d.uplink.commands.stats(),
        "deploy": d.ab_switch.stats(),
        "overlay_problems": d.overlay_details,
        "state_files": d.state_faults.status(),
    }


def write_status(path: Path, data: dict[str, Any], faults: StateFaults | None = None) -> None:
    """Atomically replace the status file (tmpfs under systemd; no fsync needed). Never raises:
    a refused write is counted in ``faults`` (part ``status``); a directory (or anything but a
    file) in its place is moved aside."""
    faults = faults if faults is not None else StateFaults()
    payload = json.dumps(data, default=str).encode()
    for _ in range(2):
        try:
            write_atomic(path, payload, durable=False, mkdir=True)
        except OSError as err:
            if (
                not is_storage_error(err)
                and not_a_file(path)
                and faults.move_aside("status", path, "not a regular file") is not None
            ):
                continue
            faults.storage_error("status", err, f"write the status file {path}")
            return
        faults.storage_ok("status")
        return


def status_line(d: StatusView) -> str:
    """The systemd STATUS= line."""
    p50, p99 = d.stats.percentiles_ms()
    state = d.state_faults.status()
    failing = state["storage_failing"]
    storage = (
        f", STORAGE ERRORS {state['storage_errors_total']} ({', '.join(failing)})"
        if failing
        else ""
    )
    return (
        f"{d.state_name}: {d.total_agents} agents in {len(d.groups)} group(s), "
        f"{d.clock.hz:.1f} Hz, tick p50 {p50:.2f} ms p99 {p99:.2f} ms, "
        f"overruns {d.stats.overruns}, budget {format_bytes(d.budget.used)}"
        f"/{format_bytes(d.budget.total)}{storage}"
    )


def report(d: StatusView) -> None:
    """The demo's periodic view: what agents do and what they cost. The budget is what the
    groups reserved (their worst case), RSS what the process holds now; a group's line says what
    its agents achieved beside what its world compares that to
    (:meth:`~edge_agent.sim.BatchEnv.references`)."""
    p50, p99 = d.stats.percentiles_ms()
    rss = d.rss.last or d.rss.sample()
    logger.info(
        "tick %d @ %.1f Hz | p50 %.2f ms p99 %.2f ms | overruns %d | RSS %s | budget %s "
        "reserved of %s",
        d.stats.ticks,
        d.clock.hz,
        p50,
        p99,
        d.stats.overruns,
        format_bytes(rss),
        format_bytes(d.budget.used),
        format_bytes(d.budget.total),
    )
    for g in d.groups:
        cost = g.footprint()
        logger.info(
            "  %-8s %6d agents %s | %s B/agent + %s shared | %s",
            g.name,
            cost.agents,
            cost.precision,
            cost.bytes_per_agent,
            format_bytes(cost.shared_bytes),
            g.report_line(),
        )
