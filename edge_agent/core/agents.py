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
* the planning strategy, chosen once: every agent plans every tick (each block is stepped whole),
  or a planning policy's :class:`~edge_agent.core.planning_pass.PolicyTicks`, which owns the
  committed plans;
* ``recorder``, the history (:class:`~edge_agent.core.history_recorder.HistoryRecorder`, with
  ``history_capacity``);
* the workers (:class:`~edge_agent.core.group_workers.GroupWorkers`, :meth:`start_workers`);
* ``learning`` (:class:`~edge_agent.core.learning.GroupLearning`, with ``learning=``): what the
  agents learn, called at a few points of the tick; its scope (shared counts, or each agent's
  own) says what the counts refresh into.

One tick (:meth:`AifAgentGroup.step`): the evidence is checked, then per block
``stepper.step_block(state, rows, obs, soft)`` (prior, :func:`~edge_agent.aif.kernels.
infer_block`, the block's planner, :func:`~edge_agent.aif.kernels.select_block` and the next
prior), the block's history row staged, and the row appended.

``precision="int8"`` stores the model in the ``logu8-v1`` scheme (:mod:`edge_agent.aif.quant`) and
computes in float32 from tables decoded once per model; ``precision="float64"`` computes from the
float tables in float64 and gives pymdp's numbers.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.kernels.transitions import propagate_per_agent
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy
from edge_agent.aif.policies import construct_policies, validate_policies
from edge_agent.aif.quant import QuantizedModel, quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.contract import GroupEvent, GroupIO, Shadows, StateReader
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
from edge_agent.core.group_workers import GroupWorkers
from edge_agent.core.health import LEARNING_HEALTH, AifHealth, ExcessTap
from edge_agent.core.health_window import HealthSummary, HealthWindow
from edge_agent.core.history import HistoryRing
from edge_agent.core.history_recorder import (
    HistoryRecorder,
    history_bytes_per_agent,
    history_fields,
)
from edge_agent.core.priors import prior_follows
from edge_agent.errors import BudgetError, InputError, SnapshotError

if TYPE_CHECKING:
    from edge_agent.aif.learning import Learner, LearningSpec
    from edge_agent.aif.learning_counts import TableIncrements
    from edge_agent.core.learning import AgentStepping, GroupLearning, NewTables, TickPass
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


