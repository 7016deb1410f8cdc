"""The bytes an agent group takes: per agent (by part), its blocks' scratch, and the block sizes
that keep a block's scratch bounded; what the memory budget reserves before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.aif.settings import AifSettings
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.group_blocks import (
    BLOCK_SCRATCH_BYTES,
    DEFAULT_BLOCK,
    DENSE_FALLBACK_BYTES,
    LARGE_MODEL_BLOCK,
    HistoryBeliefs,
    IntArray,
    _BlockRows,
    _index_dtype,
    _small_uint,
)
from edge_agent.core.history import HistoryRing
from edge_agent.core.priors import prior_follows

if TYPE_CHECKING:
    from edge_agent.core.workers import BlockWorkers


class GroupMemory:
    """An agent group's sizes: the bytes of its per-agent state and of its blocks' scratch (the
    state itself is declared here, allocated by :class:`~edge_agent.core.agents.AifAgentGroup`)."""

    # What the group is and how it steps (set by AifAgentGroup.__init__).
    name: str
    cm: kernels.CompiledModel
    dtype: np.dtype[Any]
    settings: AifSettings
    planning: PlanningPolicy
    block_size: int
    dense_block_size: int
    n_agents: int
    ticks: int
    history_capacity: int
    history_beliefs: HistoryBeliefs
    _history_fields: dict[str, tuple[tuple[int, ...], np.dtype]]
    _budget: MemoryBudget | None
    _clock: Callable[[], float]
    _shared_state: bool
    _obs_limit: np.ndarray
    _seed: int | None
    _rng: np.random.Generator | None
    # The settings the kernels read, unpacked once.
    _num_iter: int
    _dF_tol: float
    _alpha: float
    _gamma: np.ndarray
    _use_utility: bool
    _use_info_gain: bool
    _sampling_mode: Literal["marginal", "full"]
    _deterministic: bool
    # Whether the prior is kept between ticks, and what it follows from when it is not.
    keeps_prior: bool
    _keep_prior_asked: bool
    _prior_was_kept: bool
    _beliefs_ahead: bool
    _prior_reset: np.ndarray
    _prior_small: np.ndarray
    # The blocks' views (cached until the arrays are reallocated).
    _rows: list[_BlockRows]
    _dense_rows: list[_BlockRows]
    # A planning policy's committed plans (planning_pass.PlanningPass allocates them).
    plan_left: np.ndarray
    plan_age: np.ndarray
    deferred: NDArray[np.bool_]
    # Per-agent state, all (n_agents, ...).
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
        (int32, int64 from 2**31 agents); the belief change (or surprise) when the policy reads
        it (and its sort scratch, with a budget), a budget's order keys and index scratch
        (int64, also for plans of several steps, with the plan's next action: int64 per
        factor)."""
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
            "change": n_agents if policy.measured else 0,
            "order": n_agents if policy.budgeted else 0,
            "keys": n_agents if policy.budgeted or several else 0,
            "follow": n_agents if several else 0,
        }

    def _size_blocks(self) -> None:
        """Block sizes from the scratch one agent of a block needs: at most
        ``BLOCK_SCRATCH_BYTES`` a block, and at most ``LARGE_MODEL_BLOCK`` agents unless
        ``DEFAULT_BLOCK`` agents fit in that. A planner that hands only some agents to the
        dense evaluation (local, deep) keeps the dense scratch for at most
        ``DENSE_FALLBACK_BYTES``. The workspace's constant row offsets (``rows``) are counted
        in the scratch but do not size blocks (which would move the blocks' bounds)."""
        info_gain = self.settings.use_states_info_gain
        per = kernels.Workspace.bytes_per_agent(self.cm, info_gain=info_gain)
        common, dense, self._scratch_small = per["all"], per["dense"], per["small"]
        self._scratch_rows = per["rows"]
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
        if block < DEFAULT_BLOCK:  # not a tiny model
            block = min(block, LARGE_MODEL_BLOCK)
        self.block_size = max(1, min(self.block_size, block))
        self.dense_block_size = max(1, min(self.block_size, dense_block))
        # The deep planner's dense form (blocks without an observation), like the dense tree.
        deep_dense = DENSE_FALLBACK_BYTES // max(1, self._scratch_deep_dense)
        self.deep_dense_block_size = max(1, min(self.block_size, deep_dense))

    def scratch_nbytes_per_agent(self) -> int:
        """Kernel scratch per agent of a full block (an upper bound; see :meth:`scratch_nbytes`)."""
        return (
            self._scratch_common
            + self._scratch_rows
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
            + min(self.block_size, n_agents, kernels.PROPAGATION_ROWS) * self._scratch_rows
            + min(self.dense_block_size, n_agents) * self._scratch_dense
            + min(self.block_size, n_agents, kernels.SMALL_BLOCK) * self._scratch_small
            + min(self.deep_dense_block_size, n_agents) * self._scratch_deep_dense
        )

    def bytes_for(self, n_agents: int, history_capacity: int) -> int:
        """Bytes to reserve for ``n_agents``: state, history, shared timestamps, block scratch."""
        times = 8 * history_capacity
        scratch = self.scratch_nbytes(n_agents)
        return n_agents * self.per_agent_nbytes(history_capacity, n_agents) + times + scratch

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
