"""edge-agentd: the device daemon's lifecycle.

States: ``STARTING`` (load config and profile, admit the plan against the budget, build groups,
restore the last good snapshot, warm up) -> ``RUNNING`` (the tick loop) -> ``STOPPING`` (final
snapshot) -> ``STOPPED``. ``SIGHUP`` reloads the config between ticks: an invalid new config is
refused and logged, and the old one keeps running. ``SIGTERM``/``SIGINT`` stop cleanly.

One tick: wait for the monotonic deadline, then for every running group (agents sharing a model)
one batched step: observation from its source -> infer, plan, act -> action to its sink; then
record latency, feed the watchdog only if the tick completed, and at their own intervals write the
status file, sample RSS (degrade above the soft limit), read the temperature (throttle above the
profile's limit) and write a snapshot (bounded writes per hour).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from edge_agent import __version__
from edge_agent.agents import AifAgentGroup
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.settings import AifSettings
from edge_agent.budget import MemoryBudget, RssSampler, format_bytes
from edge_agent.bundle import load_bundle
from edge_agent.config import BuiltinModel, DaemonConfig, GroupConfig, SimSource, load_config
from edge_agent.errors import BudgetError, BundleError, ConfigError, EdgeAgentError, SnapshotError
from edge_agent.profiles import FirmwareProfile, select_profile
from edge_agent.quant import SCHEME, QuantizedModel
from edge_agent.scheduler import TickClock, TickStats
from edge_agent.signing import TrustedKeys
from edge_agent.sim import BatchEnv
from edge_agent.sim.registry import builtin_model, make_env
from edge_agent.state import SnapshotStore
from edge_agent.systemd import SdNotifier, WatchdogGate
from edge_agent.thermal import ThermalGovernor, read_cpu_temp_c

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "edge-agent-groups-v1"
#: Never shrink a history below this many steps when degrading.
MIN_HISTORY = 8


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class GroupRuntime:
    """A configured group: its agents, where observations come from and where actions go."""

    config: GroupConfig
    agents: AifAgentGroup
    env: BatchEnv
    obs: np.ndarray
    paused: bool = False
    paused_reason: str = ""
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def tick(self, now: float) -> None:
        """One batched step of every agent in the group."""
        started = self.env.episode_start
        if started.any():
            self.agents.reset(started)
        actions = self.agents.step(self.obs, now)
        self.obs = self.env.step(actions)
        self.steps += 1

    def describe(self) -> dict[str, Any]:
        a = self.agents
        return {
            "name": self.name,
            "model": describe_model(self.config),
            "agents": a.n_agents,
            "precision": a.precision,
            "priority": self.config.priority,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "history_capacity": a.history_capacity,
            "bytes_per_agent": a.per_agent_nbytes(),
            "shared_model_bytes": a.shared_nbytes,
            "steps": self.steps,
            "world": {k: round(float(v), 4) for k, v in self.env.summary().items()},
        }


def describe_model(cfg: GroupConfig) -> str:
    if isinstance(cfg.model, BuiltinModel):
        return cfg.model.name
    return f"bundle {cfg.model.path}"


def world_name(cfg: GroupConfig) -> str:
    """The built-in world that simulates the group's observations."""
    if isinstance(cfg.source, SimSource) and cfg.source.world is not None:
        return cfg.source.world
    if isinstance(cfg.model, BuiltinModel):
        return cfg.model.name
    raise ConfigError(
        f"group {cfg.name!r}: source type 'sim' with a bundle model needs "
        "source.world (the built-in world that produces its observations)",
        path=None,
    )


def trusted_keys(config: DaemonConfig) -> TrustedKeys | None:
    """The daemon's trusted signing keys, or None when none are configured."""
    directory = config.daemon.trusted_keys_dir
    return None if directory is None else TrustedKeys.from_dir(directory)


