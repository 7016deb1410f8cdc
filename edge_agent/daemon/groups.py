"""The group table and its factory: a config's groups built, wired and admitted.

Each configured group becomes a :class:`GroupRuntime`: its agents (an
:class:`~edge_agent.core.agents.AifAgentGroup` on the model the config names, built-in or a
verified bundle, or the bundle a deployment put in its place), where its observations come from
(a simulated world, or an MQTT inbox) and where its actions go. :func:`build_groups` admits the
whole plan against the memory budget before anything is allocated; :func:`admit` is everything
the daemon checks before it runs a config, as ``check-config``, ``run`` and a reload call it.
Nothing here imports the daemon's service module.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    MqttSink,
    SimSource,
    describe_endpoint,
    resolve_profile,
)
from edge_agent.config.profiles import FirmwareProfile
from edge_agent.config.toml_lines import Problem
from edge_agent.coordination.runtime import CoordinationRuntime
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.errors import (
    BudgetError,
    BundleError,
    ConfigError,
    EdgeAgentError,
)
from edge_agent.fleet.agent_io import ActionPublisher, ObservationBuffer
from edge_agent.fleet.deploy import OverlayEntry
from edge_agent.sim import BatchEnv
from edge_agent.sim.registry import builtin_model, make_env

logger = logging.getLogger(__name__)


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

    def agents_finite(self) -> bool:
        """Whether the agents' state is finite (a new bundle's watch checks this every tick)."""
        return beliefs_finite(self.agents)

    def replaced(
        self, cfg: GroupConfig, agents: AifAgentGroup, loaded: LoadedModel
    ) -> GroupRuntime:
        """This group with new agents (a deployed bundle), on the same source and sink."""
        return GroupRuntime(
            config=cfg,
            agents=agents,
            env=self.env,
            obs=self.obs,
            inbox=self.inbox,
            sink=self.sink,
            bundle_name=loaded.bundle_name,
            bundle_sha256=loaded.bundle_sha256,
            paused=self.paused,
            paused_reason=self.paused_reason,
        )

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
            "source": describe_endpoint(self.config.source),
            "sink": describe_endpoint(self.config.sink),
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


def trusted_keys(config: DaemonConfig, source: ConfigFile | None = None) -> TrustedKeys | None:
    """The daemon's trusted signing keys, or None when none are configured.

    With ``source`` (the config file), a directory that cannot be used is a ConfigError at the
    line of ``[daemon] trusted_keys_dir``."""
    return _keys_from(config.daemon.trusted_keys_dir, source, ("daemon", "trusted_keys_dir"))


def hub_keys(config: DaemonConfig, source: ConfigFile | None = None) -> TrustedKeys | None:
    """Keys whose signed commands the daemon obeys: ``[mqtt] hub_keys_dir``, else the trusted."""
    if config.mqtt.hub_keys_dir is None:
        return trusted_keys(config, source)
    return _keys_from(config.mqtt.hub_keys_dir, source, ("mqtt", "hub_keys_dir"))


def _keys_from(
    directory: Path | None, source: ConfigFile | None, loc: tuple[str, ...]
) -> TrustedKeys | None:
    if directory is None:
        return None
    try:
        return TrustedKeys.from_dir(directory)
    except BundleError as err:
        if source is None:
            raise
        raise source.error([(loc, str(err))]) from err


def mqtt_password(config: DaemonConfig, source: ConfigFile | None = None) -> str | None:
    """The first line of ``[mqtt] password_file`` (None when it is not set); a file that cannot
    be read is a ConfigError, at the key's line when ``source`` is given."""
    path = config.mqtt.password_file
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problem = f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"
        if source is None:
            raise ConfigError(f"[mqtt] password_file {problem}") from err
        raise source.error([(("mqtt", "password_file"), problem)]) from err
    return lines[0] if lines else ""


