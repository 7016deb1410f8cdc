"""The ``aif`` kind: Active Inference agents on a built-in model or an ``aif`` bundle.

Its agents are :class:`~edge_agent.core.agents.AifAgentGroup`; observations are one outcome
index per modality, actions one choice per control factor. A large group is stepped by forked
workers as well (``workers``). The only kind whose agents may take part in coordination, and
the only one that learns: with a ``[groups.learning]`` table its agents learn
(:mod:`edge_agent.core.learning`: shared counts, also under a planning policy and on workers;
per-agent counts, on one process), and their trials end at the world's episode starts (``pD``
learns there).

Its groups report two families of numbers beyond every group's (:data:`PLANNING_METRICS`,
the groups with a planning policy, and :data:`LEARNING_METRICS`, the groups that learn): the
per-group keys their agents' ``metrics()`` give, and the node's totals over those groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.aif.planning import PlanningPolicy
from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings, BeliefHistory, settings_from_json
from edge_agent.config.daemon import BuiltinModel, GroupConfig, SimSource
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.contract import MetricFamily
from edge_agent.core.health_table import HealthTable
from edge_agent.errors import BundleError, ConfigError, InputError
from edge_agent.kinds.base import (
    GroupKind,
    LoadedModel,
    Verify,
    describe,
    sim_world,
    world_name,
)
from edge_agent.sim.registry import builtin_model

if TYPE_CHECKING:
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.aif.learning_table import LearningTable
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.bundle.loader import Bundle
    from edge_agent.core.budget import MemoryBudget, PlanRequest

#: The group's ``[groups.learning]`` table, by its key: the learning modules (about 2,400
#: lines) are imported only for a group that has one.
_LEARNING_KEY = "learning"

__all__ = [
    "KIND",
    "LEARNING_METRICS",
    "PLANNING_METRICS",
    "AifKind",
    "AifModel",
    "aif_model",
    "aif_of",
    "bundle_settings",
    "check_dims",
    "group_learning",
    "learning_of",
    "plan_aif",
    "plan_learning",
]


@dataclass(frozen=True)
class AifModel:
    """What the ``aif`` kind loads (a group's :attr:`LoadedModel.own
    <edge_agent.kinds.base.LoadedModel.own>`): the Active Inference model, the settings its
    agents run with and what they learn (None: a frozen model). The ``perception`` kind holds
    one too, behind its classifier."""

    model: GenerativeModel | QuantizedModel
    settings: AifSettings
    learning: LearningSpec | None = None


def aif_of(loaded: LoadedModel) -> AifModel | None:
    """The Active Inference model an ``aif`` group's kind loaded (None: another kind's)."""
    return loaded.own if isinstance(loaded.own, AifModel) else None


def _aif(loaded: LoadedModel) -> AifModel:
    found = aif_of(loaded)
    if found is None:
        raise TypeError(f"internal: a {loaded.kind} model is no Active Inference model")
    return found


def aif_model(bundle: Bundle) -> QuantizedModel:
    """The bundle's Active Inference model (its manifest has one: checked by the caller)."""
    spec = bundle.manifest.aif
    assert spec is not None  # checked by the caller against the manifest's kind
    if spec.quant_scheme != SCHEME:
        raise BundleError(f"{bundle.path}: unknown quantization scheme {spec.quant_scheme!r}")
    return QuantizedModel.from_arrays(bundle.aif_arrays())


def bundle_settings(bundle: Bundle, cfg: GroupConfig) -> AifSettings:
    """The bundle's own settings, overridden by those the group's ``[groups.settings]`` sets
    explicitly."""
    spec = bundle.manifest.aif
    own = spec.settings if spec is not None else {}
    table = cfg.table_of(AifSettings)
    try:
        given = table.given if table is not None else frozenset()
        explicit = {name: getattr(table, name) for name in given}
        return dataclasses.replace(settings_from_json(own), **explicit)
    except ValueError as err:
        raise BundleError(f"{bundle.path}: invalid agent settings: {err}") from err


def group_learning(
    cfg: GroupConfig,
    model: GenerativeModel | QuantizedModel,
    counts: dict[str, dict[int, np.ndarray]] | None = None,
) -> LearningSpec | None:
    """What the group learns by its ``[groups.learning]`` table (None without one): of
    ``model``'s tables, from the ``counts`` its bundle carries or the table's prior scale.
    A ConfigError names the group and the table's key."""
    table = _learning_table(cfg)
    if table is None:
        return None
    floats = model.dequantize() if isinstance(model, QuantizedModel) else model
    try:
        return table.spec(floats.A, floats.B, floats.D, counts)
    except ConfigError as err:
        raise ConfigError(f"group {cfg.name!r}: {err}", path=None) from err


def _learning_table(cfg: GroupConfig) -> LearningTable | None:
    table = cfg.table(_LEARNING_KEY)
    if table is None:
        return None
    from edge_agent.aif.learning_table import LearningTable  # noqa: PLC0415 - a group that learns

    assert isinstance(table, LearningTable)  # GROUP_TABLES maps the key to it
    return table


def learning_of(loaded: LoadedModel) -> LearningSpec | None:
    """What an ``aif`` group's agents learn (its ``[groups.learning]`` table; None: a frozen
    model, or another kind's)."""
    aif = aif_of(loaded)
    return aif.learning if aif is not None else None


def check_dims(
    cfg: GroupConfig, model: GenerativeModel | QuantizedModel, world: str, note: str = ""
) -> None:
    """The model's (obs, states, controls) must be those of ``world``'s built-in model."""
    expected = builtin_model(world)
    dims = (model.num_obs, model.num_states, model.num_controls)
    want = (expected.num_obs, expected.num_states, expected.num_controls)
    if dims != want:
        raise ConfigError(
            f"group {cfg.name!r}: {describe(cfg)} has (obs, states, controls) {dims}, world "
            f"{world!r} needs {want}{note}",
            path=None,
        )


def plan_aif(
    aif: AifModel, cfg: GroupConfig, history_capacity: int, workers: int
) -> tuple[PlanRequest, PlanRequest]:
    """The model's and the agents' requests of ``cfg.count`` Active Inference agents (probes
    of one agent: nothing of the budget is touched). What a group of ``cfg.count`` reserves is
    planned from the probe at that count (:meth:`AifAgentGroup.bytes_for`): the model's tables
    (the same bytes whatever a group's size or path), and with the agents the group's own
    compiled tick where the compiled tick can take the model (the same at every size, kept or
    not by the group's measurement), so ``check-config`` plans what ``run`` reserves."""
    probe = new_agents(aif, cfg, 1, None, 0, sizing_only=True)
    # Each worker beyond the caller holds its own block scratch (start_workers reserves it
    # apart; planned with the group's agents, so that a group too large is named once).
    blocks = -(-cfg.count // probe.block_size)
    scratch = max(0, min(workers, blocks) - 1) * probe.scratch_nbytes(cfg.count)
    nbytes = probe.bytes_for(cfg.count, history_capacity) + scratch
    return (
        (f"model:{probe.key}", "model", probe.shared_nbytes, probe.key),
        (cfg.name, "agents", nbytes, None),
    )


def plan_learning(probe: AifAgentGroup, cfg: GroupConfig) -> PlanRequest:
    """What ``cfg.count`` agents' learning reserves besides the agents (``probe``: one agent of
    the group, which learns): the counts (per-agent counts: one copy per agent) and a shared
    group's own int8 codes of the learned tables, as :attr:`GroupLearning.nbytes
    <edge_agent.core.learning.GroupLearning.nbytes>` says."""
    learning = probe.learning
    assert learning is not None  # a probe of a group with [groups.learning]
    nbytes = learning.nbytes
    if learning.scope.name == "per_agent":
        per_agent = sum(counts.nbytes_per_agent for counts in learning.learner.counts)
        nbytes += (cfg.count - 1) * per_agent
    return (f"{cfg.name}:learning", "learning", nbytes, None)


def new_agents(
    aif: AifModel,
    cfg: GroupConfig,
    n_agents: int,
    budget: MemoryBudget | None,
    history_capacity: int,
    *,
    workers: int = 1,
    sizing_only: bool = False,
) -> AifAgentGroup:
    """The group's agents, learning what its ``[groups.learning]`` table says (their trials end
    at the world's episode starts); with ``workers`` above one their state is allocated in shared
    memory from the start (the caller starts the workers: nothing is copied then). Agents that
    neither learn nor coordinate keep no prior between ticks where it follows from their beliefs
    and actions (``keep_prior``, docs/memory.md: learning and coordination read and write
    it). ``sizing_only``: a plan's probe, made to know the bytes a group reserves
    (:class:`AifAgentGroup`'s ``sizing_only``: no compiled tick built, loaded or measured)."""
    kwargs: dict[str, Any] = {
        "settings": aif.settings,
        "precision": cfg.precision,
        "seed": cfg.seed,
        "history_capacity": history_capacity,
        "budget": budget,
        "name": cfg.name,
        "history_beliefs": cfg.table_or_default(BeliefHistory).value,
        "planning": cfg.table_or_default(PlanningPolicy),
        "shared_state": workers > 1,
        "drift": cfg.table_or_default(HealthTable).drift(),
        "sizing_only": sizing_only,
    }
    if aif.learning is None:
        keep_prior = cfg.coordination is not None
        return AifAgentGroup(aif.model, n_agents, keep_prior=keep_prior, **kwargs)
    from edge_agent.aif.learning_table import TABLE  # noqa: PLC0415 - a group that learns

    try:
        return AifAgentGroup(
            aif.model, n_agents, learning=aif.learning, trial_ends_at_reset=True, **kwargs
        )
    except InputError as err:
        raise ConfigError(f"{err} ({TABLE})", path=None) from err


def _planning_totals(groups: Sequence[Mapping[str, object]]) -> dict[str, float | int]:
    """The last tick's planning over every group with a planning policy (docs/planning.md):
    the node's numbers for telemetry, which leaves per-group numbers out."""
    agents = planned = deferred = 0
    age = 0.0
    for numbers in groups:
        keys = ("planning_duty_cycle", "planning_deferred", "plan_age_mean")
        duty, put_off, mean_age = (numbers.get(k) for k in keys)
        n = numbers.get("agents")
        if not (
            isinstance(duty, float | int)
            and isinstance(put_off, int)
            and isinstance(mean_age, float | int)
            and isinstance(n, int)
        ):
            continue
        agents += n
        planned += round(duty * n)
        deferred += put_off
        age += mean_age * n
    if agents == 0:
        return {}
    return {
        "agents": agents,
        "planned": planned,
        "deferred": deferred,
        "duty_cycle": round(planned / agents, 6),
        "plan_age_mean": round(age / agents, 3),
    }


def _learning_totals(groups: Sequence[Mapping[str, object]]) -> dict[str, float | int]:
    """Learning over every group whose agents learn ([groups.learning], docs/learning.md),
    from their metrics: count updates added up, divergence and surprise averaged over
    their agents. The node's numbers for telemetry; empty when no group learns."""
    agents = n_groups = updates = 0
    divergence = surprise = 0.0
    for numbers in groups:
        keys = ("learning_updates", "learning_divergence", "learning_surprise")
        count, kl, mean = (numbers.get(k) for k in keys)
        n = numbers.get("agents")
        if not (
            isinstance(count, int)
            and isinstance(kl, float | int)
            and isinstance(mean, float | int)
            and isinstance(n, int)
        ):
            continue
        agents += n
        n_groups += 1
        updates += count
        divergence += kl * n
        surprise += mean * n
    if agents == 0:
        return {}
    return {
        "groups": n_groups,
        "agents": agents,
        "updates": updates,
        "divergence": round(divergence / agents, 9),
        "surprise": round(surprise / agents, 6),
    }


PLANNING_METRICS = MetricFamily(
    "planning",
    "planning over the groups with a planning policy",
    _planning_totals,
    gauges=("*",),
    describe={
        "agents": "Agents in groups with a planning policy (not every tick).",
        "planned": "Agents of those groups that planned in the last tick.",
        "deferred": "Agents that had to plan but were put off by a planning budget in the last "
        "tick.",
        "duty_cycle": "Share of those agents that planned in the last tick.",
        "plan_age_mean": "Mean age in ticks of those agents' committed plans.",
    },
    group_gauges=("planning_duty_cycle", "planning_deferred", "plan_age_mean"),
    group_describe={
        "planning_duty_cycle": "Share of the group's agents that planned in the last tick "
        "(groups with a planning policy).",
        "planning_deferred": "Agents that had to plan but were put off by the planning budget in "
        "the last tick.",
        "plan_age_mean": "Mean age of the agents' committed plans, in ticks.",
    },
)
"""What a group with a planning policy reports (:meth:`AifAgentGroup.metrics`) and the node's
totals over those groups."""

LEARNING_METRICS = MetricFamily(
    "learning",
    "learning over the groups that learn",
    _learning_totals,
    gauges=("agents", "groups", "divergence", "surprise"),  # ``updates`` is a counter
    describe={
        "groups": "Groups whose agents learn their model ([groups.learning]).",
        "agents": "Agents in those groups.",
        "updates": "Updates of those groups' Dirichlet counts (each learned table's, added up).",
        "divergence": "KL divergence in nats of the learned tables from their priors (of the "
        "tables the counts stand for, per column), mean over those groups' agents.",
        "surprise": "Mean surprise -ln p(o) per tick of the agents' outcomes under the beliefs "
        "they predicted (nats, summed over modalities; a moving mean over about 100 ticks), "
        "mean over those groups' agents.",
    },
    group_gauges=("learning_divergence", "learning_surprise"),
    group_describe={
        "learning_updates": "Updates of the group's Dirichlet counts (each learned table's, "
        "added up; groups that learn).",
        "learning_divergence": "Mean over the learned tables' columns of the KL divergence in "
        "nats of the table the counts stand for from the one their prior stands for (0: "
        "nothing learned).",
        "learning_surprise": "The agents' mean surprise -ln p(o) per tick under the beliefs they "
        "predicted (nats, summed over modalities; at most 256 agents spread over the group), a "
        "moving mean over about 100 ticks.",
    },
)
"""What a learning group reports (:meth:`AifAgentGroup.metrics
<edge_agent.core.agents.AifAgentGroup.metrics>`) and the node's totals over the groups that
learn."""


class AifKind:
    name = "aif"
    shares_beliefs = True
    plans = True
    learns = True
    measures_health = True  # docs/health.md: [groups.health]
    metric_families = (PLANNING_METRICS, LEARNING_METRICS)

    def load(self, cfg: GroupConfig, bundle: Bundle | None, verify: Verify) -> LoadedModel:
        del verify  # an Active Inference group names no other bundle
        if bundle is None:
            # With a sim source the world's own model runs (the world simulates it).
            assert isinstance(cfg.model, BuiltinModel)
            name = world_name(cfg) if isinstance(cfg.source, SimSource) else cfg.model.name
            model = builtin_model(name)
            settings = cfg.table_or_default(AifSettings)
            own = AifModel(model, settings, group_learning(cfg, model))
            return LoadedModel(kind=self.name, own=own)
        manifest = bundle.manifest
        if manifest.aif is None:
            raise BundleError(f"{bundle.path}: bundle kind {manifest.kind!r} cannot run in a group")
        quantized = aif_model(bundle)
        learning = group_learning(cfg, quantized, bundle.aif_counts())
        return LoadedModel(
            kind=self.name,
            own=AifModel(quantized, bundle_settings(bundle, cfg), learning),
            bundle_name=f"{manifest.name}@{manifest.version}"[:256],
            bundle_sha256=bundle.sha256,
        )

    def plan_hints(self, cfg: GroupConfig) -> dict[str, str]:
        """What to change when what a group's learning reserves (its ``[groups.learning]``
        counts, :func:`plan_learning`'s owner) does not fit the budget."""
        table = _learning_table(cfg)
        if table is None:
            return {}
        return {
            f"{cfg.name}:learning": f"learn fewer tables in group {cfg.name!r}, or lower its count"
            + (
                ", or use float32 counts (counts_dtype)"
                if table.scope == "per_agent" and table.counts_dtype == "float64"
                else ""
            )
        }

    def check(self, cfg: GroupConfig, loaded: LoadedModel) -> None:
        world = sim_world(cfg)
        if world is None:
            return
        name, features = world
        if features:
            raise ConfigError(
                f"group {cfg.name!r}: world {name!r} produces feature vectors; an Active "
                "Inference model needs a perception bundle in front of it (perception = { type = "
                '"bundle", path = ... })',
                path=None,
            )
        check_dims(cfg, _aif(loaded).model, name)

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        aif = _aif(loaded)
        model, agents = plan_aif(aif, cfg, history_capacity, workers)
        if aif.learning is None:
            return [model, agents]
        return [model, agents, plan_learning(new_agents(aif, cfg, 1, None, 0), cfg)]

    def build(
        self,
        loaded: LoadedModel,
        cfg: GroupConfig,
        n_agents: int,
        *,
        budget: MemoryBudget | None,
        history_capacity: int,
        threads: int,
        workers: int,
    ) -> AifAgentGroup:
        del threads  # blocks of agents go to worker processes instead
        agents = new_agents(_aif(loaded), cfg, n_agents, budget, history_capacity, workers=workers)
        if workers > 1:
            try:
                agents.start_workers(workers)
            except BaseException:
                agents.release()
                raise
        return agents


KIND: GroupKind = AifKind()
