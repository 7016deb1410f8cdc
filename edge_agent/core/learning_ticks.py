"""The tick paths of a group that learns (:mod:`edge_agent.core.tick_paths`), imported only by one.

==========================  ========================================================================
path                        its tick
==========================  ========================================================================
:class:`SharedLearningTick` a shared learning group on numpy (and a frozen shared group that has a
                            compiled pass): the fused tick with the learning around it; on a tick
                            whose tables change between inference and planning (a refresh due,
                            novelty sought) its :class:`StagesTick`
:class:`StagesTick`         pymdp's order: every agent infers, learns (the tables refreshed),
                            plans and acts, stage by stage (each agent's own tables: per-agent
                            learning; the group's blocks: :class:`~edge_agent.core.tick_paths.
                            SharedStages`)
:class:`PassTick`           the whole learning tick in one compiled pass (the scope's
                            :class:`~edge_agent.core.learning.TickPass`)
==========================  ========================================================================

:func:`learning_path` picks one for what the learning is now (its scope, the pass its scope
built, frozen or not); :func:`~edge_agent.core.tick_paths.tick_path` asks it for a group that
learns and plans every tick (a planning policy's tick learns within
:class:`~edge_agent.core.tick_paths.PolicyTick`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.health import InTick, TickPrior
from edge_agent.core.tick_paths import (
    FusedTick,
    Obs,
    Soft,
    Starts,
    TickPath,
    WhoPlans,
    record_row,
)

if TYPE_CHECKING:
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.installer import TablesInstaller
    from edge_agent.core.learning import AgentStepping, GroupLearning, TickPass

__all__ = ["PassTick", "SharedLearningTick", "StagesTick", "learning_path"]


def _stage_and_record(
    recorder: HistoryRecorder, stepper: BlockStepper, state: AgentState,
    obs: IntArray, now: float | None,
) -> None:
    """Stage every block's beliefs, then append the row (a tick stepped stage by stage)."""
    for rows in stepper.blocks(state):
        recorder.stage_beliefs(rows)
    recorder.record(obs, state.action, now)


class StagesTick:
    """A learning tick in pymdp's order, stage by stage through ``stages``: every agent infers
    its states, learns (the tables refreshed, installed by ``installer``), then plans and acts
    with the current tables."""

    in_tick: InTick | None = None  # health measures with numpy
    starts_in_tick = False

    def __init__(
        self,
        stages: AgentStepping,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        learning: GroupLearning,
        installer: TablesInstaller,
    ) -> None:
        self._stages, self._learning, self._installer = stages, learning, installer
        self._state, self._stepper, self._recorder = state, stepper, recorder

    def tick_prior(self) -> TickPrior:
        """The state's prior, or None where inference makes it (each agent's own tables)."""
        return None if self._stages.makes_prior else self._state.prior

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (integer outcomes only; ``starts``: None here)."""
        del soft, who_plans, ticks, starts
        assert obs is not None  # a group that learns refuses soft evidence
        state, stepper, stages, learning = self._state, self._stepper, self._stages, self._learning
        state.wrote()  # a per-agent compiled pass's kept prior is not this tick's next one
        stages.infer_states(state, obs, stepper)
        learning.observe(obs, state.prior)  # the tick's prior (made by inference, per agent)
        self._installer.install(
            learning.after_inference(obs, state.qs, state.action, state.has_action)
        )
        stages.infer_policies(state, stepper)  # with the parameter information gain if sought
        stages.sample_action(state, stepper)
        if record:
            assert self._recorder is not None
            _stage_and_record(self._recorder, stepper, state, obs, now)

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The stages' (each agent's own ``A`` where it learns its own)."""
        return self._stages.likelihood(rows)


class SharedLearningTick:
    """A shared learning group's tick on numpy: the ``fused`` tick with the learning around it
    (the tick's outcomes and prior observed, the last action kept, then learning from the fused
    tick's posteriors), except on a tick whose tables change between inference and planning (a
    refresh is due, or the agents seek novelty: :meth:`GroupLearning.learns_before_planning
    <edge_agent.core.learning.GroupLearning.learns_before_planning>`), which runs ``stages``."""

    in_tick: InTick | None = None  # health measures with numpy
    starts_in_tick = False

    def __init__(
        self,
        fused: FusedTick,
        stages: StagesTick,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        learning: GroupLearning,
        installer: TablesInstaller,
    ) -> None:
        self._fused, self._stages, self._learning = fused, stages, learning
        self._state, self._stepper, self._recorder = state, stepper, recorder
        self._installer = installer

    def tick_prior(self) -> TickPrior:
        """The state's prior (a group that learns keeps it)."""
        return self._state.prior

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (integer outcomes only; ``starts``: None here)."""
        del starts
        learning, state = self._learning, self._state
        if learning.learns_before_planning():
            self._stages.run(obs, soft, now, record, who_plans=who_plans, ticks=ticks)
            return
        assert obs is not None  # a group that learns refuses soft evidence
        learning.observe(obs, state.prior)  # the tick's prior, made by the last tick
        learning.keep_action(state.action, state.has_action)
        self._fused.step(obs, None, record, ticks)
        # from the same posteriors, after the step
        self._installer.install(learning.after_inference(obs, state.qs))
        if record:
            assert self._recorder is not None
            record_row(self._recorder, self._stepper, state, obs, None, now=now)

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The compiled model's rows (one ``A`` for every agent)."""
        return self._fused.likelihood(rows)


