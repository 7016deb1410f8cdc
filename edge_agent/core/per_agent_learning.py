"""Learning scope ``per_agent``: every agent learns its own counts and infers with its own tables.

:class:`AgentTables` holds each agent's copy of the learned tables (``(N, ...)`` float64 next
to the ``(N, ...)`` counts; tables nobody learns stay shared, with an agent axis of 1) and steps
the agents with them through the batched per-agent kernels of :mod:`edge_agent.aif.per_agent`
(pymdp 0.0.7.1's maths, like the reference agent): the group's
:class:`~edge_agent.core.learning.GroupLearning` refreshes them, the group's verbs infer, plan
and act through them (:class:`~edge_agent.core.learning.AgentStepping`), and it builds the
compiled pass that steps the learning ticks over them where it can (:meth:`AgentTables.
build_pass`, :mod:`edge_agent.core.native_pass`). A group of this scope
runs float64 tables, without histories, several workers, a planning policy, ``param_info_gain``
or :meth:`~edge_agent.core.agents.AifAgentGroup.resize` (each refused in one line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from edge_agent.aif import joint_outcomes, kernels, per_agent
from edge_agent.aif import sparse_transitions as sparse
from edge_agent.aif.constants import EPS
from edge_agent.aif.learning import Learner
from edge_agent.aif.learning_refresh import normalise_agent_tables
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.sparse_transitions import SparseTransitions
from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.learning import AgentStepping

if TYPE_CHECKING:
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.native_pass import NativePass

__all__ = ["OUTCOME_CHUNK", "AgentTables"]

#: The policy pass takes a chunk of agents at a time, whose temporaries (predicted states,
#: outcomes, a learned ``A``'s joint-outcome entries, per policy) hold at most this many entries:
#: small enough to stay in a core's cache and off fresh pages (measured on the T-maze).
OUTCOME_CHUNK = 1 << 15


class AgentTables:
    """Each of ``n_agents`` agents' tables of ``model`` (float64, as loaded), the learned ones
    (``learner``'s counts) one copy per agent; ``info_gain``: whether planning reads the state
    information gain (then each agent's joint-outcome table is kept)."""

    name = "per_agent"
    #: Every agent plans every tick, with its own tables.
    plans_by_policy = False
    #: Inference makes each agent's prior from its own ``B`` (or ``D``), into the state.
    makes_prior = True

    def __init__(
        self, model: GenerativeModel, learner: Learner, n_agents: int, *, info_gain: bool
    ) -> None:
        self._loaded = model
        self._learner = learner
        S = int(np.prod(model.num_states))
        # Shared tables with an agent axis of 1; the learned ones get one copy per agent (a
        # learned A on its prior's support where it can be, per_agent.OnSupport).
        self.tables: dict[str, list[per_agent.Likelihood]] = {
            "A": [a.reshape(1, a.shape[0], S) for a in model.A],
            "B": [b[None] for b in model.B],
            "D": [d[None] for d in model.D],
        }
        #: The learned transitions kept on their support (the prior counts'), by factor: each
        #: agent's ``B`` there (:mod:`edge_agent.aif.sparse_transitions`) instead of in full.
        self.transitions: dict[int, SparseTransitions] = {}
        for counts in learner.counts:
            for slot, index in enumerate(counts.tables):
                if counts.kind == "B":
                    found = sparse.sparse_transitions(counts.prior[slot] > 0, n_agents)
                    if found is not None:
                        sparse.fill_from_table(found, model.B[index])
                        self.transitions[index] = found
                        continue
                if counts.kind == "A":
                    kept = _on_support(model.A[index], counts.prior[slot], n_agents)
                    if kept is not None:
                        self.tables["A"][index] = kept
                        continue
                self.tables[counts.kind][index] = np.repeat(
                    self.tables[counts.kind][index], n_agents, axis=0
                )
        # The joint outcomes some state can produce, under the model's A or the counts' (a
        # learned A's support from its first refresh on): the only rows the information gain
        # needs (the T-maze: 12 of 24).
        supports = [(a > 0).reshape(a.shape[0], S) for a in model.A]
        if learner.pA is not None:
            for slot, index in enumerate(learner.pA.tables):
                supports[index] = supports[index] | (
                    learner.pA.prior[slot].reshape(supports[index].shape) > 0
                )
        self._possible = joint_outcomes.possible_outcomes(supports) if len(model.A) > 1 else None
        # A learned A among several modalities: the joint-outcome entries that can be non-zero
        # (the T-maze: 22 of 12 x 8), the shared modalities' product on them made once.
        self._layout = (
            joint_outcomes.joint_layout([a.reshape(1, a.shape[0], S) for a in model.A],
                                        supports, self._possible, learner.pA.tables)
            if self._possible is not None and learner.pA is not None and info_gain else None
        )
        self._lnC = [np.log(kernels.softmax_rows(c[None])[0] + EPS) for c in model.C]
        self._info_gain = info_gain
        # The joint-outcome tables of a shared A, made once; a learned A's are made each tick
        # from the agents' tables, a chunk of agents at a time (kept by no agent).
        self._outcomes = (
            per_agent.outcome_tables(self._shared_tables(), self._possible)
            if info_gain and learner.pA is None else None
        )
        #: The compiled pass that steps the agents' learning ticks over these tables
        #: (:meth:`build_pass`), or None and why not.
        self.native: NativePass | None = None
        self.native_reason = "not tried"

    def _shared_tables(self) -> list[np.ndarray]:
        """Every modality's tables as arrays (none learned: each one every agent shares)."""
        return [a for a in self.tables["A"] if isinstance(a, np.ndarray)]

    def build_pass(
        self, learner: Learner, spec: LearningSpec, *, cm: kernels.CompiledModel,
        settings: AifSettings, n_agents: int,
    ) -> None:
        """The compiled pass over these tables (:attr:`native`), or why the agents step with
        numpy (:attr:`native_reason`: :func:`~edge_agent.core.native_pass.per_agent_pass`)."""
        from edge_agent.core.native_pass import per_agent_pass  # noqa: PLC0415 - it learns

        found = per_agent_pass(self._loaded, self.tables["A"], learner, spec, cm=cm,
                               settings=settings, n_agents=n_agents,
                               transitions=self.transitions)
        if isinstance(found, str):
            self.native_reason = found
        else:
            self.native = found

    @property
    def model(self) -> GenerativeModel:
        """The model as loaded (each agent's learned tables are in :attr:`tables`)."""
        return self._loaded

    @property
    def quantized(self) -> None:
        """No int8 codes: the tables are float64."""
        return None

    def stepping(self) -> AgentStepping:
        """The stages of the agents: these tables' (the compiled pass, :meth:`tick_pass`, steps
        whole learning ticks over them)."""
        return self

    @property
    def stepping_name(self) -> str:
        """``"native"``, or ``"numpy: <why not native>"``."""
        return "native" if self.native is not None else f"numpy: {self.native_reason}"

    def tick_pass(self) -> NativePass | None:
        """The compiled pass that steps the learning ticks (:attr:`native`), if any."""
        return self.native

    def bytes_per_agent(self, learner: Learner) -> int:
        """Each agent's copy of the learned tables (a learned ``B`` on its support when it is
        sparse, a learned ``A`` on its prior's where that is smaller). The joint-outcome
        tables a learned ``A`` gives the information gain are made each tick, for
        :data:`OUTCOME_CHUNK` entries at most at a time: no agent keeps them."""
        total = 0
        for counts in learner.counts:
            for slot, index in enumerate(counts.tables):
                found = self.transitions.get(index) if counts.kind == "B" else None
                kept = self.tables["A"][index] if counts.kind == "A" else None
                if found is not None:
                    total += found.per_agent_nbytes
                elif isinstance(kept, per_agent.OnSupport):
                    total += kept.values.shape[1] * 8
                else:
                    total += counts.prior[slot].size * 8
        return total

    def codes_nbytes(self, learner: Learner) -> int:
        """No int8 codes."""
        del learner
        return 0

    # -- refresh -----------------------------------------------------------------------------------
    def refresh(
        self, learner: Learner, cm: kernels.CompiledModel
    ) -> tuple[None, bool, int]:
        """Each agent's learned tables become its counts' expectation (the shared compiled
        tables do not change)."""
        del cm
        for counts in learner.counts:
            if not counts.learned:
                continue
            for slot, index in enumerate(counts.tables):
                found = self.transitions.get(index) if counts.kind == "B" else None
                if found is not None:
                    # Only the (agent, action) tables whose counts moved, after the first.
                    touched = counts.touched_by_agent[slot]
                    if not counts.refreshed:
                        touched = np.ones_like(touched)
                    agents, actions = np.nonzero(touched)
                    sparse.normalise_touched(found, counts.counts[slot], agents, actions)
                    continue
                table = self.tables[counts.kind][index]
                if isinstance(table, per_agent.OnSupport):
                    _normalise_on_support(counts.counts[slot], table)
                    continue
                normalise_agent_tables(counts.counts[slot].reshape(table.shape), table)
            counts.mark_refreshed()
        return None, False, 0

    def forget_versions(self) -> None:
        """Every refresh normalises every learned table: nothing to forget."""

    def restore_loaded(self) -> None:
        """Every agent's learned tables back to the model's as loaded."""
        loaded = self._loaded
        tables = {"A": loaded.A, "B": loaded.B, "D": loaded.D}
        for counts in self._learner.counts:
            for index in counts.tables:
                found = self.transitions.get(index) if counts.kind == "B" else None
                if found is not None:
                    sparse.fill_from_table(found, loaded.B[index])
                    continue
                table = self.tables[counts.kind][index]
                if isinstance(table, per_agent.OnSupport):
                    table.values[...] = tables["A"][index].reshape(-1)[table.at]
                    continue
                table[...] = tables[counts.kind][index].reshape(table.shape[1:])

    def _transitions(self) -> list[per_agent.Transitions]:
        """Each factor's transitions: its sparse tables when kept so, else ``tables["B"]``."""
        return [self.transitions.get(f, cast(np.ndarray, b))
                for f, b in enumerate(self.tables["B"])]

    def transition_table(self, factor: int) -> np.ndarray:
        """``(N|1, S, S, U)``: factor ``factor``'s transitions in full (for inspection)."""
        found = self.transitions.get(factor)
        return cast(np.ndarray, self.tables["B"][factor]) if found is None else sparse.dense(found)

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)`` float64 ``p(o_m)`` under each agent's own ``A`` (``(N, O, S)`` learned,
        ``(1, O, S)`` shared)."""
        out = np.empty((len(rows), len(self.tables["A"])))
        for m, flat in enumerate(self.tables["A"]):
            if isinstance(flat, per_agent.OnSupport):
                mine = per_agent.OnSupport(flat.values[rows], flat.cell)
                picked = per_agent.observed_rows(mine, obs[:, m])
            else:
                picked = flat[rows if len(flat) > 1 else 0, obs[:, m]]
            out[:, m] = np.einsum("ns,ns->n", picked, joint)
        return out

    def likelihood(self, rows: IntArray) -> list[np.ndarray]:
        """Each modality's ``A`` of the agents ``rows``: ``(r, O_m, S)`` for a learned one (a
        copy of those agents' tables), ``(O_m, S)`` for one they share (a view)."""
        return per_agent.agents_likelihood(self.tables["A"], rows)

    # -- stepping ----------------------------------------------------------------------------------
    def infer_states(self, state: AgentState, obs: IntArray, stepper: BlockStepper) -> None:
        """Every agent's posterior under its own ``A``, from the prior its own ``B`` (or, at a
        trial's start, its own ``D``) gives; the prior is left in ``state.prior``."""
        t = self.tables
        prior = per_agent.priors(self._transitions(), cast(list[np.ndarray], t["D"]), state.qs,
                                 state.action, state.has_action)
        log_lik = per_agent.log_likelihood(t["A"], obs)
        for f, p in enumerate(prior):
            state.prior[f][...] = p
        cm = stepper.cm
        if cm.num_factors > 1:  # the shared path's fixed-point kernel, state-major
            for rows in stepper.blocks(state):
                kernels.infer_block_log_likelihood(
                    cm,
                    log_lik[rows.sl],
                    rows.prior,
                    rows.qs,
                    rows.blk,
                    num_iter=stepper.num_iter,
                    dF_tol=stepper.dF_tol,
                )
        else:
            qs = per_agent.infer_states(
                log_lik,
                [np.log(p + EPS) for p in prior],
                cm.num_states,
                stepper.num_iter,
                stepper.dF_tol,
            )
            state.qs[0][...] = qs[0]

    def infer_policies(self, state: AgentState, stepper: BlockStepper) -> None:
        """``G`` with each agent's own tables and ``q_pi = softmax(gamma * G + ln E)``."""
        cm = stepper.cm
        A, B = self.tables["A"], self._transitions()
        policies = cm.tree.policies
        # A chunk of agents at a time: every temporary at most OUTCOME_CHUNK entries (a few
        # agents' predicted states, outcomes and joint-outcome entries per policy).
        n = state.qs[0].shape[0]
        width = max(A[0].shape[2], self._possible.shape[0] if self._possible is not None
                    else A[0].shape[1])
        if self._layout is not None:
            width = max(width, len(self._layout.state_of))
        step = max(1, OUTCOME_CHUNK // (len(policies) * width))
        for start in range(0, n, step):
            sl = slice(start, min(n, start + step))
            mine = [per_agent.whole_tables(a, sl) for a in A]
            outcomes: tuple[np.ndarray, np.ndarray] | per_agent.CompactJoint | None = (
                self._outcomes)
            if self._info_gain and outcomes is None:  # a learned A: from the agents' own
                outcomes = (per_agent.outcome_tables(mine) if self._layout is None
                            else per_agent.compact_joint(mine, self._layout))
            state.G[sl] = per_agent.expected_free_energy(
                [q[sl] for q in state.qs], mine, [per_agent.agents_of(b, sl) for b in B],
                self._lnC, policies, outcomes=outcomes, use_utility=stepper.use_utility,
            )
        state.q_pi[...] = kernels.softmax_rows(state.G * float(stepper.gamma) + cm.lnE)

    def sample_action(self, state: AgentState, stepper: BlockStepper) -> None:
        """Each agent's action from its ``q_pi`` (marginal, pymdp's)."""
        cm = stepper.cm
        state.action[...] = per_agent.select_actions(
            state.q_pi,
            cm.tree.policies,
            cm.num_controls,
            mode=stepper.sampling_mode,
            deterministic=stepper.deterministic,
            alpha=stepper.alpha,
            rng=stepper.selection_rng(),
        )
        state.has_action.fill(True)


def _on_support(
    loaded: np.ndarray, prior: np.ndarray, n_agents: int
) -> per_agent.OnSupport | None:
    """Each of ``n_agents`` agents' copy of ``loaded`` ``(O, ...)`` kept on ``prior``'s support
    (:class:`~edge_agent.aif.per_agent.OnSupport`), or None where the support is all of it
    (nothing to gain). The loaded table is 0 off the support (a prior with a zero count where
    the table is not is refused when the group is made, :func:`~edge_agent.core.
    learning_scope.group_learning`: so every state has an outcome on it, and its counts a
    positive sum), and so is a refreshed table, for ever: updates land on the mask, the loaded
    table's support or, after the first refresh, the prior's, and forgetting decays toward the
    prior, 0 there."""
    outcomes = loaded.shape[0]
    support = (prior > 0).reshape(outcomes, -1)
    table = loaded.reshape(1, outcomes, -1)
    if support.all():
        return None
    one = per_agent.on_support(table, support)
    return per_agent.OnSupport(np.repeat(one.values, n_agents, axis=0), one.cell)


def _normalise_on_support(counts: np.ndarray, kept: per_agent.OnSupport) -> None:
    """Each agent's table on its support its counts' expectation, in place: ``counts[n, o, s]
    / sum_o counts[n, o, s]`` (the numbers :func:`~edge_agent.aif.learning_refresh.
    normalise_agent_tables` makes there), the sums in float64."""
    n, outcomes = counts.shape[0], counts.shape[1]
    whole = counts.reshape(n, outcomes, -1)
    totals = np.add.reduce(whole, axis=1, dtype=np.float64)  # (N, S)
    order = kept.at
    S = whole.shape[2]
    np.divide(whole.reshape(n, -1)[:, order], totals[:, order % S], out=kept.values,
              dtype=np.float64)
