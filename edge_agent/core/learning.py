"""An Active Inference agent group that learns its model from experience (shared counts).

:class:`LearningAgentGroup` is an :class:`~edge_agent.core.agents.AifAgentGroup` whose agents
also learn Dirichlet counts ``pA``/``pB``/``pD`` (:mod:`edge_agent.aif.learning`) from what they
observe and do, and infer with the tables those counts stand for. One tick, in pymdp's order:

1. infer states for every agent (the prior came from last tick's action under the current ``B``);
2. ``pA`` learns from this tick's outcomes and posteriors; ``pB`` from the posteriors before
   and after the action each agent took last tick (agents that start a trial have none);
3. every ``refresh_every`` ticks the tables become the counts' expectation: a new model is
   built, for ``int8`` groups only the columns touched since the last refresh are encoded again
   (a learned table is encoded whole at its first refresh), and it is compiled (the only cost
   that is not per tick); when only ``A`` moved since the last refresh, only its touched columns
   are brought into the compiled tables (:func:`~edge_agent.aif.kernels.refresh_likelihood`);
4. plan and act with the current tables, record the history row.

``pD`` learns at :meth:`end_trial` from the posterior that ends a trial, and the tables are
refreshed there. :meth:`reset` keeps what was learned; a group built with
``trial_ends_at_reset=True`` (the daemon's, whose world starts new trials by :meth:`reset`) ends
the trials of the agents it resets first. Three verbs act on the learning itself (the daemon's
signed commands call them): :meth:`~LearningAgentGroup.freeze_learning` (the counts stop
changing, the agents keep inferring with what was learned),
:meth:`~LearningAgentGroup.resume_learning` and :meth:`~LearningAgentGroup.reset_learning`
(counts back to their priors, tables back to the model's as loaded). The counts are ``shared``:
one set for the whole group, updated from all agents' experience in one batched reduction; they
are reserved in the memory budget (with the group's own int8 codes of the learned tables and the
update's gain scratch, :attr:`LearningAgentGroup.learning_nbytes`), and the previous tick's
posteriors ``B`` learning needs and the update's scratch per agent with the agents.

Under a planning policy (:mod:`edge_agent.aif.planning`) every agent learns every tick, after
the inference pass (:meth:`LearningAgentGroup._inferred`), and the novelty is added for the
agents that plan. With workers (:meth:`start_workers`) the workers step the blocks, the caller
learns from the posteriors they leave in shared memory, and the workers are forked again
whenever the tables change (they hold the old ones copy-on-write).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.constants import EPS
from edge_agent.aif.learning import Learner, LearningSpec
from edge_agent.aif.learning_counts import DirichletCounts
from edge_agent.aif.learning_experience import Experience, experience_ticks
from edge_agent.aif.learning_kernels import joint_states, normalise, param_info_gain
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import (
    LogU8,
    QuantizedModel,
    SparseColumns,
    decode_log_u8,
    encode_log_u8,
    encode_transition,
    reencode_columns,
)
from edge_agent.core.agents import AifAgentGroup, IntArray, _BlockRows
from edge_agent.core.budget import Reservation
from edge_agent.errors import InputError, ModelError

logger = logging.getLogger(__name__)


class LearningAgentGroup(AifAgentGroup):
    """``n_agents`` agents that share one model and learn it together (scope ``shared``).

    ``learning`` says what is learned (``pA``/``pB``/``pD`` by modality or factor), at which
    rates, with how much forgetting and how often the tables are refreshed. Every other argument
    is :class:`AifAgentGroup`'s.
    """

    #: The counts' scope this class runs (``learning.settings.scope`` must say the same).
    scope: ClassVar[str] = "shared"
    #: Learning reads the prior this tick's inference started from (surprise) and writes it.
    derives_prior: ClassVar[bool] = False

    def __init__(
        self,
        model: GenerativeModel | QuantizedModel,
        n_agents: int,
        *,
        learning: LearningSpec,
        trial_ends_at_reset: bool = False,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name", "group"))
        #: :meth:`reset` ends the trials of the agents that acted in theirs (``pD`` learns).
        self.trial_ends_at_reset = trial_ends_at_reset
        if learning.settings.scope != self.scope:
            raise InputError(
                f"group {name!r}: learning scope {learning.settings.scope!r} needs "
                f"{'PerAgentLearningGroup' if self.scope == 'shared' else 'LearningAgentGroup'} "
                "(learning_group() picks the class by scope)"
            )
        self._float_model = model.dequantize() if isinstance(model, QuantizedModel) else model
        m = self._float_model
        #: Ticks of experience not learned from yet (a small group's, see :meth:`_learn`).
        self._experience: Experience | None = None
        try:
            self._learner = Learner(
                m.A,
                m.B,
                m.D,
                pA=learning.pA,
                pB=learning.pB,
                pD=learning.pD,
                settings=learning.settings,
                n_agents=n_agents,
            )
        except ModelError as err:
            raise InputError(f"group {name!r}: {err}") from err
        self.learning = learning
        #: Where the counts came from: ``"priors"``, or ``"snapshot"`` once a snapshot's counts
        #: learned from the same priors were restored (:meth:`load_state_dict`).
        self.counts_origin = "priors"
        self._quiet = False  # a warm-up's restore says nothing
        self._divergence = 0.0
        self._divergence_at: tuple[int, ...] = ()
        self._surprise, self._surprise_ticks, self._surprise_clock = 0.0, 0, 0
        #: The model whose ``A`` the surprise last stacked, the stacked rows and each
        #: modality's first row (:meth:`_outcome_probabilities`).
        self._stacked_A: tuple[GenerativeModel, np.ndarray, np.ndarray] | None = None
        #: The agents the surprise is taken over (indices) and the group size they are for.
        self._surprise_rows: tuple[IntArray, int] | None = None
        self._since_refresh = 0
        #: The counts' versions at the last refresh (None: the next refresh is a full one).
        self._versions: dict[str, int] | None = None
        self.refreshes = 0
        #: Refreshes that brought only the touched columns of ``A`` in (no compile).
        self.incremental_refreshes = 0
        #: int8 columns encoded by refreshes so far (a column: one distribution of A, B or D).
        self.columns_encoded = 0
        self._own_codes: dict[str, list[Any]] | None = None
        self._codes_nbytes: int | None = None
        #: Whether the counts are frozen (:meth:`freeze_learning`).
        self.learning_frozen = False
        super().__init__(model, n_agents, **kwargs)
        # What the group was loaded with: reset_learning() goes back to it.
        self._loaded = (self._float_model, self.quantized, self.cm)
        self._learning_reservation: Reservation | None = None
        if self._budget is not None:
            self._learning_reservation = self._budget.reserve(
                f"{self.name}:learning",
                "learning",
                self.learning_nbytes,
                hint=f"learn fewer tables in group {self.name!r}",
            )
            self._reservations.append(self._learning_reservation)

    # -- memory -----------------------------------------------------------------------------------
    @property
    def learning_nbytes(self) -> int:
        """What learning holds besides the agents' state: the counts (``Learner.nbytes``), the
        shared updates' gain scratch (``Learner.gain_nbytes``) and, for int8, the group's own
        codes of the learned tables (a refresh writes there), sized by the counts' support,
        which a learned table has from its first refresh on (a sparse ``B`` with more targets
        per column than the model's takes more)."""
        if self._codes_nbytes is None:
            self._codes_nbytes = 0
            if self.precision == "int8":
                for counts in self.learner.counts:
                    for slot in range(len(counts.tables)):
                        table = normalise(counts.prior[slot])
                        encoded = (
                            encode_transition(table) if counts.kind == "B" else encode_log_u8(table)
                        )
                        self._codes_nbytes += encoded.nbytes
        return self.learner.nbytes + self.learner.gain_nbytes + self._codes_nbytes

    def per_agent_nbytes(
        self, history_capacity: int | None = None, n_agents: int | None = None
    ) -> int:
        """:class:`AifAgentGroup`'s, plus the previous tick's posteriors, action and whether it
        acted (``B`` learns from them), and the shared update's scratch per agent (a bound,
        :meth:`~edge_agent.aif.learning.Learner.scratch_bytes_per_agent`)."""
        previous = sum(self.cm.num_states) * self.dtype.itemsize + self.cm.num_factors * 8 + 1
        scratch = self._learner.scratch_bytes_per_agent(self.dtype.itemsize)
        # A small group's kept ticks (see _learn): their rows, and the update's scratch for as
        # many rows.
        ticks = self._experience_ticks(self.n_agents if n_agents is None else n_agents)
        if ticks > 1:
            row = Experience.row_nbytes(
                self.cm.num_modalities, self.cm.num_states, self.dtype.itemsize,
                self._b_factors(),
            )
            scratch = ticks * (scratch + row)
        return super().per_agent_nbytes(history_capacity, n_agents) + previous + scratch

    def _b_factors(self) -> tuple[int, ...]:
        pB = self._learner.pB
        return () if pB is None else tuple(pB.tables)

    def _experience_ticks(self, n_agents: int) -> int:
        """Ticks a group of ``n_agents`` keeps before it learns from them (1: none kept)."""
        if self.scope != "shared":
            return 1
        return experience_ticks(
            n_agents,
            refresh_every=self.learning.refresh_every,
            forgetting=self.learning.settings.forgetting,
            novelty=self.learning.param_info_gain,
        )

    @property
    def nbytes(self) -> int:
        previous = [*self._qs_prev, self._action_prev, self._acted_prev]
        kept = 0 if self._experience is None else self._experience.nbytes
        return super().nbytes + sum(a.nbytes for a in previous) + kept

    def _allocate_arrays(self, n_agents: int) -> None:
        keep = min(self.n_agents, n_agents)
        old = getattr(self, "_qs_prev", [])
        super()._allocate_arrays(n_agents)
        # zeros, not garbage: a group that does not learn pB never writes them, and a snapshot
        # still carries them
        self._qs_prev = [np.zeros((n_agents, s), dtype=self.dtype) for s in self.cm.num_states]
        for new, cur in zip(self._qs_prev, old, strict=False):
            new[:keep] = cur[:keep]
        self._action_prev = np.empty_like(self.action)
        self._acted_prev = np.empty_like(self.has_action)
        if self._experience is not None and self._experience.ticks:
            self._learn_experience()  # the kept rows are of the old size
        ticks = self._experience_ticks(n_agents)
        self._experience = None if ticks == 1 else Experience(
            ticks, n_agents, num_modalities=self.cm.num_modalities,
            num_states=self.cm.num_states, dtype=self.dtype, b_factors=self._b_factors(),
        )

    # -- one tick ---------------------------------------------------------------------------------
    def step(
        self,
        obs: np.ndarray | Sequence[np.ndarray],
        now: float | None = None,
        *,
        record: bool = True,
    ) -> IntArray:
        """One tick (see the module doc); integer outcomes only (the counts learn from what was
        observed). A tick that refreshes the tables learns before it plans, so that the agents
        plan with what this tick taught them (pymdp's order); the others run the group's fused
        step and learn after it, from the same posteriors (the tables do not change between)."""
        o, _ = self.check_evidence(obs)
        if o is None:
            raise InputError(f"group {self.name!r} learns from integer outcomes, not soft evidence")
        self._note_surprise(o, self.prior)
        if not self.planning.every_tick:  # learns between inference and planning: _inferred
            self._keep_action()
            return self._step_checked(o, None, now, record, None)
        if self.learning_frozen:  # the plain group's step with the learned tables
            self._step_checked(o, None, now, record, None)
            self._keep_posteriors()
            return self.action
        if (
            self._since_refresh + 1 < self.learning.refresh_every
            and not self.learning.param_info_gain
        ):
            self._keep_action()
            self._step_checked(o, None, now, record, None)
            self._learn(o, self._action_prev, self._acted_prev)
            return self.action
        record = record and self.history is not None
        for rows in self._blocks():
            self._infer_block(o, None, rows, roots=False)
        self._learn(o, self.action, self.has_action)
        self.infer_policies()  # with the parameter information gain if the group seeks it
        self.sample_action()
        if record:
            for rows in self._blocks():
                self._encode_block(rows)
            self._record(o, now)
        self.ticks += 1
        return self.action

    def _keep_action(self) -> None:
        """Last tick's action and whether each agent acted, kept before a step replaces them:
        the transition ``pB`` learns from (nothing to keep when ``pB`` is not learned)."""
        if self._learner.pB is not None:
            np.copyto(self._action_prev, self.action)
            np.copyto(self._acted_prev, self.has_action)

    @classmethod
    def steps_by_planning_policy(cls) -> bool:
        """Shared counts learn under a planning policy (see :meth:`_inferred`)."""
        return True

    def _inferred(self, o: IntArray | None) -> None:
        """A planning tick, once every agent inferred its states: every agent learns, those
        that plan this tick and those that follow their committed plans alike (``pA`` from
        ``o`` and the posteriors, ``pB`` from the transition the action each agent took last
        tick made), and the tables are refreshed if due, so that the agents that plan now plan
        with what this tick taught (pymdp's order)."""
        assert o is not None  # step() refused soft evidence
        if self.learning_frozen:
            self._keep_posteriors()
        else:
            self._learn(o, self._action_prev, self._acted_prev)

    def _policies_chosen(self, rows: _BlockRows) -> None:
        """The agents that plan this tick seek novelty (``param_info_gain``): it is added to
        their ``G`` and their ``q_pi`` computed again, before they act."""
        if not self.learning.param_info_gain or self.learning_frozen:
            return
        self._novelty(rows.qs, rows.G, rows.q_pi)
        np.copyto(rows.blk.x, rows.q_pi.T)

    def _planner(self, rows: _BlockRows, obs: IntArray | None) -> str:
        """:class:`AifAgentGroup`'s, but not the joint path (a whole tick in one pass) for
        agents that seek novelty: it is added between their evaluation and their choice."""
        planner = super()._planner(rows, obs)
        if planner == "joint" and self.learning.param_info_gain and not self.learning_frozen:
            return super()._planner(rows, None)
        return planner

    def _learn(self, obs: IntArray, action: IntArray, acted: np.ndarray) -> None:
        """``pA`` from ``obs`` and the posteriors, ``pB`` from the transition ``qs_prev -> qs``
        of every agent that had acted (``action``, ``acted``: before this tick's choice); then
        the tables are refreshed if due, and ``qs`` becomes next tick's ``qs_prev``.

        A small group keeps its ticks (:mod:`edge_agent.aif.learning_experience`) and learns
        from them in one update when the tables are refreshed, when the kept ticks fill their
        rows, or before anything reads the counts (:attr:`learner`): the same counts, for a
        few copies per tick instead of an update's few dozen numpy calls."""
        experience = self._experience
        if experience is not None:
            experience.append(obs, self.qs, self._qs_prev, action, acted)
        else:
            learner = self._learner
            learner.learn_A(obs, self.qs)
            if learner.pB is not None and acted.any():
                learner.learn_B(self.qs, self._qs_prev, action, acted=acted)
        self._keep_posteriors()
        self._since_refresh += 1
        if self._since_refresh >= self.learning.refresh_every:
            self.refresh()
        elif experience is not None and experience.full:
            self._learn_experience()

    @property
    def learner(self) -> Learner:
        """The counts and their updates, with every tick the group has kept learned from
        first (see :meth:`_learn`)."""
        experience = self._experience
        if experience is not None and experience.ticks:
            self._learn_experience()
        return self._learner

    def _learn_experience(self) -> None:
        """Learn from the ticks kept, in one update (each tick counts as one)."""
        experience = self._experience
        assert experience is not None
        ticks, rows, acted_ticks = experience.ticks, experience.rows, experience.acted_ticks
        experience.clear()  # first: the counts' reads below must not come back here
        learner = self._learner
        learner.learn_A(experience.obs[:rows], [q[:rows] for q in experience.qs], updates=ticks)
        if learner.pB is not None and acted_ticks:
            learner.learn_B(
                [q[:rows] for q in experience.qs],
                [q[:rows] for q in experience.qs_prev],
                experience.actions[:rows],
                acted=experience.acted[:rows],
                updates=acted_ticks,
            )

    def _keep_posteriors(self) -> None:
        """``qs`` becomes next tick's ``qs_prev`` (also while frozen: the first tick after
        :meth:`resume_learning` learns the transition that led to it); only ``pB`` learns
        from it, so a group that does not learn ``pB`` copies nothing."""
        if self._learner.pB is None:
            return
        for prev, q in zip(self._qs_prev, self.qs, strict=True):
            np.copyto(prev, q)

    def learn(self, obs: np.ndarray) -> None:
        """Learn from this tick's outcomes ``obs (N, M)`` and the current posteriors, after
        :meth:`infer_states` (``pB``: from the transition the last committed action made; the
        API path a replay takes, where :meth:`step` does it all). Nothing is learned while
        frozen."""
        if self.learning_frozen:
            self._keep_posteriors()
            return
        self._learn(self.check_obs(obs), self.action, self.has_action)

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)``, with the parameter information gain when the group
        seeks novelty (``LearningSpec.param_info_gain``)."""
        super().infer_policies()
        self._add_novelty()
        return self.q_pi, self.G

    def _add_novelty(self) -> None:
        """``G += `` the information gain about ``pA`` and ``pB`` per policy, then
        ``q_pi = softmax(gamma * G + ln E)`` again (float64, from the float tables)."""
        if not self.learning.param_info_gain:
            return
        self._novelty(self.qs, self.G, self.q_pi)

    def _novelty(self, qs: Sequence[np.ndarray], G: np.ndarray, q_pi: np.ndarray) -> None:
        """In place for the agents of ``qs`` (``(n, S_f)``): ``G (n, P) +=`` their information
        gain about ``pA`` and ``pB``, ``q_pi = softmax(gamma * G + ln E)``."""
        learner, m = self.learner, self._float_model
        counts_A = (
            {}
            if learner.pA is None
            else dict(zip(learner.pA.tables, learner.pA.counts, strict=True))
        )
        counts_B = (
            {}
            if learner.pB is None
            else dict(zip(learner.pB.tables, learner.pB.counts, strict=True))
        )
        gain = param_info_gain(
            qs, m.A, m.B, pA=counts_A, pB=counts_B, policies=self.cm.tree.policies
        )
        G += gain.astype(self.dtype, copy=False)
        logits = G * self.settings.gamma + np.asarray(self.cm.lnE, dtype=self.dtype)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        np.copyto(q_pi, logits)

    def end_trial(
        self, mask: np.ndarray | None = None, *, posterior: Sequence[np.ndarray] | None = None
    ) -> None:
        """The agents in ``mask`` (all by default) finished a trial: ``pD`` learns from their
        posteriors (``posterior[f]`` rows of the selected agents instead, e.g. a trial's first),
        the tables are refreshed, and they start again from the learned ``D``."""
        sel = np.ones(self.n_agents, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._learn_D(sel, posterior)
        super().reset(sel)

    def _learn_D(  # noqa: N802 - pymdp's table names
        self, sel: np.ndarray, posterior: Sequence[np.ndarray] | None = None
    ) -> None:
        # ``_learner``: asking whether ``pD`` is learned reads no counts, so the ticks kept for
        # ``A`` and ``B`` stay kept (the refresh below learns them first).
        if self._learner.pD is not None and sel.any() and not self.learning_frozen:
            self._learner.learn_D(
                [q[sel] for q in self.qs] if posterior is None else list(posterior),
                agents=np.flatnonzero(sel),
            )
            self.refresh()

    def reset(self, mask: np.ndarray | None = None) -> None:
        """New trials for the agents in ``mask`` (all by default), keeping what was learned.
        With ``trial_ends_at_reset`` the agents of ``mask`` that acted in their trial end it
        first: ``pD`` learns from their last posterior (an agent reset before its first step
        has no trial to sum up)."""
        if self.trial_ends_at_reset and self._learner.pD is not None:
            sel = np.ones(self.n_agents, dtype=bool) if mask is None else np.asarray(mask, bool)
            self._learn_D(sel & self.has_action)
        super().reset(mask)

    # -- verbs on the learning -------------------------------------------------------------------
    def freeze_learning(self) -> bool:
        """Stop updating the counts (no learning, no forgetting, no ``pD`` at a trial's end);
        the agents keep inferring and planning with the tables the counts stand for, refreshed
        now if some of what was learned was not in them yet. While frozen a tick is the plain
        group's (without the parameter information gain: nothing is learned). False if it was
        frozen already."""
        if self.learning_frozen:
            return False
        if self._since_refresh:
            self.refresh()
        self.learning_frozen = True
        return True

    def resume_learning(self) -> bool:
        """Learn again from the next tick on, from the counts as they were frozen. False if
        it was not frozen."""
        if not self.learning_frozen:
            return False
        self.learning_frozen = False
        return True

    def reset_learning(self) -> None:
        """Forget what was learned: every learned table's counts back to their prior (every
        agent's, per agent), the tables back to the model's as the group was loaded with them,
        each kind's ``version`` bumped (:meth:`DirichletCounts.reset`). Beliefs, trials and
        whether learning is frozen stay as they are."""
        loaded = self._loaded[0]
        tables = {"A": loaded.A, "B": loaded.B, "D": loaded.D}
        for counts in self.learner.counts:
            counts.reset(tables[counts.kind])
        self._since_refresh = 0
        self.counts_origin = "priors"
        self._restore_loaded()

    def learning_state(self) -> dict[str, Any]:
        """``frozen``, and per kind of counts (``pA``, ``pB``, ``pD``) its ``version`` (updates
        and resets so far) and ``reset_at`` (the version of the last reset; 0: never)."""
        return {
            "frozen": self.learning_frozen,
            "scope": self.scope,
            "counts": {
                f"p{c.kind}": {"version": c.version, "reset_at": c.reset_at}
                for c in self.learner.counts
            },
        }

    def _restore_loaded(self) -> None:
        """The model the group was loaded with, its int8 codes and its compilation, again."""
        self._float_model, quantized, cm = self._loaded
        if quantized is not None:
            self.quantized = quantized
            self._own_codes = None  # copied again at the next refresh
        self._install(cm)

    def refresh(self) -> None:
        """The agents infer with the counts' expectation from now on.

        When only ``A`` changed since the last refresh and every learned ``A`` already follows
        its counts, only the columns touched since then are normalised, encoded (``int8``) and
        brought into the compiled tables (:func:`~edge_agent.aif.kernels.refresh_likelihood`).
        Otherwise (a table's first refresh, ``B`` or ``D`` changed, or the support moved) the
        model is rebuilt from the normalised counts (quantized again for ``int8``) and compiled;
        the kernel scratch is made anew if the new tables need another planner."""
        if self._experience is not None and self._experience.ticks:
            self._learn_experience()
        if self._refresh_likelihood():
            self.incremental_refreshes += 1
            self._workers_follow()
        else:
            self._refresh_all()
        self._versions = self._counts_versions()
        self._since_refresh = 0
        self.refreshes += 1

    def _counts_versions(self) -> dict[str, int]:
        return {counts.kind: counts.version for counts in self.learner.counts}

    def _refresh_likelihood(self) -> bool:
        """The incremental refresh (see :meth:`refresh`); False when it does not apply (the
        counts, the model and the compiled tables are then as they were; the group's int8 codes
        of the touched columns may be encoded already, as the full refresh encodes them)."""
        learner, m = self.learner, self._float_model
        pA, versions = learner.pA, getattr(self, "_versions", None)
        if pA is None or versions is None or not pA.refreshed:
            return False
        if learner.pD is not None and versions.get("D") != learner.pD.version:
            return False
        pB = learner.pB
        if pB is not None and versions.get("B") != pB.version and not self._same_transitions():
            return False
        columns = np.zeros(m.num_states, dtype=bool)
        for touched in pA.touched:
            columns |= touched
        cols = np.flatnonzero(columns.reshape(-1))
        A = list(m.A)
        codes = None if self.quantized is None else self._owned_codes(self.quantized)
        encoded = 0
        for slot, index in enumerate(pA.tables):
            touched = pA.touched[slot].reshape(-1)
            if not touched.any():
                continue
            flat = pA.counts[slot].reshape(pA.counts[slot].shape[0], -1)
            table = A[index].reshape(flat.shape).copy()
            table[:, touched] = normalise(flat[:, touched])
            A[index] = table.reshape(A[index].shape)
            if codes is not None:
                encoded += reencode_columns(_flat_codes(codes["A"][index]), table, touched)
        if codes is None:
            A_cols = [a.reshape(a.shape[0], -1)[:, cols] for a in A]
        else:
            A_cols = [decode_log_u8(_columns(_flat_codes(q), cols)) for q in codes["A"]]
        cm = kernels.refresh_likelihood(self.cm, columns.reshape(-1), A_cols)
        if cm is None:
            return False
        self.cm = cm
        self.columns_encoded += encoded
        if pB is not None:
            pB.mark_refreshed()  # its tables are what they were (_same_transitions)
        for table in A:
            table.setflags(write=False)
        self._float_model = replace(m, A=tuple(A))
        quantized = self.quantized
        if codes is not None and quantized is not None and any(
            mine is not theirs for mine, theirs in zip(codes["A"], quantized.A, strict=True)
        ):  # the group's own codes, encoded in place from their first refresh on
            self.quantized = replace(quantized, A=tuple(codes["A"]))
        pA.mark_refreshed()
        return True

    def _same_transitions(self) -> bool:
        """Whether every learned ``B`` (past its first refresh) normalises, in the columns
        touched since the last refresh, to exactly the table the agents use now: a ``B`` whose
        columns each have one possible target (a deterministic move learned with counts on its
        support only) stays what it was however its counts grow. Those columns are known
        (:meth:`~edge_agent.aif.learning_counts.DirichletCounts.fixed_columns`): only the
        others are normalised and compared."""
        pB, m = self.learner.pB, self._float_model
        if pB is None or not pB.refreshed:
            return False
        for slot, index in enumerate(pB.tables):
            touched = pB.touched[slot] & ~pB.fixed_columns(slot, m.B[index])
            if touched.any() and not np.array_equal(
                normalise(pB.counts[slot][:, touched]), m.B[index][:, touched]
            ):
                return False
        return True

    def _refresh_all(self) -> None:
        learner, m = self.learner, self._float_model
        A, B, D = list(m.A), list(m.B), list(m.D)
        # int8: the group's own copy of the codes; only what changed is encoded again.
        quantized = self.quantized
        codes = None if quantized is None else self._owned_codes(quantized)
        for counts, tables in ((learner.pA, A), (learner.pB, B), (learner.pD, D)):
            # A table follows its counts from their first update on; until then it is the
            # table the model was given (pymdp: update_A sets A, not B).
            if counts is None or not counts.learned:
                continue
            for slot, index in enumerate(counts.tables):
                tables[index] = counts.normalised(slot)
                if codes is not None:
                    self._encode_table(codes, counts, slot, index, tables[index])
            counts.mark_refreshed()
        self._float_model = GenerativeModel.from_arrays(A, B, m.C, D, m.E)
        source: GenerativeModel | QuantizedModel = self._float_model
        if quantized is not None and codes is not None:
            source = self.quantized = QuantizedModel(
                A=tuple(codes["A"]),
                B=tuple(codes["B"]),
                C=quantized.C,
                D=tuple(codes["D"]),
                E=quantized.E,
                num_obs=m.num_obs,
                num_states=m.num_states,
                num_controls=m.num_controls,
            )
        self._install(kernels.compile_model(source, self.cm.tree.policies, dtype=self.dtype.type))

    def _install(self, cm: kernels.CompiledModel) -> None:
        """Infer and plan with ``cm`` from now on; the kernel scratch is made anew if it needs
        another planner."""
        old = kernels.Workspace.bytes_per_agent(self.cm, info_gain=self._use_info_gain)
        self.cm = cm
        if kernels.Workspace.bytes_per_agent(self.cm, info_gain=self._use_info_gain) != old or (
            self.cm.deep is not None
        ):
            block = self.block_size
            self._size_blocks()
            self._new_scratch()
            if not self.planning.every_tick and self.block_size != block:
                self._resize_gather()
            if self._agent_reservation is not None:
                self._agent_reservation.resize(self.bytes_for(self.n_agents, self.history_capacity))
        self._workers_follow()

    def _workers_follow(self) -> None:
        """The group's workers, forked before the tables changed, hold the old ones (copies
        on write): they are forked again, from the group as it is now."""
        if self._workers is not None:
            self._workers.refork()

    def _resize_gather(self) -> None:
        """A planning policy's buffers for the new (smaller) blocks; the committed plans and
        what this tick's inference left for the planners (belief change, evidence) are kept."""
        change, evidence = self._change.copy(), self._evidence.copy()
        self._allocate_planning(self.n_agents, self.n_agents)
        np.copyto(self._change, change)
        np.copyto(self._evidence, evidence)

    def _owned_codes(self, quantized: QuantizedModel) -> dict[str, list[Any]]:
        """The int8 tables by kind; the learned ones copied once (the model the group was
        given, or its cached compilation, may be shared with other groups)."""
        if self._own_codes is None:
            self._own_codes = {
                "A": list(quantized.A),
                "B": list(quantized.B),
                "D": list(quantized.D),
            }
            for counts in self.learner.counts:
                for index in counts.tables:
                    self._own_codes[counts.kind][index] = _copy_codes(
                        self._own_codes[counts.kind][index]
                    )
        return self._own_codes

    def _encode_table(
        self,
        codes: dict[str, list[Any]],
        counts: DirichletCounts,
        slot: int,
        index: int,
        table: np.ndarray,
    ) -> None:
        """The int8 form of one learned table: whole at its first refresh (its support becomes
        the counts' and stays so), then only the columns touched since the last refresh."""
        kind = counts.kind
        if kind == "D" or not counts.refreshed:
            codes[kind][index] = encode_transition(table) if kind == "B" else encode_log_u8(table)
            self.columns_encoded += int(np.prod(table.shape[1:]))
        else:
            self.columns_encoded += reencode_columns(
                codes[kind][index], table, counts.touched[slot]
            )

    @property
    def model(self) -> GenerativeModel:
        """The float model the agents infer with now (the counts' expectation since the last
        refresh)."""
        return self._float_model

    # -- what the daemon shows ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """:class:`AifAgentGroup`'s, and ``learning``: the scope, the tables learned, where the
        counts came from (``priors`` or ``snapshot``), whether they are frozen
        (:meth:`freeze_learning`), refreshes and the numbers of :meth:`metrics` (status shows
        them per group)."""
        out = super().describe()
        out["learning"] = {
            "scope": self.scope,
            "tables": [f"p{c.kind}{i}" for c in self.learner.counts for i in c.tables],
            "counts_from": self.counts_origin,
            "frozen": self.learning_frozen,
            "refreshes": self.refreshes,
            **self._learning_numbers(),
        }
        return out

    def metrics(self) -> dict[str, object]:
        """:class:`AifAgentGroup`'s, and the learning's: ``learning_updates`` (updates of the
        counts so far, every table's), ``learning_divergence`` (how far the learned tables are
        from their priors) and ``learning_surprise`` (mean surprise per tick): see
        :meth:`_learning_numbers`."""
        out = super().metrics()
        out.update({f"learning_{k}": v for k, v in self._learning_numbers().items()})
        return out

    def _learning_numbers(self) -> dict[str, float | int]:
        """``updates``: count updates so far (each table's updates added up); ``divergence``:
        the mean, over the learned tables' columns (and agents, per agent), of the KL
        divergence in nats of the table the counts stand for from the one their prior stands
        for, ``KL(E[p] || E[p0])`` (0: nothing learned); ``surprise``: the agents' mean
        surprise ``-ln p(o)`` of a tick's outcomes under the beliefs they predicted (summed over
        modalities), an exponential moving mean over about :data:`SURPRISE_TICKS` ticks."""
        versions = tuple(c.version for c in self.learner.counts)
        if self._divergence_at != versions:
            self._divergence = divergence_from_prior(self.learner.counts)
            self._divergence_at = versions
        return {
            "updates": sum(versions),
            "divergence": round(self._divergence, 9),
            "surprise": round(self._surprise, 6),
        }

    def _note_surprise(self, obs: IntArray, prior: Sequence[np.ndarray]) -> None:
        """Fold this tick's mean surprise ``-ln p(o)``, ``p(o_m) = A_m[o_m] . prior`` (the
        joint of the agents' predicted beliefs, ``prior[f]`` ``(N, S_f)``), into the moving
        mean: over every agent of a group of at most :data:`SURPRISE_AGENTS`, else over that
        many spread evenly (every ``ceil(N / SURPRISE_AGENTS)``-th), so that it costs a large
        group's tick little; and only every :data:`SURPRISE_EVERY`-th tick (the first
        included), which keeps the metric off most ticks of a small model."""
        self._surprise_clock += 1
        if (self._surprise_clock - 1) % SURPRISE_EVERY:
            return
        n = obs.shape[0]
        step = -(-n // SURPRISE_AGENTS)
        if self._surprise_rows is None or self._surprise_rows[1] != n:
            self._surprise_rows = (np.arange(0, n, step), n)
        rows = self._surprise_rows[0]
        if step > 1:  # views of those rows (the float64 joint below copies them once)
            obs, prior = obs[::step], [p[::step] for p in prior]
        joint = joint_states([np.asarray(p, dtype=np.float64) for p in prior])
        p_obs = self._outcome_probabilities(obs, rows, joint)
        np.add(p_obs, EPS, out=p_obs)
        np.log(p_obs, out=p_obs)
        total = -float(p_obs.sum()) / len(rows)  # the modalities' means over the agents, summed
        if self._surprise_ticks == 0:
            self._surprise = total
        else:
            weight = max(1.0 / (self._surprise_ticks + 1), SURPRISE_EVERY / SURPRISE_TICKS)
            self._surprise += weight * (total - self._surprise)
        self._surprise_ticks += 1

    def _outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)`` float64: ``p(o_m) = A_m[o_m] . joint`` of the agents ``rows`` (their
        outcomes ``obs`` ``(r, M)``, their joint beliefs ``joint`` ``(r, S)``), under the ``A``
        the agents infer with: every modality's rows of the group's float model stacked into one
        table (made again when the model changes, at a refresh), one gather and one product."""
        model = self._float_model
        if self._stacked_A is None or self._stacked_A[0] is not model:
            tables = [a.reshape(a.shape[0], -1) for a in model.A]
            offsets = np.cumsum([0, *(t.shape[0] for t in tables[:-1])])
            stacked = np.concatenate(tables).astype(np.float64)
            self._stacked_A = (model, stacked, offsets)
        _, stacked, offsets = self._stacked_A
        picked = stacked[obs + offsets]  # (r, M, S)
        p_obs: np.ndarray = np.matmul(picked, joint[:, :, None])[:, :, 0]
        return p_obs

    # -- snapshots --------------------------------------------------------------------------------
    def learning_identity(self) -> bytes:
        """What the counts were learned from: a digest of the scope, the storage and every
        learned table's index and prior counts. Counts restored from a snapshot of another
        identity would be another learning's (another table, prior or scale): not taken."""
        digest = hashlib.sha256(f"{self.scope}:{self.learner.settings.counts_dtype}".encode())
        for counts in self.learner.counts:
            for index, prior in zip(counts.tables, counts.prior, strict=True):
                digest.update(f"|{counts.kind}{index}:{prior.shape}".encode())
                digest.update(np.ascontiguousarray(prior, dtype=np.float64).tobytes())
        return digest.digest()

    def state_dict(self) -> dict[str, np.ndarray]:
        """:class:`AifAgentGroup`'s arrays and the counts (``learn.pA0`` ...), their versions,
        and what they were learned from (``learn.identity``)."""
        out = super().state_dict()
        out["learn.identity"] = np.frombuffer(self.learning_identity(), dtype=np.uint8).copy()
        for f, q in enumerate(self._qs_prev):
            out[f"learn.qs_prev{f}"] = q
        for counts in self.learner.counts:
            for slot, index in enumerate(counts.tables):
                out[f"learn.p{counts.kind}{index}"] = counts.counts[slot]
            out[f"learn.version.{counts.kind}"] = np.array(counts.version, dtype=np.int64)
            out[f"learn.reset_at.{counts.kind}"] = np.array(counts.reset_at, dtype=np.int64)
        out["learn.frozen"] = np.array(self.learning_frozen)
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore beliefs and counts, then refresh the tables from the restored counts.

        Counts are taken only from a state learned from the same priors (its
        ``learn.identity``; a state without one, e.g. of the group before it learned, or of
        another learning table, restores the beliefs alone): then learning goes on from the
        priors, and the log says so."""
        super().load_state_dict(state)
        for f, q in enumerate(self._qs_prev):
            key = f"learn.qs_prev{f}"
            if key in state:
                q[...] = np.asarray(state[key]).reshape(q.shape)
        identity = state.get("learn.identity")
        if identity is None or np.asarray(identity, dtype=np.uint8).tobytes() != (
            self.learning_identity()
        ):
            self.counts_origin = "priors"
            if self._quiet:
                return
            logger.info(
                "group %r: beliefs restored; the state holds no counts learned from this "
                "group's priors (%s), learning starts from the priors",
                self.name,
                "none at all" if identity is None else "another table, prior or scope",
            )
            return
        for counts in self.learner.counts:
            for slot, index in enumerate(counts.tables):
                key = f"learn.p{counts.kind}{index}"
                if key not in state:
                    raise InputError(f"group {self.name!r} snapshot lacks {key!r}")
                arr = np.asarray(state[key], dtype=np.float64)
                if arr.shape != counts.counts[slot].shape:
                    raise InputError(
                        f"group {self.name!r} snapshot {key!r} has shape {arr.shape}, "
                        f"expected {counts.counts[slot].shape}"
                    )
                counts.restore(slot, arr)
            counts.version = int(state.get(f"learn.version.{counts.kind}", np.array(0)))
            counts.reset_at = int(state.get(f"learn.reset_at.{counts.kind}", np.array(0)))
            counts.reported_version = counts.version
        self.learning_frozen = bool(state.get("learn.frozen", np.array(False)))
        # Restored counts may differ anywhere from the tables, whatever their versions: the
        # refresh makes the tables from them in full (no incremental refresh without versions).
        self._versions = None
        self.refresh()
        if self._quiet:
            return
        self.counts_origin = "snapshot"
        logger.info(
            "group %r: learned counts restored (%s)",
            self.name,
            ", ".join(f"p{c.kind} after {c.version} updates" for c in self.learner.counts),
        )

    def warm_up(self, obs: np.ndarray) -> None:
        """:class:`AifAgentGroup`'s, with the counts, their experience and the refresh
        counters put back as well: the warm-up's step teaches nothing."""
        experience = [[e.copy() for e in c.experience] for c in self.learner.counts]
        counters = (self.refreshes, self.columns_encoded)
        self._quiet = True
        try:
            super().warm_up(obs)
        finally:
            self._quiet = False
        for counts, saved in zip(self.learner.counts, experience, strict=True):
            for e, s in zip(counts.experience, saved, strict=True):
                e[...] = s
        self.refreshes, self.columns_encoded = counters


#: The moving mean of the surprise spans about this many ticks.
SURPRISE_TICKS = 100
#: The surprise of a tick is the mean over at most this many agents of the group.
SURPRISE_AGENTS = 256
#: The surprise is sampled on every this many ticks (it cost a T-maze learning tick 11 % when
#: taken on every tick).
SURPRISE_EVERY = 8


#: Per-agent counts: the divergence is the mean over at most this many agents, spread evenly.
DIVERGENCE_AGENTS = 64


def divergence_from_prior(counts: Sequence[DirichletCounts]) -> float:
    """The mean over every learned column (of every table, and agent for per-agent counts: at
    most :data:`DIVERGENCE_AGENTS` of them, spread evenly, so that a status write costs the loop
    little) of ``KL(c / sum(c) || c0 / sum(c0))`` in nats, ``c`` the counts and ``c0`` their
    prior; columns whose prior is empty are left out. 0 when nothing was learned."""
    total, columns = 0.0, 0
    for table in counts:
        axis = 1 if table.scope == "per_agent" else 0
        for learned, prior in zip(table.counts, table.prior, strict=True):
            sample = learned[:: -(-len(learned) // DIVERGENCE_AGENTS)] if axis else learned
            q = normalise(prior, axis=0)
            p = normalise(sample, axis=axis)
            q = np.broadcast_to(q, p.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(p > 0, p * np.log(p / q), 0.0)
            kl = terms.sum(axis=axis)
            valid = np.isfinite(kl)
            total += float(kl[valid].sum())
            columns += int(valid.sum())
    return total / columns if columns else 0.0


def _copy_log(q: LogU8) -> LogU8:
    return LogU8(codes=q.codes.copy(), top=q.top.copy(), step=q.step.copy())


def _copy_codes(q: LogU8 | SparseColumns) -> LogU8 | SparseColumns:
    if isinstance(q, LogU8):
        return _copy_log(q)
    values = None if q.values is None else _copy_log(q.values)
    return SparseColumns(num_states=q.num_states, index=q.index.copy(), values=values)


def _flat_codes(q: LogU8 | SparseColumns) -> LogU8:
    """A likelihood's codes with the states flattened: ``(O, S_joint)`` views (writable, so a
    refresh encodes into the group's own codes through them)."""
    assert isinstance(q, LogU8)  # a likelihood is always dense log-u8
    n = q.codes.shape[0]
    return LogU8(codes=q.codes.reshape(n, -1), top=q.top.reshape(-1), step=q.step.reshape(-1))


def _columns(q: LogU8, cols: np.ndarray) -> LogU8:
    return LogU8(codes=q.codes[:, cols], top=q.top[cols], step=q.step[cols])
