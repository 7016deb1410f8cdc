"""The closed-loop world every implementation in ``bench_peers.py`` acts in (numpy only).

It runs in three interpreters (the project's venv and the two pymdp venvs, numpy 1.x and 2.x),
so it imports nothing but numpy. The workload file (``.npz``, written by ``bench_peers.py``)
holds the generative model handed to every agent and the world's episode rule:

* ``A{m}`` ``(O_m, S_0, ..., S_{F-1})``, ``B{f}`` ``(S_f, S_f, U_f)``, ``C{m}`` ``(O_m,)``,
  ``D{f}`` ``(S_f,)``: the model, float64, the same arrays for every implementation; the world
  is its own generative process (hidden states move by ``B``, are seen through ``A``);
* ``spawn{f}`` ``(S_f,)``: where a new episode puts factor ``f``;
* ``rule``: ``"goal"`` (``goal_state``: an agent that reaches this state of factor 0 respawns at
  its next step, its action ignored: ``edge_agent.sim.gridworld``) or ``"trial"``
  (``trial_len``: a new trial every ``trial_len`` steps, the action at the last one ignored:
  ``edge_agent.sim.tmaze``, ``edge_agent.sim.grid2f``);
* optionally (``bench_learning_peers.py``'s reversal T-maze) ``reverse_every`` (0: never),
  ``reward_modality``, ``reward_outcome``, ``loss_outcome``: the world of
  ``edge_agent.sim.tmaze_reversal``, whose rewarded arm swaps every ``reverse_every`` trials: in
  an agent's reversed phase (its trials so far ``// reverse_every`` odd) a reward outcome of
  ``reward_modality`` is seen as a loss and a loss as a reward (only the arms give either).

Every step draws the same random numbers whatever the actions are (one uniform per agent and
factor for the move, per factor for a respawn, per modality for the observation), so two
implementations that choose the same actions see exactly the same observations: their action
sequences, and so their digests, are then equal.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np


def load_workload(path: str) -> dict[str, Any]:
    """The arrays and episode rule of a workload file, as plain Python values."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: np.array(data[key]) for key in data.files}
    num_modalities = sum(1 for k in arrays if k.startswith("A"))
    num_factors = sum(1 for k in arrays if k.startswith("B"))
    return {
        "A": [arrays[f"A{m}"] for m in range(num_modalities)],
        "B": [arrays[f"B{f}"] for f in range(num_factors)],
        "C": [arrays[f"C{m}"] for m in range(num_modalities)],
        "D": [arrays[f"D{f}"] for f in range(num_factors)],
        "spawn": [arrays[f"spawn{f}"] for f in range(num_factors)],
        "rule": str(arrays["rule"]),
        "goal_state": int(arrays["goal_state"]),
        "trial_len": int(arrays["trial_len"]),
        "reverse_every": int(arrays.get("reverse_every", 0)),
        "reward_modality": int(arrays.get("reward_modality", -1)),
        "reward_outcome": int(arrays.get("reward_outcome", -1)),
        "loss_outcome": int(arrays.get("loss_outcome", -1)),
    }


def _cdf_rows(table: np.ndarray) -> np.ndarray:
    """``(C, O)`` cumulative distribution of each column of a column-stochastic ``(O, C)``."""
    cdf = np.cumsum(table, axis=0)
    cdf /= cdf[-1:, :]
    cdf[-1, :] = 1.0  # exact, so that every u < 1 falls inside the column
    return np.ascontiguousarray(cdf.T)


class _Stacked:
    """The tables' ``(C_t, K_t)`` cumulative rows (:func:`_cdf_rows`) in one ``(T * C, K)``
    array, table ``t``'s rows from ``t * C`` on (``first``, ``(T, 1)``), padded with 1.0 (a
    padded value is never at most a ``u < 1``, so it draws nothing, and a padded row is never
    indexed): one draw for every table at once."""

    def __init__(self, cdfs: list[np.ndarray]) -> None:
        C, K = max(c.shape[0] for c in cdfs), max(c.shape[1] for c in cdfs)
        stack = np.ones((len(cdfs), C, K))
        for t, cdf in enumerate(cdfs):
            stack[t, : cdf.shape[0], : cdf.shape[1]] = cdf
        self.tables = len(cdfs)
        self.rows = stack.reshape(-1, K)
        self.first = np.arange(len(cdfs), dtype=np.int64)[:, None] * C


