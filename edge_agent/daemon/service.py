"""edge-agentd: the device daemon's lifecycle.

States: ``STARTING`` (load config and profile, complete or undo an interrupted deployment, admit
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np

from edge_agent import __version__
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.config.daemon import (
    BuiltinModel,
    BundleModel,
    ConfigFile,
    DaemonConfig,
    GroupConfig,
    LogSink,
    MqttSink,
    MqttSource,
    SimSink,
    SimSource,
    read_config,
    resolve_profile,
)
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.config.toml_lines import Problem, TomlDocument
from edge_agent.coordination.config import CoordinationConfig
from edge_agent.coordination.runtime import CoordinationRuntime, GroupBinding, wanted
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget, RssSampler, format_bytes
from edge_agent.daemon import discovery
from edge_agent.daemon.scheduler import TickClock, TickStats
from edge_agent.daemon.snapshots import SnapshotStore
from edge_agent.daemon.systemd import SdNotifier, WatchdogGate
from edge_agent.daemon.thermal import ThermalGovernor, read_cpu_temp_c
from edge_agent.errors import (
    BudgetError,
    BundleError,
    ConfigError,
    EdgeAgentError,
    InputError,
    SnapshotError,
)
from edge_agent.fleet.agent_io import ActionPublisher, ObservationBuffer, ObservationRouter
from edge_agent.fleet.commands import (
    NONCE_DB,
    ChunkArgs,
    CommandProcessor,
    CommandVerifier,
    DeployArgs,
    GroupArgs,
    NonceStore,
    Outcome,
    ResizeArgs,
    TickRateArgs,
)
from edge_agent.fleet.comms.base import Backoff, Incoming
from edge_agent.fleet.deploy import DeployManager, OverlayEntry, ReadyToSwitch
from edge_agent.fleet.link import FleetLink, Received
from edge_agent.fleet.outbox import Outbox
from edge_agent.fleet.protocol import (
    ActionBatch,
    Birth,
    Command,
    CommandResult,
    EventKind,
    GroupInfo,
    ObservationBatch,
    ResultCode,
    Severity,
    Topics,
    clock_synced,
)
from edge_agent.sim import BatchEnv, format_summary
from edge_agent.sim.registry import builtin_model, make_env

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "edge-agent-groups-v1"
#: Never shrink a history below this many steps when degrading.
MIN_HISTORY = 8


#: Agents of the scratch group a deployment's health check steps.
HEALTH_CHECK_AGENTS = 64
#: Fleet work per tick is bounded: incoming messages taken, commands applied.
MAX_MESSAGES_PER_TICK = 32
MAX_COMMANDS_PER_TICK = 16
#: Noisy events (rejected input, refused commands) are published at most this often per kind
#: and group; the next one carries how many were folded into it.
NOISY_EVENT_INTERVAL_S = 5.0
CAPABILITIES: Final = ("commands", "ota", "mqtt_io")

#: The daemon's own event names -> the protocol's event kinds.
EVENT_KINDS: Final = {
    "memory_degraded": EventKind.BUDGET,
    "thermal_throttle": EventKind.THERMAL,
    "snapshot_failed": EventKind.ALARM,
    "snapshot_corrupt": EventKind.ALARM,
    "tick_failed": EventKind.ALARM,
    "fleet_failed": EventKind.ALARM,
    "command_refused": EventKind.ALARM,
    "reload_refused": EventKind.CONFIG,
    "overlay_ignored": EventKind.CONFIG,
    "rejected_input": EventKind.REJECTED_INPUT,
    "deploy": EventKind.DEPLOY,
    "rollback": EventKind.ROLLBACK,
    "connectivity": EventKind.CONNECTIVITY,
    "started": EventKind.OTHER,
}
_NOISY: Final = frozenset({"rejected_input", "command_refused"})


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class LoadedModel:
    """A group's model and settings, and which bundle they came from (None: built-in)."""

    model: GenerativeModel | QuantizedModel
    settings: AifSettings
    bundle_name: str | None = None
    bundle_sha256: str | None = None


@dataclass
class GroupRuntime:
    """A configured group: its agents, where observations come from and where actions go.

    ``env`` is the simulated world of a ``sim`` source (None for an ``mqtt`` source, whose
    observations arrive in ``inbox``); ``sink`` publishes actions for an ``mqtt`` sink.
    """

    config: GroupConfig
    agents: AifAgentGroup
    env: BatchEnv | None
    obs: np.ndarray
    inbox: ObservationBuffer | None = None
    sink: ActionPublisher | None = None
    bundle_name: str | None = None
    bundle_sha256: str | None = None
    paused: bool = False
    paused_reason: str = ""
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def tick(self, now: float, coordination: CoordinationRuntime | None = None) -> bool:
        """One batched step of every agent in the group; False if it could not step yet.

        With ``coordination`` the step and the resets go through it (peers' evidence, holders'
        task preferences)."""
        agents = self.agents
        if self.env is not None:
            started = self.env.episode_start
            if started.any():
                if coordination is None:
                    agents.reset(started)
                else:
                    coordination.reset(self.name, agents, started)
            obs = self.obs
        else:
            assert self.inbox is not None  # an mqtt source has an inbox
            if not self.inbox.take():
                return False  # waiting until every agent has had an observation
            obs = self.inbox.obs
        if coordination is None:
            actions = agents.step(obs, now)
        else:
            actions = coordination.step(self.name, agents, obs, now)
        if self.env is not None:
            self.obs = self.env.step(actions)
        self.steps += 1
        return True

    def describe(self) -> dict[str, Any]:
        a = self.agents
        out: dict[str, Any] = {
            "name": self.name,
            "model": describe_model(self.config),
            "bundle": self.bundle_name,
            "bundle_sha256": self.bundle_sha256,
            "agents": a.n_agents,
            "precision": a.precision,
            "priority": self.config.priority,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "history_capacity": a.history_capacity,
            "bytes_per_agent": a.per_agent_nbytes(),
            "shared_model_bytes": a.shared_nbytes,
            "steps": self.steps,
            "source": _endpoint(self.config.source),
            "sink": _endpoint(self.config.sink),
        }
        if self.env is not None:
            out["world"] = {
                k: v if isinstance(v, int) else round(v, 4) for k, v in self.env.summary().items()
            }
        if self.inbox is not None:
            out["io"] = self.inbox.stats()
        if self.sink is not None:
            out["actions"] = {
                "batches": self.sink.batches,
                "published": self.sink.published,
                "dropped": self.sink.dropped,
            }
        return out


