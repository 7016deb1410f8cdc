"""A T-maze whose reward contingency reverses: a world where a frozen model fails.

The maze, its cue and its trials are :class:`~edge_agent.sim.tmaze.TMazeEnv`'s, with one change
to the maze: the arms hold the agent (``B``: from an arm every move stays there), as in SPM's
T-maze, so that a trial's one arm visit must be chosen well and the cue is worth visiting first.
What differs from that model is the world, not the model the agents are given: for
``reverse_every`` trials the cued arm pays as the model says (reward with probability ``a``),
then for the next ``reverse_every`` trials the *other* arm does, and so on. An agent whose ``A``
for the reward modality is frozen keeps going where the cue points and, after a reversal,
collects losses; an agent that learns ``pA`` of the reward modality
(:mod:`edge_agent.aif.learning`) finds the new contingency, faster with forgetting
(docs/learning.md has the figure).

How it is made: in a reversed phase, an outcome at an arm is drawn from the normal maze and then
reward and loss swap (``P(reward | arm, condition)`` becomes ``P(loss | ...)``): exactly the
reversed contingency, since the maze gives reward with ``a`` and loss with ``b`` in the cued arm
and the reverse in the other. Each agent's phase follows its own trial count
(``trials // reverse_every`` odd: reversed), so agents that started together reverse together.
The statistics (``rewards``, ``losses``) count what the agents observed, after the swap.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import InputError
from edge_agent.sim import BoolArray
from edge_agent.sim.tmaze import (
    LEFT_ARM,
    LOCATION_FACTOR,
    LOSS,
    REWARD,
    REWARD_MODALITY,
    RIGHT_ARM,
    TMazeEnv,
    tmaze_model,
)
from edge_agent.sim.trials import TrialEnv

__all__ = ["ReversalTMazeEnv", "tmaze_reversal_model"]


def tmaze_reversal_model(
    reward_probs: tuple[float, float] = (0.98, 0.02),
    reward: float = 3.0,
    punishment: float = -3.0,
) -> GenerativeModel:
    """pymdp's T-maze model (:func:`~edge_agent.sim.tmaze.tmaze_model`) with arms that hold the
    agent: ``B[0][arm, arm, u] = 1`` for every move ``u``."""
    base = tmaze_model(reward_probs, reward, punishment)
    B_loc = base.B[0].copy()
    for arm in (RIGHT_ARM, LEFT_ARM):
        B_loc[:, arm, :] = 0.0
        B_loc[arm, arm, :] = 1.0
    return GenerativeModel.from_arrays(list(base.A), [B_loc, base.B[1]], list(base.C), list(base.D))


class ReversalTMazeEnv(TMazeEnv):
    """``N`` T-mazes whose rewarded arm swaps every ``reverse_every`` trials (module doc).

    ``reversed`` ``(N,) bool``: the agent's current trial is in a reversed phase.
    """

    _FLAG_ROWS = 3  # per-agent temporaries of its hooks
    _AGENT_TMP = True
    _BEST = "cue then the arm that pays now"

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        reward_probs: tuple[float, float] = (0.98, 0.02),
        reward: float = 3.0,
        punishment: float = -3.0,
        trial_len: int = 3,
        reverse_every: int = 50,
    ) -> None:
        if isinstance(reverse_every, bool) or not isinstance(reverse_every, int) or (
            reverse_every < 1
        ):
            raise InputError(f"reverse_every must be an int >= 1 (trials), got {reverse_every!r}")
        self.reverse_every = reverse_every
        # TMazeEnv's statistics and cue bookkeeping, on the maze whose arms hold the agent.
        recipe = partial(tmaze_reversal_model, reward_probs, reward, punishment)
        self.reward_probs = (float(reward_probs[0]), float(reward_probs[1]))
        TrialEnv.__init__(
            self, recipe(), n_agents, seed=seed, trial_len=trial_len, model_recipe=recipe
        )

    @property
    def reversed(self) -> BoolArray:
        """``(N,) bool`` whether each agent's current trial is in a reversed phase."""
        out: BoolArray = (self._arrays["trials"] // self.reverse_every) % 2 == 1
        return out

    def summary(self) -> dict[str, int | float]:
        return {**super().summary(), "reversed_fraction": float(self.reversed.mean())}

    def _record_step(self) -> None:
        arrays = self._arrays
        at_arm, reversed_now, tmp = self._flags  # free until TMazeEnv's _record_step
        loc = arrays["states"][:, LOCATION_FACTOR]
        np.equal(loc, RIGHT_ARM, out=at_arm)
        np.equal(loc, LEFT_ARM, out=tmp)
        np.logical_or(at_arm, tmp, out=at_arm)
        phase = self._tmp
        np.floor_divide(arrays["trials"], self.reverse_every, out=phase)
        np.bitwise_and(phase, 1, out=phase)
        np.not_equal(phase, 0, out=reversed_now)
        np.logical_and(at_arm, reversed_now, out=at_arm)
        # An arm gives reward or loss, never "no reward": swapping the two is REWARD + LOSS - o.
        outcome = arrays["obs"][:, REWARD_MODALITY]
        np.subtract(REWARD + LOSS, outcome, out=outcome, where=at_arm)
        super()._record_step()
