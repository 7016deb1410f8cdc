"""Where an Active Inference group's tick path is chosen (:mod:`edge_agent.core.tick_paths`): one
function, :func:`tick_path`, asked when the group is made and again only when what it depends on
changes; the learning paths' module is imported only for a group that learns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.core.tick_paths import BlockTicks, CompiledTick, FusedTick, PolicyTick, TickPath

if TYPE_CHECKING:
    from edge_agent.aif.kernels.native import NativeTick
    from edge_agent.core.agent_state import AgentState
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.installer import TablesInstaller
    from edge_agent.core.learning import AgentStepping, GroupLearning
    from edge_agent.core.planning_pass import PolicyTicks
    from edge_agent.core.workers import BlockWorkers

__all__ = ["tick_path"]


def tick_path(
    *,
    state: AgentState,
    stepper: BlockStepper,
    recorder: HistoryRecorder | None,
    blocks: BlockTicks,
    plans: PolicyTicks | None,
    learning: GroupLearning | None,
    stages: AgentStepping,
    installer: TablesInstaller,
    workers: BlockWorkers | None,
    seed: int | None,
    kernel: NativeTick | None,
) -> TickPath:
    """The path of a group with these parts now: its ``plans`` (None: every agent plans every
    tick), its ``learning`` (None: it does not learn) and ``stages`` (each agent's own tables,
    or :class:`~edge_agent.core.tick_paths.SharedStages`), its running ``workers`` (None: the
    caller steps every block) and their ``seed``, and the compiled tick of a group that does not
    learn (``kernel``; None: numpy steps it, :func:`~edge_agent.core.native_tick.frozen_kernel`
    says why)."""
    if plans is not None:
        return PolicyTick(plans, state=state, stepper=stepper, recorder=recorder,
                          workers=workers, learning=learning, installer=installer)
    fused = FusedTick(blocks, state=state, stepper=stepper, recorder=recorder, workers=workers,
                      seed=seed)
    if learning is None:
        if kernel is not None and workers is None:
            return CompiledTick(kernel, fused, state=state, stepper=stepper, recorder=recorder)
        return fused
    from edge_agent.core.learning_ticks import learning_path  # noqa: PLC0415 - it learns

    return learning_path(fused, state=state, stepper=stepper, recorder=recorder,
                         learning=learning, stages=stages, installer=installer)
