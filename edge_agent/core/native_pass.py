"""Learning in one compiled pass per tick: :class:`NativePass` (each agent its own counts) and
:class:`SharedNativePass` (one set of counts every agent teaches).

A group that learns its likelihood counts (``pA``) or transition counts (``pB``) every tick
steps its learning tick (:class:`~edge_agent.core.tick_paths.PassTick`) in
:mod:`edge_agent.aif.kernels.native`'s pass when the model and settings are what the pass does
(:func:`_kernel` says which are not): every agent infers, learns, the tables follow the counts,
it plans and acts, agent block by agent block, in the arrays the group already holds (the
agents' state; the counts, their masks and experience in the
:class:`~edge_agent.aif.learning_counts.DirichletCounts`; per agent, each agent's tables), with
the numbers of the numpy stages up to rounding. What the counts keep besides (versions,
agent-ticks, the refresh) is kept by
:meth:`~edge_agent.core.learning.GroupLearning.learned_in_pass`.

A scope builds its own pass from its own arrays (:meth:`AgentTables.build_pass
<edge_agent.core.per_agent_learning.AgentTables.build_pass>` with :func:`per_agent_pass`,
:meth:`SharedTables.build_pass <edge_agent.core.shared_learning.SharedTables.build_pass>` with
:func:`shared_pass`); this module knows neither scope. Per agent, the pass writes each agent's
tables in place (the stage verbs read them through the scope). Shared, the pass keeps the
learned tables the agents infer with (one ``(O_m, S)`` table per learned modality, following the
counts every tick; a learned factor's ``B`` on its counts' support, the columns of the actions
taken following them every tick) and leaves the group's compiled tables
(:class:`~edge_agent.aif.kernels.CompiledModel`: the numpy stages', the planners', what other
parts read) behind them: the group brings those in when something reads them
(:meth:`~edge_agent.core.learning.GroupLearning.take_tables`, one incremental refresh of the
columns the passes touched), never on the pass's own ticks. The pass takes the scope's tables
again whenever they were replaced otherwise (a refresh, a snapshot, a forget: the model it is
given each tick is another).

The compiled tick of a group that does not learn is here too, beside the learning passes (both
are the group's side of the one compiled tick): :func:`frozen_kernel` builds it from the group's
compiled tables, or says why the group steps with numpy.

The group builds it once (its tables do not change: nothing learns), holds it, and its tick path
(:class:`~edge_agent.core.tick_paths.CompiledTick`, chosen in
:func:`~edge_agent.core.path_choice.tick_path`) steps every agent in one pass of
:mod:`edge_agent.aif.kernels.native`'s tick over the arrays the group already keeps: beliefs,
priors, ``G`` and ``q_pi`` in the group's dtype (an int8 group's float32 are read and written as
they are, the arithmetic double), actions and whether each agent acted. The tables are the ones
the numpy kernels step with (:class:`~edge_agent.aif.kernels.CompiledModel`: an int8 group's
codes decoded once, as the kernels decoded them), in float64: the pass's results are the numpy
kernels' on the same tables up to float32 rounding for an int8 group (far inside
docs/quantization.md's bound) and rounding for a float64 one.

Where the compiled tick can take a group, the group measures both paths once when it is made
and keeps the cheaper (:func:`~edge_agent.core.path_choice.measure_costs`). Whichever it keeps,
it reserves the compiled tick's bytes (:func:`compiled_nbytes`, from the model alone: a group
that steps with numpy, or is made only to be sized, neither builds the pass nor loads the
library).
``EDGE_AGENT_NATIVE_TICK=0`` in the environment (:data:`NATIVE_ENV`) keeps every group on numpy,
the reference twin; ``EDGE_AGENT_NATIVE_TICK=1`` puts every group the compiled tick can take in it,
unmeasured (the tests of its results); read when the group is made.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels, quant
from edge_agent.aif.kernels import native
from edge_agent.core.agent_state import AgentState
from edge_agent.core.group_blocks import IntArray

if TYPE_CHECKING:
    from edge_agent.aif.health import InTickFold
    from edge_agent.aif.kernels.native.binding import NativeTick
    from edge_agent.aif.learning import Learner, LearningSpec
    from edge_agent.aif.learning_counts import DirichletCounts
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.aif.per_agent import OnSupport
    from edge_agent.aif.quant import QuantizedModel
    from edge_agent.aif.settings import AifSettings
    from edge_agent.aif.sparse_transitions import SparseTransitions
    from edge_agent.core.surprise import OutcomeProbabilities, TakenProbabilities

__all__ = [
    "LOCAL_MEASURED",
    "NATIVE_ENV",
    "NativePass",
    "SharedNativePass",
    "choice_measured",
    "compiled_nbytes",
    "frozen_kernel",
    "library_refusal",
    "local_reason",
    "numpy_reasons",
    "per_agent_pass",
    "shared_pass",
    "sizing_reasons",
]

#: The environment variable that keeps groups on numpy when it is ``0``.
NATIVE_ENV = "EDGE_AGENT_NATIVE_TICK"


def library_refusal(symbols: Sequence[str], library: ctypes.CDLL | None = None) -> str | None:
    """Why the compiled library cannot serve a caller of ``symbols`` (None: it can): the
    environment asks for numpy (:data:`NATIVE_ENV` ``0``), the package's library is missing or
    not the binding's (loaded to know it), or it exports none of some of ``symbols`` (built from
    older sources); ``library``: that library instead of the package's. The neural pass and the
    team award's assignment ask it before they take the library."""
    if os.environ.get(NATIVE_ENV) == "0":
        return f"{NATIVE_ENV}=0 in the environment"
    if library is None:
        from edge_agent.aif.kernels.native import binding  # noqa: PLC0415 - loads the library
        refused = binding.unavailable()
        if refused is not None:
            return refused
        library = binding.load()
    missing = [name for name in symbols if not hasattr(library, name)]
    if missing:
        return (f"the compiled tick exports no {', '.join(missing)} (built from older "
                "sources): reinstall edge-agent (scripts/bootstrap.sh in a checkout)")
    return None


