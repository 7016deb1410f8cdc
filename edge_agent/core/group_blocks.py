"""What every part of an agent group shares: its blocks and their rows, block sizes, the
compiled model tables shared by groups on one model, and the small helpers the parts use.

An agent group (:class:`~edge_agent.core.agents.AifAgentGroup`) is cut into blocks of at most
``block_size`` agents; each block's kernels run on views of the group's arrays
(:class:`_BlockRows`) and on preallocated scratch.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.errors import InputError

Precision = Literal["int8", "float64"]
#: What a history row records of the beliefs: every state's probability (uint8 codes), or per
#: factor the most probable state and its probability ("map": 2-3 bytes instead of sum S_f).
HistoryBeliefs = Literal["full", "map"]

IntArray = NDArray[np.int64]

#: Agents per kernel call at most; bounds temporary memory to ``block_size * per-agent scratch``
#: (and ``BLOCK_SCRATCH_BYTES`` below bounds it first for all but the smallest models). A tick of
#: a tiny model (T-maze: 8 joint states, ~1 KB of scratch per agent) is mostly the fixed cost of
#: each numpy call, paid once per block: 2,048 agents a block ran the T-maze 1.3-1.7x faster than
#: 512 at N = 1,000 and 10,000 (benchmarks/notes/core-and-pymdp.md, "The thinnest lead").
DEFAULT_BLOCK = 2048
#: A block's scratch is kept below this many bytes (fewer agents per block for big policy trees):
#: large enough that per-call overhead is amortised, small enough to stay in a Pi's L2/L3 cache.
BLOCK_SCRATCH_BYTES = 8 << 20
#: Blocks of more than ``LARGE_MODEL_BLOCK`` agents are only for models of which
#: ``DEFAULT_BLOCK`` agents fit in ``BLOCK_SCRATCH_BYTES`` (the T-maze: 1.5 KB an agent, 3 KB in
#: float64). Larger models keep blocks of at most 512 agents: measured against the 907-1,865
#: agents ``BLOCK_SCRATCH_BYTES`` alone gave them (2026-11-25, one process, CPU time, N = 1,000
#: and 10,000), explorer and grid2f ran 1.06-1.09x faster, the T-maze with two-step policies
#: 2.2-2.8x, grid10 with one-step policies 0.91-0.92x; and a daemon of 1,000 grid10 agents holds
#: 2.5 MB less scratch (of the <= 40 MB a daemon without MQTT is to stay within).
LARGE_MODEL_BLOCK = 512
#: With a local planner the dense evaluation only serves a few agents per tick (and
#: ``infer_policies`` without an observation): its scratch is kept to this.
DENSE_FALLBACK_BYTES = 1 << 20


def model_key(model: GenerativeModel | QuantizedModel, precision: str, policies: np.ndarray) -> str:
    """A stable identity for shared tables: same model + precision + policies -> same key."""
    h = hashlib.sha256(precision.encode())
    arrays = model.to_arrays() if isinstance(model, QuantizedModel) else model.to_npz_dict()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(np.ascontiguousarray(policies).tobytes())
    return h.hexdigest()[:16]


@dataclass(eq=False)
class _BlockRows:
    """One block of a group: its agents, its scratch views, and views of the group's rows
    (``prior``: of the process's scratch when the group keeps no prior between ticks);
    ``index``: the block's (-1: agents gathered from several blocks)."""

    sl: slice
    blk: kernels.Block
    qs: list[np.ndarray]
    prior: list[np.ndarray]
    G: np.ndarray
    q_pi: np.ndarray
    action: np.ndarray
    has_action: np.ndarray
    index: int = -1


#: A planning policy's per-agent state that snapshots carry: the committed plans.
_PLAN_ARRAYS = ("plan_policy", "plan_left", "plan_age", "deferred")
#: The passes of a tick under a planning policy (see AifAgentGroup._step_planning).
_INFER, _PLAN, _PROPAGATE = 0, 1, 2
#: What a planning tick's workers write, or read from the caller after the fork: in shared
#: memory with the group's state (see AifAgentGroup._share_state).
_PLAN_SHARED = (
    "plan_policy", "plan_left", "plan_age", "_change", "_evidence", "_candidates",
    "_plan_pass", "_plan_limit", "_plan_deadline", "_chunk_done",
)

#: Compiled tables by model key. Weak: a model's tables live as long as a group uses them, and
#: every group on the same model (and the daemon's admission probe) shares one copy, which is
#: what the budget counts once per model.
_COMPILED: weakref.WeakValueDictionary[str, kernels.CompiledModel] = weakref.WeakValueDictionary()


def _compiled(
    key: str,
    model: GenerativeModel | QuantizedModel,
    policies: np.ndarray,
    dtype: type[np.floating],
) -> kernels.CompiledModel:
    cm = _COMPILED.get(key)
    if cm is None:
        cm = kernels.compile_model(model, policies, dtype=dtype)
        _COMPILED[key] = cm
    return cm


def _small_uint(limit: int) -> type[np.unsignedinteger]:
    return np.uint8 if limit <= 256 else np.uint16


def _index_dtype(n: int) -> type[np.signedinteger]:
    """Agent indices: int32 for fewer than 2**31 agents."""
    return np.int32 if n < 2**31 else np.int64


def _check_arguments(name: str, n_agents: int, precision: str, history_beliefs: str) -> None:
    if n_agents < 1:
        raise InputError(f"group {name!r}: n_agents must be >= 1, got {n_agents}")
    if precision not in ("int8", "float64"):
        raise InputError(f"precision must be 'int8' or 'float64', got {precision!r}")
    if history_beliefs not in ("full", "map"):
        raise InputError(f"history_beliefs must be 'full' or 'map', got {history_beliefs!r}")

