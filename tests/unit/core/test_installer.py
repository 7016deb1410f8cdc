"""A learning group's new compiled tables installed (edge_agent.core.installer): the stepper takes
them, the scratch and the agents' reservation follow them, the workers fork again; nothing when
nothing is new."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.installer import TablesInstaller
from edge_agent.core.learning import NewTables
from edge_agent.sim.registry import builtin_model
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model

BLOCK = 16


def _installer(group: AifAgentGroup) -> TablesInstaller:
    return TablesInstaller(group.stepper, group.state, group.plans, group.memory, group.cores)


def test_tables_of_the_same_layout_keep_the_scratch() -> None:
    model = tmaze_reversal_model()
    group = AifAgentGroup(model, 2 * BLOCK, precision="float64", block_size=BLOCK)
    installer = _installer(group)
    before, workspace = group.cm, group.stepper.workspace
    installer.install(None)
    assert group.cm is before
    again = kernels.compile_model(model, before.tree.policies, dtype=np.float64)
    installer.install(NewTables(again, same_layout=True))
    assert group.cm is again
    assert group.stepper.workspace is workspace


def test_tables_of_another_layout_bring_their_scratch_and_reservation() -> None:
    """Tables that may need other scratch (grid10's two-step policies: the deep planner's): the
    stepper's scratch made again for them, the agents' reservation what the group holds with
    them, the workers forked again."""
    model = builtin_model("grid10")
    budget = MemoryBudget(256 << 20)
    group = AifAgentGroup(model, 2 * BLOCK, settings=AifSettings(policy_len=2),
                          precision="float64", block_size=BLOCK, budget=budget, name="g")
    assert group.cm.deep is not None
    installer = _installer(group)
    assert group.start_workers(2) == 2
    try:
        running = group.cores.running
        assert running is not None
        pids, workspace = running.pids, group.stepper.workspace
        other = kernels.compile_model(model, group.cm.tree.policies, dtype=np.float64)
        installer.install(NewTables(other, same_layout=False))
        assert group.cm is other
        assert group.stepper.workspace is not workspace
        assert budget.by_owner()["g"] == group.memory.bytes_for(2 * BLOCK, 0)
        assert running.pids != pids  # forked again with the new tables
        group.step(np.zeros((2 * BLOCK, group.cm.num_modalities), dtype=np.int64))
    finally:
        group.stop_workers()