def load_group_model(
    cfg: GroupConfig, config: DaemonConfig, keys: TrustedKeys | None
) -> tuple[GenerativeModel | QuantizedModel, AifSettings]:
    """The group's model and settings: built-in, or a verified int8 Active Inference bundle.

    A bundle's own settings apply, overridden by the settings the config sets explicitly. With
    ``[daemon] trusted_keys_dir`` set, bundles must be signed by one of those keys.
    """
    if cfg.source.type != "sim" or cfg.sink.type not in ("sim", "log"):
        raise ConfigError(
            f"group {cfg.name!r}: MQTT observation sources and action sinks are not wired into "
            "this version of the daemon; use source/sink type 'sim'",
            path=None,
        )
    world = builtin_model(world_name(cfg))
    if isinstance(cfg.model, BuiltinModel):
        return world, cfg.settings
    if keys is None:
        logger.warning(
            "group %s: bundle %s loaded WITHOUT signature verification: set [daemon] "
            "trusted_keys_dir",
            cfg.name,
            cfg.model.path,
        )
    bundle = load_bundle(cfg.model.path, trusted_keys=keys, require_signature=keys is not None)
    spec = bundle.manifest.aif
    if spec is None or bundle.manifest.kind != "aif":
        raise BundleError(
            f"{cfg.model.path}: group {cfg.name!r} needs an Active Inference bundle, "
            f"got kind {bundle.manifest.kind!r}"
        )
    if spec.quant_scheme != SCHEME:
        raise BundleError(f"{cfg.model.path}: unknown quantization scheme {spec.quant_scheme!r}")
    model = QuantizedModel.from_arrays(bundle.aif_arrays())
    dims = (model.num_obs, model.num_states, model.num_controls)
    expected = (world.num_obs, world.num_states, world.num_controls)
    if dims != expected:
        raise ConfigError(
            f"group {cfg.name!r}: bundle {cfg.model.path} has (obs, states, controls) {dims}, "
            f"world {world_name(cfg)!r} needs {expected}",
            path=None,
        )
    try:
        settings = AifSettings(
            **{**spec.settings, **cfg.settings.model_dump(include=cfg.settings.model_fields_set)}
        )
    except ValueError as err:
        raise BundleError(f"{cfg.model.path}: invalid agent settings: {err}") from err
    logger.info(
        "group %s: bundle %s %s (sha256 %s, %s)",
        cfg.name,
        bundle.manifest.name,
        bundle.manifest.version,
        bundle.sha256[:12],
        "signed by " + bundle.key_id if bundle.signature_verified and bundle.key_id else "unsigned",
    )
    return model, settings


def build_groups(
    config: DaemonConfig, profile: FirmwareProfile, budget: MemoryBudget
) -> list[GroupRuntime]:
    """Admit the whole plan against the budget, then build every group (reserve, then allocate).

    Raises :class:`BudgetError` with every line that does not fit before anything is allocated.
    """
    plans = []
    keys = trusted_keys(config)
    models = {g.name: load_group_model(g, config, keys) for g in config.groups}
    for g in config.groups:
        hist = g.history_capacity_for(profile)
        model, settings = models[g.name]
        probe = AifAgentGroup(model, 1, settings=settings, precision=g.precision)
        plans.append(
            (
                (g.name, "agents", probe.bytes_for(g.count, hist), None),
                (f"model:{probe.key}", "model", probe.shared_nbytes, probe.key),
            )
        )
    requests = [req for pair in plans for req in (pair[1], pair[0])]
    hints = {
        g.name: f"reduce group {g.name!r} count (now {g.count}) or history_capacity, "
        "or choose a profile with a larger budget"
        for g in config.groups
    }
    budget.plan(requests, hints=hints)
    total_agents = sum(g.count for g in config.groups)
    if total_agents > profile.max_agents:
        raise BudgetError(
            f"config asks for {total_agents} agents; profile {profile.name!r} allows at most "
            f"{profile.max_agents}: reduce group counts or choose a larger profile"
        )
    groups = []
    for g in config.groups:
        model, settings = models[g.name]
        agents = AifAgentGroup(
            model,
            g.count,
            settings=settings,
            precision=g.precision,
            seed=g.seed,
            history_capacity=g.history_capacity_for(profile),
            budget=budget,
            name=g.name,
        )
        env = make_env(world_name(g), g.count, seed=g.seed)
        groups.append(GroupRuntime(config=g, agents=agents, env=env, obs=env.reset()))
    return groups


