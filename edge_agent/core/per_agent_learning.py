"""Agents that each learn their own counts (``scope = "per_agent"``).

:class:`PerAgentLearningGroup` is a :class:`~edge_agent.core.learning.LearningAgentGroup` whose
learned tables have an agent axis: every agent infers with its own tables and learns its own
counts, float64, through the batched per-agent kernels of :mod:`edge_agent.aif.per_agent`.
:func:`~edge_agent.core.learning.learning_group` builds one for a ``[groups.learning]`` table
of that scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from edge_agent.aif import kernels, per_agent
from edge_agent.aif.constants import EPS
from edge_agent.aif.learning import LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.core.agents import IntArray
from edge_agent.core.learning import LearningAgentGroup
from edge_agent.errors import InputError


class PerAgentLearningGroup(LearningAgentGroup):
    """``n_agents`` agents that each learn their own counts and infer with their own tables
    (scope ``per_agent``), float64.

    The shared kernels compile one model for a whole group; here every learned table has an
    agent axis (``(N, ...)`` float64 tables next to ``(N, ...)`` counts) and a tick runs the
    batched per-agent kernels of :mod:`edge_agent.aif.per_agent` (pymdp 0.0.7.1's maths, like
    the reference agent). Tables nobody learns stay shared. The memory budget holds the counts
    (the learning reservation, ``N`` copies of each learned table) and the per-agent tables
    (in :meth:`per_agent_nbytes`, with the agents); a budget without room refuses the group in
    one line. Not here: ``int8`` (the tables are float64), histories, several workers,
    ``param_info_gain``, :meth:`resize`: each is refused in one line.
    """

    scope: ClassVar[str] = "per_agent"

    @classmethod
    def steps_by_planning_policy(cls) -> bool:
        """Every agent plans every tick (its own tables, :meth:`step`)."""
        return False

    def __init__(
        self,
        model: GenerativeModel | QuantizedModel,
        n_agents: int,
        *,
        learning: LearningSpec,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name", "group"))
        refused = {
            "precision": kwargs.get("precision", "int8") != "float64",
            "history_capacity": bool(kwargs.get("history_capacity", 0)),
            "param_info_gain": learning.param_info_gain,
        }
        for what, bad in refused.items():
            if bad:
                raise InputError(
                    f"group {name!r}: per-agent learning runs float64 tables without history "
                    f"or parameter information gain; {what} is not available with it"
                )
        self._tables: dict[str, list[np.ndarray]] | None = None
        super().__init__(model, n_agents, learning=learning, **kwargs)
        m = self._float_model
        n = self.n_agents
        S = int(np.prod(m.num_states))
        # Shared tables with an agent axis of 1; the learned ones get one copy per agent.
        tables: dict[str, list[np.ndarray]] = {
            "A": [a.reshape(1, a.shape[0], S) for a in m.A],
            "B": [b[None] for b in m.B],
            "D": [d[None] for d in m.D],
        }
        for counts in self.learner.counts:
            for index in counts.tables:
                tables[counts.kind][index] = np.repeat(tables[counts.kind][index], n, axis=0)
        self._tables = tables
        # The joint outcomes some state can produce, under the model's A or the counts' (a
        # learned A's support from its first refresh on): the only rows the information gain
        # needs (the T-maze: 12 of 24).
        supports = [(a > 0).reshape(a.shape[0], S) for a in m.A]
        if self.learner.pA is not None:
            for slot, index in enumerate(self.learner.pA.tables):
                supports[index] = supports[index] | (
                    self.learner.pA.prior[slot].reshape(supports[index].shape) > 0
                )
        self._possible = per_agent.possible_outcomes(supports) if len(m.A) > 1 else None
        self._lnC = [np.log(per_agent.softmax_rows(c[None])[0] + EPS) for c in m.C]
        self._outcomes = (
            per_agent.outcome_tables(tables["A"], self._possible) if self._use_info_gain else None
        )

    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """:class:`LearningAgentGroup`'s, plus each agent's copy of the learned tables (and of
        the joint-outcome table and its entropies the state information gain reads, when ``A``
        is learned)."""
        m, total = self._float_model, 0
        for counts in self.learner.counts:
            for slot in range(len(counts.tables)):
                total += counts.prior[slot].size * 8
        if self.learner.pA is not None and self.settings.use_states_info_gain:
            S = int(np.prod(m.num_states))  # one modality: its A is the joint table
            joint_outcomes = int(np.prod(m.num_obs)) if m.num_modalities > 1 else 0
            total += (joint_outcomes + 1) * S * 8
        return super().per_agent_nbytes(history_capacity, n_agents) + total

    def resize(self, n_agents: int) -> None:
        raise InputError(
            f"group {self.name!r}: a group with per-agent counts keeps its size ({self.n_agents})"
        )

    def start_workers(self, count: int) -> int:
        if count > 1:
            raise InputError(
                f"group {self.name!r}: a group with per-agent counts steps on one process; "
                "set workers = 1"
            )
        return super().start_workers(count)

    def step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None = None,
        *,
        record: bool = True,
    ) -> IntArray:
        """One tick: infer states with each agent's tables, learn (``pA`` from the outcome,
        ``pB`` from the transition of every agent that had acted), refresh if due, plan, act."""
        o, _ = self.check_evidence(obs)
        if o is None:
            raise InputError(f"group {self.name!r} learns from integer outcomes, not soft evidence")
        self.infer_states(o)
        self._note_surprise(o, self.prior)  # the prior this tick's inference started from
        if self.learning_frozen:
            self._keep_posteriors()
        else:
            self._learn(o, self.action, self.has_action)
        self.infer_policies()
        self.sample_action()
        self.ticks += 1
        return self.action

    def _outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """:class:`LearningAgentGroup`'s under each agent's own ``A`` (``(N, O, S)`` learned,
        ``(1, O, S)`` shared)."""
        assert self._tables is not None
        out = np.empty((len(rows), len(self._tables["A"])))
        for m, flat in enumerate(self._tables["A"]):
            picked = flat[rows if len(flat) > 1 else 0, obs[:, m]]
            out[:, m] = np.einsum("ns,ns->n", picked, joint)
        return out

    def infer_states(self, obs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every agent's posterior under its own ``A``, from the prior its own ``B`` (or, at a
        trial's start, its own ``D``) gives."""
        assert self._tables is not None
        o = self.check_obs(np.asarray(obs))
        t = self._tables
        prior = per_agent.priors(t["B"], t["D"], self.qs, self.action, self.has_action)
        log_lik = per_agent.log_likelihood(t["A"], o)
        for f, p in enumerate(prior):
            self.prior[f][...] = p
        if self.cm.num_factors > 1:  # the shared path's fixed-point kernel, state-major
            for rows in self._blocks():
                kernels.infer_block_log_likelihood(
                    self.cm,
                    log_lik[rows.sl],
                    rows.prior,
                    rows.qs,
                    rows.blk,
                    num_iter=self._num_iter,
                    dF_tol=self._dF_tol,
                )
        else:
            qs = per_agent.infer_states(
                log_lik,
                [np.log(p + EPS) for p in prior],
                self.cm.num_states,
                self._num_iter,
                self._dF_tol,
            )
            self.qs[0][...] = qs[0]
        return [q.copy() for q in self.qs]

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``G`` with each agent's own tables and ``q_pi = softmax(gamma * G + ln E)``."""
        assert self._tables is not None
        G = per_agent.expected_free_energy(
            self.qs,
            self._tables["A"],
            self._tables["B"],
            self._lnC,
            self.cm.tree.policies,
            outcomes=self._outcomes,
            use_utility=self._use_utility,
        )
        self.G[...] = G
        self.q_pi[...] = per_agent.softmax_rows(G * float(self._gamma) + self.cm.lnE)
        return self.q_pi, self.G

    def sample_action(self) -> IntArray:
        self.action[...] = per_agent.select_actions(
            self.q_pi,
            self.cm.tree.policies,
            self.cm.num_controls,
            mode=self._sampling_mode,
            deterministic=self._deterministic,
            alpha=self._alpha,
            rng=self.selection_rng(),
        )
        self.has_action.fill(True)
        return self.action

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)``; the next prior follows from them."""
        self.action[...] = self.check_actions(actions)
        self.has_action.fill(True)

    def _restore_loaded(self) -> None:
        """Every agent's learned tables back to the model's as loaded."""
        assert self._tables is not None
        loaded = self._loaded[0]
        tables = {"A": loaded.A, "B": loaded.B, "D": loaded.D}
        for counts in self.learner.counts:
            for index in counts.tables:
                table = self._tables[counts.kind][index]
                table[...] = tables[counts.kind][index].reshape(table.shape[1:])
        if self._outcomes is not None and self.learner.pA is not None:
            self._outcomes = per_agent.outcome_tables(self._tables["A"], self._possible)
        self._float_model = loaded

    def refresh(self) -> None:
        """Each agent's learned tables become its counts' expectation."""
        if self._tables is None:  # during construction
            return
        for counts in self.learner.counts:
            if not counts.learned:
                continue
            for slot, index in enumerate(counts.tables):
                table = self._tables[counts.kind][index]
                c = counts.counts[slot].reshape(table.shape)
                # normalise() without its temporary: the sums in float64, divided into place
                np.divide(
                    c,
                    np.add.reduce(c, axis=1, dtype=np.float64, keepdims=True),
                    out=table,
                    dtype=np.float64,
                )
            counts.mark_refreshed()
        if self._outcomes is not None and self.learner.pA is not None:
            self._outcomes = per_agent.outcome_tables(self._tables["A"], self._possible)
        self._since_refresh = 0
        self.refreshes += 1
