"""Grid world: walk to a goal cell on a ``height x width`` grid, seeing your cell through noise.

Model (one factor, one modality, pymdp conventions):

* state ``s``: the agent's cell, row-major ``s = r * width + c``; ``S = height * width``.
* actions ``u``: 0 stay, 1 up (row - 1), 2 down (row + 1), 3 left (col - 1), 4 right (col + 1);
  deterministic; a move into a wall leaves the agent where it is.
* observation ``o``: a cell (``O = S``). ``A[o, s] = 1 - noise`` for ``o = s``; the remaining
  ``noise`` is spread evenly over the valid 4-neighbours of ``s`` (2 at a corner, 3 on an edge,
  4 inside). A cell without neighbours (a 1 x 1 grid) is observed exactly.
* ``C[o] = -preference_scale * manhattan(o, goal)``: shaped preferences, so even a one-step
  planner walks towards the goal.
* ``D``: one-hot on ``start`` if given, else uniform over the cells.

Episodes in :class:`GridWorldEnv`: agents spawn at a cell drawn from ``D`` with the goal cell
excluded (so ``start`` if given, else uniform over the other cells). The step that moves an agent
onto the goal counts it (``goal_reached`` True, ``goals_reached`` + 1); at the agent's next step
its action is ignored and it respawns (``episode_start`` True, ``episode_steps`` 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError
from edge_agent.sim import BatchEnv, BoolArray, IntArray, StateArray

#: Action names, by index.
MOVES: tuple[str, ...] = ("stay", "up", "down", "left", "right")
STAY, UP, DOWN, LEFT, RIGHT = range(5)
_DELTAS: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def check_grid_dims(height: object, width: object) -> tuple[int, int]:
    """Grid dimensions from outside: ints >= 1, else :class:`ModelError`."""
    dims: list[int] = []
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ModelError(f"grid {name} must be an int >= 1, got {value!r}")
        dims.append(int(value))
    return dims[0], dims[1]


def check_cell(name: str, cell: object, height: int, width: int) -> tuple[int, int]:
    """``cell`` as a ``(row, col)`` of ints inside a ``height`` x ``width`` grid, or a
    :class:`ModelError` naming ``name`` and what is wrong."""
    if not isinstance(cell, Sequence) or len(cell) != 2:
        raise ModelError(f"{name} must be a (row, col) pair, got {cell!r}")
    r, c = cell
    for value in (r, c):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ModelError(f"{name} must be a (row, col) pair of ints, got {cell!r}")
    if not (0 <= r < height and 0 <= c < width):
        raise ModelError(f"{name} {tuple(cell)!r} is outside the {height} x {width} grid")
    return int(r), int(c)


def grid_moves(height: int, width: int) -> IntArray:
    """``(S, 5) int64``: the cell each action leads to from each cell (walls keep you in place)."""
    height, width = check_grid_dims(height, width)
    rows, cols = np.divmod(np.arange(height * width), width)
    out = np.empty((height * width, len(_DELTAS)), dtype=np.int64)
    for u, (dr, dc) in enumerate(_DELTAS):
        r = rows + dr
        c = cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        out[:, u] = np.where(inside, r * width + c, rows * width + cols)
    return out


def manhattan_to(height: int, width: int, cell: tuple[int, int]) -> IntArray:
    """``(S,) int64`` Manhattan distance of every cell to ``cell``."""
    rows, cols = np.divmod(np.arange(height * width, dtype=np.int64), width)
    out: IntArray = np.abs(rows - cell[0]) + np.abs(cols - cell[1])
    return out


def grid_transitions(height: int, width: int) -> NDArray[np.float64]:
    """``B`` ``(S, S, 5)``: ``B[s', s, u] = 1`` where action ``u`` leads from ``s`` to ``s'``."""
    moves = grid_moves(height, width)
    S, U = moves.shape
    B = np.zeros((S, S, U))
    cells = np.arange(S)
    for u in range(U):
        B[moves[:, u], cells, u] = 1.0
    return B


def gridworld_model(
    height: int,
    width: int,
    *,
    goal: tuple[int, int] | None = None,
    noise: float = 0.1,
    preference_scale: float = 1.0,
    start: tuple[int, int] | None = None,
) -> GenerativeModel:
    """The grid world's generative model; ``goal`` defaults to the bottom-right cell."""
    height, width = check_grid_dims(height, width)
    goal_rc = (height - 1, width - 1) if goal is None else check_cell("goal", goal, height, width)
    noise = float(noise)
    if not 0.0 <= noise <= 1.0:
        raise ModelError(f"noise must be in [0, 1], got {noise}")
    preference_scale = float(preference_scale)
    if not (np.isfinite(preference_scale) and preference_scale >= 0):
        raise ModelError(f"preference_scale must be finite and >= 0, got {preference_scale}")

    moves = grid_moves(height, width)
    S = height * width
    cells = np.arange(S)
    neighbour = moves[:, 1:] != cells[:, None]  # (S, 4): which moves leave the cell
    num_neighbours = neighbour.sum(axis=1)
    A = np.zeros((S, S))
    share = np.divide(noise, num_neighbours, out=np.zeros(S), where=num_neighbours > 0)
    A[cells, cells] = np.where(num_neighbours > 0, 1.0 - noise, 1.0)
    for k in range(neighbour.shape[1]):
        src = cells[neighbour[:, k]]
        A[moves[src, k + 1], src] += share[src]

    C = -preference_scale * manhattan_to(height, width, goal_rc).astype(np.float64)
    if start is None:
        D = np.full(S, 1.0 / S)
    else:
        r, c = check_cell("start", start, height, width)
        D = np.zeros(S)
        D[r * width + c] = 1.0
    return GenerativeModel.from_arrays([A], [grid_transitions(height, width)], [C], [D])


def steps_to_goal(
    B: NDArray[np.float64], goal: int, spawn: NDArray[np.float64]
) -> tuple[float, float] | None:
    """The mean number of moves from a spawn cell to ``goal`` of the fewest possible (the
    policy that minimises the expected moves, knowing the cell) and of a random walk (each of
    the ``U`` actions equally likely), on the process ``B (S, S, U)`` (``B[s', s, u]``), over
    ``spawn (S,)``; None when the goal cannot be reached from a cell ``spawn`` starts in."""
    S = B.shape[0]
    others = np.arange(S) != goal
    # A random walk: h(s) = 1 + sum_s' P[s, s'] h(s') off the goal, P the mean over actions.
    P = B.mean(axis=2).T[np.ix_(others, others)]
    try:
        walk = np.linalg.solve(np.eye(len(P)) - P, np.ones(len(P)))
    except np.linalg.LinAlgError:
        return None
    # The fewest: v(s) = 1 + min_u sum_s' B[s', s, u] v(s'), v(goal) = 0 (value iteration).
    fewest = np.zeros(S)
    for _ in range(100 * S):
        new = 1.0 + np.einsum("tsu,t->su", B, fewest).min(axis=1)
        new[goal] = 0.0
        done = np.allclose(new, fewest, rtol=0.0, atol=1e-9)
        fewest = new
        if done:
            break
    else:
        return None
    weights = spawn[others]
    if not (np.isfinite(walk).all() and (walk > 0).all()):
        return None
    return float(spawn @ fewest), float(weights @ walk)


class GridWorldEnv(BatchEnv):
    """``N`` agents on the same grid, each walking to the goal and respawning (module docstring).

    Per-agent statistics (read-only views): ``goal_reached`` ``(N,) bool`` (this step moved the
    agent onto the goal), ``goals_reached`` ``(N,) int32`` (goals reached so far),
    ``goal_steps`` ``(N,) int32`` (steps summed over the episodes that reached the goal).
    """

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        height: int = 10,
        width: int = 10,
        goal: tuple[int, int] | None = None,
        noise: float = 0.1,
        preference_scale: float = 1.0,
        start: tuple[int, int] | None = None,
    ) -> None:
        recipe = partial(
            gridworld_model, height, width, goal=goal, noise=noise,
            preference_scale=preference_scale, start=start,
        )  # fmt: skip
        model = recipe()
        self.height, self.width = int(height), int(width)
        if goal is None:
            self.goal = (self.height - 1, self.width - 1)
        else:
            self.goal = (int(goal[0]), int(goal[1]))
        self._goal_index = self.goal[0] * self.width + self.goal[1]
        self._steps_reference: str | None = None  # references(): made when first asked
        super().__init__(
            model, n_agents, seed=seed, process=self._process(model), model_recipe=recipe
        )

    def _process(self, model: GenerativeModel) -> GenerativeModel:
        """The generative process the world samples from; here the agents' model itself (a
        world whose process differs from what its agents are told overrides this)."""
        return model

    @property
    def goal_reached(self) -> BoolArray:
        return self._views["goal_reached"]

    @property
    def goals_reached(self) -> StateArray:
        return self._views["goals_reached"]

    def scores(self) -> np.ndarray:
        """Each agent's goals reached so far (the ``score`` health measure)."""
        return self._arrays["goals_reached"].astype(np.float64)

    @property
    def goal_steps(self) -> StateArray:
        return self._views["goal_steps"]

    def summary(self) -> dict[str, int | float]:
        goals = int(self._arrays["goals_reached"].sum())
        steps = int(self._arrays["goal_steps"].sum())
        return {
            **super().summary(),
            "goals_reached": goals,
            "mean_steps_to_goal": steps / goals if goals else float("nan"),
            "at_goal": float(self._arrays["goal_reached"].mean()),
        }

    def references(self) -> dict[str, str]:
        """``mean_steps_to_goal`` against the fewest moves possible (knowing the cell) and a
        random walk, from the same spawn cells on the world's own moves (:func:`steps_to_goal`;
        computed once)."""
        if self._steps_reference is None:
            B = self._process(self.model).B[0]
            spawn = np.asarray(self._spawn_distributions()[0], dtype=np.float64)
            found = steps_to_goal(B, self._goal_index, spawn)
            self._steps_reference = (
                ""
                if found is None
                else f"fewest possible {found[0]:.3g}, random walk {found[1]:.3g}"
            )
        return {"mean_steps_to_goal": self._steps_reference} if self._steps_reference else {}

    def _spawn_distributions(self) -> Sequence[np.ndarray]:
        d = np.array(self.model.D[0])
        d[self._goal_index] = 0.0
        total = d.sum()
        if total <= 0:
            raise ModelError(
                f"no cell to spawn in: D puts all its mass on the goal {self.goal} "
                "(start equals goal, or the grid has a single cell)"
            )
        return (d / total,)

    def _agent_arrays(self, n: int) -> dict[str, NDArray[Any]]:
        return {
            "goal_reached": np.zeros(n, dtype=np.bool_),
            "goals_reached": np.zeros(n, dtype=np.int32),
            "goal_steps": np.zeros(n, dtype=np.int32),
        }

    def _restart_before_step(self, out: BoolArray) -> None:
        np.copyto(out, self._arrays["goal_reached"])

    def _begin_episodes(self, mask: BoolArray) -> None:
        np.copyto(self._arrays["goal_reached"], False, where=mask)

    def _record_step(self) -> None:
        reached = self._arrays["goal_reached"]
        np.equal(self._arrays["states"][:, 0], self._goal_index, out=reached)
        goals = self._arrays["goals_reached"]
        np.add(goals, reached, out=goals)
        steps = self._arrays["goal_steps"]
        np.add(steps, self._arrays["episode_steps"], out=steps, where=reached)
