"""Built-in workloads by name: their generative models and batched environments.

========== ===================================================================================
name       world
========== ===================================================================================
grid10     :class:`~edge_agent.sim.gridworld.GridWorldEnv` 10 x 10, goal (9, 9), noise 0.1
grid       the grid world with any parameters (defaults: 10 x 10, goal bottom-right)
tmaze      :class:`~edge_agent.sim.tmaze.TMazeEnv`, pymdp's T-maze (reward_probs 0.98 / 0.02)
grid-      :class:`~edge_agent.sim.grid_slippery.SlipperyGridEnv`, a grid whose moves slip and
slippery   whose walls the agents' model does not know (a world for learning agents)
tmaze-     :class:`~edge_agent.sim.tmaze_reversal.ReversalTMazeEnv`, the T-maze whose rewarded
reversal   arm swaps every ``reverse_every`` trials (a world for learning agents)
grid2f     :class:`~edge_agent.sim.grid2f.TwoFactorGridEnv` 5 x 5, two factors (position, which
           of 2 cells is rewarded), a cue cell on the way tells which; trials of 5 steps
explorer   :class:`~edge_agent.sim.explorer.ExplorerEnv`, 10 x 10 map, 5 terrains, 5 % targets
sensors    :class:`~edge_agent.sim.sensors.SensorWorld`, 8 noisy features of one of 4 classes;
           its model (:func:`~edge_agent.sim.sensors.sensor_aif_model`) names the class from a
           perception model's evidence
========== ===================================================================================

``make_env(name, n_agents, seed=0, **params)`` builds the environment and
``builtin_model(name, **params)`` its model; ``params`` override the workload's defaults. An
unknown name or parameter raises :class:`~edge_agent.errors.ModelError` listing what is known.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.errors import ModelError

if TYPE_CHECKING:
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.sim import World

# Parameters of an environment's constructor that are not world parameters.
_ENV_OWN_PARAMS = frozenset({"self", "n_agents", "seed"})


@dataclass(frozen=True)
class Workload:
    """A named world: where its model and environment are defined, and its fixed defaults.

    The world's module is imported on first use of :attr:`env_class` or :attr:`model_factory`,
    so a daemon imports the worlds it runs and no other. ``produces``: what its environment
    gives the agents, outcome indices (Active Inference groups) or feature vectors (neural and
    perception groups)."""

    name: str
    description: str
    module: str
    env_name: str
    model_name: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    produces: Literal["outcomes", "features"] = "outcomes"

    @property
    def env_class(self) -> Callable[..., World]:
        """The environment's class (``(n_agents, seed=..., **params) -> World``)."""
        env: Callable[..., World] = getattr(importlib.import_module(self.module), self.env_name)
        return env

    @property
    def model_factory(self) -> Callable[..., GenerativeModel]:
        """The function that builds the world's generative model from its parameters."""
        factory: Callable[..., GenerativeModel] = getattr(
            importlib.import_module(self.module), self.model_name
        )
        return factory

    def model_params(self) -> tuple[str, ...]:
        """Parameters :func:`builtin_model` accepts for this workload."""
        return tuple(inspect.signature(self.model_factory).parameters)

    def env_params(self) -> tuple[str, ...]:
        """Parameters :func:`make_env` accepts for this workload (besides n_agents, seed)."""
        params = inspect.signature(self.env_class).parameters
        return tuple(p for p in params if p not in _ENV_OWN_PARAMS)


BUILTIN_WORKLOADS: Mapping[str, Workload] = MappingProxyType(
    {
        "grid10": Workload(
            name="grid10",
            description="10 x 10 grid world, goal (9, 9), location seen with noise 0.1",
            module="edge_agent.sim.gridworld",
            env_name="GridWorldEnv",
            model_name="gridworld_model",
            defaults=MappingProxyType({"height": 10, "width": 10, "goal": (9, 9), "noise": 0.1}),
        ),
        "grid": Workload(
            name="grid",
            description="grid world with chosen height, width, goal, noise, start",
            module="edge_agent.sim.gridworld",
            env_name="GridWorldEnv",
            model_name="gridworld_model",
            defaults=MappingProxyType({"height": 10, "width": 10}),
        ),
        "tmaze": Workload(
            name="tmaze",
            description="pymdp's T-maze: centre, two arms, a cue; reward 0.98 in the cued arm",
            module="edge_agent.sim.tmaze",
            env_name="TMazeEnv",
            model_name="tmaze_model",
        ),
        "grid-slippery": Workload(
            name="grid-slippery",
            description="10 x 10 grid whose moves slip (0.2) and whose 2 x 2 inner wall the "
            "agents' model does not know: a world for learning B",
            module="edge_agent.sim.grid_slippery",
            env_name="SlipperyGridEnv",
            model_name="slippery_grid_model",
        ),
        "tmaze-reversal": Workload(
            name="tmaze-reversal",
            description="the T-maze whose rewarded arm swaps every reverse_every trials (50): "
            "a frozen model fails after a reversal, a learning one finds the new arm",
            module="edge_agent.sim.tmaze_reversal",
            env_name="ReversalTMazeEnv",
            model_name="tmaze_reversal_model",
        ),
        "grid2f": Workload(
            name="grid2f",
            description="5 x 5 grid, two factors: position and which of 2 cells holds the reward "
            "(the other a loss); a cue cell on the way tells which; trials of 5 steps",
            module="edge_agent.sim.grid2f",
            env_name="TwoFactorGridEnv",
            model_name="grid2f_model",
        ),
        "explorer": Workload(
            name="explorer",
            description="10 x 10 map of 5 terrains, unknown position, prefers the rare target",
            module="edge_agent.sim.explorer",
            env_name="ExplorerEnv",
            model_name="explorer_model",
        ),
        "sensors": Workload(
            name="sensors",
            description="noisy feature vectors of a hidden class to name (neural and perception "
            "groups); the model guesses the class",
            module="edge_agent.sim.sensors",
            env_name="SensorWorld",
            model_name="sensor_aif_model",
            produces="features",
        ),
    }
)


def get_workload(name: str) -> Workload:
    """The workload called ``name``, else :class:`ModelError` naming the known ones."""
    try:
        return BUILTIN_WORKLOADS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_WORKLOADS))
        raise ModelError(f"unknown workload {name!r}; known workloads: {known}") from None


def _merged(
    workload: Workload, params: Mapping[str, Any], accepted: tuple[str, ...], what: str
) -> dict[str, Any]:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ModelError(
            f"workload {workload.name!r} {what} has no parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    return {**workload.defaults, **params}


def builtin_model(name: str, **params: Any) -> GenerativeModel:
    """The generative model of workload ``name``; ``params`` override its defaults."""
    workload = get_workload(name)
    kwargs = _merged(workload, params, workload.model_params(), "model")
    return workload.model_factory(**kwargs)


def make_env(name: str, n_agents: int, seed: int = 0, **params: Any) -> World:
    """A batched environment of workload ``name`` for ``n_agents`` agents."""
    workload = get_workload(name)
    kwargs = _merged(workload, params, workload.env_params(), "environment")
    return workload.env_class(n_agents, seed=seed, **kwargs)
