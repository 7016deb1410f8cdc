"""A batched sensor world for neural agents: noisy feature vectors, a hidden class, a reward.

Every agent ``i`` has a hidden class ``c_i`` in ``[0, K)``. Each tick it observes one ``F``-dim
float32 feature vector

    x_i = prototypes[c_i] + noise * eps,      eps ~ N(0, I)

and acts with an integer in ``[0, K)``; the rewarded action is its current class
(``reward_i = 1`` if ``action_i == c_i`` else 0). After each action the class switches with
probability ``switch_prob`` to a class drawn uniformly from all ``K`` (possibly the same one), so
a good policy averages the recent past but forgets old evidence: what a window of the last ``T``
observations is for.

The prototypes are ``K`` random directions scaled to norm ``separation`` (seeded): with the
defaults (``K = 4``, ``F = 8``, ``separation = 2``, ``noise = 1``, ``switch_prob = 0.02``) the
ideal observer names the class from one observation about 81 % of the time, and from an
exponentially weighted window of the last 8 (time constant 2-4 steps) about 97 % of the time.

It follows the conventions of :mod:`edge_agent.sim`: one generator per world (a seed fixes a run),
no Python loop over agents, buffers allocated up front, and the arrays ``reset``/``step`` return
are **read-only views of buffers the world reuses** (copy them to keep them).

In the daemon (``source = { type = "sim", world = "sensors" }``) the world feeds a neural policy
group, whose ``(N,)`` actions are guesses of the class, or a perception group in front of the
Active Inference model :func:`sensor_aif_model` (the built-in model ``sensors``): its second
factor is the guess, and its second modality the reward of the last guess, which the world
reports in :attr:`SensorWorld.outcomes`. The world has no episodes (:attr:`episode_start` is
always false); :meth:`SensorWorld.summary` reports the share of rewarded guesses.

For the maths of the ideal observer (used by the host tool's model builders): the class
log-likelihood of one observation is ``(x . mu_k - |mu_k|^2 / 2) / noise^2`` up to a constant.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import InputError
from edge_agent.sim import check_n_agents

__all__ = ["SensorWorld", "sensor_aif_model", "sensor_prototypes"]

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


def sensor_prototypes(
    num_classes: int, num_features: int, separation: float, seed: int
) -> NDArray[np.float64]:
    """``(K, F)`` class prototypes: random directions with norm ``separation`` (seeded)."""
    if num_classes < 2 or num_features < 1:
        raise InputError(
            f"a sensor world needs >= 2 classes and >= 1 feature, got {num_classes}, {num_features}"
        )
    if not np.isfinite(separation) or separation <= 0:
        raise InputError(f"separation must be a positive number, got {separation}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E5]))
    directions = rng.standard_normal((num_classes, num_features))
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    out: NDArray[np.float64] = directions / np.maximum(norms, 1e-12) * separation
    return out


class SensorWorld:
    """``n_agents`` independent sensor worlds stepped as one batch (see the module docstring).

    Shapes: ``obs`` ``(N, F)`` float32, ``actions`` ``(N,)`` integers in ``[0, K)``,
    ``reward`` ``(N,)`` float32, ``true_class`` ``(N,)`` int64.
    """

    _class: IntArray
    _obs: FloatArray

    def __init__(
        self,
        n_agents: int,
        *,
        num_classes: int = 4,
        num_features: int = 8,
        separation: float = 2.0,
        noise: float = 1.0,
        switch_prob: float = 0.02,
        seed: int | None = 0,
        prototype_seed: int = 0,
    ) -> None:
        if not np.isfinite(noise) or noise < 0:
            raise InputError(f"noise must be >= 0, got {noise}")
        if not 0.0 <= switch_prob <= 1.0:
            raise InputError(f"switch_prob must be in [0, 1], got {switch_prob}")
        self.num_classes = int(num_classes)
        self.num_features = int(num_features)
        self.separation = float(separation)
        self.noise = float(noise)
        self.switch_prob = float(switch_prob)
        self.prototype_seed = int(prototype_seed)
        self.prototypes = sensor_prototypes(num_classes, num_features, separation, prototype_seed)
        self.prototypes.setflags(write=False)
        self._proto32 = self.prototypes.astype(np.float32)
        self.rng = np.random.default_rng(seed)
        self.n_agents = 0
        #: Guesses judged and guesses rewarded since the world was made (the summary's rate).
        self.guesses = 0
        self.rewarded = 0
        self.resize(check_n_agents(n_agents))

    # -- buffers ---------------------------------------------------------------------------------
    def resize(self, n_agents: int) -> None:
        """Change the number of agents; agents kept keep their class, new ones are drawn."""
        n = check_n_agents(n_agents)
        old = self.n_agents
        keep = min(old, n)
        classes = np.zeros(n, dtype=np.int64)
        obs = np.zeros((n, self.num_features), dtype=np.float32)
        if keep:
            classes[:keep] = self._class[:keep]
            obs[:keep] = self._obs[:keep]
        self._class = classes
        self._obs = obs
        self._reward = np.zeros(n, dtype=np.float32)
        self._noise = np.zeros((n, self.num_features), dtype=np.float32)
        self._u = np.zeros(n, dtype=np.float64)
        self._draw = np.zeros(n, dtype=np.int64)
        self._switch = np.zeros(n, dtype=bool)
        self._outcome = np.zeros((n, 1), dtype=np.int64)
        self._episode_start = np.zeros(n, dtype=bool)
        self.n_agents = n
        if n > keep:
            self.reset(np.arange(n) >= keep)

    # -- views -------------------------------------------------------------------------------------
    @property
    def true_class(self) -> IntArray:
        return _readonly(self._class)

    @property
    def reward(self) -> FloatArray:
        """Reward of the last step: 1 where the action was the class at that step, else 0."""
        return _readonly(self._reward)

    @property
    def obs(self) -> FloatArray:
        return _readonly(self._obs)

    @property
    def outcomes(self) -> IntArray:
        """``(N, 1)``: 1 where the last guess was rewarded, else 0 (the reward modality of
        :func:`sensor_aif_model`)."""
        return _readonly(self._outcome)

    @property
    def episode_start(self) -> NDArray[np.bool_]:
        """Always false: the world has no episodes (classes switch instead)."""
        return _readonly(self._episode_start)

    def summary(self) -> dict[str, int | float]:
        """Guesses judged and the share rewarded, for the daemon's status and log."""
        rate = self.rewarded / self.guesses if self.guesses else 0.0
        return {"agents": self.n_agents, "guesses": self.guesses, "reward_rate": rate}

    def references(self) -> dict[str, str]:
        """``reward_rate`` against guessing: one class in ``num_classes``."""
        return {"reward_rate": f"chance {1 / self.num_classes:.3g}"}

    # -- dynamics ---------------------------------------------------------------------------------
    def _uniform_classes(self) -> None:
        """``self._draw`` = uniform classes in [0, K) for every agent, without allocating."""
        self.rng.random(out=self._u)
        np.multiply(self._u, self.num_classes, out=self._u)
        np.copyto(self._draw, self._u, casting="unsafe")  # floor for non-negative values
        np.minimum(self._draw, self.num_classes - 1, out=self._draw)

    def _observe(self) -> None:
        np.take(self._proto32, self._class, axis=0, out=self._obs, mode="clip")  # no out copy
        if self.noise > 0:
            self.rng.standard_normal(out=self._noise, dtype=np.float32)
            np.multiply(self._noise, np.float32(self.noise), out=self._noise)
            np.add(self._obs, self._noise, out=self._obs)

    def reset(self, mask: np.ndarray | None = None) -> FloatArray:
        """New classes for the agents in ``mask`` (all by default); returns ``obs`` ``(N, F)``.

        Agents outside ``mask`` keep their class and their last observation.
        """
        if mask is None:
            self._uniform_classes()
            np.copyto(self._class, self._draw)
            self._observe()
            return self.obs
        sel = np.asarray(mask)
        if sel.shape != (self.n_agents,) or sel.dtype != np.bool_:
            raise InputError(f"mask must be a bool array of shape ({self.n_agents},)")
        np.copyto(self._outcome[:, 0], 0, where=sel)
        old_obs = self._obs.copy()
        self._uniform_classes()
        np.copyto(self._class, self._draw, where=sel)
        self._observe()
        np.copyto(self._obs, old_obs, where=~sel[:, None])
        return self.obs

    def check_actions(self, actions: np.ndarray) -> IntArray:
        """``actions`` as ``(N,)`` int64; InputError for a wrong shape, dtype or range.

        ``(N, 1)`` and ``(N, 2)`` are taken too: the last column is the guess (the actions of
        :func:`sensor_aif_model`'s two factors)."""
        arr = np.asarray(actions)
        if arr.ndim == 2 and arr.shape[1] in (1, 2):
            arr = arr[:, -1]
        if arr.shape != (self.n_agents,):
            raise InputError(f"actions has shape {np.shape(actions)}, expected ({self.n_agents},)")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.num_classes):
            raise InputError(
                f"actions must be in [0, {self.num_classes}), got values in "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
        return arr.astype(np.int64, copy=False)

    def step(self, actions: np.ndarray) -> FloatArray:
        """Reward the actions, switch classes with ``switch_prob``, observe; returns ``obs``."""
        a = self.check_actions(actions)
        np.equal(a, self._class, out=self._switch)
        np.copyto(self._reward, self._switch)
        np.copyto(self._outcome[:, 0], self._switch)
        self.guesses += self.n_agents
        self.rewarded += int(np.count_nonzero(self._switch))
        if self.switch_prob > 0:
            self.rng.random(out=self._u)
            np.less(self._u, self.switch_prob, out=self._switch)
            self._uniform_classes()
            np.copyto(self._class, self._draw, where=self._switch)
        self._observe()
        return self.obs

    # -- data sets --------------------------------------------------------------------------------
    def sample_windows(
        self, n: int, window: int, seed: int | None = None
    ) -> tuple[FloatArray, IntArray]:
        """``n`` windows of ``window`` consecutive observations from fresh worlds like this one.

        Returns ``X`` ``(n, window, F)`` float32 (oldest first) and the class at the last step
        ``y`` ``(n,)``: calibration and held-out data for a policy over this world. Uses its own
        generator (``seed``), not this world's.
        """
        if n < 1 or window < 1:
            raise InputError(f"need n >= 1 and window >= 1, got {n}, {window}")
        world = SensorWorld(
            n,
            num_classes=self.num_classes,
            num_features=self.num_features,
            separation=self.separation,
            noise=self.noise,
            switch_prob=self.switch_prob,
            seed=seed,
            prototype_seed=self.prototype_seed,
        )
        X = np.empty((n, window, self.num_features), dtype=np.float32)
        idle = np.zeros(n, dtype=np.int64)
        X[:, 0] = world.obs
        for t in range(1, window):
            X[:, t] = world.step(idle)
        return X, world.true_class.copy()


def sensor_aif_model(
    num_classes: int = 4, switch_prob: float = 0.02, reward_preference: float = 3.0
) -> GenerativeModel:
    """Active Inference agents that name the hidden class of a :class:`SensorWorld`.

    Factors: the class (``K`` states, not controllable: it stays with ``1 - switch_prob`` and
    otherwise jumps to a uniform class) and the guess (``K`` states, the action sets it).
    Modalities: the class as perceived (``K`` outcomes, ``A[o, c, g] ~ [o == c]``: a
    perception model supplies it as soft evidence) and the reward of the guess (``[no, yes]``,
    ``yes`` when guess and class agree), which the agents prefer by ``reward_preference`` nats.
    A one-step planner then guesses the class it believes most likely.
    """
    K = int(num_classes)
    if K < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= switch_prob <= 1.0:
        raise InputError(f"switch_prob must be in [0, 1], got {switch_prob}")
    eye = np.eye(K)
    floor = 1e-3
    A_class = np.broadcast_to(((1 - floor) * eye + floor / K)[:, :, None], (K, K, K)).copy()
    match = eye[:, :]  # [c, g]
    A_reward = np.stack([1.0 - match, match]) * (1 - floor) + floor / 2
    stay = (1 - switch_prob) * eye + switch_prob / K
    B_class = stay[:, :, None]
    B_guess = np.broadcast_to(eye[:, None, :], (K, K, K)).copy()  # [g', g, u] = [g' == u]
    C = [np.zeros(K), np.array([0.0, float(reward_preference)])]
    D = [np.full(K, 1.0 / K), np.full(K, 1.0 / K)]
    return GenerativeModel.from_arrays([A_class, A_reward], [B_class, B_guess], C, D)


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view
