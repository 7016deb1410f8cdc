"""The ``aif`` kind: Active Inference agents on a built-in model or an ``aif`` bundle.

Its agents are :class:`~edge_agent.core.agents.AifAgentGroup`; observations are one outcome
index per modality, actions one choice per control factor. A large group is stepped by forked
workers as well (``workers``). The only kind whose agents may take part in coordination.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.config.daemon import BuiltinModel, GroupConfig, SimSource
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import BundleError, ConfigError
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
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.bundle.loader import Bundle
    from edge_agent.core.budget import MemoryBudget, PlanRequest

__all__ = ["KIND", "AifKind", "aif_model", "bundle_settings", "check_dims", "plan_aif"]


def aif_model(bundle: Bundle) -> QuantizedModel:
    """The bundle's Active Inference model (its manifest has one: checked by the caller)."""
    spec = bundle.manifest.aif
    assert spec is not None  # checked by the caller against the manifest's kind
    if spec.quant_scheme != SCHEME:
        raise BundleError(f"{bundle.path}: unknown quantization scheme {spec.quant_scheme!r}")
    return QuantizedModel.from_arrays(bundle.aif_arrays())


def bundle_settings(bundle: Bundle, cfg: GroupConfig) -> AifSettings:
    """The bundle's own settings, overridden by those the config sets explicitly."""
    spec = bundle.manifest.aif
    own = spec.settings if spec is not None else {}
    try:
        explicit = {name: getattr(cfg.settings, name) for name in cfg.settings.given}
        return dataclasses.replace(settings_from_json(own), **explicit)
    except ValueError as err:
        raise BundleError(f"{bundle.path}: invalid agent settings: {err}") from err


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
    loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
) -> tuple[PlanRequest, PlanRequest]:
    """The model's and the agents' requests of ``cfg.count`` Active Inference agents (probes
    of one agent: nothing of the budget is touched)."""
    assert loaded.model is not None
    probe = AifAgentGroup(
        loaded.model,
        1,
        settings=loaded.settings,
        precision=cfg.precision,
        history_beliefs=cfg.history_beliefs,
        planning=cfg.planning,
    )
    # Each worker beyond the caller holds its own block scratch (start_workers reserves it
    # apart; planned with the group's agents, so that a group too large is named once).
    blocks = -(-cfg.count // probe.block_size)
    scratch = max(0, min(workers, blocks) - 1) * probe.scratch_nbytes(cfg.count)
    nbytes = probe.bytes_for(cfg.count, history_capacity) + scratch
    return (
        (f"model:{probe.key}", "model", probe.shared_nbytes, probe.key),
        (cfg.name, "agents", nbytes, None),
    )


def new_agents(
    loaded: LoadedModel,
    cfg: GroupConfig,
    n_agents: int,
    budget: MemoryBudget | None,
    history_capacity: int,
    *,
    workers: int = 1,
) -> AifAgentGroup:
    """The agents; with ``workers`` above one their state is allocated in shared memory from
    the start (the caller starts the workers: nothing is copied then)."""
    assert loaded.model is not None
    return AifAgentGroup(
        loaded.model,
        n_agents,
        settings=loaded.settings,
        precision=cfg.precision,
        seed=cfg.seed,
        history_capacity=history_capacity,
        budget=budget,
        name=cfg.name,
        history_beliefs=cfg.history_beliefs,
        planning=cfg.planning,
        shared_state=workers > 1,
    )


class AifKind:
    name = "aif"
    shares_beliefs = True
    plans = True

    def load(self, cfg: GroupConfig, bundle: Bundle | None, verify: Verify) -> LoadedModel:
        del verify  # an Active Inference group names no other bundle
        if bundle is None:
            # With a sim source the world's own model runs (the world simulates it).
            assert isinstance(cfg.model, BuiltinModel)
            name = world_name(cfg) if isinstance(cfg.source, SimSource) else cfg.model.name
            return LoadedModel(builtin_model(name), cfg.settings)
        manifest = bundle.manifest
        if manifest.aif is None:
            raise BundleError(f"{bundle.path}: bundle kind {manifest.kind!r} cannot run in a group")
        return LoadedModel(
            aif_model(bundle),
            bundle_settings(bundle, cfg),
            f"{manifest.name}@{manifest.version}"[:256],
            bundle.sha256,
        )

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
        assert loaded.model is not None
        check_dims(cfg, loaded.model, name)

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        model, agents = plan_aif(loaded, cfg, history_capacity, workers)
        return [model, agents]

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
        agents = new_agents(loaded, cfg, n_agents, budget, history_capacity, workers=workers)
        if workers > 1:
            try:
                agents.start_workers(workers)
            except BaseException:
                agents.release()
                raise
        return agents


KIND: GroupKind = AifKind()
