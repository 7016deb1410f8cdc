"""The ways an Active Inference group steps one tick (its *tick paths*), one object each, chosen
once.

:func:`~edge_agent.core.path_choice.tick_path` picks the path for what a group is: whether it
plans every tick, whether and how it learns (its scope's stages, the compiled pass its scope
built), whether workers step its blocks. The group (:class:`~edge_agent.core.agents.
AifAgentGroup`) asks it when it is made and again only when one of those changes (workers
started or stopped, a resize, learning frozen or resumed or otherwise changed by a verb, a
snapshot restored); between, every tick runs the same object, which asks nothing of what the
group is. Each path holds the parts it needs, given
explicitly (the state, the stepper, the history's recorder, the learning, the installer of new
compiled tables, the workers) and none holds the group.

==================================  ================================================================
path                                its tick
==================================  ================================================================
:class:`FusedTick`                  every block whole (:meth:`BlockStepper.step_block
                                    <edge_agent.core.block_stepper.BlockStepper.step_block>`: infer,
                                    plan, act, the next prior), here or on the workers
                                    (:class:`BlockTicks`): a group that does not learn and plans
                                    every tick
:class:`CompiledTick`               every agent's whole tick in one pass of the compiled tick
                                    (:mod:`edge_agent.aif.kernels.native`): a group that does
                                    not learn, plans every tick and steps here, where the pass
                                    takes its model (:func:`~edge_agent.core.native_pass.
                                    frozen_kernel`)
:class:`PolicyTick`                 a planning policy's passes
                                    (:class:`~edge_agent.core.planning_pass.PolicyTicks`), every
                                    agent learning between inference and planning in a group that
                                    learns
the learning paths                  a group that learns every tick: ``SharedLearningTick``,
                                    ``StagesTick``, ``PassTick`` (:mod:`edge_agent.core.
                                    learning_ticks`, imported only by a group that learns)
==================================  ================================================================

Around every path the group does the same, once: the evidence checked; the health part told the
tick's outcomes with the prior the agents predicted them with (:meth:`TickPath.tick_prior`: the
state's, made again for a group that keeps none, or made by the tick itself where each agent
infers with its own tables); the path run; the health part told the posteriors and the likelihood
they were inferred with (:meth:`TickPath.likelihood`). A new path is one class here (or, for a
group that learns, in :mod:`edge_agent.core.learning_ticks`) and one line where the choice is
made (:func:`~edge_agent.core.path_choice.tick_path`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.health import InTick, InTickFold, TickPrior

if TYPE_CHECKING:
    from edge_agent.aif.kernels.native.binding import NativeTick
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.installer import TablesInstaller
    from edge_agent.core.learning import GroupLearning
    from edge_agent.core.planning_pass import Chooser, PolicyTicks
    from edge_agent.core.workers import BlockWorkers

#: A tick's integer outcomes ``(N, M)`` (None: soft evidence), its soft evidence (None: integer
#: outcomes), the agents that plan it (None: as the planning policy chooses), and the agents
#: whose trial starts at it (``(N,)`` bool, some True; None: nobody's), given only to a path
#: that starts them in its tick (:attr:`TickPath.starts_in_tick`).
Obs = IntArray | None
Soft = list[np.ndarray] | None
WhoPlans = NDArray[np.bool_] | None
Starts = NDArray[np.bool_] | None

__all__ = [
    "BlockTicks",
    "CompiledTick",
    "FusedTick",
    "Obs",
    "PolicyTick",
    "SharedStages",
    "Soft",
    "Starts",
    "TickPath",
    "WhoPlans",
    "record_row",
]


class TickPath(Protocol):
    """One way of stepping a group's tick (see the module doc)."""

    #: Whether :meth:`run` starts the trials of the agents it is given (``starts``, with
    #: integer outcomes) in the tick itself: their prior ``D``, as a reset of them just before
    #: would leave it (the compiled passes). Else the group resets them before the run and
    #: gives it none.
    starts_in_tick: bool

    @property
    def in_tick(self) -> InTick | None:
        """How the tick measures health's sampled agents itself (None: health measures them
        with numpy from the prior and posteriors; see :data:`~edge_agent.core.health.InTick`)."""
        ...

    def tick_prior(self) -> TickPrior:
        """The prior the agents predict this tick's outcomes with, before the tick (see
        :data:`~edge_agent.core.health.TickPrior`; None: the tick makes it into the state)."""
        ...

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """Step every agent on checked evidence (``obs (N, M)``, or ``soft`` evidence; a group
        that learns takes integer outcomes only) and append the history row (``record``: the
        group has a history and the caller wants the row; ``now``: its timestamp);
        ``who_plans``: the agents that plan (a planning policy's replay); ``ticks``: the
        group's ticks so far (the workers' streams are seeded with it); ``starts``: the agents
        whose trial starts at this tick (:attr:`starts_in_tick`; None for any other path)."""
        ...

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The ``A`` the agents ``rows`` inferred with this tick (see
        :data:`~edge_agent.core.health.Likelihood`)."""
        ...


def record_row(
    recorder: HistoryRecorder, stepper: BlockStepper, state: AgentState, obs: Obs, soft: Soft,
    *, now: float | None,
) -> None:
    """Append the tick's history row to ``recorder``, its beliefs staged by the tick (soft
    evidence: each modality's most probable outcome staged as the outcome)."""
    if obs is None:
        assert soft is not None
        for rows in stepper.blocks(state):
            recorder.stage_outcomes(rows, soft)
    recorder.record(obs, state.action, now)


