"""What an Active Inference group's agents learn, and the calls its tick makes to learn it.

:class:`GroupLearning` is the part of an :class:`~edge_agent.core.agents.AifAgentGroup` built
with ``learning=`` (a :class:`~edge_agent.aif.learning.LearningSpec`): its agents learn Dirichlet
counts ``pA``/``pB``/``pD`` (:mod:`edge_agent.aif.learning`) from what they observe and do, and
infer with the tables those counts stand for. It holds the counts (a
:class:`~edge_agent.aif.learning.Learner`: one owner, whose ``DirichletCounts`` give the
increments since the last report, sparse by touched column), the previous tick's posteriors and
action the transitions are learned from, the ticks a small group keeps to learn from at once,
the surprise (:class:`~edge_agent.core.surprise.SampledSurprise`) and the verbs on the learning
itself. Its **scope** is what the counts refresh into (:class:`LearnedTables`): one model shared
by every agent (``shared``, :mod:`edge_agent.core.shared_learning`) or each agent's own tables
(``per_agent``, :mod:`edge_agent.core.per_agent_learning`, which also step the agents).

The group's tick paths (:mod:`edge_agent.core.tick_paths`) call it at a few points of the
tick, with what it needs:

* :meth:`~GroupLearning.observe` once the tick's outcomes and the prior the agents predicted
  them with are at hand (the surprise);
* :meth:`~GroupLearning.keep_action` before a step replaces the last action (``B`` learns the
  transition it made);
* after inference, :meth:`~GroupLearning.after_inference`: ``pA`` learns from the outcomes and
  posteriors, ``pB`` from the transition, the tables are refreshed if due; it returns the new
  compiled tables the group installs;
* :meth:`~GroupLearning.before_choice` once ``G`` and ``q_pi`` are computed and before the
  agents choose (a group that seeks novelty adds it);
* :meth:`~GroupLearning.on_reset` and :meth:`~GroupLearning.end_trial` (``pD`` learns at the end
  of a trial).

One tick of an every-tick group, in pymdp's order, where the tables change (a refresh is due,
or the agents seek novelty): infer states for every agent; learn (the tables are refreshed);
plan and act with the current tables (:meth:`GroupLearning.learns_before_planning`). Other ticks
run the group's fused step and learn after it from the same posteriors (the tables do not change
between). Under a planning policy every agent learns after the inference pass, before anyone
plans. ``pD`` learns at :meth:`~GroupLearning.end_trial`; a group built with
``trial_ends_at_reset`` (the daemon's, whose world starts new trials by ``reset``) ends the trials
of the agents it resets first. A refresh (every ``refresh_every`` ticks, at a trial's end, when
learning is frozen with something not in the tables yet, after a snapshot's counts are
restored) is the scope's: a shared group's brings only ``A``'s touched columns into its compiled
tables when nothing else moved, and builds, encodes (int8: only the touched columns of a table
past its first refresh) and compiles the model again otherwise
(:mod:`edge_agent.aif.learning_refresh`). A scope may step the whole learning tick in one
compiled pass (:meth:`LearnedTables.tick_pass`, :mod:`edge_agent.core.native_pass`): the group
then calls :meth:`~GroupLearning.learned_in_pass` after it, and a shared pass, which leaves the
group's compiled tables behind its own, has them brought in (:meth:`~GroupLearning.take_tables`)
when something reads them. With workers the workers step the blocks, the group learns from the
posteriors they leave in shared memory, and forks them again whenever the tables change (they
hold the old ones copy-on-write). The counts, their previous posteriors, the update's scratch
and a shared int8 group's own codes are reserved in the memory budget
(:attr:`GroupLearning.nbytes`, :meth:`GroupLearning.bytes_per_agent`).

The verbs on the learning itself are its own (:class:`~edge_agent.core.contract.Learns`, which
the daemon's learning commands call: :meth:`~GroupLearning.freeze`, :meth:`~GroupLearning.resume`,
:meth:`~GroupLearning.forget`, and :meth:`~GroupLearning.refresh`, :meth:`~GroupLearning.summary`,
:meth:`~GroupLearning.take_increments`). Every compiled table a learning group steps with is
made here, so the learning keeps the latest it made (and holds no reference to the group): the
group takes what a verb made, and chooses its tick path again (a freeze changes it), before its
next tick (:attr:`GroupLearning.changes`, :meth:`GroupLearning.take_tables`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.learning import Learner, LearningSpec
from edge_agent.aif.learning_counts import DirichletCounts, TableIncrements, column_increments
from edge_agent.aif.learning_experience import EXPERIENCE_TICKS, Experience, experience_ticks
from edge_agent.aif.learning_kernels import normalise, param_info_gain
from edge_agent.aif.learning_storage import counts_arrays, rows_arrays, saved_counts, saved_rows
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.surprise import OutcomeProbabilities, SampledSurprise, TakenProbabilities
from edge_agent.errors import InputError

if TYPE_CHECKING:
    from edge_agent.aif.health import InTickFold
    from edge_agent.core.agent_state import AgentState
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.health_window import HealthWindow

logger = logging.getLogger(__name__)

__all__ = [
    "AgentStepping", "GroupLearning", "LearnedTables", "NewTables", "TickPass",
    "divergence_from_prior",
]


class NewTables(NamedTuple):
    """Compiled tables a refresh made, for the group to step with from now on."""

    cm: kernels.CompiledModel
    #: Only the values changed (the touched columns of ``A``): the planners' structure, and so
    #: the kernel scratch the group's blocks need, are those of the tables it replaces.
    same_layout: bool


class LearnedTables(Protocol):
    """A learning scope: the tables the counts refresh into, and what they are for."""

    #: ``"shared"`` or ``"per_agent"`` (:class:`~edge_agent.aif.learning.LearningSettings`).
    name: str
    #: Whether a group of this scope runs a planning policy (its agents then learn after the
    #: inference pass).
    plans_by_policy: bool

    @property
    def model(self) -> GenerativeModel:
        """The float model the agents infer with now (per agent: the shared tables' model)."""
        ...

    @property
    def quantized(self) -> QuantizedModel | None:
        """Its int8 codes (None: the tables are float)."""
        ...

    def refresh(
        self, learner: Learner, cm: kernels.CompiledModel
    ) -> tuple[kernels.CompiledModel | None, bool, int]:
        """The tables become the counts' expectation; the counts are marked refreshed.
        ``cm``: the compiled tables the group steps with now. Returns the compiled tables to
        step with from now on (None: unchanged), whether the refresh was incremental (no
        compile) and the int8 columns it encoded."""
        ...

    def restore_loaded(self) -> kernels.CompiledModel | None:
        """The tables the group was loaded with, again; their compiled form (None: the group's
        compiled tables did not change)."""
        ...

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)`` float64 ``p(o_m) = A_m[o_m] . joint`` of the agents ``rows`` (their
        outcomes ``obs``, joint predicted beliefs ``joint (r, S)``) under the ``A`` they infer
        with (:data:`~edge_agent.core.surprise.OutcomeProbabilities`)."""
        ...

    def forget_versions(self) -> None:
        """The counts changed otherwise than by updates (a snapshot's): the next refresh is a
        full one."""
        ...

    def bytes_per_agent(self, learner: Learner) -> int:
        """What one agent of this scope holds besides the learning's own per-agent arrays."""
        ...

    def codes_nbytes(self, learner: Learner) -> int:
        """The group's own int8 codes of the learned tables (0 for float tables)."""
        ...

    def stepping(self) -> AgentStepping | None:
        """The stages of agents with their own tables (None: the group's shared kernels)."""
        ...

    @property
    def stepping_name(self) -> str:
        """What steps the agents' learning ticks: ``"native"`` (one compiled pass per tick), or
        ``"numpy: <why not native>"``."""
        ...

    def tick_pass(self) -> TickPass | None:
        """The compiled pass that steps the group's learning ticks (None: numpy stages)."""
        ...


class TickPass(Protocol):
    """A group's whole learning tick in one pass (:mod:`edge_agent.core.native_pass`)."""

    #: Whether the pass leaves the group's compiled tables behind the tables it learns (a
    #: shared group's: :meth:`GroupLearning.take_tables` brings them in).
    leaves_compiled_behind: bool
    #: Whether the pass makes the tick's prior into the state (each agent's own tables: it is
    #: there after the tick), or keeps the next one there (shared: the tick's is there before).
    makes_prior: bool
    #: Whether the pass starts the trials of the agents it is given (``step_tick``'s
    #: ``starts``): their prior ``D``, no transition learned into their first tick.
    takes_starts: bool

    #: The agents whose transitions the last tick learned (``pB``: those that had acted).
    acted: int

    def step_tick(
        self, state: AgentState, obs: IntArray, *, learn: bool, model: GenerativeModel,
        qs_prev: Sequence[np.ndarray], starts: NDArray[np.bool_] | None = None,
    ) -> Sequence[np.ndarray]:
        """The whole learning tick: the posteriors, the counts' update (``learn``) and the
        tables following them, ``G``, ``q_pi`` and the actions, and the prior ``state`` keeps
        (per agent: the tick's; shared: the next); returns the tick's prior (the surprise's).
        ``model``: the scope's model now (a shared pass takes its tables again when it was
        replaced since: a refresh, a snapshot, a forget); ``qs_prev``: the last tick's
        posteriors (:attr:`GroupLearning.qs_prev`: a learned ``B`` learns from them, and the
        pass writes this tick's); ``starts``: the agents whose trial starts at the tick
        (:attr:`takes_starts`; None: nobody's). The caller then keeps the rest
        (:meth:`GroupLearning.learned_in_pass`)."""
        ...

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """The surprise's ``p(o_m)`` of the agents ``rows`` (an
        :data:`~edge_agent.core.surprise.OutcomeProbabilities`) of the tick stepped last."""
        ...

    def taken(self) -> TakenProbabilities | None:
        """The surprise's ``p(o_m)`` as the pass took it, of the agents asked (None: worked
        out by :meth:`outcome_probabilities` from the outcomes and the prior); the same for
        the pass's life."""
        ...

    def likelihood(self, rows: IntArray) -> list[np.ndarray]:
        """Each modality's ``A`` the agents ``rows`` infer with now (see
        :meth:`AgentStepping.likelihood`)."""
        ...

    #: Whether the next tick measures health's sampled agents (:meth:`measure` told it).
    measuring: bool

    def measure(self, rows: IntArray, fold: InTickFold | None = None) -> np.ndarray:
        """The next tick measures health's sampled agents ``rows`` in the pass (and folds
        them into ``fold``: see :data:`~edge_agent.core.health.InTick`)."""
        ...

    def unmeasure(self) -> None:
        """The next ticks measure nobody."""
        ...


class AgentStepping(Protocol):
    """How agents infer, plan and act, stage by stage: in place in the group's ``state``, with
    the group's ``stepper`` for its blocks, settings and generator; through each agent's own
    tables (per-agent learning) or the group's blocks (:mod:`edge_agent.core.tick_paths`)."""

    #: Whether inference makes the tick's prior (each agent's own tables: into ``state.prior``)
    #: rather than starting from the one the last tick left there.
    makes_prior: bool

    def infer_states(self, state: AgentState, obs: IntArray, stepper: BlockStepper) -> None: ...

    def infer_policies(self, state: AgentState, stepper: BlockStepper) -> None: ...

    def sample_action(self, state: AgentState, stepper: BlockStepper) -> None: ...

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """Each modality's ``A`` of the agents ``rows``: ``(r, O_m, S)`` where each learns its
        own, ``(O_m, S)`` where they share it (the health part's measures)."""
        ...


class GroupLearning:
    """What a group's agents learn (``spec``) of ``model`` (float, as loaded), their counts
    (``learner``, :func:`~edge_agent.core.learning_scope.group_learning` makes it) and the tables
    of ``scope`` (``name``: the group's, for messages; ``dtype``: the posteriors'; ``policies``,
    ``lnE`` and ``gamma``: what the novelty's policy posterior is made with). See the module
    doc."""

    def __init__(
        self,
        spec: LearningSpec,
        learner: Learner,
        model: GenerativeModel,
        scope: LearnedTables,
        *,
        name: str,
        dtype: np.dtype[Any],
        cm: kernels.CompiledModel,
        gamma: float,
        trial_ends_at_reset: bool = False,
    ) -> None:
        self.spec = spec
        self._policies, self._lnE, self._gamma = cm.tree.policies, cm.lnE, gamma
        #: The compiled tables the group steps with, as this learning last made them (every
        #: change of a learning group's tables is this learning's), and those it made since
        #: the group last took them (:meth:`take_tables`).
        self._cm = cm
        self._pending: NewTables | None = None
        #: Whether a shared compiled pass left the group's compiled tables behind the tables it
        #: learned (:meth:`learned_in_pass`): :meth:`take_tables` brings them in first.
        self.behind = False
        #: Bumped by the verbs called between ticks (:meth:`freeze`, :meth:`resume`,
        #: :meth:`forget`, :meth:`refresh`): the group takes their tables and chooses its tick
        #: path again before its next tick.
        self.changes = 0
        self.name = name
        self.scope = scope
        self.dtype = dtype
        #: :meth:`on_reset` ends the trials of the agents that acted in theirs (``pD`` learns).
        self.trial_ends_at_reset = trial_ends_at_reset
        self._learner = learner
        self._loaded = model
        #: Whether the agents step with tables of their own (then every tick learns before it
        #: plans).
        self._own_tables = scope.stepping() is not None
        self._num_states = model.num_states
        self._num_modalities = model.num_modalities
        #: Where the counts came from: ``"priors"``, or ``"snapshot"`` once a snapshot's counts
        #: learned from the same priors were restored (:meth:`load_state_dict`).
        self.counts_origin = "priors"
        #: Whether the counts are frozen (:meth:`freeze`).
        self.frozen = False
        self.refreshes = 0
        #: Refreshes that brought only the touched columns of ``A`` in (no compile).
        self.incremental_refreshes = 0
        #: int8 columns encoded by refreshes so far (a column: one distribution of A, B or D).
        self.columns_encoded = 0
        self.surprise = SampledSurprise()
        self._quiet = False  # a warm-up's restore says nothing
        self._since_refresh = 0
        #: What :meth:`_tables_stay` found, and the model and ``B`` masks it found it for.
        self._stay: tuple[tuple[object, ...], bool] | None = None
        self._divergence = 0.0
        self._divergence_at: tuple[int, ...] = ()
        self._codes_nbytes: int | None = None
        #: Ticks of experience not learned from yet (a small group's, see :meth:`learn`).
        self._experience: Experience | None = None
        # The previous tick: posteriors, action and whether each agent acted (pB learns from
        # them); made by allocate(), only where pB is learned (empty otherwise).
        self._qs_prev: list[np.ndarray] = []
        self._action_prev = np.zeros((0, 0), dtype=np.int64)
        self._acted_prev = np.zeros(0, dtype=bool)

    @property
    def model(self) -> GenerativeModel:
        """The float model the agents infer with now (the scope's; the learned tables a
        shared pass left behind brought in first)."""
        self._catch_up()
        return self.scope.model

    # -- memory ------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """What learning holds besides the agents' state: the counts (``Learner.nbytes``), the
        shared updates' gain scratch (``Learner.gain_nbytes``) and, for int8, the group's own
        codes of the learned tables (a refresh writes there)."""
        if self._codes_nbytes is None:
            self._codes_nbytes = self.scope.codes_nbytes(self._learner)
        return self._learner.nbytes + self._learner.gain_nbytes + self._codes_nbytes

    def _b_factors(self) -> tuple[int, ...]:
        pB = self._learner.pB
        return () if pB is None else tuple(pB.tables)

    def _experience_ticks(self, n_agents: int) -> int:
        """Ticks a group of ``n_agents`` keeps before it learns from them (1: none kept)."""
        if self.scope.name != "shared":
            return 1
        refresh_every = self.spec.refresh_every
        if self._only_fixed_transitions():  # a refresh never installs anything: keep the most
            refresh_every = max(refresh_every, EXPERIENCE_TICKS)
        return experience_ticks(
            n_agents,
            refresh_every=refresh_every,
            forgetting=self.spec.settings.forgetting,
            novelty=self.spec.param_info_gain,
        )

    def bytes_per_agent(self, n_agents: int) -> int:
        """One agent's bytes in a group of ``n_agents``: the previous tick's posteriors, action
        and whether it acted (``B`` learns from them: none without ``pB``), the shared update's
        scratch per agent (a bound, :meth:`~edge_agent.aif.learning.Learner.
        scratch_bytes_per_agent`), a small group's kept ticks (their rows, and the update's
        scratch for as many) and the scope's own (each agent's tables, per agent)."""
        item = self.dtype.itemsize
        previous = (
            sum(self._num_states) * item + len(self._num_states) * 8 + 1
            if self._keeps_previous
            else 0
        )
        scratch = self._learner.scratch_bytes_per_agent(item)
        ticks = self._experience_ticks(n_agents)
        if ticks > 1:
            row = Experience.row_nbytes(
                self._num_modalities, self._num_states, item, self._b_factors()
            )
            scratch = ticks * (scratch + row)
        return previous + scratch + self.scope.bytes_per_agent(self._learner)

    @property
    def allocated_nbytes(self) -> int:
        """Bytes of the per-agent arrays allocated now (previous tick, kept ticks)."""
        previous = [*self._qs_prev, self._action_prev, self._acted_prev]
        kept = 0 if self._experience is None else self._experience.nbytes
        return sum(a.nbytes for a in previous) + kept

    def allocate(self, n_agents: int, action: np.ndarray, has_action: np.ndarray) -> None:
        """Arrays for ``n_agents`` (the first agents' previous posteriors carried over;
        ``action`` and ``has_action``: the group's, whose shapes the kept copies take). Ticks
        kept for the old size are learned from first."""
        if self._keeps_previous:
            keep = min(len(self._acted_prev), n_agents)
            old = self._qs_prev
            # zeros, not garbage: the first tick's (before any keep) and a snapshot's rows
            self._qs_prev = [np.zeros((n_agents, s), dtype=self.dtype) for s in self._num_states]
            for new, cur in zip(self._qs_prev, old, strict=False):
                new[:keep] = cur[:keep]
            self._action_prev = np.empty_like(action)
            self._acted_prev = np.empty_like(has_action)
        if self._experience is not None and self._experience.ticks:
            self._learn_experience()  # the kept rows are of the old size
        ticks = self._experience_ticks(n_agents)
        self._experience = None if ticks == 1 else Experience(
            ticks, n_agents, num_modalities=self._num_modalities,
            num_states=self._num_states, dtype=self.dtype, b_factors=self._b_factors(),
        )

    @property
    def _keeps_previous(self) -> bool:
        """Whether the group keeps the previous tick's posteriors, action and flag: only ``pB``
        learns from them (a group that does not learn ``B`` allocates, copies, saves and
        reserves none)."""
        return self._learner.pB is not None

    # -- the tick's calls --------------------------------------------------------------------------
    @property
    def learns_likelihood(self) -> bool:
        """Whether a tick can change the ``A`` its agents inferred with (``pA`` learns, not
        frozen): health then works out what depends on ``A`` before the tick
        (:meth:`AifHealth.before <edge_agent.core.health.AifHealth.before>`)."""
        return self._learner.pA is not None and not self.frozen

    @property
    def own_tables(self) -> tuple[int, ...]:
        """The modalities whose ``A`` each agent learns for itself (per-agent ``pA``; empty
        otherwise): health keeps their sampled agents' tables before a tick
        (:class:`~edge_agent.core.health.AifHealth`'s ``own_tables``)."""
        pA = self._learner.pA
        return tuple(pA.tables) if pA is not None and pA.scope == "per_agent" else ()

    def learns_before_planning(self) -> bool:
        """Whether an every-tick group's next tick must learn between inference and planning:
        the tables change in it (a refresh is due, or the agents seek novelty; always for agents
        with their own tables). Else it runs the group's fused step and learns after it."""
        if self._own_tables:
            return True
        if self.frozen:
            return False
        if self.spec.param_info_gain:
            return True
        return self._since_refresh + 1 >= self.spec.refresh_every and not self._tables_stay()

    def _tables_stay(self) -> bool:
        """Whether no update of the counts can change the tables the agents use, so that a
        refresh installs nothing: only ``B`` is learned, its tables follow its counts, and every
        column of them is a deterministic move learned on its support
        (:meth:`~edge_agent.aif.learning_counts.DirichletCounts.fixed_columns`, found once)."""
        pB = self._learner.pB
        return pB is not None and pB.refreshed and self._only_fixed_transitions()

    def _only_fixed_transitions(self) -> bool:
        """Whether only ``B`` is learned (shared counts) and every column of every learned
        ``B`` is a deterministic move learned on its support (whose tables no update changes)."""
        learner = self._learner
        pB = learner.pB
        if self._own_tables or pB is None or learner.pA is not None or learner.pD is not None:
            return False
        model = self.scope.model
        key = (model, *pB.mask)  # what is found holds until the model or a mask is replaced
        stay = self._stay
        if stay is not None and len(stay[0]) == len(key) and all(
            a is b for a, b in zip(stay[0], key, strict=True)
        ):
            return stay[1]
        found = all(
            pB.fixed_columns(slot, model.B[index]).all() for slot, index in enumerate(pB.tables)
        )
        self._stay = (key, found)
        return found

    def observe(
        self, obs: IntArray, prior: Sequence[np.ndarray],
        p_obs: OutcomeProbabilities | None = None,
    ) -> None:
        """This tick's outcomes ``obs (N, M)`` and the prior ``prior[f] (N, S_f)`` the agents'
        inference starts from: the surprise (``p_obs``: who gives ``p(o)``, by default the
        scope's tables as they are)."""
        self.surprise.note(obs, prior, p_obs or self.scope.outcome_probabilities)

    def observe_taken(self, n_agents: int, taken: TakenProbabilities) -> None:
        """:meth:`observe` of a tick of ``n_agents`` agents that took its outcomes' ``p(o)``
        itself (``taken``: a compiled pass's, :meth:`SampledSurprise.note_taken
        <edge_agent.core.surprise.SampledSurprise.note_taken>`)."""
        self.surprise.note_taken(n_agents, taken)

    def learned_in_pass(self, n_agents: int, *, compiled_behind: bool, acted: int = 0) -> None:
        """A scope's one pass (:meth:`TickPass.step_tick`) learned this tick: the ``pA``
        counts gained every agent's update, the ``pB`` counts (each agent's own, or the one
        set) the update of each of the ``acted`` agents that had acted, with the experience,
        and the tables the agents infer with follow them. Keep what an update and a refresh
        keep besides: the versions and agent-ticks of the counts, their masks the counts'
        support from the first refresh that finds them learned on, the refreshes;
        ``compiled_behind`` (a shared pass): every column of the learned tables counts as
        touched until :meth:`take_tables` brings them into the compiled tables. Nothing while
        frozen (the pass did not learn)."""
        if self.frozen:
            return
        pA, pB = self._learner.pA, self._learner.pB
        assert pA is not None or pB is not None  # the pass learns pA, pB or both (native_pass)
        if pA is not None:
            pA.added_in_place(n_agents)
            self._refreshed_in_pass(pA, compiled_behind=compiled_behind)
        if pB is not None:  # as learn_B (no agent acted: no update) and the refresh after it
            if acted:
                pB.added_in_place(acted)
            if pB.learned:
                self._refreshed_in_pass(pB, compiled_behind=compiled_behind)
        self._since_refresh = 0
        self.refreshes += 1

    def _refreshed_in_pass(self, counts: DirichletCounts, *, compiled_behind: bool) -> None:
        """The pass refreshed the tables of ``counts``; ``compiled_behind`` (shared counts):
        every column counts as touched until :meth:`take_tables` brings them in."""
        counts.mark_refreshed(touched=compiled_behind)
        if compiled_behind:
            self.behind = True

    @property
    def qs_prev(self) -> list[np.ndarray]:
        """The last tick's posteriors (``(N, S_f)`` per factor), which ``pB`` learns from: a
        compiled pass reads them and writes this tick's."""
        return self._qs_prev

    # -- the compiled tables the group steps with --------------------------------------------------
    def take_tables(self) -> NewTables | None:
        """The compiled tables the group steps with from now on, once (None: none new since it
        last took them): those this learning made since, the learned tables a shared pass left
        behind brought in first. The group takes them before its next tick (a verb's), when
        something reads its compiled tables, and right after each of its calls here that may
        make some (this tick's learning, a reset, a trial's end, a snapshot's counts)."""
        self._catch_up()
        new, self._pending = self._pending, None
        return new

    @property
    def owes_tables(self) -> bool:
        """Whether :meth:`take_tables` has tables for the group."""
        return self.behind or self._pending is not None

    def _catch_up(self) -> None:
        """The learned tables a shared pass left behind into the compiled tables (one
        incremental refresh of the columns the passes touched), before anything else reads or
        replaces them."""
        if self.behind:
            self.behind = False
            self._bring_current()

    def _bring_current(self) -> None:
        """The counts' expectation into the compiled tables (the scope's refresh, incremental
        past the first: the touched columns of ``A``), not counted as a refresh: :meth:`refresh`
        counts it, and after a shared pass (:meth:`learned_in_pass`) the pass did."""
        learner = self.learner  # the kept ticks learned first
        new, incremental, encoded = self.scope.refresh(learner, self._cm)
        self.incremental_refreshes += incremental
        self.columns_encoded += encoded
        self._made(new, same_layout=incremental)

    def _made(self, cm: kernels.CompiledModel | None, *, same_layout: bool) -> None:
        """``cm`` (None: nothing) is the compiled tables from now on, for the group to take
        (``same_layout``: only values changed since the tables it took last)."""
        if cm is None:
            return
        kept = self._pending
        self._cm = cm
        self._pending = NewTables(cm, same_layout and (kept is None or kept.same_layout))

    def keep_action(self, action: np.ndarray, has_action: np.ndarray) -> None:
        """Last tick's action and whether each agent acted, kept before a step replaces them:
        the transition ``pB`` learns from (nothing to keep when ``pB`` is not learned)."""
        if self._keeps_previous:
            np.copyto(self._action_prev, action)
            np.copyto(self._acted_prev, has_action)

    def after_inference(
        self,
        obs: IntArray,
        qs: Sequence[np.ndarray],
        action: np.ndarray | None = None,
        acted: np.ndarray | None = None,
    ) -> NewTables | None:
        """Learn from this tick's outcomes ``obs (N, M)`` and posteriors ``qs``, and the action
        that led to them (``action (N, F)``, ``acted (N,)``; by default what :meth:`keep_action`
        kept): ``pA`` from the outcomes, ``pB`` from the transition, the tables refreshed if due
        (the new compiled tables are returned, :meth:`take_tables`). While frozen only the
        posteriors are kept."""
        if self.frozen:
            self._keep_posteriors(qs)
            return None
        if action is None or acted is None:
            action, acted = self._action_prev, self._acted_prev
        self._learn(obs, qs, action, acted)
        return self.take_tables()

    def _learn(
        self,
        obs: IntArray,
        qs: Sequence[np.ndarray],
        action: np.ndarray,
        acted: np.ndarray,
    ) -> None:
        """``pA`` from ``obs`` and the posteriors ``qs``, ``pB`` from the transition
        ``qs_prev -> qs`` of every agent that had acted (``action``, ``acted``: before this
        tick's choice); then the tables are refreshed if due (:meth:`refresh`), and ``qs``
        becomes next tick's ``qs_prev``.

        A small group keeps its ticks (:mod:`edge_agent.aif.learning_experience`) and learns
        from them in one update when the tables are refreshed, when the kept ticks fill their
        rows, or before anything reads the counts (:attr:`learner`): the same counts, for a
        few copies per tick instead of an update's few dozen numpy calls."""
        experience = self._experience
        if experience is not None:
            experience.append(obs, qs, self._qs_prev, action, acted)
        else:
            learner = self._learner
            learner.learn_A(obs, qs)
            if learner.pB is not None and acted.any():
                learner.learn_B(qs, self._qs_prev, action, acted=acted)
        self._keep_posteriors(qs)
        self._since_refresh += 1
        if self._since_refresh >= self.spec.refresh_every:
            if not self._tables_stay():
                self._refresh()
                return
            # nothing a refresh could install: the tables already follow the counts
            self._since_refresh = 0
            self.refreshes += 1
            self.incremental_refreshes += 1
        if experience is not None and experience.full:
            self._learn_experience()

    def seeks_novelty(self) -> bool:
        """Whether the agents add the parameter information gain to ``G`` now."""
        return self.spec.param_info_gain and not self.frozen

    def before_choice(self, qs: Sequence[np.ndarray], G: np.ndarray, q_pi: np.ndarray) -> None:
        """In place for the agents of ``qs`` (``(n, S_f)``), once their ``G`` and ``q_pi``
        are computed, before they choose: ``G (n, P) +=`` their information gain about ``pA``
        and ``pB`` and ``q_pi = softmax(gamma * G + ln E)`` again (float64, from the float
        tables), when the spec asks for it (``param_info_gain``; a planning pass asks
        :meth:`seeks_novelty` first: not while frozen)."""
        if not self.spec.param_info_gain:
            return
        learner, m = self.learner, self.scope.model
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
        gain = param_info_gain(qs, m.A, m.B, pA=counts_A, pB=counts_B, policies=self._policies)
        G += gain.astype(self.dtype, copy=False)
        logits = G * self._gamma + np.asarray(self._lnE, dtype=self.dtype)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        np.copyto(q_pi, logits)

    def on_reset(
        self, sel: np.ndarray, qs: Sequence[np.ndarray], has_action: np.ndarray
    ) -> NewTables | None:
        """Before the agents ``sel (N,) bool`` start new trials: with ``trial_ends_at_reset``
        those that acted in theirs (``has_action``) end it first, ``pD`` learning from their
        last posterior (an agent reset before its first step has no trial to sum up)."""
        if self.trial_ends_at_reset and self._learner.pD is not None:
            return self.end_trial(sel & has_action, qs, None)
        return None

    def end_trial(
        self,
        sel: np.ndarray,
        qs: Sequence[np.ndarray],
        posterior: Sequence[np.ndarray] | None,
    ) -> NewTables | None:
        """The agents ``sel (N,) bool`` finished a trial: ``pD`` learns from their posteriors
        (``qs``' rows; ``posterior[f]`` rows of the selected agents instead, e.g. a trial's
        first) and the tables are refreshed (the new compiled tables are returned)."""
        # ``_learner``: asking whether ``pD`` is learned reads no counts, so the ticks kept for
        # ``A`` and ``B`` stay kept (the refresh learns them first).
        if self._learner.pD is not None and sel.any() and not self.frozen:
            self._learner.learn_D(
                [q[sel] for q in qs] if posterior is None else list(posterior),
                agents=np.flatnonzero(sel),
            )
            self._refresh()
            return self.take_tables()
        return None

    def _keep_posteriors(self, qs: Sequence[np.ndarray]) -> None:
        """``qs`` becomes next tick's ``qs_prev`` (also while frozen: the first tick after
        :meth:`resume` learns the transition that led to it); only ``pB`` learns from it, so a
        group that does not learn ``pB`` copies nothing."""
        if not self._keeps_previous:
            return
        for prev, q in zip(self._qs_prev, qs, strict=True):
            np.copyto(prev, q)

    # -- the counts --------------------------------------------------------------------------------
    @property
    def learner(self) -> Learner:
        """The counts and their updates, with every tick the group has kept learned from
        first (see :meth:`learn`)."""
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

    def _refresh(self) -> None:
        """The agents infer with the counts' expectation from now on (the scope's
        :meth:`LearnedTables.refresh`), counted as a refresh."""
        self._bring_current()
        self._since_refresh = 0
        self.refreshes += 1

    # -- verbs on the learning (edge_agent.core.contract.Learns: the daemon's commands) -----------
    # Called between ticks: the group takes the tables they make, and chooses its tick path
    # again, before its next tick (:attr:`changes`).
    def refresh(self) -> None:
        """The agents infer with the counts' expectation from now on (the scope's
        :meth:`LearnedTables.refresh`)."""
        self._catch_up()
        self._refresh()
        self.changes += 1

    def freeze(self) -> bool:
        """Stop updating the counts (no learning, no forgetting, no ``pD`` at a trial's end);
        the agents keep inferring and planning with the tables the counts stand for, refreshed
        now if some of what was learned was not in them yet. While frozen a tick is the plain
        group's (without the parameter information gain: nothing is learned). False if it was
        frozen already."""
        if self.frozen:
            return False
        self._catch_up()
        if self._since_refresh:
            self._refresh()
        self.frozen = True
        self.changes += 1
        return True

    def resume(self) -> bool:
        """Learn again from the next tick on, from the counts as they were frozen. False if it
        was not frozen."""
        if not self.frozen:
            return False
        self.frozen = False
        self.changes += 1
        return True

    def forget(self) -> None:
        """Forget what was learned: every learned table's counts back to their prior (every
        agent's, per agent), the tables back to the model's as the group was loaded with them,
        each kind's ``version`` bumped (:meth:`DirichletCounts.reset`). Beliefs, trials and
        whether learning is frozen stay as they are."""
        self._catch_up()
        loaded = self._loaded
        tables = {"A": loaded.A, "B": loaded.B, "D": loaded.D}
        for counts in self.learner.counts:
            counts.reset(tables[counts.kind])
        self._since_refresh = 0
        self.counts_origin = "priors"
        self._made(self.scope.restore_loaded(), same_layout=False)
        self.changes += 1

    def summary(self) -> dict[str, Any]:
        """``frozen``, and per kind of counts (``pA``, ``pB``, ``pD``) its ``version`` (updates
        and resets so far) and ``reset_at`` (the version of the last reset; 0: never)."""
        return {
            "frozen": self.frozen,
            "scope": self.scope.name,
            "counts": {
                f"p{c.kind}": {"version": c.version, "reset_at": c.reset_at}
                for c in self.learner.counts
            },
        }

    # -- what the fleet learns from ---------------------------------------------------------------
    def take_increments(self) -> list[TableIncrements]:
        """What the agents learned since the last call (the ticks kept learned first), one
        entry per learned table that learned from at least one agent-tick: the count
        increments summed over the agents before any forgetting, sparse by column, the
        agent-ticks and the learning rate; then the accumulation starts anew
        (``docs/fleet-learning.md``). Empty while nothing was learned (frozen, or no tick)."""
        learner = self.learner
        s = learner.settings
        rates = {"A": s.lr_pA, "B": s.lr_pB, "D": s.lr_pD}
        out: list[TableIncrements] = []
        for counts in learner.counts:
            delta = counts.take_delta()
            for index, increments, ticks in zip(
                counts.tables, delta.increments, delta.agent_ticks, strict=True
            ):
                if ticks:
                    columns, values = column_increments(increments)
                    out.append(TableIncrements(
                        f"{counts.kind}{index}", tuple(increments.shape), columns, values,
                        ticks, rates[counts.kind],
                    ))
        return out

    # -- what the daemon shows ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The scope, the tables learned, where the counts came from (``priors`` or
        ``snapshot``), whether they are frozen, refreshes and the numbers of :meth:`numbers`."""
        return {
            "scope": self.scope.name,
            "stepping": self.scope.stepping_name,
            "tables": [f"p{c.kind}{i}" for c in self.learner.counts for i in c.tables],
            "counts_from": self.counts_origin,
            "frozen": self.frozen,
            "refreshes": self.refreshes,
            **self.numbers(),
        }

    def add_health(self, window: HealthWindow, *, steps: int) -> None:
        """The measures a learning group adds to its health window as it closes
        (:data:`~edge_agent.core.health.LEARNING_HEALTH`): the ``steps`` agent-steps learned in
        it (none while frozen) and the divergence of :meth:`numbers`."""
        divergence = self.numbers()["divergence"]
        if not self.frozen:
            window.add("experience", np.array([float(steps)]))
        window.add("divergence", np.array([float(divergence)]))

    def numbers(self) -> dict[str, float | int]:
        """``updates``: count updates so far (each table's updates added up); ``divergence``:
        the mean, over the learned tables' columns (and agents, per agent), of the KL
        divergence in nats of the table the counts stand for from the one their prior stands
        for, ``KL(E[p] || E[p0])`` (0: nothing learned); ``surprise``: the agents' mean
        surprise ``-ln p(o)`` of a tick's outcomes under the beliefs they predicted (summed over
        modalities), an exponential moving mean (:class:`SampledSurprise`)."""
        versions = tuple(c.version for c in self.learner.counts)
        if self._divergence_at != versions:
            self._divergence = divergence_from_prior(self.learner.counts)
            self._divergence_at = versions
        return {
            "updates": sum(versions),
            "divergence": round(self._divergence, 9),
            "surprise": round(self.surprise.value, 6),
        }

    # -- snapshots ---------------------------------------------------------------------------------
    def identity(self) -> bytes:
        """What the counts were learned from: a digest of the scope, the storage and every
        learned table's index and prior counts. Counts restored from a snapshot of another
        identity would be another learning's (another table, prior or scale): not taken."""
        learner = self._learner
        digest = hashlib.sha256(f"{self.scope.name}:{learner.settings.counts_dtype}".encode())
        for counts in learner.counts:
            for index, prior in zip(counts.tables, counts.prior, strict=True):
                digest.update(f"|{counts.kind}{index}:{prior.shape}".encode())
                digest.update(np.ascontiguousarray(prior, dtype=np.float64).tobytes())
        return digest.digest()

    def state_dict(self, qs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The counts (``learn.pA0.steps`` ...: what moved from their prior,
        :func:`~edge_agent.aif.learning_storage.counts_arrays`), their versions, the previous
        posteriors ``pB`` learns from (of the agents where they differ from the beliefs ``qs``,
        which the group's state holds as ``qs0`` ...:
        :func:`~edge_agent.aif.learning_storage.rows_arrays`), whether learning is frozen, and
        what the counts were learned from (``learn.identity``). Counts and posteriors saved
        whole (``learn.pA0``, ``learn.qs_prev0``, as snapshots before were) are read back all
        the same (:meth:`load_state_dict`)."""
        out: dict[str, np.ndarray] = {
            "learn.identity": np.frombuffer(self.identity(), dtype=np.uint8).copy()
        }
        if self._keeps_previous:  # nothing else reads them
            for f, q in enumerate(self._qs_prev):
                out.update(rows_arrays(f"learn.qs_prev{f}", q, qs[f]))
        for counts in self.learner.counts:
            for slot, index in enumerate(counts.tables):
                out.update(counts_arrays(
                    f"learn.p{counts.kind}{index}", counts.counts[slot], counts.prior[slot]
                ))
            out[f"learn.version.{counts.kind}"] = np.array(counts.version, dtype=np.int64)
            out[f"learn.reset_at.{counts.kind}"] = np.array(counts.reset_at, dtype=np.int64)
        out["learn.frozen"] = np.array(self.frozen)
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> NewTables | None:
        """Restore the counts, then refresh the tables from them (the new compiled tables are
        returned, :meth:`take_tables`).

        Counts are taken only from a state learned from the same priors (its
        ``learn.identity``; a state without one, e.g. of the group before it learned, or of
        another learning table, restores the beliefs alone): then learning goes on from the
        priors, and the log says so."""
        self._catch_up()
        for f, q in enumerate(self._qs_prev):
            saved_rows(state, f"learn.qs_prev{f}", f"qs{f}", q,
                       where=f"group {self.name!r} snapshot")
        identity = state.get("learn.identity")
        if identity is None or np.asarray(identity, dtype=np.uint8).tobytes() != self.identity():
            self.counts_origin = "priors"
            if not self._quiet:
                logger.info(
                    "group %r: beliefs restored; the state holds no counts learned from this "
                    "group's priors (%s), learning starts from the priors",
                    self.name,
                    "none at all" if identity is None else "another table, prior or scope",
                )
            return self.take_tables()
        for counts in self.learner.counts:
            for slot, index in enumerate(counts.tables):
                key = f"learn.p{counts.kind}{index}"
                saved = saved_counts(
                    state, key, counts.prior[slot], where=f"group {self.name!r} snapshot"
                )
                if saved is None:
                    raise InputError(f"group {self.name!r} snapshot lacks {key!r}")
                arr = np.asarray(saved, dtype=np.float64)
                if arr.shape != counts.counts[slot].shape:
                    raise InputError(
                        f"group {self.name!r} snapshot {key!r} has shape {arr.shape}, "
                        f"expected {counts.counts[slot].shape}"
                    )
                counts.restore(slot, arr)
            counts.version = int(state.get(f"learn.version.{counts.kind}", np.array(0)))
            counts.reset_at = int(state.get(f"learn.reset_at.{counts.kind}", np.array(0)))
            counts.reported_version = counts.version
        self.frozen = bool(state.get("learn.frozen", np.array(False)))
        # Restored counts may differ anywhere from the tables, whatever their versions: the
        # refresh makes the tables from them in full (no incremental refresh without versions).
        self.scope.forget_versions()
        self._refresh()
        if not self._quiet:
            self.counts_origin = "snapshot"
            logger.info(
                "group %r: learned counts restored (%s)",
                self.name,
                ", ".join(f"p{c.kind} after {c.version} updates" for c in self.learner.counts),
            )
        return self.take_tables()

    @contextmanager
    def warming_up(self) -> Iterator[None]:
        """A warm-up's step and restore teach nothing and say nothing: the counts' experience,
        its agent-ticks and the refresh counters are put back after it."""
        experience = [[e.copy() for e in c.experience] for c in self.learner.counts]
        agent_ticks = [c.agent_ticks.copy() for c in self.learner.counts]
        counters = (self.refreshes, self.columns_encoded)
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False
        for counts, saved in zip(self.learner.counts, experience, strict=True):
            for e, s in zip(counts.experience, saved, strict=True):
                e[...] = s
        for counts, ticks in zip(self.learner.counts, agent_ticks, strict=True):
            counts.agent_ticks[...] = ticks
        self.refreshes, self.columns_encoded = counters


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
