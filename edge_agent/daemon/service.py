"""edge-agentd: the device daemon's lifecycle.

States: ``STARTING`` (load config and profile, lock the state directory (one daemon per
directory: :mod:`edge_agent.daemon.statelock`), complete or undo an interrupted deployment, admit
the plan against the budget, build groups, restore the last good snapshot, warm up) ->
``RUNNING`` (the tick loop) -> ``STOPPING`` (final snapshot, fleet link stopped) -> ``STOPPED``.
``SIGHUP`` reloads the config between ticks: an invalid new config is refused and logged, and the
old one keeps running. ``SIGTERM``/``SIGINT`` stop cleanly.

One tick: wait for the monotonic deadline; then, with ``[mqtt] enabled``, the fleet's turn
between ticks (handle connection events and acknowledgements, take incoming messages, apply at
most a few hub commands, advance a deployment); then for every running group (agents sharing a
model) one batched step: observation from its source -> infer, plan, act -> action to its sink;
then telemetry when due and the outbox pumped and committed. Then record latency, feed the
watchdog only if the tick completed, and at their own intervals write the status file, sample RSS
(degrade above the soft limit), read the temperature (throttle above the profile's limit) and
write a snapshot (bounded writes per hour).

The fleet link never blocks start-up: it connects in the background once the daemon is READY,
and everything published meanwhile waits in the durable outbox. ``docs/fleet.md`` describes the
commands, deployments and telemetry.

The service owns the state machine and the loop, and hands each job to its own module: admission
(:mod:`~edge_agent.daemon.admission`), the groups (:mod:`~edge_agent.daemon.group_runtime`), their
state in snapshots (:mod:`~edge_agent.daemon.snapshots.groups`), the numbers
(:mod:`~edge_agent.daemon.node_metrics`), the status (:mod:`~edge_agent.daemon.status`), the
node's deployments (:mod:`~edge_agent.daemon.ab_switch`), memory and temperature
(:mod:`~edge_agent.daemon.protection`) and, with ``[mqtt] enabled``, the fleet
(:mod:`~edge_agent.daemon.uplink`, :mod:`~edge_agent.daemon.handlers`).

Runtime state heals itself: every store in the state directory reports to one
:class:`~edge_agent.state_faults.StateFaults`; damaged state is moved aside and started fresh
(a ``state_recovered`` event), a full disk is counted (a ``storage_error`` event at most once a
minute per part) and never stops the ticks or the reconnects. Only a refused configuration stops
the process (``edge-agent run`` exits 2; see ``docs/deployment.md``).
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from edge_agent import __version__
from edge_agent.config.daemon import (
    ConfigFile,
    DaemonConfig,
    expand_path,
    resolve_profile,
)
from edge_agent.config.isolated import read_config_isolated
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.config.toml_lines import TomlDocument
from edge_agent.core.budget import MemoryBudget, RssSampler, format_bytes
from edge_agent.core.contract import TickWindow
from edge_agent.daemon import discovery
from edge_agent.daemon import status as status_view
from edge_agent.daemon.ab_switch import ABSwitch
from edge_agent.daemon.admission import OverlayProblem, admit, check_state_dir
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.node_metrics import make_metrics, register_families
from edge_agent.daemon.protection import Protection
from edge_agent.daemon.scheduler import TickClock, TickStats
from edge_agent.daemon.snapshots.groups import restore_groups, save_groups
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.daemon.statelock import StateDirLock
from edge_agent.daemon.thermal import THROTTLED_GLOB, read_cpu_temp_c, read_firmware_flags
from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    InputError,
    SnapshotError,
)
from edge_agent.service.periodic import Periodic
from edge_agent.service.systemd import SdNotifier, WatchdogGate
from edge_agent.state_faults import Recovery, StateFaults

if TYPE_CHECKING:  # the fleet stack is imported only by a daemon with [mqtt] enabled
    from edge_agent.bundle.signing import TrustedKeys
    from edge_agent.coordination.runtime import CoordinationRuntime, GroupBinding
    from edge_agent.daemon.learning_reports import LearningReporter
    from edge_agent.daemon.uplink import FleetUplink
    from edge_agent.fleet.deploy import Report
    from edge_agent.fleet.link import FleetLink
    from edge_agent.fleet.protocol import Birth

logger = logging.getLogger(__name__)

CAPABILITIES: Final = ("commands", "ota", "mqtt_io")

class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Daemon:
    """The running service. Build with :meth:`from_config`, then :meth:`run`."""

    def __init__(
        self,
        source: ConfigFile,
        *,
        config_path: Path | None,
        notifier: SdNotifier | None = None,
        status_interval_s: float = 1.0,
        report_interval_s: float = 0.0,
        firmware_flags_glob: str = THROTTLED_GLOB,
    ) -> None:
        # Refuse a config its profile does not allow before the state directory is touched;
        # admit() below repeats this check with the rest (models, key files, memory plan).
        resolve_profile(source)
        config = source.config
        self.config = config
        #: The status file's ``config_digest`` of ``config``: computed once per config (a reload
        #: replaces it), not at every status write (2-3 ms of a 500-agent daemon's second).
        self.config_digest = status_view.config_digest(config)
        self.config_path = config_path
        #: Where ``config`` came from, for file:line in problems found later.
        self.source = source
        self.notifier = notifier or SdNotifier()
        self.state = State.STARTING
        self.stop_event = threading.Event()
        self._reload_requested = False
        self.status_interval_s = status_interval_s
        self.report_interval_s = report_interval_s
        #: Where the Raspberry Pi firmware's flags are read (:func:`read_firmware_flags`).
        self.firmware_flags_glob = firmware_flags_glob
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.reloads_ok = 0
        self.prometheus_errors = 0
        #: When the groups' current health reporting window began (monotonic).
        self._health_window_start = self.started_mono
        self.reloads_refused = 0
        self.last_reload_error = ""
        self.stats = TickStats()
        self.rss = RssSampler()
        self.state_dir = Path(config.daemon.state_dir)
        check_state_dir(source, create=True)
        # One daemon per state directory, taken before anything in it is read or written.
        self.state_lock = StateDirLock.acquire(self.state_dir)
        try:
            self._open(source)
        except BaseException:
            self.state_lock.release()
            raise

    def _open(self, source: ConfigFile) -> None:
        """The rest of the start, under the state directory's lock: an interrupted deployment,
        admission, the stores, the clock, the metrics and the fleet link."""
        config = source.config
        #: What became of the files in state_dir: parts moved aside, storage errors.
        self.state_faults = StateFaults()
        # A deployment interrupted by a crash is completed or undone before groups are built.
        self.ab_switch = ABSwitch(
            self.state_dir, report=self._publish_deploy_reports, faults=self.state_faults
        )
        self.overlay_problems: list[OverlayProblem] = []
        self.profile, self.budget, self.groups = self._admit(source)
        profile = self.profile
        self.protection = Protection(profile, self.rss, self._event)
        self.snapshots = SnapshotStore(
            self.state_dir / "snapshots",
            max_writes_per_hour=profile.max_snapshot_writes_per_hour,
            faults=self.state_faults,
        )
        self.status_path = status_view.status_path(config)
        self.base_hz = config.daemon.tick_hz_for(profile)
        self.clock = TickClock(self.base_hz, self.stop_event)
        self.watchdog = WatchdogGate(
            tick_period_s=1.0 / self.base_hz,
            watchdog_interval_s=self.notifier.watchdog_interval() or profile.watchdog_interval_s,
        )
        self.restored_from: str | None = None
        self._announced: Path | None = None
        self.last_snapshot: dict[str, Any] | None = None
        self.uplink: FleetUplink | None = None
        #: Publishes what the learning groups learned (docs/fleet-learning.md), with MQTT.
        self.learning_reports: LearningReporter | None = None
        self.coordination: CoordinationRuntime | None = None
        #: The families of numbers the groups' kinds add up, registered so far.
        self._families: set[str] = set()
        self.metrics = make_metrics(self, self._families)
        if config.mqtt.enabled:
            self._open_fleet(config)
        self.ab_switch.bind(self)
        if config.mqtt.enabled:
            self.rebirth()  # the birth says the bundle keys: the switch's once it is bound
        for problem in self.overlay_problems:
            severity = "warning" if problem.superseded else "error"
            self._event("overlay_ignored", severity, problem.detail, group=problem.group)
        self._report_state()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DaemonConfig, config_path: Path | None, **kwargs: Any) -> Daemon:
        """A daemon on a config built in code (problems are reported without a line)."""
        source = ConfigFile(config, TomlDocument.parse("", "<config>"))
        return cls.from_file(source, config_path, **kwargs)

    @classmethod
    def from_file(cls, source: ConfigFile, config_path: Path | None, **kwargs: Any) -> Daemon:
        """A daemon on a config read by :func:`edge_agent.config.daemon.read_config`: the same
        checks as ``check-config`` and a reload (:func:`~edge_agent.daemon.admission.admit`), each
        problem at its line."""
        return cls(source, config_path=config_path, **kwargs)

    def _admit(
        self, source: ConfigFile
    ) -> tuple[FirmwareProfile, MemoryBudget, list[GroupRuntime]]:
        """:func:`~edge_agent.daemon.admission.admit` with the deployed bundles applied: profile,
        fresh budget and groups. Drops overlay entries the config superseded."""
        problems: list[OverlayProblem] = []
        admitted = admit(source, overlay=self.ab_switch.deployed_bundles(), problems=problems)
        for problem in problems:
            logger.error("%s", problem.detail)
            if problem.superseded:
                try:
                    self.ab_switch.forget(problem.group)
                except OSError as err:  # dropped in memory; the next save writes it
                    self.state_faults.storage_error("overlay", err, "drop a superseded entry")
        self.overlay_problems = problems
        return admitted

    def _open_fleet(self, config: DaemonConfig) -> None:
        """The fleet uplink and, when a group takes part, coordination (no connection yet)."""
        from edge_agent.daemon.handlers import CommandHandlers  # noqa: PLC0415 - [mqtt] only
        from edge_agent.daemon.learning_reports import LearningReporter  # noqa: PLC0415
        from edge_agent.daemon.uplink import FleetUplink  # noqa: PLC0415

        uplink = FleetUplink(
            config,
            self.source,
            self.state_dir,
            birth=self._birth(),
            handlers=CommandHandlers(self).table(),
            event=self._event,
            bundles=self.ab_switch,
            faults=self.state_faults,
        )
        self.uplink = uplink
        self.learning_reports = LearningReporter(self.state_dir, uplink, self.state_faults)
        self._open_coordination(config, uplink.link, uplink.hub_keys)
        uplink.coordination = self.coordination
        for g in self.groups:
            g.coordinate(self.coordination)
        if self.coordination is not None:
            uplink.set_birth(self._birth())  # says "coordination"; sent once connected
        uplink.bind_sources(self.groups)

    def _coordination_groups(self) -> dict[str, GroupBinding]:
        """The groups with a coordination table, as they are now (the runtime follows them;
        admission lets only kinds that share beliefs have one)."""
        bindings: dict[str, GroupBinding] = {}
        for g in self.groups:
            binding = g.coordination_binding()
            if binding is not None:
                bindings[g.name] = binding
        return bindings

    def _open_coordination(
        self, config: DaemonConfig, link: FleetLink, hub_keys: TrustedKeys | None
    ) -> None:
        """The coordination runtime, when a group takes part (reserves its memory first). The
        hub keys are the fleet's authority over task ids: an announcer whose task key is one of
        them owns every id it announces (``docs/coordination.md``)."""
        from edge_agent.coordination.config import CoordinationConfig, coordinates  # noqa: PLC0415

        tables = (g.config.coordination for g in self.groups)
        if not coordinates(config.coordination, tables, config.mqtt.enabled):
            return  # the engine is never imported
        from edge_agent.coordination.runtime import CoordinationRuntime  # noqa: PLC0415
        from edge_agent.fleet.protocol import clock_synced  # noqa: PLC0415

        try:
            self.coordination = CoordinationRuntime(
                config.coordination or CoordinationConfig(),
                link,
                self._coordination_groups,
                tick_period_s=1.0 / self.base_hz,
                budget=lambda: self.budget,
                clock_synced=clock_synced,
                authorities=hub_keys.raw_keys() if hub_keys is not None else (),
            )
        except InputError as err:
            raise ConfigError(f"[groups.coordination]: {err}", path=None) from err

    # -- signals ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping after a final snapshot", signal.Signals(signum).name)
        self._wake()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake()  # wake the clock; the loop clears it again for a reload

    def _wake(self) -> None:
        """Set the stop event for a signal handler, from a thread of its own: a handler runs on
        the main thread between two of its bytecodes, possibly while that thread holds the
        event's lock (inside ``Event.wait`` or ``clear``), and ``Event.set`` there would wait
        for the lock forever (a daemon that hung on a SIGHUP now and then)."""
        threading.Thread(target=self.stop_event.set, name="signal-wake", daemon=True).start()

    # -- lifecycle ----------------------------------------------------------------------------
    def restore(self) -> None:
        """Load the last good snapshot into groups whose name, model and size still match."""
        self.restored_from = restore_groups(
            self.snapshots, self.groups, self._event, self._shared_state_note()
        )

    def _shared_state_note(self) -> str:
        """For the demo in its default state directory (one per user, not per checkout), a note
        that says so and how to get a separate one; else empty."""
        if self.config_path is not None:
            return ""
        named = self.source.document.data.get("daemon", {}).get("state_dir")
        if not isinstance(named, str) or expand_path(named) != self.state_dir:
            return ""  # --state-dir, or a config built in code
        return (
            "; the demo's state_dir is shared by every checkout and run of this user "
            "(--state-dir DIR for a separate one)"
        )

    def warm_up(self) -> None:
        """Run every group's kernels once so the first real tick is not cold (the state is put
        back)."""
        for g in self.groups:
            g.warm_up()

    def snapshot(self, *, force: bool = False) -> None:
        """Write every group's state (at most the profile's writes per hour, unless ``force``);
        a failure is an event, never the tick's."""
        config = str(self.config_path) if self.config_path else "<embedded demo config>"
        try:
            info = save_groups(self.snapshots, self.groups, config, force=force)
        except (OSError, SnapshotError) as err:
            self._event("snapshot_failed", "error", str(err))
            return
        if info is not None:
            self.last_snapshot = {
                "path": str(info.path),
                "bytes": info.nbytes,
                "seconds": round(info.duration_s, 4),
                "wall_time": time.time(),
            }

    def run(self, duration_s: float | None = None) -> int:
        """Restore, warm up, READY, tick until stopped; returns the process exit code."""
        self.restore()
        self.warm_up()
        self.state = State.RUNNING
        self.notifier.ready(self._status_line())
        logger.info(
            "READY: profile %s, %d group(s), %d agents, %.1f Hz, budget %s of %s reserved",
            self.profile.name,
            len(self.groups),
            self.total_agents,
            self.clock.hz,
            format_bytes(self.budget.used),
            format_bytes(self.budget.total),
        )
        if self.uplink is not None:
            self.uplink.start()  # returns at once: the broker may be down, the agents still tick
        self._announced = discovery.announce(
            self.status_path,
            str(self.config_path) if self.config_path else "<embedded demo config>",
        )
        self._event(
            "started",
            "info",
            f"edge-agentd {__version__} started: profile {self.profile.name}, "
            f"{len(self.groups)} group(s), {self.total_agents} agents",
        )
        deadline = None if duration_s is None else time.monotonic() + duration_s
        now = time.monotonic()
        after_tick = [
            Periodic(1.0, self._check_memory, now=now),
            Periodic(5.0, self._check_thermal, now=now),
            Periodic(self.profile.snapshot_interval_s, self.snapshot, now=now, first_after=True),
            Periodic(self.status_interval_s, self._write_and_notify_status, now=now),
        ]
        if self.report_interval_s:
            after_tick.append(Periodic(self.report_interval_s, self._report, now=now))
        textfile = self.config.daemon.prometheus_textfile
        if textfile is not None:
            after_tick.append(
                Periodic(self.config.daemon.prometheus_interval_s, self._write_prometheus, now=now)
            )
        if self.learning_reports is not None:
            after_tick.append(Periodic(1.0, self._report_learning, now=now))
        telemetry = Periodic(lambda: self.telemetry_interval_s, self._publish_telemetry, now=now)
        after_tick.append(  # the groups' health windows, at the telemetry cadence, MQTT or not
            Periodic(lambda: self.telemetry_interval_s, self._close_health_windows, now=now)
        )
        self.clock.next_deadline = now
        last_end: float | None = None  # when the last tick ended (None: it failed)
        while self._next_tick():
            start = time.monotonic()
            window = TickWindow(self.clock.next_deadline, last_end)
            last_end = None
            self._fleet_before_tick()
            self._fleet_step(self._coordination_before_tick)
            failed = False
            try:
                self._tick(start, window)
            except Exception:  # the loop's boundary: log, count, keep the device alive
                logger.exception("tick failed")
                self._event("tick_failed", "error", "exception in tick; see the log")
                failed = True
            if self.uplink is not None and time.monotonic() >= telemetry.next_at:
                self._fleet_step(lambda: telemetry.run_if_due(time.monotonic()))
            self._fleet_step(self._coordination_after_tick)
            self._fleet_step(self._fleet_after_tick)
            if self.ab_switch.take_deferred_reload():
                self.reload()
            if failed:
                continue
            end = last_end = time.monotonic()
            self.stats.record(end - start, overrun=self.clock.is_overrun(end), now=end)
            self.watchdog.record_tick(end)
            if self.watchdog.should_ping(end):
                self.notifier.watchdog()
            for job in after_tick:
                job.run_if_due(end)
            if deadline is not None and end >= deadline:
                break
        return self.shutdown()

    def _next_tick(self) -> bool:
        """Wait for the next deadline; apply a requested reload between ticks (deferred while a
        deployment is watched). False when the daemon is asked to stop."""
        while not self.clock.wait(self.stats):
            if not self._reload_requested:
                return False
            self._reload_requested = False
            self.stop_event.clear()
            if not self.ab_switch.defer_reload():
                self.reload()
        return True

    def _write_and_notify_status(self) -> None:
        self._report_state()
        self.write_status()
        self.notifier.status(self._status_line())

    def _report_state(self) -> None:
        """Events for the state moved aside and the storage errors noticed since last time."""
        for notice in self.state_faults.take_notices():
            if isinstance(notice, Recovery):
                if notice.moved_to is None:
                    self._event(
                        "state_recovered",
                        "error",
                        f"{notice.part}: {notice.path} is damaged ({notice.reason}) and could "
                        "not be moved aside; running without it",
                        data={"part": notice.part, "path": notice.path, "reason": notice.reason},
                    )
                    continue
                self._event(
                    "state_recovered",
                    "warning",
                    f"{notice.part}: {notice.path} was damaged ({notice.reason}); moved aside "
                    f"to {notice.moved_to}, started fresh",
                    data={
                        "part": notice.part,
                        "path": notice.path,
                        "moved_to": notice.moved_to,
                        "reason": notice.reason,
                    },
                )
            else:
                self._event(
                    "storage_error",
                    "error",
                    f"{notice.part}: cannot {notice.action}: {notice.error} ({notice.count} "
                    "error(s) so far; running on from memory and retrying)",
                    data={"part": notice.part, "count": notice.count, "folded": notice.folded},
                )

    def shutdown(self) -> int:
        self.state = State.STOPPING
        self.notifier.stopping("final snapshot")
        reporter = self.learning_reports
        if reporter is not None:  # what was learned since the last report, into the outbox
            self._fleet_step(lambda: reporter.report_all(self.groups))
        self.snapshot(force=True)
        self._stop_fleet()
        self.write_status()
        self.state = State.STOPPED
        self.write_status()
        discovery.withdraw(self._announced)
        self.state_lock.release()
        logger.info(
            "stopped after %d ticks (%d overruns); final snapshot %s",
            self.stats.ticks,
            self.stats.overruns,
            self.last_snapshot["path"] if self.last_snapshot else "not written",
        )
        return 0

    def _stop_fleet(self) -> None:
        """After the final snapshot: last telemetry, death, drain briefly, disconnect, close."""
        if self.uplink is not None:
            self._fleet_step(self.ab_switch.publish_reports)
            self._fleet_step(self._publish_telemetry)
            self.uplink.stop()
        self.ab_switch.close()

    def _tick(self, now: float, window: TickWindow | None = None) -> None:
        """Every group's tick (``window``: when it must end, for groups that yield to it)."""
        watched = self.ab_switch.watching
        for g in self.groups:
            if g.name == watched:
                self.ab_switch.tick_watched(g, now, window)
            else:
                g.tick(now, window=window)

    @property
    def total_agents(self) -> int:
        return sum(g.n_agents for g in self.groups)

    @property
    def telemetry_interval_s(self) -> float:
        return self.config.mqtt.telemetry_interval_s or self.profile.telemetry_interval_s

    def find_group(self, name: str) -> GroupRuntime | None:
        return next((g for g in self.groups if g.name == name), None)

    # -- reload ---------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config file; keep running the old config if the new one is refused."""
        if self.config_path is None:
            logger.warning("SIGHUP ignored: running on the embedded config, nothing to reload")
            return False
        self.state = State.RELOADING
        self.notifier.reloading()
        try:
            # Plan against a fresh budget first: nothing is allocated unless the plan fits.
            source = read_config_isolated(self.config_path)
            new_config = source.config
            profile, budget, groups = self._admit(source)
        except EdgeAgentError as err:
            self.reloads_refused += 1
            self.last_reload_error = str(err)
            logger.error("reload refused, the old config keeps running:\n%s", err)
            self._event("reload_refused", "error", str(err))
            self.state = State.RUNNING
            self.notifier.ready(self._status_line())
            return False
        old = {g.name: g for g in self.groups}
        for g in groups:  # carry beliefs (and pending observations) over where unchanged
            prev = old.get(g.name)
            if prev is not None and not g.carry_over(prev) and g.learning is not None:
                logger.info(
                    "group %s: its model or size changed: learning starts from the new "
                    "model's priors", g.name,
                )
        for g in self.groups:
            g.release()
        if new_config.mqtt != self.config.mqtt:
            logger.warning("[mqtt] changes take effect at the next restart")
        if new_config.coordination != self.config.coordination:
            logger.warning("[coordination] changes take effect at the next restart")
        self.config, self.profile, self.budget, self.groups = new_config, profile, budget, groups
        self.config_digest = status_view.config_digest(new_config)
        self.source = source
        self.ab_switch.configured(new_config)
        self.set_base_rate(new_config.daemon.tick_hz_for(profile))
        for g in self.groups:
            g.coordinate(self.coordination)
        if self.uplink is not None:
            self.uplink.bind_sources(self.groups)
        register_families(self.metrics, self, self._families)
        self.rebirth()
        self.reloads_ok += 1
        self.last_reload_error = ""
        del old
        logger.info(
            "reloaded %s: %d group(s), %d agents", self.config_path, len(groups), self.total_agents
        )
        self.state = State.RUNNING
        self.notifier.ready(self._status_line())
        return True

    def set_base_rate(self, hz: float) -> None:
        self.base_hz = hz
        factor = self.profile.thermal.throttled_tick_factor
        self.clock.set_rate(hz * (factor if self.protection.thermal.throttled else 1.0))
        self.watchdog.stale_after_s = max(2.0 / (hz * factor), 2.0)

    # -- protection ---------------------------------------------------------------------------
    def _check_memory(self) -> None:
        self.protection.check_memory(self.groups)

    def _check_thermal(self) -> None:
        temp = read_cpu_temp_c(self.profile.thermal.zone_glob)
        self.protection.check_thermal(self.groups, self.clock, self.base_hz, temp)
        self.protection.check_power(read_firmware_flags(self.firmware_flags_glob))

    def _event(
        self,
        kind: str,
        severity: str,
        detail: str,
        *,
        group: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record an event for the status file and publish it to the fleet (class ``event``)."""
        now = time.time()
        self.events.append({"kind": kind, "severity": severity, "detail": detail, "time": now})
        del self.events[:-50]  # bounded: the newest 50 events
        if self.uplink is not None:
            self.uplink.publish_event(kind, severity, detail, group=group, data=data)

    # -- fleet ----------------------------------------------------------------------------------
    def _fleet_step(self, step: Callable[[], object]) -> None:
        """Run one piece of fleet work; its failure is logged and counted, never the tick's."""
        if self.uplink is not None:
            self.uplink.guarded(step)
        else:
            step()

    def _fleet_before_tick(self) -> None:
        """Between ticks: the uplink's messages and commands, then the deployment's progress."""
        if self.uplink is not None:
            self.uplink.guarded(self.uplink.before_tick)
        self._fleet_step(self.ab_switch.before_tick)
        self._fleet_step(self._report_rejected_input)
        self._fleet_step(self._report_group_alerts)

    def _coordination_before_tick(self) -> None:
        if self.coordination is not None:
            self.coordination.before_tick()

    def _coordination_after_tick(self) -> None:
        if self.coordination is not None:
            self.coordination.after_tick()

    def _report_learning(self) -> None:
        """The learning groups' deltas whose cadence is due (docs/fleet-learning.md)."""
        reporter = self.learning_reports
        if reporter is not None:
            self._fleet_step(lambda: reporter.report_due(self.groups, time.monotonic()))

    def _fleet_after_tick(self) -> None:
        if self.uplink is not None:
            self.uplink.after_tick()

    def _publish_deploy_reports(self, reports: list[Report]) -> None:
        from edge_agent.fleet.protocol import CommandResult  # noqa: PLC0415 - [mqtt] only

        for report in reports:
            if report.nonce is not None and report.code is not None and self.uplink is not None:
                self.uplink.publish_result(
                    CommandResult(
                        nonce=report.nonce,
                        name="deploy",
                        code=report.code,
                        detail=report.detail[:1024],
                        data=report.data,
                    )
                )
            if report.event is not None:
                self._event(report.event, report.severity, report.detail, group=report.group)

    def _report_rejected_input(self) -> None:
        for g in self.groups:
            rejected = g.rejected_input()
            if rejected is not None:
                reason, data = rejected
                self._event(
                    "rejected_input",
                    "warning",
                    f"group {g.name}: observations dropped: {reason}",
                    group=g.name,
                    data=data,
                )

    def _report_group_alerts(self) -> None:
        """The events groups raised in the last tick (a drift alarm raised or cleared,
        observations out of range): each is one line of the daemon's log, at its severity
        (``drift`` at WARNING, ``drift_cleared`` at INFO), then recorded and published."""
        for g in self.groups:
            for alert in g.alerts():
                level = logging.getLevelNamesMapping().get(alert.severity.upper(), logging.WARNING)
                logger.log(level, "%s: %s", alert.kind, alert.detail)
                self._event(
                    alert.kind, alert.severity, alert.detail, group=g.name, data=dict(alert.data)
                )

    # -- metrics --------------------------------------------------------------------------------
    def _write_prometheus(self) -> None:
        path = self.config.daemon.prometheus_textfile
        if path is None:
            return
        labels = {} if self.uplink is None else {"node": self.uplink.node_id}
        try:
            self.metrics.write_prometheus(path, labels)
        except OSError as err:
            self.prometheus_errors += 1
            if self.prometheus_errors == 1:
                logger.warning("cannot write the Prometheus text file %s: %s", path, err)

    def _publish_telemetry(self) -> None:
        if self.uplink is None:
            return
        p50, p99 = self.stats.percentiles_ms()
        self.uplink.publish_telemetry(
            {
                "uptime_s": round(time.monotonic() - self.started_mono, 3),
                "rss_bytes": self.rss.last or self.rss.sample(),
                "budget_used_bytes": self.budget.used,
                "budget_total_bytes": self.budget.total,
                "ticks": self.stats.ticks,
                "tick_p50_ms": round(p50, 4),
                "tick_p99_ms": round(p99, 4),
                "overruns": self.stats.overruns,
                "groups": {g.name: g.n_agents for g in self.groups},
                "cpu_temp_c": self.protection.thermal.last_temp_c,
            },
            self.metrics.values(),
        )

    def _close_health_windows(self) -> None:
        """End every group's health reporting window (docs/health.md); publish them."""
        now = time.monotonic()
        window_s = now - self._health_window_start
        self._health_window_start = now
        for g in self.groups:
            g.close_health_window()
        if self.uplink is not None:
            self._fleet_step(lambda: self._publish_health(window_s))

    def _publish_health(self, window_s: float) -> None:
        from edge_agent.fleet.health_measures import MEASURES  # noqa: PLC0415 - [mqtt] only
        from edge_agent.fleet.protocol import (  # noqa: PLC0415 - [mqtt] only
            DriftState,
            GroupHealth,
            Health,
            MeasureSummary,
        )

        assert self.uplink is not None  # the caller checked
        groups = {}
        for g in self.groups:
            h = g.health
            if h is None:
                continue
            drift = h.drift
            groups[g.name] = GroupHealth(
                model=g.model_identity[:160],
                agent_steps=h.agent_steps,
                measures={
                    name: MeasureSummary(mean=s.mean, p95=s.p95, n=s.n)  # type: ignore[misc]
                    for name, s in h.measures.items()
                    if name in MEASURES and s.n > 0  # a MeasureName: the ignore above
                },
                drift=None
                if drift is None
                else DriftState(
                    alarm=drift.alarm,
                    statistic=drift.statistic,
                    threshold=drift.threshold,
                    since=drift.since,
                ),
            )
        if groups:
            self.uplink.publish_health(Health(window_s=round(window_s, 3), groups=groups))

    def _birth(self) -> Birth:
        from edge_agent.fleet.protocol import (  # noqa: PLC0415 - [mqtt] only
            MAX_BUNDLE_KEYS,
            Birth,
            GroupInfo,
        )

        return Birth(
            software_version=__version__,
            profile=self.profile.name,
            budget_bytes=self.budget.total,
            groups={
                g.name: GroupInfo(
                    agents=g.n_agents,
                    bundle=g.bundle_name,
                    bundle_sha256=g.bundle_sha256,
                )
                for g in self.groups
            },
            capabilities=[*CAPABILITIES, *(["coordination"] if self.coordination else [])],
            labels=dict(self.config.mqtt.labels),
            bundle_keys=self.ab_switch.bundle_key_ids()[:MAX_BUNDLE_KEYS],
            tick_hz=self.base_hz,
        )

    def rebirth(self) -> None:
        """The node's groups changed: publish a new birth."""
        if self.uplink is not None:
            self.uplink.set_birth(self._birth())

    # -- status -------------------------------------------------------------------------------
    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def overlay_details(self) -> list[str]:
        return [p.detail for p in self.overlay_problems]

    def status(self) -> dict[str, Any]:
        return status_view.status(self)

    def write_status(self) -> None:
        status_view.write_status(self.status_path, self.status(), self.state_faults)

    def _status_line(self) -> str:
        return status_view.status_line(self)

    def _report(self) -> None:
        status_view.report(self)


__all__ = ["Daemon", "State"]
