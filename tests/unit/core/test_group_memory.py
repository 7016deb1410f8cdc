"""What a group holds and reserves (edge_agent.core.group_memory): the bytes by part it reserves
before anything is allocated, the reservations following a resize and given back on release or
on a refusal, and where what workers write is allocated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.workers import is_shared
from edge_agent.errors import BudgetError
from edge_agent.sim.registry import make_env

BLOCK = 32


def test_the_agents_reservation_is_what_their_parts_hold() -> None:
    budget = MemoryBudget(256 << 20)
    env: Any = make_env("grid10", 3 * BLOCK, seed=1)
    group = AifAgentGroup(env.model, 3 * BLOCK, block_size=BLOCK, budget=budget, name="g",
                          history_capacity=8, planning=PlanningPolicy(every=2))
    memory = group.memory
    parts = memory.nbytes_by_part()
    assert parts["history"] > 0
    assert parts["planning"] > 0
    per_agent = sum(parts.values())
    assert memory.per_agent_nbytes() == per_agent
    scratch = memory.scratch_nbytes(3 * BLOCK)
    assert memory.bytes_for(3 * BLOCK, 8) == 3 * BLOCK * per_agent + 8 * 8 + scratch
    assert budget.by_owner()["g"] == memory.bytes_for(3 * BLOCK, 8)
    group.resize(5 * BLOCK)
    assert budget.by_owner()["g"] == memory.bytes_for(5 * BLOCK, 8)
    group.resize_history(4)
    assert memory.history_capacity == group.history_capacity == 4
    assert budget.by_owner()["g"] == memory.bytes_for(5 * BLOCK, 4)
    assert memory.nbytes == group.state.nbytes + (group.recorder.nbytes if group.recorder else 0)
    group.release()
    assert "g" not in budget.by_owner()
    assert f"model:{group.key}" not in budget.by_owner()


def test_a_group_too_large_for_its_budget_reserves_nothing() -> None:
    env: Any = make_env("grid10", 10, seed=1)
    probe = AifAgentGroup(env.model, 10, name="g")
    budget = MemoryBudget(probe.shared_nbytes + probe.bytes_for(10, 0) // 2)
    with pytest.raises(BudgetError):
        AifAgentGroup(env.model, 10, budget=budget, name="g")
    assert budget.by_owner() == {}


def test_what_workers_write_is_allocated_in_shared_memory_once_the_group_is() -> None:
    env: Any = make_env("grid10", 3 * BLOCK, seed=1)
    alone = AifAgentGroup(env.model, 3 * BLOCK, block_size=BLOCK)
    assert not is_shared(alone.memory.new(4, np.float32))
    shared = AifAgentGroup(env.model, 3 * BLOCK, block_size=BLOCK, shared_state=True)
    assert shared.memory.shared
    assert is_shared(shared.memory.new(4, np.float32))
    assert is_shared(shared.state.qs[0])
    one_block = AifAgentGroup(env.model, BLOCK, block_size=BLOCK, shared_state=True)
    assert not one_block.memory.shared  # one block: the caller steps it alone
    alone.memory.share()  # starting workers moves the state there
    assert alone.memory.shared
    assert is_shared(alone.state.qs[0])


def test_a_small_group_reserves_its_held_health_samples() -> None:
    """A group of fewer agents than a measured tick samples at least holds its measured ticks'
    samples in buffers reserved with its agents (what its health part made); a larger group
    and one without health hold none."""
    budget = MemoryBudget(256 << 20)
    env: Any = make_env("tmaze", 3, seed=1)
    group = AifAgentGroup(env.model, 3, budget=budget, name="g")
    memory = group.memory
    assert group.health is not None
    assert memory.health_nbytes(3) == group.health.nbytes > 0
    scratch = memory.scratch_nbytes(3)
    per_agent = memory.per_agent_nbytes()
    assert budget.by_owner()["g"] == memory.bytes_for(3, 0) == (
        3 * per_agent + scratch + group.health.nbytes
    )
    assert memory.health_nbytes(100) == 0
    bare = AifAgentGroup(env.model, 3, health=False)
    assert bare.memory.health_nbytes(3) == 0
