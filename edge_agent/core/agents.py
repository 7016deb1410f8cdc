"""Agent groups: every agent that shares one model, stepped as one batch.

An :class:`AifAgentGroup` owns the per-agent state (beliefs, last actions, policy posteriors and an
optional circular history) in preallocated arrays, and calls the pure kernels of
:mod:`edge_agent.aif.kernels` on the whole batch, in blocks of at most ``block_size`` agents so that
temporary arrays stay bounded (and cache-friendly) however many agents there are.

``precision="int8"`` stores the model in the ``logu8-v1`` scheme (:mod:`edge_agent.aif.quant`) and
computes in float32 from tables decoded once per model; ``precision="float64"`` computes from the
float tables in float64 and gives pymdp's numbers.

The group's parts are modules by job, each a base class of the group: its sizes
(:mod:`~edge_agent.core.group_memory`), the maths over its blocks
(:mod:`~edge_agent.core.block_maths`), a planning policy's tick
(:mod:`~edge_agent.core.planning_pass`), several cores (:mod:`~edge_agent.core.group_workers`) and
snapshots (:mod:`~edge_agent.core.group_snapshot`); what they share is in
:mod:`~edge_agent.core.group_blocks`. This module assembles them, allocates the state and steps it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy
from edge_agent.aif.policies import construct_policies, validate_policies
from edge_agent.aif.quant import QuantizedModel, quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.contract import GroupIO
from edge_agent.core.group_blocks import (
    BLOCK_SCRATCH_BYTES,
    DEFAULT_BLOCK,
    DENSE_FALLBACK_BYTES,
    HistoryBeliefs,
    IntArray,
    Precision,
    _BlockRows,
    _check_arguments,
    _compiled,
    model_key,
)
from edge_agent.core.group_snapshot import GroupSnapshot
from edge_agent.core.group_workers import GroupWorkers
from edge_agent.core.history import HistoryRing
from edge_agent.errors import InputError

#: What other modules import from here (the group's parts live in the modules above).
__all__ = [
    "BLOCK_SCRATCH_BYTES",
    "DEFAULT_BLOCK",
    "DENSE_FALLBACK_BYTES",
    "AifAgentGroup",
    "HistoryBeliefs",
    "IntArray",
    "Precision",
    "_BlockRows",
    "model_key",
]


class AifAgentGroup(GroupWorkers, GroupSnapshot):
    """``n_agents`` Active Inference agents sharing one generative model.

    Per-agent state, all ``(n_agents, ...)``:
    ``qs[f]`` posterior ``(N, S_f)``; ``prior[f]`` prior for the next observation;
    ``action`` last committed action ``(N, F)``; ``q_pi`` and ``G`` ``(N, P)``.

    ``keep_prior=False``: the prior is not kept between ticks where it follows from what is
    kept (:attr:`keeps_prior`): each block's is made again at the start of the next tick from
    the beliefs and the committed actions, as the tick that committed them made it (``D`` for
    an agent reset since), in the block's scratch: half the beliefs' bytes. ``prior`` is then
    empty; the group steps (or infers once, then acts) as before, with the same numbers.
    """

    #: Whether a group of this class may derive its prior instead of keeping it (a subclass
    #: that reads or writes ``prior`` between ticks keeps it).
    derives_prior: ClassVar[bool] = True

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
    ) -> None:
        _check_arguments(name, n_agents, precision, history_beliefs)
        #: Whether the per-agent state that workers write is allocated in shared memory from the
        #: start (``shared_state``: the caller will :meth:`start_workers`; they then move nothing,
        #: so the state never has two copies at once), as it is after start_workers anyway.
        self._shared_state = shared_state
        self.history_beliefs: HistoryBeliefs = history_beliefs
        #: When agents plan (:mod:`edge_agent.aif.planning`); ``clock``: what a planning
        #: deadline is measured with (seconds).
        self.planning = planning or EVERY_TICK
        self._clock = clock
        if not self.planning.every_tick and not type(self).steps_by_planning_policy():
            raise InputError(
                f"group {name!r}: a planning policy needs the plain Active Inference group's "
                f"step; {type(self).__name__} steps its own way (give it none)"
            )
        self.name = name
        self.settings = settings or AifSettings()
        self.precision: Precision = precision
        self.block_size = max(1, int(block_size))
        num_controls = model.num_controls
        if policies is None:
            pol = construct_policies(
                num_controls, self.settings.policy_len, self.settings.control_fac_idx
            )
        else:
            pol = validate_policies(policies, num_controls)
        if precision == "int8":
            qmodel = model if isinstance(model, QuantizedModel) else quantize_model(model)
            self.quantized: QuantizedModel | None = qmodel
            source: GenerativeModel | QuantizedModel = qmodel
            dtype: type[np.floating] = np.float32
        else:
            self.quantized = None
            source = model.dequantize() if isinstance(model, QuantizedModel) else model
            dtype = np.float64
        self.dtype = np.dtype(dtype)
        self.key = model_key(source, precision, pol)
        self._budget = budget
        self._reservations: list[Reservation] = []
        # Reserve before allocating: shared tables once per model, then per-agent state.
        self.cm = _compiled(self.key, source, pol, dtype)
        self._size_blocks()
        if -(-n_agents // self.block_size) < 2:  # one block: the caller steps it alone
            self._shared_state = False
        self._init_prior(keep_prior, n_agents)
        self._obs_limit = np.array(self.cm.num_obs, dtype=np.uint64)
        self._workspace: kernels.Workspace | None = None
        shared = self.cm.nbytes + (self.quantized.nbytes if self.quantized is not None else 0)
        self.shared_nbytes = shared
        if budget is not None:
            self._reservations.append(
                budget.reserve(f"model:{self.key}", "model", shared, shared_key=self.key)
            )
        self.history_capacity = int(history_capacity)
        self._history_fields = self._make_history_fields()
        self._agent_reservation: Reservation | None = None
        if budget is not None:
            self._agent_reservation = budget.reserve(
                name,
                "agents",
                self.bytes_for(n_agents, self.history_capacity),
                hint=f"reduce group {name!r} count or history_capacity",
            )
            self._reservations.append(self._agent_reservation)
        self._seed = seed
        self._rng = None
        st = self.settings
        self._num_iter, self._dF_tol, self._alpha = st.num_iter, st.dF_tol, st.alpha
        self._gamma = np.array(st.gamma, dtype=self.dtype)  # 0-d: cheap in tiny blocks
        self._use_utility, self._use_info_gain = st.use_utility, st.use_states_info_gain
        self._sampling_mode, self._deterministic = (
            st.sampling_mode,
            st.action_selection == "deterministic",
        )
        self._rows: list[_BlockRows] = []
        self._dense_rows: list[_BlockRows] = []
        self._workers = self._workers_reservation = self._workers_seed = None
        self._wanted_workers = 1
        self.n_agents = 0
        self._allocate(n_agents)
        self.ticks = 0

    @classmethod
    def steps_by_planning_policy(cls) -> bool:
        """Whether the class's :meth:`step` runs a planning policy's tick (a subclass that steps
        its own way does not, unless it says so)."""
        return cls.step is AifAgentGroup.step

    def _init_prior(self, keep_prior: bool, n_agents: int) -> None:
        """Whether the group keeps its prior between ticks (see the class docstring): asked
        to, or needed (:meth:`_keeps_prior_at`)."""
        if not keep_prior and not type(self).derives_prior:
            raise InputError(
                f"group {self.name!r}: {type(self).__name__} keeps its prior between ticks "
                "(keep_prior=False is for groups that do not read or write it)"
            )
        self._keep_prior_asked, self._prior_was_kept = keep_prior, False
        self.keeps_prior = self._keeps_prior_at(n_agents)
        self._beliefs_ahead = False  # infer_states ran, and no action was committed since

    def _allocate(self, n_agents: int) -> None:
        workers = self._wanted_workers
        self._stop_workers()  # they hold views of the arrays being replaced
        self._allocate_arrays(n_agents)
        if workers > 1:
            self.start_workers(workers)

    def _allocate_arrays(self, n_agents: int) -> None:
        old = self.n_agents
        keep = min(old, n_agents)
        dt = self.dtype
        keeps_prior = self._keeps_prior_at(n_agents)
        qs = [self._new((n_agents, s), dt) for s in self.cm.num_states]
        prior = [self._new((n_agents, s), dt) for s in self.cm.num_states] if keeps_prior else []
        # A group that keeps no prior: each agent's is D (reset since it last acted), else it
        # follows from its beliefs and committed action; per block, whether it comes from the
        # small-block planner's predictions (as every tick of a small block makes it).
        prior_reset = self._new(0 if keeps_prior else n_agents, bool)
        prior_small = self._new(0 if keeps_prior else -(-n_agents // self.block_size), np.uint8)
        q_pi = self._new((n_agents, self.cm.num_policies), dt)
        G = self._new((n_agents, self.cm.num_policies), dt)
        action = self._new((n_agents, self.cm.num_factors), np.int64)
        has_action = self._new(n_agents, bool)
        if keep:
            self._carry_priors(keep, prior, prior_reset, prior_small)
            for new, cur in zip(qs, self.qs, strict=True):
                new[:keep] = cur[:keep]
            q_pi[:keep] = self.q_pi[:keep]
            G[:keep] = self.G[:keep]
            action[:keep] = self.action[:keep]
            has_action[:keep] = self.has_action[:keep]
        self.qs, self.prior, self.q_pi, self.G = qs, prior, q_pi, G
        self._prior_reset, self._prior_small = prior_reset, prior_small
        self.action, self.has_action = action, has_action
        scratch_changed = keeps_prior != self.keeps_prior
        self.keeps_prior = keeps_prior
        self._prior_was_kept = keeps_prior
        self._rows.clear()
        self._dense_rows.clear()
        self.n_agents = n_agents
        capacity = min(self.block_size, n_agents)
        dense_capacity = min(self.dense_block_size, n_agents)
        ws = self._workspace
        if (
            ws is None
            or scratch_changed
            or (ws.capacity, ws.dense_capacity) != (capacity, dense_capacity)
        ):
            self._new_scratch()
        self._allocate_planning(n_agents, keep)
        if n_agents > keep:
            self.reset(np.arange(n_agents) >= keep)
        if self.history_capacity > 0:
            if old and hasattr(self, "history") and self.history is not None:
                self.history.resize_agents(n_agents)
            else:
                self.history = HistoryRing(
                    n_agents, self.history_capacity, self._history_fields, max_window=0
                )
                self._times = HistoryRing(
                    1, self.history_capacity, {"t": ((), np.dtype(np.float64))}
                )
                self._now = np.zeros(1, dtype=np.float64)
            # Rows staged in the history's own dtypes, so that append only copies.
            if self.history_beliefs == "full":
                self._qs_row = self._new((n_agents, sum(self.cm.num_states)), np.uint8)
            else:
                F = self.cm.num_factors
                self._map_row = self._new((n_agents, F), self._history_fields["qs_map"][1])
                self._p_row = self._new((n_agents, F), np.uint8)
                self._pmax = np.empty(n_agents, dtype=self.dtype)
            obs_dt, act_dt = self._history_fields["obs"][1], self._history_fields["action"][1]
            self._obs_row = np.empty((n_agents, self.cm.num_modalities), dtype=obs_dt)
            self._action_row = np.empty((n_agents, self.cm.num_factors), dtype=act_dt)
        else:
            self.history = None

    def resize(self, n_agents: int) -> None:
        """Grow or shrink the group; new agents start from ``D``. Reserves before allocating."""
        if n_agents < 1:
            raise InputError(f"group {self.name!r}: n_agents must be >= 1, got {n_agents}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(n_agents, self.history_capacity))
        self._allocate(n_agents)

    def resize_history(self, capacity: int) -> None:
        """Shrink (or grow) every agent's history, keeping the newest rows."""
        if self.history is None or capacity < 1:
            raise InputError(f"group {self.name!r} has no history to resize to {capacity}")
        if self._agent_reservation is not None:
            self._agent_reservation.resize(self.bytes_for(self.n_agents, capacity))
        self.history.resize(capacity)
        self._times.resize(capacity)
        self.history_capacity = capacity

    def release(self) -> None:
        """Give the group's reservations back to the budget (the group is no longer used)."""
        self.stop_workers()
        for r in self._reservations:
            r.release()
        self._reservations.clear()

    def step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None = None,
        *,
        record: bool = True,
    ) -> IntArray:
        """One full tick for every agent: infer states, plan, act, record history.

        ``obs``: ``(N, M)`` integer outcomes, or soft evidence (see :meth:`check_evidence`; the
        history then records each modality's most probable outcome). ``record=False`` leaves the
        history untouched (warm-up). Returns the committed actions ``(N, F)`` (a view of the
        group's action array).
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
        return self._step_checked(o, soft, now, record, who_plans)

    def _step_checked(
        self,
        o: IntArray | None,
        soft: list[np.ndarray] | None,
        now: float | None,
        record: bool,
        who_plans: NDArray[np.bool_] | None,
    ) -> IntArray:
        """:meth:`_step` of evidence :meth:`check_evidence` has checked already."""
        if not self.keeps_prior:
            self._check_beliefs_behind()
        record = record and self.history is not None
        every_tick = self.planning.every_tick
        if not every_tick:
            self._step_planning(o, soft, record, who_plans)
        elif self._workers is not None and o is not None:
            self._workers.step(o, record, self.ticks)
        else:
            for i, rows in enumerate(self._blocks()):
                if self._workers_seed is not None:  # the streams the workers would draw from
                    self._rng = np.random.default_rng((self._workers_seed, i, self.ticks))
                self._step_rows(rows, o, soft, record)
        if record:
            if o is None:
                assert soft is not None
                # Soft evidence: each modality's most probable outcome, into the staged row.
                for rows in self._blocks():
                    index = rows.blk.ibuf  # free between the kernels
                    for m, p in enumerate(soft):
                        np.argmax(p[rows.sl], axis=1, out=index)
                        np.copyto(self._obs_row[rows.sl, m], index, casting="unsafe")
                o = self._obs_row
            self._record(o, now)
        if not every_tick:
            self._stepped()
        self.ticks += 1
        return self.action

    def _record(self, obs: IntArray, now: float | None) -> None:
        assert self.history is not None  # step() checked
        # obs were range-checked and actions come from the model: the casts cannot overflow.
        np.copyto(self._obs_row, obs, casting="unsafe")
        np.copyto(self._action_row, self.action, casting="unsafe")
        if self.history_beliefs == "full":
            self.history.append(obs=self._obs_row, action=self._action_row, qs=self._qs_row)
        else:
            self.history.append(
                obs=self._obs_row, action=self._action_row, qs_map=self._map_row, qs_p=self._p_row
            )
        self._now[0] = np.nan if now is None else now
        self._times.append(t=self._now)

    # -- the group contract (edge_agent.core.contract.AgentGroup) --------------------------------
    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None
    ) -> np.ndarray:
        """One tick's step (``outcomes`` unused: ``obs`` are the world's outcomes)."""
        del outcomes
        return self.step(obs, now)

    def io(self) -> GroupIO:
        return GroupIO(num_obs=tuple(self.cm.num_obs), actions=tuple(self.cm.num_controls))

    def io_signature(self) -> tuple[object, ...]:
        return ("aif", self.cm.num_obs, self.cm.num_controls)

    def warm_up(self, obs: np.ndarray) -> None:
        """Step once on ``obs`` without recording, then put beliefs and actions back.

        Only the first block of agents is stepped (and its state copied and put back): the
        kernels and the model's tables are warm all the same, and a copy of every agent's state
        would double a large group's memory at start (a million grid10 agents: 850 MB). A
        subclass that steps its own way is stepped whole."""
        if type(self).step is AifAgentGroup.step:
            o, soft = self.check_evidence(obs)
            rows = self._blocks()[0]
            block = [*rows.qs, *rows.prior, rows.G, rows.q_pi, rows.action, rows.has_action]
            if not self.keeps_prior:
                block += [self._prior_reset[rows.sl], self._prior_small[:1]]
            saved = [np.array(a, copy=True) for a in block]
            self._step_rows(rows, o, soft, record=False)
            for a, v in zip(block, saved, strict=True):
                np.copyto(a, v)
            return
        state = {
            k: np.array(v, copy=True)
            for k, v in self.state_dict().items()
            if not k.startswith(("history.", "times."))
        }
        self.step(obs, record=False)
        self.load_state_dict(state)

    def finite(self) -> bool:
        """Whether every posterior and policy posterior is finite (block by block: no
        temporary the size of the group)."""
        return all(
            bool(np.isfinite(a).all())
            for rows in self._blocks()
            for a in (*rows.qs, rows.q_pi)
        )

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.n_agents
        return np.stack([rng.integers(0, o, size=n) for o in self.cm.num_obs], axis=1), None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.workers,
            "workers_rss_bytes": self.workers_rss_bytes(),
            "workers_restarts": self.workers_restarts,
        }
        if not self.planning.every_tick:
            out["planning"] = self.planning_stats()  # the last tick's; docs/planning.md
        return out

    def metrics(self) -> dict[str, object]:
        """The planning policy's numbers of the last tick, when agents do not plan every tick
        (docs/planning.md)."""
        if self.planning.every_tick:
            return {}
        stats = self.planning_stats()
        return {
            "planning_duty_cycle": stats["duty_cycle"],
            "planning_deferred": stats["deferred"],
            "plan_age_mean": stats["plan_age_mean"],
        }