def _endpoint(spec: SimSource | MqttSource | SimSink | MqttSink | LogSink) -> str:
    if isinstance(spec, MqttSource | MqttSink):
        return f"mqtt {spec.topic}"
    return spec.type


def describe_model(cfg: GroupConfig) -> str:
    if isinstance(cfg.model, BuiltinModel):
        return cfg.model.name
    return f"bundle {cfg.model.path}"


def model_spec_key(cfg: GroupConfig) -> str:
    """The config's model of a group as canonical JSON (what a deployment overlays)."""
    return json.dumps(cfg.model.model_dump(mode="json"), sort_keys=True)


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


def with_bundle(cfg: GroupConfig, path: Path) -> GroupConfig:
    """``cfg`` running the bundle at ``path`` instead of its configured model."""
    update: dict[str, Any] = {"model": BundleModel(type="bundle", path=path)}
    if isinstance(cfg.source, SimSource) and cfg.source.world is None:
        update["source"] = SimSource(type="sim", world=world_name(cfg))
    return cfg.model_copy(update=update)


def trusted_keys(config: DaemonConfig) -> TrustedKeys | None:
    """The daemon's trusted signing keys, or None when none are configured."""
    directory = config.daemon.trusted_keys_dir
    return None if directory is None else TrustedKeys.from_dir(directory)


def hub_keys(config: DaemonConfig) -> TrustedKeys | None:
    """Keys whose signed commands the daemon obeys: ``[mqtt] hub_keys_dir``, else the trusted."""
    directory = config.mqtt.hub_keys_dir or config.daemon.trusted_keys_dir
    return None if directory is None else TrustedKeys.from_dir(directory)


