"""A learning group's compiled tables replaced: what else of the group follows them.

:class:`TablesInstaller` steps the group with the compiled tables its learning made
(:meth:`~edge_agent.core.learning.GroupLearning.take_tables`: a refresh, a freeze, a forget, a
snapshot's counts): the stepper takes them, the kernel scratch is made anew if they need another
planner (with a planning policy's gather buffers and the agents' reservation), and the workers,
which hold the old tables copy-on-write, are forked again. The group and its tick paths call it;
it holds the parts it changes and no reference to the group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.core.agent_state import AgentState
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.group_memory import GroupMemory
    from edge_agent.core.group_workers import GroupWorkers
    from edge_agent.core.learning import NewTables
    from edge_agent.core.planning_pass import PolicyTicks

__all__ = ["TablesInstaller"]


class TablesInstaller:
    """Installs new compiled tables into ``stepper`` for the group's ``state``, its ``plans``
    (None every tick), ``memory`` (the agents' reservation) and ``cores`` (its workers)."""

    def __init__(
        self,
        stepper: BlockStepper,
        state: AgentState,
        plans: PolicyTicks | None,
        memory: GroupMemory,
        cores: GroupWorkers,
    ) -> None:
        self._stepper, self._state, self._plans = stepper, state, plans
        self._memory, self._cores = memory, cores

    def install(self, new: NewTables | None) -> None:
        """Step with ``new`` from now on (None: nothing changed)."""
        if new is None:
            return
        stepper = self._stepper
        if stepper.install(new.cm, same_layout=new.same_layout):
            block = stepper.sizes.block
            stepper.resize_scratch(self._state)
            if self._plans is not None and stepper.sizes.block != block:
                self._plans.resize_gather(self._memory.new)
            self._memory.resize_agents(self._state.n_agents, self._memory.history_capacity)
        self._cores.refork()
