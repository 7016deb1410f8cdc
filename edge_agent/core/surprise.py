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
#: ``taken(rows)``: ``(r, M)`` float64, the ``p(o_m)`` a tick already took of the agents ``rows``
#: under their prior (a compiled pass's, :meth:`~edge_agent.core.native_pass.NativePass.taken`;
#: written into freely).
TakenProbabilities = Callable[[IntArray], np.ndarray]


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
        rows = self._sampled(obs.shape[0])
        if rows is None:
            return
        step = -(-obs.shape[0] // SURPRISE_AGENTS)
        if step > 1:  # views of those rows (the float64 joint below copies them once)
            obs, prior = obs[::step], [p[::step] for p in prior]
        joint = joint_states([np.asarray(p, dtype=np.float64) for p in prior])
        self._fold(p_obs(obs, rows, joint), len(rows))

    def note_taken(self, n_agents: int, taken: TakenProbabilities) -> None:
        """:meth:`note` of a tick of ``n_agents`` agents that took its outcomes' ``p(o_m)``
        itself (``taken``: a compiled pass's): the same agents on the same ticks, their
        ``p(o)`` asked of ``taken`` alone (no outcomes or prior read, no joint made)."""
        rows = self._sampled(n_agents)
        if rows is not None:
            self._fold(taken(rows), len(rows))

    def _sampled(self, n: int) -> IntArray | None:
        """The agents whose surprise this tick (of ``n`` agents) folds in, or None on a tick
        not sampled (counted)."""
        self._clock += 1
        if (self._clock - 1) % SURPRISE_EVERY:
            return None
        if self._rows is None or self._rows[1] != n:
            self._rows = (np.arange(0, n, -(-n // SURPRISE_AGENTS)), n)
        return self._rows[0]

    def _fold(self, p: np.ndarray, r: int) -> None:
        """The ``r`` sampled agents' ``p(o_m)`` ``(r, M)`` (written into) into the moving
        mean."""
        np.add(p, EPS, out=p)
        np.log(p, out=p)
        total = -float(p.sum()) / r  # the modalities' means over the agents, summed
        if self._ticks == 0:
            self.value = total
        else:
            weight = max(1.0 / (self._ticks + 1), SURPRISE_EVERY / SURPRISE_TICKS)
            self.value += weight * (total - self.value)
        self._ticks += 1
