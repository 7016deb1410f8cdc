"""A group at run time: its agents, where observations come from and where actions go.

Every kind of agent group (:mod:`edge_agent.kinds`: ``aif``, ``neural``, ``perception``, or one
of one's own) runs here the same way, through the contract every group's agents satisfy
(:class:`~edge_agent.core.contract.AgentGroup`); nothing here asks which kind it has.

A :class:`GroupRuntime` owns its pipeline, one way: its source (a simulated world,
:class:`~edge_agent.sim.endpoints.WorldSource`, or an MQTT inbox shaped by the agents' ``io()``,
:class:`~edge_agent.fleet.agent_io.InboxSource`) -> the agents' step (or the coordination
runtime's, which wraps it) -> its sink (the world again, an MQTT publisher, the log). Source and
sink are :mod:`edge_agent.core.contract`'s protocols, chosen once by :func:`make_runtime`; nothing
after asks which ones a group has. The rest of the daemon asks a group to do things through its
verbs (pause, resize, halve its history, save and restore its state, carry over, be replaced by
a deployed bundle's group) and reads what it tells (``describe``, ``metrics``, ``footprint``);
nothing outside this module touches its agents or its fields. :func:`make_agents` builds the
agents of a loaded model through its kind (the factory, a deployment's preflight and its
switch all come through it) and :func:`plan_requests` says what they will reserve, before
anything is allocated. Nothing here imports the service module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.config.daemon import (
    BuiltinModel,
    BundleModel,
    GroupConfig,
    LogSink,
    MqttSink,
    SimSource,
    describe_endpoint,
)
from edge_agent.config.group_tables import hook
from edge_agent.core.budget import MemoryBudget, PlanRequest
from edge_agent.core.contract import (
    AgentGroup,
    Alerting,
    FleetPort,
    GroupEvent,
    Learns,
    MayLearn,
    MetricFamily,
    Paced,
    ReportsHealth,
    Scored,
    Sink,
    Source,
    TickWindow,
)
from edge_agent.core.health_window import HealthSummary, MeasureStats
from edge_agent.daemon.shadow import ShadowRun
from edge_agent.errors import EdgeAgentError
from edge_agent.kinds import get_kind
from edge_agent.kinds.base import GroupKind, LoadedModel, world_name
from edge_agent.sim.endpoints import WorldSource

if TYPE_CHECKING:
    # Imported only by a daemon with [mqtt] enabled (or an MQTT source, sink):
    from edge_agent.coordination.runtime import CoordinationRuntime, GroupBinding

logger = logging.getLogger(__name__)

Agents = AgentGroup


def io_signature(agents: Agents) -> tuple[object, ...]:
    """What the group's source and sink are built for: a new model must match it to be
    switched in place (kind, observation width, action layout)."""
    return agents.io_signature()


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a group costs, read at once: its agents, their precision, the bytes of one agent
    (state and history) and of its model, shared by every group that runs it."""

    agents: int
    precision: str
    bytes_per_agent: int
    shared_bytes: int


