"""A tick under a planning policy (:mod:`edge_agent.aif.planning`, docs/planning.md): every agent
infers its states, the agents that must plan are gathered into blocks, planned and scattered back,
the others follow their committed plans; the arrays that hold the plans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.planning import SURPRISE_TOP, must_plan, planning_order
from edge_agent.core.block_maths import BlockMaths
from edge_agent.core.group_blocks import (
    _INFER,
    _PLAN,
    _PROPAGATE,
    IntArray,
    _BlockRows,
    _index_dtype,
)
from edge_agent.core.tick_fit import TickFit

if TYPE_CHECKING:
    from edge_agent.core.workers import BlockWorkers


class PlanningPass(BlockMaths):
    """The planning policy's part of an agent group: its arrays and the passes of its tick."""

    #: Planning bounded in time: what the rest of the tick needs (None: not bounded in time).
    _fit: TickFit | None = None
    #: A whole chunk of gathered agents as a block (:meth:`_gathered_rows`).
    _gathered: _BlockRows | None = None

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
        # What a policy does not read is not allocated (empty): the belief change or the
        # surprise (a policy on it, or a budget's order), the order's keys, plans of several
        # steps to follow.
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
        self._gathered = None
        self.planning_counts = {
            "planned": 0, "deferred": 0, "agents": n_agents, "ticks_cut": 0, "passed_over": 0
        }
        # Planning bounded in time: what the rest of the tick needs (the daemon paces it).
        self._fit = TickFit(self._clock) if self.planning.timed else None
        self._plan_pass = self._new(1, np.int64)
        self._plan_limit = self._new(1, np.int64)
        self._plan_deadline = self._new(1, np.float64)
        self._chunk_done = self._new(-(-n_agents // nb), np.uint8)

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
        policy, fit = self.planning, self._fit
        timed = fit is not None and who_plans is None and (
            policy.deadline_ms is not None or fit.paced
        )
        # The tick began now: its inference counts against the deadline.
        start = self._clock() if timed else 0.0
        workers = self._workers if o is not None else None
        self._run_pass(_INFER, o, soft, record, workers)
        self._inferred(o)
        deadline = np.inf
        if timed:
            assert fit is not None
            seconds = None if policy.deadline_ms is None else policy.deadline_ms / 1000.0
            deadline = fit.deadline(start, seconds)
        self._plan_deadline[0] = deadline
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
                top=1.0 if policy.surprise is None else SURPRISE_TOP,
            )
        limit = k if policy.max_agents is None or who_plans is not None else min(
            k, policy.max_agents
        )
        self._plan_limit[0] = limit
        self._chunk_done.fill(0)
        began = self._clock() if fit is not None and fit.paced else 0.0
        # Agents put off on the last tick (a budget's order serves them first).
        waiting = int(np.count_nonzero(self.deferred)) if policy.budgeted else 0
        self._run_pass(_PLAN, o, soft, record, workers)
        planned, followers = self._planned, self._flag
        planned.fill(False)
        chunk, done, served, blocks = self._gather.G.shape[0], 0, 0, 0
        for i in np.flatnonzero(self._chunk_done).tolist():  # a loop over blocks of agents
            idx = candidates[i * chunk : min(limit, (i + 1) * chunk)]
            if waiting:  # how many of them had been put off (followers: free scratch here)
                put_off = np.take(self.deferred, idx, out=followers[: len(idx)])
                served += int(np.count_nonzero(put_off))
            planned[idx] = True
            done += len(idx)
            blocks += 1
        if fit is not None:
            fit.planned(began, blocks, 1 if self._workers is None else self._workers.count)
        np.logical_not(planned, out=followers)
        np.logical_and(must, followers, out=self.deferred)
        self._follow_plans(followers)
        if self.keeps_prior:  # else the next tick makes each block's prior, and it recorded
            self._run_pass(_PROPAGATE, o, soft, record, workers)
        counts = self.planning_counts
        counts["planned"] = done
        counts["deferred"] = k - done if who_plans is None else int(self.deferred.sum())
        if who_plans is None:
            counts["ticks_cut"] += done < limit  # the deadline stopped planning
            # Agents put off before waited again while others, not put off, planned.
            counts["passed_over"] += waiting > served and done > served

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
        ``_PROPAGATE``): on the workers, or here; a plan pass goes over the blocks of agents
        that plan (no more), and stops at the deadline."""
        self._plan_pass[0] = what
        blocks = len(self._blocks())
        if what == _PLAN:
            chunk = self._gather.G.shape[0]
            blocks = min(blocks, -(-int(self._plan_limit[0]) // chunk))
            if blocks == 0:  # nobody plans
                return
        if workers is not None:
            assert o is not None  # soft evidence is stepped here
            # the tick's observations were copied for its first pass
            workers.step(o if what == _INFER else None, record, self.ticks, blocks)
            return
        for i in range(blocks):
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
            deadline = float(self._plan_deadline[0])
            if i and deadline < np.inf and self._clock() >= deadline:
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
            if self.planning.surprise is not None:  # what the inference divided by
                kernels.surprise_block(self.cm, rows.blk, self._change[rows.sl])
            elif self.planning.measured:
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
        k = len(idx)
        rows = self._gathered_rows(k)
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

    def _gathered_rows(self, k: int) -> _BlockRows:
        """The gather buffers' first ``k`` rows as a block (a whole chunk's made once, and
        again when the workspace is new)."""
        whole, blk = self._gathered, self._workspace_block(k)
        if whole is not None and whole.blk is blk:
            return whole
        g = self._gather
        rows = _BlockRows(
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
        step, row = self._index_scratch, self._keys
        np.subtract(L, self.plan_left, out=step)
        np.minimum(step, L - 1, out=step)  # a plan used up (deferred): its last step again
        np.multiply(self.plan_policy, L, out=row)
        np.add(row, step, out=row)
        np.take(self._policy_steps, row, axis=0, out=self._plan_action)
        np.copyto(self.action, self._plan_action, where=followers[:, None])
        np.subtract(self.plan_left, 1, out=self.plan_left, where=followers)
        np.maximum(self.plan_left, 0, out=self.plan_left)

    def planning_stats(self) -> dict[str, float | int | None]:
        """The last tick's planning: agents planned and deferred, the duty cycle (share of the
        group planned), and the committed plans' mean and largest age in ticks. Every-tick
        groups plan all their agents."""
        n = self.n_agents
        if self.planning.every_tick:
            return {"planned": n, "deferred": 0, "duty_cycle": 1.0, "plan_age_mean": 0.0,
                    "plan_age_max": 0}
        counts = self.planning_counts
        stats: dict[str, float | int | None] = {
            "planned": counts["planned"],
            "deferred": counts["deferred"],
            "duty_cycle": counts["planned"] / n,
            "plan_age_mean": float(self.plan_age.mean()),
            "plan_age_max": int(self.plan_age.max()),
        }
        if self.planning.budgeted:
            stats["ticks_cut"] = counts["ticks_cut"]
            stats["passed_over"] = counts["passed_over"]
        if self._fit is not None:
            stats.update(self._fit.estimates_ms())
        return stats

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """Before a step, from the daemon (:class:`~edge_agent.core.contract.Paced`): the tick
        must end ``left_s`` seconds from now, and the previous one went on ``rest_s`` seconds
        after this group's step returned (None: not known). Only planning bounded in time reads
        it (``deadline_ms``, ``fit_tick``; see :mod:`edge_agent.core.tick_fit`)."""
        if self._fit is not None:
            self._fit.pace(left_s, rest_s)

    def _stepped(self) -> None:
        """The step ends: what followed planning in it is measured (planning bounded in time)."""
        if self._fit is not None:
            self._fit.stepped()
