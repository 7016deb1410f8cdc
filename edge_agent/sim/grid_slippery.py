"""A grid whose moves slip and whose walls the agents do not know: a world for learning ``B``.

The agents are given the plain grid world's model
(:func:`~edge_agent.sim.gridworld.gridworld_model`: every move succeeds, no inner walls). The
world differs: a move other than "stay" fails with probability ``slip`` (the agent stays where
it is), and the cells in ``blocked`` are walls (a move into one leaves the agent in place;
nobody spawns there). An agent with a frozen ``B`` plans routes
through walls and is surprised at every slip; one that learns ``pB``
(:mod:`edge_agent.aif.learning`) finds both. The goal, the observation noise, the preferences
and the episodes are :class:`~edge_agent.sim.gridworld.GridWorldEnv`'s.

``env.model`` is the model the agents are given; ``env.process`` the one the world samples from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError
from edge_agent.sim.gridworld import (
    STAY,
    GridWorldEnv,
    check_cell,
    check_grid_dims,
    grid_moves,
    gridworld_model,
)

__all__ = ["SlipperyGridEnv", "slippery_grid_model", "slippery_transitions"]

#: The default walls: a 2 x 2 block in the middle of the 10 x 10 grid.
DEFAULT_BLOCKED: tuple[tuple[int, int], ...] = ((4, 4), (4, 5), (5, 4), (5, 5))


def _check_world(
    height: int, width: int, goal: tuple[int, int] | None, slip: float,
    blocked: Sequence[tuple[int, int]],
) -> tuple[float, tuple[int, ...]]:
    height, width = check_grid_dims(height, width)
    slip = float(slip)
    if not 0.0 <= slip < 1.0:
        raise ModelError(f"slip must be in [0, 1), got {slip}")
    cells = tuple(
        r * width + c for r, c in (check_cell("blocked cell", b, height, width) for b in blocked)
    )
    goal_rc = (height - 1, width - 1) if goal is None else check_cell("goal", goal, height, width)
    if goal_rc[0] * width + goal_rc[1] in cells:
        raise ModelError(f"the goal {goal_rc} is a blocked cell")
    if len(set(cells)) >= height * width - 1:
        raise ModelError("blocked cells leave no cell to spawn in")
    return slip, cells


def slippery_grid_model(
    height: int = 10,
    width: int = 10,
    *,
    goal: tuple[int, int] | None = None,
    noise: float = 0.1,
    slip: float = 0.2,
    blocked: Sequence[tuple[int, int]] = DEFAULT_BLOCKED,
) -> GenerativeModel:
    """The model the agents are given: the plain grid world's (``slip`` and ``blocked`` are the
    world's, checked here, unknown to the model)."""
    _check_world(height, width, goal, slip, blocked)
    return gridworld_model(height, width, goal=goal, noise=noise)


def slippery_transitions(
    height: int, width: int, slip: float, blocked: Sequence[int]
) -> np.ndarray:
    """``B`` ``(S, S, 5)`` of the world: a move reaches its cell with ``1 - slip`` and stays
    with ``slip``; a move into a blocked cell (or a wall) stays."""
    moves = grid_moves(height, width)
    S, U = moves.shape
    cells = np.arange(S)
    walls = np.zeros(S, dtype=bool)
    walls[list(blocked)] = True
    B = np.zeros((S, S, U))
    for u in range(U):
        target = np.where(walls[moves[:, u]], cells, moves[:, u])
        if u == STAY:
            B[cells, cells, u] = 1.0
            continue
        B[target, cells, u] += 1.0 - slip
        B[cells, cells, u] += slip
    return B


class SlipperyGridEnv(GridWorldEnv):
    """``N`` agents on a grid with slips and unknown walls (module doc)."""

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        height: int = 10,
        width: int = 10,
        goal: tuple[int, int] | None = None,
        noise: float = 0.1,
        slip: float = 0.2,
        blocked: Sequence[tuple[int, int]] = DEFAULT_BLOCKED,
    ) -> None:
        self.slip, self._blocked = _check_world(height, width, goal, slip, blocked)
        super().__init__(n_agents, seed=seed, height=height, width=width, goal=goal, noise=noise)

    @property
    def process(self) -> GenerativeModel:
        """The model the world samples from: the agents' model with this world's ``B``."""
        return self._process(self.model)

    def _process(self, model: GenerativeModel) -> GenerativeModel:
        B = slippery_transitions(self.height, self.width, self.slip, self._blocked)
        return GenerativeModel.from_arrays(list(model.A), [B], list(model.C), list(model.D))

    def _spawn_distributions(self) -> Sequence[np.ndarray]:
        (d,) = super()._spawn_distributions()
        d = np.array(d)
        d[list(self._blocked)] = 0.0
        return (d / d.sum(),)