def load_group_model(
    cfg: GroupConfig, config: DaemonConfig, keys: TrustedKeys | None
) -> LoadedModel:
    """The group's model and settings: built-in, or a verified int8 Active Inference bundle.

    A bundle's own settings apply, overridden by the settings the config sets explicitly. With
    ``[daemon] trusted_keys_dir`` set, bundles must be signed by one of those keys. With a ``sim``
    source the model's dimensions must match the simulated world's.
    """
    # A 'sim' sink without a 'sim' source is refused by GroupConfig itself, at its line.
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
    keys = trusted_keys(config, source)
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
        located = source.error(
            [
                (source.group_loc(owner_group.get(owner, owner), "count"), problem)
                for owner, problem in err.offenders
            ]
        )
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
        agents = make_agents(
            loaded, cfg, g.count, budget=budget, history_capacity=g.history_capacity_for(profile)
        )
        groups.append(make_runtime(cfg, agents, config, loaded))
    return groups


def make_agents(
    loaded: LoadedModel,
    cfg: GroupConfig,
    n_agents: int,
    *,
    budget: MemoryBudget | None = None,
    history_capacity: int = 0,
) -> AifAgentGroup:
    """The agents of group ``cfg`` on ``loaded`` (reserved in ``budget`` when given; without a
    budget, a scratch group such as a deployment's health check steps)."""
    return AifAgentGroup(
        loaded.model,
        n_agents,
        settings=loaded.settings,
        precision=cfg.precision,
        seed=cfg.seed,
        history_capacity=history_capacity,
        budget=budget,
        name=cfg.name,
    )


def healthy_steps(
    agents: AifAgentGroup, steps: int, *, deadline: float, timeout_s: float, seed: int | None
) -> None:
    """Step ``agents`` ``steps`` times on random valid observations; raise EdgeAgentError at
    the first non-finite state or when ``deadline`` (monotonic) passes."""
    rng = np.random.default_rng(seed)
    n = agents.n_agents
    num_obs = agents.cm.num_obs
    obs = np.empty((n, len(num_obs)), dtype=np.int64)
    for step in range(steps):
        for m, o in enumerate(num_obs):
            obs[:, m] = rng.integers(0, o, size=n)
        agents.step(obs)
        if not beliefs_finite(agents):
            raise EdgeAgentError(f"non-finite beliefs after step {step + 1}")
        if time.monotonic() > deadline:
            raise EdgeAgentError(f"only {step + 1} of {steps} steps within {timeout_s:g} s")


def new_budget(profile: FirmwareProfile) -> MemoryBudget:
    """An empty budget of ``profile``: its total, soft limit and daemon base."""
    return MemoryBudget(
        profile.total_budget_bytes,
        soft_limit_bytes=profile.soft_limit_bytes,
        base_bytes=profile.base_bytes,
        profile_name=profile.name,
    )


def admit(
    source: ConfigFile,
    *,
    overlay: dict[str, OverlayEntry] | None = None,
    problems: list[OverlayProblem] | None = None,
) -> tuple[FirmwareProfile, MemoryBudget, list[GroupRuntime]]:
    """Everything the daemon checks before it runs a config: ``check-config``, ``run`` and a
    SIGHUP reload all call this, so they refuse a file with the same lines.

    In order: the profile and what it allows (:func:`resolve_profile`), the key directories and
    the MQTT password file the daemon reads, every group's model, and the memory plan; each
    problem as ``file:line: field: problem`` at the key it is about. ``overlay`` and ``problems``
    as for :func:`build_groups` (the daemon's deployed bundles). Returns the profile, the budget
    and the built groups.
    """
    profile = resolve_profile(source)
    config = source.config
    if config.mqtt.enabled:
        hub_keys(config, source)
        mqtt_password(config, source)
    budget = new_budget(profile)
    groups = build_groups(
        config, profile, budget, overlay=overlay, problems=problems, source=source
    )
    return profile, budget, groups


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
