"""Worlds run in fixed-length trials with a reward, a loss and a cue: what the T-maze
(:mod:`edge_agent.sim.tmaze`) and the two-factor grid (:mod:`edge_agent.sim.grid2f`) share.

Each trial has ``trial_len`` time steps; the step after ``t = trial_len - 1`` starts the next
trial (its action is ignored, ``episode_start`` is True). Per agent, ``(N,) int64`` counters over
all trials: ``rewards`` and ``losses`` (outcomes observed), ``cue_visits`` (steps at the cue) and
``trials`` (trials completed); a subclass allocates them with its own in ``_agent_arrays``
(:data:`TRIAL_COUNTERS` first) and counts them in ``_record_step``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import InputError
from edge_agent.sim import BatchEnv, BoolArray, IntArray

__all__ = ["TRIAL_COUNTERS", "TrialEnv"]

#: The counters every trial world keeps per agent (``int64``).
TRIAL_COUNTERS: tuple[str, ...] = ("rewards", "losses", "cue_visits", "trials")


class TrialEnv(BatchEnv):
    """A :class:`~edge_agent.sim.BatchEnv` whose episodes are trials of ``trial_len`` steps."""

    def __init__(
        self,
        model: GenerativeModel,
        n_agents: int,
        *,
        seed: int = 0,
        trial_len: int,
        model_recipe: Callable[[], GenerativeModel] | None = None,
    ) -> None:
        if isinstance(trial_len, bool) or not isinstance(trial_len, int) or trial_len < 2:
            raise InputError(f"trial_len must be an int >= 2, got {trial_len!r}")
        self.trial_len = trial_len
        super().__init__(model, n_agents, seed=seed, model_recipe=model_recipe)

    @property
    def rewards(self) -> IntArray:
        return self._views["rewards"]

    @property
    def losses(self) -> IntArray:
        return self._views["losses"]

    @property
    def cue_visits(self) -> IntArray:
        return self._views["cue_visits"]

    @property
    def trials(self) -> IntArray:
        return self._views["trials"]

    def scores(self) -> np.ndarray:
        """Each agent's rewards less its losses so far (the ``score`` health measure)."""
        out: np.ndarray = self._arrays["rewards"] - self._arrays["losses"].astype(np.float64)
        return out

    def per_trial(self, counter: str) -> float:
        """A counter summed over the agents, per completed trial (NaN before the first)."""
        trials = int(self._arrays["trials"].sum())
        return int(self._arrays[counter].sum()) / trials if trials else float("nan")

    def summary(self) -> dict[str, int | float]:
        return {
            **super().summary(),
            "trials": int(self._arrays["trials"].sum()),
            "rewards_per_trial": self.per_trial("rewards"),
            "losses_per_trial": self.per_trial("losses"),
        }

    def _restart_before_step(self, out: BoolArray) -> None:
        np.greater_equal(self._arrays["episode_steps"], self.trial_len - 1, out=out)