def choice_measured() -> bool:
    """Whether a group the compiled tick can take measures both paths (:data:`NATIVE_ENV` not
    ``1``) rather than taking it unmeasured."""
    return os.environ.get(NATIVE_ENV, "") != "1"


#: The most agents of a group whose model numpy steps with its local one-step planner (grid10's,
#: ``B`` local) that measures the compiled tick against it; a larger group steps the local
#: planner unmeasured. Measured (benchmarks/notes/learning.md, issue 58), numpy's local planner
#: costs 1.03-1.45x the compiled tick at 32 agents, 0.87-1.12x at 48, 0.75-0.99x at 64, 0.45-0.78x
#: at 200: groups of the sizes where the two are close stay on one path, whatever a busy moment
#: makes of a measurement.
LOCAL_MEASURED = 32


def local_reason(cm: kernels.CompiledModel, n_agents: int) -> str | None:
    """Why a group of ``n_agents`` of ``cm`` that the compiled tick could take steps numpy's
    local one-step planner unmeasured (None: it measures both paths, or takes the compiled tick
    unmeasured where :data:`NATIVE_ENV` is ``1``). The group still reserves its compiled tick's
    bytes (:func:`compiled_nbytes`, neither built nor the library loaded), so that what the
    budget admits for a model does not depend on a group's size or path (``check-config`` plans
    with probes of one agent)."""
    if cm.local is None or n_agents <= LOCAL_MEASURED or not choice_measured():
        return None
    return (f"the local one-step planner (numpy) outruns the compiled tick's dense plan above "
            f"{LOCAL_MEASURED} agents")


def sizing_reasons(cm: kernels.CompiledModel, settings: AifSettings) -> str | None:
    """Why a group of ``cm`` with ``settings`` steps with numpy whatever it learns, of what is
    known without loading the library (None: the compiled tick takes the model, if the
    installed library is the binding's): the environment asks for numpy, policies of more than
    two steps, stochastic or whole-policy action selection, a package installed without its
    library, a model above the package's limits (:data:`~edge_agent.aif.kernels.native.
    PACKAGE_LIMITS`). Where it says None, the group reserves its compiled tick's bytes
    (:func:`compiled_nbytes`)."""
    policies = cm.tree.policies
    reasons = [
        (os.environ.get(NATIVE_ENV, "1") == "0", f"{NATIVE_ENV}=0"),
        (policies.shape[1] > 2,
         f"policy_len {policies.shape[1]} (the compiled tick plans policies of one or two "
         "steps)"),
        (settings.action_selection != "deterministic", "stochastic action selection"),
        (settings.sampling_mode != "marginal", f"sampling_mode {settings.sampling_mode}"),
    ]
    for found, why in reasons:
        if found:
            return why
    return native.not_installed() or native.too_large(
        cm.num_states, cm.num_controls, cm.num_modalities, len(policies))


def numpy_reasons(cm: kernels.CompiledModel, settings: AifSettings) -> str | None:
    """Why a group of ``cm`` with ``settings`` steps with numpy whatever it learns (None: the
    compiled tick takes it): :func:`sizing_reasons`, or the package's library cannot be loaded
    or is not the binding's (loaded to know it). A model numpy steps with its local one-step
    planner (grid10's, ``B`` local) is taken too, in a group of up to :data:`LOCAL_MEASURED`
    agents: the group measures both paths (:func:`~edge_agent.core.path_choice.measure_costs`);
    a larger one steps the local planner (:func:`local_reason`)."""
    if (why := sizing_reasons(cm, settings)) is not None:
        return why
    from edge_agent.aif.kernels.native import binding  # noqa: PLC0415 - loads the library
    return binding.unavailable()