class AifAgentGroup:
    """``n_agents`` Active Inference agents sharing one generative model.

    Per-agent state (the ``state`` part), all ``(n_agents, ...)``: ``qs[f]`` posterior
    ``(N, S_f)``; ``prior[f]`` prior for the next observation; ``action`` last committed action
    ``(N, F)``; ``q_pi`` and ``G`` ``(N, P)``.

    ``keep_prior=False``: the prior is not kept between ticks where it follows from what is
    kept (:attr:`keeps_prior`): each block's is made again at the start of the next tick from
    the beliefs and the committed actions, as the tick that committed them made it (``D`` for
    an agent reset since), in the block's scratch: half the beliefs' bytes. ``prior`` is then
    empty; the group steps (or infers once, then acts) as before, with the same numbers.

    ``learning``: what the agents learn (:class:`~edge_agent.aif.learning.LearningSpec`, see
    :mod:`edge_agent.core.learning`); ``trial_ends_at_reset``: :meth:`reset` ends the trials of
    the agents that acted in theirs (``pD`` learns from them). A group that learns keeps its
    prior (learning reads and writes it).
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
        #: Whether the per-agent state that workers write is allocated in shared memory from the
        #: start (``shared_state``: the caller will :meth:`start_workers`; they then move nothing,
        #: so the state never has two copies at once), as it is after start_workers anyway.
        self._shared_state = shared_state
        if policies is None:
            pol = construct_policies(
                model.num_controls, self.settings.policy_len, self.settings.control_fac_idx
            )
        else:
            pol = validate_policies(policies, model.num_controls)
        self._quantized, source, dtype = _stepped_model(model, precision)
        self.dtype = np.dtype(dtype)
        self.key = model_key(source, precision, pol)
        self._budget = budget
        self._reservations: list[Reservation] = []
        # Reserve before allocating: shared tables once per model, then per-agent state.
        cm = shared_tables(self.key, source, pol, dtype)
        self._stepper = BlockStepper(
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
        #: Agents with their own tables step through them (per-agent learning), else None.
        self._stepping: AgentStepping | None = (
            None if self.learning is None else self.learning.scope.stepping()
        )
        #: The compiled pass that steps the learning ticks (None: the numpy stages), and
        #: whether the last pass left the compiled tables behind the learned ones (a shared
        #: group's: :attr:`stepper` brings them in when read).
        self._tick_pass: TickPass | None = (
            None if self.learning is None else self.learning.scope.tick_pass()
        )
        self._behind = False
        self.state = AgentState(
            cm.num_states, cm.num_policies, cm.num_factors, self.dtype, keep_prior=keep_prior
        )
        if -(-n_agents // self.stepper.sizes.block) < 2:  # one block: the caller steps it alone
            self._shared_state = False
        self.state.keeps_prior = self._keeps_prior_at(n_agents)
        self._obs_limit = np.array(cm.num_obs, dtype=np.uint64)
        shared = cm.nbytes + (self._quantized.nbytes if self._quantized is not None else 0)
        self.shared_nbytes = shared
        if budget is not None:
            self._reservations.append(
                budget.reserve(f"model:{self.key}", "model", shared, shared_key=self.key)
            )
        self.history_capacity = int(history_capacity)
        self._history_fields = history_fields(
            cm.num_obs, cm.num_states, cm.num_controls, history_beliefs
        )
        self.recorder: HistoryRecorder | None = None
        if self.history_capacity > 0:
            self.recorder = HistoryRecorder(
                self._history_fields, self.history_capacity, history_beliefs, self.dtype
            )
        self.plans: PolicyTicks | None = None
        if not self.planning.every_tick:
            from edge_agent.core.planning_pass import PolicyTicks  # noqa: PLC0415 - a policy

            self.plans = PolicyTicks(
                self.planning, clock, state=self.state, stepper=self.stepper,
                history=self.recorder, chooser=self.learning,
            )
        self.cores = GroupWorkers(name, budget)
        self._agent_reservation: Reservation | None = None
        if budget is not None:
            try:
                self._agent_reservation = budget.reserve(
                    name,
                    "agents",
                    self.bytes_for(n_agents, self.history_capacity),
                    hint=f"reduce group {name!r} count or history_capacity",
                )
            except BudgetError:  # the model's reservation goes with the group never built
                for r in self._reservations:
                    r.release()
                raise
            self._reservations.append(self._agent_reservation)
        self._allocate(n_agents)
        self.ticks = 0
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
        )
        if self.learning is not None and budget is not None:
            self._reservations.append(
                budget.reserve(
                    f"{name}:learning",
                    "learning",
                    self.learning.nbytes,
                    hint=f"learn fewer tables in group {name!r}",
                )
            )

    # -- what the parts hold -----------------------------------------------------------------------
    @property
    def stepper(self) -> BlockStepper:
        """The blocks' stepper, with the compiled tables the agents step with. After a shared
        group's compiled pass the learned tables are brought into them first
        (:meth:`~edge_agent.core.learning.GroupLearning.tables_current`): whatever reads them
        reads what the agents infer with. (What no pass changes, the sizes and ``D``, is read
        from ``_stepper.cm`` directly.)"""
        if self._behind:
            self._bring_in()
        return self._stepper

    def _bring_in(self) -> None:
        """A shared pass's learned tables into the compiled tables (the workers forked again
        with them)."""
        self._behind = False  # first: installing reads the stepper
        assert self.learning is not None  # only a learning group's pass leaves them behind
        self._install(self.learning.tables_current(self._stepper.cm))

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
        """Posteriors by factor, ``(N, S_f)``."""
        return self.state.qs

    @property
    def prior(self) -> list[np.ndarray]:
        """Priors for the next observation by factor, ``(N, S_f)`` (empty: not kept)."""
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
        """The last committed actions ``(N, F)``."""
        return self.state.action

    @property
    def has_action(self) -> NDArray[np.bool_]:
        """Whether each agent committed an action in its trial ``(N,)``."""
        return self.state.has_action

    @property
    def keeps_prior(self) -> bool:
        """Whether the prior is kept between ticks (see the class docstring)."""
        return self.state.keeps_prior

    @property
    def history(self) -> HistoryRing | None:
        """Every agent's outcomes, actions and beliefs per tick (None: no history)."""
        return None if self.recorder is None else self.recorder.ring

    @property
    def block_size(self) -> int:
        """Agents per block at most."""
        return self.stepper.sizes.block

    @property
    def dense_block_size(self) -> int:
        """Agents per block of the dense evaluation at most."""
        return self.stepper.sizes.dense

    def blocks(self, dense: bool = False) -> list[BlockRows]:
        """The group cut into blocks of ``block_size`` agents (``dense_block_size`` if
        ``dense``): views of the state and each block's scratch, made once."""
        return self.stepper.blocks(self.state, dense)

    @property
    def rng(self) -> np.random.Generator:
        """The generator of stochastic action selection (the stepper's)."""
        return self.stepper.rng

    def selection_rng(self) -> np.random.Generator | None:
        """What action selection draws from: :attr:`rng`, or None when it is deterministic."""
        return self.stepper.selection_rng()

    def _plans_or_none(self, what: str) -> PolicyTicks:
        if self.plans is None:
            raise AttributeError(f"group {self.name!r} plans every tick: it has no {what}")
        return self.plans

    @property
    def plan_policy(self) -> np.ndarray:
        """Each agent's committed policy (a planning policy's)."""
        return self._plans_or_none("plan_policy").plan_policy

    @property
    def plan_left(self) -> np.ndarray:
        """Steps of its committed plan each agent has still to take."""
        return self._plans_or_none("plan_left").plan_left

    @property
    def plan_age(self) -> np.ndarray:
        """Ticks since each agent planned."""
        return self._plans_or_none("plan_age").plan_age

    @property
    def deferred(self) -> NDArray[np.bool_]:
        """The agents a planning budget put off at the last tick."""
        return self._plans_or_none("deferred").deferred

    @property
    def planning_counts(self) -> dict[str, int]:
        """The last tick's planning numbers (see :meth:`planning_stats`)."""
        return self._plans_or_none("planning_counts").counts

    # -- memory ------------------------------------------------------------------------------------
    def _new(self, shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """A zero-filled array of per-agent state that workers write: in shared memory when the
        group is (or will be) stepped by workers, so that starting them copies nothing."""
        if not self._shared_state:
            return np.zeros(shape, dtype=dtype)
        from edge_agent.core.workers import shared_empty  # noqa: PLC0415 - multi-core groups only

        return shared_empty(shape, dtype)

    def _keeps_prior_at(self, n_agents: int) -> bool:
        """Whether a group of ``n_agents`` keeps its prior between ticks: asked to, kept it
        already (it keeps it: a kept prior may differ from a made one by rounding), or some of
        its blocks' priors do not follow from what is kept
        (:func:`~edge_agent.core.priors.prior_follows`)."""
        state, sizes = self.state, self.stepper.sizes
        return (
            state.keep_prior_asked
            or state.prior_was_kept
            or not prior_follows(
                self.cm,
                every_tick=self.planning.every_tick,
                block_size=sizes.block,
                dense_block_size=sizes.dense,
                n_agents=max(1, n_agents),
            )
        )

    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """Exact bytes of one agent's state, history included (of a group of ``n_agents``:
        whether it keeps its prior depends on its blocks; this group's by default), and of what
        it learns."""
        total = sum(self.nbytes_by_part(history_capacity, n_agents).values())
        if self.learning is not None:
            total += self.learning.bytes_per_agent(self.n_agents if n_agents is None else n_agents)
        return total

    def nbytes_by_part(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> dict[str, int]:
        """:meth:`per_agent_nbytes` by part (learning's aside): ``beliefs`` (``qs``, and
        ``prior`` or the flag that says it is ``D``), ``policy`` (``q_pi`` and ``G``),
        ``actions`` (and the flag), ``history`` (the ring's rows), ``history_staging`` (the row
        staged for the next append), ``planning`` (a planning policy's arrays)."""
        cap = self.history_capacity if history_capacity is None else history_capacity
        n = self.n_agents if n_agents is None else n_agents
        parts = self.state.bytes_per_agent(self._keeps_prior_at(n))
        ring, staging = history_bytes_per_agent(
            self._history_fields, cap, self.history_beliefs, self.dtype
        )
        parts["history"] = ring
        parts["history_staging"] = staging
        parts["planning"] = 0 if self.plans is None else self.plans.bytes_per_agent(n)
        return parts

    def scratch_nbytes_per_agent(self) -> int:
        """Kernel scratch per agent of a full block (an upper bound; see :meth:`scratch_nbytes`)."""
        return self.stepper.sizes.per_agent

    def scratch_nbytes(self, n_agents: int) -> int:
        """Kernel scratch bytes for a group of ``n_agents`` (preallocated once, see Workspace;
        a group that keeps no prior makes each block's there; a planning policy's gather
        buffers)."""
        sizes = self.stepper.sizes
        prior = 0 if self._keeps_prior_at(n_agents) else sum(self._stepper.cm.num_states)
        gather = 0 if self.plans is None else self.plans.gather_bytes_per_agent()
        return (
            min(sizes.block, n_agents) * (gather + prior * self.dtype.itemsize)
            + sizes.scratch_nbytes(n_agents)
        )

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch."""
        times = 8 * history_capacity
        scratch = self.scratch_nbytes(n_agents)
        return n_agents * self.per_agent_nbytes(history_capacity, n_agents) + times + scratch

    @property
    def nbytes(self) -> int:
        """Bytes of per-agent arrays currently allocated (not the shared model, not scratch)."""
        total = self.state.nbytes
        if self.recorder is not None:
            total += self.recorder.nbytes
        if self.learning is not None:
            total += self.learning.allocated_nbytes
        return int(total)

    # -- allocation --------------------------------------------------------------------------------
    def _allocate(self, n_agents: int) -> None:
        workers = self.cores.wanted
        self.cores.stop()  # they hold views of the arrays being replaced
        self._allocate_arrays(n_agents)
        if workers > 1:
            self.start_workers(workers)

    def _allocate_arrays(self, n_agents: int) -> None:
        state, stepper = self.state, self.stepper
        keep = min(state.n_agents, n_agents)
        changed = state.allocate(
            n_agents,
            keeps_prior=self._keeps_prior_at(n_agents),
            block_size=stepper.sizes.block,
            new=self._new,
            make_priors=self._prior_of_first,
        )
        if not stepper.scratch_fits(state, changed):
            stepper.new_scratch(state)
        if self.plans is not None:
            self.plans.allocate(n_agents, keep, self._new)
        if n_agents > keep:
            self._reset_agents(np.arange(n_agents) >= keep)
        if self.recorder is not None:
            self.recorder.allocate(n_agents, self._new)
        if self.learning is not None:
            self.learning.allocate(n_agents, state.action, state.has_action)

    def _prior_of_first(self, out: list[np.ndarray], n: int) -> None:
        """The priors of the first ``n`` agents, made (the group keeps none) into ``out``."""
        state, stepper = self.state, self.stepper
        for rows in stepper.blocks(state):
            if rows.sl.start >= n:
                break
            stepper.derive_prior(state, rows)
            stop = min(rows.sl.stop, n)
            for o, p in zip(out, rows.prior, strict=True):
                o[rows.sl.start : stop] = p[: stop - rows.sl.start]

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group; new agents start from ``D``. Reserves before allocating."""
        if self._stepping is not None:
            raise InputError(
                f"group {self.name!r}: a group with per-agent counts keeps its size "
                f"({self.n_agents})"
            )
        if n_agents < 1:
            raise InputError(f"group {self.name!r}: n_agents must be >= 1, got {n_agents}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(n_agents, self.history_capacity))
        self._allocate(n_agents)

    def resize_history(self, capacity: int) -> None:
        """Shrink (or grow) every agent's history, keeping the newest rows."""
        if self.recorder is None or capacity < 1:
            raise InputError(f"group {self.name!r} has no history to resize to {capacity}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(self.n_agents, capacity))
        self.recorder.resize(capacity)
        self.history_capacity = capacity

    def release(self) -> None:
        """Give the group's reservations back to the budget (the group is no longer used)."""
        self.stop_workers()
        for r in self._reservations:
            r.release()
        self._reservations.clear()

    def _install(self, new: NewTables | None) -> None:
        """Step with a learning group's refreshed tables from now on (None: nothing changed):
        the kernel scratch is made anew if they need another planner (with a planning policy's
        gather buffers and the agents' reservation), and the workers, which hold the old tables
        copy-on-write, are forked again."""
        if new is None:
            return
        stepper = self.stepper
        if stepper.install(new.cm, same_layout=new.same_layout):
            block = stepper.sizes.block
            stepper.resize_scratch(self.state)
            if self.plans is not None and stepper.sizes.block != block:
                self.plans.resize_gather(self._new)
            if self._agent_reservation is not None:
                self._agent_reservation.resize(self.bytes_for(self.n_agents, self.history_capacity))
        self.cores.refork()

    # -- checks ------------------------------------------------------------------------------------
    def check_obs(self, obs: np.ndarray) -> IntArray:
        """Validate ``obs (N, M)`` integer outcomes; raise InputError naming what is wrong."""
        return self._checked_obs(np.asarray(obs))

    def _checked_obs(self, arr: np.ndarray) -> IntArray:
        """:meth:`check_obs` of an array."""
        expected = (self.n_agents, len(self._obs_limit))
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        o = np.ascontiguousarray(arr, dtype=np.int64)
        if self.n_agents == 1:  # one agent: plain Python beats numpy calls (loop over modalities)
            values = o[0].tolist()
            ok = min(values) >= 0 and all(map(operator.lt, values, self._stepper.cm.num_obs))
        else:  # one pass over the batch: negative outcomes wrap to huge unsigned values
            ok = bool(np.logical_and.reduce(np.less(o.view(np.uint64), self._obs_limit), axis=None))
        if not ok:
            self._raise_out_of_range(o)
        return o

    def check_evidence(
        self, obs: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[IntArray | None, list[np.ndarray] | None]:
        """``(hard, None)`` for ``(N, M)`` integer outcomes (see :meth:`check_obs`), or
        ``(None, soft)`` for soft evidence: a sequence of ``M`` float arrays ``(N, O_m)``, a
        distribution over each modality's outcomes (pymdp's ``distr_obs``: the likelihood is
        ``sum_o p_m(o) A[m][o]``)."""
        if (
            isinstance(obs, list | tuple)
            and obs
            and all(isinstance(p, np.ndarray) and p.dtype.kind == "f" for p in obs)
        ):
            M = self._stepper.cm.num_modalities
            if len(obs) != M:
                raise InputError(f"soft evidence has {len(obs)} modalities, expected {M}")
            soft = []
            for m, (p, o) in enumerate(zip(obs, self._stepper.cm.num_obs, strict=True)):
                if p.shape != (self.n_agents, o):
                    raise InputError(
                        f"soft evidence of modality {m} has shape {p.shape}, "
                        f"expected {(self.n_agents, o)}"
                    )
                if not (np.isfinite(p).all() and (p >= 0).all()):
                    raise InputError(
                        f"soft evidence of modality {m} must be finite and non-negative"
                    )
                soft.append(np.ascontiguousarray(p, dtype=self.dtype))
            return None, soft
        return self._checked_obs(np.asarray(obs)), None

    def _raise_out_of_range(self, obs: IntArray) -> None:
        for m, o in enumerate(self._stepper.cm.num_obs):
            col = obs[:, m]
            bad = (col < 0) | (col >= o)
            if bad.any():
                agent = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"obs[{agent}, {m}] = {int(col[agent])} is out of range [0, {o}) "
                    f"({int(bad.sum())} agent(s) out of range in modality {m})"
                )

    def check_actions(self, actions: np.ndarray) -> IntArray:
        arr = np.asarray(actions)
        expected = (self.n_agents, self._stepper.cm.num_factors)
        if arr.shape != expected:
            raise InputError(f"actions has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        for f, u in enumerate(self._stepper.cm.num_controls):
            col = arr[:, f]
            if col.min() < 0 or col.max() >= u:
                raise InputError(f"actions on factor {f} must be in [0, {u}), got {int(col.max())}")
        return arr.astype(np.int64, copy=False)

    def _check_beliefs_behind(self) -> None:
        """A group that keeps no prior makes it from its beliefs: refuse to infer twice without
        an action committed between (the second inference would start from the first's)."""
        if self.state.beliefs_ahead:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): commit "
                "actions (sample_action, set_action) before inferring again"
            )

    # -- one tick ----------------------------------------------------------------------------------
    def step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None = None,
        *,
        record: bool = True,
    ) -> IntArray:
        """One full tick for every agent: infer states, plan, act, record history.

        ``obs``: ``(N, M)`` integer outcomes, or soft evidence (see :meth:`check_evidence`; the
        history then records each modality's most probable outcome; a group that learns takes
        integer outcomes only). ``record=False`` leaves the history untouched (warm-up).
        Returns the committed actions ``(N, F)`` (a view of the group's action array).
        """
        return self._step(obs, now, record, None)

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
        return self._step(obs, None, False, who)

    def _step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None,
        record: bool,
        who_plans: NDArray[np.bool_] | None,
    ) -> IntArray:
        """:meth:`step`; ``who_plans``: see :meth:`step_planned`."""
        o, soft = self.check_evidence(obs)
        if self.learning is not None and o is None:
            raise InputError(f"group {self.name!r} learns from integer outcomes, not soft evidence")
        return self._step_checked(o, soft, now, record, who_plans)

    def _step_checked(
        self,
        o: IntArray | None,
        soft: list[np.ndarray] | None,
        now: float | None,
        record: bool,
        who_plans: NDArray[np.bool_] | None,
    ) -> IntArray:
        """:meth:`_step` of evidence :meth:`check_evidence` has checked already: each block
        stepped whole, or a planning policy's passes, with learning's calls between."""
        state, learning, plans = self.state, self.learning, self.plans
        if learning is not None:
            assert o is not None  # _step refused soft evidence
            if plans is None and learning.learns_before_planning():
                return self._learning_tick(o, now, record)
            if self._behind:  # the fused step (and the workers) read the compiled tables
                self._bring_in()
            learning.observe(o, state.prior)  # the tick's prior, made by the last tick
            learning.keep_action(state.action, state.has_action)
        health = self.health
        if health is not None and o is not None:  # the prior made by the last tick (or again)
            if state.keeps_prior:
                health.before(o, state.prior)
            else:
                health.before(o, None, derive=self._health_prior)
        if not state.keeps_prior:
            self._check_beliefs_behind()
        record = record and self.recorder is not None
        workers = self.cores.running
        if plans is not None:
            start = plans.infer(o, soft, record, workers=workers, ticks=self.ticks,
                                who_plans=who_plans)
            if learning is not None:  # every agent learns, before anyone plans
                assert o is not None
                self._install(learning.after_inference(o, state.qs, self.cm))
            plans.plan(o, soft, record, workers=workers, ticks=self.ticks, who_plans=who_plans,
                       start=start)
        elif workers is not None and o is not None:
            workers.step(o, record, self.ticks)
        else:
            self._step_blocks(o, soft, record)
        if learning is not None and plans is None:  # from the same posteriors, after the step
            assert o is not None
            self._install(learning.after_inference(o, state.qs, self.cm))
        if record:
            self._record(o, soft, now)
        if plans is not None:
            plans.stepped()
        if health is not None:
            health.after(state.qs, state.q_pi, self._health_likelihood)
        self.ticks += 1
        return state.action

    def _step_blocks(
        self, o: IntArray | None, soft: list[np.ndarray] | None, record: bool
    ) -> None:
        """Every block's tick here, one after the other (and its history row staged)."""
        state, stepper = self.state, self.stepper
        history = self.recorder if record else None
        seed = self.cores.seed
        for i, rows in enumerate(stepper.blocks(state)):
            if seed is not None:  # the streams the workers would draw from
                stepper.set_rng(np.random.default_rng((seed, i, self.ticks)))
            stepper.step_block(state, rows, o, soft)
            if history is not None:
                history.stage_beliefs(rows)

    def _learning_tick(self, o: IntArray, now: float | None, record: bool) -> IntArray:
        """A tick whose tables change between inference and planning (a refresh is due, the
        agents seek novelty, or each agent has its own tables), in pymdp's order: every agent
        infers its states, learns (the tables are refreshed), then plans and acts with the
        current tables; in one compiled pass where the scope has one."""
        state, learning, stepping = self.state, self.learning, self._stepping
        assert learning is not None
        health = self.health
        tick_pass = self._tick_pass
        if tick_pass is not None:  # one pass: inferred, learned, the tables following, acted
            prior = tick_pass.step_tick(state, o, self._stepper, learn=not learning.frozen)
            learning.observe(o, prior, tick_pass.outcome_probabilities)
            if health is not None:
                health.before(o, prior)
            behind = tick_pass.leaves_compiled_behind and not learning.frozen
            learning.learned_in_pass(len(o), compiled_behind=behind)
            self._behind = self._behind or behind
        else:
            if stepping is not None:
                stepping.infer_states(state, o, self.stepper)
            else:
                stepper = self.stepper
                for rows in stepper.blocks(state):
                    stepper.infer(rows, o, None, roots=False)
            learning.observe(o, state.prior)
            if health is not None:
                health.before(o, state.prior)  # inference made the tick's prior
            self._install(
                learning.after_inference(o, state.qs, self.cm, state.action, state.has_action)
            )
            self.infer_policies()  # with the parameter information gain if the group seeks it
            self.sample_action()
        history = self.recorder
        if record and history is not None:
            for rows in self._stepper.blocks(state):
                history.stage_beliefs(rows)
            history.record(o, state.action, now)
        if health is not None:
            health.after(state.qs, state.q_pi, self._health_likelihood)
        self.ticks += 1
        return state.action

    def _record(self, o: IntArray | None, soft: list[np.ndarray] | None, now: float | None) -> None:
        """Append the tick's history row (soft evidence: each modality's most probable
        outcome)."""
        history = self.recorder
        assert history is not None  # the caller checked
        if o is None:
            assert soft is not None
            for rows in self.stepper.blocks(self.state):
                history.stage_outcomes(rows, soft)
        history.record(o, self.state.action, now)

    def _step_index(self, index: int, obs: np.ndarray, record: bool) -> None:
        """Block ``index``'s part of the tick, in whichever process steps it (the workers')."""
        plans = self.plans
        if plans is not None:
            plans.step_block(index, obs, None, record)
            return
        state, stepper = self.state, self.stepper
        rows = stepper.blocks(state)[index]
        stepper.step_block(state, rows, obs, None)
        if record:
            assert self.recorder is not None  # record only with a history
            self.recorder.stage_beliefs(rows)

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
    def _health_likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The ``A`` the agents ``rows`` infer with now: the compiled model's rows (refreshed
        by shared learning), or each agent's own where it learns its own (per-agent learning)."""
        if self._stepping is not None:
            return self._stepping.likelihood(rows)
        if self._behind:  # the compiled tables lag the pass's (read them when they are needed)
            assert self._tick_pass is not None
            return self._tick_pass.likelihood(rows)
        return self.cm.A_rows

    def _health_prior(self, rows: IntArray) -> list[np.ndarray]:
        """The prior of the agents ``rows`` for this tick, made again for a group that keeps
        none (as :func:`~edge_agent.core.priors.make_block_prior` makes it, in float64: ``D``
        for an agent reset since it acted, else its beliefs propagated by its action)."""
        state, cm = self.state, self.cm
        reset = state.prior_reset[rows]
        out = []
        for f, (trans, d) in enumerate(zip(cm.transitions, cm.D, strict=True)):
            q = np.asarray(state.qs[f][rows], dtype=np.float64)
            p = np.asarray(propagate_per_agent(trans, q, state.action[rows, f]), dtype=np.float64)
            p[reset] = d
            out.append(p)
        return out

    def health_summary(self) -> HealthSummary | None:
        """The health measures since the last call (one reporting window, docs/health.md), with
        learning's experience and divergence for a group that learns, and the drift alarm
        (None: the group measures no health)."""
        learning, health = self.learning, self.health
        if health is None:
            return None
        if learning is None:
            return health.close()
        numbers = learning.numbers()
        steps = health.window.agent_steps

        def add_learning(window: HealthWindow) -> None:
            if not learning.frozen:
                window.add("experience", np.array([float(steps)]))
            window.add("divergence", np.array([float(numbers["divergence"])]))

        return health.close(add_learning)

    def alerts(self) -> list[GroupEvent]:
        """The ``drift`` events the health part raised since the last call."""
        return [] if self.health is None else self.health.alerts()

    # -- the tick's stages, one at a time ----------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start a new trial for the agents in ``mask`` (all by default): prior back to ``D``.
        A group that learns keeps what was learned; with ``trial_ends_at_reset`` the agents of
        ``mask`` that acted in their trial end it first (``pD`` learns from their last
        posterior)."""
        sel = self._selected(mask)
        learning = self.learning
        if learning is not None:
            chosen = np.ones(self.n_agents, dtype=bool) if mask is None else np.asarray(mask, bool)
            # (its tables: a group that learns pD, which no compiled pass steps, so current)
            self._install(learning.on_reset(chosen, self.qs, self.has_action, self._stepper.cm))
        self._reset_agents(sel)
        if self.health is not None and isinstance(sel, slice):  # every agent starts an episode
            self.health.aligned()

    def _selected(self, mask: np.ndarray | None) -> slice | np.ndarray:
        """The agents of ``mask`` (all by default) as a slice, or their indices."""
        if mask is None:
            return slice(None)
        chosen = np.asarray(mask, dtype=bool)
        if chosen.shape != (self.n_agents,):
            raise InputError(f"reset mask has shape {chosen.shape}, expected ({self.n_agents},)")
        # Every agent (trials in step): slices. Else the agents' indices, found once: each
        # array's rows by index (a boolean mask finds them again for each array, and scans
        # every agent; at 9 % of 200,000 agents 1.5 against 4.8 ms)
        return slice(None) if chosen.all() else np.flatnonzero(chosen)

    def _reset_agents(self, sel: slice | np.ndarray) -> None:
        """The agents ``sel`` start a trial from ``D`` (a new trial: they plan at its first
        tick)."""
        self.state.reset(sel, self._stepper.cm.D)
        if self.plans is not None:
            self.plans.reset(sel)

    def infer_states(self, obs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Update every agent's posterior from ``obs (N, M)`` (or soft evidence, see
        :meth:`check_evidence`); returns ``qs`` (views; copies for agents with their own
        tables)."""
        state, stepper = self.state, self.stepper
        if self._stepping is not None:
            self._stepping.infer_states(state, self.check_obs(np.asarray(obs)), stepper)
            return [q.copy() for q in state.qs]
        o, soft = self.check_evidence(obs)
        derive = not state.keeps_prior
        if derive:
            self._check_beliefs_behind()
            state.beliefs_ahead = True
        for rows in stepper.blocks(state):
            if derive:
                stepper.derive_prior(state, rows)
            stepper.infer(rows, o, soft, roots=False)
        return state.qs

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)`` for the current beliefs (with the parameter information
        gain when the group learns and seeks novelty, ``LearningSpec.param_info_gain``)."""
        state, stepper = self.state, self.stepper
        if self._stepping is not None:
            self._stepping.infer_policies(state, stepper)
            return state.q_pi, state.G
        for rows in stepper.blocks(state, dense=True):
            kernels.load_roots(rows.qs, rows.blk)
            stepper.plan(rows, None, stepper.planner(rows, None))
        if self.learning is not None:
            self.learning.before_choice(state.qs, state.G, state.q_pi)
        return state.q_pi, state.G

    def sample_action(self) -> IntArray:
        """Select and commit each agent's next action ``(N, F)``; it drives the next prior."""
        state, stepper = self.state, self.stepper
        if self._stepping is not None:
            self._stepping.sample_action(state, stepper)
            return state.action
        for rows in stepper.blocks(state):
            np.copyto(rows.blk.x, rows.q_pi.T)
            stepper.act(state, rows, "propagate")
        state.beliefs_ahead = False
        return state.action

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)`` (replay, manual control); the next prior
        follows from them."""
        a = self.check_actions(actions)
        state = self.state
        state.action[...] = a
        if self._stepping is not None:  # made from the actions at the next inference
            state.has_action.fill(True)
            return
        state.has_action[...] = True
        self._propagate(a)

    def drive_prior(self, actions: np.ndarray) -> None:
        """The next prior from ``actions (N, F)`` without committing them: each agent keeps
        its own action and committed plan (replay under a planning policy, where the recorded
        action moved the world but an agent between plannings acts from its plan). Only a
        group that keeps its prior: another's follows from its own actions."""
        if not self.keeps_prior:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): its "
                "prior follows from its own actions, drive_prior needs a group that keeps it"
            )
        self._propagate(self.check_actions(actions))

    def _propagate(self, actions: IntArray) -> None:
        state, stepper = self.state, self._stepper  # the transitions: no pass learns them
        state.beliefs_ahead = False
        for rows in stepper.blocks(state):
            if state.keeps_prior:
                stepper.propagate(rows, actions[rows.sl])
            else:  # the committed actions are the group's: made at the next tick
                state.commit(rows.sl, small=False, index=rows.index)

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
        return self.cores.start(
            count,
            blocks=len(self.blocks()),
            obs_shape=(self.n_agents, self._stepper.cm.num_modalities),
            scratch_nbytes=self.scratch_nbytes(self.n_agents),
            share=self._share_state,
            step_block=self._step_index,
            stepper=self.stepper,
            after_fork=self._after_fork,
        )

    @property
    def workers_restarts(self) -> int:
        """How often the workers were forked again after one died or failed."""
        return self.cores.restarts

    def workers_rss_bytes(self) -> int:
        """What the workers hold that this process does not (their unique resident pages)."""
        return self.cores.rss_bytes()

    def stop_workers(self) -> None:
        """Back to one process (the state stays where it is; nothing is lost)."""
        self.cores.stop(for_good=True)

    def _share_state(self) -> None:
        """Move what the workers write (beliefs, priors, posteriors, actions, the committed
        plans, the staged history row) into shared memory (what is there already, allocated with
        ``shared_state``, stays where it is); the block views follow the new arrays."""
        self._shared_state = True  # a resize allocates there from now on
        self.state.share()
        if self.plans is not None:
            self.plans.share()
        if self.recorder is not None:
            self.recorder.share()

    def _after_fork(self) -> None:
        """In the caller and in each worker once the workers are forked: scratch of its own.
        The scratch allocated before the fork is shared copy-on-write, and the first writes of
        either process would copy it page by page (splitting numpy's large pages); a new
        allocation is private from the start."""
        self.stepper.new_scratch(self.state)
        self.stepper.blocks(self.state)

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
        """Restore from :meth:`state_dict`; shapes must match this group exactly.

        A :class:`~edge_agent.core.contract.StateReader` (a snapshot's arrays) has each array
        copied straight into the group's own, chunk by chunk, with no whole copy of it made."""
        reader = state if isinstance(state, StateReader) else None

        def take(name: str, out: np.ndarray) -> None:
            if name not in state:
                raise InputError(f"group {self.name!r} snapshot lacks {name!r}")
            if reader is not None:
                try:
                    reader.read_into(name, out)
                except SnapshotError as err:
                    raise InputError(f"group {self.name!r} snapshot {err}") from err
                return
            arr = np.asarray(state[name])
            if arr.shape != out.shape:
                raise InputError(
                    f"group {self.name!r} snapshot {name!r} has shape {arr.shape}, "
                    f"expected {out.shape}"
                )
            out[...] = arr

        self.state.load_state_dict(
            state,
            take,
            D=self._stepper.cm.D,
            blocks=len(self.blocks()),
            block_size=self.block_size,
            # an every-tick group's small blocks read the prior off the small-block planner
            small_from_planner=self.planning.every_tick,
            make_priors=self._priors_from_flags,
            name=self.name,
        )
        self.ticks = int(state["ticks"]) if "ticks" in state else 0
        if self.plans is not None:
            self.plans.load_state_dict(state, take)
        if self.recorder is not None:
            self.recorder.load_state_dict(state, self.name)
        if self.learning is not None:
            self._install(self.learning.load_state_dict(state, self.cm))

    def _priors_from_flags(self, reset: np.ndarray, small: np.ndarray) -> None:
        """Every block's prior made from the beliefs and actions, with a saved group's flags
        (per agent ``reset``, per block ``small``)."""
        state, stepper = self.state, self.stepper
        for rows in stepper.blocks(state):
            stepper.derive_prior(state, rows, reset[rows.sl], bool(small[rows.index]))

    # -- the group contract (edge_agent.core.contract.AgentGroup) ----------------------------------
    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None
    ) -> np.ndarray:
        """One tick's step (``outcomes`` unused: ``obs`` are the world's outcomes)."""
        del outcomes
        return self.step(obs, now)

    def io(self) -> GroupIO:
        cm = self._stepper.cm
        return GroupIO(num_obs=tuple(cm.num_obs), actions=tuple(cm.num_controls))

    def io_signature(self) -> tuple[object, ...]:
        return ("aif", self._stepper.cm.num_obs, self._stepper.cm.num_controls)

    def warm_up(self, obs: np.ndarray) -> None:
        """Step once on ``obs`` without recording, then put beliefs and actions back.

        Only the first block of agents is stepped (and its state copied and put back): the
        kernels and the model's tables are warm all the same, and a copy of every agent's state
        would double a large group's memory at start (a million grid10 agents: 850 MB). A group
        that learns is stepped whole, and what it learned put back too."""
        learning = self.learning
        if learning is None:
            state = self.state
            o, soft = self.check_evidence(obs)
            rows = self.blocks()[0]
            block = [*rows.qs, *rows.prior, rows.G, rows.q_pi, rows.action, rows.has_action]
            if not state.keeps_prior:
                block += [state.prior_reset[rows.sl], state.prior_small[:1]]
            saved = [np.array(a, copy=True) for a in block]
            self.stepper.step_block(state, rows, o, soft)
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
            for rows in self.blocks()
            for a in (*rows.qs, rows.q_pi)
        )

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_agents
        num_obs = self._stepper.cm.num_obs
        return np.stack([rng.integers(0, o, size=n) for o in num_obs], axis=1), None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.workers,
            "workers_rss_bytes": self.workers_rss_bytes(),
            "workers_restarts": self.workers_restarts,
        }
        if self.plans is not None:
            out["planning"] = self.plans.stats()  # the last tick's; docs/planning.md
        if self.learning is not None:
            out["learning"] = self.learning.describe()
        return out

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
        if self.plans is None:
            n = self.n_agents
            return {"planned": n, "deferred": 0, "duty_cycle": 1.0, "plan_age_mean": 0.0,
                    "plan_age_max": 0}
        return self.plans.stats()

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """Before a step, from the daemon (:class:`~edge_agent.core.contract.Paced`): the tick
        must end ``left_s`` seconds from now, and the previous one went on ``rest_s`` seconds
        after this group's step returned (None: not known). Only planning bounded in time reads
        it (``deadline_ms``, ``fit_tick``; see :mod:`edge_agent.core.tick_fit`)."""
        if self.plans is not None:
            self.plans.pace(left_s, rest_s)

    # -- the learning (edge_agent.core.contract.Learns; docs/learning.md) --------------------------
    @property
    def learns(self) -> bool:
        """Whether the agents learn their model (a group built with ``learning=``)."""
        return self.learning is not None

    def _learning(self) -> GroupLearning:
        if self.learning is None:
            raise InputError(f"group {self.name!r} does not learn (it was built without learning)")
        return self.learning

    @property
    def learner(self) -> Learner:
        """The counts (``learner.pA``/``pB``/``pD``) and their updates."""
        return self._learning().learner

    @property
    def learning_frozen(self) -> bool:
        """Whether the counts are frozen (:meth:`freeze_learning`; False for a group that does
        not learn)."""
        return self.learning is not None and self.learning.frozen

    @property
    def refreshes(self) -> int:
        """Refreshes of the tables from the counts so far."""
        return self._learning().refreshes

    @property
    def incremental_refreshes(self) -> int:
        """Refreshes that brought only the touched columns of ``A`` in (no compile)."""
        return self._learning().incremental_refreshes

    @property
    def columns_encoded(self) -> int:
        """int8 columns encoded by refreshes so far."""
        return self._learning().columns_encoded

    def learn(self, obs: np.ndarray) -> None:
        """Learn from this tick's outcomes ``obs (N, M)`` and the current posteriors, after
        :meth:`infer_states` (``pB``: from the transition the last committed action made; the
        API path a replay takes, where :meth:`step` does it all). Nothing is learned while
        frozen."""
        learning, state = self._learning(), self.state
        o = self.check_obs(obs)
        self._install(
            learning.after_inference(o, state.qs, self.cm, state.action, state.has_action)
        )

    def end_trial(
        self, mask: np.ndarray | None = None, *, posterior: Sequence[np.ndarray] | None = None
    ) -> None:
        """The agents in ``mask`` (all by default) finished a trial: ``pD`` learns from their
        posteriors (``posterior[f]`` rows of the selected agents instead, e.g. a trial's first),
        the tables are refreshed, and they start again from the learned ``D``."""
        learning = self._learning()
        sel = np.ones(self.n_agents, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._install(learning.end_trial(sel, self.qs, posterior, self.cm))
        self._reset_agents(self._selected(sel))

    def refresh(self) -> None:
        """The agents infer with the counts' expectation from now on (:meth:`GroupLearning.
        refresh <edge_agent.core.learning.GroupLearning.refresh>`)."""
        self._install(self._learning().refresh(self.cm))

    def freeze_learning(self) -> bool:
        """Stop updating the counts (no learning, no forgetting, no ``pD`` at a trial's end);
        the agents keep inferring and planning with the tables the counts stand for, refreshed
        now if some of what was learned was not in them yet. While frozen a tick is the plain
        group's (without the parameter information gain: nothing is learned). False if it was
        frozen already."""
        done, cm = self._learning().freeze(self.cm)
        self._install(cm)
        return done

    def resume_learning(self) -> bool:
        """Learn again from the next tick on, from the counts as they were frozen. False if
        it was not frozen."""
        return self._learning().resume()

    def reset_learning(self) -> None:
        """Forget what was learned: the counts back to their prior, the tables back to the
        model's as the group was loaded with them (:meth:`GroupLearning.forget
        <edge_agent.core.learning.GroupLearning.forget>`)."""
        self._install(self._learning().forget())

    def learning_state(self) -> dict[str, Any]:
        """``frozen``, the scope, and per kind of counts its ``version`` and ``reset_at``."""
        return self._learning().summary()

    def take_increments(self) -> list[TableIncrements]:
        """What the agents learned since the last call (:meth:`GroupLearning.take_increments
        <edge_agent.core.learning.GroupLearning.take_increments>`)."""
        return self._learning().take_increments()

    def learning_identity(self) -> bytes:
        """What the counts were learned from (:meth:`GroupLearning.identity
        <edge_agent.core.learning.GroupLearning.identity>`)."""
        return self._learning().identity()


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