@dataclass
class GroupRuntime:
    """A configured group: its agents, the source its observations come from and the sink its
    actions go to (:mod:`edge_agent.core.contract`'s :class:`Source` and :class:`Sink`; which
    ones, :func:`make_runtime` chose from the config once).

    Others ask it to do things (the verbs below) and read what it tells them (``describe``,
    ``metrics``, ``footprint``); none reaches into its agents.
    """

    config: GroupConfig
    agents: Agents
    source: Source
    sink: Sink
    bundle_name: str | None = None
    bundle_sha256: str | None = None
    #: The group's kind (:mod:`edge_agent.kinds`): what it reports beyond every group's numbers.
    group_kind: GroupKind | None = field(default=None, repr=False)
    coordination: CoordinationRuntime | None = field(default=None, init=False, repr=False)
    _paused: bool = field(default=False, init=False)
    _paused_reason: str = field(default="", init=False)
    _steps: int = field(default=0, init=False)
    _step: Callable[[np.ndarray, float, np.ndarray | None, np.ndarray | None], np.ndarray] = (
        field(init=False, repr=False))
    #: Agents told how long each tick has left (:class:`Paced`), and when their last step
    #: returned (monotonic; None: they did not step in the last tick).
    _paced: Paced | None = field(default=None, init=False, repr=False)
    _returned_at: float | None = field(default=None, init=False, repr=False)
    #: Agents that raise events of their own (:class:`Alerting`), asked between ticks.
    _alerting: Alerting | None = field(default=None, init=False, repr=False)
    #: The agents' learning (:class:`MayLearn`; None: they do not learn).
    _learning: Learns | None = field(default=None, init=False, repr=False)
    #: Agents that measure their health (:class:`ReportsHealth`), and the last window's.
    _reports_health: ReportsHealth | None = field(default=None, init=False, repr=False)
    health: HealthSummary | None = field(default=None, init=False)
    #: A deployment's candidate stepped beside this group (docs/health.md "Shadow evaluation").
    _shadow: ShadowRun | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._step = self.agents.advance
        self._paced = self.agents if isinstance(self.agents, Paced) else None
        self._alerting = self.agents if isinstance(self.agents, Alerting) else None
        self._learning = self.agents.learning if isinstance(self.agents, MayLearn) else None
        self._reports_health = self.agents if isinstance(self.agents, ReportsHealth) else None

    def coordinate(self, runtime: CoordinationRuntime | None) -> None:
        """From now on step and reset through ``runtime`` (peers' evidence, holders' task
        preferences) if the group has a coordination table (admission lets only kinds that share
        beliefs have one); wrapped once here, not asked each tick."""
        if runtime is None or self.config.coordination is None:
            return
        name, agents = self.name, self.agents

        def step(obs: np.ndarray, now: float, outcomes: np.ndarray | None,
                 starts: np.ndarray | None) -> np.ndarray:
            del outcomes  # an Active Inference group observes only its outcomes
            if starts is not None:  # (the engine drops their evidence not sent yet too)
                runtime.reset(name, agents, starts)
            return runtime.step(name, agents, obs, now)

        self.coordination, self._step = runtime, step

    def coordination_binding(self) -> GroupBinding | None:
        """What the coordination runtime follows of the group (None: it has no coordination
        table); imported only by a daemon that coordinates."""
        if self.config.coordination is None:
            return None
        from edge_agent.coordination.runtime import GroupBinding  # noqa: PLC0415 - [mqtt] only

        return GroupBinding(self.agents, self.config.coordination)

    # -- what the group tells ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def n_agents(self) -> int:
        return self.agents.n_agents

    @property
    def history_capacity(self) -> int:
        """Steps of history kept per agent."""
        return self.agents.history_capacity

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def paused_reason(self) -> str:
        """What paused the group (``command``, ``memory``, ``thermal``); empty while it runs."""
        return self._paused_reason

    @property
    def steps(self) -> int:
        """Batched steps so far."""
        return self._steps

    @property
    def learning(self) -> Learns | None:
        """The group's learning, with the verbs on it (None: its agents do not learn)."""
        return self._learning

    @property
    def kind(self) -> str:
        """The kind's name (the first item of the agents' I/O signature)."""
        return str(self.agents.io_signature()[0])

    def io_signature(self) -> tuple[object, ...]:
        """What the group's source and sink are built for (see :func:`io_signature`)."""
        return io_signature(self.agents)

    def footprint(self) -> Footprint:
        a = self.agents
        return Footprint(a.n_agents, a.precision, a.per_agent_nbytes(), a.shared_nbytes)

    def metrics(self) -> dict[str, object]:
        """The group's numbers: every group's (``agents``, ``steps``, ``paused``,
        ``bytes_per_agent``), then its kind's (:meth:`AgentGroup.metrics`)."""
        numbers: dict[str, object] = {
            "agents": self.agents.n_agents,
            "steps": self._steps,
            "paused": self._paused,
            "bytes_per_agent": self.agents.per_agent_nbytes(),
        }
        numbers.update(self.agents.metrics())
        return numbers

    def metric_families(self) -> tuple[MetricFamily, ...]:
        """The node's totals the group's kind adds to (planning, learning, ...)."""
        return getattr(self.group_kind, "metric_families", ())

    def tick(
        self,
        now: float,
        vet: Callable[[], None] | None = None,
        window: TickWindow | None = None,
    ) -> bool:
        """One tick: the source's inputs -> one batched step of every agent (through
        coordination when it takes part: :meth:`coordinate`) -> the sink. False if the group is
        paused or the source had nothing to step on yet. ``vet`` (a deployment's watch) runs
        between the step and the sink: it raises to keep the actions from the sink.
        ``window``: when the tick must end; agents that can yield to it (:class:`Paced`) are
        told how long it has left and how long the last tick went on after their step."""
        returned, self._returned_at = self._returned_at, None
        if self._paused:
            return False
        taken = self.source.take()
        if taken is None:
            return False  # an inbox waits until every agent has had an observation
        obs, outcomes, starts = taken
        if self._paced is not None and window is not None:
            last = window.last_end
            rest = None if returned is None or last is None or last < returned else last - returned
            self._paced.pace(window.due - time.monotonic(), rest)
        actions = self._step(obs, now, outcomes, starts)  # (the agents of starts reset first)
        if self._paced is not None:
            self._returned_at = time.monotonic()
        self._steps += 1
        if vet is not None:
            vet()
        if self._shadow is not None:  # the same inputs, before the sink may change them
            self._shadow.step(obs, now, outcomes, starts, actions)
        self.sink.put(self._steps, actions)
        return True

    # -- verbs: what others ask of a group ------------------------------------------------------
    def connect(self, port: FleetPort) -> None:
        """Hand the node's fleet link to the source and the sink (an MQTT inbox listens, an
        MQTT sink publishes through it)."""
        self.source.connect(port)
        self.sink.connect(port)

    def pause(self, reason: str) -> bool:
        """Stop stepping the group (``reason``: ``command``, ``memory``, ``thermal``); False
        if it was paused already (for whatever reason)."""
        if self._paused:
            return False
        self._paused, self._paused_reason = True, reason
        return True

    def resume(self, reason: str) -> bool:
        """Step the group again if ``reason`` paused it; False otherwise."""
        if not self._paused or self._paused_reason != reason:
            return False
        self._paused, self._paused_reason = False, ""
        return True

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group. The agents reserve first (a BudgetError leaves the group
        as it was); the source and the sink follow (a simulated world is built again: every
        agent starts afresh at the next tick)."""
        self.agents.resize(n_agents)
        self.source.resize(n_agents)
        self.sink.resize(n_agents)

    def halve_history(self, minimum: int) -> bool:
        """Keep half the steps of history (not fewer than ``minimum``); False, and nothing
        changed, when it keeps ``minimum`` or fewer already."""
        capacity = self.agents.history_capacity
        if capacity <= minimum:
            return False
        self.agents.resize_history(max(minimum, capacity // 2))
        return True

    def start_shadow(self, candidate: Agents, duration_s: float) -> ShadowRun:
        """Step ``candidate`` (agents of a deployed bundle, as many as this group's, reserved by
        the caller) beside this group from the next tick on, for ``duration_s`` (EdgeAgentError,
        nothing changed, when it cannot run as a shadow here)."""
        if self._shadow is not None:
            raise EdgeAgentError(f"group {self.name!r} already runs a shadow")
        self._shadow = ShadowRun(self.agents, candidate, group=self.name, duration_s=duration_s)
        return self._shadow

    def end_shadow(self) -> None:
        """Stop stepping the shadow (its owner finishes it)."""
        self._shadow = None

    def release(self) -> None:
        """Give every reservation of the agents back to the budget (the group is done)."""
        self.agents.release()

    def carry_over(self, prev: GroupRuntime) -> bool:
        """Take over ``prev``'s beliefs and histories (and its source's pending input) when a
        reload kept its model and size; False (nothing taken) otherwise."""
        if not self.restore(prev.snapshot_meta(), prev.agents.state_dict()):
            return False
        self.source.carry_over(prev.source)
        return True

    def snapshot_meta(self) -> dict[str, object]:
        """What a snapshot records of the group to know its state again: the model's identity
        and the group's size."""
        return {"key": self.agents.key, "agents": self.agents.n_agents}

    def state(self) -> dict[str, np.ndarray]:
        """The agents' state (their own arrays: write them out now, do not keep them)."""
        return self.agents.state_dict()

    def restore(self, meta: Mapping[str, object], state: Mapping[str, np.ndarray]) -> bool:
        """Load ``state`` saved with ``meta`` (:meth:`snapshot_meta`) if it is of this group's
        model and size (False, nothing loaded, otherwise). EdgeAgentError: a state that does not
        fit the agents."""
        if meta.get("key") != self.agents.key or meta.get("agents") != self.agents.n_agents:
            return False
        self.agents.load_state_dict(state)
        return True

    def rejected_input(self) -> tuple[str, dict[str, int]] | None:
        """Input the source dropped since the last call: its last reason and counters (None:
        nothing new)."""
        return self.source.rejected()

    def alerts(self) -> list[GroupEvent]:
        """Events the agents raised since the last call (a neural group's observations out of
        its calibrated range: :mod:`edge_agent.neural.input_range`); usually none."""
        return [] if self._alerting is None else self._alerting.alerts()

    def close_health_window(self) -> HealthSummary | None:
        """End the group's health reporting window (docs/health.md): its summary, with the
        world's ``score`` per agent over the window where its source defines one, kept as
        :attr:`health` for the status and the text file until the next (None: the group
        measures none)."""
        if self._reports_health is not None:
            summary = self._reports_health.health_summary()
            scores = self.source.score_window() if isinstance(self.source, Scored) else None
            if summary is not None and scores is not None and scores.size:
                summary = HealthSummary(
                    summary.agent_steps,
                    {**summary.measures, "score": MeasureStats.of(scores)},
                    summary.drift,
                )
            self.health = summary
        return self.health

    @property
    def model_identity(self) -> str:
        """What the group's health is the health of: its bundle's ``name@version``, or the
        built-in model's name (the hub compares like with like)."""
        return self.bundle_name or describe_model(self.config)

    def input_counters(self) -> dict[str, int]:
        """The source's cumulative input counters (empty for a simulated world)."""
        return self.source.counters()

    def report_line(self) -> str:
        """The group's source in one line, for the demo's report."""
        return self.source.report_line()

    def warm_up(self) -> None:
        """Run the group's kernels once so the first real tick is not cold, then put the
        state back (Active Inference groups keep their histories untouched)."""
        self.agents.warm_up(self.source.obs)

    def agents_finite(self) -> bool:
        """Whether the agents' state is finite (a new bundle's watch checks this every tick)."""
        return agents_finite(self.agents)

    def replaced(
        self,
        cfg: GroupConfig,
        loaded: LoadedModel,
        *,
        budget: MemoryBudget,
        threads: int,
        workers: int,
    ) -> GroupRuntime:
        """This group on a new model (a deployed bundle): agents of ``loaded`` as many as this
        group's, with as much history, reserved in ``budget`` (a BudgetError leaves everything
        as it was), on the same source and sink (the two groups share them: a rollback puts
        this one back as it is)."""
        agents = make_agents(
            loaded,
            self.config,
            self.agents.n_agents,
            budget=budget,
            history_capacity=self.agents.history_capacity,
            threads=threads,
            workers=workers,
        )
        new = GroupRuntime(
            config=cfg,
            agents=agents,
            source=self.source,
            sink=self.sink,
            bundle_name=loaded.bundle_name,
            bundle_sha256=loaded.bundle_sha256,
            group_kind=get_kind(loaded.kind),
        )
        new._paused, new._paused_reason = self._paused, self._paused_reason
        new.coordinate(self.coordination)
        return new

    def describe(self) -> dict[str, Any]:
        a = self.agents
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "model": describe_model(self.config),
            "bundle": self.bundle_name,
            "bundle_sha256": self.bundle_sha256,
            "health": None
            if self.health is None
            else {"model": self.model_identity, **self.health.as_dict()},
            "agents": a.n_agents,
            **a.describe(),
            "precision": a.precision,
            "priority": self.config.priority,
            "paused": self._paused,
            "paused_reason": self._paused_reason,
            "history_capacity": a.history_capacity,
            "bytes_per_agent": a.per_agent_nbytes(),
            "shared_model_bytes": a.shared_nbytes,
            "steps": self._steps,
            "source": describe_endpoint(self.config.source),
            "sink": describe_endpoint(self.config.sink),
        }
        for _key, table in self.config.tables:  # what the kind's tables show (perception)
            if (status := hook(table, "status")) is not None:
                out.update(status())
        out.update(self.source.describe())
        out.update(self.sink.describe())
        return out


