"""The ``perception`` kind: a neural classifier in front of Active Inference agents.

From an ``aif+perception`` bundle, or an ``aif`` model (built-in or a bundle) with the group's
``perception = { type = "bundle", ... }`` table. Its agents are
:class:`~edge_agent.neural.perception.PerceptionAifGroup`: feature vectors in, evidence for the
model's first modalities (the others from the simulated world), actions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.config.daemon import GroupConfig
from edge_agent.errors import BundleError, ConfigError
from edge_agent.kinds.aif import KIND as AIF
from edge_agent.kinds.aif import (
    AifModel,
    aif_model,
    aif_of,
    bundle_settings,
    check_dims,
    new_agents,
    plan_aif,
)
from edge_agent.kinds.base import (
    GroupKind,
    LoadedModel,
    Verify,
    describe,
    outcome_world_mismatch,
    sim_world,
)
from edge_agent.kinds.neural import NeuralModel, check_features, neural_model, plan_net
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.input_range import INPUT_RANGE_METRICS
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent.neural.perception_table import PerceptionTable

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle
    from edge_agent.core.budget import MemoryBudget, PlanRequest

__all__ = ["KIND", "PerceptionKind", "PerceptionModel"]


@dataclass(frozen=True)
class PerceptionModel:
    """What the ``perception`` kind loads (a group's :attr:`LoadedModel.own
    <edge_agent.kinds.base.LoadedModel.own>`): the Active Inference model and the classifier in
    front of it (``net``, which :func:`~edge_agent.kinds.neural.net_of` finds)."""

    aif: AifModel
    net: NeuralModel


def _own(loaded: LoadedModel) -> PerceptionModel:
    if not isinstance(loaded.own, PerceptionModel):
        raise TypeError(f"internal: a {loaded.kind} model is no perception model")
    return loaded.own


def _check_perception(cfg: GroupConfig, net: NeuralModel, num_obs: tuple[int, ...]) -> None:
    """The classifier's outputs must be logits of the model's first modalities, in order."""
    spec = net.spec
    outputs = spec.outputs[:1] if spec.output_kind == "discrete" else spec.outputs
    table = cfg.table_of(PerceptionTable)
    where = table.path if table is not None else describe(cfg)
    if spec.output_kind == "continuous" or len(outputs) > len(num_obs):
        raise ConfigError(
            f"group {cfg.name!r}: perception {where}: {len(outputs)} {spec.output_kind} "
            f"output(s); perception gives logits for the model's first of {len(num_obs)} "
            "modalities",
            path=None,
        )
    for m, tensor in enumerate(outputs):
        if tuple(tensor.shape[1:]) != (num_obs[m],):
            raise ConfigError(
                f"group {cfg.name!r}: perception {where}: output {tensor.name!r} has shape "
                f"{list(tensor.shape)}, modality {m} of the model has {num_obs[m]} outcomes",
                path=None,
            )


class PerceptionKind:
    name = "perception"
    shares_beliefs = False
    plans = True  # its Active Inference agents plan as an aif group's do
    measures_health = True  # docs/health.md: [groups.health]
    learns = False  # its agents observe soft evidence; counts learn from outcome indices
    metric_families = (INPUT_RANGE_METRICS,)  # its classifier's observations out of range

    def load(self, cfg: GroupConfig, bundle: Bundle | None, verify: Verify) -> LoadedModel:
        table = cfg.table_of(PerceptionTable)
        if bundle is not None and bundle.manifest.kind == "aif+perception":
            if table is not None:
                raise ConfigError(
                    f"group {cfg.name!r}: {describe(cfg)} brings its own perception model; "
                    "remove the group's perception table",
                    path=None,
                )
            manifest = bundle.manifest
            own = PerceptionModel(
                AifModel(aif_model(bundle), bundle_settings(bundle, cfg)), neural_model(bundle)
            )
            loaded = LoadedModel(
                kind=self.name,
                own=own,
                bundle_name=f"{manifest.name}@{manifest.version}"[:256],
                bundle_sha256=bundle.sha256,
            )
        else:
            assert table is not None  # an aif model with a perception table (kind_name)
            model = AIF.load(cfg, bundle, verify)
            aif = aif_of(model)
            assert aif is not None  # what the aif kind loads
            net = verify(table.path, "perception")
            if net.manifest.kind != "neural" or net.manifest.neural is None:
                raise BundleError(
                    f"{table.path}: perception needs a neural bundle, got kind "
                    f"{net.manifest.kind!r}"
                )
            own = PerceptionModel(aif, neural_model(net))
            loaded = LoadedModel(
                kind=self.name,
                own=own,
                bundle_name=model.bundle_name,
                bundle_sha256=model.bundle_sha256,
            )
        _check_perception(cfg, own.net, own.aif.model.num_obs)
        return loaded

    def check(self, cfg: GroupConfig, loaded: LoadedModel) -> None:
        own = _own(loaded)
        classifier, model = own.net, own.aif.model
        world = sim_world(cfg)
        if world is None:
            covered = len(classifier.spec.outputs)
            if covered < len(model.num_obs):
                raise ConfigError(
                    f"group {cfg.name!r}: the perception model gives evidence for {covered} of "
                    f"the model's {len(model.num_obs)} modalities; an mqtt source sends "
                    "only feature vectors, so every modality must come from perception",
                    path=None,
                )
            return
        name, features = world
        if not features:
            raise outcome_world_mismatch(cfg, self.name, name)
        check_features(cfg, classifier, name)
        check_dims(cfg, model, name, " (the built-in model 'sensors')")

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        del workers  # perception groups step in one process
        own = _own(loaded)
        model, agents = plan_aif(own.aif, cfg, history_capacity, 1)
        net_model, net_agents = plan_net(own.net, f"{cfg.name}.perception", cfg.count, 0)
        return [model, net_model, agents, net_agents]

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
    ) -> PerceptionAifGroup:
        del workers
        own = _own(loaded)
        net = own.net
        aif = new_agents(own.aif, cfg, n_agents, budget, history_capacity)
        try:
            perception = NeuralAgentGroup(
                net.spec,
                net.model_bytes,
                n_agents,
                threads=threads,
                seed=cfg.seed,
                budget=budget,
                name=f"{cfg.name}.perception",
                check_finite=False,
            )
        except BaseException:
            aif.release()
            raise
        table = cfg.table_of(PerceptionTable)
        evidence = table.evidence if table is not None else "soft"
        try:
            return PerceptionAifGroup(perception, aif, evidence=evidence)
        except BaseException:
            perception.release()
            aif.release()
            raise


KIND: GroupKind = PerceptionKind()
