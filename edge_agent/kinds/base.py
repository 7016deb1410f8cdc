"""What a kind of agent group provides, and what every kind's loading shares.

A kind module's ``KIND`` is a :class:`GroupKind`. The daemon calls it in this order: ``load``
(the model, from a verified bundle or built in), ``check`` (the model against the group's
source), ``plan`` (what the agents will reserve, before anything is allocated) and ``build``
(the agents, reserved in the budget). Agents are an
:class:`~edge_agent.core.contract.AgentGroup`; the daemon wires them to a source and a sink by
what their ``io()`` says, and never asks which kind it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_agent.config.daemon import BuiltinModel, BundleModel, GroupConfig, SimSource
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle
    from edge_agent.core.budget import MemoryBudget, PlanRequest
    from edge_agent.core.contract import AgentGroup

__all__ = ["GroupKind", "LoadedModel", "Verify", "describe", "world_name"]


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """What a group runs, and which bundle it came from (``bundle_*`` None: built-in).

    ``kind`` names the group's kind (see :mod:`edge_agent.kinds`); ``own`` is what the kind
    loaded, which only the kind reads (the ``aif`` kind: an :class:`~edge_agent.kinds.aif.
    AifModel`, the model, its settings and what its agents learn; ``neural``: the policy, a
    :class:`~edge_agent.kinds.neural.NeuralModel`; ``perception``: both, the classifier in front
    of the Active Inference model). The rest of the daemon reads only the kind and the bundle.
    """

    kind: str
    own: object
    bundle_name: str | None = None
    bundle_sha256: str | None = None


class Verify(Protocol):
    """Loads and verifies a bundle a group names (``what``: "model", "perception")."""

    def __call__(self, path: Path, what: str) -> Bundle: ...


class GroupKind(Protocol):
    """One kind of agent group (a kind module's ``KIND``).

    Optional: ``metric_families``, a tuple of
    :class:`~edge_agent.core.contract.MetricFamily` (the numbers its groups report beyond every
    group's, and their totals over the node); a kind without it reports none.
    """

    name: str
    shares_beliefs: bool
    """Whether its agents may take part in coordination (Active Inference beliefs)."""
    plans: bool
    """Whether its agents follow a ``[groups.planning]`` policy (Active Inference planning)."""
    learns: bool
    """Whether its agents learn their model by a ``[groups.learning]`` table."""

    def load(self, cfg: GroupConfig, bundle: Bundle | None, verify: Verify) -> LoadedModel:
        """The group's model: from ``bundle`` (its verified model bundle) or built in;
        ``verify`` loads any other bundle the group names."""
        ...

    def check(self, cfg: GroupConfig, loaded: LoadedModel) -> None:
        """ConfigError if ``loaded`` cannot run on the group's source (its world's sizes)."""
        ...

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        """What ``cfg.count`` agents will reserve, models first (nothing is reserved)."""
        ...

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
    ) -> AgentGroup:
        """The agents, reserved in ``budget`` when given (none: a preflight's scratch)."""
        ...


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


def describe(cfg: GroupConfig) -> str:
    """The group's model in a sentence of an error."""
    if isinstance(cfg.model, BuiltinModel):
        return f"model {cfg.model.name!r}"
    if isinstance(cfg.model, BundleModel):
        return f"bundle {cfg.model.path}"
    return f"kind {cfg.model.module!r}"


def sim_world(cfg: GroupConfig) -> tuple[str, bool] | None:
    """The group's simulated world and whether it produces feature vectors (None: no world)."""
    if not isinstance(cfg.source, SimSource):
        return None
    from edge_agent.sim.registry import get_workload  # noqa: PLC0415

    name = world_name(cfg)
    return name, get_workload(name).produces == "features"


def outcome_world_mismatch(cfg: GroupConfig, kind: str, world: str) -> ConfigError:
    return ConfigError(
        f"group {cfg.name!r}: world {world!r} produces outcome indices, a {kind} group "
        "takes feature vectors: use world 'sensors' or an mqtt source",
        path=None,
    )