class PassTick:
    """The whole learning tick in one compiled pass (``tick_pass``, its scope's): every agent
    infers, learns (``learn``: not frozen), the tables follow, it plans and acts; then the
    learning keeps what the pass does not (:meth:`GroupLearning.learned_in_pass
    <edge_agent.core.learning.GroupLearning.learned_in_pass>`). The pass measures health's
    sampled agents (:attr:`in_tick`)."""

    def __init__(
        self,
        tick_pass: TickPass,
        *,
        state: AgentState,
        stepper: BlockStepper,
        recorder: HistoryRecorder | None,
        learning: GroupLearning,
        learn: bool,
    ) -> None:
        self._pass, self._learning, self._learn = tick_pass, learning, learn
        self._scope = learning.scope
        #: Whether the pass starts the trials it is given (each agent's own tables: the
        #: per-agent pass; the shared one's are reset before it).
        self.starts_in_tick = tick_pass.takes_starts
        #: The surprise's p(o) as the pass takes it (None: of the outcomes and the prior).
        self._taken = tick_pass.taken()
        self._state, self._stepper, self._recorder = state, stepper, recorder

    def tick_prior(self) -> TickPrior:
        """The state's prior, or None where the pass makes it (each agent's own tables)."""
        return None if self._pass.makes_prior else self._state.prior

    @property
    def in_tick(self) -> InTick | None:
        """:meth:`TickPass.measure <edge_agent.core.learning.TickPass.measure>`: the pass
        measures health's sampled agents."""
        return self._pass.measure

    def run(self, obs: Obs, soft: Soft, now: float | None, record: bool, *,
            who_plans: WhoPlans, ticks: int, starts: Starts = None) -> None:
        """See :meth:`TickPath.run` (integer outcomes only; ``starts``: where the pass takes
        them, :attr:`starts_in_tick`)."""
        del soft, who_plans, ticks
        try:
            self._run(obs, now, record, starts)
        finally:
            if self._pass.measuring:
                self._pass.unmeasure()

    def _run(self, obs: Obs, now: float | None, record: bool, starts: Starts) -> None:
        assert obs is not None  # a group that learns refuses soft evidence
        tick_pass, learning, state = self._pass, self._learning, self._state
        prior = tick_pass.step_tick(state, obs, learn=self._learn, model=self._scope.model,
                                    qs_prev=learning.qs_prev, starts=starts)
        if self._taken is not None:
            learning.observe_taken(len(obs), self._taken)
        else:
            learning.observe(obs, prior, tick_pass.outcome_probabilities)
        learning.learned_in_pass(len(obs), compiled_behind=tick_pass.leaves_compiled_behind,
                                 acted=tick_pass.acted)
        if record:
            assert self._recorder is not None
            _stage_and_record(self._recorder, self._stepper, state, obs, now)

    def likelihood(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The pass's (each agent's own ``A``; shared, the learned tables it keeps)."""
        return self._pass.likelihood(rows)


def learning_path(
    fused: FusedTick,
    *,
    state: AgentState,
    stepper: BlockStepper,
    recorder: HistoryRecorder | None,
    learning: GroupLearning,
    stages: AgentStepping,
    installer: TablesInstaller,
) -> TickPath:
    """The path of an every-tick group that learns (``fused``: its tick without learning;
    ``stages``: each agent's own tables, or the blocks'): the scope's compiled pass where it has
    one (per agent, frozen or not; shared, not frozen: a frozen shared group's tick is the plain
    group's), else the stages (per agent) or the fused tick with the learning around it
    (shared)."""
    own_tables = learning.scope.stepping() is not None
    tick_pass = learning.scope.tick_pass()
    if tick_pass is not None and (own_tables or not learning.frozen):
        return PassTick(tick_pass, state=state, stepper=stepper, recorder=recorder,
                        learning=learning, learn=not learning.frozen)
    staged = StagesTick(stages, state=state, stepper=stepper, recorder=recorder,
                        learning=learning, installer=installer)
    if own_tables:
        return staged
    return SharedLearningTick(fused, staged, state=state, stepper=stepper, recorder=recorder,
                              learning=learning, installer=installer)