def load_group_model(
    cfg: GroupConfig, config: DaemonConfig, keys: TrustedKeys | None
) -> LoadedModel:
    """The group's model and settings: built-in, or a verified int8 Active Inference bundle.

    A bundle's own settings apply, overridden by the settings the config sets explicitly. With
    ``[daemon] trusted_keys_dir`` set, bundles must be signed by one of those keys. With a ``sim``
    source the model's dimensions must match the simulated world's.
    """
    if isinstance(cfg.source, MqttSource) and isinstance(cfg.sink, SimSink):
        raise ConfigError(
            f"group {cfg.name!r}: a 'sim' sink acts on a simulated world and needs a 'sim' "
            "source; with an mqtt source use sink type 'mqtt' or 'log'",
            path=None,
        )
    world = builtin_model(world_name(cfg)) if isinstance(cfg.source, SimSource) else None
    if isinstance(cfg.model, BuiltinModel):
        model = world if world is not None else builtin_model(cfg.model.name)
        return LoadedModel(model, cfg.settings)
    if keys is None:
        raise ConfigError(
            f"group {cfg.name!r}: bundle {cfg.model.path} cannot be verified: set [daemon] "
            "trusted_keys_dir to the directory of the keys that sign your bundles "
            "(edge-agent-host keygen / sign)",
            path=None,
        )
    bundle = load_bundle(cfg.model.path, trusted_keys=keys, require_signature=True)
    spec = bundle.manifest.aif
    if spec is None or bundle.manifest.kind != "aif":
        raise BundleError(
            f"{cfg.model.path}: group {cfg.name!r} needs an Active Inference bundle, "
            f"got kind {bundle.manifest.kind!r}"
        )
    if spec.quant_scheme != SCHEME:
        raise BundleError(f"{cfg.model.path}: unknown quantization scheme {spec.quant_scheme!r}")
    qmodel = QuantizedModel.from_arrays(bundle.aif_arrays())
    if world is not None:
        dims = (qmodel.num_obs, qmodel.num_states, qmodel.num_controls)
        expected = (world.num_obs, world.num_states, world.num_controls)
        if dims != expected:
            raise ConfigError(
                f"group {cfg.name!r}: bundle {cfg.model.path} has (obs, states, controls) "
                f"{dims}, world {world_name(cfg)!r} needs {expected}",
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
    name = f"{bundle.manifest.name}@{bundle.manifest.version}"[:256]
    return LoadedModel(qmodel, settings, name, bundle.sha256)


@dataclass(frozen=True)
class OverlayProblem:
    """A deployed bundle that was not used for ``group``; ``superseded``: the config changed."""

    group: str
    detail: str
    superseded: bool = False


def resolve_models(
    config: DaemonConfig,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
    source: ConfigFile | None = None,
) -> dict[str, tuple[GroupConfig, LoadedModel]]:
    """Every group's effective config and model: a deployed bundle where the overlay has a valid
    one (see :mod:`edge_agent.fleet.deploy`), else the config's model. A configured model that
    cannot be loaded is a config problem: with ``source``, every such group is reported at its
    model's line in one ConfigError."""
    keys = trusted_keys(config)
    located: list[Problem] = []
    out: dict[str, tuple[GroupConfig, LoadedModel]] = {}
    for g in config.groups:
        entry = (overlay or {}).get(g.name)
        if entry is not None:
            if entry.config_model != model_spec_key(g):
                if problems is not None:
                    problems.append(
                        OverlayProblem(
                            g.name,
                            f"group {g.name!r}: the config's model changed since bundle "
                            f"{entry.sha256[:12]} was deployed; the config wins",
                            superseded=True,
                        )
                    )
            else:
                deployed = with_bundle(g, Path(entry.path))
                try:
                    loaded = load_group_model(deployed, config, keys)
                    if loaded.bundle_sha256 != entry.sha256:
                        raise BundleError(
                            f"{entry.path} is bundle {loaded.bundle_sha256}, the deployment "
                            f"recorded {entry.sha256}"
                        )
                except EdgeAgentError as err:
                    if problems is not None:
                        problems.append(
                            OverlayProblem(
                                g.name,
                                f"group {g.name!r}: deployed bundle ignored, the config's model "
                                f"runs: {err}",
                            )
                        )
                else:
                    out[g.name] = (deployed, loaded)
                    continue
        try:
            out[g.name] = (g, load_group_model(g, config, keys))
        except EdgeAgentError as err:
            if source is None:
                raise
            key = "path" if isinstance(g.model, BundleModel) else "name"
            located.append((source.group_loc(g.name, "model", key), str(err)))
    if located and source is not None:
        raise source.error(located)
    return out


def build_groups(
    config: DaemonConfig,
    profile: FirmwareProfile,
    budget: MemoryBudget,
    *,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
    source: ConfigFile | None = None,
) -> list[GroupRuntime]:
    """Admit the whole plan against the budget, then build every group (reserve, then allocate).

    ``overlay``: deployed bundles that replace a group's configured model (see
    :func:`resolve_models`). Raises :class:`BudgetError` with every request that does not fit
    before anything is allocated; with ``source`` (the config file), a ConfigError instead that
    names each group at the line of its ``count``. ``edge-agent check-config``, ``run`` and a
    SIGHUP reload all come through here (:func:`admit`).
    """
    plans = []
    models = resolve_models(config, overlay, problems, source)
    for g in config.groups:
        hist = g.history_capacity_for(profile)
        loaded = models[g.name][1]
        probe = AifAgentGroup(loaded.model, 1, settings=loaded.settings, precision=g.precision)
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
    try:
        budget.plan(requests, hints=hints)
    except BudgetError as err:
        if source is None or not err.offenders:
            raise
        owner_group = {f"model:{p[1][3]}": p[0][0] for p in reversed(plans)}
        located = source.error([
            (source.group_loc(owner_group.get(owner, owner), "count"), problem)
            for owner, problem in err.offenders
        ])
        raise ConfigError(
            f"{located}\n{err.summary}", path=source.path, problems=located.problems
        ) from err
    total_agents = sum(g.count for g in config.groups)
    if total_agents > profile.max_agents:
        raise BudgetError(
            f"config asks for {total_agents} agents; profile {profile.name!r} allows at most "
            f"{profile.max_agents}: reduce group counts or choose a larger profile"
        )
    groups = []
    for g in config.groups:
        cfg, loaded = models[g.name]
        agents = AifAgentGroup(
            loaded.model,
            g.count,
            settings=loaded.settings,
            precision=g.precision,
            seed=g.seed,
            history_capacity=g.history_capacity_for(profile),
            budget=budget,
            name=g.name,
        )
        groups.append(make_runtime(cfg, agents, config, loaded))
    return groups


def new_budget(profile: FirmwareProfile) -> MemoryBudget:
    """An empty budget of ``profile``: its total, soft limit and daemon base."""
    return MemoryBudget(
        profile.total_budget_bytes,
        soft_limit_bytes=profile.soft_limit_bytes,
        base_bytes=profile.base_bytes,
        profile_name=profile.name,
    )


def admit(source: ConfigFile) -> tuple[FirmwareProfile, MemoryBudget, list[GroupRuntime]]:
    """Everything the daemon checks before it runs a config, as ``check-config`` runs it: the
    profile and what it allows, every group's model, and the memory plan; problems as
    ``file:line: field: problem``. Returns the profile, the budget and the built groups."""
    profile = resolve_profile(source)
    budget = new_budget(profile)
    return profile, budget, build_groups(source.config, profile, budget, source=source)


def make_runtime(
    cfg: GroupConfig, agents: AifAgentGroup, config: DaemonConfig, loaded: LoadedModel
) -> GroupRuntime:
    """Wire a group's agents to its source and sink."""
    n = agents.n_agents
    env: BatchEnv | None = None
    inbox: ObservationBuffer | None = None
    if isinstance(cfg.source, SimSource):
        env = make_env(world_name(cfg), n, seed=cfg.seed)
        obs = env.reset()
    else:
        inbox = ObservationBuffer(cfg.name, n, agents.cm.num_obs)
        obs = inbox.obs
    sink = None
    if isinstance(cfg.sink, MqttSink):
        sink = ActionPublisher(cfg.name, cfg.sink.topic, n, agents.cm.num_controls)
    return GroupRuntime(
        config=cfg,
        agents=agents,
        env=env,
        obs=obs,
        inbox=inbox,
        sink=sink,
        bundle_name=loaded.bundle_name,
        bundle_sha256=loaded.bundle_sha256,
    )


def beliefs_finite(agents: AifAgentGroup) -> bool:
    """Whether every posterior and policy posterior of the group is finite."""
    return all(bool(np.isfinite(q).all()) for q in agents.qs) and bool(
        np.isfinite(agents.q_pi).all()
    )


def _duration(seconds: float) -> str:
    """``42 s``, ``5.0 min``, ``3.2 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


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
        source: ConfigFile | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        #: Where ``config`` came from, for file:line in model and budget problems.
        self.source = source
        self.profile = profile
        self.notifier = notifier or SdNotifier()
        self.state = State.STARTING
        self.stop_event = threading.Event()
        self._reload_requested = False
        self._reload_deferred = False
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
        self.state_dir = Path(config.daemon.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A deployment interrupted by a crash is completed or undone before groups are built.
        self.deployer = DeployManager(self.state_dir, bundle_keys=trusted_keys(config))
        self.deployer.recover()
        self.overlay_problems: list[OverlayProblem] = []
        self.groups = self._build_groups(config, profile, self.budget, source)
        self._watch_old: GroupRuntime | None = None
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
        self._announced: Path | None = None
        self.last_snapshot: dict[str, Any] | None = None
        self._noisy: dict[tuple[str, str | None], tuple[float, int]] = {}
        self.fleet_counters: dict[str, int] = dict.fromkeys(
            (
                "telemetry_published",
                "events_published",
                "events_suppressed",
                "results_published",
                "publish_refused",
                "actions_refused",
                "obs_unrouted",
                "messages_ignored",
                "errors",
            ),
            0,
        )
        self._last_fleet_error = -1e18
        self._was_online = False
        self.link: FleetLink | None = None
        self.outbox: Outbox | None = None
        self.router: ObservationRouter | None = None
        self.commands: CommandProcessor | None = None
        self.nonces: NonceStore | None = None
        self.node_id: str | None = None
        self.coordination: CoordinationRuntime | None = None
        if config.mqtt.enabled:
            self._open_fleet(config)
        self.deployer.bind(
            self._health_check,
            current_sha=self._group_sha,
            group_exists=lambda name: self._find(name) is not None,
        )
        for problem in self.overlay_problems:
            severity = "warning" if problem.superseded else "error"
            self._event("overlay_ignored", severity, problem.detail, group=problem.group)

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _new_budget(profile: FirmwareProfile) -> MemoryBudget:
        return new_budget(profile)

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
        """A daemon on a config built in code (problems are reported without a line)."""
        source = ConfigFile(config, TomlDocument.parse("", "<config>"))
        return cls.from_file(source, config_path, **kwargs)

    @classmethod
    def from_file(cls, source: ConfigFile, config_path: Path | None, **kwargs: Any) -> Daemon:
        """A daemon on a config read by :func:`edge_agent.config.daemon.read_config`: the same
        checks as ``check-config`` and a reload, each problem at its line."""
        profile = resolve_profile(source)
        return cls(source.config, config_path=config_path, profile=profile, source=source,
                   **kwargs)

    def _build_groups(
        self,
        config: DaemonConfig,
        profile: FirmwareProfile,
        budget: MemoryBudget,
        source: ConfigFile | None,
    ) -> list[GroupRuntime]:
        """Build groups with the deployed bundles applied; drop overlay entries the config
        superseded."""
        problems: list[OverlayProblem] = []
        groups = build_groups(
            config, profile, budget, overlay=self.deployer.overlay.entries, problems=problems,
            source=source,
        )
        for problem in problems:
            logger.error("%s", problem.detail)
            if problem.superseded:
                self.deployer.overlay.restore(problem.group, None)
        self.overlay_problems = problems
        return groups

    def _open_fleet(self, config: DaemonConfig) -> None:
        """Outbox, transport, link, observation router and command processor (no connection yet)."""
        # paho is imported only by daemons that use MQTT.
        from edge_agent.fleet.comms.mqtt import (  # noqa: PLC0415
            MqttSettings,
            MqttTransport,
            TlsSettings,
        )

        m = config.mqtt
        node = m.effective_node_id()
        password = None
        if m.password_file is not None:
            try:
                lines = m.password_file.read_text(encoding="utf-8").splitlines()
            except OSError as err:
                raise ConfigError(f"[mqtt] password_file {m.password_file}: {err}") from err
            password = lines[0] if lines else ""
        tls = None
        if m.tls.enabled:
            tls = TlsSettings(
                ca_file=str(m.tls.ca_file) if m.tls.ca_file else None,
                cert_file=str(m.tls.cert_file) if m.tls.cert_file else None,
                key_file=str(m.tls.key_file) if m.tls.key_file else None,
            )
        settings = MqttSettings(
            client_id=f"ea-{m.fleet}-{node}"[:256],
            host=m.host,
            port=m.port,
            keepalive_s=m.keepalive_s,
            username=m.username or None,
            password=password,
            tls=tls,
        )
        keys = hub_keys(config)
        if keys is None:
            logger.warning(
                "no hub keys ([mqtt] hub_keys_dir or [daemon] trusted_keys_dir): every hub "
                "command will be refused"
            )
        self.node_id = node
        self.topics = Topics(m.fleet)
        self.outbox = Outbox(self.state_dir / "outbox.sqlite3", max_bytes=m.outbox_max_bytes)
        self.transport = MqttTransport(
            settings, backoff=Backoff(initial_s=m.reconnect_initial_s, max_s=m.reconnect_max_s)
        )
        self.link = FleetLink(
            self.transport,
            self.outbox,
            node,
            m.fleet,
            self.state_dir,
            birth=self._birth(),
            max_inbox=128 + (config.coordination or CoordinationConfig()).max_inbox,
        )
        self._open_coordination(config)
        if self.coordination is not None:
            self.link.set_birth(self._birth())  # says "coordination"; sent once connected
        self.router = ObservationRouter(self.topics)
        self._bind_sources()
        self.nonces = NonceStore(self.state_dir / NONCE_DB)
        verifier = CommandVerifier(
            keys,
            fleet=m.fleet,
            node_id=node,
            nonces=self.nonces,
            max_ttl_s=m.command_max_ttl_s,
        )
        handlers: dict[str, Callable[[Any, Command], Outcome]] = {
            "ping": self._cmd_ping,
            "snapshot": self._cmd_snapshot,
            "rebirth": self._cmd_rebirth,
            "start_group": self._cmd_start_group,
            "stop_group": self._cmd_stop_group,
            "resize_group": self._cmd_resize_group,
            "set_tick_rate": self._cmd_set_tick_rate,
            "deploy": self._cmd_deploy,
            "deploy_chunk": self._cmd_deploy_chunk,
        }
        self.commands = CommandProcessor(verifier, handlers)

    def _coordination_groups(self) -> dict[str, GroupBinding]:
        """The groups with a coordination table, as they are now (the runtime follows them)."""
        return {
            g.name: GroupBinding(g.agents, g.config.coordination)
            for g in self.groups
            if g.config.coordination is not None
        }

    def _open_coordination(self, config: DaemonConfig) -> None:
        """The coordination runtime, when a group takes part (reserves its memory first)."""
        if self.link is None or not wanted(
            config.coordination, self._coordination_groups(), config.mqtt.enabled
        ):
            return
        try:
            self.coordination = CoordinationRuntime(
                config.coordination or CoordinationConfig(),
                self.link,
                self._coordination_groups,
                tick_period_s=1.0 / self.base_hz,
                budget=lambda: self.budget,
                clock_synced=clock_synced,
            )
        except InputError as err:
            raise ConfigError(f"[groups.coordination]: {err}", path=None) from err

    def _bind_sources(self) -> None:
        """Point the MQTT sources' topic filters at their groups' observation buffers."""
        if self.router is None:
            return
        routes: dict[str, list[ObservationBuffer]] = {}
        for g in self.groups:
            if g.inbox is not None and isinstance(g.config.source, MqttSource):
                routes.setdefault(g.config.source.topic, []).append(g.inbox)
        self.router.bind(routes)

    def _start_fleet(self) -> None:
        """Start connecting (in the background) and route observation topics to the groups."""
        if self.link is None or self.router is None:
            return
        if self.coordination is not None:
            self.coordination.start()
        self.link.start()
        fallback = self.transport.on_message
        router = self.router

        def dispatch(msg: Incoming) -> None:
            if not router.handle(msg) and fallback is not None:
                fallback(msg)

        self.transport.on_message = dispatch
        self._subscribe_sources()

    def _subscribe_sources(self) -> None:
        if self.link is None or self.router is None or self.node_id is None:
            return
        inbox_prefix = self.topics.obs_all(self.node_id)[:-1]  # the node subscribes to obs/#
        for pattern in self.router.patterns:
            if not pattern.startswith(inbox_prefix):
                self.link.subscribe(pattern, 1)

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
            logger.info(
                "fresh start: no snapshot to restore in %s", self.snapshots.state_dir
            )
            return
        groups_meta = snap.meta.get("groups", {})
        restored: dict[str, int] = {}
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
            restored[g.name] = g.agents.n_agents
        self.restored_from = str(snap.path)
        logger.info(
            "restored %s from snapshot %s (seq %d, written %s, %s ago, by config %s); "
            "to start fresh, move it away or run with another state_dir",
            ", ".join(f"{name} ({n} agents)" for name, n in restored.items()) or "no group",
            snap.path,
            snap.seq,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.created)),
            _duration(max(0.0, time.time() - snap.created)),
            snap.meta.get("config", "unknown"),
        )
        for name in groups_meta:
            if name not in restored:
                logger.info(
                    "snapshot group %s not restored: no group of that name, model and size", name
                )

    def warm_up(self) -> None:
        """Run every group's kernels once so the first real tick is not cold, then put the
        beliefs back. Histories are not touched, so only the small per-agent arrays are copied."""
        for g in self.groups:
            state = {
                k: np.array(v, copy=True)
                for k, v in g.agents.state_dict().items()
                if not k.startswith(("history.", "times."))
            }
            g.agents.step(g.obs, record=False)
            g.agents.load_state_dict(state)

    def snapshot(self, *, force: bool = False) -> None:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "groups": {},
            "version": __version__,
            "config": str(self.config_path) if self.config_path else "<embedded demo config>",
        }
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
        self._start_fleet()  # returns at once: the broker may be down, the agents still tick
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
        next_status = next_snapshot = next_rss = next_thermal = next_report = time.monotonic()
        next_telemetry = time.monotonic()
        next_snapshot += self.profile.snapshot_interval_s
        self.clock.next_deadline = time.monotonic()
        while True:
            if not self.clock.wait(self.stats):
                if self._reload_requested:
                    self._reload_requested = False
                    self.stop_event.clear()
                    if self._watch_old is not None:
                        self._reload_deferred = True
                        logger.info("reload deferred until the deployment's watch ends")
                    else:
                        self.reload()
                    continue
                break
            start = time.monotonic()
            self._fleet_step(self._fleet_before_tick)
            self._fleet_step(self._coordination_before_tick)
            failed = False
            try:
                self._tick(start)
            except Exception:  # the loop's boundary: log, count, keep the device alive
                logger.exception("tick failed")
                self._event("tick_failed", "error", "exception in tick; see the log")
                failed = True
            if self.link is not None and time.monotonic() >= next_telemetry:
                next_telemetry = time.monotonic() + self.telemetry_interval_s
                self._fleet_step(self._publish_telemetry)
            self._fleet_step(self._coordination_after_tick)
            self._fleet_step(self._fleet_after_tick)
            if self._reload_deferred and self._watch_old is None:
                self._reload_deferred = False
                self.reload()
            if failed:
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
        self._stop_fleet()
        self.write_status()
        self.state = State.STOPPED
        self.write_status()
        discovery.withdraw(self._announced)
        logger.info(
            "stopped after %d ticks (%d overruns); final snapshot %s",
            self.stats.ticks,
            self.stats.overruns,
            self.last_snapshot["path"] if self.last_snapshot else "not written",
        )
        return 0

    def _stop_fleet(self) -> None:
        """After the final snapshot: last telemetry, death, drain briefly, disconnect, close."""
        if self.link is not None:
            self._fleet_step(self._publish_deploy_reports)
            self._fleet_step(self._publish_telemetry)
            try:
                self.link.stop(drain_timeout_s=1.0)
            except Exception:  # shutting down: report and go on closing
                logger.exception("fleet link did not stop cleanly")
        if self.coordination is not None:
            self.coordination.close()
        if self.outbox is not None:
            self.outbox.close()
        if self.nonces is not None:
            self.nonces.close()
        self.deployer.close()

    def _tick(self, now: float) -> None:
        watched = self.deployer.watching_group if self._watch_old is not None else None
        for g in self.groups:
            if g.paused:
                continue
            if g.name == watched:
                self._tick_watched(g, now)
            elif g.tick(now, self.coordination):
                self._publish_actions(g)

    def _tick_watched(self, g: GroupRuntime, now: float) -> None:
        """A freshly deployed group: any exception or non-finite belief rolls it back."""
        try:
            stepped = g.tick(now, self.coordination)
            problem = None if not stepped or beliefs_finite(g.agents) else "non-finite beliefs"
        except Exception as err:  # the new bundle's boundary: roll back, do not crash
            logger.exception("group %s failed on its new bundle", g.name)
            stepped, problem = False, f"{type(err).__name__}: {err}"
        if problem is not None:
            self._rollback(g, problem)
            return
        if stepped:
            self._publish_actions(g)
            if self.deployer.watch_tick():
                old = self._watch_old
                self._watch_old = None
                if old is not None:
                    old.agents.release()
                self._publish_deploy_reports()

    @property
    def total_agents(self) -> int:
        return sum(g.agents.n_agents for g in self.groups)

    @property
    def telemetry_interval_s(self) -> float:
        return self.config.mqtt.telemetry_interval_s or self.profile.telemetry_interval_s

    def _find(self, name: str) -> GroupRuntime | None:
        return next((g for g in self.groups if g.name == name), None)

    def _group_sha(self, name: str) -> str | None:
        g = self._find(name)
        return None if g is None else g.bundle_sha256

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
            source = read_config(self.config_path)
            new_config = source.config
            profile = resolve_profile(source)
            budget = self._new_budget(profile)
            groups = self._build_groups(new_config, profile, budget, source)
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
            if (
                prev
                and prev.agents.key == g.agents.key
                and prev.agents.n_agents == g.agents.n_agents
            ):
                g.agents.load_state_dict(prev.agents.state_dict())
                if g.inbox is not None and prev.inbox is not None:
                    g.inbox = prev.inbox
                    g.obs = prev.inbox.obs
                    g.extra.update(prev.extra)
        for g in self.groups:
            g.agents.release()
        if new_config.mqtt != self.config.mqtt:
            logger.warning("[mqtt] changes take effect at the next restart")
        if new_config.coordination != self.config.coordination:
            logger.warning("[coordination] changes take effect at the next restart")
        self.config, self.profile, self.budget, self.groups = new_config, profile, budget, groups
        self.source = source
        self.deployer.bundle_keys = trusted_keys(new_config)
        self._set_base_rate(new_config.daemon.tick_hz_for(profile))
        self._bind_sources()
        self._subscribe_sources()
        self._rebirth()
        self.reloads_ok += 1
        self.last_reload_error = ""
        logger.info(
            "reloaded %s: %d group(s), %d agents", self.config_path, len(groups), self.total_agents
        )
        self.state = State.RUNNING
        self.notifier.ready(self._status_line())
        return True

    def _set_base_rate(self, hz: float) -> None:
        self.base_hz = hz
        factor = self.profile.thermal.throttled_tick_factor
        self.clock.set_rate(hz * (factor if self.thermal.throttled else 1.0))
        self.watchdog.stale_after_s = max(2.0 / (hz * factor), 2.0)

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

    def _event(
        self,
        kind: str,
        severity: str,
        detail: str,
        *,
        group: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record an event for the status file and publish it to the fleet (class ``event``).

        Noisy kinds (rejected input, refused commands) are published at most once per
        :data:`NOISY_EVENT_INTERVAL_S` per group; the next carries ``suppressed``.
        """
        now = time.time()
        self.events.append({"kind": kind, "severity": severity, "detail": detail, "time": now})
        del self.events[:-50]  # bounded: the newest 50 events
        if self.link is None:
            return
        payload = dict(data or {})
        if kind in _NOISY:
            key = (kind, group)
            last, suppressed = self._noisy.get(key, (-1e18, 0))
            mono = time.monotonic()
            if mono - last < NOISY_EVENT_INTERVAL_S:
                self._noisy[key] = (last, suppressed + 1)
                self.fleet_counters["events_suppressed"] += 1
                return
            self._noisy[key] = (mono, 0)
            if suppressed:
                payload["suppressed"] = suppressed
        self.fleet_counters["events_published"] += 1
        payload.update(n=self.fleet_counters["events_published"], name=kind)
        try:
            self.link.publish_event(
                EVENT_KINDS.get(kind, EventKind.OTHER),
                detail[:1024],
                severity=severity if severity in Severity.__members__.values() else "info",
                group=group,
                data=payload,
            )
        except EdgeAgentError as err:
            self.fleet_counters["events_published"] -= 1
            self.fleet_counters["publish_refused"] += 1
            logger.warning("event %s not published: %s", kind, err)

    # -- fleet ----------------------------------------------------------------------------------
    def _fleet_step(self, step: Callable[[], None]) -> None:
        """Run one piece of fleet work; its failure is logged and counted, never the tick's."""
        try:
            step()
        except Exception:  # the fleet's boundary: the agents keep ticking
            self.fleet_counters["errors"] += 1
            now = time.monotonic()
            if now - self._last_fleet_error > 60.0:
                self._last_fleet_error = now
                logger.exception("fleet work failed (logged at most once a minute)")

    def _fleet_before_tick(self) -> None:
        """Between ticks: link events, incoming messages, commands, the deployment's progress."""
        link, commands = self.link, self.commands
        if link is not None and commands is not None:
            link.pump()
            if link.online != self._was_online:
                self._was_online = link.online
                m = self.config.mqtt
                if link.online:
                    self._event("connectivity", "info", f"connected to {m.host}:{m.port}")
                else:
                    self._event("connectivity", "warning", f"lost {m.host}:{m.port}")
            for received in self._receive(link, min(commands.room, MAX_MESSAGES_PER_TICK)):
                body = received.envelope.body
                if isinstance(body, Command):
                    commands.offer(body)
                elif isinstance(body, ObservationBatch) and self.router is not None:
                    # An observation that reached the link before the router was in place.
                    if not self.router.deliver(received.topic, received.envelope):
                        self.fleet_counters["obs_unrouted"] += 1
                else:
                    self.fleet_counters["messages_ignored"] += 1
            answered = commands.process(MAX_COMMANDS_PER_TICK)
            for cmd, result in answered:
                self._publish_result(result)
                if result.code not in (ResultCode.OK, ResultCode.ACCEPTED) and (
                    cmd.name != "deploy_chunk"
                ):
                    self._event(
                        "command_refused",
                        "warning",
                        f"command {cmd.name} from key {cmd.key_id[:16]!r}: {result.code.value}: "
                        f"{result.detail}",
                        data={"code": result.code.value, "command": cmd.name},
                    )
            if answered:
                link.pump()  # results go out now, not after the groups' step
        ready = self.deployer.poll()
        if ready is not None:
            self._switch(ready)
        watched = self.deployer.watching_group
        if self._watch_old is not None and watched and self.deployer.watch_expired():
            g = self._find(watched)
            if g is not None:
                self._rollback(g, "the group did not step its watch_ticks within watch_timeout_s")
        self._publish_deploy_reports()
        self._report_rejected_input()

    def _receive(self, link: FleetLink, limit: int) -> list[Received]:
        """Up to ``limit`` incoming messages for the daemon; coordination messages met on the
        way go to the coordination runtime's bounded queue and do not count."""
        coordination = self.coordination
        if coordination is None:
            return link.receive(limit)
        out: list[Received] = []
        for _ in range(1 + coordination.config.max_inbox // MAX_MESSAGES_PER_TICK):
            batch = link.receive(limit - len(out))
            out.extend(m for m in batch if not coordination.handle(m))
            if not batch or len(out) >= limit:
                break
        return out

    def _coordination_before_tick(self) -> None:
        if self.coordination is not None:
            self.coordination.before_tick()

    def _coordination_after_tick(self) -> None:
        if self.coordination is not None:
            self.coordination.after_tick()

    def _fleet_after_tick(self) -> None:
        if self.link is not None:
            self.link.pump()  # sends this tick's messages now; commits the outbox first
            self.link.flush()

    def _publish_result(self, result: CommandResult) -> None:
        if self.link is None:
            return
        try:
            self.link.publish_result(result)
        except EdgeAgentError as err:
            self.fleet_counters["publish_refused"] += 1
            logger.warning("result of %s not published: %s", result.name, err)
        else:
            self.fleet_counters["results_published"] += 1

    def _publish_deploy_reports(self) -> None:
        for report in self.deployer.take_reports():
            if report.nonce is not None and report.code is not None:
                self._publish_result(
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

    def _publish_actions(self, g: GroupRuntime) -> None:
        sink = g.sink
        if sink is None:
            if isinstance(g.config.sink, LogSink) and g.env is None:
                logger.debug("group %s step %d actions %s", g.name, g.steps, g.agents.action[:4])
            return
        if self.link is None:
            return
        qos = self.config.mqtt.action_qos
        for body in sink.bodies(g.steps, g.agents.action):
            try:
                self.link.publish(ActionBatch.TYPE, body, "action", topic=sink.topic, qos=qos)
            except EdgeAgentError:
                sink.dropped += 1
                self.fleet_counters["actions_refused"] += 1
            else:
                sink.batches += 1
                sink.published += body.n_agents

    def _report_rejected_input(self) -> None:
        for g in self.groups:
            inbox = g.inbox
            if inbox is None:
                continue
            rejected = inbox.counters["batches_rejected"] + inbox.counters["rows_rejected"]
            seen = g.extra.get("rejected_reported", 0)
            if rejected > seen:
                g.extra["rejected_reported"] = rejected
                self._event(
                    "rejected_input",
                    "warning",
                    f"group {g.name}: observations dropped: {inbox.last_reject}",
                    group=g.name,
                    data={
                        "batches_rejected": inbox.counters["batches_rejected"],
                        "rows_rejected": inbox.counters["rows_rejected"],
                    },
                )

    def _publish_telemetry(self) -> None:
        if self.link is None:
            return
        p50, p99 = self.stats.percentiles_ms()
        counters: dict[str, int | float] = {
            "telemetry.n": self.fleet_counters["telemetry_published"] + 1,
            "daemon.started_at": self.started_wall,
            "tick.hz": round(self.clock.hz, 4),
            "tick.missed": self.stats.missed,
        }
        for key, value in self.fleet_counters.items():
            if key != "telemetry_published":
                counters[f"fleet.{key}"] = value
        if self.commands is not None:
            for key, value in self.commands.stats().items():
                counters[f"commands.{key}"] = value
        for key, value in self.deployer.stats().items():
            if isinstance(value, int) and not isinstance(value, bool):
                counters[f"deploy.{key}"] = value
        io = {"io.obs_rows": 0, "io.rows_rejected": 0, "io.batches_rejected": 0}
        io["io.stale_agent_ticks"] = 0
        for g in self.groups:
            if g.inbox is not None:
                io["io.obs_rows"] += g.inbox.counters["rows"]
                io["io.rows_rejected"] += g.inbox.counters["rows_rejected"]
                io["io.batches_rejected"] += g.inbox.counters["batches_rejected"]
                io["io.stale_agent_ticks"] += g.inbox.counters["stale_agent_ticks"]
        counters.update(io)
        counters["paused_groups"] = sum(1 for g in self.groups if g.paused)
        if self.coordination is not None:
            counters.update(self.coordination.telemetry_counters())
        self.link.publish_telemetry(
            {
                "uptime_s": round(time.monotonic() - self.started_mono, 3),
                "rss_bytes": self.rss.last or self.rss.sample(),
                "budget_used_bytes": self.budget.used,
                "budget_total_bytes": self.budget.total,
                "ticks": self.stats.ticks,
                "tick_p50_ms": round(p50, 4),
                "tick_p99_ms": round(p99, 4),
                "overruns": self.stats.overruns,
                "groups": {g.name: g.agents.n_agents for g in self.groups},
                "cpu_temp_c": self.thermal.last_temp_c,
                "counters": counters,
            }
        )
        self.fleet_counters["telemetry_published"] += 1

    def _birth(self) -> Birth:
        return Birth(
            software_version=__version__,
            profile=self.profile.name,
            budget_bytes=self.budget.total,
            groups={
                g.name: GroupInfo(
                    agents=g.agents.n_agents,
                    bundle=g.bundle_name,
                    bundle_sha256=g.bundle_sha256,
                )
                for g in self.groups
            },
            capabilities=[*CAPABILITIES, *(["coordination"] if self.coordination else [])],
        )

    def _rebirth(self) -> None:
        """The node's groups changed: publish a new birth."""
        if self.link is not None:
            self.link.set_birth(self._birth())

    # -- commands (applied between ticks) -------------------------------------------------------
    def _group_for_command(self, name: str) -> GroupRuntime | Outcome:
        g = self._find(name)
        if g is None:
            known = ", ".join(x.name for x in self.groups)
            return Outcome(ResultCode.BAD_ARGS, f"no group {name!r} (groups: {known})")
        if g.name == self.deployer.watching_group:
            return Outcome(ResultCode.BUSY, f"group {name!r} is being watched after a deployment")
        return g

    def _cmd_ping(self, _args: Any, _cmd: Command) -> Outcome:
        return Outcome(
            ResultCode.OK,
            "pong",
            {
                "uptime_s": round(time.monotonic() - self.started_mono, 3),
                "ticks": self.stats.ticks,
            },
        )

    def _cmd_snapshot(self, _args: Any, _cmd: Command) -> Outcome:
        before = self.last_snapshot
        self.snapshot(force=True)
        after = self.last_snapshot
        if after is None or after is before:
            return Outcome(ResultCode.FAILED, "snapshot not written; see the events")
        return Outcome(
            ResultCode.OK, after["path"], {"path": after["path"], "bytes": after["bytes"]}
        )

    def _cmd_rebirth(self, _args: Any, _cmd: Command) -> Outcome:
        self._rebirth()
        return Outcome(ResultCode.OK, "birth published again")

    def _cmd_stop_group(self, args: GroupArgs, _cmd: Command) -> Outcome:
        g = self._group_for_command(args.group)
        if isinstance(g, Outcome):
            return g
        if g.paused:
            return Outcome(ResultCode.OK, f"group {g.name!r} already paused ({g.paused_reason})")
        g.paused, g.paused_reason = True, "command"
        logger.info("group %s stopped by a hub command", g.name)
        return Outcome(ResultCode.OK, f"group {g.name!r} stopped")

    def _cmd_start_group(self, args: GroupArgs, _cmd: Command) -> Outcome:
        g = self._group_for_command(args.group)
        if isinstance(g, Outcome):
            return g
        if not g.paused:
            return Outcome(ResultCode.OK, f"group {g.name!r} already running")
        if g.paused_reason != "command":
            return Outcome(
                ResultCode.FAILED,
                f"group {g.name!r} was paused by {g.paused_reason} degradation and resumes by "
                "itself",
            )
        g.paused, g.paused_reason = False, ""
        logger.info("group %s started by a hub command", g.name)
        return Outcome(ResultCode.OK, f"group {g.name!r} started")

    def _cmd_resize_group(self, args: ResizeArgs, _cmd: Command) -> Outcome:
        g = self._group_for_command(args.group)
        if isinstance(g, Outcome):
            return g
        n = args.agents
        total = self.total_agents - g.agents.n_agents + n
        if total > self.profile.max_agents:
            return Outcome(
                ResultCode.FAILED,
                f"{total} agents in all would exceed max_agents {self.profile.max_agents} of "
                f"profile {self.profile.name!r}",
            )
        old = g.agents.n_agents
        g.agents.resize(n)  # reserves first: BudgetError leaves the group as it was
        if g.env is not None:
            # The simulated world is rebuilt for the new size: every agent starts afresh.
            g.env = make_env(world_name(g.config), n, seed=g.config.seed)
            g.obs = g.env.reset()
            g.agents.reset()
        if g.inbox is not None:
            g.inbox.resize(n)
            g.obs = g.inbox.obs
        if g.sink is not None:
            g.sink.resize(n)
        self._rebirth()
        logger.info("group %s resized from %d to %d agents by a hub command", g.name, old, n)
        return Outcome(ResultCode.OK, f"group {g.name!r}: {old} -> {n} agents", {"agents": n})

    def _cmd_set_tick_rate(self, args: TickRateArgs, _cmd: Command) -> Outcome:
        factor = self.profile.thermal.throttled_tick_factor
        slowest = 1.0 / (args.hz * factor)
        if slowest * 2 > self.profile.watchdog_interval_s:
            return Outcome(
                ResultCode.BAD_ARGS,
                f"{args.hz:g} Hz is too slow for the {self.profile.watchdog_interval_s:g} s "
                f"watchdog (a throttled tick takes {slowest:g} s)",
            )
        old = self.base_hz
        self._set_base_rate(args.hz)
        logger.info("tick rate %.3g -> %.3g Hz by a hub command", old, args.hz)
        return Outcome(ResultCode.OK, f"{old:g} -> {args.hz:g} Hz", {"hz": self.clock.hz})

    def _cmd_deploy(self, args: DeployArgs, cmd: Command) -> Outcome:
        g = self._find(args.group)
        if g is not None and g.paused and g.name != self.deployer.watching_group:
            return Outcome(
                ResultCode.FAILED,
                f"group {g.name!r} is paused ({g.paused_reason}): a deployment needs it running "
                "to watch the new bundle",
            )
        return self.deployer.start(args, cmd.nonce)

    def _cmd_deploy_chunk(self, args: ChunkArgs, _cmd: Command) -> Outcome:
        return self.deployer.chunk(args)

    # -- deployment -----------------------------------------------------------------------------
    def _health_check(self, group: str, path: Path, steps: int, timeout_s: float) -> LoadedModel:
        """The deployment worker's check: load for ``group``, step a scratch group (any thread)."""
        config = self.config
        try:
            cfg = config.group(group)
        except KeyError:
            raise EdgeAgentError(f"no group {group!r} in the config") from None
        current = self._find(group)
        deadline = time.monotonic() + timeout_s
        loaded = load_group_model(with_bundle(cfg, path), config, trusted_keys(config))
        n = min(HEALTH_CHECK_AGENTS, current.agents.n_agents if current else cfg.count)
        scratch = AifAgentGroup(
            loaded.model, n, settings=loaded.settings, precision=cfg.precision, seed=cfg.seed
        )
        rng = np.random.default_rng(cfg.seed)
        num_obs = scratch.cm.num_obs
        obs = np.empty((n, len(num_obs)), dtype=np.int64)
        for step in range(steps):
            for m, o in enumerate(num_obs):
                obs[:, m] = rng.integers(0, o, size=n)
            scratch.step(obs)
            if not beliefs_finite(scratch):
                raise EdgeAgentError(f"non-finite beliefs after step {step + 1}")
            if time.monotonic() > deadline:
                raise EdgeAgentError(f"only {step + 1} of {steps} steps within {timeout_s:g} s")
        return loaded

    def _switch(self, ready: ReadyToSwitch) -> None:
        """Between ticks: run ``ready.group`` on the new bundle, keeping the old group to roll
        back to while it is watched."""
        index = next((i for i, g in enumerate(self.groups) if g.name == ready.group), None)
        if index is None:
            self.deployer.switch_failed(f"group {ready.group!r} no longer exists")
            return
        old = self.groups[index]
        loaded = ready.payload
        if not isinstance(loaded, LoadedModel):
            self.deployer.switch_failed("internal: the health check returned no model")
            return
        try:
            agents = AifAgentGroup(
                loaded.model,
                old.agents.n_agents,
                settings=loaded.settings,
                precision=old.config.precision,
                seed=old.config.seed,
                history_capacity=old.agents.history_capacity,
                budget=self.budget,
                name=old.name,
            )
        except EdgeAgentError as err:
            self.deployer.switch_failed(
                f"the old and the new group do not fit the budget together: {err}"
            )
            return
        new = GroupRuntime(
            config=with_bundle(old.config, ready.path),
            agents=agents,
            env=old.env,
            obs=old.obs,
            inbox=old.inbox,
            sink=old.sink,
            bundle_name=loaded.bundle_name,
            bundle_sha256=loaded.bundle_sha256,
            paused=old.paused,
            paused_reason=old.paused_reason,
        )
        try:
            config_group = self.config.group(old.name)
            self.deployer.switched(ready, model_spec_key(config_group))
        except (KeyError, OSError) as err:
            agents.release()
            self.deployer.switch_failed(f"cannot record the switch: {err}")
            return
        self.groups[index] = new
        self._watch_old = old
        self._rebirth()
        logger.info("group %s switched to bundle %s", old.name, ready.sha256[:12])

    def _rollback(self, g: GroupRuntime, problem: str) -> None:
        old = self._watch_old
        index = next((i for i, x in enumerate(self.groups) if x is g), None)
        if old is None or index is None:
            return
        old.obs = g.obs
        old.env = g.env
        self.groups[index] = old
        self._watch_old = None
        g.agents.release()
        self.deployer.rollback(problem)
        self._rebirth()
        self._publish_deploy_reports()

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
            "fleet": self._fleet_status(),
            "coordination": None if self.coordination is None else self.coordination.status(),
            "commands": None if self.commands is None else self.commands.stats(),
            "deploy": self.deployer.stats(),
            "overlay_problems": [p.detail for p in self.overlay_problems],
        }

    def _fleet_status(self) -> dict[str, Any] | None:
        if self.link is None:
            return None
        m = self.config.mqtt
        return {
            "node_id": self.node_id,
            "fleet": m.fleet,
            "broker": f"{m.host}:{m.port}",
            "online": self.link.online,
            "telemetry_interval_s": self.telemetry_interval_s,
            **self.fleet_counters,
            "link": self.link.stats(),
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
            if g.env is not None:
                world = format_summary(g.env.summary())
            elif g.inbox is not None:
                io = g.inbox.stats()
                world = (
                    f"mqtt: {io['rows']} observations, {io['rows_rejected']} rejected, "
                    f"{io['unobserved']} agents never observed"
                )
            else:
                world = ""
            logger.info(
                "  %-8s %6d agents %s | %s B/agent + %s shared | %s",
                g.name,
                g.agents.n_agents,
                g.agents.precision,
                g.agents.per_agent_nbytes(),
                format_bytes(g.agents.shared_nbytes),
                world,
            )


__all__ = ["Daemon", "GroupRuntime", "LoadedModel", "State", "build_groups", "load_group_model"]
