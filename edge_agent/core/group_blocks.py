"""What the parts of an agent group share: its blocks and their rows, the block sizes that bound a
block's scratch, the compiled model tables shared by groups on one model, and a few dtypes.

An agent group (:class:`~edge_agent.core.agents.AifAgentGroup`) is cut into blocks of at most
``block_size`` agents; each block's kernels run on views of the group's arrays
(:class:`BlockRows`) and on preallocated scratch.
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
class BlockRows:
    """One block of a group: its agents ``sl``, its kernel scratch ``blk``, and views of the
    group's per-agent arrays for those agents (``prior``: of the stepper's scratch when the group
    keeps no prior between ticks); ``index``: the block's (-1: agents gathered from several
    blocks, or a block of the dense cut)."""

    sl: slice
    blk: kernels.Block
    qs: list[np.ndarray]
    prior: list[np.ndarray]
    G: np.ndarray
    q_pi: np.ndarray
    action: np.ndarray
    has_action: np.ndarray
    index: int = -1


@dataclass(frozen=True)
class BlockSizes:
    """How a group on one compiled model is cut into blocks, and the kernel scratch one agent of a
    block needs (bytes, by kind of buffer: :meth:`kernels.Workspace.bytes_per_agent`, and the deep
    planner's local and dense forms)."""

    block: int
    dense: int
    deep_dense: int
    common: int
    chunk: int
    dense_scratch: int
    small: int
    rows: int
    deep: int
    deep_dense_scratch: int

    @property
    def per_agent(self) -> int:
        """Kernel scratch per agent of a full block (an upper bound)."""
        return (
            self.common + self.chunk + self.rows + self.dense_scratch + self.small + self.deep
            + self.deep_dense_scratch
        )

    def scratch_nbytes(self, n_agents: int) -> int:
        """The kernel scratch of a group of ``n_agents`` (one block's, preallocated once)."""
        return (
            min(self.block, n_agents) * (self.common + self.deep)
            + min(self.block, n_agents, kernels.CHUNK_ROWS) * (self.chunk + self.rows)
            + min(self.dense, n_agents) * self.dense_scratch
            + min(self.block, n_agents, kernels.SMALL_BLOCK) * self.small
            + min(self.deep_dense, n_agents) * self.deep_dense_scratch
        )


def block_sizes(cm: kernels.CompiledModel, *, info_gain: bool, block_size: int) -> BlockSizes:
    """Block sizes from the scratch one agent of a block needs: at most ``BLOCK_SCRATCH_BYTES`` a
    block, and at most ``LARGE_MODEL_BLOCK`` agents unless ``DEFAULT_BLOCK`` agents fit in that
    (``block_size``: the most the caller wants). A planner that hands only some agents to the
    dense evaluation (local, deep) keeps the dense scratch for at most ``DENSE_FALLBACK_BYTES``.
    The workspace's constant row offsets (``rows``) are counted in the scratch but do not size
    blocks (which would move the blocks' bounds); the buffers the propagation and the local
    planner use a chunk of agents at a time (``chunk``) size them as if a block had them."""
    per = kernels.Workspace.bytes_per_agent(cm, info_gain=info_gain)
    common, dense = per["all"] + per["chunk"], per["dense"]
    deep_plan = cm.deep
    deep, deep_dense = (
        (0, 0)
        if deep_plan is None
        else kernels.deep_bytes_per_agent(cm, deep_plan, info_gain=info_gain)
    )
    if cm.local is None and deep_plan is None:
        block = dense_block = BLOCK_SCRATCH_BYTES // (common + dense)
    else:
        # The deep planner's dense form counts as if every agent had it: not what is allocated
        # (see Workspace), but blocks that size are the fast ones (grid10 policy length 2:
        # 150-225 agents; 334 and 512 measured 2x slower, the local form's arrays no longer in
        # cache).
        block = BLOCK_SCRATCH_BYTES // (common + deep + deep_dense)
        dense_block = DENSE_FALLBACK_BYTES // dense
    if block < DEFAULT_BLOCK:  # not a tiny model
        block = min(block, LARGE_MODEL_BLOCK)
    block = max(1, min(block_size, block))
    return BlockSizes(
        block=block,
        dense=max(1, min(block, dense_block)),
        # The deep planner's dense form (blocks without an observation), like the dense tree.
        deep_dense=max(1, min(block, DENSE_FALLBACK_BYTES // max(1, deep_dense))),
        common=per["all"],
        chunk=per["chunk"],
        dense_scratch=dense,
        small=per["small"],
        rows=per["rows"],
        deep=deep,
        deep_dense_scratch=deep_dense,
    )


#: Compiled tables by model key. Weak: a model's tables live as long as a group uses them, and
#: every group on the same model (and the daemon's admission probe) shares one copy, which is
#: what the budget counts once per model.
_COMPILED: weakref.WeakValueDictionary[str, kernels.CompiledModel] = weakref.WeakValueDictionary()


def shared_tables(
    key: str,
    model: GenerativeModel | QuantizedModel,
    policies: np.ndarray,
    dtype: type[np.floating],
) -> kernels.CompiledModel:
    """The compiled tables of ``model`` under ``key`` (:func:`model_key`): those another group on
    the same model compiled, or compiled now and shared from then on."""
    cm = _COMPILED.get(key)
    if cm is None:
        cm = kernels.compile_model(model, policies, dtype=dtype)
        _COMPILED[key] = cm
    return cm


def small_uint(limit: int) -> type[np.unsignedinteger]:
    """The smallest unsigned dtype of uint8 and uint16 that holds values below ``limit``."""
    return np.uint8 if limit <= 256 else np.uint16


def index_dtype(n: int) -> type[np.signedinteger]:
    """Agent indices: int32 for fewer than 2**31 agents."""
    return np.int32 if n < 2**31 else np.int64
