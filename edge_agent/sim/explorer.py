"""Explorer: find the rare target terrain on a map you cannot see your position on.

Model (one factor, one modality):

* state: the agent's cell on a ``height x width`` grid (default 10 x 10 = 100 states), row-major.
* actions: the grid world's five moves (0 stay, 1 up, 2 down, 3 left, 4 right; walls keep the
  agent in place), deterministic.
* observation: the terrain type of the cell, 5 outcomes 0..4 where 4 is the *target*.
  ``A[o, s] = 1 - noise`` for ``o = terrain[s]`` and ``noise / 4`` for each other type.
* ``C``: ``C[4] = target_preference`` (default +2), the others 0.
* ``D``: uniform: agents do not know where they are.

The map (:func:`explorer_terrain`) is fixed by ``map_seed``, independently of the environment's
seed: ``round(target_fraction * S)`` cells (at least 1; 5 of 100 by default) are targets, every
other cell draws a type uniformly from 0..3.

:class:`ExplorerEnv` has no episodes: agents keep wandering until ``reset``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError
from edge_agent.sim import BatchEnv, BoolArray, IntArray
from edge_agent.sim.gridworld import check_grid_dims, grid_transitions

NUM_TERRAINS = 5
TARGET = NUM_TERRAINS - 1


def explorer_terrain(
    height: int = 10, width: int = 10, *, target_fraction: float = 0.05, map_seed: int = 0
) -> IntArray:
    """``(S,) int64`` terrain type of every cell, row-major; reproducible from ``map_seed``."""
    height, width = check_grid_dims(height, width)
    target_fraction = float(target_fraction)
    if not 0.0 < target_fraction < 1.0:
        raise ModelError(f"target_fraction must be in (0, 1), got {target_fraction}")
    S = height * width
    num_targets = max(1, round(target_fraction * S))
    if num_targets >= S:
        raise ModelError(
            f"target_fraction {target_fraction} leaves no non-target cell on {S} cells"
        )
    rng = np.random.default_rng(map_seed)
    terrain = rng.integers(0, TARGET, size=S, dtype=np.int64)
    terrain[rng.choice(S, size=num_targets, replace=False)] = TARGET
    return terrain


def explorer_model(
    height: int = 10,
    width: int = 10,
    *,
    noise: float = 0.1,
    target_fraction: float = 0.05,
    target_preference: float = 2.0,
    map_seed: int = 0,
) -> GenerativeModel:
    """The explorer's generative model on the map ``explorer_terrain(..., map_seed=map_seed)``."""
    terrain = explorer_terrain(height, width, target_fraction=target_fraction, map_seed=map_seed)
    noise = float(noise)
    if not 0.0 <= noise <= 1.0:
        raise ModelError(f"noise must be in [0, 1], got {noise}")
    if not np.isfinite(target_preference):
        raise ModelError(f"target_preference must be finite, got {target_preference}")
    S = terrain.shape[0]
    A = np.full((NUM_TERRAINS, S), noise / (NUM_TERRAINS - 1))
    A[terrain, np.arange(S)] = 1.0 - noise
    C = np.zeros(NUM_TERRAINS)
    C[TARGET] = float(target_preference)
    D = np.full(S, 1.0 / S)
    return GenerativeModel.from_arrays([A], [grid_transitions(height, width)], [C], [D])


class ExplorerEnv(BatchEnv):
    """``N`` agents wandering the same explorer map (module docstring).

    Per-agent statistics (read-only views): ``on_target`` ``(N,) bool`` (the agent stands on a
    target cell now), ``target_visits`` ``(N,) int64`` (steps that ended on a target cell),
    ``target_sightings`` ``(N,) int64`` (steps that observed the target outcome, true or not).
    """

    _FLAG_ROWS = 1  # per-agent temporaries of its hooks
    _AGENT_TMP = True

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        height: int = 10,
        width: int = 10,
        noise: float = 0.1,
        target_fraction: float = 0.05,
        target_preference: float = 2.0,
        map_seed: int = 0,
    ) -> None:
        recipe = partial(
            explorer_model,
            height,
            width,
            noise=noise,
            target_fraction=target_fraction,
            target_preference=target_preference,
            map_seed=map_seed,
        )
        model = recipe()
        terrain = explorer_terrain(
            height, width, target_fraction=target_fraction, map_seed=map_seed
        )
        terrain.setflags(write=False)
        self._terrain = terrain
        self._target_cells: BoolArray = terrain == TARGET
        self.height, self.width = int(height), int(width)
        super().__init__(model, n_agents, seed=seed, model_recipe=recipe)

    @property
    def terrain(self) -> IntArray:
        """``(S,) int64`` terrain type of every cell (read-only)."""
        return self._terrain

    @property
    def on_target(self) -> BoolArray:
        return self._views["on_target"]

    @property
    def target_visits(self) -> IntArray:
        return self._views["target_visits"]

    @property
    def target_sightings(self) -> IntArray:
        return self._views["target_sightings"]

    def summary(self) -> dict[str, int | float]:
        return {
            **super().summary(),
            "on_target": float(self._arrays["on_target"].mean()),
            "target_visits": int(self._arrays["target_visits"].sum()),
            "target_sightings": int(self._arrays["target_sightings"].sum()),
        }

    def _agent_arrays(self, n: int) -> dict[str, NDArray[Any]]:
        return {
            "on_target": np.zeros(n, dtype=np.bool_),
            "target_visits": np.zeros(n, dtype=np.int64),
            "target_sightings": np.zeros(n, dtype=np.int64),
        }

    def _record_step(self) -> None:
        on_target = self._arrays["on_target"]
        sighting = self._flags[0]
        self._tmp[:] = self._arrays["states"][:, 0]
        np.take(self._target_cells, self._tmp, out=on_target, mode="clip")
        np.add(self._arrays["target_visits"], on_target, out=self._arrays["target_visits"])
        np.equal(self._arrays["obs"][:, 0], TARGET, out=sighting)
        np.add(self._arrays["target_sightings"], sighting, out=self._arrays["target_sightings"])