class ActionLog:
    """A ``log`` sink: the first actions of each step to the daemon's debug log."""

    def __init__(self, group: str) -> None:
        self.group = group

    def put(self, tick: int, actions: np.ndarray) -> None:
        logger.debug("group %s step %d actions %s", self.group, tick, actions[:4])

    def resize(self, n_agents: int) -> None:
        del n_agents

    def connect(self, port: FleetPort) -> None:
        del port

    def describe(self) -> dict[str, Any]:
        return {}


class Sinks:
    """Several sinks in order: a simulated world, then the configured ``mqtt`` or ``log``
    sink."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def put(self, tick: int, actions: np.ndarray) -> None:
        for sink in self.sinks:
            sink.put(tick, actions)

    def resize(self, n_agents: int) -> None:
        for sink in self.sinks:
            sink.resize(n_agents)

    def connect(self, port: FleetPort) -> None:
        for sink in self.sinks:
            sink.connect(port)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sink in self.sinks:
            out.update(sink.describe())
        return out


def describe_model(cfg: GroupConfig) -> str:
    if isinstance(cfg.model, BuiltinModel):
        return cfg.model.name
    if isinstance(cfg.model, BundleModel):
        return f"bundle {cfg.model.path}"
    return f"kind {cfg.model.module}"


def model_spec_key(cfg: GroupConfig) -> str:
    """The config's model of a group as canonical JSON (what a deployment overlays)."""
    return json.dumps(dataclasses.asdict(cfg.model), sort_keys=True, default=str)


