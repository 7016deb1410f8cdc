"""Agent groups: every agent that shares one model, stepped as one batch.

An :class:`AifAgentGroup` keeps the group's verbs (:meth:`~AifAgentGroup.step`,
:meth:`~AifAgentGroup.reset`, :meth:`~AifAgentGroup.resize`, :meth:`~AifAgentGroup.state_dict`,
...) and holds its parts, each with its own state:

* ``state``, an :class:`~edge_agent.core.agent_state.AgentState`: every agent's beliefs, priors,
  policy posteriors and committed actions in preallocated ``(n_agents, ...)`` arrays;
* ``stepper``, a :class:`~edge_agent.core.block_stepper.BlockStepper`: the compiled model
  tables, the kernel scratch and one block's maths, whose functions take the state and a block
  (views of the state for at most ``block_size`` agents, so that temporary arrays stay bounded
  however many agents there are) and call :mod:`edge_agent.aif.kernels`;
* ``inputs`` (:class:`~edge_agent.core.group_inputs.GroupInputs`): the checks of what a tick
  takes;
* the planning strategy, chosen once: every agent plans every tick (each block is stepped whole),
  or a planning policy's :class:`~edge_agent.core.planning_pass.PolicyTicks` (``plans``), which
  owns the committed plans;
* ``recorder``, the history (:class:`~edge_agent.core.history_recorder.HistoryRecorder`, with
  ``history_capacity``);
* the workers (``cores``, :class:`~edge_agent.core.group_workers.GroupWorkers`,
  :meth:`start_workers`);
* ``memory`` (:class:`~edge_agent.core.group_memory.GroupMemory`): the bytes per agent by part,
  the scratch, the budget's reservations;
* ``learning`` (:class:`~edge_agent.core.learning.GroupLearning`, with ``learning=``): what the
  agents learn and the verbs on it (freeze, resume, forget, ...); its scope (shared counts, or
  each agent's own) says what the counts refresh into;
* ``health`` (:class:`~edge_agent.core.health.AifHealth`, unless ``health=False``): how well
  the model predicts what the agents observe.

One tick (:meth:`AifAgentGroup.step`) runs the group's **tick path** (``path``,
:mod:`edge_agent.core.tick_paths`), chosen when the group is made and again only when what it
depends on changes (workers started or stopped, a resize, a learning verb, a snapshot restored):
the evidence is checked, the health part told the tick's prior, the path run (an every-tick
group's: per block ``stepper.step_block(state, rows, obs, soft)``, its history row staged, the
row appended), the health part told its posteriors.

``precision="int8"`` stores the model in the ``logu8-v1`` scheme (:mod:`edge_agent.aif.quant`) and
computes in float32 from tables decoded once per model; ``precision="float64"`` computes from the
float tables in float64 and gives pymdp's numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy
from edge_agent.aif.policies import construct_policies, validate_policies
from edge_agent.aif.quant import QuantizedModel, quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agent_state import AgentState, snapshot_taker
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.contract import GroupEvent, GroupIO, Shadows
from edge_agent.core.drift import DriftSettings
from edge_agent.core.group_blocks import (
    BLOCK_SCRATCH_BYTES,
    DEFAULT_BLOCK,
    DENSE_FALLBACK_BYTES,
    BlockRows,
    HistoryBeliefs,
    IntArray,
    Precision,
    model_key,
    shared_tables,
)
from edge_agent.core.group_inputs import GroupInputs
from edge_agent.core.group_memory import GroupMemory
from edge_agent.core.group_workers import GroupWorkers
from edge_agent.core.health import LEARNING_HEALTH, AifHealth, ExcessTap
from edge_agent.core.health_window import HealthSummary
from edge_agent.core.history import HistoryRing
from edge_agent.core.history_recorder import HistoryRecorder, history_fields
from edge_agent.core.installer import TablesInstaller
from edge_agent.core.native_pass import (
    choice_measured,
    compiled_nbytes,
    frozen_kernel,
    local_reason,
    sizing_reasons,
)
from edge_agent.core.path_choice import TickCosts, measure_costs, tick_path
from edge_agent.core.tick_paths import BlockTicks, CompiledTick, SharedStages, TickPath
from edge_agent.errors import InputError

if TYPE_CHECKING:
    from edge_agent.aif.kernels.native.binding import NativeTick
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.core.learning import AgentStepping, GroupLearning
    from edge_agent.core.planning_pass import PolicyTicks

#: What other modules import from here (the group's parts live in the modules above).
__all__ = [
    "BLOCK_SCRATCH_BYTES",
    "DEFAULT_BLOCK",
    "DENSE_FALLBACK_BYTES",
    "AifAgentGroup",
    "BlockRows",
    "HistoryBeliefs",
    "IntArray",
    "Precision",
    "model_key",
]

logger = logging.getLogger(__name__)


class AifAgentGroup:
    """``n_agents`` Active Inference agents sharing one generative model.

    Per-agent state (the ``state`` part), all ``(n_agents, ...)``: ``qs[f]`` posterior
    ``(N, S_f)``; ``prior[f]`` prior for the next observation; ``action`` last committed action
    ``(N, F)``; ``q_pi`` and ``G`` ``(N, P)``.

    ``keep_prior=False``: the prior is not kept between ticks where it follows from what is
    kept (``state.keeps_prior``): each block's is made again at the start of the next tick from
    the beliefs and the committed actions, as the tick that committed them made it (``D`` for
    an agent reset since), in the block's scratch: half the beliefs' bytes. ``prior`` is then
    empty; the group steps (or infers once, then acts) as before, with the same numbers.

    ``learning``: what the agents learn (:class:`~edge_agent.aif.learning.LearningSpec`, see
    :mod:`edge_agent.core.learning`); ``trial_ends_at_reset``: :meth:`reset` ends the trials of
    the agents that acted in theirs (``pD`` learns from them). A group that learns keeps its
    prior (learning reads and writes it).

    ``sizing_only``: the group is made to know what a group of its model and settings reserves
    (admission's plan probe, ``check-config``): one that does not learn has its compiled tick's
    bytes planned from the model (:func:`~edge_agent.core.native_pass.compiled_nbytes`) and
    steps with numpy, the compiled tick neither built, loaded nor measured.
    """

    def __init__(
        self,
        model: GenerativeModel | QuantizedModel,
        n_agents: int,
        *,
        settings: AifSettings | None = None,
        policies: np.ndarray | None = None,
        precision: Precision = "int8",
        seed: int | None = 0,
        history_capacity: int = 0,
        budget: MemoryBudget | None = None,
        name: str = "group",
        block_size: int = DEFAULT_BLOCK,
        history_beliefs: HistoryBeliefs = "full",
        planning: PlanningPolicy | None = None,
        clock: Callable[[], float] = time.perf_counter,
        shared_state: bool = False,
        keep_prior: bool = True,
        learning: LearningSpec | None = None,
        trial_ends_at_reset: bool = False,
        health: bool = True,
        drift: DriftSettings | None = None,
        sizing_only: bool = False,
    ) -> None:
        _check_arguments(name, n_agents, precision, history_beliefs)
        self.name = name
        self.settings = settings or AifSettings()
        self.precision: Precision = precision
        self.history_beliefs: HistoryBeliefs = history_beliefs
        #: When agents plan (:mod:`edge_agent.aif.planning`).
        self.planning = planning or EVERY_TICK
        if learning is not None:
            _check_learning(
                name, learning, planning=self.planning, precision=precision,
                history_capacity=history_capacity, keep_prior=keep_prior,
            )
        if policies is None:
            pol = construct_policies(
                model.num_controls, self.settings.policy_len, self.settings.control_fac_idx
            )
        else:
            pol = validate_policies(policies, model.num_controls)
        self._quantized, source, dtype = _stepped_model(model, precision)
        self.dtype = np.dtype(dtype)
        self.key = model_key(source, precision, pol)
        cm = shared_tables(self.key, source, pol, dtype)
        self._stepper = stepper = BlockStepper(
            cm, self.settings, self.dtype, block_size=block_size, seed=seed
        )
        self.learning: GroupLearning | None = None
        if learning is not None:
            from edge_agent.core.learning_scope import group_learning  # noqa: PLC0415 - it learns

            floats = model.dequantize() if isinstance(model, QuantizedModel) else model
            self.learning = group_learning(
                learning, floats, self._quantized, cm,
                n_agents=n_agents, name=name, dtype=self.dtype, settings=self.settings,
                trial_ends_at_reset=trial_ends_at_reset,
            )
        #: The stages of agents with their own tables (per-agent learning), else None; and the
        #: stages the verbs step (theirs, or the blocks').
        self._stepping: AgentStepping | None = (
            None if self.learning is None else self.learning.scope.stepping()
        )
        self._stages = self._stepping or SharedStages(stepper, self.learning)
        self.state = state = AgentState(
            cm.num_states, cm.num_policies, cm.num_factors, self.dtype, keep_prior=keep_prior
        )
        self.inputs = GroupInputs(cm.num_obs, cm.num_controls, self.dtype)
        fields = history_fields(cm.num_obs, cm.num_states, cm.num_controls, history_beliefs)
        self.recorder: HistoryRecorder | None = None
        if history_capacity > 0:
            self.recorder = HistoryRecorder(fields, history_capacity, history_beliefs, self.dtype)
        self.plans: PolicyTicks | None = None
        if not self.planning.every_tick:
            from edge_agent.core.planning_pass import PolicyTicks  # noqa: PLC0415 - a policy

            self.plans = PolicyTicks(
                self.planning, clock, state=state, stepper=stepper,
                history=self.recorder, chooser=self.learning,
            )
        self.cores = GroupWorkers(name, budget)
        self.memory = GroupMemory(
            name, budget, state=state, stepper=stepper, recorder=self.recorder,
            plans=self.plans, learning=self.learning, fields=fields, beliefs=history_beliefs,
            history_capacity=history_capacity, every_tick=self.planning.every_tick,
            # one block: the caller steps it alone
            shared=shared_state and -(-n_agents // stepper.sizes.block) >= 2, health=health,
        )
        state.keeps_prior = self.memory.keeps_prior_at(n_agents)
        #: The compiled tick of a group that does not learn and plans every tick (None: numpy
        #: steps it, :attr:`_native_reason` says why; a group that learns: its learning's
        #: pass), and its cost and numpy's a tick, measured when the group was made (None: not
        #: measured: numpy steps it anyway, or ``EDGE_AGENT_NATIVE_TICK=1``).
        self._native_reason = ""
        self.stepping_cost: TickCosts | None = None
        self._native: NativeTick | None = self._choose_native(cm, n_agents, sizing_only)
        # Reserve before allocating: shared tables once per model (the same bytes whatever the
        # group's size or path), then per-agent state with what the group holds alone: the
        # compiled tick's tables and scratch of every group the compiled tick can take (each its
        # own NativeTick when it builds one), reserved whether it builds it and its measurement
        # keeps it or not: what the budget admits never depends on a clock's choice.
        self.shared_nbytes = cm.nbytes + (0 if self._quantized is None else self._quantized.nbytes)
        self.memory.reserve_model(self.key, self.shared_nbytes)
        self.memory.reserve_agents(n_agents)
        self._installer = TablesInstaller(stepper, state, self.plans, self.memory, self.cores)
        #: Every block stepped whole, in whichever process takes it (every-tick groups).
        self._blocks = BlockTicks(state, stepper, self.recorder)
        #: The tick path (:mod:`edge_agent.core.tick_paths`), and the learning's
        #: :attr:`~edge_agent.core.learning.GroupLearning.changes` it was chosen after.
        self.path: TickPath
        self._learning_seen = 0
        self.ticks = 0
        self._allocate(n_agents)
        #: The group's health measures and drift alarm (docs/health.md), a part it holds (None:
        #: ``health=False``, the benchmark's group without it).
        self.health: AifHealth | None = None if not health else AifHealth(
            n_agents,
            group=name,
            num_states=cm.num_states,
            num_obs=cm.num_obs,
            lnC=cm.lnC,
            drift=drift,
            extra_measures=() if self.learning is None else LEARNING_HEALTH,
            num_policies=cm.num_policies,
            fixed_tables=self.learning is None,  # (a learning group's change between ticks)
            own_tables=() if self.learning is None else self.learning.own_tables,
        )
        self.memory.reserve_learning()

    def _choose_native(
        self, cm: kernels.CompiledModel, n_agents: int, sizing_only: bool
    ) -> NativeTick | None:
        """The compiled tick that steps the group, or None: numpy does, and why
        (:attr:`_native_reason`): numpy for a group that learns (its learning's pass) or plans
        by a policy, or whose model the compiled tick does not take
        (:func:`~edge_agent.core.native_pass.frozen_kernel`), or a local planner's model in a
        group above a few dozen agents (:func:`~edge_agent.core.native_pass.local_reason`), or
        a group made only to be sized (``sizing_only``); else the path measured cheaper on the
        group's model and agents (:func:`~edge_agent.core.path_choice.measure_costs`), in the
        status and the log. Where the compiled tick can take the model, the group reserves its
        bytes whatever it steps with (:func:`~edge_agent.core.native_pass.compiled_nbytes`,
        planned from the model: a group that steps numpy builds and loads nothing of it)."""
        if self.learning is not None or self.plans is not None:
            self._native_reason = ("its learning steps it" if self.learning is not None
                                   else "a planning policy")
            return None
        why = sizing_reasons(cm, self.settings)
        if why is not None:
            self._native_reason = why
            return None
        self.memory.compiled_nbytes = compiled_nbytes(cm, self.settings)
        numpy_anyway = ("made to be sized only (admission's plan)" if sizing_only
                        else local_reason(cm, n_agents))
        if numpy_anyway is not None:
            self._native_reason = numpy_anyway
            return None
        found = frozen_kernel(cm, self.settings)
        if isinstance(found, str):
            self._native_reason = found
            return None
        if not choice_measured():
            return found
        self.stepping_cost = costs = measure_costs(
            found, cm, self.settings, self.dtype, n_agents=n_agents,
            keeps_prior=self.state.keeps_prior, block_size=self._stepper.sizes.block,
        )
        # DEBUG: the status says it (``stepping``, ``stepping_cost``); a group built to be
        # sized (a config refused for its budget) must not print before the refusal.
        logger.debug("group %r steps %s: %s", self.name,
                    "in the compiled tick" if costs.native_faster else "on numpy",
                    costs.describe())
        if costs.native_faster:
            return found
        self._native_reason = f"measured faster ({costs.describe()})"
        return None

    # -- what the parts hold -----------------------------------------------------------------------
    @property
    def stepper(self) -> BlockStepper:
        """The blocks' stepper, with the compiled tables the agents step with (what a learning
        verb made, or a shared group's compiled pass left behind, brought in first: whatever
        reads them reads what the agents infer with)."""
        learning = self.learning
        if learning is not None and learning.owes_tables:
            self._installer.install(learning.take_tables())
        return self._stepper

    @property
    def cm(self) -> kernels.CompiledModel:
        """The compiled tables the agents step with (the stepper's)."""
        return self.stepper.cm

    @property
    def quantized(self) -> QuantizedModel | None:
        """The int8 model the agents step with (None: float64); a learning group's, as its
        counts refreshed it."""
        if self.learning is not None:
            return self.learning.scope.quantized
        return self._quantized

    @property
    def n_agents(self) -> int:
        return self.state.n_agents

    @property
    def qs(self) -> list[np.ndarray]:
        """Posteriors by factor, ``(N, S_f)`` (the group's arrays, that may be written: a
        per-agent compiled pass makes its next tick's prior again, :meth:`AgentState.wrote
        <edge_agent.core.agent_state.AgentState.wrote>`)."""
        self.state.wrote()
        return self.state.qs

    @property
    def prior(self) -> list[np.ndarray]:
        """Priors for the next observation by factor, ``(N, S_f)`` (empty: not kept), the
        group's arrays. After a tick every group that keeps its prior holds the next tick's
        prior here, made from the actions chosen: a per-agent group's compiled pass too (it
        takes it as its next tick's prior while nothing else wrote the state: reading this,
        which may be written, makes it make the prior again from the beliefs, actions and
        each agent's own tables, as its numpy stages always do: they make the tick's prior at
        inference and leave it here)."""
        self.state.wrote()
        return self.state.prior

    @property
    def q_pi(self) -> np.ndarray:
        """Policy posteriors ``(N, P)``."""
        return self.state.q_pi

    @property
    def G(self) -> np.ndarray:  # noqa: N802 - the textbook's name: expected free energy
        """Expected free energy of each policy ``(N, P)``."""
        return self.state.G

    @property
    def action(self) -> IntArray:
        """The last committed actions ``(N, F)`` (the group's array, that may be written: see
        :attr:`qs`)."""
        self.state.wrote()
        return self.state.action

    @property
    def history(self) -> HistoryRing | None:
        """Every agent's outcomes, actions and beliefs per tick (None: no history)."""
        return None if self.recorder is None else self.recorder.ring

    @property
    def history_capacity(self) -> int:
        """Steps of history kept per agent (0: none)."""
        return self.memory.history_capacity

    @property
    def block_size(self) -> int:
        """Agents per block at most."""
        return self.stepper.sizes.block

    def selection_rng(self) -> np.random.Generator | None:
        """What action selection draws from: the stepper's generator, or None when it is
        deterministic."""
        return self.stepper.selection_rng()

    # -- memory (the memory part's; the group contract's) ------------------------------------------
    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """:meth:`GroupMemory.per_agent_nbytes <edge_agent.core.group_memory.GroupMemory.
        per_agent_nbytes>`: one agent's bytes, history and learning included."""
        return self.memory.per_agent_nbytes(history_capacity, n_agents)

    def scratch_nbytes(self, n_agents: int) -> int:
        """Kernel scratch bytes for a group of ``n_agents`` (:meth:`GroupMemory.scratch_nbytes
        <edge_agent.core.group_memory.GroupMemory.scratch_nbytes>`)."""
        return self.memory.scratch_nbytes(n_agents)

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch,
        the group's own compiled tick (:meth:`GroupMemory.bytes_for
        <edge_agent.core.group_memory.GroupMemory.bytes_for>`)."""
        return self.memory.bytes_for(n_agents, history_capacity)

    @property
    def nbytes(self) -> int:
        """Bytes of per-agent arrays currently allocated (not the shared model, not scratch)."""
        return self.memory.nbytes

    # -- allocation --------------------------------------------------------------------------------
    def _allocate(self, n_agents: int) -> None:
        """Arrays for ``n_agents`` (the first agents carried over, new ones from ``D``), the
        workers started again as they were, and the tick path chosen for what the group is."""
        workers = self.cores.wanted
        self.cores.stop()  # they hold views of the arrays being replaced
        state, stepper, memory, plans = self.state, self.stepper, self.memory, self.plans
        keep = min(state.n_agents, n_agents)
        changed = state.allocate(
            n_agents,
            keeps_prior=memory.keeps_prior_at(n_agents),
            block_size=stepper.sizes.block,
            new=memory.new,
            make_priors=partial(stepper.priors_of_first, state),
        )
        if not stepper.scratch_fits(state, changed):
            stepper.new_scratch(state)
        if plans is not None:
            plans.allocate(n_agents, keep, memory.new)
        if n_agents > keep:
            self._reset_agents(np.arange(n_agents) >= keep)
        if self.recorder is not None:
            self.recorder.allocate(n_agents, memory.new)
        if self.learning is not None:
            self.learning.allocate(n_agents, state.action, state.has_action)
        if workers > 1:
            self.start_workers(workers)
        else:
            self._choose_path()

    def _choose_path(self) -> None:
        """The tick path for what the group is now, the tables its learning made taken first."""
        learning = self.learning
        self.state.wrote()  # the tables may be others: a kept prior is made again
        if learning is not None:
            self._learning_seen = learning.changes
            self._installer.install(learning.take_tables())
        self.path = tick_path(
            state=self.state, stepper=self._stepper, recorder=self.recorder, blocks=self._blocks,
            plans=self.plans, learning=learning, stages=self._stages, installer=self._installer,
            workers=self.cores.running, seed=self.cores.seed, kernel=self._native,
        )

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group; new agents start from ``D``. Reserves before allocating."""
        if self._stepping is not None:
            raise InputError(
                f"group {self.name!r}: a group with per-agent counts keeps its size "
                f"({self.n_agents})"
            )
        if n_agents < 1:
            raise InputError(f"group {self.name!r}: n_agents must be >= 1, got {n_agents}")
        self.memory.resize_agents(n_agents, self.history_capacity)
        self._allocate(n_agents)

    def resize_history(self, capacity: int) -> None:
        """Shrink (or grow) every agent's history, keeping the newest rows."""
        if self.recorder is None or capacity < 1:
            raise InputError(f"group {self.name!r} has no history to resize to {capacity}")
        self.memory.resize_agents(self.n_agents, capacity)
        self.recorder.resize(capacity)
        self.memory.history_capacity = capacity

    def release(self) -> None:
        """Give the group's reservations back to the budget (the group is no longer used)."""
        self.stop_workers()
        self.memory.release()

    # -- one tick ----------------------------------------------------------------------------------
    def step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None = None,
        *,
        record: bool = True,
        starts: np.ndarray | None = None,
    ) -> IntArray:
        """One full tick for every agent: infer states, plan, act, record history.

        ``obs``: ``(N, M)`` integer outcomes, or soft evidence (a sequence of ``M`` float arrays
        ``(N, O_m)``, a distribution over each modality's outcomes: :meth:`GroupInputs.evidence
        <edge_agent.core.group_inputs.GroupInputs.evidence>`; the history then records each
        modality's most probable outcome; a group that learns takes integer outcomes only).
        ``record=False`` leaves the history untouched (warm-up). ``starts`` ``(N,)`` bool: the
        agents whose trial starts at this tick, the same as :meth:`reset` of them just before
        (one call; a compiled pass starts them inside the tick: ``reset``'s fills of their
        arrays, ~2 % of a per-agent T-maze tick at N = 1,000, not made). Returns the committed
        actions ``(N, F)`` (a view of the group's action array).
        """
        return self._tick(obs, now, record, None, starts)

    def step_planned(
        self, obs: np.ndarray | Sequence[np.ndarray], who_plans: np.ndarray
    ) -> IntArray:
        """:meth:`step` (without recording) in which exactly the agents ``who_plans (N,)``
        (bool) plan, whatever the planning policy and its budget would choose; the others that
        must plan are deferred. For replay of a run whose budget or deadline chose them; needs
        a planning policy."""
        if self.planning.every_tick:
            raise InputError(f"group {self.name!r}: step_planned needs a planning policy")
        who = np.asarray(who_plans)
        if who.shape != (self.n_agents,) or who.dtype != np.bool_:
            raise InputError(
                f"who_plans has shape {who.shape} and dtype {who.dtype}, "
                f"expected ({self.n_agents},) bool"
            )
        return self._tick(obs, None, False, who, None)

    def _tick(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None,
        record: bool,
        who_plans: NDArray[np.bool_] | None,
        starts: np.ndarray | None,
    ) -> IntArray:
        """One tick on the group's path: the evidence checked, the trials of ``starts`` started
        (:meth:`_start_trials`), the health part told the tick's outcomes and prior before the
        path runs and its posteriors after (the same around every path). A learning verb since
        the last tick (its tables, a freeze) is taken first."""
        state, learning = self.state, self.learning
        o, soft = self.inputs.evidence(obs, state.n_agents)
        if learning is not None and o is None:
            raise InputError(
                f"group {self.name!r} learns from integer outcomes, not soft evidence"
            )
        if starts is not None:
            starts = self._start_trials(starts)
        if learning is not None and learning.changes != self._learning_seen:
            self._choose_path()
        if starts is not None and (o is None or not self.path.starts_in_tick):
            self._reset_agents(_selected(starts, state.n_agents))
            starts = None
        if not state.keeps_prior:
            state.check_behind(self.name)
        path, health = self.path, self.health
        # (a tick health does not measure is only counted: told nothing more, three in four)
        told = health is not None and (o is None or not health.unmeasured(o.shape[0]))
        if told and o is not None:
            assert health is not None
            # (a tick that changes A: what depends on it worked out now, under the tables the
            # agents infer with)
            learns_a = learning is not None and learning.learns_likelihood
            health.before(o, path.tick_prior(), path.in_tick,
                          likelihood=path.likelihood if learns_a else None)
        path.run(o, soft, now, record and self.recorder is not None, who_plans=who_plans,
                 ticks=self.ticks, starts=starts)
        if told:
            assert health is not None
            health.after(state.qs, state.q_pi, path.likelihood, state.prior)
        self.ticks += 1
        return state.action

    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        """One tick's step (``outcomes`` unused: ``obs`` are the world's outcomes; ``starts``:
        :meth:`step`'s; the group contract's, :class:`~edge_agent.core.contract.AgentGroup`)."""
        del outcomes
        return self.step(obs, now, starts=starts)

    # -- a deployment's shadow (docs/health.md "Shadow evaluation") --------------------------------
    def tap_excess(self, tap: ExcessTap | None) -> None:
        """Tell ``tap`` each measured tick's excess surprise (:class:`~edge_agent.core.contract.
        Shadows`); InputError for a group that measures no health."""
        if self.health is None:
            raise InputError(f"group {self.name!r} measures no health (health=False)")
        self.health.tap = tap

    def shadow(self, live: Shadows, tap: ExcessTap) -> bool:
        """Run beside ``live`` (:class:`~edge_agent.core.contract.Shadows`): its beliefs when
        it runs the same model with as many agents, the same agents measured on the same ticks,
        ``tap`` told this group's measured ticks."""
        if not isinstance(live, AifAgentGroup) or live.health is None or self.health is None:
            raise InputError(f"group {self.name!r}: a shadow needs two groups that measure health")
        took = live.key == self.key and live.n_agents == self.n_agents
        if took:
            state = {
                k: v
                for k, v in live.state_dict().items()
                if not k.startswith(("history.", "times."))
            }
            try:
                self.load_state_dict(state)
            except InputError:
                took = False
        if took:
            self.health.aligned()
        self.health.align(live.health)
        self.health.tap = tap
        return took

    # -- health (docs/health.md) -------------------------------------------------------------------
    def health_summary(self) -> HealthSummary | None:
        """The health measures since the last call (one reporting window, docs/health.md), with
        learning's experience and divergence for a group that learns, and the drift alarm
        (None: the group measures no health)."""
        learning, health = self.learning, self.health
        if health is None:
            return None
        if learning is None:
            return health.close()
        return health.close(partial(learning.add_health, steps=health.window.agent_steps))

    def alerts(self) -> list[GroupEvent]:
        """The ``drift`` events the health part raised since the last call."""
        return [] if self.health is None else self.health.alerts()

    # -- the tick's stages, one at a time ----------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start a new trial for the agents in ``mask`` (all by default): prior back to ``D``.
        A group that learns keeps what was learned; with ``trial_ends_at_reset`` the agents of
        ``mask`` that acted in their trial end it first (``pD`` learns from their last
        posterior). (Before a tick, ``step(obs, starts=mask)`` does the same in one call.)"""
        n = self.state.n_agents
        chosen = np.ones(n, dtype=bool) if mask is None else mask
        starting = self._start_trials(chosen, "reset mask")
        if starting is not None:  # (``D`` into their prior: their next; a kept one stays taken)
            self._reset_agents(_selected(starting, n))

    def _start_trials(self, starts: np.ndarray, what: str = "starts") -> NDArray[np.bool_] | None:
        """The agents of ``starts`` (``(N,)`` truth values; ``what``: its name in the error)
        start a trial, all but their arrays' fills (:meth:`_reset_agents`: :meth:`reset`'s, or
        the path's in or just before the tick): learning's end of their trials, health's
        alignment when every agent starts. Returns them as C-contiguous bool (None: nobody
        starts)."""
        state, learning = self.state, self.learning
        mask = np.ascontiguousarray(starts, dtype=bool)
        if mask.shape != (state.n_agents,):
            raise InputError(f"{what} has shape {mask.shape}, expected ({state.n_agents},)")
        some = int(np.count_nonzero(mask))
        if not some:
            return None
        if learning is not None:
            if learning.trial_ends_at_reset:  # the tables may be refreshed: a kept prior stale
                state.wrote()
            self._installer.install(learning.on_reset(mask, state.qs, state.has_action))
        if self.health is not None and some == state.n_agents:  # every agent starts an episode
            self.health.aligned()
        return mask

    def _reset_agents(self, sel: slice | np.ndarray) -> None:
        """The agents ``sel`` start a trial from ``D`` (a new trial: they plan at its first
        tick)."""
        self.state.reset(sel, self._stepper.cm.D)
        if self.plans is not None:
            self.plans.reset(sel)

    def infer_states(self, obs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Update every agent's posterior from ``obs (N, M)`` (or soft evidence, see
        :meth:`step`); returns ``qs`` (views; copies for agents with their own tables)."""
        state, stepper = self.state, self.stepper
        state.wrote()
        if self._stepping is not None:
            self._stepping.infer_states(state, self.inputs.obs(np.asarray(obs), state.n_agents),
                                        stepper)
            return [q.copy() for q in state.qs]
        o, soft = self.inputs.evidence(obs, state.n_agents)
        derive = not state.keeps_prior
        if derive:
            state.check_behind(self.name)
            state.beliefs_ahead = True
        for rows in stepper.blocks(state):
            if derive:
                stepper.derive_prior(state, rows)
            stepper.infer(rows, o, soft, roots=False)
        return state.qs

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)`` for the current beliefs (with the parameter information
        gain when the group learns and seeks novelty, ``LearningSpec.param_info_gain``)."""
        state = self.state
        state.wrote()
        self._stages.infer_policies(state, self.stepper)
        return state.q_pi, state.G

    def sample_action(self) -> IntArray:
        """Select and commit each agent's next action ``(N, F)``; it drives the next prior."""
        state = self.state
        state.wrote()
        self._stages.sample_action(state, self.stepper)
        return state.action

    def learn(self, obs: np.ndarray) -> None:
        """Learn from this tick's outcomes ``obs (N, M)`` and the current posteriors, after
        :meth:`infer_states` (``pB``: from the transition the last committed action made; the
        API path a replay takes, where :meth:`step` does it all). Nothing is learned while
        frozen."""
        learning, state = _learning_of(self.learning, self.name), self.state
        state.wrote()  # each agent's tables learn
        o = self.inputs.obs(obs, state.n_agents)
        self._installer.install(
            learning.after_inference(o, state.qs, state.action, state.has_action)
        )

    def end_trial(
        self, mask: np.ndarray | None = None, *, posterior: Sequence[np.ndarray] | None = None
    ) -> None:
        """The agents in ``mask`` (all by default) finished a trial: ``pD`` learns from their
        posteriors (``posterior[f]`` rows of the selected agents instead, e.g. a trial's first),
        the tables are refreshed, and they start again from the learned ``D``."""
        learning, n = _learning_of(self.learning, self.name), self.n_agents
        sel = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self.state.wrote()  # the tables learn
        self._installer.install(learning.end_trial(sel, self.state.qs, posterior))
        self._reset_agents(_selected(sel, n))

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)`` (replay, manual control); the next prior
        follows from them."""
        state = self.state
        a = self.inputs.actions(actions, state.n_agents)
        state.wrote()
        state.action[...] = a
        if self._stepping is not None:  # made from the actions at the next inference
            state.has_action.fill(True)
            return
        state.has_action[...] = True
        # the transitions (a shared pass's learned ones brought in first: the stepper's)
        self.stepper.drive(state, a)

    def drive_prior(self, actions: np.ndarray) -> None:
        """The next prior from ``actions (N, F)`` without committing them: each agent keeps
        its own action and committed plan (replay under a planning policy, where the recorded
        action moved the world but an agent between plannings acts from its plan). Only a
        group that keeps its prior: another's follows from its own actions."""
        state = self.state
        if not state.keeps_prior:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): its "
                "prior follows from its own actions, drive_prior needs a group that keeps it"
            )
        state.wrote()
        self.stepper.drive(state, self.inputs.actions(actions, state.n_agents))

    # -- several cores -----------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Processes that step this group's blocks (1: the caller alone)."""
        return self.cores.count

    def start_workers(self, count: int) -> int:
        """Step the blocks on ``count`` processes (the caller and ``count - 1`` forked workers;
        see :mod:`edge_agent.core.workers`): the per-agent state moves to shared memory and the
        budget reserves each worker's kernel scratch. At most one process per block; returns the
        count used. Integer observations only: soft evidence is stepped by the caller alone."""
        if count > 1 and self._stepping is not None:
            raise InputError(
                f"group {self.name!r}: a group with per-agent counts steps on one process; "
                "set workers = 1"
            )
        stepper, n = self.stepper, self.n_agents
        used = self.cores.start(
            count,
            blocks=len(stepper.blocks(self.state)),
            obs_shape=(n, stepper.cm.num_modalities),
            scratch_nbytes=self.memory.scratch_nbytes(n),
            share=self.memory.share,
            step_block=(self.plans or self._blocks).step_index,
            stepper=stepper,
            after_fork=self._blocks.after_fork,
        )
        self._choose_path()
        return used

    def stop_workers(self) -> None:
        """Back to one process (the state stays where it is; nothing is lost)."""
        self.cores.stop(for_good=True)
        self._choose_path()

    # -- snapshots ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore this group's beliefs, actions, committed plans, history and what
        it learned exactly: views of the group's own arrays (the history's read-only), valid
        until it next steps; copy them to keep them."""
        out = self.state.state_dict(self.ticks)
        if self.plans is not None:
            out.update(self.plans.state_dict())
        if self.recorder is not None:
            out.update(self.recorder.state_dict())
        if self.learning is not None:
            out.update(self.learning.state_dict(self.state.qs))
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict`; shapes must match this group exactly (the tick path
        chosen again: a snapshot's learning may be frozen).

        A :class:`~edge_agent.core.contract.StateReader` (a snapshot's arrays) has each array
        copied straight into the group's own, chunk by chunk, with no whole copy of it made."""
        take = snapshot_taker(state, self.name)
        stepper = self.stepper
        self.state.load_state_dict(
            state,
            take,
            D=stepper.cm.D,
            blocks=len(stepper.blocks(self.state)),
            block_size=stepper.sizes.block,
            # an every-tick group's small blocks read the prior off the small-block planner
            small_from_planner=self.planning.every_tick,
            make_priors=partial(stepper.priors_from_flags, self.state),
            name=self.name,
        )
        self.ticks = int(state["ticks"]) if "ticks" in state else 0
        if self.plans is not None:
            self.plans.load_state_dict(state, take)
        if self.recorder is not None:
            self.recorder.load_state_dict(state, self.name)
        if self.learning is not None:
            self._installer.install(self.learning.load_state_dict(state))
        self._choose_path()

    # -- the group contract (edge_agent.core.contract.AgentGroup) ----------------------------------
    def io(self) -> GroupIO:
        return GroupIO(num_obs=self.inputs.num_obs, actions=self.inputs.num_controls)

    def io_signature(self) -> tuple[object, ...]:
        cm = self._stepper.cm
        return ("aif", cm.num_obs, cm.num_controls)

    def warm_up(self, obs: np.ndarray) -> None:
        """Step once on ``obs`` without recording, then put beliefs and actions back.

        Only the first block of agents is stepped (and its state copied and put back): the
        kernels and the model's tables are warm all the same, and a copy of every agent's state
        would double a large group's memory at start (a million grid10 agents: 850 MB). A group
        that learns is stepped whole, and what it learned put back too."""
        learning, state = self.learning, self.state
        if learning is None:
            o, soft = self.inputs.evidence(obs, state.n_agents)
            stepper = self.stepper
            rows = stepper.blocks(state)[0]
            block = [*rows.qs, *rows.prior, rows.G, rows.q_pi, rows.action, rows.has_action]
            if not state.keeps_prior:
                block += [state.prior_reset[rows.sl], state.prior_small[:1]]
            saved = [np.array(a, copy=True) for a in block]
            stepper.step_block(state, rows, o, soft)
            for a, v in zip(block, saved, strict=True):
                np.copyto(a, v)
            return
        health, self.health = self.health, None  # a step that is put back is not measured
        try:
            with learning.warming_up():
                saved_state = {
                    k: np.array(v, copy=True)
                    for k, v in self.state_dict().items()
                    if not k.startswith(("history.", "times."))
                }
                self.step(obs, record=False)
                self.load_state_dict(saved_state)
        finally:
            self.health = health

    def finite(self) -> bool:
        """Whether every posterior and policy posterior is finite (block by block: no
        temporary the size of the group)."""
        return all(
            bool(np.isfinite(a).all())
            for rows in self.stepper.blocks(self.state)
            for a in (*rows.qs, rows.q_pi)
        )

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_agents
        return np.stack([rng.integers(0, o, size=n) for o in self.inputs.num_obs], axis=1), None

    def describe(self) -> dict[str, Any]:
        cores = self.cores
        out: dict[str, Any] = {"workers": cores.count, "workers_rss_bytes": cores.rss_bytes(),
                               "workers_restarts": cores.restarts}
        if self.plans is not None:
            out["planning"] = self.plans.stats()  # the last tick's; docs/planning.md
        out["stepping"] = self.stepping
        if self.stepping_cost is not None:
            out["stepping_cost"] = self.stepping_cost.as_dict()
        if self.learning is not None:
            out["learning"] = self.learning.describe()
        return out

    @property
    def stepping(self) -> str:
        """What steps the group's ticks: ``"native"`` (the compiled tick, one pass per tick),
        or ``"numpy: <why not native>"`` (a learning group: its learning's)."""
        if self.learning is not None:
            return str(self.learning.describe()["stepping"])
        if isinstance(self.path, CompiledTick):
            return "native"
        why = self._native_reason or "workers step its blocks"
        return f"numpy: {why}"

    def metrics(self) -> dict[str, object]:
        """The planning policy's numbers of the last tick, when agents do not plan every tick
        (docs/planning.md), and the learning's (docs/learning.md): ``learning_updates``,
        ``learning_divergence``, ``learning_surprise``."""
        out: dict[str, object] = {}
        if self.plans is not None:
            stats = self.plans.stats()
            out.update(
                planning_duty_cycle=stats["duty_cycle"],
                planning_deferred=stats["deferred"],
                plan_age_mean=stats["plan_age_mean"],
            )
        if self.learning is not None:
            out.update({f"learning_{k}": v for k, v in self.learning.numbers().items()})
        return out

    def planning_stats(self) -> dict[str, float | int | None]:
        """The last tick's planning: agents planned and deferred, the duty cycle (share of the
        group planned), and the committed plans' mean and largest age in ticks. Every-tick
        groups plan all their agents."""
        if self.plans is not None:
            return self.plans.stats()
        return {"planned": self.n_agents, "deferred": 0, "duty_cycle": 1.0,
                "plan_age_mean": 0.0, "plan_age_max": 0}

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """Before a step, from the daemon (:class:`~edge_agent.core.contract.Paced`): the tick
        must end ``left_s`` seconds from now, and the previous one went on ``rest_s`` seconds
        after this group's step returned (None: not known). Only planning bounded in time reads
        it (``deadline_ms``, ``fit_tick``; see :mod:`edge_agent.core.tick_fit`)."""
        if self.plans is not None:
            self.plans.pace(left_s, rest_s)


def _selected(mask: np.ndarray | None, n_agents: int) -> slice | np.ndarray:
    """The agents of ``mask`` (all by default) as a slice, or their indices."""
    if mask is None:
        return slice(None)
    chosen = np.asarray(mask, dtype=bool)
    if chosen.shape != (n_agents,):
        raise InputError(f"reset mask has shape {chosen.shape}, expected ({n_agents},)")
    # Every agent (trials in step): slices. Else the agents' indices, found once: each
    # array's rows by index (a boolean mask finds them again for each array, and scans
    # every agent; at 9 % of 200,000 agents 1.5 against 4.8 ms)
    return slice(None) if chosen.all() else np.flatnonzero(chosen)


def _learning_of(learning: GroupLearning | None, name: str) -> GroupLearning:
    """The group's learning; InputError for a group that does not learn."""
    if learning is None:
        raise InputError(f"group {name!r} does not learn (it was built without learning)")
    return learning


def _stepped_model(
    model: GenerativeModel | QuantizedModel, precision: Precision
) -> tuple[QuantizedModel | None, GenerativeModel | QuantizedModel, type[np.floating]]:
    """What a group of ``precision`` steps with: ``int8``, the ``logu8-v1`` codes (quantized
    here from a float model) in float32; ``float64``, the float tables. Returns the codes (None
    for float64), the model compiled and the compute dtype."""
    if precision == "int8":
        quantized = model if isinstance(model, QuantizedModel) else quantize_model(model)
        return quantized, quantized, np.float32
    return None, model.dequantize() if isinstance(model, QuantizedModel) else model, np.float64


def _check_arguments(name: str, n_agents: int, precision: str, history_beliefs: str) -> None:
    if n_agents < 1:
        raise InputError(f"group {name!r}: n_agents must be >= 1, got {n_agents}")
    if precision not in ("int8", "float64"):
        raise InputError(f"precision must be 'int8' or 'float64', got {precision!r}")
    if history_beliefs not in ("full", "map"):
        raise InputError(f"history_beliefs must be 'full' or 'map', got {history_beliefs!r}")


def _check_learning(
    name: str,
    learning: LearningSpec,
    *,
    planning: PlanningPolicy,
    precision: str,
    history_capacity: int,
    keep_prior: bool,
) -> None:
    """What a group that learns refuses, in one line each: per-agent counts with int8, a
    history, parameter information gain or a planning policy; and no prior kept."""
    if learning.settings.scope == "per_agent":
        refused = {
            "precision": precision != "float64",
            "history_capacity": bool(history_capacity),
            "param_info_gain": learning.param_info_gain,
        }
        for what, bad in refused.items():
            if bad:
                raise InputError(
                    f"group {name!r}: per-agent learning runs float64 tables without history "
                    f"or parameter information gain; {what} is not available with it"
                )
        if not planning.every_tick:
            raise InputError(
                f"group {name!r}: per-agent learning steps every agent every tick with its own "
                "tables (give it no planning policy)"
            )
    if not keep_prior:
        raise InputError(
            f"group {name!r}: a group that learns keeps its prior between ticks (keep_prior="
            "False is for groups that do not read or write it)"
        )