def _config_digest(config: DaemonConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


class Daemon:
    """The running service. Build with :meth:`from_config`, then :meth:`run`."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        config_path: Path | None,
        profile: FirmwareProfile,
        notifier: SdNotifier | None = None,
        status_interval_s: float = 1.0,
        report_interval_s: float = 0.0,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.profile = profile
        self.notifier = notifier or SdNotifier()
        self.state = State.STARTING
        self.stop_event = threading.Event()
        self._reload_requested = False
        self.status_interval_s = status_interval_s
        self.report_interval_s = report_interval_s
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.reloads_ok = 0
        self.reloads_refused = 0
        self.last_reload_error = ""
        self.degradations: list[str] = []
        self.stats = TickStats()
        self.rss = RssSampler()
        self.budget = self._new_budget(profile)
        self.groups = build_groups(config, profile, self.budget)
        self.state_dir = Path(config.daemon.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore(
            self.state_dir / "snapshots",
            max_writes_per_hour=profile.max_snapshot_writes_per_hour,
        )
        self.status_path = self._status_path(config)
        self.thermal = ThermalGovernor(
            profile.thermal.throttle_c, profile.thermal.throttled_tick_factor
        )
        self.base_hz = config.daemon.tick_hz_for(profile)
        self.clock = TickClock(self.base_hz, self.stop_event)
        self.watchdog = WatchdogGate(
            tick_period_s=1.0 / self.base_hz,
            watchdog_interval_s=self.notifier.watchdog_interval() or profile.watchdog_interval_s,
        )
        self.restored_from: str | None = None
        self.last_snapshot: dict[str, Any] | None = None

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _new_budget(profile: FirmwareProfile) -> MemoryBudget:
        return MemoryBudget(
            profile.total_budget_bytes,
            soft_limit_bytes=profile.soft_limit_bytes,
            base_bytes=profile.base_bytes,
            profile_name=profile.name,
        )

    @staticmethod
    def _status_path(config: DaemonConfig) -> Path:
        if config.daemon.status_file is not None:
            return config.daemon.status_file
        runtime = os.environ.get("RUNTIME_DIRECTORY")  # systemd RuntimeDirectory= (tmpfs)
        if runtime:
            return Path(runtime.split(":")[0]) / "status.json"
        return config.daemon.status_path

    @classmethod
    def from_config(cls, config: DaemonConfig, config_path: Path | None, **kwargs: Any) -> Daemon:
        profile = select_profile(config.daemon.profile)
        return cls(config, config_path=config_path, profile=profile, **kwargs)

    # -- signals ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping after a final snapshot", signal.Signals(signum).name)
        self.stop_event.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self.stop_event.set()  # wake the clock; the loop clears it again for a reload

    # -- lifecycle ----------------------------------------------------------------------------
    def restore(self) -> None:
        """Load the last good snapshot into groups whose name, model and size still match."""
        try:
            snap = self.snapshots.load_latest()
        except SnapshotError as err:
            logger.error("snapshots unreadable: %s", err)
            return
        for path, reason in self.snapshots.corrupt_events:
            self._event("snapshot_corrupt", "warning", f"{path}: {reason}")
        if snap is None:
            logger.info("no snapshot to restore in %s", self.snapshots.state_dir)
            return
        groups_meta = snap.meta.get("groups", {})
        restored = []
        for g in self.groups:
            meta = groups_meta.get(g.name)
            if (
                not meta
                or meta.get("key") != g.agents.key
                or meta.get("agents") != g.agents.n_agents
            ):
                continue
            prefix = f"group.{g.name}."
            state = {k[len(prefix) :]: v for k, v in snap.arrays.items() if k.startswith(prefix)}
            try:
                g.agents.load_state_dict(state)
            except EdgeAgentError as err:
                logger.warning("snapshot for group %s not restored: %s", g.name, err)
                continue
            restored.append(g.name)
        self.restored_from = str(snap.path)
        logger.info(
            "restored groups %s from %s (seq %d)",
            ", ".join(restored) or "(none)",
            snap.path,
            snap.seq,
        )

    def warm_up(self) -> None:
        """Run every group's kernels once on a scratch copy so the first real tick is not cold."""
        for g in self.groups:
            state = {k: np.array(v, copy=True) for k, v in g.agents.state_dict().items()}
            g.agents.step(g.obs)
            g.agents.load_state_dict(state)

    def snapshot(self, *, force: bool = False) -> None:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "groups": {}, "version": __version__}
        for g in self.groups:
            for k, v in g.agents.state_dict().items():
                arrays[f"group.{g.name}.{k}"] = v
            meta["groups"][g.name] = {"key": g.agents.key, "agents": g.agents.n_agents}
        try:
            info = self.snapshots.save(arrays, meta, force=force)
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
            "READY: profile %s, %d group(s), %d agents, %.1f Hz, budget %s of %s used",
            self.profile.name,
            len(self.groups),
            self.total_agents,
            self.clock.hz,
            format_bytes(self.budget.used),
            format_bytes(self.budget.total),
        )
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_status = next_snapshot = next_rss = next_thermal = next_report = time.monotonic()
        next_snapshot += self.profile.snapshot_interval_s
        self.clock.next_deadline = time.monotonic()
        while True:
            if not self.clock.wait(self.stats):
                if self._reload_requested:
                    self._reload_requested = False
                    self.stop_event.clear()
                    self.reload()
                    continue
                break
            start = time.monotonic()
            try:
                self._tick(start)
            except Exception:  # the loop's boundary: log, count, keep the device alive
                logger.exception("tick failed")
                self._event("tick_failed", "error", "exception in tick; see the log")
                continue
            end = time.monotonic()
            self.stats.record(end - start, overrun=self.clock.is_overrun(end), now=end)
            self.watchdog.record_tick(end)
            if self.watchdog.should_ping(end):
                self.notifier.watchdog()
            if end >= next_rss:
                next_rss = end + 1.0
                self._check_memory()
            if end >= next_thermal:
                next_thermal = end + 5.0
                self._check_thermal()
            if end >= next_snapshot:
                next_snapshot = end + self.profile.snapshot_interval_s
                self.snapshot()
            if end >= next_status:
                next_status = end + self.status_interval_s
                self.write_status()
                self.notifier.status(self._status_line())
            if self.report_interval_s and end >= next_report:
                next_report = end + self.report_interval_s
                self._report()
            if deadline is not None and end >= deadline:
                break
        return self.shutdown()

    def shutdown(self) -> int:
        self.state = State.STOPPING
        self.notifier.stopping("final snapshot")
        self.snapshot(force=True)
        self.write_status()
        self.state = State.STOPPED
        self.write_status()
        logger.info(
            "stopped after %d ticks (%d overruns); final snapshot %s",
            self.stats.ticks,
            self.stats.overruns,
            self.last_snapshot["path"] if self.last_snapshot else "not written",
        )
        return 0

    def _tick(self, now: float) -> None:
        for g in self.groups:
            if not g.paused:
                g.tick(now)

    @property
    def total_agents(self) -> int:
        return sum(g.agents.n_agents for g in self.groups)

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
            new_config = load_config(self.config_path)
            profile = select_profile(new_config.daemon.profile)
            budget = self._new_budget(profile)
            groups = build_groups(new_config, profile, budget)
        except EdgeAgentError as err:
            self.reloads_refused += 1
            self.last_reload_error = str(err)
            logger.error("reload refused, the old config keeps running:\n%s", err)
            self._event("reload_refused", "error", str(err))
            self.state = State.RUNNING
            self.notifier.ready(self._status_line())
            return False
        old = {g.name: g for g in self.groups}
        for g in groups:  # carry beliefs over where the group is unchanged
            prev = old.get(g.name)
            if (
                prev
                and prev.agents.key == g.agents.key
                and prev.agents.n_agents == g.agents.n_agents
            ):
                g.agents.load_state_dict(prev.agents.state_dict())
        for g in self.groups:
            g.agents.release()
        self.config, self.profile, self.budget, self.groups = new_config, profile, budget, groups
        self.base_hz = new_config.daemon.tick_hz_for(profile)
        self.clock.set_rate(
            self.base_hz
            * (profile.thermal.throttled_tick_factor if self.thermal.throttled else 1.0)
        )
        self.reloads_ok += 1
        self.last_reload_error = ""
        logger.info(
            "reloaded %s: %d group(s), %d agents", self.config_path, len(groups), self.total_agents
        )
        self.state = State.RUNNING
        self.notifier.ready(self._status_line())
        return True

    # -- health -------------------------------------------------------------------------------
    def _check_memory(self) -> None:
        rss = self.rss.sample()
        soft = self.profile.soft_limit_bytes
        if rss <= soft:
            if rss < 0.9 * soft:
                self._resume_paused()
            return
        # Step 1: shrink histories by half (not below MIN_HISTORY); step 2: pause low priority.
        shrinkable = [g for g in self.groups if g.agents.history_capacity > MIN_HISTORY]
        if shrinkable:
            for g in shrinkable:
                new_cap = max(MIN_HISTORY, g.agents.history_capacity // 2)
                g.agents.resize_history(new_cap)
            msg = (
                f"RSS {format_bytes(rss)} above soft limit {format_bytes(soft)}: histories halved "
                f"({', '.join(f'{g.name}={g.agents.history_capacity}' for g in shrinkable)})"
            )
        else:
            running = sorted(
                (g for g in self.groups if not g.paused), key=lambda g: g.config.priority
            )
            if len(running) <= 1:
                msg = f"RSS {format_bytes(rss)} above soft limit; nothing left to degrade"
                if msg in self.degradations[-1:]:
                    return
            else:
                victim = running[0]
                victim.paused, victim.paused_reason = True, "memory"
                msg = (
                    f"RSS {format_bytes(rss)} above soft limit {format_bytes(soft)}: paused group "
                    f"{victim.name} (priority {victim.config.priority})"
                )
        self.degradations.append(msg)
        logger.warning("%s", msg)
        self._event("memory_degraded", "warning", msg)

    def _resume_paused(self) -> None:
        for g in self.groups:
            if g.paused and g.paused_reason == "memory":
                g.paused, g.paused_reason = False, ""
                logger.info("RSS back under the soft limit: resumed group %s", g.name)

    def _check_thermal(self) -> None:
        temp = read_cpu_temp_c(self.profile.thermal.zone_glob)
        change = self.thermal.update(temp)
        if change is True:
            hz = self.base_hz * self.profile.thermal.throttled_tick_factor
            self.clock.set_rate(hz)
            msg = (
                f"CPU {temp:.1f} C >= {self.thermal.throttle_c:.1f} C: "
                f"tick rate lowered to {hz:.2f} Hz"
            )
            logger.warning("%s", msg)
            self._event("thermal_throttle", "warning", msg)
        elif change is False:
            self.clock.set_rate(self.base_hz)
            logger.info("CPU %.1f C: tick rate restored to %.2f Hz", temp or 0.0, self.base_hz)

    def _event(self, kind: str, severity: str, detail: str) -> None:
        self.events.append(
            {"kind": kind, "severity": severity, "detail": detail, "time": time.time()}
        )
        del self.events[:-50]  # bounded: the newest 50 events

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        p50, p99 = self.stats.percentiles_ms()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self.state.value,
            "updated_at": time.time(),
            "started_at": self.started_wall,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "config": str(self.config_path) if self.config_path else "(embedded default)",
            "config_digest": _config_digest(self.config),
            "profile": self.profile.name,
            "budget": self.budget.report(),
            "rss_bytes": self.rss.last,
            "rss_peak_bytes": self.rss.peak,
            "soft_limit_bytes": self.profile.soft_limit_bytes,
            "tick": {
                "hz": round(self.clock.hz, 4),
                "base_hz": self.base_hz,
                "ticks": self.stats.ticks,
                "p50_ms": round(p50, 4),
                "p99_ms": round(p99, 4),
                "overruns": self.stats.overruns,
                "missed": self.stats.missed,
            },
            "agents": self.total_agents,
            "groups": [g.describe() for g in self.groups],
            "thermal": {
                "temp_c": self.thermal.last_temp_c,
                "throttled": self.thermal.throttled,
                "throttle_c": self.thermal.throttle_c,
            },
            "snapshots": {
                **self.snapshots.stats(),
                "last": self.last_snapshot,
                "restored_from": self.restored_from,
            },
            "reloads": {
                "ok": self.reloads_ok,
                "refused": self.reloads_refused,
                "last_error": self.last_reload_error,
            },
            "degradations": self.degradations[-10:],
            "events": self.events[-10:],
        }

    def write_status(self) -> None:
        """Atomically replace the status file (tmpfs under systemd; no fsync needed)."""
        data = json.dumps(self.status(), default=str).encode()
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        try:
            self.status_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, self.status_path)
        except OSError as err:
            logger.warning("cannot write status file %s: %s", self.status_path, err)

    def _status_line(self) -> str:
        p50, p99 = self.stats.percentiles_ms()
        return (
            f"{self.state.value}: {self.total_agents} agents in {len(self.groups)} group(s), "
            f"{self.clock.hz:.1f} Hz, tick p50 {p50:.2f} ms p99 {p99:.2f} ms, "
            f"overruns {self.stats.overruns}, budget {format_bytes(self.budget.used)}"
            f"/{format_bytes(self.budget.total)}"
        )

    def _report(self) -> None:
        """The demo's periodic view: what agents do and what they cost."""
        p50, p99 = self.stats.percentiles_ms()
        rss = self.rss.last or self.rss.sample()
        logger.info(
            "tick %d @ %.1f Hz | p50 %.2f ms p99 %.2f ms | overruns %d | RSS %s | budget %s / %s",
            self.stats.ticks,
            self.clock.hz,
            p50,
            p99,
            self.stats.overruns,
            format_bytes(rss),
            format_bytes(self.budget.used),
            format_bytes(self.budget.total),
        )
        for g in self.groups:
            world = ", ".join(f"{k} {v:.3g}" for k, v in g.env.summary().items())
            logger.info(
                "  %-8s %6d agents %s | %s B/agent + %s shared | %s",
                g.name,
                g.agents.n_agents,
                g.agents.precision,
                g.agents.per_agent_nbytes(),
                format_bytes(g.agents.shared_nbytes),
                world,
            )


__all__ = ["Daemon", "GroupRuntime", "State", "build_groups"]