def compiled_nbytes(cm: kernels.CompiledModel, settings: AifSettings) -> int:
    """Bytes of the compiled tick a group of ``cm`` that does not learn would hold
    (:func:`frozen_kernel`'s :attr:`~edge_agent.aif.kernels.native.binding.NativeTick.nbytes`,
    exactly), from the model's supports and shapes, nothing built and neither the library nor its
    binding loaded (:func:`~edge_agent.aif.kernels.native.frozen_nbytes`); 0 where it steps with
    numpy whatever its size (:func:`sizing_reasons`). A library that is installed but refused at
    load still has its bytes counted: what a group reserves never depends on loading it."""
    if sizing_reasons(cm, settings) is not None:
        return 0
    return native.frozen_nbytes([np.asarray(a) > 0 for a in cm.A_rows],
                                [kernels.dense_table(t) for t in cm.transitions],
                                cm.tree.policies)


def frozen_kernel(cm: kernels.CompiledModel, settings: AifSettings) -> NativeTick | str:
    """The compiled tick of a group that steps with ``cm`` and does not learn (its state in
    ``cm.dtype``), or why it steps with numpy (:func:`numpy_reasons`)."""
    why = numpy_reasons(cm, settings)
    if why is not None:
        return why
    from edge_agent.aif.kernels.native import binding  # noqa: PLC0415 - numpy_reasons loaded it
    A = [np.asarray(a, dtype=np.float64) for a in cm.A_rows]
    return binding.NativeTick(
        A, [kernels.dense_table(t) for t in cm.transitions],
        [np.asarray(d, dtype=np.float64) for d in cm.D],
        lnC=[np.asarray(c, dtype=np.float64) for c in cm.lnC],
        lnE=np.asarray(cm.lnE, dtype=np.float64), policies=cm.tree.policies, learned=(),
        supports=[a > 0 for a in A], n=1, gamma=float(settings.gamma),
        num_iter=settings.num_iter, dF_tol=settings.dF_tol, lr=0.0,
        use_utility=settings.use_utility, use_info_gain=settings.use_states_info_gain,
        shared_counts=False, state_dtype=cm.dtype.type,
    )