class BlockTicks:
    """An every-tick group's blocks, each stepped whole (:meth:`BlockStepper.step_block`) with
    its history row staged: here one after the other (:meth:`step_here`), or one at a time in
    whichever process takes it (:meth:`step_index`, which the workers hold weakly: the group
    holds this part for as long as it lives)."""

    def __init__(
        self, state: AgentState, stepper: BlockStepper, recorder: HistoryRecorder | None
    ) -> None:
        self._state, self._stepper, self._recorder = state, stepper, recorder

    def after_fork(self) -> None:
        """In the caller and in each worker once the workers are forked: kernel scratch of its
        own (:meth:`BlockStepper.after_fork`)."""
        self._stepper.after_fork(self._state)

    def step_index(self, index: int, obs: np.ndarray, record: bool) -> None:
        """Block ``index``'s tick (the workers' per-block step)."""
        state, stepper = self._state, self._stepper
        rows = stepper.blocks(state)[index]
        stepper.step_block(state, rows, obs, None)
        if record:
            assert self._recorder is not None  # record only with a history
            self._recorder.stage_beliefs(rows)

    def step_here(self, obs: Obs, soft: Soft, record: bool, ticks: int, seed: int | None) -> None:
        """Every block's tick here, one after the other (``seed``: workers were started once;
        each block draws from the stream they would draw from)."""
        state, stepper = self._state, self._stepper
        history = self._recorder if record else None
        for i, rows in enumerate(stepper.blocks(state)):
            if seed is not None:
                stepper.set_rng(np.random.default_rng((seed, i, ticks)))
            stepper.step_block(state, rows, obs, soft)
            if history is not None:
                history.stage_beliefs(rows)