def _draw(stack: _Stacked, cols: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws ``(T, n)``, table ``t`` of ``stack`` at its rows ``cols[t]`` (``cols``
    ``(T, n)``, or ``(n,)`` the same rows of every table): outcome ``k`` with ``cdf[k - 1] <= u
    < cdf[k]``, the count of the row's cumulative values at most ``u``: the first of them above
    ``u`` (a row rises to exactly 1.0, so there is one), which ``argmin`` finds faster than a
    sum counts. The rows are gathered with one ``take`` of flat indices (half the time of
    indexing the stacked tables by table and row), the tables of a step drawn in a few calls,
    whatever their number."""
    rows = stack.rows.take((cols + stack.first).reshape(-1), axis=0)
    below = rows <= u.reshape(-1, 1)
    drawn: np.ndarray = below.argmin(axis=1).reshape(u.shape)
    return drawn


class ClosedLoopWorld:
    """``n`` independent copies of the workload's world, stepped together, seeded.

    ``reset()`` and ``step(actions)`` return ``(obs, episode_start)``: ``obs`` ``(n, M)`` int64
    outcomes and ``episode_start`` ``(n,)`` bool, True where the agent's episode began at this
    step (its beliefs must go back to ``D`` before it sees ``obs``).

    What the agents achieved, the same counting whoever acts: ``score`` names it
    (``mean_reward``: +1 a reward, -1 a loss, where the workload names a reward modality;
    ``reach_rate``: goals reached, under the goal rule; None: neither) and ``scores`` holds its
    sum over the agents at every observation since the world was made (``reset`` included);
    :func:`achieved` makes it a rate.
    """

    def __init__(self, workload: dict[str, Any], n: int, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        A, B = workload["A"], workload["B"]
        self.num_states = [b.shape[0] for b in B]
        self.num_controls = [b.shape[2] for b in B]
        self.obs_cdf = _Stacked([_cdf_rows(a.reshape(a.shape[0], -1)) for a in A])
        self.move_cdf = _Stacked([_cdf_rows(b.reshape(b.shape[0], -1)) for b in B])
        self.spawn_cdf = _Stacked([_cdf_rows(np.asarray(d, dtype=np.float64)[:, None])
                                   for d in workload["spawn"]])
        self.controls = np.asarray(self.num_controls, dtype=np.int64)
        #: The joint state's index: ``states @ strides`` (C order, the layout of ``A``'s columns).
        self.strides = np.array([math.prod(self.num_states[f + 1 :])
                                 for f in range(len(B))], dtype=np.int64)
        self.rule = workload["rule"]
        self.goal_state = workload["goal_state"]
        self.trial_len = workload["trial_len"]
        self.states = np.zeros((n, len(B)), dtype=np.int64)
        self.obs = np.zeros((n, len(A)), dtype=np.int64)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.zeros = np.zeros(n, dtype=np.int64)
        self.reverse_every = workload.get("reverse_every", 0)
        self.reward_modality = workload.get("reward_modality", -1)
        self.reward_outcome = workload.get("reward_outcome", -1)
        self.loss_outcome = workload.get("loss_outcome", -1)
        self.trials = np.zeros(n, dtype=np.int64)
        self.score: str | None = (
            "mean_reward" if self.reward_modality >= 0
            else "reach_rate" if self.rule == "goal" else None)
        self.scores: list[int] = []

    def _spawn(self, where: np.ndarray) -> None:
        u = self.rng.random((len(self.num_states), self.n))  # drawn whoever respawns
        if not where.any():
            return
        self.states[where] = _draw(self.spawn_cdf, self.zeros, u).T[where]
        self.episode_steps[where] = 0

    def _observe(self) -> np.ndarray:
        joint = self.states @ self.strides
        u = self.rng.random((self.obs_cdf.tables, self.n))
        self.obs[:] = _draw(self.obs_cdf, joint, u).T
        if self.reward_modality >= 0:
            self.scores.append(self._rewards(self.obs[:, self.reward_modality]))
        return self.obs

    def _rewards(self, outcome: np.ndarray) -> int:
        """Swap reward and loss in the reversed phases (in place); rewards less losses."""
        reward, loss = self.reward_outcome, self.loss_outcome
        if self.reverse_every > 0:
            flip = (self.trials // self.reverse_every) % 2 == 1
            if flip.any():
                flip &= (outcome == reward) | (outcome == loss)
                outcome[flip] = reward + loss - outcome[flip]
        return int(np.count_nonzero(outcome == reward)) - int(np.count_nonzero(outcome == loss))

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        start = np.ones(self.n, dtype=np.bool_)
        self._spawn(start)
        self.trials[:] = 0
        if self.rule == "goal":
            self.scores.append(0)
        return self._observe(), start

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move every agent by ``actions`` ``(n, F)`` int; start episodes by the rule."""
        if self.rule == "goal":
            restart = self.states[:, 0] == self.goal_state
        else:
            restart = self.episode_steps >= self.trial_len - 1
        u = self.rng.random((self.move_cdf.tables, self.n))
        cols = self.states * self.controls + actions
        self.states[:] = _draw(self.move_cdf, cols.T, u).T
        self.episode_steps += 1
        self._spawn(restart)
        self.trials += restart
        if self.rule == "goal":
            reached = (self.states[:, 0] == self.goal_state) & ~restart
            self.scores.append(int(np.count_nonzero(reached)))
        return self._observe(), restart


def achieved(scores: list[int], n: int, steps: int | None = None) -> float:
    """The rate of a world's ``scores`` per agent-step over its first ``steps`` observations
    (all by default), ``n`` agents."""
    taken = scores if steps is None else scores[:steps]
    return sum(taken) / max(n * len(taken), 1)


def actions_digest(actions: np.ndarray) -> str:
    """A short digest of an action record ``(steps, n, F)``, the same on every numpy."""
    return hashlib.sha256(np.ascontiguousarray(actions, dtype=np.int64).tobytes()).hexdigest()[:16]
