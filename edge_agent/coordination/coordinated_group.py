"""A coordinated group as the engine sees it (:class:`CoordinatedGroup`: what it shares and
which tasks it can take) and what the engine keeps of it between ticks (:class:`GroupState`:
its belief sharer, its holders' task preferences, its task utilities).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.beliefs import BeliefSharer
from edge_agent.coordination.messages import Slots, TaskSpec
from edge_agent.coordination.preferences import TaskPreferences
from edge_agent.coordination.settings import SharingSettings
from edge_agent.coordination.utility import (
    DISTANCE_TABLE_MAX,
    goal_distances,
    task_utilities,
    task_utility,
    transition_support,
)
from edge_agent.core.agents import AifAgentGroup
from edge_agent.fleet.topics import check_name

__all__ = ["CoordinatedGroup", "GroupState", "same_agents"]

UTILITY_CACHE: Final = 1024
"""Task utility vectors kept per group (LRU); one is ``S_joint`` float64."""
NO_ROWS: Final[NDArray[np.int64]] = np.empty(0, dtype=np.int64)


@dataclass
class CoordinatedGroup:
    """A group as the engine sees it: what it shares and which tasks it can take."""

    group: AifAgentGroup
    sharing: SharingSettings | None = None
    capabilities: tuple[str, ...] = ()
    channels: NDArray[np.integer] | None = None


class GroupState:
    """What the engine keeps of one coordinated group: its belief sharer, its holders' task
    preferences, the task utilities it computed (LRU) and the agents told they are done."""

    def __init__(self, name: str, spec: CoordinatedGroup, node_id: str, max_held: int) -> None:
        self.name = name
        self.spec = spec
        self.group = spec.group
        self.key = spec.group.key
        self.stepped = False
        """Whether the group stepped since the last ``before_step`` (only then is there new
        evidence of its own to accumulate)."""
        self.capabilities = frozenset(spec.capabilities)
        for cap in self.capabilities:
            check_name(cap, "capability")
        g = spec.group
        self.sharer: BeliefSharer | None = None
        if spec.sharing is not None:
            self.sharer = BeliefSharer(
                name,
                g.cm.num_states,
                g.n_agents,
                spec.sharing,
                channels=spec.channels,
                node_id=node_id,
                dtype=g.dtype.type,
            )
        self.prefs = TaskPreferences(
            g.cm, g.n_agents, use_utility=g.settings.use_utility, max_held=max_held
        )
        self.utilities: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.distances: dict[int, NDArray[np.int16]] = {}
        """Per goal factor, its :func:`goal_distances` (for the utilities of new goals)."""
        self.completed: NDArray[np.int64] = NO_ROWS

    def accepts(self, spec: TaskSpec) -> bool:
        """Whether the group can take the task's first role (a one-agent task: the task)."""
        return self.takes(spec.slots()[0])

    def takes(self, role: Slots) -> bool:
        """Whether the group has the role's capability and its model the role's goal."""
        cm = self.group.cm
        return (
            role.capability in self.capabilities
            and role.goal_factor < cm.num_factors
            and role.goal_state < cm.num_states[role.goal_factor]
        )

    def _distances(self, factor: int) -> NDArray[np.int16] | None:
        """The goal distances of ``factor`` (kept once computed), or None for a factor that
        does not exist or is larger than :data:`DISTANCE_TABLE_MAX` (searched per goal)."""
        cm = self.group.cm
        if not 0 <= factor < cm.num_factors or cm.num_states[factor] > DISTANCE_TABLE_MAX:
            return None
        table = self.distances.get(factor)
        if table is None:
            reach = transition_support(cm.transitions[factor], cm.num_states[factor])
            table = self.distances[factor] = goal_distances(reach)
        return table

    def prepare_utilities(self, goals: list[Slots], scale: float) -> None:
        """Compute the utilities of ``goals`` not cached yet, those of a factor with a distance
        table in one batch per factor (:func:`task_utilities`), as :meth:`utility` will ask
        for them."""
        new: dict[int, list[int]] = {}
        for goal in goals:
            key = (goal.goal_factor, goal.goal_state)
            if key not in self.utilities and goal.goal_state not in new.get(key[0], ()):
                new.setdefault(goal.goal_factor, []).append(goal.goal_state)
        for factor, states in new.items():
            table = self._distances(factor) if len(states) > 1 else None
            if table is None or not all(0 <= s < table.shape[0] for s in states):
                continue  # one goal, or no table: utility() computes each alone
            U = task_utilities(self.group.cm, factor, states, scale=scale, distances=table)
            rows = np.ascontiguousarray(U.T)  # a goal's utility contiguous, as utility() gives
            for j, state in enumerate(states):
                self.utilities[(factor, state)] = rows[j]
        while len(self.utilities) > UTILITY_CACHE:
            self.utilities.popitem(last=False)

    def utility(self, spec: TaskSpec, scale: float, role: int = 0) -> np.ndarray:
        """The utility per joint state of the task's ``role`` goal (cached by goal)."""
        goal = spec.slots()[role]
        key = (goal.goal_factor, goal.goal_state)
        u = self.utilities.get(key)
        if u is None:
            u = task_utility(
                self.group.cm,
                goal.goal_factor,
                goal.goal_state,
                scale=scale,
                distances=self._distances(goal.goal_factor),
            )
            self.utilities[key] = u
            while len(self.utilities) > UTILITY_CACHE:
                self.utilities.popitem(last=False)
        else:
            self.utilities.move_to_end(key)
        return u


def same_agents(gs: GroupState, b: CoordinatedGroup) -> bool:
    """Whether ``b`` describes the agents ``gs`` was built for, doing the same coordination
    (a group resized in place is the same object with another size)."""
    a = gs.spec
    if gs.key != b.group.key or gs.prefs.n_agents != b.group.n_agents:
        return False
    if a.sharing != b.sharing or tuple(a.capabilities) != tuple(b.capabilities):
        return False
    if a.channels is None or b.channels is None:
        return a.channels is None and b.channels is None
    return bool(np.array_equal(a.channels, b.channels))
