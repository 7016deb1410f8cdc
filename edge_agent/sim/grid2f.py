"""Two-factor grid: reach the rewarded one of a few cells, after asking a cue cell which it is.

A grid version of pymdp's T-maze: the agent walks a ``height x width`` grid (default 5 x 5); one
of ``K`` goal cells (default 2) holds the reward in this trial, the others a loss. Which one is a
hidden context the agent can learn at the cue cell. Default layout, with ``(r, c)`` the centre
cell: ``start`` the centre, ``cue`` the cell above it ``(r - 1, c)``, ``goals`` the cells two
moves beyond the cue, ``(r - 2, c - 1)`` and ``(r - 2, c + 1)`` (row 0 at least); on 5 x 5:
start (2, 2), cue (1, 2), goals (0, 1) and (0, 3). So the cue is on the way and a planner two
steps deep (pymdp's ``policy_len=2``) walks to the cue, then to the cued goal.

Model (two factors, three modalities, pymdp conventions):

* factor 0, position (``S = height * width``): the agent's cell, row-major ``s = r * width + c``;
  controllable, the grid world's 5 actions (0 stay, 1 up, 2 down, 3 left, 4 right;
  deterministic, a move into a wall leaves the agent where it is).
* factor 1, context (``K = len(goals)``): which goal cell holds the reward; one action, identity
  (the context stays for the whole trial).
* modality 0, position (``S``): the cell seen through noise as in the grid world
  (:mod:`edge_agent.sim.gridworld`: ``1 - noise`` on the cell, ``noise`` spread over its
  neighbours), whatever the context.
* modality 1, reward (3): 0 no reward, 1 reward, 2 loss. At goal ``k`` in context ``c``: reward if
  ``k == c``, else loss; every other cell: no reward.
* modality 2, cue (``K``): at the cue cell the context itself; elsewhere uniform (``1 / K`` each).

``C`` (log-preferences, as in the T-maze): reward ``+3``, loss ``-3``, everything else 0.
``D``: one-hot on ``start``, the context uniform.

Trials in :class:`TwoFactorGridEnv` (the T-maze's rule): each trial has ``trial_len`` time steps
(default 5: the 3 moves start, cue, goal and one to spare). At ``t = 0`` the agent is at
``start`` with a context freshly drawn from ``D``; steps ``t = 1 .. trial_len - 1`` follow its
moves. The step after ``t = trial_len - 1`` starts the next trial: its action is ignored,
``episode_start`` is True.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError
from edge_agent.sim import BoolArray, IntArray
from edge_agent.sim.gridworld import check_cell, check_grid_dims, grid_transitions, gridworld_model
from edge_agent.sim.trials import TRIAL_COUNTERS, TrialEnv

REWARD_OUTCOMES: tuple[str, ...] = ("no reward", "reward", "loss")
NO_REWARD, REWARD, LOSS = range(3)
POSITION_FACTOR, CONTEXT_FACTOR = 0, 1
POSITION_MODALITY, REWARD_MODALITY, CUE_MODALITY = 0, 1, 2


def grid2f_layout(
    height: int = 5,
    width: int = 5,
    *,
    goals: Sequence[tuple[int, int]] | None = None,
    cue: tuple[int, int] | None = None,
    start: tuple[int, int] | None = None,
) -> tuple[tuple[int, ...], int, int]:
    """Row-major cell indices ``(goals, cue, start)``, checked; else :class:`ModelError`.

    Defaults (module docstring) around the centre cell ``(r, c) = ((height - 1) // 2,
    (width - 1) // 2)``; they need a grid of at least 3 x 3.
    """
    height, width = check_grid_dims(height, width)
    r, c = (height - 1) // 2, (width - 1) // 2
    if (goals is None or cue is None or start is None) and min(height, width) < 3:
        raise ModelError(
            f"the default layout needs a grid of at least 3 x 3, got {height} x {width}: "
            "give goals, cue and start"
        )
    given: object = ((max(r - 2, 0), c - 1), (max(r - 2, 0), c + 1)) if goals is None else goals
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) < 1:
        raise ModelError(f"goals must be a non-empty sequence of (row, col) pairs, got {given!r}")
    cells = [check_cell(f"goals[{k}]", g, height, width) for k, g in enumerate(given)]
    goal_index = tuple(r * width + c for r, c in cells)
    if len(set(goal_index)) != len(goal_index):
        raise ModelError(f"goals must be distinct cells, got {[tuple(g) for g in cells]}")
    cue_r, cue_c = check_cell("cue", (r - 1, c) if cue is None else cue, height, width)
    cue_index = cue_r * width + cue_c
    if cue_index in goal_index:
        raise ModelError(f"the cue cell {(cue_r, cue_c)} must not be a goal")
    start_r, start_c = check_cell("start", (r, c) if start is None else start, height, width)
    return goal_index, cue_index, start_r * width + start_c


def grid2f_model(
    height: int = 5,
    width: int = 5,
    *,
    goals: Sequence[tuple[int, int]] | None = None,
    cue: tuple[int, int] | None = None,
    start: tuple[int, int] | None = None,
    noise: float = 0.1,
    reward: float = 3.0,
    punishment: float = -3.0,
) -> GenerativeModel:
    """The two-factor grid's generative model (module docstring; cells as :func:`grid2f_layout`)."""
    goal_index, cue_index, start_index = grid2f_layout(
        height, width, goals=goals, cue=cue, start=start
    )
    if not (np.isfinite(reward) and np.isfinite(punishment)):
        raise ModelError(f"reward and punishment must be finite, got {reward}, {punishment}")
    # The grid world's noisy position table (noise is checked there), the same in every context.
    A_grid = gridworld_model(height, width, noise=noise).A[0]
    S, K = A_grid.shape[1], len(goal_index)
    A_pos = np.repeat(A_grid[:, :, None], K, axis=2)

    A_reward = np.zeros((len(REWARD_OUTCOMES), S, K))
    A_reward[NO_REWARD] = 1.0
    for k, g in enumerate(goal_index):
        A_reward[NO_REWARD, g, :] = 0.0
        A_reward[LOSS, g, :] = 1.0
        A_reward[LOSS, g, k] = 0.0
        A_reward[REWARD, g, k] = 1.0

    A_cue = np.full((K, S, K), 1.0 / K)
    A_cue[:, cue_index, :] = np.eye(K)

    B_context = np.eye(K).reshape(K, K, 1)
    C_reward = np.zeros(len(REWARD_OUTCOMES))
    C_reward[REWARD] = float(reward)
    C_reward[LOSS] = float(punishment)
    C = [np.zeros(S), C_reward, np.zeros(K)]
    D = [np.eye(S)[start_index], np.full(K, 1.0 / K)]
    return GenerativeModel.from_arrays(
        [A_pos, A_reward, A_cue], [grid_transitions(height, width), B_context], C, D
    )


class TwoFactorGridEnv(TrialEnv):
    """``N`` agents, each on its own grid with its own hidden context per trial.

    Actions are ``(N, 2)``: column 0 the move (0..4), column 1 always 0.

    Per-agent statistics (read-only views), counted over all trials: ``rewards``, ``losses``
    (reward-modality outcomes observed), ``cue_visits`` (steps spent on the cue cell), ``trials``
    (trials completed), ``rewarded_trials`` (completed trials with at least one reward). For the
    current trial: ``rewarded`` ``(N,) bool`` (a reward was observed).
    """

    _FLAG_ROWS = 3  # per-agent temporaries of its hooks

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        height: int = 5,
        width: int = 5,
        goals: Sequence[tuple[int, int]] | None = None,
        cue: tuple[int, int] | None = None,
        start: tuple[int, int] | None = None,
        noise: float = 0.1,
        reward: float = 3.0,
        punishment: float = -3.0,
        trial_len: int = 5,
    ) -> None:
        recipe = partial(
            grid2f_model,
            height,
            width,
            goals=goals,
            cue=cue,
            start=start,
            noise=noise,
            reward=reward,
            punishment=punishment,
        )
        self.height, self.width = int(height), int(width)
        self.goal_cells, self.cue_cell, self.start_cell = grid2f_layout(
            height, width, goals=goals, cue=cue, start=start
        )
        super().__init__(recipe(), n_agents, seed=seed, trial_len=trial_len, model_recipe=recipe)

    @property
    def contexts(self) -> IntArray:
        """``(N,) int64`` hidden context (the rewarded goal) of each agent's current trial."""
        return self._views["states"][:, CONTEXT_FACTOR]

    @property
    def rewarded_trials(self) -> IntArray:
        return self._views["rewarded_trials"]

    @property
    def rewarded(self) -> BoolArray:
        return self._views["rewarded"]

    def summary(self) -> dict[str, int | float]:
        return {
            **super().summary(),
            "rewarded_fraction": self.per_trial("rewarded_trials"),
            "cue_visits_per_trial": self.per_trial("cue_visits"),
        }

    def _agent_arrays(self, n: int) -> dict[str, NDArray[Any]]:
        counters = (*TRIAL_COUNTERS, "rewarded_trials")
        return {
            **{name: np.zeros(n, dtype=np.int64) for name in counters},
            "rewarded": np.zeros(n, dtype=np.bool_),
        }

    def _begin_episodes(self, mask: BoolArray) -> None:
        np.copyto(self._arrays["rewarded"], False, where=mask)

    def _record_step(self) -> None:
        arrays = self._arrays
        outcome = arrays["obs"][:, REWARD_MODALITY]
        hit, at_cue, tmp = self._flags
        np.equal(outcome, REWARD, out=hit)
        np.add(arrays["rewards"], hit, out=arrays["rewards"])
        rewarded = arrays["rewarded"]
        np.logical_or(rewarded, hit, out=rewarded)
        np.equal(outcome, LOSS, out=tmp)
        np.add(arrays["losses"], tmp, out=arrays["losses"])
        np.equal(arrays["states"][:, POSITION_FACTOR], self.cue_cell, out=at_cue)
        np.add(arrays["cue_visits"], at_cue, out=arrays["cue_visits"])

        np.equal(arrays["episode_steps"], self.trial_len - 1, out=tmp)  # trial's last step
        np.add(arrays["trials"], tmp, out=arrays["trials"])
        np.logical_and(tmp, rewarded, out=tmp)
        np.add(arrays["rewarded_trials"], tmp, out=arrays["rewarded_trials"])