def with_bundle(cfg: GroupConfig, path: Path) -> GroupConfig:
    """``cfg`` running the bundle at ``path`` instead of its configured model."""
    update: dict[str, Any] = {"model": BundleModel(type="bundle", path=path)}
    if isinstance(cfg.source, SimSource) and cfg.source.world is None:
        update["source"] = SimSource(type="sim", world=world_name(cfg))
    return dataclasses.replace(cfg, **update)


# -- building agents ---------------------------------------------------------------------------
def make_agents(
    loaded: LoadedModel,
    cfg: GroupConfig,
    n_agents: int,
    *,
    budget: MemoryBudget | None = None,
    history_capacity: int = 0,
    threads: int = 1,
    workers: int = 1,
) -> Agents:
    """The agents of group ``cfg`` on ``loaded`` (reserved in ``budget`` when given; without a
    budget, a scratch group such as a deployment's preflight steps). ``threads``: intra-op
    threads of a neural backend (the profile's ``inference_threads``); ``workers``: processes
    that step an Active Inference group's blocks (:meth:`GroupConfig.workers_for`)."""
    return get_kind(loaded.kind).build(
        loaded,
        cfg,
        n_agents,
        budget=budget,
        history_capacity=history_capacity,
        threads=threads,
        workers=workers,
    )


