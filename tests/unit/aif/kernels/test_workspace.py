"""The kernels' scratch (:mod:`edge_agent.aif.kernels.workspace`): one arena per class of buffers,
each buffer sized for the agents its path works on at a time, and no memory for a path a group's
ticks never take (docs/memory.md, "What the daemon's memory is")."""

from __future__ import annotations

import ctypes
import itertools
import os

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.kernels.workspace import (
    ALIGN,
    BUFFER_CLASSES,
    CHUNK_ROWS,
    block_layout,
    buffer_class,
    scratch_arena,
)
from edge_agent.aif.policies import construct_policies
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.gridworld import GridWorldEnv, gridworld_model

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(arr: np.ndarray) -> int:
    """Bytes of the pages under ``arr`` that are in memory (``mincore``, Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    start = arr.ctypes.data - arr.ctypes.data % PAGE
    pages = (arr.ctypes.data + arr.nbytes - start + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * PAGE), vec) == 0
    return sum(v & 1 for v in vec) * PAGE


def grid_tables() -> kernels.CompiledModel:
    model = gridworld_model(10, 10)
    policies = construct_policies(model.num_controls, 1)
    return kernels.compile_model(model, policies, dtype=np.float32)


@pytest.mark.parametrize("capacity", [1, 100, 512])
def test_every_buffer_is_a_view_of_its_class_s_arena_sized_for_its_agents(capacity: int) -> None:
    """Each buffer lies inside its class's arena, aligned, apart from the others, and holds its
    per-agent elements for the agents its class is sized for: a block's, :data:`CHUNK_ROWS`
    of them (the propagation's and the local planner's), the dense or small capacity."""
    cm = grid_tables()
    ws = kernels.Workspace(cm, capacity, info_gain=True, dense_capacity=min(capacity, 40))
    caps = {"all": capacity, "chunk": min(capacity, CHUNK_ROWS), "rows": min(capacity, CHUNK_ROWS),
            "dense": min(capacity, 40), "small": min(capacity, kernels.SMALL_BLOCK)}
    arenas = ws.arenas
    assert set(arenas) == set(BUFFER_CLASSES)
    spans: dict[str, list[tuple[int, int]]] = {cls: [] for cls in BUFFER_CLASSES}
    layout = block_layout(cm, info_gain=True)
    assert {buffer_class(n) for n in layout} == set(BUFFER_CLASSES)
    buffers = ws.buffers
    assert set(buffers) == set(layout)
    for name, (per, dtype) in layout.items():
        cls = buffer_class(name)
        buf, arena = buffers[name], arenas[cls]
        offset = buf.ctypes.data - arena.ctypes.data
        assert buf.dtype == dtype
        assert buf.size == per * caps[cls]
        assert offset % ALIGN == 0
        assert offset >= 0
        assert offset + buf.nbytes <= arena.nbytes
        spans[cls].append((offset, offset + buf.nbytes))
    for cls, ranges in spans.items():
        ranges.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges)), cls
    per_class = kernels.Workspace.bytes_per_agent(cm, info_gain=True)
    assert ws.nbytes == sum(per_class[cls] * caps[cls] for cls in BUFFER_CLASSES)


def test_an_arena_is_in_memory_only_where_written() -> None:
    """A scratch arena is an anonymous mapping of its own: zeros, and no page in memory until
    one is written (an allocation from the heap may be resident from the start)."""
    arena = scratch_arena(64 * PAGE)
    assert resident_bytes(arena) == 0  # (reading maps the kernel's zero page: mincore counts it)
    arena[5 * PAGE] = 1
    assert resident_bytes(arena) == PAGE
    assert arena.sum() == 1
    assert scratch_arena(0).nbytes == 0


def test_a_grid_group_s_ticks_write_no_dense_or_small_scratch() -> None:
    """1,000 grid10 agents stepping their world (episodes reset, as the daemon runs them): the
    local planner serves every agent (the dense evaluation's scratch, sized for a fallback of
    about a hundred agents, and the small-block planner's are never written, so never in
    memory), and the local planner's and the propagation's scratch is sized for
    :data:`CHUNK_ROWS` agents, not the block's 512."""
    env = GridWorldEnv(1000, seed=3)
    group = AifAgentGroup(env.model, 1000, precision="int8", history_capacity=64)
    obs = env.reset()
    for t in range(30):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(t)))
    ws = group.stepper.workspace
    assert ws is not None
    assert (ws.capacity, ws.dense_capacity) == (512, 103)
    arenas = ws.arenas
    assert resident_bytes(arenas["dense"]) == 0
    assert resident_bytes(arenas["small"]) == 0
    chunk = kernels.Workspace.bytes_per_agent(group.stepper.cm, info_gain=True)["chunk"]
    assert arenas["chunk"].nbytes < chunk * CHUNK_ROWS + ALIGN * 32
    assert resident_bytes(arenas["chunk"]) > arenas["chunk"].nbytes // 2
