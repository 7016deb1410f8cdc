"""pymdp's T-maze (``pymdp/envs/tmaze.py``, ``TMazeEnv``, inferactively-pymdp 0.0.7.1).

An agent starts in the centre of a T-shaped maze. One of the two top arms holds a reward with
probability ``a`` (``reward_probs[0]``, default 0.98) and a loss with ``b`` (``reward_probs[1]``);
the other arm the reverse. The bottom arm holds a cue that tells which arm is the good one.

Orders, exactly as pymdp builds them:

* factor 0, location (4): 0 centre, 1 right arm, 2 left arm, 3 cue location; controllable,
  4 actions: action ``u`` moves the agent to location ``u`` from anywhere
  (``B[0][s', s, u] = 1`` iff ``s' == u``).
* factor 1, reward condition (2): 0 reward on right, 1 reward on left; one action, identity.
* modality 0, location (4): the location, observed exactly.
* modality 1, reward (3): 0 no reward, 1 reward, 2 loss. Centre and cue location: always
  "no reward". Arm ``loc`` in condition ``c``: ``a`` on reward and ``b`` on loss when
  ``loc == c + 1`` (the arm is the good one), else ``a`` on loss and ``b`` on reward.
* modality 2, cue (2): 0 cue right, 1 cue left. At the cue location the cue equals the
  condition; elsewhere it is uniform (0.5, 0.5).

``C`` (log-preferences, as in pymdp's T-maze demo): reward ``+3``, loss ``-3``, the rest 0.
``D``: the agent starts in the centre, the condition is uniform.

Trials in :class:`TMazeEnv`: each trial has ``trial_len`` time steps (default 3, as in SPM's
T-maze: start, cue, arm). At ``t = 0`` the agent is in the centre with a condition freshly drawn
from ``D``; steps ``t = 1 .. trial_len - 1`` follow its moves. The step after ``t = trial_len - 1``
starts the next trial: its action is ignored, ``episode_start`` is True.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import ModelError
from edge_agent.sim import BoolArray, IntArray
from edge_agent.sim.trials import TRIAL_COUNTERS, TrialEnv

LOCATIONS: tuple[str, ...] = ("centre", "right arm", "left arm", "cue location")
CONDITIONS: tuple[str, ...] = ("reward on right", "reward on left")
REWARD_OUTCOMES: tuple[str, ...] = ("no reward", "reward", "loss")
CUE_OUTCOMES: tuple[str, ...] = ("cue right", "cue left")

CENTRE, RIGHT_ARM, LEFT_ARM, CUE_LOCATION = range(4)
NO_REWARD, REWARD, LOSS = range(3)
LOCATION_FACTOR, CONDITION_FACTOR = 0, 1
LOCATION_MODALITY, REWARD_MODALITY, CUE_MODALITY = 0, 1, 2

_PROB_TOL = 1e-9


def tmaze_model(
    reward_probs: tuple[float, float] = (0.98, 0.02),
    reward: float = 3.0,
    punishment: float = -3.0,
) -> GenerativeModel:
    """The T-maze generative model (module docstring); ``reward_probs`` is ``(a, b)``."""
    probs = tuple(float(p) for p in reward_probs)
    if len(probs) != 2:
        raise ModelError(f"reward_probs must have 2 entries, got {len(probs)}")
    if min(probs) < 0 or abs(sum(probs) - 1.0) > _PROB_TOL:
        raise ModelError(f"reward_probs must be non-negative and sum to 1, got {probs}")
    if not (np.isfinite(reward) and np.isfinite(punishment)):
        raise ModelError(f"reward and punishment must be finite, got {reward}, {punishment}")
    high, low = probs
    num_loc, num_cond = len(LOCATIONS), len(CONDITIONS)

    A_loc = np.zeros((num_loc, num_loc, num_cond))
    A_reward = np.zeros((len(REWARD_OUTCOMES), num_loc, num_cond))
    A_cue = np.zeros((len(CUE_OUTCOMES), num_loc, num_cond))
    for loc in range(num_loc):
        A_loc[loc, loc, :] = 1.0
    for loc in (CENTRE, CUE_LOCATION):
        A_reward[NO_REWARD, loc, :] = 1.0
    for loc in (CENTRE, RIGHT_ARM, LEFT_ARM):
        A_cue[:, loc, :] = 1.0 / len(CUE_OUTCOMES)
    for cond in range(num_cond):
        A_cue[cond, CUE_LOCATION, cond] = 1.0
        for loc in (RIGHT_ARM, LEFT_ARM):
            good = loc == cond + 1
            A_reward[REWARD if good else LOSS, loc, cond] = high
            A_reward[LOSS if good else REWARD, loc, cond] = low

    B_loc = np.zeros((num_loc, num_loc, num_loc))
    for u in range(num_loc):
        B_loc[u, :, u] = 1.0
    B_cond = np.eye(num_cond).reshape(num_cond, num_cond, 1)

    C_reward = np.zeros(len(REWARD_OUTCOMES))
    C_reward[REWARD] = reward
    C_reward[LOSS] = punishment
    C = [np.zeros(num_loc), C_reward, np.zeros(len(CUE_OUTCOMES))]
    D = [np.eye(num_loc)[CENTRE], np.full(num_cond, 1.0 / num_cond)]
    return GenerativeModel.from_arrays([A_loc, A_reward, A_cue], [B_loc, B_cond], C, D)


class TMazeEnv(TrialEnv):
    """``N`` agents, each in its own T-maze with its own hidden condition per trial.

    Actions are ``(N, 2)``: column 0 the location to move to (0..3), column 1 always 0.

    Per-agent statistics (read-only views), counted over all trials: ``rewards``, ``losses``
    (reward-modality outcomes observed), ``cue_visits`` (steps spent at the cue location),
    ``trials`` (trials completed), ``cue_first_trials`` (completed trials whose first arm visit
    came after a cue visit). For the current trial: ``cue_first`` ``(N,) bool`` (set when the first
    arm visit follows a cue visit); ``last_trial_cue_first`` ``(N,) bool`` the same for the most
    recently completed trial.
    """

    _FLAG_ROWS = 3  # per-agent temporaries of its hooks

    def __init__(
        self,
        n_agents: int,
        *,
        seed: int = 0,
        reward_probs: tuple[float, float] = (0.98, 0.02),
        reward: float = 3.0,
        punishment: float = -3.0,
        trial_len: int = 3,
    ) -> None:
        recipe = partial(tmaze_model, reward_probs, reward, punishment)
        self.reward_probs = (float(reward_probs[0]), float(reward_probs[1]))
        super().__init__(recipe(), n_agents, seed=seed, trial_len=trial_len, model_recipe=recipe)

    @property
    def conditions(self) -> IntArray:
        """``(N,) int64`` hidden reward condition of each agent's current trial."""
        return self._views["states"][:, CONDITION_FACTOR]

    @property
    def cue_first_trials(self) -> IntArray:
        return self._views["cue_first_trials"]

    @property
    def cue_first(self) -> BoolArray:
        return self._views["cue_first"]

    @property
    def last_trial_cue_first(self) -> BoolArray:
        return self._views["last_trial_cue_first"]

    def summary(self) -> dict[str, int | float]:
        return {**super().summary(), "cue_first_fraction": self.per_trial("cue_first_trials")}

    #: What the best agent of :meth:`references` does after the cue.
    _BEST: ClassVar[str] = "cue then its arm"

    def references(self) -> dict[str, str]:
        """Rewards and losses a trial of an agent that visits the cue and then stays in an
        arm for the rest of the trial (``trial_len - 2`` steps): the rewarded arm, or one at
        random."""
        high, low = self.reward_probs
        steps = self.trial_len - 2
        guess = f"an arm at random {steps * (high + low) / 2:.3g}"
        return {
            "rewards_per_trial": f"{self._BEST} {steps * high:.3g}, {guess}",
            "losses_per_trial": f"{self._BEST} {steps * low:.3g}, {guess}",
        }

    def _agent_arrays(self, n: int) -> dict[str, NDArray[Any]]:
        counters = (*TRIAL_COUNTERS, "cue_first_trials")
        flags = ("visited_cue", "visited_arm", "cue_first", "last_trial_cue_first")
        return {
            **{name: np.zeros(n, dtype=np.int64) for name in counters},
            **{name: np.zeros(n, dtype=np.bool_) for name in flags},
        }

    def _begin_episodes(self, mask: BoolArray) -> None:
        for name in ("visited_cue", "visited_arm", "cue_first"):
            np.copyto(self._arrays[name], False, where=mask)

    def _record_step(self) -> None:
        arrays = self._arrays
        loc = arrays["states"][:, LOCATION_FACTOR]
        outcome = arrays["obs"][:, REWARD_MODALITY]
        at_cue, at_arm, tmp = self._flags
        np.equal(outcome, REWARD, out=tmp)
        np.add(arrays["rewards"], tmp, out=arrays["rewards"])
        np.equal(outcome, LOSS, out=tmp)
        np.add(arrays["losses"], tmp, out=arrays["losses"])

        np.equal(loc, CUE_LOCATION, out=at_cue)
        np.add(arrays["cue_visits"], at_cue, out=arrays["cue_visits"])
        np.equal(loc, RIGHT_ARM, out=at_arm)
        np.equal(loc, LEFT_ARM, out=tmp)
        np.logical_or(at_arm, tmp, out=at_arm)

        visited_cue, visited_arm = arrays["visited_cue"], arrays["visited_arm"]
        cue_first = arrays["cue_first"]
        np.logical_not(visited_arm, out=tmp)
        np.logical_and(tmp, at_arm, out=tmp)  # first arm visit of the trial happens now
        np.copyto(cue_first, visited_cue, where=tmp)
        np.logical_or(visited_cue, at_cue, out=visited_cue)
        np.logical_or(visited_arm, at_arm, out=visited_arm)

        np.equal(arrays["episode_steps"], self.trial_len - 1, out=tmp)  # trial's last step
        np.add(arrays["trials"], tmp, out=arrays["trials"])
        np.copyto(arrays["last_trial_cue_first"], cue_first, where=tmp)
        np.logical_and(tmp, cue_first, out=tmp)
        np.add(arrays["cue_first_trials"], tmp, out=arrays["cue_first_trials"])
