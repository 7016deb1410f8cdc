"""What an Active Inference group holds and reserves: its bytes per agent by part, its kernel
scratch, the budget's reservations, and where its per-agent arrays are allocated.

:class:`GroupMemory` is the group's memory part (``AifAgentGroup.memory``). It reads the sizes
of the group's other parts (the state, the stepper's blocks, the history's fields, a planning
policy's arrays, what the learning holds) and owns the reservations made for them in the
:class:`~edge_agent.core.budget.MemoryBudget` (the model's, the agents', the learning's), reserved
before anything is allocated. It also allocates what workers write (:meth:`GroupMemory.new`): in
shared memory when the group is, or will be, stepped by workers, so that starting them copies
nothing. It holds no reference to the group: a group dropped is freed by reference counting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_agent.core.agent_state import RowTiles
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.group_inputs import GroupInputs
from edge_agent.core.health import AifHealth
from edge_agent.core.history_recorder import Fields, history_bytes_per_agent
from edge_agent.core.priors import prior_follows
from edge_agent.errors import BudgetError

if TYPE_CHECKING:
    from edge_agent.core.agent_state import AgentState
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.group_blocks import HistoryBeliefs
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.learning import GroupLearning
    from edge_agent.core.planning_pass import PolicyTicks

__all__ = ["GroupMemory"]


class GroupMemory:
    """The memory of group ``name``'s parts (``state``, ``stepper``, ``recorder`` with the
    history's ``fields`` and ``beliefs``, ``plans``, ``learning``, each None where the group has
    none; ``every_tick``: its agents plan every tick), reserved in ``budget`` (None: nothing is
    reserved); ``history_capacity``: the history's ticks; ``shared``: the per-agent arrays
    workers write are allocated in shared memory from the start."""

    def __init__(
        self,
        name: str,
        budget: MemoryBudget | None,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        plans: PolicyTicks | None,
        learning: GroupLearning | None,
        fields: Fields,
        beliefs: HistoryBeliefs,
        history_capacity: int,
        every_tick: bool,
        shared: bool,
        health: bool = False,
    ) -> None:
        self.name = name
        self._budget = budget
        self._state, self._stepper = state, stepper
        self._fields, self._beliefs = fields, beliefs
        #: Steps of history kept per agent (0: none).
        self.history_capacity = int(history_capacity)
        self._every_tick = every_tick
        #: Whether the per-agent state that workers write is allocated in shared memory (a
        #: group started with workers in mind, or once they started; the arrays move nothing
        #: when they start, so the state never has two copies at once).
        self.shared = shared
        #: Whether the group measures its health (a small group's held measured ticks'
        #: buffers are reserved with its agents: :meth:`health_nbytes`).
        self.health = health
        self.recorder, self.plans, self.learning = recorder, plans, learning
        #: Bytes of what the group builds for itself alone, whatever its agents: the compiled
        #: tick's tables and scratch of a group the compiled tick can take (its own
        #: ``NativeTick``, planned from the model whether the group builds it, keeps it after
        #: measuring or steps numpy; 0: numpy steps it whatever its size), reserved with the
        #: agents (:meth:`bytes_for`), not in the model's shared reservation: groups of one
        #: model of any sizes and paths reserve the same bytes under its shared key.
        self.compiled_nbytes = 0
        self._reservations: list[Reservation] = []
        self._agents: Reservation | None = None

    # -- allocation --------------------------------------------------------------------------------
    def new(self, shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """A zero-filled array of per-agent state that workers write: in shared memory when the
        group is (or will be) stepped by workers, so that starting them copies nothing."""
        if not self.shared:
            return np.zeros(shape, dtype=dtype)
        from edge_agent.core.workers import shared_empty  # noqa: PLC0415 - multi-core groups only

        return shared_empty(shape, dtype)

    def share(self) -> None:
        """Move what the workers write (beliefs, priors, posteriors, actions, the committed
        plans, the staged history row) into shared memory (what is there already, allocated
        ``shared``, stays where it is); a resize allocates there from now on."""
        self.shared = True
        self._state.share()
        if self.plans is not None:
            self.plans.share()
        if self.recorder is not None:
            self.recorder.share()

    # -- sizes -------------------------------------------------------------------------------------
    def keeps_prior_at(self, n_agents: int) -> bool:
        """Whether a group of ``n_agents`` keeps its prior between ticks: asked to, kept it
        already (it keeps it: a kept prior may differ from a made one by rounding), or some of
        its blocks' priors do not follow from what is kept
        (:func:`~edge_agent.core.priors.prior_follows`)."""
        state, stepper = self._state, self._stepper
        return (
            state.keep_prior_asked
            or state.prior_was_kept
            or not prior_follows(
                stepper.cm,
                every_tick=self._every_tick,
                block_size=stepper.sizes.block,
                dense_block_size=stepper.sizes.dense,
                n_agents=max(1, n_agents),
            )
        )

    def nbytes_by_part(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> dict[str, int]:
        """One agent's bytes by part (learning's aside, :meth:`per_agent_nbytes`), of a group of
        ``n_agents`` with ``history_capacity`` (this group's by default): ``beliefs`` (``qs``,
        and ``prior`` or the flag that says it is ``D``), ``policy`` (``q_pi`` and ``G``),
        ``actions`` (and the flag), ``history`` (the ring's rows), ``history_staging`` (the row
        staged for the next append), ``planning`` (a planning policy's arrays)."""
        cap = self.history_capacity if history_capacity is None else history_capacity
        n = self._state.n_agents if n_agents is None else n_agents
        parts = self._state.bytes_per_agent(self.keeps_prior_at(n))
        ring, staging = history_bytes_per_agent(
            self._fields, cap, self._beliefs, self._state.dtype
        )
        parts["history"] = ring
        parts["history_staging"] = staging
        parts["planning"] = 0 if self.plans is None else self.plans.bytes_per_agent(n)
        return parts

    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """Exact bytes of one agent's state, history included (of a group of ``n_agents``:
        whether it keeps its prior depends on its blocks; this group's by default), and of what
        it learns."""
        total = sum(self.nbytes_by_part(history_capacity, n_agents).values())
        if self.learning is not None:
            n = self._state.n_agents if n_agents is None else n_agents
            total += self.learning.bytes_per_agent(n)
        return total

    def scratch_nbytes(self, n_agents: int) -> int:
        """Kernel scratch bytes for a group of ``n_agents`` (preallocated once, see Workspace;
        a group that keeps no prior makes each block's there; a planning policy's gather
        buffers)."""
        sizes = self._stepper.sizes
        prior = 0 if self.keeps_prior_at(n_agents) else sum(self._stepper.cm.num_states)
        gather = 0 if self.plans is None else self.plans.gather_bytes_per_agent()
        return (
            min(sizes.block, n_agents) * (gather + prior * self._state.dtype.itemsize)
            + sizes.scratch_nbytes(n_agents)
        )

    def health_nbytes(self, n_agents: int) -> int:
        """Bytes of the buffers a group of ``n_agents`` measures its health sample in: its
        held measured ticks, a tick its pass measured, the tables each agent learns for itself
        kept before a tick (:meth:`AifHealth.nbytes_for
        <edge_agent.core.health.AifHealth.nbytes_for>`, a group that does not learn keeping no
        predictions; 0 for a group without health)."""
        if not self.health:
            return 0
        cm = self._stepper.cm
        learning = self.learning
        return AifHealth.nbytes_for(n_agents, cm.num_states, cm.num_obs, cm.num_policies,
                                    fixed_tables=learning is None,
                                    own_tables=() if learning is None else learning.own_tables,
                                    preference=bool(cm.lnC))

    def boundary_nbytes(self, n_agents: int) -> int:
        """The most bytes the group's boundary holds for ``n_agents``: the check of a tick's
        outcomes and their int64 array (:meth:`GroupInputs.check_nbytes
        <edge_agent.core.group_inputs.GroupInputs.check_nbytes>`) and a reset's tiles of each
        factor's ``D`` (:meth:`RowTiles.nbytes_for
        <edge_agent.core.agent_state.RowTiles.nbytes_for>`)."""
        cm = self._stepper.cm
        return (GroupInputs.check_nbytes(n_agents, len(cm.num_obs))
                + RowTiles.nbytes_for([s * self._state.dtype.itemsize for s in cm.num_states]))

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch,
        a small group's held health samples, the boundary's buffers (:meth:`boundary_nbytes`)
        and the group's own compiled tick
        (:attr:`compiled_nbytes`, the same at every size)."""
        times = 8 * history_capacity
        scratch = (self.scratch_nbytes(n_agents) + self.health_nbytes(n_agents)
                   + self.boundary_nbytes(n_agents))
        return (n_agents * self.per_agent_nbytes(history_capacity, n_agents) + times + scratch
                + self.compiled_nbytes)

    @property
    def nbytes(self) -> int:
        """Bytes of per-agent arrays currently allocated (not the shared model, not scratch)."""
        total = self._state.nbytes
        if self.recorder is not None:
            total += self.recorder.nbytes
        if self.learning is not None:
            total += self.learning.allocated_nbytes
        return int(total)

    # -- the budget --------------------------------------------------------------------------------
    def reserve_model(self, key: str, nbytes: int) -> None:
        """The model's tables, shared by every group that runs it (reserved once per model)."""
        if self._budget is not None:
            self._reservations.append(
                self._budget.reserve(f"model:{key}", "model", nbytes, shared_key=key)
            )

    def reserve_agents(self, n_agents: int) -> None:
        """The agents' state, history and scratch (:meth:`bytes_for`); BudgetError gives back
        what was reserved before (the group is never built)."""
        if self._budget is None:
            return
        try:
            self._agents = self._budget.reserve(
                self.name,
                "agents",
                self.bytes_for(n_agents, self.history_capacity),
                hint=f"reduce group {self.name!r} count or history_capacity",
            )
        except BudgetError:
            self.release()
            raise
        self._reservations.append(self._agents)

    def reserve_learning(self) -> None:
        """What the learning holds besides the agents (:attr:`GroupLearning.nbytes
        <edge_agent.core.learning.GroupLearning.nbytes>`)."""
        if self.learning is not None and self._budget is not None:
            self._reservations.append(
                self._budget.reserve(
                    f"{self.name}:learning",
                    "learning",
                    self.learning.nbytes,
                    hint=f"learn fewer tables in group {self.name!r}",
                )
            )

    def resize_agents(self, n_agents: int, history_capacity: int) -> None:
        """The agents' reservation for ``n_agents`` with ``history_capacity`` (BudgetError:
        nothing changed)."""
        if self._agents is not None:
            self._agents.resize(self.bytes_for(n_agents, history_capacity))

    def release(self) -> None:
        """Give every reservation back to the budget."""
        for r in self._reservations:
            r.release()
        self._reservations.clear()
