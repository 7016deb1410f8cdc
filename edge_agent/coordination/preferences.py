"""Per-agent task preferences: :class:`TaskPreferences` replaces ``C`` for the agents holding a
task; the group's shared compiled model is untouched and holders get ``Delta G`` added before
acting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.kernels import CompiledModel
from edge_agent.arrays import distinct
from edge_agent.coordination.messages import (
    TaskSpec,
)
from edge_agent.coordination.utility import policy_backward, policy_utility_rows
from edge_agent.errors import InputError

IntArray = NDArray[np.int64]

#: Largest ``P * S`` for which :class:`TaskPreferences` keeps each holder's utility along every
#: policy precomputed (single-factor models); above it, the policy tree is walked every tick.
PRECOMPUTE_MAX: Final = 4096


# --------------------------------------------------------------------------------------------
# per-agent preferences for the agents holding a task
# --------------------------------------------------------------------------------------------
class TaskPreferences:
    """Which agents of a group hold a task, and their utility override.

    The compiled model's utility is shared by the whole group; a holder's preferences are
    replaced by adding ``Delta G(n, pi) = sum_t qx_t(n, pi) . Delta U_n`` to its ``G`` (with
    ``Delta U_n = U_task - U_base``) and recomputing its ``q_pi``, which is exactly the ``G`` a
    model with the task's ``C`` would give (utility is linear in the predicted joint state).
    Storage: ``slot (N,) int32`` (-1: no task) and a table ``(max_held, S_joint)`` of ``Delta U``
    rows, one per held task.
    """

    def __init__(
        self, group_cm: CompiledModel, n_agents: int, *, use_utility: bool, max_held: int = 256
    ) -> None:
        self.cm = group_cm
        self.n_agents = n_agents
        self.use_utility = use_utility
        S_joint = int(np.prod(group_cm.num_states))
        self.max_held = max(1, min(max_held, n_agents))
        self.slot = np.full(n_agents, -1, dtype=np.int32)
        self.delta = np.zeros((self.max_held, S_joint), dtype=np.float64)
        P = group_cm.num_policies
        self.backward: np.ndarray | None = None
        self._backward_cache: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        if group_cm.num_factors == 1 and P * S_joint <= PRECOMPUTE_MAX:
            self.backward = np.zeros((self.max_held, P, S_joint), dtype=group_cm.dtype)
        self.goal_factor = np.zeros(self.max_held, dtype=np.int64)
        self.goal_state = np.zeros(self.max_held, dtype=np.int64)
        self.deadline = np.zeros(self.max_held, dtype=np.float64)
        self.task_of_slot: list[tuple[str, int] | None] = [None] * self.max_held
        self.role_of_slot = np.zeros(self.max_held, dtype=np.int64)
        """The role of a team task each slot's holder fills (0 for a one-agent task)."""
        self._free = list(range(self.max_held - 1, -1, -1))
        self.rows: IntArray = np.empty(0, dtype=np.int64)

    @classmethod
    def bytes_for(
        cls, group_cm: CompiledModel, n_agents: int, *, use_utility: bool, max_held: int = 256
    ) -> int:
        """:attr:`nbytes` of preferences for ``n_agents``, before allocating them: one ``int32``
        slot per agent and ``min(max_held, n_agents)`` rows (measured on a one-slot table)."""
        probe = cls(group_cm, 1, use_utility=use_utility, max_held=1)
        per_row = probe.nbytes - probe.slot.nbytes
        return n_agents * probe.slot.itemsize + max(1, min(max_held, n_agents)) * per_row

    @property
    def nbytes(self) -> int:
        """Bytes of the per-agent and per-slot tables (for the memory budget)."""
        arrays: list[np.ndarray] = [
            self.slot,
            self.delta,
            self.goal_factor,
            self.goal_state,
            self.deadline,
        ]
        if self.backward is not None:
            arrays.append(self.backward)
        return int(sum(a.nbytes for a in arrays))

    @property
    def held(self) -> dict[int, tuple[str, int]]:
        """``agent -> (task, epoch)`` for every holder."""
        return {
            int(a): self.task_of_slot[int(self.slot[a])]  # type: ignore[misc]
            for a in self.rows
        }

    def assign(
        self,
        agent: int,
        spec: TaskSpec,
        epoch: int,
        utility: np.ndarray,
        *,
        key: Hashable | None = None,
        role: int = 0,
    ) -> bool:
        """Give ``agent`` the task; False when the table is full (the caller counts it).

        ``key``: tasks with equal keys have equal ``utility`` (e.g. the same goal), so the
        per-policy utilities computed for one are reused for the next (LRU of ``max_held``).
        ``role``: the role of a team task the agent fills; its goal (and ``utility``) are the
        role's (:meth:`~edge_agent.coordination.messages.TaskSpec.slots`).
        """
        if not 0 <= agent < self.n_agents:
            raise InputError(f"agent {agent} is out of range [0, {self.n_agents})")
        if self.slot[agent] >= 0:
            self.release(agent)
        if not self._free:
            return False
        s = self._free.pop()
        self.slot[agent] = s
        self.delta[s] = utility - self.cm.utility if self.use_utility else utility
        if self.backward is not None:
            cached = self._backward_cache.get(key) if key is not None else None
            if cached is None:
                cached = policy_backward(self.cm, self.delta[s]).astype(self.backward.dtype)
                if key is not None:
                    self._backward_cache[key] = cached
                    while len(self._backward_cache) > self.max_held:
                        self._backward_cache.popitem(last=False)
            elif key is not None:
                self._backward_cache.move_to_end(key)
            self.backward[s] = cached
        goal = spec.slots()[role]
        self.goal_factor[s] = goal.goal_factor
        self.goal_state[s] = goal.goal_state
        self.deadline[s] = spec.deadline
        self.task_of_slot[s] = (spec.task, epoch)
        self.role_of_slot[s] = role
        self.rows = np.flatnonzero(self.slot >= 0)
        return True

    def role(self, agent: int) -> int:
        """The role ``agent`` fills in its team task (0: a one-agent task, or none)."""
        s = int(self.slot[agent])
        return int(self.role_of_slot[s]) if s >= 0 else 0

    def release(self, agent: int) -> tuple[str, int] | None:
        """Take the task away from ``agent``; returns what it held."""
        s = int(self.slot[agent])
        if s < 0:
            return None
        held = self.task_of_slot[s]
        self.task_of_slot[s] = None
        self.slot[agent] = -1
        self._free.append(s)
        self.rows = np.flatnonzero(self.slot >= 0)
        return held

    def adjust(
        self,
        qs: Sequence[np.ndarray],
        G: np.ndarray,
        q_pi: np.ndarray,
        *,
        gamma: float,
        lnE: np.ndarray,
    ) -> None:
        """In place, holders only: ``G += Delta G`` and ``q_pi = softmax(gamma * G + ln E)``.

        ``qs``, ``G`` and ``q_pi`` are the group's arrays after ``infer_policies``.
        """
        rows = self.rows
        if rows.size == 0:
            return
        dG = self.policy_delta([q[rows] for q in qs], rows)
        G_rows = G[rows] + dG
        G[rows] = G_rows
        x = gamma * G_rows + lnE
        q_pi[rows] = kernels.softmax_rows(x)

    def policy_delta(self, qs_rows: Sequence[np.ndarray], rows: IntArray) -> np.ndarray:
        """``Delta G (len(rows), P)`` of holders ``rows`` whose beliefs are ``qs_rows[f]``.

        The piece a fused kernel needs: add it to those agents' ``G`` after evaluating the
        policies and before the policy posterior (see ``docs/coordination.md``).
        """
        slots = self.slot[rows]
        if self.backward is not None:
            out: np.ndarray = np.einsum("ns,nps->np", qs_rows[0], self.backward[slots])
            return out
        return policy_utility_rows(self.cm, qs_rows, self.delta[slots])

    def reached(self, qs: Sequence[np.ndarray], threshold: float) -> IntArray:
        """Holders whose belief in their goal state is at least ``threshold``."""
        rows = self.rows
        if rows.size == 0:
            return rows
        slots = self.slot[rows]
        p = np.zeros(rows.size)
        for f in distinct(self.goal_factor[slots]):
            sel = self.goal_factor[slots] == f
            p[sel] = qs[int(f)][rows[sel], self.goal_state[slots[sel]]]
        return rows[p >= threshold]

    def expired(self, wall_now: float) -> IntArray:
        """Holders whose task has a deadline that passed."""
        rows = self.rows
        if rows.size == 0:
            return rows
        d = self.deadline[self.slot[rows]]
        return rows[(d > 0) & (d <= wall_now)]
