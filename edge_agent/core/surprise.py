"""How surprised a group's agents are by what they observe: the mean of ``-ln p(o)`` per tick, the
outcomes' probability under the beliefs the agents predicted (their prior for the tick), sampled
so that it costs a large group's tick little.

:class:`SampledSurprise` keeps the moving mean; it is told each tick's outcomes and predicted
beliefs (:meth:`SampledSurprise.note`), and takes ``p(o)`` from whoever holds the likelihood the
agents infer with (an :data:`OutcomeProbabilities`): one model's for a group, each agent's own
for per-agent tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_agent.aif.constants import EPS
from edge_agent.aif.learning_kernels import joint_states
from edge_agent.core.group_blocks import IntArray

#: The moving mean of the surprise spans about this many ticks.
SURPRISE_TICKS = 100
#: The surprise of a tick is the mean over at most this many agents of the group.
SURPRISE_AGENTS = 256
#: The surprise is sampled on every this many ticks (it cost a T-maze learning tick 11 % when
#: taken on every tick).
SURPRISE_EVERY = 8

#: ``p(obs, rows, joint)``: ``(r, M)`` float64, ``p(o_m) = A_m[o_m] . joint`` of the agents
#: ``rows`` (indices into the group) whose outcomes are ``obs`` ``(r, M)`` and joint predicted
#: beliefs ``joint`` ``(r, S)``, under the likelihood they infer with (written into freely).
OutcomeProbabilities = Callable[[IntArray, IntArray, np.ndarray], np.ndarray]


class SampledSurprise:
    """The agents' mean surprise ``-ln p(o)`` of a tick's outcomes (summed over modalities), an
    exponential moving mean over about :data:`SURPRISE_TICKS` ticks (:attr:`value`)."""

    def __init__(self) -> None:
        self.value = 0.0
        self._ticks = 0  # ticks sampled so far
        self._clock = 0  # ticks told so far
        #: The agents the surprise is taken over (indices), and the group size they are for.
        self._rows: tuple[IntArray, int] | None = None

    def note(
        self, obs: IntArray, prior: Sequence[np.ndarray], p_obs: OutcomeProbabilities
    ) -> None:
        """Fold this tick's mean surprise ``-ln p(o)``, ``p(o_m) = A_m[o_m] . prior`` (the joint
        of the agents' predicted beliefs, ``prior[f]`` ``(N, S_f)``; ``p_obs`` gives it), into
        the moving mean: over every agent of a group of at most :data:`SURPRISE_AGENTS`, else
        over that many spread evenly (every ``ceil(N / SURPRISE_AGENTS)``-th), and only every
        :data:`SURPRISE_EVERY`-th tick (the first included), which keeps it off most ticks of a
        small model."""
        self._clock += 1
        if (self._clock - 1) % SURPRISE_EVERY:
            return
        n = obs.shape[0]
        step = -(-n // SURPRISE_AGENTS)
        if self._rows is None or self._rows[1] != n:
            self._rows = (np.arange(0, n, step), n)
        rows = self._rows[0]
        if step > 1:  # views of those rows (the float64 joint below copies them once)
            obs, prior = obs[::step], [p[::step] for p in prior]
        joint = joint_states([np.asarray(p, dtype=np.float64) for p in prior])
        p = p_obs(obs, rows, joint)
        np.add(p, EPS, out=p)
        np.log(p, out=p)
        total = -float(p.sum()) / len(rows)  # the modalities' means over the agents, summed
        if self._ticks == 0:
            self.value = total
        else:
            weight = max(1.0 / (self._ticks + 1), SURPRISE_EVERY / SURPRISE_TICKS)
            self.value += weight * (total - self.value)
        self._ticks += 1
