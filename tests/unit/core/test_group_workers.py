"""A group's workers (edge_agent.core.group_workers): how many run, what the budget holds for
them, and what a resize or a stop does to them."""

from __future__ import annotations

from typing import Any

from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.sim.registry import make_env

BLOCK = 32


def test_a_resize_starts_as_many_again_and_a_stop_is_for_good() -> None:
    budget = MemoryBudget(256 << 20)
    env: Any = make_env("grid10", 4 * BLOCK, seed=1)
    g = AifAgentGroup(env.model, 4 * BLOCK, block_size=BLOCK, budget=budget, name="g")
    cores = g.cores
    assert cores.running is None
    assert cores.count == 1
    assert g.start_workers(2) == 2
    assert cores.wanted == 2
    assert cores.running is not None
    held = budget.by_owner()["g:workers"]
    assert held == g.scratch_nbytes(g.n_agents)
    first = cores.running.pids
    g.resize(5 * BLOCK)  # stopped for the new arrays, started again on them
    assert g.workers == 2
    assert cores.running is not None
    assert cores.running.pids != first
    g.stop_workers()
    assert cores.running is None
    assert cores.wanted == 1
    assert "g:workers" not in budget.by_owner()
    g.resize(4 * BLOCK)
    assert g.workers == 1
    g.release()
