"""Agent groups: every agent that shares one model, stepped as one batch.

An :class:`AifAgentGroup` owns the per-agent state (beliefs, last actions, policy posteriors and an
optional circular history) in preallocated arrays, and calls the pure kernels of
:mod:`edge_agent.aif.kernels` on the whole batch, in blocks of at most ``block_size`` agents so that
temporary arrays stay bounded (and cache-friendly) however many agents there are.

``precision="int8"`` stores the model in the ``logu8-v1`` scheme (:mod:`edge_agent.aif.quant`) and
computes in float32 from tables decoded once per model; ``precision="float64"`` computes from the
float tables in float64 and gives pymdp's numbers.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy, must_plan, planning_order
from edge_agent.aif.policies import construct_policies, validate_policies
from edge_agent.aif.quant import QuantizedModel, encode_beliefs_u8, quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.contract import GroupIO, StateReader, state_under
from edge_agent.core.history import HistoryRing
from edge_agent.core.priors import (
    make_block_prior,
    prior_follows,
    resets_of_kept_priors,
    saved_small_flags,
)
from edge_agent.errors import InputError, SnapshotError

if TYPE_CHECKING:
    from edge_agent.core.workers import BlockWorkers

Precision = Literal["int8", "float64"]
#: What a history row records of the beliefs: every state's probability (uint8 codes), or per
#: factor the most probable state and its probability ("map": 2-3 bytes instead of sum S_f).
HistoryBeliefs = Literal["full", "map"]

logger = logging.getLogger(__name__)
IntArray = NDArray[np.int64]

#: Agents per kernel call at most; bounds temporary memory to ``block_size * per-agent scratch``
#: (and ``BLOCK_SCRATCH_BYTES`` below bounds it first for all but the smallest models). A tick of
#: a tiny model (T-maze: 8 joint states, ~1 KB of scratch per agent) is mostly the fixed cost of
#: each numpy call, paid once per block: 2,048 agents a block ran the T-maze 1.3-1.7x faster than
#: 512 at N = 1,000 and 10,000 (benchmarks/RESULTS.md, issue 33 item 6).
DEFAULT_BLOCK = 2048
#: A block's scratch is kept below this many bytes (fewer agents per block for big policy trees):
#: large enough that per-call overhead is amortised, small enough to stay in a Pi's L2/L3 cache.
BLOCK_SCRATCH_BYTES = 8 << 20
#: With a local planner the dense evaluation only serves a few agents per tick (and
#: ``infer_policies`` without an observation): its scratch is kept to this.
DENSE_FALLBACK_BYTES = 1 << 20


def model_key(model: GenerativeModel | QuantizedModel, precision: str, policies: np.ndarray) -> str:
    """A stable identity for shared tables: same model + precision + policies -> same key."""
    h = hashlib.sha256(precision.encode())
    arrays = model.to_arrays() if isinstance(model, QuantizedModel) else model.to_npz_dict()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(np.ascontiguousarray(policies).tobytes())
    return h.hexdigest()[:16]


@dataclass(eq=False)
class _BlockRows:
    """One block of a group: its agents, its scratch views, and views of the group's rows
    (``prior``: of the process's scratch when the group keeps no prior between ticks);
    ``index``: the block's (-1: agents gathered from several blocks)."""

    sl: slice
    blk: kernels.Block
    qs: list[np.ndarray]
    prior: list[np.ndarray]
    G: np.ndarray
    q_pi: np.ndarray
    action: np.ndarray
    has_action: np.ndarray
    index: int = -1


#: A planning policy's per-agent state that snapshots carry: the committed plans.
_PLAN_ARRAYS = ("plan_policy", "plan_left", "plan_age", "deferred")
#: The passes of a tick under a planning policy (see AifAgentGroup._step_planning).
_INFER, _PLAN, _PROPAGATE = 0, 1, 2
#: What a planning tick's workers write, or read from the caller after the fork: in shared
#: memory with the group's state (see AifAgentGroup._share_state).
_PLAN_SHARED = (
    "plan_policy", "plan_left", "plan_age", "_change", "_evidence", "_candidates",
    "_plan_pass", "_plan_limit", "_plan_deadline", "_chunk_done",
)

#: Compiled tables by model key. Weak: a model's tables live as long as a group uses them, and
#: every group on the same model (and the daemon's admission probe) shares one copy, which is
#: what the budget counts once per model.
_COMPILED: weakref.WeakValueDictionary[str, kernels.CompiledModel] = weakref.WeakValueDictionary()


def _compiled(
    key: str,
    model: GenerativeModel | QuantizedModel,
    policies: np.ndarray,
    dtype: type[np.floating],
) -> kernels.CompiledModel:
    cm = _COMPILED.get(key)
    if cm is None:
        cm = kernels.compile_model(model, policies, dtype=dtype)
        _COMPILED[key] = cm
    return cm


def _small_uint(limit: int) -> type[np.unsignedinteger]:
    return np.uint8 if limit <= 256 else np.uint16


def _index_dtype(n: int) -> type[np.signedinteger]:
    """Agent indices: int32 for fewer than 2**31 agents."""
    return np.int32 if n < 2**31 else np.int64


def _check_arguments(name: str, n_agents: int, precision: str, history_beliefs: str) -> None:
    if n_agents < 1:
        raise InputError(f"group {name!r}: n_agents must be >= 1, got {n_agents}")
    if precision not in ("int8", "float64"):
        raise InputError(f"precision must be 'int8' or 'float64', got {precision!r}")
    if history_beliefs not in ("full", "map"):
        raise InputError(f"history_beliefs must be 'full' or 'map', got {history_beliefs!r}")


class AifAgentGroup:
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

    qs: list[np.ndarray]
    prior: list[np.ndarray]
    q_pi: np.ndarray
    G: np.ndarray
    action: IntArray
    has_action: NDArray[np.bool_]
    history: HistoryRing | None
    _times: HistoryRing
    _now: np.ndarray
    _qs_row: NDArray[np.uint8]
    _map_row: np.ndarray
    _p_row: NDArray[np.uint8]
    _pmax: np.ndarray
    _obs_row: np.ndarray
    _action_row: np.ndarray
    # Several cores (start_workers): the workers, their scratch's reservation, per-block streams.
    _workers: BlockWorkers | None
    _workers_reservation: Reservation | None
    _workers_seed: int | None
    _deep_scratch: kernels.DeepScratch | None
    _scratch_deep: int
    _scratch_deep_dense: int
    deep_dense_block_size: int

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
        self._rng: np.random.Generator | None = None
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

    # -- memory ------------------------------------------------------------------------------
    def _make_history_fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The history ring's fields: outcomes, actions and the beliefs in ``history_beliefs``."""
        cm = self.cm
        fields: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "obs": ((cm.num_modalities,), np.dtype(_small_uint(max(cm.num_obs)))),
            "action": ((cm.num_factors,), np.dtype(_small_uint(max(cm.num_controls)))),
        }
        if self.history_beliefs == "full":
            fields["qs"] = ((sum(cm.num_states),), np.dtype(np.uint8))
        else:  # per factor: the most probable state, and its probability as round(p * 255)
            fields["qs_map"] = ((cm.num_factors,), np.dtype(_small_uint(max(cm.num_states))))
            fields["qs_p"] = ((cm.num_factors,), np.dtype(np.uint8))
        return fields

    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """Exact bytes of one agent's state, history included (of a group of ``n_agents``:
        whether it keeps its prior depends on its blocks; this group's by default)."""
        return sum(self.nbytes_by_part(history_capacity, n_agents).values())

    def nbytes_by_part(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> dict[str, int]:
        """:meth:`per_agent_nbytes` by part: ``beliefs`` (``qs``, and ``prior`` or the flag
        that says it is ``D``), ``policy`` (``q_pi`` and ``G``), ``actions`` (and the flag),
        ``history`` (the ring's rows), ``history_staging`` (the row staged for the next
        append), ``planning`` (a planning policy's arrays)."""
        cap = self.history_capacity if history_capacity is None else history_capacity
        n = self.n_agents if n_agents is None else n_agents
        item = self.dtype.itemsize
        P = self.cm.num_policies
        beliefs = sum(self.cm.num_states) * item  # qs
        beliefs += beliefs if self._keeps_prior_at(n) else 1  # prior, or its flag
        parts = {
            "beliefs": beliefs,
            "policy": 2 * P * item,  # q_pi + G
            "actions": self.cm.num_factors * 8 + 1,  # action + has_action
            "history": 0,
            "history_staging": 0,
        }
        if cap > 0:
            # Timestamps are per tick and shared by the group: counted in bytes_for.
            parts["history"] = HistoryRing.bytes_needed(1, cap, self._history_fields, max_window=0)
            # Rows staged for append: beliefs, outcomes and actions in the fields' dtypes
            # (what encodes them is the block's kernel scratch).
            fields = self._history_fields
            staging = 0
            if self.history_beliefs == "full":
                staging += sum(self.cm.num_states)
            else:  # index and code per factor, and the float maximum of the block's beliefs
                F = self.cm.num_factors
                staging += F * (fields["qs_map"][1].itemsize + 1) + self.dtype.itemsize
            staging += self.cm.num_modalities * fields["obs"][1].itemsize
            staging += self.cm.num_factors * fields["action"][1].itemsize
            parts["history_staging"] = staging
        parts["planning"] = self._planning_nbytes_per_agent(n)
        return parts

    def _planning_nbytes_per_agent(self, n_agents: int) -> int:
        """A planning policy's per-agent arrays (see :meth:`_allocate_planning`): committed
        policy, steps left, age (int32 each), deferred, must-plan, planned, a flag scratch
        (bool), the evidence of this tick's inference, candidates and the agents' indices
        (int32, int64 from 2**31 agents); the belief change when the policy reads it (and its
        sort scratch, with a budget), a budget's order keys and index scratch (int64, also for
        plans of several steps, with the plan's next action: int64 per factor)."""
        if self.planning.every_tick:
            return 0
        sizes = self._planning_sizes(1)
        index = np.dtype(_index_dtype(n_agents)).itemsize
        item = self.dtype.itemsize
        return (
            3 * 4 + 4 + item + 2 * index
            + item * (sizes["change"] + sizes["order"])
            + 2 * 8 * sizes["keys"]
            + 8 * self.cm.num_factors * sizes["follow"]
        )

    def _planning_sizes(self, n_agents: int) -> dict[str, int]:
        """Lengths of the planning arrays a policy may not read: ``n_agents`` or 0."""
        policy, several = self.planning, self.cm.tree.policies.shape[1] > 1
        return {
            "change": n_agents if policy.belief_change is not None or policy.budgeted else 0,
            "order": n_agents if policy.budgeted else 0,
            "keys": n_agents if policy.budgeted or several else 0,
            "follow": n_agents if several else 0,
        }

    def _size_blocks(self) -> None:
        """Block sizes from the scratch one agent of a block needs: at most
        ``BLOCK_SCRATCH_BYTES`` a block. A planner that hands only some agents to the dense
        evaluation (local, deep) keeps the dense scratch for at most ``DENSE_FALLBACK_BYTES``."""
        info_gain = self.settings.use_states_info_gain
        per = kernels.Workspace.bytes_per_agent(self.cm, info_gain=info_gain)
        common, dense, self._scratch_small = per["all"], per["dense"], per["small"]
        self._scratch_common, self._scratch_dense = common, dense
        deep = self.cm.deep
        self._scratch_deep, self._scratch_deep_dense = (
            (0, 0)
            if deep is None
            else kernels.deep_bytes_per_agent(self.cm, deep, info_gain=info_gain)
        )
        if self.cm.local is None and deep is None:
            block = dense_block = BLOCK_SCRATCH_BYTES // (common + dense)
        else:
            # The deep planner's dense form counts as if every agent had it: not what is
            # allocated (see below), but blocks that size are the fast ones (grid10 policy
            # length 2: 150-225 agents; 334 and 512 measured 2x slower, the local form's
            # arrays no longer in cache).
            per_agent = common + self._scratch_deep + self._scratch_deep_dense
            block = BLOCK_SCRATCH_BYTES // per_agent
            dense_block = DENSE_FALLBACK_BYTES // dense
        self.block_size = max(1, min(self.block_size, block))
        self.dense_block_size = max(1, min(self.block_size, dense_block))
        # The deep planner's dense form (blocks without an observation), like the dense tree.
        deep_dense = DENSE_FALLBACK_BYTES // max(1, self._scratch_deep_dense)
        self.deep_dense_block_size = max(1, min(self.block_size, deep_dense))

    def scratch_nbytes_per_agent(self) -> int:
        """Kernel scratch per agent of a full block (an upper bound; see :meth:`scratch_nbytes`)."""
        return (
            self._scratch_common
            + self._scratch_dense
            + self._scratch_small
            + self._scratch_deep
            + self._scratch_deep_dense
        )

    def _gather_nbytes_per_agent(self) -> int:
        """A planning policy's gather buffers, per agent of a block: beliefs, priors, ``G`` and
        ``q_pi``, actions, outcomes, best policies, and the belief change's scratch."""
        if self.planning.every_tick:
            return 0
        cm, item = self.cm, self.dtype.itemsize
        beliefs = (2 * sum(cm.num_states) + 2 * cm.num_policies + max(cm.num_states) + 1) * item
        return beliefs + cm.num_modalities * 8 + cm.num_factors * 8 + 1 + 8

    def scratch_nbytes(self, n_agents: int) -> int:
        """Kernel scratch bytes for a group of ``n_agents`` (preallocated once, see Workspace;
        a group that keeps no prior makes each block's there)."""
        prior = 0 if self._keeps_prior_at(n_agents) else sum(self.cm.num_states)
        return (
            min(self.block_size, n_agents)
            * (self._gather_nbytes_per_agent() + prior * self.dtype.itemsize)
            + min(self.block_size, n_agents) * (self._scratch_common + self._scratch_deep)
            + min(self.dense_block_size, n_agents) * self._scratch_dense
            + min(self.block_size, n_agents, kernels.SMALL_BLOCK) * self._scratch_small
            + min(self.deep_dense_block_size, n_agents) * self._scratch_deep_dense
        )

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch."""
        times = 8 * history_capacity
        scratch = self.scratch_nbytes(n_agents)
        return n_agents * self.per_agent_nbytes(history_capacity, n_agents) + times + scratch

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

    def _keeps_prior_at(self, n_agents: int) -> bool:
        """Whether a group of ``n_agents`` keeps its prior between ticks: asked to, kept it
        already (it keeps it: a kept prior may differ from a made one by rounding), or some of
        its blocks' priors do not follow from what is kept (:meth:`_prior_follows`)."""
        return (
            self._keep_prior_asked
            or self._prior_was_kept
            or not self._prior_follows(max(1, n_agents))
        )

    def _prior_follows(self, n_agents: int) -> bool:
        """:func:`~edge_agent.core.priors.prior_follows` for this group's model, policy and
        blocks."""
        return prior_follows(
            self.cm,
            every_tick=self.planning.every_tick,
            block_size=self.block_size,
            dense_block_size=self.dense_block_size,
            n_agents=n_agents,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of per-agent arrays currently allocated (not the shared model, not scratch)."""
        arrays = [*self.qs, *self.prior, self.q_pi, self.G, self.action, self.has_action]
        if not self.keeps_prior:
            arrays.append(self._prior_reset)
        total = sum(a.nbytes for a in arrays)
        if self.history is not None:
            total += self.history.nbytes + self._times.nbytes
            total += self._obs_row.nbytes + self._action_row.nbytes
            if self.history_beliefs == "full":
                total += self._qs_row.nbytes
            else:
                total += self._map_row.nbytes + self._p_row.nbytes + self._pmax.nbytes
        return int(total)

    def _allocate(self, n_agents: int) -> None:
        workers = self._wanted_workers
        self._stop_workers()  # they hold views of the arrays being replaced
        self._allocate_arrays(n_agents)
        if workers > 1:
            self.start_workers(workers)

    def _new(self, shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """A zero-filled array of per-agent state that workers write: in shared memory when the
        group is (or will be) stepped by workers, so that starting them copies nothing."""
        if not self._shared_state:
            return np.zeros(shape, dtype=dtype)
        from edge_agent.core.workers import shared_empty  # noqa: PLC0415 - multi-core groups only

        return shared_empty(shape, dtype)

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

    def _allocate_planning(self, n_agents: int, keep: int) -> None:
        """A planning policy's per-agent state (committed plans) and its preallocated index,
        key and gather buffers; nothing with the every-tick policy."""
        if self.planning.every_tick:
            return
        cm, dt = self.cm, self.dtype
        old = {
            k: getattr(self, k)
            for k in ("plan_policy", "plan_left", "plan_age", "deferred")
            if keep and hasattr(self, k)
        }
        self.plan_policy = self._new(n_agents, np.int32)  # committed policy (index)
        self.plan_left = self._new(n_agents, np.int32)  # its steps still to take
        self.plan_age = self._new(n_agents, np.int32)  # ticks since the agent planned
        self.deferred = np.zeros(n_agents, dtype=bool)  # put off by the budget
        for k, v in old.items():
            getattr(self, k)[:keep] = v[:keep]
        # What a policy does not read is not allocated (empty): the belief change (a policy
        # on it, or a budget's order), the order's keys, plans of several steps to follow.
        sizes = self._planning_sizes(n_agents)
        self._change = self._new(sizes["change"], dt)
        self._evidence = self._new(n_agents, dt)
        self._evidence.fill(1.0)
        self._must = np.empty(n_agents, dtype=bool)
        self._planned = np.empty(n_agents, dtype=bool)
        self._flag = np.empty(n_agents, dtype=bool)
        index = _index_dtype(n_agents)  # agent indices: int32 below 2**31 agents
        self._candidates = self._new(n_agents, index)
        self._arange = np.arange(n_agents, dtype=index)
        self._keys = np.empty(sizes["keys"], dtype=np.int64)
        self._index_scratch = np.empty(sizes["keys"], dtype=np.int64)
        self._change_scratch = np.empty(sizes["order"], dtype=dt)
        self._plan_action = np.empty((sizes["follow"], cm.num_factors), dtype=np.int64)
        # Policies as (P * L, F): the action of policy p at step t is row p * L + t.
        L = cm.tree.policies.shape[1]
        self._policy_steps = np.ascontiguousarray(cm.tree.policies.reshape(-1, cm.num_factors))
        self._policy_len = L
        nb = min(self.block_size, n_agents)
        # a block's belief change and the gathered agents' best policies
        self._diff = np.empty((nb, max(cm.num_states)), dtype=dt)
        self._column = np.empty(nb, dtype=dt)
        self._best = np.empty(nb, dtype=np.int64)
        self._gather = _BlockRows(  # its blk is taken from the workspace at each use
            sl=slice(0, nb),
            blk=self._workspace_block(nb),
            qs=[np.empty((nb, s), dtype=dt) for s in cm.num_states],
            prior=[np.empty((nb, s), dtype=dt) for s in cm.num_states],
            G=np.zeros((nb, cm.num_policies), dtype=dt),
            q_pi=np.empty((nb, cm.num_policies), dtype=dt),
            action=np.zeros((nb, cm.num_factors), dtype=np.int64),
            has_action=np.zeros(nb, dtype=bool),
        )
        self._gather_obs = np.zeros((nb, cm.num_modalities), dtype=np.int64)
        self.planning_counts = {"planned": 0, "deferred": 0, "agents": n_agents}
        self._plan_pass = self._new(1, np.int64)
        self._plan_limit = self._new(1, np.int64)
        self._plan_deadline = self._new(1, np.float64)
        self._chunk_done = self._new(-(-n_agents // nb), np.uint8)

    def _workspace_block(self, nb: int) -> kernels.Block:
        assert self._workspace is not None  # allocated with the agents
        return self._workspace.block(nb)

    def _new_scratch(self) -> None:
        """Allocate the kernel scratch for blocks of this group (the old one released first);
        the block views are rebuilt on it when next needed."""
        self._workspace = None
        self._deep_scratch = None
        capacity = min(self.block_size, self.n_agents)
        # The prior of the block being stepped, when the group keeps none; its agents reset
        # (also when a group that keeps its prior makes it from a snapshot that kept none).
        self._reset_rows = np.empty(capacity + 1, dtype=np.intp)
        self._prior_scratch = [
            np.empty((0 if self.keeps_prior else capacity, s), dtype=self.dtype)
            for s in self.cm.num_states
        ]
        info_gain = self.settings.use_states_info_gain
        self._workspace = kernels.Workspace(
            self.cm,
            capacity,
            info_gain=info_gain,
            dense_capacity=min(self.dense_block_size, self.n_agents),
        )
        if self.cm.deep is not None:
            self._deep_scratch = kernels.DeepScratch(
                self.cm,
                self.cm.deep,
                capacity,
                info_gain=info_gain,
                dense_capacity=min(self.deep_dense_block_size, capacity),
            )
        self._rows.clear()
        self._dense_rows.clear()

    def _after_fork(self) -> None:
        """In the caller and in each worker once the workers are forked: scratch of its own.
        The scratch allocated before the fork is shared copy-on-write, and the first writes of
        either process would copy it page by page (splitting numpy's large pages); a new
        allocation is private from the start."""
        self._new_scratch()
        self._blocks()

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

    # -- the maths, batched ---------------------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start a new trial for the agents in ``mask`` (all by default): prior back to ``D``."""
        sel: slice | np.ndarray = slice(None)
        if mask is not None:
            sel = np.asarray(mask, dtype=bool)
            if sel.all():  # every agent (trials in step): slices, not boolean gathers
                sel = slice(None)
        for f, d in enumerate(self.cm.D):
            if self.keeps_prior:
                self.prior[f][sel] = d
            self.qs[f][sel] = d
        if not self.keeps_prior:
            self._prior_reset[sel] = True
        self.has_action[sel] = False
        self.q_pi[sel] = 1.0 / self.cm.num_policies
        self.G[sel] = 0.0
        if not self.planning.every_tick:  # a new trial: plan at its first tick
            self.plan_left[sel] = 0
            self.plan_age[sel] = 0

    def check_obs(self, obs: np.ndarray) -> IntArray:
        """Validate ``obs (N, M)`` integer outcomes; raise InputError naming what is wrong."""
        arr = np.asarray(obs)
        expected = (self.n_agents, self.cm.num_modalities)
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        o = np.ascontiguousarray(arr, dtype=np.int64)
        if self.n_agents == 1:  # one agent: plain Python beats numpy calls (loop over modalities)
            ok = all(
                0 <= v < limit for v, limit in zip(o[0].tolist(), self.cm.num_obs, strict=True)
            )
        else:  # one pass over the batch: negative outcomes wrap to huge unsigned values
            ok = bool(np.less(o.view(np.uint64), self._obs_limit).all())
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
            M = self.cm.num_modalities
            if len(obs) != M:
                raise InputError(f"soft evidence has {len(obs)} modalities, expected {M}")
            soft = []
            for m, (p, o) in enumerate(zip(obs, self.cm.num_obs, strict=True)):
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
        return self.check_obs(np.asarray(obs)), None

    def _raise_out_of_range(self, obs: IntArray) -> None:
        for m, o in enumerate(self.cm.num_obs):
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
        expected = (self.n_agents, self.cm.num_factors)
        if arr.shape != expected:
            raise InputError(f"actions has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        for f, u in enumerate(self.cm.num_controls):
            col = arr[:, f]
            if col.min() < 0 or col.max() >= u:
                raise InputError(f"actions on factor {f} must be in [0, {u}), got {int(col.max())}")
        return arr.astype(np.int64, copy=False)

    def _blocks(self, dense: bool = False) -> list[_BlockRows]:
        """The group cut into blocks of ``block_size`` agents (``dense_block_size`` if ``dense``).

        Cached until the arrays are reallocated: a tick slices nothing.
        """
        cached = self._dense_rows if dense else self._rows
        if cached:
            return cached
        assert self._workspace is not None  # allocated with the agents
        step = self.dense_block_size if dense else self.block_size
        for index, start in enumerate(range(0, self.n_agents, step)):
            nb = min(step, self.n_agents - start)
            sl = slice(start, start + nb)
            cached.append(
                _BlockRows(
                    sl=sl,
                    blk=self._workspace.block(nb),
                    qs=[q[sl] for q in self.qs],
                    prior=(
                        [p[sl] for p in self.prior]
                        if self.keeps_prior
                        else [p[:nb] for p in self._prior_scratch]
                    ),
                    G=self.G[sl],
                    q_pi=self.q_pi[sl],
                    action=self.action[sl],
                    has_action=self.has_action[sl],
                    index=-1 if dense else index,
                )
            )
        return cached

    # -- the prior of a group that keeps none (keep_prior=False) --------------------------------
    def _derive_prior(
        self, rows: _BlockRows, reset: np.ndarray | None = None, small: bool | None = None
    ) -> None:
        """The block's prior for this tick's inference, into ``rows.prior`` (its scratch):
        what the tick that committed its actions would have kept (see :meth:`_prior_committed`;
        ``reset`` and ``small``: the group's flags of the block, by default)."""
        make_block_prior(
            self.cm, rows.qs, rows.action, rows.prior, rows.blk,
            reset=self._prior_reset[rows.sl] if reset is None else reset,
            small=bool(self._prior_small[rows.index]) if small is None else small,
            rows=self._reset_rows[: rows.blk.nb + 1],
        )

    def _prior_committed(self, rows: _BlockRows, *, small: bool) -> None:
        """The block's agents committed actions: their next prior follows from their beliefs
        and actions (through the small-block planner's predictions if ``small``)."""
        self._prior_reset[rows.sl] = False
        self._prior_small[rows.index] = small

    def _carry_priors(
        self, keep: int, prior: list[np.ndarray], reset: np.ndarray, small: np.ndarray
    ) -> None:
        """The first ``keep`` agents' priors (or what they follow from) into the arrays of a
        resized group: ``prior`` when it keeps them (made, if this group did not), else
        ``reset`` and ``small``."""
        if prior and not self.keeps_prior:  # kept from now on: made for the agents kept
            self._make_priors(prior, keep)
        elif prior:
            for new, cur in zip(prior, self.prior, strict=True):
                new[:keep] = cur[:keep]
        else:
            reset[:keep] = self._prior_reset[:keep]
            # Whole blocks keep where their priors come from; a last block that grows
            # propagates them (equal to the small-block product to rounding).
            whole = keep // self.block_size
            small[:whole] = self._prior_small[:whole]

    def _make_priors(self, out: list[np.ndarray], n: int) -> None:
        """The priors of the first ``n`` agents, made (the group keeps none) into ``out``."""
        for rows in self._blocks():
            if rows.sl.start >= n:
                break
            self._derive_prior(rows)
            stop = min(rows.sl.stop, n)
            for o, p in zip(out, rows.prior, strict=True):
                o[rows.sl.start : stop] = p[: stop - rows.sl.start]

    def _check_beliefs_behind(self) -> None:
        """A group that keeps no prior makes it from its beliefs: refuse to infer twice without
        an action committed between (the second inference would start from the first's)."""
        if self._beliefs_ahead:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): commit "
                "actions (sample_action, set_action) before inferring again"
            )

    def infer_states(self, obs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Update every agent's posterior from ``obs (N, M)`` (or soft evidence, see
        :meth:`check_evidence`); returns ``qs`` (views)."""
        o, soft = self.check_evidence(obs)
        derive = not self.keeps_prior
        if derive:
            self._check_beliefs_behind()
            self._beliefs_ahead = True
        for rows in self._blocks():
            if derive:
                self._derive_prior(rows)
            self._infer_block(o, soft, rows, roots=False)
        return self.qs

    def _infer_block(
        self,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        rows: _BlockRows,
        *,
        roots: bool,
    ) -> None:
        sl = rows.sl
        kernels.infer_block(
            self.cm,
            None if obs is None else obs[sl],
            rows.prior,
            rows.qs,
            rows.blk,
            num_iter=self._num_iter,
            dF_tol=self._dF_tol,
            roots=roots,
            soft=None if soft is None else [p[sl] for p in soft],
        )

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)`` for the current beliefs."""
        for rows in self._blocks(dense=True):
            kernels.load_roots(rows.qs, rows.blk)
            self._plan_block(rows, None, self._planner(rows, None))
        return self.q_pi, self.G

    def _planner(self, rows: _BlockRows, obs: IntArray | None) -> str:
        """Which evaluation a block gets: ``"joint"`` (a whole tick on the joint small-block
        path, see :meth:`_joint_block`), ``"small"``, ``"deep"`` (policies of two or more steps
        under deterministic transitions), ``"local"``, ``"tree"`` (dense) or ``"chunks"`` (dense
        in sub-blocks: a block larger than the dense scratch, as with a local planner and soft
        evidence)."""
        if obs is not None and rows.blk.joint_small is not None:
            return "joint"
        if rows.blk.small and self.cm.small is not None:
            return "small"
        if self.cm.deep is not None:
            return "deep"
        if obs is not None and self.cm.local is not None:
            return "local"
        return "tree" if rows.blk.dense else "chunks"

    def _plan_block(self, rows: _BlockRows, obs: IntArray | None, planner: str) -> None:
        """``G`` and ``q_pi`` of the block (``q_pi`` also left in ``blk.x``, state-major).

        ``obs``: the observation :meth:`_infer_block` just used (the local planner needs it);
        ``planner``: from :meth:`_planner`.
        """
        cm, blk, G = self.cm, rows.blk, rows.G
        if planner == "deep":
            assert cm.deep is not None
            assert self._deep_scratch is not None
            refused = kernels.evaluate_deep_rows(
                cm,
                cm.deep,
                rows.qs[0],
                self._deep_scratch,
                G,
                obs=None if obs is None else obs[:, 0],
                evidence=None if obs is None else blk.evidence,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
            if len(refused):
                self._plan_agents_densely(rows, refused)
        elif planner == "small":
            kernels.evaluate_small_block(
                cm,
                rows.qs[0],
                blk,
                G,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
        elif planner == "local":
            assert obs is not None
            dense = kernels.evaluate_local_block(
                cm,
                obs[:, 0],
                rows.qs[0],
                blk,
                G,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
            if len(dense):
                self._plan_agents_densely(rows, dense)
        elif planner == "chunks":  # larger than the dense scratch: plan it in sub-blocks
            self._plan_agents_densely(rows, np.arange(blk.nb))
        else:
            kernels.evaluate_block(
                cm,
                blk,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
                gamma=self._gamma,
            )
            np.copyto(G, blk.G.T)
            np.copyto(rows.q_pi, blk.x.T)
            return
        kernels.policy_posterior_block(cm, G, blk, self._gamma)
        np.copyto(rows.q_pi, blk.x.T)

    def _joint_block(self, rows: _BlockRows, obs: IntArray) -> None:
        """A whole tick of a small block of a multi-factor model on the joint small-block path:
        infer, plan, act and the next prior (same results as the other paths, to rounding)."""
        cm, blk = self.cm, rows.blk
        plan, sc = cm.joint, blk.joint_small
        assert plan is not None  # the model has joint tables: _planner checked
        assert sc is not None
        kernels.infer_joint(
            plan, obs, rows.prior, rows.qs, sc, num_iter=self._num_iter, dF_tol=self._dF_tol
        )
        kernels.evaluate_joint(
            plan, sc, rows.G, use_utility=self._use_utility, use_info_gain=self._use_info_gain
        )
        kernels.posterior_joint(plan, rows.G, rows.q_pi, sc, self._gamma)
        if self._deterministic and self._sampling_mode == "marginal":
            kernels.select_joint(plan, rows.q_pi, sc, rows.action)
        else:
            np.copyto(blk.x, rows.q_pi.T)
            kernels.select_block(
                cm,
                blk.x,
                blk,
                rows.action,
                mode=self._sampling_mode,
                deterministic=self._deterministic,
                alpha=self._alpha,
                rng=self.selection_rng(),
            )
        rows.has_action.fill(True)
        kernels.prior_joint(plan, sc, rows.action, rows.prior)

    def _plan_agents_densely(self, rows: _BlockRows, agents: np.ndarray) -> None:
        """``G`` of a few agents of a block (indices ``agents``) with the dense evaluation."""
        assert self._workspace is not None
        for start in range(0, len(agents), self.dense_block_size):
            chunk = agents[start : start + self.dense_block_size]
            sub = self._workspace.block(len(chunk))  # buffers the local planner does not use
            kernels.load_roots([q[chunk] for q in rows.qs], sub)
            kernels.evaluate_block(
                self.cm,
                sub,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
                gamma=self._gamma,
            )
            rows.G[chunk] = sub.G.T

    def sample_action(self) -> IntArray:
        """Select and commit each agent's next action ``(N, F)``; it drives the next prior."""
        for rows in self._blocks():
            np.copyto(rows.blk.x, rows.q_pi.T)
            self._act_block(rows, "propagate")
        self._beliefs_ahead = False
        return self.action

    def _act_block(self, rows: _BlockRows, planner: str) -> None:
        """Select actions from ``blk.x`` (q_pi, state-major) and commit them; ``planner`` (see
        :meth:`_plan_block`) says where the next prior can come from."""
        cm, blk, actions = self.cm, rows.blk, rows.action
        kernels.select_block(
            cm,
            blk.x,
            blk,
            actions,
            mode=self._sampling_mode,
            deterministic=self._deterministic,
            alpha=self._alpha,
            rng=self.selection_rng(),
        )
        rows.has_action.fill(True)
        if not self.keeps_prior:  # made again at the next tick, as it would be made here
            self._prior_committed(rows, small=planner == "small")
            return
        if planner == "small" and kernels.small_prior_block(cm, blk, actions[:, 0], rows.prior[0]):
            return
        if planner == "tree" and kernels.prior_block(cm, blk, actions, rows.prior):
            return
        kernels.propagate_block(cm, rows.qs, actions, rows.prior, blk)

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)`` (replay, manual control)."""
        a = self.check_actions(actions)
        self.action[...] = a
        self.has_action[...] = True
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
        self._beliefs_ahead = False
        for rows in self._blocks():
            if self.keeps_prior:
                kernels.propagate_block(self.cm, rows.qs, actions[rows.sl], rows.prior, rows.blk)
            else:  # the committed actions are the group's: made at the next tick
                self._prior_committed(rows, small=False)

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
        if not self.planning.every_tick:
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
        self.ticks += 1
        return self.action

    def _step_rows(
        self, rows: _BlockRows, o: IntArray | None, soft: list[np.ndarray] | None, record: bool
    ) -> None:
        """One block's tick: infer, plan, act, and stage its history row if ``record``."""
        ob = None if o is None else o[rows.sl]
        planner = self._planner(rows, ob)
        if not self.keeps_prior:
            self._derive_prior(rows)
        if planner == "joint":
            assert ob is not None  # _planner checked
            self._joint_block(rows, ob)
        else:
            self._infer_block(o, soft, rows, roots=planner == "tree")
            self._plan_block(rows, ob, planner)
            self._act_block(rows, planner)
        if record:
            self._encode_block(rows)

    # -- planning policies (edge_agent.aif.planning) ----------------------------------------------
    def _step_planning(
        self,
        o: IntArray | None,
        soft: list[np.ndarray] | None,
        record: bool,
        who_plans: NDArray[np.bool_] | None = None,
    ) -> None:
        """One tick under a planning policy, in three passes over the blocks (each on the
        workers, when the group has them): every agent infers its states; the agents that must
        plan (in order of need, within the budget; or ``who_plans``, see :meth:`step`) are
        gathered into blocks, planned and scattered back; then every agent's next prior (a
        group that keeps no prior makes it at the next tick's first pass instead, and stages
        its history row in the first). Between the passes the caller chooses who plans and
        moves the others along their committed plans."""
        policy = self.planning
        deadline = np.inf  # the tick began now: its inference counts against the deadline
        if policy.deadline_ms is not None and who_plans is None:
            deadline = self._clock() + policy.deadline_ms / 1000.0
        self._plan_deadline[0] = deadline
        workers = self._workers if o is not None else None
        self._run_pass(_INFER, o, soft, record, workers)
        self._inferred(o)
        np.add(self.plan_age, 1, out=self.plan_age)
        must = must_plan(
            policy, self._change, self.plan_age, self.plan_left, self.deferred,
            out=self._must, scratch=self._flag,
        )
        chosen = must if who_plans is None else who_plans
        k = int(np.count_nonzero(chosen))
        candidates = self._candidates[:k]
        np.compress(chosen, self._arange, out=candidates)
        if policy.budgeted and k > 1 and who_plans is None:
            planning_order(
                candidates, self._change, self.plan_age, self.deferred,
                priority=self._keys, scratch=self._index_scratch, fscratch=self._change_scratch,
            )
        limit = k if policy.max_agents is None or who_plans is not None else min(
            k, policy.max_agents
        )
        self._plan_limit[0] = limit
        self._chunk_done.fill(0)
        self._run_pass(_PLAN, o, soft, record, workers)
        planned, followers = self._planned, self._flag
        planned.fill(False)
        chunk, done = self._gather.G.shape[0], 0
        for i in np.flatnonzero(self._chunk_done).tolist():  # a loop over blocks of agents
            idx = candidates[i * chunk : min(limit, (i + 1) * chunk)]
            planned[idx] = True
            done += len(idx)
        np.logical_not(planned, out=followers)
        np.logical_and(must, followers, out=self.deferred)
        self._follow_plans(followers)
        if self.keeps_prior:  # else the next tick makes each block's prior, and it recorded
            self._run_pass(_PROPAGATE, o, soft, record, workers)
        counts = self.planning_counts
        counts["planned"] = done
        counts["deferred"] = k - done if who_plans is None else int(self.deferred.sum())

    def _inferred(self, o: IntArray | None) -> None:
        """After a planning tick's inference pass, before anyone plans: nothing here (a
        learning group learns from ``o`` and the posteriors there)."""

    def _policies_chosen(self, rows: _BlockRows) -> None:
        """After the gathered agents' ``G`` and ``q_pi`` (also in ``rows.blk.x``) are computed,
        before they act: nothing here (a learning group that seeks novelty adds it)."""

    def _run_pass(
        self,
        what: int,
        o: IntArray | None,
        soft: list[np.ndarray] | None,
        record: bool,
        workers: BlockWorkers | None,
    ) -> None:
        """One pass of a planning tick over the blocks (``_INFER``, ``_PLAN`` or
        ``_PROPAGATE``): on the workers, or here; a plan pass stops at the deadline."""
        self._plan_pass[0] = what
        if workers is not None:
            assert o is not None  # soft evidence is stepped here
            workers.step(o, record, self.ticks)
            return
        for i in range(len(self._blocks())):
            if not self._pass_block(i, o, soft, record):
                return

    def _pass_block(
        self, i: int, o: IntArray | None, soft: list[np.ndarray] | None, record: bool
    ) -> bool:
        """Block ``i`` of the current pass; for a plan pass, the ``i``-th block of the agents
        that plan (False: the deadline has passed, the block was not planned)."""
        what = int(self._plan_pass[0])
        if what == _PLAN:
            chunk, limit = self._gather.G.shape[0], int(self._plan_limit[0])
            start = i * chunk
            if start >= limit:
                return True
            if i and self._clock() >= self._plan_deadline[0]:
                return False
            self._plan_gathered(self._candidates[start : min(limit, start + chunk)], o)
            self._chunk_done[i] = 1
            return True
        rows = self._blocks()[i]
        if what == _INFER:
            derive = not self.keeps_prior
            if derive:
                self._derive_prior(rows)
            self._infer_block(o, soft, rows, roots=False)
            if self.cm.num_factors == 1:  # what the local and deep planners take from it
                np.copyto(self._evidence[rows.sl], rows.blk.evidence)
            if self.planning.belief_change is not None or self.planning.budgeted:
                self._belief_change(rows)
            if derive:  # the propagate pass, which propagates every prior, is not needed
                self._prior_committed(rows, small=False)
                if record:
                    self._encode_block(rows)
            return True
        kernels.propagate_block(self.cm, rows.qs, rows.action, rows.prior, rows.blk)
        if record:
            self._encode_block(rows)
        return True

    def _belief_change(self, rows: _BlockRows) -> None:
        """How far each agent's beliefs moved this tick: the total-variation distance between
        its prior and its posterior, the largest over factors, into ``_change``."""
        nb = rows.sl.stop - rows.sl.start
        change, column = self._change[rows.sl], self._column[:nb]
        change.fill(0.0)
        for q, p in zip(rows.qs, rows.prior, strict=True):
            diff = self._diff[:nb, : q.shape[1]]
            np.subtract(q, p, out=diff)
            np.abs(diff, out=diff)
            np.sum(diff, axis=1, out=column)
            np.maximum(change, column, out=change)
        np.multiply(change, 0.5, out=change)

    def _plan_gathered(self, idx: IntArray, o: IntArray | None) -> None:
        """Plan the agents ``idx`` as one block: gather their posteriors (this tick's, already
        inferred) and outcomes, evaluate and select, scatter ``G``, ``q_pi`` and the actions,
        commit their plans. The next prior of every agent is propagated afterwards. On the
        joint small-block path (a tick in one fused pass) the gathered agents' priors are
        gathered instead and their tick rerun."""
        k, g = len(idx), self._gather
        rows = _BlockRows(
            sl=slice(0, k),
            blk=self._workspace_block(k),
            qs=[q[:k] for q in g.qs],
            prior=[p[:k] for p in g.prior],
            G=g.G[:k],
            q_pi=g.q_pi[:k],
            action=g.action[:k],
            has_action=g.has_action[:k],
        )
        ob = None if o is None else np.take(o, idx, axis=0, out=self._gather_obs[:k])
        planner = self._planner(rows, ob)
        if planner == "joint":
            assert ob is not None  # _planner checked
            for p, gp in zip(self.prior, rows.prior, strict=True):
                np.take(p, idx, axis=0, out=gp)
            self._joint_block(rows, ob)
        else:
            for q, gq in zip(self.qs, rows.qs, strict=True):
                np.take(q, idx, axis=0, out=gq)
            if self.cm.num_factors == 1:
                np.take(self._evidence, idx, out=rows.blk.evidence)
            if planner == "tree":
                kernels.load_roots(rows.qs, rows.blk)
            self._plan_block(rows, ob, planner)
            self._policies_chosen(rows)
            kernels.select_block(
                self.cm,
                rows.blk.x,
                rows.blk,
                rows.action,
                mode=self._sampling_mode,
                deterministic=self._deterministic,
                alpha=self._alpha,
                rng=self.selection_rng(),
            )
        self.G[idx] = rows.G
        self.q_pi[idx] = rows.q_pi
        self.action[idx] = rows.action
        self.has_action[idx] = True
        best = self._best[:k]
        np.argmax(rows.q_pi, axis=1, out=best)
        self.plan_policy[idx] = best
        self.plan_left[idx] = max(1, self._policy_len - 1)
        self.plan_age[idx] = 0

    def _follow_plans(self, followers: NDArray[np.bool_]) -> None:
        """The agents that did not plan take their committed plan's next step (policies of
        one step: they keep their action)."""
        L = self._policy_len
        if L == 1:
            return
        step, row = self._index_scratch, self._keys
        np.subtract(L, self.plan_left, out=step)
        np.minimum(step, L - 1, out=step)  # a plan used up (deferred): its last step again
        np.multiply(self.plan_policy, L, out=row)
        np.add(row, step, out=row)
        np.take(self._policy_steps, row, axis=0, out=self._plan_action)
        np.copyto(self.action, self._plan_action, where=followers[:, None])
        np.subtract(self.plan_left, 1, out=self.plan_left, where=followers)
        np.maximum(self.plan_left, 0, out=self.plan_left)

    def planning_stats(self) -> dict[str, float | int]:
        """The last tick's planning: agents planned and deferred, the duty cycle (share of the
        group planned), and the committed plans' mean and largest age in ticks. Every-tick
        groups plan all their agents."""
        n = self.n_agents
        if self.planning.every_tick:
            return {"planned": n, "deferred": 0, "duty_cycle": 1.0, "plan_age_mean": 0.0,
                    "plan_age_max": 0}
        counts = self.planning_counts
        return {
            "planned": counts["planned"],
            "deferred": counts["deferred"],
            "duty_cycle": counts["planned"] / n,
            "plan_age_mean": float(self.plan_age.mean()),
            "plan_age_max": int(self.plan_age.max()),
        }

    def _step_index(self, index: int, obs: np.ndarray, record: bool) -> None:
        if self.planning.every_tick:
            self._step_rows(self._rows[index], obs, None, record)
        else:
            self._pass_block(index, obs, None, record)

    def _set_rng(self, rng: np.random.Generator) -> None:
        self._rng = rng

    @property
    def rng(self) -> np.random.Generator:
        """The generator of stochastic action selection (seeded by ``seed``), made on first use:
        a deterministic group never imports ``numpy.random`` (2.4 MB resident)."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    def selection_rng(self) -> np.random.Generator | None:
        """What action selection draws from: :attr:`rng`, or None when it is deterministic."""
        return None if self._deterministic else self.rng

    # -- several cores ---------------------------------------------------------------------------
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

    def _encode_block(self, rows: _BlockRows) -> None:
        """Quantize the block's beliefs into the staged history row (uint8, see quant): every
        state's probability, or (``history_beliefs = "map"``) the most probable state's index
        and probability per factor."""
        if self.history_beliefs == "map":
            blk = rows.blk
            idx, pmax = blk.ibuf, self._pmax[rows.sl]  # the block's index scratch
            at = blk.ibuf2
            for f, q in enumerate(rows.qs):
                np.argmax(q, axis=1, out=idx)
                np.copyto(self._map_row[rows.sl, f], idx, casting="unsafe")
                # the maximum is the belief at the argmax: read it (a pass over q less)
                np.add(idx, blk.row_start(q.shape[1]), out=at)
                q.reshape(-1).take(at, out=pmax, mode="clip")
                np.multiply(pmax, 255.0, out=pmax)
                np.add(pmax, 0.5, out=pmax)
                np.copyto(self._p_row[rows.sl, f], pmax, casting="unsafe")
            return
        offset = 0
        for q in rows.qs:
            w = q.shape[1]
            cols = slice(offset, offset + w)
            encode_beliefs_u8(q, out=self._qs_row[rows.sl, cols], scratch=rows.blk.enc[:, cols])
            offset += w

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

    # -- snapshots -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore this group's beliefs, actions and history exactly: views of the
        group's own arrays (the history's read-only), valid until it next steps; copy them to
        keep them."""
        out: dict[str, np.ndarray] = {
            "action": self.action,
            "has_action": self.has_action,
            "q_pi": self.q_pi,
            "ticks": np.array(self.ticks, dtype=np.int64),
        }
        for f in range(self.cm.num_factors):
            out[f"qs{f}"] = self.qs[f]
            if self.keeps_prior:
                out[f"prior{f}"] = self.prior[f]
        if not self.keeps_prior:  # what the priors follow from besides beliefs and actions
            out["prior_reset"] = self._prior_reset
            out["prior_small"] = self._prior_small
        if not self.planning.every_tick:  # the committed plans
            for k in _PLAN_ARRAYS:
                out[k] = getattr(self, k)
        if self.history is not None:  # views, as the rest (a copy would double the memory)
            for k, v in self.history.state_views().items():
                out[f"history.{k}"] = v
            for k, v in self._times.state_views().items():
                out[f"times.{k}"] = v
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

        take("action", self.action)
        take("has_action", self.has_action)
        take("q_pi", self.q_pi)
        for f in range(self.cm.num_factors):
            take(f"qs{f}", self.qs[f])
        self._beliefs_ahead = False
        kept = all(f"prior{f}" in state for f in range(self.cm.num_factors))
        if self.keeps_prior and (kept or "prior_reset" not in state):
            for f in range(self.cm.num_factors):
                take(f"prior{f}", self.prior[f])
        elif self.keeps_prior:  # a group's that kept none: made from what it kept
            reset = np.zeros(self.n_agents, dtype=bool)
            take("prior_reset", reset)
            small = saved_small_flags(state, len(self._blocks()))
            for rows in self._blocks():
                self._derive_prior(rows, reset[rows.sl], bool(small[rows.index]))
        elif "prior_reset" in state or not kept:
            take("prior_reset", self._prior_reset)
            self._prior_small[...] = saved_small_flags(state, len(self._prior_small))
        else:  # a group's that kept it (an earlier snapshot format): D where it is D
            resets_of_kept_priors(
                state, self.cm.D, self._prior_reset, rows=self.block_size, name=self.name
            )
            # an every-tick group's small blocks read the prior off the small-block planner
            self._prior_small.fill(1 if self.planning.every_tick else 0)
        self.ticks = int(state["ticks"]) if "ticks" in state else 0
        if not self.planning.every_tick:
            if all(k in state for k in _PLAN_ARRAYS):
                for k in _PLAN_ARRAYS:
                    take(k, getattr(self, k))
            else:  # a snapshot of an every-tick group: every agent plans at its next tick
                self.plan_left.fill(0)
                self.plan_age.fill(0)
                self.deferred.fill(False)
        if self.history is not None:
            hist = state_under(state, "history.")
            times = state_under(state, "times.")
            if hist:
                try:
                    self.history.load_state_dict(hist)
                    self._times.load_state_dict(times)
                except InputError as err:  # another history layout: beliefs matter, keep them
                    logger.warning(
                        "group %r: beliefs restored, history not (%s); it starts empty",
                        self.name,
                        err,
                    )
                    self.history.clear()
                    self._times.clear()

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
