"""Scratch buffers of the fast paths: their per-agent layout, the Workspace and its per-block views.

Part of :mod:`edge_agent.aif.kernels`. The fast paths write into the preallocated buffers of a
:class:`Workspace` (nothing is allocated per tick); :class:`Block` shapes them for one block of
agents.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.fast_tables import RowMap
from edge_agent.aif.kernels.small_plan import SMALL_BLOCK

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.joint_scratch import JointScratch
    from edge_agent.aif.kernels.local_plan import LocalPlan


# --------------------------------------------------------------------------------------------
# the state-major fast path: scratch buffers
# --------------------------------------------------------------------------------------------
#: Scratch buffers only the dense (state-major policy tree) evaluation uses.
_DENSE_ONLY: tuple[str, ...] = ("row_tmp", "dense_in", "dense_out", "mask", "M", "qo", "lq")
_DENSE_ONLY += ("val", "tmpv", "X", "X2", "idx", "node", "arange")
#: Prefix of the joint small-block path's buffers (sized for the small blocks).
_JOINT = "s_joint_"
#: Prefix of the row offsets (:meth:`Block.row_offsets`), one array per row width and index
#: count.
_ROWS = "rows_"
#: Agents :func:`~edge_agent.aif.kernels.agent_major.propagate_agents` propagates, and
#: :func:`~edge_agent.aif.kernels.local.evaluate_local_block` plans, at a time: a block's index,
#: weight and value buffers for this many stay in a core's cache (cold beliefs of 200,000 grid10
#: agents in blocks of 512, propagated 256 at a time: 12 % less CPU than all 512 at once; 128 at
#: a time: 5 % less), and their scratch (class ``"chunk"``) and the row offsets (``"rows"``) are
#: sized for this many agents, not a block's.
CHUNK_ROWS = 256
#: Each scratch buffer starts at a multiple of this many bytes of its class's arena (a cache
#: line; numpy's own allocations are aligned to 16).
ALIGN = 64
#: The classes of scratch buffers (:func:`buffer_class`), each allocated as one arena.
BUFFER_CLASSES = ("all", "chunk", "rows", "dense", "small")


def _offset_shape(name: str) -> tuple[int, int]:
    """``(S, C)`` of the row offsets named ``rows_S_C``."""
    width, columns = name[len(_ROWS) :].split("_")
    return int(width), int(columns)


def buffer_class(name: str) -> str:
    """Which capacity a scratch buffer is sized for: ``"all"`` (a block's agents), ``"chunk"``
    (:data:`CHUNK_ROWS` of them: the propagation's and the local planner's), ``"dense"`` (the
    dense evaluation's), ``"small"`` (the small-block planner's); or ``"rows"``: constants
    sized like ``"chunk"`` (see :func:`block_layout`)."""
    if name.startswith(_ROWS):
        return "rows"
    if name in _DENSE_ONLY or name.startswith(("root", "child", "gathered")):
        return "dense"
    if name.startswith("s_"):
        return "small"
    if name.startswith("p_") or (name.startswith("l_") and name != "l_bad"):
        return "chunk"
    return "all"


def block_layout(  # noqa: PLR0915 - one line per scratch buffer, kept flat to audit sizes
    cm: CompiledModel, *, info_gain: bool
) -> dict[str, tuple[int, np.dtype[np.generic]]]:
    """Elements *per agent* of every scratch buffer of :class:`Workspace`, and its dtype."""
    plan = cm.fast
    S = cm.num_states
    F = len(S)
    Sj = plan.num_joint_states
    n_out = plan.num_outcomes
    P = cm.num_policies
    J = plan.max_joint_nodes
    U = max(cm.num_controls)
    fdt: np.dtype[np.generic] = cm.dtype
    idt: np.dtype[np.generic] = np.dtype(np.intp)
    bdt: np.dtype[np.generic] = np.dtype(np.bool_)
    out: dict[str, tuple[int, np.dtype[np.generic]]] = {
        "q_tmp": (Sj, fdt),
        "q_tmp2": (Sj if cm.num_modalities > 1 else 0, fdt),
    }
    for f, s in enumerate(S):
        out[f"root{f}"] = (s + 1, fdt)
    if F > 1:
        for name in ("lnL", "joint", "joint_new", "weighted"):
            out[name] = (Sj, fdt)
        for name in ("stk_qa", "stk_qb", "stk_lp", "stk_t"):
            out[name] = (sum(S), fdt)
        for f, s in enumerate(S):
            out[f"gathered{f}"] = (s * J, fdt)
        for name in ("vfe", "prev", "dF", "col_c"):
            out[name] = (1, fdt)
        out["active"] = (1, bdt)
        out["oidx"] = (1 if plan.lnL_T is not None else 0, np.dtype(np.int64))
        out["X"] = (Sj * J, fdt)
        out["X2"] = (Sj * J if F > 2 else 0, fdt)
    for t, depth in enumerate(plan.depths):
        for f, k in enumerate(depth.num_nodes):
            out[f"child{t}_{f}"] = (S[f] * k + 1, fdt)
    extra = plan.max_extra_rows
    if isinstance(plan.outcome_map, RowMap) and info_gain:
        extra = max(extra, plan.outcome_map.max_extra * J)
    out["row_tmp"] = (2 * extra, fdt)
    dense = max((s * k for s, k in zip(S, plan.max_dense_nodes, strict=True)), default=0)
    out["dense_in"] = (dense, fdt)
    out["dense_out"] = (dense, fdt)
    if info_gain:
        out["mask"] = (Sj * J, bdt)
        out["M"] = ((Sj + 1) * J, fdt)
        out["qo"] = (n_out * J, fdt)
        out["lq"] = (n_out * J, fdt)
    out["val"] = (J, fdt)
    out["tmpv"] = (J, fdt)
    for name in ("G", "x", "tmpP"):
        out[name] = (P, fdt)
    out["col_a"] = (1, fdt)
    out["col_b"] = (1, fdt)
    out["marg"] = (U, fdt)
    out["ge"] = (max(U, P), bdt)
    out["ibuf"] = (1, idt)
    out["ibuf2"] = (1, idt)
    out["node"] = (1, idt)
    out["arange"] = (1, idt)
    out["rand"] = (1, np.dtype(np.float64))
    out["idx"] = (max(S), idt)
    out["enc"] = (sum(S), np.dtype(np.float32))
    out["evidence"] = (1, fdt)
    lp = cm.local
    if lp is not None:
        K = len(lp.node_action)
        out["l_idx"] = (K * lp.kt * lp.kin, idt)
        out["l_g"] = (K * lp.kt * lp.kin, fdt)
        out["l_w"] = (K * lp.kt * lp.kin, fdt)
        out["l_pred"] = (K * lp.kt, fdt)
        out["l_mask"] = (K * lp.kt, bdt)
        out["l_nh"] = (K * lp.kt, fdt)
        out["l_tmp"] = (K, fdt)
        out["l_vals"] = (K if lp.policy_node is not None else 0, fdt)
        out["l_Q"] = (K * lp.kr * lp.kt, fdt)
        out["l_qo"] = (K * lp.kr, fdt)
        out["l_lq"] = (K * lp.kr, fdt)
        out["l_bad"] = (1, bdt)
    sp = cm.small
    if sp is not None:
        K, S0 = sp.num_nodes, S[0]
        out["s_out"] = (K * S0 + K, fdt)
        out["s_idx"] = (S0, idt)
        out["s_mask"] = (K * S0, bdt)
        out["s_M"] = (K * S0, fdt)
        out["s_qo_ext"] = (K * (n_out + 1), fdt)
        out["s_lq"] = (K * n_out, fdt)
        out["s_tmp"] = (K, fdt)
        out["s_vals"] = (K, fdt)
        out["s_node"] = (1, idt)
    if cm.joint is not None:  # a multi-factor model (the module loads only for one)
        from edge_agent.aif.kernels.joint_scratch import joint_layout  # noqa: PLC0415

        for name, entry in joint_layout(cm.joint).items():
            out[_JOINT + name] = entry
    props = [ap for ap in plan.agent_propagation if ap is not None]
    if props:
        E = max(ap.max_extra for ap in props)
        out["p_idx"] = (max(*S, E), idt)
        out["p_idx2"] = (E, idt)
        out["p_val"] = (max(*S, E), fdt)
        out["p_val2"] = (E, fdt)
    # Each agent's row offset ``n * S`` in every column of an ``(n, C)`` array (read-only
    # constants of at most CHUNK_ROWS rows, class "rows"), for the ``C`` indices per agent
    # into beliefs ``(n, S)`` that the propagation gathers (C = S and each extra layer's E), a
    # chunk of agents at a time: one contiguous add, which numpy 2.4 runs 2.5x faster than an
    # add of broadcast ``(n, 1)`` int64 offsets (11 against 28 us for 512 x 100 on x86-64).
    for s, c in sorted(_offset_shapes(cm)):
        out[f"{_ROWS}{s}_{c}"] = (c, idt)
    return {k: v for k, v in out.items() if v[0] > 0}


def _offset_shapes(cm: CompiledModel) -> set[tuple[int, int]]:
    """``(S, C)``: the row widths and index counts per agent of :meth:`Block.row_offsets`."""
    shapes: set[tuple[int, int]] = set()
    for s, ap in zip(cm.num_states, cm.fast.agent_propagation, strict=True):
        if ap is not None:
            shapes.update((s, c) for c in (s, *ap.extra_widths))
    return shapes


#: :meth:`Block.propagation_views`: row offsets, index and weight buffers, and per extra entry
#: its row offsets, target and source indices and two value buffers.
PropagationViews = tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
]


def scratch_arena(nbytes: int) -> np.ndarray:
    """``nbytes`` of zeros (uint8) in an anonymous private mapping of their own: its pages are
    resident only once written. (An allocation from the heap may reuse pages the heap holds
    already, which ``calloc`` writes zeros into: resident from the start, written or not.)"""
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(region, dtype=np.uint8)


class LocalViews:
    """The local planner's scratch (:func:`~edge_agent.aif.kernels.local.evaluate_local_block`)
    shaped for ``n`` agents of a block, from ``flat`` (its ``l_*`` buffers) and the tables
    ``lp``."""

    def __init__(self, lp: LocalPlan, flat: dict[str, np.ndarray], n: int) -> None:
        K = len(lp.node_action)
        m = K * lp.kt * lp.kin

        def shaped(name: str, *shape: int) -> np.ndarray:
            return flat[name][: int(np.prod(shape))].reshape(shape)

        self.idx = shaped("l_idx", n, m)
        self.g = shaped("l_g", n, m)
        self.g3 = self.g.reshape(n, K * lp.kt, lp.kin)
        self.w = shaped("l_w", n, m)
        self.pred = shaped("l_pred", n, K * lp.kt)
        self.pred2 = self.pred.reshape(n * K, lp.kt)
        self.mask = shaped("l_mask", n, K * lp.kt)
        self.nh = shaped("l_nh", n, K * lp.kt)
        self.nh2 = self.nh.reshape(n * K, lp.kt)
        self.tmp = shaped("l_tmp", n * K)
        self.tmp2 = self.tmp.reshape(n, K)
        #: The values by node when policies are not nodes one to one (else G itself).
        self.vals = shaped("l_vals", n, K) if "l_vals" in flat else self.tmp2
        self.Q = shaped("l_Q", n, K * lp.kt * lp.kr)
        self.Q3 = self.Q.reshape(n * K, lp.kt, lp.kr)
        self.qo = shaped("l_qo", n, K * lp.kr)
        self.qo2 = self.qo.reshape(n * K, lp.kr)
        self.lq = shaped("l_lq", n, K * lp.kr)
        self.lq2 = self.lq.reshape(n * K, lp.kr)


class Block:
    """Views of a :class:`Workspace`'s buffers shaped for a block of ``nb`` agents.

    Every view is made once (blocks are cached by size), so kernels do not reshape per call.
    ``dense`` / ``small``: whether the buffers of :func:`evaluate_block` /
    :func:`evaluate_small_block` are there (the block is within their capacity).
    """

    def __init__(  # noqa: PLR0915 - allocates every scratch buffer of a block, one per line
        self,
        cm: CompiledModel,
        flat: dict[str, np.ndarray],
        sizes: dict[str, int],
        nb: int,
        *,
        dense: bool,
        small: bool,
    ) -> None:
        plan = cm.fast
        S = cm.num_states
        F = len(S)
        Sj = plan.num_joint_states
        P = cm.num_policies
        self._cm = cm
        self.nb = nb
        self.dense = dense
        self.small = small
        self._row_start: dict[int, IndexArray] = {}
        self._views: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self._propagation: dict[tuple[int, ...], PropagationViews] = {}

        def shaped(name: str, *shape: int) -> np.ndarray:
            return flat[name][: int(np.prod(shape))].reshape(shape)

        def buf(name: str) -> np.ndarray:
            """The flat prefix for ``nb`` agents (reshaped where it is used)."""
            return flat[name][: sizes[name] * nb] if name in flat else flat["col_a"][:0]

        # state inference
        self.q_tmp = buf("q_tmp")
        self.q_tmp2 = buf("q_tmp2")
        self.evidence = shaped("evidence", nb)
        self.multi = F > 1
        if self.multi:
            self.lnL = shaped("lnL", Sj, nb)
            self.joint = shaped("joint", Sj, nb)
            self.joint_new = shaped("joint_new", Sj, nb)
            self.weighted = shaped("weighted", Sj, nb)
            # Every factor's beliefs stacked, (sum S_f, nb): two buffers (current and next
            # fixed-point iterate), the log prior, scratch (also the floored beliefs the joint is
            # made of); ``*_parts``: the factors' rows.
            Wst = sum(S)
            offs = plan.offsets
            self.stk_q = (shaped("stk_qa", Wst, nb), shaped("stk_qb", Wst, nb))
            self.stk_parts = tuple(
                [q[offs[f] : offs[f + 1]] for f in range(F)] for q in self.stk_q
            )
            self.stk_lp = shaped("stk_lp", Wst, nb)
            self.stk_t = shaped("stk_t", Wst, nb)
            self.stk_t_parts = [self.stk_t[offs[f] : offs[f + 1]] for f in range(F)]
            self.log_prior = [self.stk_lp[offs[f] : offs[f + 1]] for f in range(F)]
            self.vfe = shaped("vfe", nb)
            self.prev = shaped("prev", nb)
            self.dF = shaped("dF", nb)
            self.col_c = shaped("col_c", nb)
            self.active = shaped("active", nb)
            self.oidx = shaped("oidx", nb) if "oidx" in flat else None
        # posterior over policies, action selection, history encoding
        self.G = shaped("G", P, nb)
        self.x = shaped("x", P, nb)
        self.tmpP = shaped("tmpP", P, nb)
        self.col_a = shaped("col_a", nb)
        self.col_b = shaped("col_b", nb)
        self.marg = buf("marg")
        self.ge = buf("ge")
        self.ibuf = shaped("ibuf", nb)
        self.ibuf2 = shaped("ibuf2", nb)
        self.rand = shaped("rand", nb, 1)
        self.enc = shaped("enc", nb, sum(S))
        self.no_agents = np.zeros(0, dtype=np.intp)
        #: Row offsets by row width and columns (:meth:`row_offsets`), views of the
        #: workspace's constants.
        self._row_offsets: dict[tuple[int, int], IndexArray] = {
            _offset_shape(k): shaped(k, min(nb, CHUNK_ROWS), sizes[k])
            for k in flat
            if k.startswith(_ROWS)
        }
        # per-agent propagation
        self.p_idx = buf("p_idx")
        self.p_idx2 = buf("p_idx2")
        self.p_val = buf("p_val")
        self.p_val2 = buf("p_val2")
        if dense:
            self.roots = [shaped(f"root{f}", s + 1, nb) for f, s in enumerate(S)]
            self.children = [
                [shaped(f"child{t}_{f}", S[f] * k + 1, nb) for f, k in enumerate(depth.num_nodes)]
                for t, depth in enumerate(plan.depths)
            ]
            self.row_tmp = buf("row_tmp")
            self.dense_in = buf("dense_in")
            self.dense_out = buf("dense_out")
            self.info_gain = "mask" in flat
            if self.info_gain:
                self.mask = buf("mask")
                self.M = buf("M")
                self.qo = buf("qo")
                self.lq = buf("lq")
            self.val = buf("val")
            self.tmpv = buf("tmpv")
            if self.multi:
                self.gathered = [buf(f"gathered{f}") for f in range(F)]
                self.X = buf("X")
                self.X2 = buf("X2")
            self.node = shaped("node", nb)
            self.arange = shaped("arange", nb)
            self.arange[:] = np.arange(nb)
            self.idx = buf("idx")
            # Flat offset of state s of depth-0 node 0 of factor f: s * K0_f * nb.
            self.state_stride = [
                np.arange(s, dtype=np.intp) * k * nb
                for s, k in zip(S, plan.depths[0].num_nodes, strict=True)
            ]
        lp = cm.local
        #: The local planner's buffers by agents (:meth:`local_views`).
        self._local: dict[int, LocalViews] = {}
        self._flat_local = {k: v for k, v in flat.items() if k.startswith("l_")}
        if lp is not None:
            self.l_bad = shaped("l_bad", nb)
        sp = cm.small
        if sp is not None and small:
            K, S0, n_out = sp.num_nodes, S[0], plan.num_outcomes
            self.s_out = shaped("s_out", nb, K * S0 + K)
            self.s_pred = self.s_out[:, : K * S0].reshape(nb, K, S0)  # a view (strided rows)
            self.s_util = self.s_out[:, K * S0 :]
            self.s_idx = shaped("s_idx", nb, S0)
            self.s_states = np.arange(S0, dtype=np.intp)
            self.s_mask = shaped("s_mask", nb, K, S0)
            self.s_M = shaped("s_M", nb, K, S0)
            self.s_M_rows = self.s_M.reshape(nb * K, S0)
            self.s_qo_ext = shaped("s_qo_ext", nb, K, n_out + 1)
            self.s_qo_ext_rows = self.s_qo_ext.reshape(nb * K, n_out + 1)
            self.s_qo = self.s_qo_ext[:, :, :n_out]
            self.s_negH = self.s_qo_ext[:, :, n_out]
            self.s_lq = shaped("s_lq", nb, K, n_out)
            self.s_tmp = shaped("s_tmp", nb, K)
            self.s_vals = shaped("s_vals", nb, K)
            self.s_node = shaped("s_node", nb)
        #: The joint small-block path's views (a multi-factor model, a small block), else None.
        self.joint_small: JointScratch | None = None
        if cm.joint is not None and small:
            from edge_agent.aif.kernels.joint_scratch import JointScratch  # noqa: PLC0415

            n = len(_JOINT)
            own = {k[n:]: v for k, v in flat.items() if k.startswith(_JOINT)}
            self.joint_small = JointScratch(cm.joint, own, nb)

    def local_views(self, rows: int) -> LocalViews:
        """The local planner's buffers shaped for ``rows <= min(nb, CHUNK_ROWS)`` agents (made
        once, then cached)."""
        out = self._local.get(rows)
        if out is None:
            assert self._cm.local is not None  # only a model with a local planner asks
            out = LocalViews(self._cm.local, self._flat_local, rows)
            self._local[rows] = out
        return out

    def view(self, buffer: np.ndarray, *shape: int) -> np.ndarray:
        """A prefix of one of this block's flat buffers, reshaped (made once, then cached)."""
        key = (id(buffer), shape)
        out = self._views.get(key)
        if out is None:
            out = buffer[: int(np.prod(shape))].reshape(shape)
            self._views[key] = out
        return out

    def propagation_views(
        self, width: int, extra: tuple[int, ...], rows: int | None = None
    ) -> PropagationViews:
        """What :func:`~edge_agent.aif.kernels.agent_major.propagate_agents` works in for
        ``rows`` agents (``nb`` by default) at a time, fetched with one call (made once, then
        cached): the rows' flat offsets (:meth:`row_offsets`), the index and weight buffers
        ``(rows, width)``, and per extra entry of width ``E`` its row offsets, the target and
        source indices and two value buffers ``(rows, E)``."""
        n = self.nb if rows is None else rows
        key = (n, width, *extra)
        out = self._propagation.get(key)
        if out is None:
            out = (
                self.row_offsets(width, rows=n),
                self.view(self.p_idx, n, width),
                self.view(self.p_val, n, width),
                [
                    (
                        self.row_offsets(width, E, n),
                        self.view(self.p_idx, n, E),
                        self.view(self.p_idx2, n, E),
                        self.view(self.p_val, n, E),
                        self.view(self.p_val2, n, E),
                    )
                    for E in extra
                ],
            )
            self._propagation[key] = out
        return out

    def row_offsets(
        self, width: int, columns: int | None = None, rows: int | None = None
    ) -> IndexArray:
        """Each agent's flat row offset ``n * width`` in every column of a ``(rows, columns)``
        array (``columns`` defaults to ``width``, ``rows`` to ``nb``; read-only): what ``(rows,
        columns)`` indices into rows of that width add, in one contiguous add. Where the
        workspace has no such constant (or not that many rows): ``(rows, 1)`` offsets, which
        broadcast to the same sums."""
        n = self.nb if rows is None else rows
        out = self._row_offsets.get((width, width if columns is None else columns))
        if out is None or len(out) < n:
            return self.row_start(width)[:n, None]
        return out[:n]

    def row_start(self, width: int) -> IndexArray:
        """``arange(nb) * width``: flat offset of each agent's row in an ``(nb, width)`` array."""
        out = self._row_start.get(width)
        if out is None:
            out = np.arange(self.nb, dtype=np.intp) * width
            self._row_start[width] = out
        return out


