"""Experience a shared learner has not learned from yet: a few ticks of a small group's outcomes,
posteriors and actions, kept so that they are learned from in one update.

A shared count update costs about the same few dozen numpy calls whether it sums one agent's
increment or a few hundred: for a group of a handful of agents that is most of what learning
costs a tick. The tables the agents infer with change only when they are refreshed from the
counts (every ``refresh_every`` ticks), so the counts can take a small group's ticks in one
update at the refresh (or when this buffer is full, or before anything reads them) with the same
result: the same increments summed (in another order, so equal up to rounding), the same
``version`` (each tick counts as one update), the same touched columns. The group decides
whether to keep experience at all (:func:`experience_ticks`); this module holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A group keeps experience only if this many agent-ticks hold at least two of its ticks.
EXPERIENCE_ROWS = 256
#: And at most this many ticks of it.
EXPERIENCE_TICKS = 64


def experience_ticks(
    n_agents: int, *, refresh_every: int, forgetting: float, novelty: bool
) -> int:
    """How many ticks a shared group of ``n_agents`` keeps before it learns from them: 1 (learn
    every tick, keep nothing) when forgetting decays the counts at each update (each tick's
    decay applies to the counts of that tick), when novelty reads the counts every tick, when
    the tables follow the counts every tick, or when fewer than two ticks fit in
    :data:`EXPERIENCE_ROWS` agent-ticks; else up to :data:`EXPERIENCE_TICKS`, never more than
    ``refresh_every``, and as many as split ``refresh_every`` into updates of (nearly) one
    size."""
    if forgetting or novelty or refresh_every < 2 or n_agents < 1:
        return 1
    most = min(refresh_every, EXPERIENCE_TICKS, EXPERIENCE_ROWS // n_agents)
    if most < 2:
        return 1
    # Updates of one size between two refreshes: their scratch is made once.
    return -(-refresh_every // -(-refresh_every // most))


class Experience:
    """Up to ``ticks`` ticks of ``n_agents`` agents' experience, rows of one tick after another:
    ``obs (rows, M)``, ``qs[f] (rows, S_f)``, and when ``B`` is learned (``b_factors``) the
    posteriors before each transition ``qs_prev[f]`` of those factors, the actions ``(rows, F)``
    and whether each agent acted. Allocated once; :meth:`append` copies one tick in."""

    def __init__(
        self,
        ticks: int,
        n_agents: int,
        *,
        num_modalities: int,
        num_states: Sequence[int],
        dtype: np.dtype[np.floating],
        b_factors: Sequence[int] = (),
    ) -> None:
        rows = ticks * n_agents
        self.capacity = ticks
        self.n_agents = n_agents
        self.obs = np.zeros((rows, num_modalities), dtype=np.intp)
        self.qs = [np.zeros((rows, s), dtype=dtype) for s in num_states]
        learned = set(b_factors)
        # Factors whose transitions are not learned read the posteriors instead (never used).
        self.qs_prev = [
            np.zeros((rows, s), dtype=dtype) if f in learned else self.qs[f]
            for f, s in enumerate(num_states)
        ]
        self.learns_B = bool(learned)
        self.actions = np.zeros((rows, len(num_states) if learned else 0), dtype=np.intp)
        self.acted = np.zeros(rows if learned else 0, dtype=bool)
        self._b_factors = tuple(sorted(learned))
        #: Ticks held.
        self.ticks = 0

    @staticmethod
    def row_nbytes(
        num_modalities: int, num_states: Sequence[int], itemsize: int, b_factors: Sequence[int]
    ) -> int:
        """Bytes of one agent-tick row (what :meth:`nbytes` is made of)."""
        intp = np.dtype(np.intp).itemsize
        total = num_modalities * intp + sum(num_states) * itemsize
        if b_factors:
            total += sum(num_states[f] for f in set(b_factors)) * itemsize
            total += len(num_states) * intp + 1
        return total

    @property
    def nbytes(self) -> int:
        arrays = [self.obs, *self.qs, self.actions, self.acted]
        arrays += [self.qs_prev[f] for f in self._b_factors]
        return sum(a.nbytes for a in arrays)

    @property
    def full(self) -> bool:
        return self.ticks >= self.capacity

    @property
    def rows(self) -> int:
        """Rows held (agent-ticks)."""
        return self.ticks * self.n_agents

    @property
    def acted_ticks(self) -> int:
        """Ticks held in which some agent acted: ``B``'s updates (0 when ``B`` is not
        learned). Counted from the rows when asked (once per update), not per tick."""
        if not self.learns_B or not self.ticks:
            return 0
        acted = self.acted[: self.rows].reshape(self.ticks, self.n_agents)
        return int(np.count_nonzero(acted.any(axis=1)))

    def append(
        self,
        obs: np.ndarray,
        qs: Sequence[np.ndarray],
        qs_prev: Sequence[np.ndarray],
        actions: np.ndarray,
        acted: np.ndarray,
    ) -> None:
        """One tick: ``obs (N, M)``, ``qs[f] (N, S_f)``; ``qs_prev``, ``actions (N, F)`` and
        ``acted (N,)`` are read only when ``B`` is learned. The caller keeps it from overflowing
        (:attr:`full`). A few slice assignments and nothing else (it runs every tick of a small
        group): the rows of agents that did not act are copied too, and ``B``'s update gives
        them no weight (its ``acted`` mask)."""
        start = self.ticks * self.n_agents
        end = start + self.n_agents
        self.obs[start:end] = obs
        for dst, q in zip(self.qs, qs, strict=True):
            dst[start:end] = q
        if self.learns_B:
            for f in self._b_factors:
                self.qs_prev[f][start:end] = qs_prev[f]
            self.actions[start:end] = actions
            self.acted[start:end] = acted
        self.ticks += 1

    def clear(self) -> None:
        self.ticks = 0
