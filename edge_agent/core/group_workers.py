"""An agent group on several cores: the per-agent state in shared memory, the blocks stepped by
forked workers (:mod:`edge_agent.core.workers`).
"""

from __future__ import annotations

import numpy as np

from edge_agent.core.group_blocks import _PLAN_SHARED
from edge_agent.core.planning_pass import PlanningPass


class GroupWorkers(PlanningPass):
    """The worker plumbing of an agent group (see :meth:`start_workers`)."""

    @property
    def workers(self) -> int:
        """Processes that step this group's blocks (1: the caller alone)."""
        return 1 if self._workers is None else self._workers.count

    def start_workers(self, count: int) -> int:
        """Step the blocks on ``count`` processes (the caller and ``count - 1`` forked workers;
        see :mod:`edge_agent.core.workers`): the per-agent state moves to shared memory and the
        budget reserves each worker's kernel scratch. At most one process per block; returns the
        count used. Integer observations only: soft evidence is stepped by the caller alone."""
        from edge_agent.core.workers import BlockWorkers  # noqa: PLC0415 - multi-core groups only

        self._stop_workers()
        blocks = self._blocks()
        count = max(1, min(int(count), len(blocks)))
        self._wanted_workers = count
        if count == 1:
            return 1
        if self._budget is not None:
            self._workers_reservation = self._budget.reserve(
                f"{self.name}:workers",
                "agents",
                (count - 1) * self.scratch_nbytes(self.n_agents),
                hint=f"lower the workers of group {self.name!r}",
            )
        self._share_state()
        blocks = self._blocks()
        if not self._deterministic:
            self._workers_seed = int(self.rng.integers(2**63))
        self._workers = BlockWorkers(
            count,
            len(blocks),
            (self.n_agents, self.cm.num_modalities),
            self._step_index,
            set_rng=self._set_rng,
            seed=self._workers_seed,
            name=f"group {self.name!r}",
            after_fork=self._after_fork,
        )
        return self._workers.count

    @property
    def workers_restarts(self) -> int:
        """How often the workers were forked again after one died or failed."""
        return 0 if self._workers is None else self._workers.restarts

    def workers_rss_bytes(self) -> int:
        """What the workers hold that this process does not (their unique resident pages)."""
        return 0 if self._workers is None else self._workers.rss_bytes()

    def stop_workers(self) -> None:
        """Back to one process (the state stays where it is; nothing is lost)."""
        self._wanted_workers = 1
        self._stop_workers()

    def _stop_workers(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        if self._workers_reservation is not None:
            self._workers_reservation.release()
            self._workers_reservation = None

    def _share_state(self) -> None:
        """Move what the workers write (beliefs, priors, posteriors, actions, the staged history
        row) into shared memory (what is there already, allocated with ``shared_state``, stays
        where it is); the block views are rebuilt on the new arrays."""
        from edge_agent.core.workers import shared  # noqa: PLC0415

        self._shared_state = True  # a resize allocates there from now on
        self.qs = [shared(q) for q in self.qs]
        self.prior = [shared(p) for p in self.prior]
        self._prior_reset, self._prior_small = shared(self._prior_reset), shared(self._prior_small)
        self.q_pi, self.G = shared(self.q_pi), shared(self.G)
        self.action, self.has_action = shared(self.action), shared(self.has_action)
        if not self.planning.every_tick:  # what the workers write, or read after the fork
            for name in _PLAN_SHARED:
                setattr(self, name, shared(getattr(self, name)))
        if self.history is not None:
            if self.history_beliefs == "full":
                self._qs_row = shared(self._qs_row)
            else:
                self._map_row, self._p_row = shared(self._map_row), shared(self._p_row)
        self._rows.clear()
        self._dense_rows.clear()

    def _after_fork(self) -> None:
        """In the caller and in each worker once the workers are forked: scratch of its own.
        The scratch allocated before the fork is shared copy-on-write, and the first writes of
        either process would copy it page by page (splitting numpy's large pages); a new
        allocation is private from the start."""
        self._new_scratch()
        self._blocks()

    def _step_index(self, index: int, obs: np.ndarray, record: bool) -> None:
        if self.planning.every_tick:
            self._step_rows(self._rows[index], obs, None, record)
        else:
            self._pass_block(index, obs, None, record)
