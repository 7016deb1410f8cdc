"""The ``neural`` kind: a neural policy from a ``neural`` bundle.

Its agents are :class:`~edge_agent.neural.agents.NeuralAgentGroup`; observations are feature
vectors (or frames), actions the policy's discrete choice or continuous values. The backend
(onnxruntime, LiteRT) is imported when the first group builds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.config.daemon import GroupConfig
from edge_agent.core.health_table import HealthTable
from edge_agent.errors import BundleError, ConfigError
from edge_agent.kinds.base import (
    GroupKind,
    LoadedModel,
    Verify,
    describe,
    outcome_world_mismatch,
    sim_world,
)
from edge_agent.neural.agents import NeuralAgentGroup, per_batch_warning, window_layout
from edge_agent.neural.input_range import INPUT_RANGE_METRICS
from edge_agent.neural.perception_table import PerceptionTable
from edge_agent.neural.policy_table import NeuralPolicy

if TYPE_CHECKING:
    from edge_agent.bundle.loader import Bundle
    from edge_agent.bundle.manifest import NeuralSpec
    from edge_agent.core.budget import MemoryBudget, PlanRequest

logger = logging.getLogger(__name__)

__all__ = [
    "KIND",
    "NeuralKind",
    "NeuralModel",
    "check_features",
    "net_of",
    "neural_model",
    "plan_net",
]


@dataclass(frozen=True)
class NeuralModel:
    """A verified neural model: how to run it and its file's bytes (a ``neural`` group's
    :attr:`LoadedModel.own <edge_agent.kinds.base.LoadedModel.own>`, and the perception
    kind's classifier)."""

    spec: NeuralSpec
    model_bytes: bytes
    name: str


def net_of(loaded: LoadedModel) -> NeuralModel:
    """The neural model a ``neural`` group's kind loaded (its own), or a ``perception``
    group's (its own's ``net``)."""
    own = loaded.own
    net = own if isinstance(own, NeuralModel) else getattr(own, "net", None)
    if not isinstance(net, NeuralModel):
        raise TypeError(f"internal: a {loaded.kind} model without its neural model")
    return net


def neural_model(bundle: Bundle) -> NeuralModel:
    """The bundle's neural model (its manifest has one: checked by the caller); a model whose
    agents depend on each other (:func:`~edge_agent.neural.agents.per_batch_warning`) is
    logged as a warning."""
    spec = bundle.manifest.neural
    assert spec is not None  # checked by the caller against the manifest's kind
    if coupled := per_batch_warning(bundle):
        logger.warning("%s: %s", bundle.path, coupled)
    return NeuralModel(spec, bundle.file_bytes(spec.model_file), bundle.manifest.name)


def check_features(cfg: GroupConfig, net: NeuralModel, world: str) -> int:
    """The net must take as many features per step as the sensor ``world`` gives; returns
    how many classes the world takes a guess among."""
    from edge_agent.sim.registry import make_env  # noqa: PLC0415
    from edge_agent.sim.sensors import SensorWorld  # noqa: PLC0415 - make_env imported it

    probe = make_env(world, 1)
    assert isinstance(probe, SensorWorld)
    features = window_layout(net.spec)[1]
    if features != probe.num_features:
        raise ConfigError(
            f"group {cfg.name!r}: {describe(cfg)} takes {features} features per step, world "
            f"{world!r} gives {probe.num_features}",
            path=None,
        )
    return probe.num_classes


def plan_net(
    net: NeuralModel, owner: str, count: int, history_capacity: int
) -> tuple[PlanRequest, PlanRequest]:
    """The model's and the agents' requests of ``count`` agents of ``net`` (a probe of one)."""
    nn = NeuralAgentGroup(
        net.spec, net.model_bytes, 1, history_capacity=history_capacity, name=owner
    )
    return (
        (f"model:{nn.key}", "model", nn.shared_nbytes, f"nn:{nn.key}"),
        (owner, "agents", nn.bytes_for(count), None),
    )


class NeuralKind:
    name = "neural"
    shares_beliefs = False
    plans = False
    measures_health = True  # docs/health.md: [groups.health]
    learns = False
    metric_families = (INPUT_RANGE_METRICS,)

    def load(self, cfg: GroupConfig, bundle: Bundle | None, verify: Verify) -> LoadedModel:
        del verify
        assert bundle is not None  # a neural group's model is a bundle (kind_name)
        manifest = bundle.manifest
        if manifest.neural is None or manifest.neural.output_kind == "observation":
            raise BundleError(
                f"{bundle.path}: the neural model outputs observations, not actions: name it "
                'as the group\'s perception (perception = { type = "bundle", ... }) in front '
                "of an Active Inference model"
            )
        if cfg.table_of(PerceptionTable) is not None:
            raise ConfigError(
                f"group {cfg.name!r}: perception feeds an Active Inference model; "
                f"{describe(cfg)} is a neural policy",
                path=None,
            )
        return LoadedModel(
            kind=self.name,
            own=neural_model(bundle),
            bundle_name=f"{manifest.name}@{manifest.version}"[:256],
            bundle_sha256=bundle.sha256,
        )

    def check(self, cfg: GroupConfig, loaded: LoadedModel) -> None:
        world = sim_world(cfg)
        if world is None:
            return
        name, features = world
        if not features:
            raise outcome_world_mismatch(cfg, self.name, name)
        net = net_of(loaded)
        classes = check_features(cfg, net, name)
        spec = net.spec
        width = spec.outputs[0].shape[-1]
        if spec.output_kind != "discrete" or width != classes:
            raise ConfigError(
                f"group {cfg.name!r}: world {name!r} takes one of {classes} guesses "
                f"per agent, the policy gives {spec.output_kind} output of width {width}",
                path=None,
            )

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        del workers
        model, agents = plan_net(net_of(loaded), cfg.name, cfg.count, history_capacity)
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
    ) -> NeuralAgentGroup:
        del workers  # one backend call per tick, on `threads` intra-op threads
        net = net_of(loaded)
        policy = cfg.table_or_default(NeuralPolicy)
        return NeuralAgentGroup(
            net.spec,
            net.model_bytes,
            n_agents,
            threads=threads,
            selection=policy.selection,
            temperature=policy.temperature,
            seed=cfg.seed,
            history_capacity=history_capacity,
            budget=budget,
            name=cfg.name,
            check_finite=False,  # the daemon's sources drop non-finite values (see the class)
            low_confidence=cfg.table_or_default(HealthTable).low_confidence,
        )


KIND: GroupKind = NeuralKind()