def plan_requests(
    loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int = 1
) -> list[PlanRequest]:
    """What ``cfg.count`` agents of ``loaded`` will reserve, models first, as
    :meth:`~edge_agent.core.budget.MemoryBudget.plan` takes it (probes of one agent: nothing of
    the budget is touched); ``workers`` as for :func:`make_agents`."""
    return get_kind(loaded.kind).plan(loaded, cfg, history_capacity, workers)


def make_runtime(cfg: GroupConfig, agents: Agents, loaded: LoadedModel) -> GroupRuntime:
    """Wire a group's agents to its source and sink, chosen here once by the config's ``type``:
    a ``sim`` source is a world that also takes the actions (before the configured sink, if
    that is not the world itself); an ``mqtt`` source an inbox shaped by the agents' ``io()``;
    an ``mqtt`` sink a publisher, a ``log`` sink the debug log."""
    n = agents.n_agents
    sinks: list[Sink] = []
    source: Source
    if isinstance(cfg.source, SimSource):
        world = WorldSource(world_name(cfg), n, seed=cfg.seed)
        source = world
        sinks.append(world.sink)
    else:
        from edge_agent.fleet.agent_io import (  # noqa: PLC0415 - MQTT sources only
            FeatureBuffer,
            InboxSource,
            ObservationBuffer,
        )

        io = agents.io()
        buffer = (
            FeatureBuffer(cfg.name, n, io.features, io.frame)
            if io.features is not None
            else ObservationBuffer(cfg.name, n, io.num_obs)
        )
        source = InboxSource(cfg.source.topic, buffer)
    if isinstance(cfg.sink, MqttSink):
        from edge_agent.fleet.agent_io import ActionPublisher  # noqa: PLC0415 - MQTT sinks only

        io = agents.io()
        sinks.append(
            ActionPublisher(cfg.name, cfg.sink.topic, n, io.actions, continuous=io.continuous)
        )
    elif isinstance(cfg.sink, LogSink):
        sinks.append(ActionLog(cfg.name))
    return GroupRuntime(
        config=cfg,
        agents=agents,
        source=source,
        sink=sinks[0] if len(sinks) == 1 else Sinks(*sinks),
        bundle_name=loaded.bundle_name,
        bundle_sha256=loaded.bundle_sha256,
        group_kind=get_kind(loaded.kind),
    )


def preflight_steps(
    agents: Agents, steps: int, *, deadline: float, timeout_s: float, seed: int | None
) -> None:
    """A deployment's preflight: step ``agents`` ``steps`` times on random valid inputs; raise
    EdgeAgentError at the first non-finite state or when ``deadline`` (monotonic) passes."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        obs, outcomes = agents.random_inputs(rng)
        agents.advance(obs, None, outcomes)
        if not agents.finite():
            raise EdgeAgentError(f"non-finite state after step {step + 1}")
        if time.monotonic() > deadline:
            raise EdgeAgentError(f"only {step + 1} of {steps} steps within {timeout_s:g} s")


def agents_finite(agents: Agents) -> bool:
    """Whether the state a deployment's watch checks is finite (see ``AgentGroup.finite``)."""
    return agents.finite()