class FusedTick:
    """Every agent's whole tick, block by block: on the ``workers`` when they run (integer
    outcomes; soft evidence is stepped here), else here by ``blocks`` (``seed``: the workers'
    generators' seed, once they were started)."""

    in_tick: InTick | None = None  # health measures with numpy
    starts_in_tick = False

    def __init__(
        self,
        blocks: BlockTicks,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        workers: BlockWorkers | None,
        seed: int | None,
    ) -> None:
        self._blocks, self._workers, self._seed = blocks, workers, seed
        self._state, self._stepper, self._recorder = state, stepper, recorder
        self._remade = partial(stepper.remade_prior, state)

    def tick_prior(self) -> TickPrior:
        """The state's prior (made again for the sampled agents where none is kept)."""
        return self._state.prior if self._state.keeps_prior else self._remade

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (``who_plans`` is a planning policy's, ``starts`` a
        compiled pass's: None here)."""
        del who_plans, starts
        self.step(obs, soft, record, ticks)
        if record:
            assert self._recorder is not None
            record_row(self._recorder, self._stepper, self._state, obs, soft, now=now)

    def step(self, obs: Obs, soft: Soft, record: bool, ticks: int) -> None:
        """Every block's tick, its history row staged (not appended)."""
        if self._workers is not None and obs is not None:
            self._workers.step(obs, record, ticks)
        else:
            self._blocks.step_here(obs, soft, record, ticks, self._seed)

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The compiled model's rows (one ``A`` for every agent)."""
        del rows
        return self._stepper.cm.A_rows


class CompiledTick:
    """Every agent's whole tick in one pass of the compiled ``kernel`` (a group that does not
    learn: :func:`~edge_agent.core.native_pass.frozen_kernel`), in the state's own arrays: the
    prior the group keeps read and the next one written in its place, or, where it keeps none,
    made in the pass from the beliefs and actions (``D`` for an agent reset since); ``D`` for an
    agent whose trial starts at the tick (``starts``); then the history row. Soft evidence is
    stepped by ``fused`` (numpy: the pass takes outcomes)."""

    #: The pass starts the trials it is given (their prior ``D``: :meth:`_run`).
    starts_in_tick = True

    def __init__(
        self,
        kernel: NativeTick,
        fused: FusedTick,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
    ) -> None:
        self._kernel, self._fused = kernel, fused
        self._state, self._stepper, self._recorder = state, stepper, recorder
        self._remade = partial(stepper.remade_prior, state)
        #: The health measures the pass writes on a measured tick ``(4, r)`` (made once per
        #: sample size: 32 bytes a sampled agent), and whether the next run writes them.
        self._measures = np.zeros((4, 0))
        self._measuring = False

    def tick_prior(self) -> TickPrior:
        """The state's prior (made again for the sampled agents where none is kept)."""
        return self._state.prior if self._state.keeps_prior else self._remade

    @property
    def in_tick(self) -> InTick | None:
        """:meth:`measure`: the pass measures health's sampled agents."""
        return self.measure

    def measure(self, rows: IntArray, fold: InTickFold | None = None) -> np.ndarray:
        """The next run measures health's sampled agents ``rows`` (ascending, int64) in the
        pass (:data:`~edge_agent.core.health.InTick`): their ``(4, r)`` measures, written by
        it, into ``fold``'s buffers with health's fold beside them (None: the path's own,
        nothing folded). Soft evidence (numpy's blocks) is never measured: health is told it
        only with integer outcomes."""
        self._measuring = True
        if fold is not None:
            self._kernel.measure(rows, fold.measures, entropy=fold.entropy, lnC=fold.lnC,
                                 preference=fold.preference, sums=fold.sums)
            return fold.measures
        if self._measures.shape[1] != len(rows):
            self._measures = np.zeros((4, len(rows)))
        self._kernel.measure(rows, self._measures)
        return self._measures

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (``who_plans`` is a planning policy's: None here)."""
        if obs is None:  # soft evidence: numpy's blocks (the group reset the starts)
            self._fused.run(obs, soft, now, record, who_plans=who_plans, ticks=ticks)
            return
        try:
            self._run(obs, now, record, starts)
        finally:
            if self._measuring:
                self._kernel.unmeasure()
                self._measuring = False

    def _run(self, obs: IntArray, now: float | None, record: bool, starts: Starts) -> None:
        state = self._state
        if state.keeps_prior:
            self._kernel.step(obs, state.qs, state.action, state.has_action, G=state.G,
                              q_pi=state.q_pi, prior=state.prior, next_prior=state.prior,
                              start=starts, prior_given=True)
        else:  # made in the pass; every agent commits an action: its next prior follows
            if starts is not None:  # (reset since it acted, or starting now: D)
                np.logical_or(state.prior_reset, starts, out=state.prior_reset)
            self._kernel.step(obs, state.qs, state.action, state.has_action, G=state.G,
                              q_pi=state.q_pi, start=state.prior_reset)
            state.prior_reset.fill(False)
            state.prior_small.fill(0)
        if record:
            recorder = self._recorder
            assert recorder is not None
            for rows in self._stepper.blocks(state):
                recorder.stage_beliefs(rows)
            record_row(recorder, self._stepper, state, obs, None, now=now)

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The compiled model's rows (one ``A`` for every agent)."""
        del rows
        return self._stepper.cm.A_rows


class PolicyTick:
    """A planning policy's tick (``plans``): every agent infers (:meth:`PolicyTicks.infer
    <edge_agent.core.planning_pass.PolicyTicks.infer>`), learns (a group that learns: after
    the inference pass, before anyone plans; the new tables installed by ``installer``), then
    the agents that must plan plan (:meth:`PolicyTicks.plan
    <edge_agent.core.planning_pass.PolicyTicks.plan>`); each pass on the ``workers`` when they
    run."""

    in_tick: InTick | None = None  # health measures with numpy
    starts_in_tick = False

    def __init__(
        self,
        plans: PolicyTicks,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        workers: BlockWorkers | None,
        learning: GroupLearning | None,
        installer: TablesInstaller,
    ) -> None:
        self._plans, self._workers, self._learning = plans, workers, learning
        self._state, self._stepper, self._recorder = state, stepper, recorder
        self._installer = installer
        self._remade = partial(stepper.remade_prior, state)

    def tick_prior(self) -> TickPrior:
        """The state's prior (made again for the sampled agents where none is kept)."""
        return self._state.prior if self._state.keeps_prior else self._remade

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (``starts``: a compiled pass's, None here)."""
        del starts
        state, plans, learning, workers = self._state, self._plans, self._learning, self._workers
        if learning is not None:
            assert obs is not None  # a group that learns refuses soft evidence
            learning.observe(obs, state.prior)  # the tick's prior, made by the last tick
            learning.keep_action(state.action, state.has_action)
        start = plans.infer(obs, soft, record, workers=workers, ticks=ticks, who_plans=who_plans)
        if learning is not None:  # every agent learns, before anyone plans
            assert obs is not None
            self._installer.install(learning.after_inference(obs, state.qs))
        plans.plan(obs, soft, record, workers=workers, ticks=ticks, who_plans=who_plans,
                   start=start)
        if record:
            assert self._recorder is not None
            record_row(self._recorder, self._stepper, state, obs, soft, now=now)
        plans.stepped()

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The compiled model's rows (one ``A`` for every agent)."""
        del rows
        return self._stepper.cm.A_rows


class SharedStages:
    """The stages of agents that share the group's compiled tables, over its blocks (the
    :class:`~edge_agent.core.learning.AgentStepping` of a group without tables of each agent's
    own): ``chooser`` acts on the policies before the choice (a learning group that seeks
    novelty; None: nothing does)."""

    #: Inference starts from the prior the last tick left in the state.
    makes_prior = False

    def __init__(self, stepper: BlockStepper, chooser: Chooser | None) -> None:
        self._stepper, self._chooser = stepper, chooser

    def infer_states(self, state: AgentState, obs: IntArray, stepper: BlockStepper) -> None:
        """Every block's posteriors from its prior (kept) and ``obs``."""
        for rows in stepper.blocks(state):
            stepper.infer(rows, obs, None, roots=False)

    def infer_policies(self, state: AgentState, stepper: BlockStepper) -> None:
        """``G`` and ``q_pi`` of every agent by the dense evaluation, block by block (then the
        chooser's, e.g. the parameter information gain)."""
        for rows in stepper.blocks(state, dense=True):
            kernels.load_roots(rows.qs, rows.blk)
            stepper.plan(rows, None, stepper.planner(rows, None))
        if self._chooser is not None:
            self._chooser.before_choice(state.qs, state.G, state.q_pi)

    def sample_action(self, state: AgentState, stepper: BlockStepper) -> None:
        """Every agent's action from its ``q_pi``, committed (the next prior propagated)."""
        for rows in stepper.blocks(state):
            np.copyto(rows.blk.x, rows.q_pi.T)
            stepper.act(state, rows, "propagate")
        state.beliefs_ahead = False

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The compiled model's rows (one ``A`` for every agent)."""
        del rows
        return self._stepper.cm.A_rows