class _CompiledPass:
    """What both scopes' passes hold: the ``kernel`` and this tick's ``p(o_m)`` of
    ``n_agents`` agents."""

    #: The agents whose transitions the last tick learned (those that had acted; 0 where the
    #: pass learns no ``pB``): :meth:`~edge_agent.core.learning.GroupLearning.learned_in_pass`
    #: counts them.
    acted = 0

    def __init__(self, kernel: NativeTick, n_agents: int, num_modalities: int) -> None:
        self._kernel = kernel
        #: This tick's p(o_m) under the prior and the tables before the update (the surprise's).
        self._p_obs = np.zeros((n_agents, num_modalities))
        #: The health measures the pass writes on a measured tick ``(4, r)`` (made once per
        #: sample size: 32 bytes a sampled agent), and whether the next tick writes them.
        self._measures = np.zeros((4, 0))
        self.measuring = False

    def measure(self, rows: IntArray, fold: InTickFold | None = None) -> np.ndarray:
        """The next tick measures health's sampled agents ``rows`` (ascending, int64) in the
        pass (:data:`~edge_agent.core.health.InTick`): their ``(4, r)`` measures, written by it
        under the tables the agents inferred with (a learned ``A`` that learns: before the
        tick's update), into ``fold``'s buffers with health's fold beside them (None: the
        pass's own, nothing folded); :meth:`unmeasure` after the tick."""
        self.measuring = True
        if fold is not None:
            self._kernel.measure(rows, fold.measures, entropy=fold.entropy, lnC=fold.lnC,
                                 preference=fold.preference, sums=fold.sums)
            return fold.measures
        if self._measures.shape[1] != len(rows):
            self._measures = np.zeros((4, len(rows)))
        self._kernel.measure(rows, self._measures)
        return self._measures

    def unmeasure(self) -> None:
        """The next ticks measure nobody (the tick told :meth:`measure` is stepped)."""
        self._kernel.unmeasure()
        self.measuring = False

    def _bind_transitions(self, values: list[np.ndarray], pB: DirichletCounts,
                          has_action: np.ndarray, *, learn: bool,
                          starts: NDArray[np.bool_] | None = None) -> bool:
        """Bind each learned factor's ``values`` and ``pB``'s counts (the masks are replaced
        at the first refresh and at a reset: bound every tick). The agents that acted learn
        their transition (the numpy stages' ``learn_B``), but those whose trial starts at the
        tick (``starts``: a reset just before would have cleared their action): True when
        this tick's refresh makes every column of ``B`` its expectation (the first that finds
        the counts learned); the later ones renormalise the columns of the actions taken."""
        self._kernel.bind_transitions(values, pB.counts, pB.mask, pB.experience)
        acted = int(np.count_nonzero(has_action)) if learn else 0
        if acted and starts is not None:
            acted -= int(np.count_nonzero(has_action & starts))
        self.acted = acted
        return learn and not pB.refreshed and (acted > 0 or pB.learned)

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)``: the agents ``rows``' ``p(o_m)`` the last pass took under their prior
        and the tables before its update (``obs`` and ``joint``: the same, already in)."""
        del obs, joint
        return self._p_obs[rows]

    def taken(self) -> TakenProbabilities | None:
        """Who gives the surprise the ``p(o_m)`` the pass took (:meth:`_taken_rows`: the
        agents' rows of it, read when asked), or None where it is worked out from the outcomes
        and the prior (:meth:`outcome_probabilities` of them)."""
        return self._taken_rows

    def _taken_rows(self, rows: IntArray) -> np.ndarray:
        """``(r, M)``: the agents ``rows``' ``p(o_m)`` the last pass took (a copy)."""
        return self._p_obs[rows]


class NativePass(_CompiledPass):
    """The learning tick of a per-agent group as one compiled pass (``kernel``): ``tables_A``,
    each modality's ``(N, O_m, S)`` tables (the learned ones each agent's own, written in place;
    ``(1, O_m, S)`` for one they share), ``learner``'s ``pA`` and ``pB`` counts (either or
    both) and ``transitions``, each learned factor's agents' ``B`` on its support (written in
    place)."""

    #: The pass writes each agent's tables themselves: nothing is left behind.
    leaves_compiled_behind = False
    #: The tick's prior is each agent's own: the pass takes it from the state where it kept it
    #: (the next prior its last tick wrote), else makes it from the agents' own tables.
    makes_prior = True
    #: The agents whose trial starts at the tick start it in the pass (their prior ``D``).
    takes_starts = True

    def __init__(
        self, tables_A: list[np.ndarray | OnSupport], learner: Learner, kernel: NativeTick,
        n_agents: int, transitions: Mapping[int, SparseTransitions],
    ) -> None:
        super().__init__(kernel, n_agents, len(tables_A))
        self._pA, self._pB = learner.pA, learner.pB
        self._tables_A = tables_A
        #: What the pass reads and writes of each learned modality's tables (their values:
        #: whole, or on their support), in place.
        self._bound_A = [] if self._pA is None else [_values(tables_A[m])
                                                      for m in self._pA.tables]
        #: Each learned factor's values ``(N, U S k)``: views of the scope's (the pass's
        #: entries are their order, :func:`_transition_entries`).
        self._values = [] if self._pB is None else [
            transitions[f].values.reshape(n_agents, -1) for f in self._pB.tables]
        #: What the state was when the pass wrote its next prior into it (the state, its
        #: :attr:`~edge_agent.core.agent_state.AgentState.version` and
        #: :attr:`~edge_agent.core.agent_state.AgentState.writes`, the agents stepped), or None:
        #: the pass takes that prior as its tick's only while the state is still so.
        self._kept: tuple[AgentState, int, int, int] | None = None

    def step_tick(
        self, state: AgentState, obs: IntArray, *, learn: bool, model: GenerativeModel,
        qs_prev: Sequence[np.ndarray], starts: NDArray[np.bool_] | None = None,
    ) -> Sequence[np.ndarray]:
        """The whole tick of every agent in one pass (``obs`` ``(N, M)`` int64): the
        posteriors, each agent's counts (``learn``: not frozen) and tables, ``G``, ``q_pi``,
        the actions and from them the next prior, into ``state.prior`` (returned; ``model``:
        the model as loaded, not read; ``qs_prev``: the last tick's posteriors, which a
        learned ``B`` learns from, this tick's written). The tick's prior is the one the last
        tick kept there while nothing else wrote the state since (:meth:`AgentState.wrote
        <edge_agent.core.agent_state.AgentState.wrote>` not called, the same arrays and
        agents), else made from each agent's beliefs, actions and own tables, as the numpy
        stages make it; ``D`` for the agents whose trial starts at the tick (``starts``
        ``(N,)`` C-contiguous bool; None: nobody's), as a reset of them just before leaves
        it."""
        del model  # each agent's tables are the pass's own
        kernel, pA, pB = self._kernel, self._pA, self._pB
        # The masks are replaced at the first refresh and at a reset: bound every tick.
        if pA is not None:
            kernel.bind_learning(self._bound_A, pA.counts, pA.mask, pA.experience)
        normalise_all = pB is not None and self._bind_transitions(
            self._values, pB, state.has_action, learn=learn, starts=starts)
        n = len(obs)
        given = self.takes_kept(state, n)
        self._kept = None  # (a pass that fails leaves no prior kept)
        kernel.step(obs, state.qs, state.action, state.has_action, G=state.G,
                    q_pi=state.q_pi, prior=state.prior, p_obs=self._p_obs, start=starts,
                    learn=learn, next_prior=state.prior,
                    qs_prev=None if pB is None else qs_prev, normalise_all=normalise_all,
                    prior_given=given)
        self._kept = (state, state.version, state.writes, n)
        return state.prior

    def takes_kept(self, state: AgentState, n: int) -> bool:
        """Whether a tick of ``n`` agents of ``state`` takes the prior in ``state.prior`` as
        its tick's: the next prior this pass wrote there at its last tick, nothing else having
        written the state since (:meth:`AgentState.wrote
        <edge_agent.core.agent_state.AgentState.wrote>`, its arrays the same, as many agents)."""
        kept = self._kept
        return (kept is not None and kept[0] is state
                and kept[1:] == (state.version, state.writes, n))

    def likelihood(self, rows: IntArray) -> list[np.ndarray]:
        """Each modality's ``A`` of the agents ``rows`` (:func:`~edge_agent.aif.per_agent.
        agents_likelihood`)."""
        # Here, not at the top: a frozen group imports this module for its compiled tick
        # (frozen_kernel) and must not import learning's maths (test_architecture).
        from edge_agent.aif import per_agent  # noqa: PLC0415 - a group that learns

        return per_agent.agents_likelihood(self._tables_A, rows)


class SharedNativePass(_CompiledPass):
    """The learning tick of a shared group on ``model`` (as the scope has it now; ``learner``:
    one set of ``pA`` and/or ``pB`` counts every agent teaches, the tables following them every
    tick: every column of a learned ``A``, the columns of the actions taken of a learned ``B``)
    as one compiled pass (``kernel``); it holds the learned tables the agents infer with between
    a refresh and the next (see the module doc). With ``pB`` the tick's prior is the one the
    state keeps (made at the last tick with its ``B``: the numpy stages' after a forget or a
    snapshot replaced the tables).

    An int8 group (``codes``: the scope's int8 codes now, read whenever its model was replaced)
    infers and plans with the tables its codes decode to, as its numpy twin does: ``tables``
    (those codes decoded when the pass was made), the learned ``A`` and ``B`` taken from the
    codes decoded, and the pass rounds each column it makes its counts' expectation through the
    codes (``quantise``, tick.h). Its surprise is its twin's, under the float tables the counts
    normalise to: learning ``pA``, the pass's ``p_obs`` under the float tables it keeps beside
    the rounded ones (:meth:`~edge_agent.aif.kernels.native.binding.NativeTick.bind_float`);
    ``pB`` only, ``surprise`` (the scope's)."""

    #: The group's compiled tables lag the learned tables after a pass (the group brings them
    #: in when read: :meth:`~edge_agent.core.learning.GroupLearning.take_tables`).
    leaves_compiled_behind = True
    #: The state keeps the next prior, made by the pass: the tick's is there before it.
    makes_prior = False
    #: The group resets the agents whose trial starts before the pass (the tick's prior, the
    #: surprise's, is the one it copies from the state).
    takes_starts = False

    def __init__(
        self, model: GenerativeModel, learner: Learner, kernel: NativeTick, n_agents: int, *,
        tables: GenerativeModel | None = None,
        codes: Callable[[], QuantizedModel | None] | None = None,
        surprise: OutcomeProbabilities | None = None,
    ) -> None:
        super().__init__(kernel, n_agents, model.num_modalities)
        self._pA, self._pB = learner.pA, learner.pB
        #: int8: the tables the codes decode to (the likelihood the agents infer with), the
        #: scope's codes and its surprise (see the class doc); None for float64.
        self._tables, self._codes, self._surprise = tables, codes, surprise
        #: Each learned modality's table ``(O_m, S)``, the pass's own (written every tick; an
        #: int8 group's its codes decoded).
        self._own = [
            np.array(a.reshape(a.shape[0], -1), dtype=np.float64)
            for a in (() if self._pA is None else (
                (tables or model).A[m] for m in self._pA.tables))
        ]
        #: An int8 group learning ``A``: every modality's float table (its twin's surprise's;
        #: a learned one's its counts' expectation, written by the pass), else empty.
        self._float: list[np.ndarray] = []
        if tables is not None and self._pA is not None:
            self._float = [np.array(a.reshape(a.shape[0], -1), dtype=np.float64)
                           for a in model.A]
            kernel.bind_float(self._float)
        #: Each learned factor's entries (the support of its counts' prior, the kernel's) as
        #: ``(action, row, col)`` into ``B``, and its values ``(1, nnz)``, the pass's own (the
        #: columns of the actions taken written every tick).
        self._at: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._values: list[np.ndarray] = []
        for f in () if self._pB is None else self._pB.tables:
            entries = kernel.learned_B[f]
            action = native.entry_actions(entries.start)
            self._at.append((action, entries.row, entries.col))
            self._values.append(np.zeros((1, entries.size)))
        self._take_transitions(model)
        #: The scope's model the tables were last taken from (or brought into).
        self._synced: GenerativeModel = model
        #: The tick's prior (the group keeps the next one in its state).
        self._prior = [np.zeros((n_agents, s), dtype=kernel.state_dtype)
                       for s in model.num_states]

    def step_tick(
        self, state: AgentState, obs: IntArray, *, learn: bool, model: GenerativeModel,
        qs_prev: Sequence[np.ndarray], starts: NDArray[np.bool_] | None = None,
    ) -> Sequence[np.ndarray]:
        """The whole tick of every agent in one pass (``obs`` ``(N, M)`` int64): the tick's
        prior (returned), the posteriors, the counts (``learn``: not frozen) with every agent's
        update and the tables their expectation, then ``G``, ``q_pi``, the actions and from
        them the next prior, into ``state.prior`` (the group keeps it, as its numpy stages
        do). ``model``: the scope's now; ``qs_prev``: the last tick's posteriors, which a
        learned ``B`` learns from (this tick's written); ``starts``: None
        (:attr:`takes_starts`)."""
        del starts  # (None: the group reset them)
        kernel, pA, pB = self._kernel, self._pA, self._pB
        if model is not self._synced:  # replaced since: a refresh, a snapshot, a forget
            quantized = None if not self._float or self._codes is None else self._codes()
            for own, m in zip(self._own, () if pA is None else pA.tables, strict=True):
                A = model.A[m] if quantized is None else quant.decode_log_u8(quantized.A[m])
                np.copyto(own, A.reshape(own.shape))
            for table, a in zip(self._float, model.A, strict=False):
                np.copyto(table, a.reshape(table.shape))
            self._take_transitions(model)
            self._synced = model
        n = len(obs)
        if len(self._p_obs) != n:  # the group was resized
            self._p_obs = np.zeros((n, self._p_obs.shape[1]))
            self._prior = [np.zeros((n, p.shape[1]), dtype=p.dtype) for p in self._prior]
        # The masks are replaced at the first refresh and at a reset: bound every tick.
        if pA is not None:
            kernel.bind_learning(self._own, pA.counts, pA.mask, pA.experience)
        # The columns of the actions taken follow the one set of counts after every agent
        # learned.
        normalise_all = pB is not None and self._bind_transitions(
            self._values, pB, state.has_action[:n], learn=learn)
        if pB is not None:  # the tick's prior the one kept (made with the B of its tick)
            for tick_prior, kept in zip(self._prior, state.prior, strict=True):
                np.copyto(tick_prior, kept[:n])
        kernel.step(obs, state.qs, state.action, state.has_action, G=state.G,
                    q_pi=state.q_pi, prior=self._prior, p_obs=self._p_obs, learn=learn,
                    next_prior=state.prior, qs_prev=None if pB is None else qs_prev,
                    normalise_all=normalise_all, prior_given=pB is not None)
        return self._prior

    def _take_transitions(self, model: GenerativeModel) -> None:
        """Each learned factor's values from ``model``'s ``B`` (at its entries); an int8
        group's from its codes now, decoded."""
        quantized = None if self._codes is None else self._codes()
        for values, (action, row, col), f in zip(
            self._values, self._at, () if self._pB is None else self._pB.tables, strict=True
        ):
            B = model.B[f] if quantized is None else quant.decode_transition(quantized.B[f])
            values[0] = B[row, col, action]

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """See :meth:`_CompiledPass.outcome_probabilities`; an int8 group's, its numpy twin's
        (the scope's ``surprise``)."""
        if self._surprise is not None and not self._float:
            return self._surprise(obs, rows, joint)
        return super().outcome_probabilities(obs, rows, joint)

    def taken(self) -> TakenProbabilities | None:
        """See :meth:`_CompiledPass.taken`; None for an int8 group whose surprise is its
        twin's (the scope's ``surprise``, of the outcomes and the prior)."""
        if self._surprise is not None and not self._float:
            return None
        return super().taken()

    def likelihood(self, rows: IntArray) -> list[np.ndarray]:
        """Each modality's ``A`` ``(O_m, S)`` the agents infer with now: the learned ones the
        pass's, the others the model's."""
        del rows  # one table for every agent
        A = [a.reshape(a.shape[0], -1) for a in (self._tables or self._synced).A]
        for own, m in zip(self._own, () if self._pA is None else self._pA.tables, strict=True):
            A[m] = own
        return A


def per_agent_pass(
    model: GenerativeModel, tables_A: list[np.ndarray | OnSupport], learner: Learner,
    spec: LearningSpec, *,
    cm: kernels.CompiledModel, settings: AifSettings, n_agents: int,
    transitions: Mapping[int, SparseTransitions],
) -> NativePass | str:
    """The compiled pass of a per-agent group on ``model`` (as loaded) whose agents' tables are
    ``tables_A`` and, of a learned ``B``, ``transitions`` (see :class:`NativePass`), or why it
    steps with numpy (:func:`_kernel`; and a learned ``B`` must be kept on its support, whose
    entries the pass takes: :func:`_transition_entries`)."""
    from edge_agent.aif.per_agent import OnSupport  # noqa: PLC0415 - a group that learns

    pA, pB = learner.pA, learner.pB
    own = [] if pA is None else [_values(tables_A[m]) for m in pA.tables]
    cells = {m: a.cell for m, a in enumerate(tables_A) if isinstance(a, OnSupport)}
    entries: dict[int, native.TransitionEntries] = {}
    if pB is not None:
        for slot, f in enumerate(pB.tables):
            found_b = transitions.get(f)
            if found_b is None:
                return f"B{f} learned on a dense support (the compiled tick takes a sparse one)"
            if _outside_prior(pB, slot):
                return f"B{f}'s support outside its counts' prior"
            entries[f] = _transition_entries(found_b)
            own.append(found_b.values)
    found = _kernel(model, learner, spec, cm=cm, settings=settings, n_agents=n_agents,
                    shared=False, bound=own, entries=entries, cells=cells)
    if isinstance(found, str):
        return found
    return NativePass(tables_A, learner, found, n_agents, transitions)


def _values(table: np.ndarray | OnSupport) -> np.ndarray:
    """What the pass reads and writes of the agents' tables: their values (on their support,
    or whole)."""
    from edge_agent.aif.per_agent import OnSupport  # noqa: PLC0415 - a group that learns

    return table.values if isinstance(table, OnSupport) else table


def _outside_prior(pB: DirichletCounts, slot: int) -> bool:
    """Whether the ``slot``'s counts' support (their mask) has a cell their prior has not:
    the pass's entries are the prior's support."""
    return bool(np.any(pB.mask[slot] & (pB.prior[slot] <= 0)))


def _transition_entries(st: SparseTransitions) -> native.TransitionEntries:
    """The entries of the agents' ``B`` kept on its support (``st``), in the order of its
    values ``(N, U, S, k)``: action by action, row by row, each row's ``k`` sources (a pad:
    index -1, its value 0), so that the pass reads and writes the values where they are."""
    U, S, k = st.sources.shape
    start = np.arange(U + 1, dtype=np.int64) * (S * k)
    row = np.broadcast_to(np.arange(S, dtype=np.int64)[None, :, None], (U, S, k)).reshape(-1)
    flat = np.where(st.weights > 0, st.rows, -1).astype(np.int64).reshape(-1)
    return native.TransitionEntries(start, np.ascontiguousarray(row),
                                    st.sources.astype(np.int64).reshape(-1), flat)


def shared_pass(
    model: GenerativeModel, *, quantized: QuantizedModel | None, learner: Learner,
    spec: LearningSpec, cm: kernels.CompiledModel, settings: AifSettings, n_agents: int,
    codes: Callable[[], QuantizedModel | None] | None = None,
    surprise: OutcomeProbabilities | None = None,
) -> SharedNativePass | str:
    """The compiled pass of a shared group on ``model`` (``quantized``: the int8 codes it steps
    with, None for float64), or why it steps with numpy (:func:`_kernel`; a learned ``B``'s
    support within its counts' prior, whose support is the pass's entries). An int8 group
    (``codes``: the scope's codes now; ``surprise``: the scope's) infers and plans with its
    codes decoded, each learned column rounded through its codes as its numpy twin's (see
    :class:`SharedNativePass`)."""
    pB = learner.pB
    entries: dict[int, native.TransitionEntries] = {}
    for slot, f in enumerate(() if pB is None else pB.tables):
        assert pB is not None
        if _outside_prior(pB, slot):
            return f"B{f}'s support outside its counts' prior"
        # the entries: every cell the counts can hold (their prior's support), action by action
        entries[f] = native.support_entries(pB.prior[slot] > 0)
    # an int8 group's tables: its codes decoded (those its numpy kernels compile)
    tables = None if quantized is None else quantized.dequantize()
    found = _kernel(tables or model, learner, spec, cm=cm, settings=settings,
                    n_agents=n_agents, shared=True, bound=[], entries=entries,
                    quantise=quantized is not None)
    if isinstance(found, str):
        return found
    if tables is None:
        return SharedNativePass(model, learner, found, n_agents)
    # (after the kernel's own reasons: a group the pass would not take says those)
    if (why := _fixed_local(cm, pB, n_agents)) is not None:
        return why
    return SharedNativePass(model, learner, found, n_agents, tables=tables, codes=codes,
                            surprise=surprise)


def _fixed_local(
    cm: kernels.CompiledModel, pB: DirichletCounts | None, n_agents: int
) -> str | None:
    """Why an int8 shared group of ``n_agents`` learning ``pB`` steps numpy's local one-step
    planner (None: the pass takes it): above :data:`LOCAL_MEASURED` agents, a model numpy
    plans with its local planner (grid10's) whose learned columns stay fixed (the counts' prior
    one target in every column: a deterministic move learned on its support never moves, so the
    numpy tick refreshes nothing and plans locally, the group's frozen tick in all but name).
    Measured (benchmarks/notes/learning.md, issue 58, int8 shared ``pB`` on grid10's support):
    numpy's tick 0.88x the pass's at 100 agents, 0.57x at 1,000; 1.28x at 1."""
    if pB is None or cm.local is None or n_agents <= LOCAL_MEASURED:
        return None
    if not all(bool(np.all(np.count_nonzero(prior > 0, axis=0) == 1)) for prior in pB.prior):
        return None
    return (f"B's learned columns stay fixed and numpy's local one-step planner outruns the "
            f"compiled pass's dense plan above {LOCAL_MEASURED} agents")


def _kernel(
    model: GenerativeModel, learner: Learner, spec: LearningSpec, *, cm: kernels.CompiledModel,
    settings: AifSettings, n_agents: int, shared: bool, bound: list[np.ndarray],
    entries: Mapping[int, native.TransitionEntries], quantise: bool = False,
    cells: Mapping[int, np.ndarray] | None = None,
) -> NativeTick | str:
    """The compiled tick of ``model``'s group (``shared``: one set of counts), or why it steps
    with numpy: the pass learns ``pA`` and ``pB`` (each agent its own counts or shared;
    ``entries``: each learned factor's), without forgetting or novelty, in
    float64 counts refreshed every tick, for one-step policies, deterministic marginal action
    selection and a model within :func:`~edge_agent.aif.kernels.native.binding.limits`, in
    C-contiguous float64 arrays (the counts, their experience and ``bound``: the tables it
    writes). The agents' state is in ``cm``'s dtype (an int8 group's float32); ``quantise``:
    the learned columns rounded through int8 codes (an int8 group's); ``cells``: each learned
    modality's tables kept on their support, each cell's index into an agent's values."""
    s = spec.settings
    policies = cm.tree.policies
    pA, pB = learner.pA, learner.pB
    reasons = [
        (os.environ.get(NATIVE_ENV, "1") == "0", f"{NATIVE_ENV}=0"),
        (learner.pD is not None, "pD learned (the compiled tick learns pA and pB)"),
        (pA is None and pB is None, "neither pA nor pB is learned"),
        (spec.param_info_gain, "param_info_gain"),
        (spec.refresh_every != 1, f"refresh_every {spec.refresh_every}"),
        (s.forgetting != 0.0, "forgetting"),
        (s.counts_dtype != "float64", f"counts_dtype {s.counts_dtype}"),
        (policies.shape[1] != 1, f"policy_len {policies.shape[1]}"),
        (settings.action_selection != "deterministic", "stochastic action selection"),
        (settings.sampling_mode != "marginal", f"sampling_mode {settings.sampling_mode}"),
    ]
    for found, why in reasons:
        if found:
            return why
    from edge_agent.aif.kernels.native import binding  # noqa: PLC0415 - loads the library
    missing = binding.unavailable()  # no library, or not the binding's: its limits unknown
    if missing is not None:
        return missing
    too_large = native.too_large(model.num_states, model.num_controls, model.num_modalities,
                                 len(policies))
    if too_large is not None:
        return too_large
    counted = [a for c in (pA, pB) if c is not None for a in (*c.counts, *c.experience)]
    if not all(a.dtype == np.float64 and a.flags.c_contiguous for a in (*bound, *counted)):
        return "tables or counts not C-contiguous float64"
    S = int(np.prod(model.num_states))
    supports = [(a > 0).reshape(a.shape[0], S) for a in model.A]
    for slot, m in enumerate(() if pA is None else pA.tables):
        assert pA is not None
        supports[m] = supports[m] | (pA.prior[slot].reshape(supports[m].shape) > 0)
    return binding.NativeTick(
        model.A, model.B, model.D, lnC=binding.log_preferences(model.C),
        lnE=np.asarray(cm.lnE, dtype=np.float64), policies=policies,
        learned=() if pA is None else pA.tables, supports=supports, n=n_agents,
        gamma=float(settings.gamma), num_iter=settings.num_iter, dF_tol=settings.dF_tol,
        lr=s.lr_pA, use_utility=settings.use_utility,
        use_info_gain=settings.use_states_info_gain, shared_counts=shared,
        learned_B=entries, lr_B=s.lr_pB, state_dtype=cm.dtype.type, quantise=quantise,
        cells=cells,
    )