class Workspace:
    """Preallocated scratch of the fast paths for blocks of up to ``capacity`` agents.

    Allocated once per agent group; :meth:`block` returns views shaped for a block of
    ``nb <= capacity`` agents (cached, so a tick allocates nothing). The buffers of the dense
    policy-tree evaluation (:func:`evaluate_block`) are sized for ``dense_capacity`` agents, which
    is smaller when a :class:`LocalPlan` does most blocks' planning, and those of the small-block
    planner for ``min(capacity, SMALL_BLOCK)``.
    """

    def __init__(
        self,
        cm: CompiledModel,
        capacity: int,
        *,
        info_gain: bool,
        dense_capacity: int | None = None,
    ) -> None:
        dense_cap = capacity if dense_capacity is None else dense_capacity
        if not 1 <= dense_cap <= capacity:
            raise ValueError(
                f"workspace capacities {capacity}, {dense_cap}: need 1 <= dense <= all"
            )
        self._cm = cm
        self.capacity = capacity
        self.dense_capacity = dense_cap
        self.small_capacity = min(capacity, SMALL_BLOCK)
        chunk = min(capacity, CHUNK_ROWS)
        caps = {"all": capacity, "chunk": chunk, "rows": chunk, "dense": dense_cap}
        caps["small"] = self.small_capacity
        layout = block_layout(cm, info_gain=info_gain)
        self._per_agent: dict[str, int] = {name: per for name, (per, _) in layout.items()}
        # One arena per class (:func:`arena`), each buffer a view of it: the buffers of a path
        # a group's ticks never take (the dense evaluation's of a group the local planner
        # serves, the small-block planner's of large blocks) cost no memory.
        self._arenas: dict[str, np.ndarray] = {}
        self._flat: dict[str, np.ndarray] = {}
        for cls in BUFFER_CLASSES:
            placed: list[tuple[str, int, int, np.dtype[np.generic]]] = []
            end = 0
            for name, (per, dt) in layout.items():
                if buffer_class(name) == cls:
                    start = -(-end // ALIGN) * ALIGN
                    placed.append((name, start, per * caps[cls], dt))
                    end = start + per * caps[cls] * dt.itemsize
            arena = self._arenas[cls] = scratch_arena(end)
            for name, start, count, dt in placed:
                self._flat[name] = arena[start : start + count * dt.itemsize].view(dt)
        for name, flat in self._flat.items():
            if buffer_class(name) == "rows":  # n * S in row n: a prefix serves any chunk
                rows = flat.reshape(chunk, self._per_agent[name])
                rows += np.arange(chunk, dtype=np.intp)[:, None] * _offset_shape(name)[0]
                flat.setflags(write=False)
        self._blocks: dict[int, Block] = {}

    @staticmethod
    def bytes_per_agent(cm: CompiledModel, *, info_gain: bool) -> dict[str, int]:
        """Scratch bytes per agent of capacity, by :func:`buffer_class`."""
        out = dict.fromkeys(BUFFER_CLASSES, 0)
        for name, (per, dt) in block_layout(cm, info_gain=info_gain).items():
            out[buffer_class(name)] += per * dt.itemsize
        return out

    @property
    def nbytes(self) -> int:
        """The buffers' bytes (their arenas pad each to :data:`ALIGN`)."""
        return int(sum(a.nbytes for a in self._flat.values()))

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Every scratch buffer by name, flat, sized for its class's agents (the views of
        :meth:`block` are prefixes of them)."""
        return dict(self._flat)

    @property
    def arenas(self) -> dict[str, np.ndarray]:
        """The arena of each class of buffers (:data:`BUFFER_CLASSES`), uint8: where its
        buffers are."""
        return dict(self._arenas)

    def block(self, nb: int) -> Block:
        """Buffers for ``nb`` agents, ``1 <= nb <= capacity``."""
        blk = self._blocks.get(nb)
        if blk is None:
            if not 1 <= nb <= self.capacity:
                raise ValueError(f"block of {nb} agents, workspace holds 1..{self.capacity}")
            dense, small = nb <= self.dense_capacity, nb <= self.small_capacity
            flat = {
                k: v
                for k, v in self._flat.items()
                if buffer_class(k) in ("all", "chunk", "rows")
                or (buffer_class(k) == "dense" and dense)
                or (buffer_class(k) == "small" and small)
            }
            blk = Block(self._cm, flat, self._per_agent, nb, dense=dense, small=small)
            self._blocks[nb] = blk
        return blk
