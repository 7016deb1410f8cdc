"""What a group holds and reserves (edge_agent.core.group_memory): the bytes by part it reserves
before anything is allocated, the reservations following a resize and given back on release or
on a refusal, and where what workers write is allocated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core import agents
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.health import HELD_BYTES
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.path_choice import TickCosts
from edge_agent.core.workers import is_shared
from edge_agent.errors import BudgetError
from edge_agent.sim.registry import builtin_model, make_env

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
    held = memory.health_nbytes(3 * BLOCK)
    assert group.health is not None
    assert held == group.health.nbytes
    boundary = memory.boundary_nbytes(3 * BLOCK)
    assert memory.bytes_for(3 * BLOCK, 8) == (3 * BLOCK * per_agent + 8 * 8 + scratch + held
                                              + boundary)
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


@pytest.mark.parametrize(("world", "n"), [("tmaze", 1), ("tmaze", 1000), ("grid10", 700),
                                          ("grid2f", 5000)])
def test_the_boundary_s_buffers_stay_within_what_the_group_reserves_for_them(
    world: str, n: int
) -> None:
    """The check of a tick's outcomes and a reset's tiles of ``D`` hold at most
    :meth:`GroupMemory.boundary_nbytes`, after ticks of the group's size and a reset of every
    agent (the buffers those make are the largest)."""
    env: Any = make_env(world, n, seed=1)
    group = AifAgentGroup(env.model, n, budget=MemoryBudget(256 << 20), name="g")
    obs = env.reset()
    for _ in range(2):
        obs = env.step(group.step(obs))
    group.reset(np.ones(n, dtype=np.bool_))
    obs = env.step(group.step(obs))
    inputs, tiles = group.inputs, group.state._tiles
    held = inputs._limits.nbytes + inputs._below.nbytes + sum(
        tile.nbytes for _, tile in tiles._tiles.values())
    assert (held > 0) == (n > 1)  # (one agent's check is Python's, its reset a row)
    assert held <= group.memory.boundary_nbytes(n)


def test_groups_of_one_model_on_either_path_reserve_it_alike_and_their_compiled_ticks_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frozen group the compiled tick can take builds its own compiled tick and reserves it
    with its agents whichever path its measurement keeps (here the test's costs: the compiled
    tick at 3 agents, numpy at 300), so the model's shared reservation is the same bytes for
    both groups (a group's path in it would refuse the second one)."""
    def costs(*args: object, n_agents: int, **kwargs: object) -> TickCosts:
        return TickCosts(native_s=1e-3 if n_agents < 100 else 5e-3, numpy_s=2e-3, agents=n_agents)

    monkeypatch.setattr(agents, "measure_costs", costs)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    budget = MemoryBudget(256 << 20)
    model = builtin_model("tmaze")
    few = AifAgentGroup(model, 3, precision="int8", budget=budget, name="few")
    many = AifAgentGroup(model, 300, precision="int8", budget=budget, name="many")
    assert (few.stepping, many.stepping[:22]) == ("native", "numpy: measured faster")
    assert few.memory.compiled_nbytes == many.memory.compiled_nbytes > 0
    assert few.shared_nbytes == many.shared_nbytes == few.cm.nbytes + few.quantized.nbytes
    owners = budget.by_owner()
    assert owners[f"model:{few.key}"] == few.shared_nbytes  # one owner, counted once
    for group in (few, many):
        assert owners[group.name] == group.bytes_for(group.n_agents, 0) == (
            group.n_agents * group.per_agent_nbytes() + group.scratch_nbytes(group.n_agents)
            + group.memory.compiled_nbytes + group.memory.health_nbytes(group.n_agents)
            + group.memory.boundary_nbytes(group.n_agents))
    assert budget.used == few.shared_nbytes + owners["few"] + owners["many"]


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


def test_a_group_reserves_its_held_health_samples() -> None:
    """A group holds its measured ticks' samples in buffers reserved with its agents (what its
    health part made): a small group's, a larger group's within HELD_BYTES; one without health
    holds none."""
    budget = MemoryBudget(256 << 20)
    env: Any = make_env("tmaze", 3, seed=1)
    group = AifAgentGroup(env.model, 3, budget=budget, name="g")
    memory = group.memory
    assert group.health is not None
    assert memory.health_nbytes(3) == group.health.nbytes > 0
    scratch = memory.scratch_nbytes(3)
    per_agent = memory.per_agent_nbytes()
    assert budget.by_owner()["g"] == memory.bytes_for(3, 0) == (
        3 * per_agent + scratch + group.health.nbytes + memory.compiled_nbytes
        + memory.boundary_nbytes(3)
    )
    assert 0 < memory.health_nbytes(100) <= HELD_BYTES
    bare = AifAgentGroup(env.model, 3, health=False)
    assert bare.memory.health_nbytes(3) == 0
