"""A group's ticks under a planning policy (:mod:`edge_agent.aif.planning`, docs/planning.md):
every agent infers its states, the agents that must plan are gathered into blocks, planned and
scattered back, the others follow their committed plans; the arrays that hold the plans.

:class:`PolicyTicks` is the planning strategy of a group whose ``planning`` is not every tick
(an every-tick group steps each block whole, :meth:`BlockStepper.step_block
<edge_agent.core.block_stepper.BlockStepper.step_block>`). Its tick is three passes over the
blocks, each on the group's workers when it has them: :meth:`PolicyTicks.infer` (every agent's
posteriors), then, after whatever the group does with them (learning), :meth:`PolicyTicks.plan`
(who plans, gathered, planned, scattered; the followers' next actions; every agent's next prior).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.planning import SURPRISE_TOP, PlanningPolicy, must_plan, planning_order
from edge_agent.core.agent_state import AgentState, Allocate, Take
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.group_blocks import BlockRows, IntArray, index_dtype
from edge_agent.core.tick_fit import TickFit

if TYPE_CHECKING:
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.workers import BlockWorkers

#: The committed plans: what snapshots carry.
PLAN_ARRAYS = ("plan_policy", "plan_left", "plan_age", "deferred")
#: The passes of a tick (:meth:`PolicyTicks.step_block` runs a block of the current one).
INFER, PLAN, PROPAGATE = 0, 1, 2


class Chooser(Protocol):
    """What may act on the policies of the agents that plan, before they choose (a learning
    group that seeks novelty adds it): :class:`~edge_agent.core.learning.GroupLearning`."""

    def seeks_novelty(self) -> bool:
        """Whether :meth:`before_choice` changes anything now."""
        ...

    def before_choice(self, qs: Sequence[np.ndarray], G: np.ndarray, q_pi: np.ndarray) -> None:
        """In place for the agents of ``qs`` (``(n, S_f)``): their ``G`` and ``q_pi``."""
        ...


class PolicyTicks:
    """The planning policy ``policy`` of a group: its per-agent arrays (the committed plans,
    :data:`PLAN_ARRAYS`, and what a tick's passes share), its gather buffers, and the passes of
    its tick over the group's ``state`` with ``stepper`` (``history``: the group's, whose row
    the passes stage; ``clock``: what a planning deadline is measured with, seconds;
    ``chooser``: what acts before the planning agents choose)."""

    def __init__(
        self,
        policy: PlanningPolicy,
        clock: Callable[[], float],
        *,
        state: AgentState,
        stepper: BlockStepper,
        history: HistoryRecorder | None,
        chooser: Chooser | None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._state = state
        self._stepper = stepper
        self._history = history
        self._chooser = chooser
        #: Planning bounded in time: what the rest of the tick needs (None: not bounded).
        self.fit: TickFit | None = None
        if policy.timed:
            self.fit = TickFit(clock)
        #: The last tick's numbers (:meth:`stats`).
        self.counts = {"planned": 0, "deferred": 0, "agents": 0, "ticks_cut": 0, "passed_over": 0}
        self._gathered: BlockRows | None = None  # a whole chunk of gathered agents as a block

    # -- sizes -------------------------------------------------------------------------------------
    def _sizes(self, n_agents: int) -> dict[str, int]:
        """Lengths of the arrays a policy may not read: ``n_agents`` or 0."""
        policy, several = self.policy, self._stepper.cm.tree.policies.shape[1] > 1
        return {
            "change": n_agents if policy.measured else 0,
            "order": n_agents if policy.budgeted else 0,
            "keys": n_agents if policy.budgeted or several else 0,
            "follow": n_agents if several else 0,
        }

    def bytes_per_agent(self, n_agents: int) -> int:
        """One agent's bytes (see :meth:`allocate`) in a group of ``n_agents``: committed policy,
        steps left, age (int32 each), deferred, must-plan, planned, a flag scratch (bool), the
        evidence of this tick's inference, candidates and the agents' indices (int32, int64 from
        2**31 agents); the belief change (or surprise) when the policy reads it (and its sort
        scratch, with a budget), a budget's order keys and index scratch (int64, also for plans
        of several steps, with the plan's next action: int64 per factor)."""
        sizes = self._sizes(1)
        index = np.dtype(index_dtype(n_agents)).itemsize
        item = self._state.dtype.itemsize
        return (
            3 * 4 + 4 + item + 2 * index
            + item * (sizes["change"] + sizes["order"])
            + 2 * 8 * sizes["keys"]
            + 8 * self._stepper.cm.num_factors * sizes["follow"]
        )

    def gather_bytes_per_agent(self) -> int:
        """The gather buffers, per agent of a block: beliefs, priors, ``G`` and ``q_pi``,
        actions, outcomes, best policies, and the belief change's scratch."""
        cm, item = self._stepper.cm, self._state.dtype.itemsize
        beliefs = (2 * sum(cm.num_states) + 2 * cm.num_policies + max(cm.num_states) + 1) * item
        return beliefs + cm.num_modalities * 8 + cm.num_factors * 8 + 1 + 8

    # -- allocation --------------------------------------------------------------------------------
    def allocate(self, n_agents: int, keep: int, new: Allocate) -> None:
        """The committed plans of ``n_agents`` (the first ``keep`` carried over) and the
        preallocated index, key and gather buffers."""
        cm, dt = self._stepper.cm, self._state.dtype
        old = {k: getattr(self, k) for k in PLAN_ARRAYS if keep and hasattr(self, k)}
        self.plan_policy = new(n_agents, np.int32)  # committed policy (index)
        self.plan_left = new(n_agents, np.int32)  # its steps still to take
        self.plan_age = new(n_agents, np.int32)  # ticks since the agent planned
        self.deferred: NDArray[np.bool_] = np.zeros(n_agents, dtype=bool)  # put off by the budget
        for k, v in old.items():
            getattr(self, k)[:keep] = v[:keep]
        # What a policy does not read is not allocated (empty): the belief change or the
        # surprise (a policy on it, or a budget's order), the order's keys, plans of several
        # steps to follow.
        sizes = self._sizes(n_agents)
        #: How far each agent's beliefs moved this tick (or its surprise): what a policy reads.
        self.change = new(sizes["change"], dt)
        #: The evidence of this tick's inference (one factor: what the local and deep planners
        #: take from it).
        self.evidence = new(n_agents, dt)
        self.evidence.fill(1.0)
        self.must = np.empty(n_agents, dtype=bool)
        self.planned = np.empty(n_agents, dtype=bool)
        self.flag = np.empty(n_agents, dtype=bool)
        index = index_dtype(n_agents)  # agent indices: int32 below 2**31 agents
        self.candidates = new(n_agents, index)
        self.arange = np.arange(n_agents, dtype=index)
        self.keys = np.empty(sizes["keys"], dtype=np.int64)
        self.index_scratch = np.empty(sizes["keys"], dtype=np.int64)
        self.change_scratch = np.empty(sizes["order"], dtype=dt)
        self.plan_action = np.empty((sizes["follow"], cm.num_factors), dtype=np.int64)
        # Policies as (P * L, F): the action of policy p at step t is row p * L + t.
        L = cm.tree.policies.shape[1]
        self._policy_steps = np.ascontiguousarray(cm.tree.policies.reshape(-1, cm.num_factors))
        self._policy_len = L
        nb = min(self._stepper.sizes.block, n_agents)
        # a block's belief change and the gathered agents' best policies
        self._diff = np.empty((nb, max(cm.num_states)), dtype=dt)
        self._column = np.empty(nb, dtype=dt)
        self._best = np.empty(nb, dtype=np.int64)
        self._gather = BlockRows(  # its blk is taken from the workspace at each use
            sl=slice(0, nb),
            blk=self._stepper.workspace_block(nb),
            qs=[np.empty((nb, s), dtype=dt) for s in cm.num_states],
            prior=[np.empty((nb, s), dtype=dt) for s in cm.num_states],
            G=np.zeros((nb, cm.num_policies), dtype=dt),
            q_pi=np.empty((nb, cm.num_policies), dtype=dt),
            action=np.zeros((nb, cm.num_factors), dtype=np.int64),
            has_action=np.zeros(nb, dtype=bool),
        )
        self._gather_obs = np.zeros((nb, cm.num_modalities), dtype=np.int64)
        self._gathered = None
        self.counts = {
            "planned": 0, "deferred": 0, "agents": n_agents, "ticks_cut": 0, "passed_over": 0
        }
        if self.fit is not None:  # a new group: what the rest of the tick needs, anew
            self.fit = TickFit(self._clock)
        # What the passes share with the workers: the pass, how many plan and until when, which
        # chunks of the agents that plan were planned.
        self.pass_ = new(1, np.int64)
        self.limit = new(1, np.int64)
        self.deadline = new(1, np.float64)
        self.chunk_done = new(-(-n_agents // nb), np.uint8)

    def resize_gather(self, new: Allocate) -> None:
        """Buffers for the stepper's new (smaller) blocks; the committed plans and what this
        tick's inference left for the planners (belief change, evidence) are kept."""
        change, evidence = self.change.copy(), self.evidence.copy()
        n = self._state.n_agents
        self.allocate(n, n, new)
        np.copyto(self.change, change)
        np.copyto(self.evidence, evidence)

    def share(self) -> None:
        """Move what the workers write, or read from the caller after the fork, into shared
        memory."""
        from edge_agent.core.workers import shared  # noqa: PLC0415 - multi-core groups only

        self.plan_policy, self.plan_left = shared(self.plan_policy), shared(self.plan_left)
        self.plan_age, self.change = shared(self.plan_age), shared(self.change)
        self.evidence, self.candidates = shared(self.evidence), shared(self.candidates)
        self.pass_, self.limit = shared(self.pass_), shared(self.limit)
        self.deadline, self.chunk_done = shared(self.deadline), shared(self.chunk_done)

    def reset(self, sel: slice | np.ndarray) -> None:
        """A new trial for the agents ``sel``: they plan at its first tick."""
        self.plan_left[sel] = 0
        self.plan_age[sel] = 0

    # -- a tick ------------------------------------------------------------------------------------
    def infer(
        self,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        record: bool,
        *,
        workers: BlockWorkers | None,
        ticks: int,
        who_plans: NDArray[np.bool_] | None,
    ) -> float | None:
        """The tick's first pass: every agent infers its states (and, in a group that keeps no
        prior, stages its history row). ``workers``: the group's (soft evidence is stepped
        here). Returns when the tick began by the clock, when planning is bounded in time (else
        None)."""
        fit = self.fit
        timed = fit is not None and who_plans is None and (
            self.policy.deadline_ms is not None or fit.paced
        )
        # The tick began now: its inference counts against the deadline.
        start = self._clock() if timed else None
        self.run_pass(INFER, obs, soft, record, workers=workers, ticks=ticks)
        return start

    def plan(
        self,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        record: bool,
        *,
        workers: BlockWorkers | None,
        ticks: int,
        who_plans: NDArray[np.bool_] | None,
        start: float | None,
    ) -> None:
        """The rest of the tick once every agent inferred (``start``: what :meth:`infer`
        returned): the agents that must plan (in order of need, within the budget; or
        ``who_plans``) are gathered into blocks, planned and scattered back; the others move
        along their committed plans; then every agent's next prior (a group that keeps no prior
        makes it at the next tick's first pass instead)."""
        policy, fit = self.policy, self.fit
        deadline = np.inf
        if start is not None:
            assert fit is not None
            seconds = None if policy.deadline_ms is None else policy.deadline_ms / 1000.0
            deadline = fit.deadline(start, seconds)
        self.deadline[0] = deadline
        np.add(self.plan_age, 1, out=self.plan_age)
        must = must_plan(
            policy, self.change, self.plan_age, self.plan_left, self.deferred,
            out=self.must, scratch=self.flag,
        )
        chosen = must if who_plans is None else who_plans
        k = int(np.count_nonzero(chosen))
        candidates = self.candidates[:k]
        np.compress(chosen, self.arange, out=candidates)
        if policy.budgeted and k > 1 and who_plans is None:
            planning_order(
                candidates, self.change, self.plan_age, self.deferred,
                priority=self.keys, scratch=self.index_scratch, fscratch=self.change_scratch,
                top=1.0 if policy.surprise is None else SURPRISE_TOP,
            )
        limit = k if policy.max_agents is None or who_plans is not None else min(
            k, policy.max_agents
        )
        self.limit[0] = limit
        self.chunk_done.fill(0)
        began = self._clock() if fit is not None and fit.paced else 0.0
        # Agents put off on the last tick (a budget's order serves them first).
        waiting = int(np.count_nonzero(self.deferred)) if policy.budgeted else 0
        self.run_pass(PLAN, obs, soft, record, workers=workers, ticks=ticks)
        planned, followers = self.planned, self.flag
        planned.fill(False)
        chunk, done, served, blocks = self._gather.G.shape[0], 0, 0, 0
        for i in np.flatnonzero(self.chunk_done).tolist():  # a loop over blocks of agents
            idx = candidates[i * chunk : min(limit, (i + 1) * chunk)]
            if waiting:  # how many of them had been put off (followers: free scratch here)
                put_off = np.take(self.deferred, idx, out=followers[: len(idx)])
                served += int(np.count_nonzero(put_off))
            planned[idx] = True
            done += len(idx)
            blocks += 1
        if fit is not None:
            fit.planned(began, blocks, 1 if workers is None else workers.count)
        np.logical_not(planned, out=followers)
        np.logical_and(must, followers, out=self.deferred)
        self._follow_plans(followers)
        if self._state.keeps_prior:  # else the next tick makes each block's prior
            self.run_pass(PROPAGATE, obs, soft, record, workers=workers, ticks=ticks)
        counts = self.counts
        counts["planned"] = done
        counts["deferred"] = k - done if who_plans is None else int(self.deferred.sum())
        if who_plans is None:
            counts["ticks_cut"] += done < limit  # the deadline stopped planning
            # Agents put off before waited again while others, not put off, planned.
            counts["passed_over"] += waiting > served and done > served

    def run_pass(
        self,
        what: int,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        record: bool,
        *,
        workers: BlockWorkers | None,
        ticks: int,
    ) -> None:
        """One pass over the blocks (``INFER``, ``PLAN`` or ``PROPAGATE``): on the workers, or
        here; a plan pass goes over the blocks of agents that plan (no more), and stops at the
        deadline."""
        self.pass_[0] = what
        blocks = len(self._stepper.blocks(self._state))
        if what == PLAN:
            chunk = self._gather.G.shape[0]
            blocks = min(blocks, -(-int(self.limit[0]) // chunk))
            if blocks == 0:  # nobody plans
                return
        if workers is not None and obs is not None:  # soft evidence is stepped here
            # the tick's observations were copied for its first pass
            workers.step(obs if what == INFER else None, record, ticks, blocks)
            return
        for i in range(blocks):
            if not self.step_block(i, obs, soft, record):
                return

    def step_index(self, i: int, obs: np.ndarray, record: bool) -> None:
        """Block ``i`` of the current pass on integer outcomes ``obs`` (the workers' per-block
        step: :data:`~edge_agent.core.workers.StepBlock`)."""
        self.step_block(i, obs, None, record)

    def step_block(
        self, i: int, obs: IntArray | None, soft: list[np.ndarray] | None, record: bool
    ) -> bool:
        """Block ``i`` of the current pass (in whichever process steps it); for a plan pass, the
        ``i``-th block of the agents that plan (False: the deadline has passed, the block was
        not planned)."""
        what = int(self.pass_[0])
        stepper, state = self._stepper, self._state
        if what == PLAN:
            chunk, limit = self._gather.G.shape[0], int(self.limit[0])
            start = i * chunk
            if start >= limit:
                return True
            deadline = float(self.deadline[0])
            if i and deadline < np.inf and self._clock() >= deadline:
                return False
            self._plan_gathered(self.candidates[start : min(limit, start + chunk)], obs)
            self.chunk_done[i] = 1
            return True
        rows = stepper.blocks(state)[i]
        history = self._history if record else None
        if what == INFER:
            derive = not state.keeps_prior
            if derive:
                stepper.derive_prior(state, rows)
            stepper.infer(rows, obs, soft, roots=False)
            if stepper.cm.num_factors == 1:  # what the local and deep planners take from it
                np.copyto(self.evidence[rows.sl], rows.blk.evidence)
            if self.policy.surprise is not None:  # what the inference divided by
                kernels.surprise_block(stepper.cm, rows.blk, self.change[rows.sl])
            elif self.policy.measured:
                self._belief_change(rows)
            if derive:  # the propagate pass, which propagates every prior, is not needed
                state.commit(rows.sl, small=False, index=rows.index)
                if history is not None:
                    history.stage_beliefs(rows)
            return True
        stepper.propagate(rows, rows.action)
        if history is not None:
            history.stage_beliefs(rows)
        return True

    def _belief_change(self, rows: BlockRows) -> None:
        """How far each agent's beliefs moved this tick: the total-variation distance between
        its prior and its posterior, the largest over factors, into ``change``."""
        nb = rows.sl.stop - rows.sl.start
        change, column = self.change[rows.sl], self._column[:nb]
        change.fill(0.0)
        for q, p in zip(rows.qs, rows.prior, strict=True):
            diff = self._diff[:nb, : q.shape[1]]
            np.subtract(q, p, out=diff)
            np.abs(diff, out=diff)
            np.sum(diff, axis=1, out=column)
            np.maximum(change, column, out=change)
        np.multiply(change, 0.5, out=change)

    def _plan_gathered(self, idx: IntArray, obs: IntArray | None) -> None:
        """Plan the agents ``idx`` as one block: gather their posteriors (this tick's, already
        inferred) and outcomes, evaluate and select, scatter ``G``, ``q_pi`` and the actions,
        commit their plans. The next prior of every agent is propagated afterwards. On the
        joint small-block path (a tick in one fused pass) the gathered agents' priors are
        gathered instead and their tick rerun."""
        stepper, state, chooser = self._stepper, self._state, self._chooser
        k = len(idx)
        rows = self._gathered_rows(k)
        ob = None if obs is None else np.take(obs, idx, axis=0, out=self._gather_obs[:k])
        planner = stepper.planner(rows, ob)
        novelty = chooser is not None and chooser.seeks_novelty()
        if planner == "joint" and novelty:  # added between the evaluation and the choice
            planner = stepper.planner(rows, None)
        if planner == "joint":
            assert ob is not None  # planner() checked
            for p, gp in zip(state.prior, rows.prior, strict=True):
                np.take(p, idx, axis=0, out=gp)
            stepper.joint_tick(rows, ob)
        else:
            for q, gq in zip(state.qs, rows.qs, strict=True):
                np.take(q, idx, axis=0, out=gq)
            if stepper.cm.num_factors == 1:
                np.take(self.evidence, idx, out=rows.blk.evidence)
            if planner == "tree":
                kernels.load_roots(rows.qs, rows.blk)
            stepper.plan(rows, ob, planner)
            if novelty:
                assert chooser is not None
                chooser.before_choice(rows.qs, rows.G, rows.q_pi)
                np.copyto(rows.blk.x, rows.q_pi.T)
            stepper.select(rows)
        state.G[idx] = rows.G
        state.q_pi[idx] = rows.q_pi
        state.action[idx] = rows.action
        state.has_action[idx] = True
        best = self._best[:k]
        np.argmax(rows.q_pi, axis=1, out=best)
        self.plan_policy[idx] = best
        self.plan_left[idx] = max(1, self._policy_len - 1)
        self.plan_age[idx] = 0

    def _gathered_rows(self, k: int) -> BlockRows:
        """The gather buffers' first ``k`` rows as a block (a whole chunk's made once, and
        again when the workspace is new)."""
        whole, blk = self._gathered, self._stepper.workspace_block(k)
        if whole is not None and whole.blk is blk:
            return whole
        g = self._gather
        rows = BlockRows(
            sl=slice(0, k),
            blk=blk,
            qs=[q[:k] for q in g.qs],
            prior=[p[:k] for p in g.prior],
            G=g.G[:k],
            q_pi=g.q_pi[:k],
            action=g.action[:k],
            has_action=g.has_action[:k],
        )
        if k == g.G.shape[0]:
            self._gathered = rows
        return rows

    def _follow_plans(self, followers: NDArray[np.bool_]) -> None:
        """The agents that did not plan take their committed plan's next step (policies of
        one step: they keep their action)."""
        L = self._policy_len
        if L == 1:
            return
        step, row = self.index_scratch, self.keys
        np.subtract(L, self.plan_left, out=step)
        np.minimum(step, L - 1, out=step)  # a plan used up (deferred): its last step again
        np.multiply(self.plan_policy, L, out=row)
        np.add(row, step, out=row)
        np.take(self._policy_steps, row, axis=0, out=self.plan_action)
        np.copyto(self._state.action, self.plan_action, where=followers[:, None])
        np.subtract(self.plan_left, 1, out=self.plan_left, where=followers)
        np.maximum(self.plan_left, 0, out=self.plan_left)

    # -- what the group shows, and the daemon's pace -----------------------------------------------
    def stats(self) -> dict[str, float | int | None]:
        """The last tick's planning: agents planned and deferred, the duty cycle (share of the
        group planned), and the committed plans' mean and largest age in ticks."""
        counts = self.counts
        stats: dict[str, float | int | None] = {
            "planned": counts["planned"],
            "deferred": counts["deferred"],
            "duty_cycle": counts["planned"] / self._state.n_agents,
            "plan_age_mean": float(self.plan_age.mean()),
            "plan_age_max": int(self.plan_age.max()),
        }
        if self.policy.budgeted:
            stats["ticks_cut"] = counts["ticks_cut"]
            stats["passed_over"] = counts["passed_over"]
        if self.fit is not None:
            stats.update(self.fit.estimates_ms())
        return stats

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """See :meth:`AifAgentGroup.pace <edge_agent.core.agents.AifAgentGroup.pace>`."""
        if self.fit is not None:
            self.fit.pace(left_s, rest_s)

    def stepped(self) -> None:
        """The step ends: what followed planning in it is measured (planning bounded in time)."""
        if self.fit is not None:
            self.fit.stepped()

    # -- snapshots ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The committed plans (views)."""
        return {k: getattr(self, k) for k in PLAN_ARRAYS}

    def load_state_dict(self, state: Mapping[str, np.ndarray], take: Take) -> None:
        """The committed plans a snapshot carries; a snapshot of an every-tick group has none:
        every agent plans at its next tick."""
        if all(k in state for k in PLAN_ARRAYS):
            for k in PLAN_ARRAYS:
                take(k, getattr(self, k))
        else:
            self.plan_left.fill(0)
            self.plan_age.fill(0)
            self.deferred.fill(False)
