"""The deep planner: policies of several steps of a one-factor model with deterministic moves.

Part of :mod:`edge_agent.aif.kernels`. :func:`evaluate_deep_block` evaluates every distinct map of
the policy tree once (the model's :class:`~edge_agent.aif.kernels.deep_plan.DeepPlan`, built at
compile time; the reasoning is in :mod:`~edge_agent.aif.kernels.deep_plan`) and sums, per policy,
the values of the maps its depths reach. With an observation and a local form it gathers only the
states and outcomes the observation leaves possible, and reports the agents it cannot serve
exactly (they go to :func:`~edge_agent.aif.kernels.block.evaluate_block`); otherwise it propagates
the beliefs through every map, one generation of maps after another (rows of ``nb`` agents, map
after map, a RowMap per generation), and evaluates all maps with batched products.
:class:`DeepScratch` holds its preallocated buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.fast_tables import apply_row_map

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.deep_plan import DeepPlan


# --------------------------------------------------------------------------------------------
# the deep planner: scratch buffers
# --------------------------------------------------------------------------------------------
def deep_layout(
    cm: CompiledModel, plan: DeepPlan, *, info_gain: bool
) -> dict[str, tuple[int, np.dtype[np.generic]]]:
    """Elements *per agent* of every buffer of :class:`DeepScratch`, and its dtype."""
    S, K = plan.num_states, plan.num_maps
    n_out = cm.fast.num_outcomes
    fdt: np.dtype[np.generic] = cm.dtype
    idt: np.dtype[np.generic] = np.dtype(np.intp)
    bdt: np.dtype[np.generic] = np.dtype(np.bool_)
    out: dict[str, tuple[int, np.dtype[np.generic]]] = {
        "vals": (K, fdt),
        "tmp": (K, fdt),
        "bad": (1, bdt),
        # the dense form (map-major: row 0 zeros, then map k's state t at row 1 + k * S + t)
        "X": (1 + S * K if info_gain else S, fdt),
        "row_tmp": (2 * plan.max_extra_rows if info_gain else 0, fdt),
    }
    if info_gain:
        out["mask"] = (S * K, bdt)
        out["qo"] = (n_out * K, fdt)
        out["lq"] = (n_out * K, fdt)
    lp = plan.local
    if lp is not None:
        n = lp.kin * K * lp.kt
        out["l_qz"] = (S + 1, fdt)
        out["l_idx"] = (n, idt)
        out["l_g"] = (n, fdt)
        out["l_pred"] = (K * lp.kt, fdt)
        out["l_mask"] = (K * lp.kt, bdt)
        out["l_nh"] = (K * lp.kt, fdt)
        out["l_Q"] = (K * lp.kt * lp.kr, fdt)
        out["l_qo"] = (K * lp.kr, fdt)
        out["l_lq"] = (K * lp.kr, fdt)
    return {k: v for k, v in out.items() if v[0] > 0}


#: The dense form's own buffers. With a local form they serve only the blocks planned without an
#: observation (or refused by it: those go to the general tree), so :class:`DeepScratch` sizes
#: them for ``dense_capacity`` agents, not for every agent of a block: most of a grid's scratch.
DENSE_ONLY = frozenset({"X", "row_tmp", "mask", "qo", "lq"})


def deep_bytes_per_agent(cm: CompiledModel, plan: DeepPlan, *, info_gain: bool) -> tuple[int, int]:
    """Scratch bytes per agent ``(every agent of a block, dense form only)``; without a local
    form the dense form is the planner itself and everything counts in the first."""
    layout = deep_layout(cm, plan, info_gain=info_gain)
    split = plan.local is not None
    dense = sum(
        per * dt.itemsize for name, (per, dt) in layout.items() if split and name in DENSE_ONLY
    )
    total = sum(per * dt.itemsize for per, dt in layout.values())
    return int(total - dense), int(dense)


class DeepBlock:
    """Views of a :class:`DeepScratch`'s buffers shaped for a block of ``nb`` agents (made once)."""

    def __init__(
        self, plan: DeepPlan, flat: dict[str, np.ndarray], nb: int, n_out: int, *, dense: bool
    ) -> None:
        S, K = plan.num_states, plan.num_maps
        self.nb = nb
        #: Whether the dense form's views are here (``nb`` within the scratch's dense capacity).
        self.dense = dense

        def shaped(name: str, *shape: int) -> np.ndarray:
            return flat[name][: int(np.prod(shape))].reshape(shape)

        self.vals = shaped("vals", K, nb)  # map-major, agents last (dense form)
        self.vals_am = shaped("vals", nb, K)  # agent-major (local form), the same buffer
        self.tmp = shaped("tmp", K * nb)
        self.bad = shaped("bad", nb)
        self.no_agents = np.zeros(0, dtype=np.intp)
        self.info_gain = "mask" in flat
        if dense and self.info_gain:
            X = shaped("X", 1 + S * K, nb)
            self.X = X  # row 0: the RowMaps' "no source", zeroed per call (blocks share it)
            self.root = X[1 : 1 + S]
            # Per generation: the rows it reads (every earlier map) and the rows it writes.
            self.generations = [
                (rm, X[: 1 + k0 * S], X[1 + k0 * S : 1 + k1 * S]) for k0, k1, rm in plan.generations
            ]
            self.X_maps = X[1:].reshape(K, S, nb)
            self.row_tmp = flat["row_tmp"] if "row_tmp" in flat else flat["vals"][:0]
            self.mask = shaped("mask", K, S, nb)
            self.negH = shaped("tmp", K, 1, nb)
            self.qo = shaped("qo", K, n_out, nb)
            self.lq = shaped("lq", K, n_out, nb)
        elif dense:
            self.root = shaped("X", S, nb)
        lp = plan.local
        if lp is not None:
            self.qz = shaped("l_qz", nb, S + 1)
            self.qz[:, S] = 0  # the pads' source: the same elements for every block size
            self.q_view = self.qz[:, :S]
            self.row_start = np.arange(nb, dtype=np.intp)[:, None] * (S + 1)
            self.l_idx = shaped("l_idx", nb, lp.kin * K * lp.kt)
            self.l_g = shaped("l_g", nb, lp.kin, K * lp.kt)
            self.l_g_rows = self.l_g.reshape(nb, -1)  # the flat gather's target
            self.qz_flat = self.qz.reshape(-1)
            self.l_pred = shaped("l_pred", nb, K * lp.kt)
            self.l_pred2 = self.l_pred.reshape(nb * K, lp.kt)
            self.l_mask = shaped("l_mask", nb, K * lp.kt)
            self.l_nh = shaped("l_nh", nb * K, lp.kt)
            self.l_nh_rows = self.l_nh.reshape(nb, -1)
            self.l_Q = shaped("l_Q", nb, K * lp.kt * lp.kr)
            self.l_Q3 = self.l_Q.reshape(nb * K, lp.kt, lp.kr)
            self.l_qo = shaped("l_qo", nb * K, lp.kr)
            self.l_lq = shaped("l_lq", nb * K, lp.kr)
            self.tmp_am = shaped("tmp", nb, K)
            self.tmp_rows = shaped("tmp", nb * K)


class DeepScratch:
    """Preallocated buffers of :func:`evaluate_deep_block` for blocks of up to ``capacity`` agents.

    Allocated once per agent group; :meth:`block` returns views for ``nb <= capacity`` agents
    (cached, so a tick allocates nothing). With a local form the dense form's buffers
    (:data:`DENSE_ONLY`) hold ``dense_capacity`` agents (default: ``capacity``); a larger block
    without an observation is evaluated in sub-blocks of that size by the caller.
    """

    def __init__(
        self,
        cm: CompiledModel,
        plan: DeepPlan,
        capacity: int,
        *,
        info_gain: bool,
        dense_capacity: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"deep scratch capacity {capacity}, need >= 1")
        dense_cap = capacity if plan.local is None or dense_capacity is None else dense_capacity
        if not 1 <= dense_cap <= capacity:
            raise ValueError(f"deep scratch dense capacity {dense_cap}, need 1..{capacity}")
        self._plan = plan
        self._n_out = cm.fast.num_outcomes
        self.capacity = capacity
        self.dense_capacity = dense_cap
        layout = deep_layout(cm, plan, info_gain=info_gain)
        self._flat = {
            name: np.zeros(per * (dense_cap if name in DENSE_ONLY else capacity), dtype=dt)
            for name, (per, dt) in layout.items()
        }
        self._blocks: dict[int, DeepBlock] = {}

    @staticmethod
    def bytes_per_agent(cm: CompiledModel, plan: DeepPlan, *, info_gain: bool) -> int:
        """Scratch bytes per agent when the dense form holds every agent of a block."""
        return sum(deep_bytes_per_agent(cm, plan, info_gain=info_gain))

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._flat.values()))

    def block(self, nb: int) -> DeepBlock:
        """Buffers for ``nb`` agents, ``1 <= nb <= capacity``."""
        blk = self._blocks.get(nb)
        if blk is None:
            if not 1 <= nb <= self.capacity:
                raise ValueError(f"block of {nb} agents, deep scratch holds 1..{self.capacity}")
            dense = nb <= self.dense_capacity
            blk = DeepBlock(self._plan, self._flat, nb, self._n_out, dense=dense)
            self._blocks[nb] = blk
        return blk


# --------------------------------------------------------------------------------------------
# the deep planner: kernels
# --------------------------------------------------------------------------------------------
def evaluate_deep_block(
    cm: CompiledModel,
    plan: DeepPlan,
    q: np.ndarray,
    dblk: DeepBlock,
    G: np.ndarray,
    *,
    obs: np.ndarray | None = None,
    evidence: np.ndarray | None = None,
    use_utility: bool,
    use_info_gain: bool,
) -> IndexArray:
    """``G (nb, P)`` of a block from its beliefs ``q (nb, S)`` (agent-major) on the deep planner.

    ``obs (nb,)`` and ``evidence (nb,)``: the observation and evidence of the state inference that
    just made ``q`` (``Block.evidence`` after :func:`infer_block`), or None. With both and a local
    form, returns the agents (indices into the block) whose evidence is too small for it: their
    rows of ``G`` are not valid and must come from :func:`evaluate_block`. Otherwise every row is
    valid and the result is empty.
    """
    lp = plan.local
    if lp is not None and obs is not None and evidence is not None:
        _evaluate_local(
            cm, plan, obs, q, dblk, use_utility=use_utility, use_info_gain=use_info_gain
        )
        np.matmul(dblk.vals_am, plan.counts_T, out=G)
        bad = dblk.bad
        np.less(evidence, lp.min_evidence, out=bad)
        if not np.logical_or.reduce(bad):  # any (without ndarray.any's Python wrapper)
            return dblk.no_agents
        return np.flatnonzero(bad)
    if not dblk.dense:
        raise ValueError(
            f"a block of {dblk.nb} agents without an observation: the deep scratch's dense form "
            "holds fewer; evaluate it in sub-blocks of DeepScratch.dense_capacity"
        )
    _evaluate_dense(cm, plan, q, dblk, use_utility=use_utility, use_info_gain=use_info_gain)
    np.matmul(dblk.vals.T, plan.counts_T, out=G)
    return dblk.no_agents


def evaluate_deep_rows(
    cm: CompiledModel,
    plan: DeepPlan,
    q: np.ndarray,
    scratch: DeepScratch,
    G: np.ndarray,
    *,
    obs: np.ndarray | None = None,
    evidence: np.ndarray | None = None,
    use_utility: bool,
    use_info_gain: bool,
) -> IndexArray:
    """:func:`evaluate_deep_block` for a block of up to ``scratch.capacity`` agents: one call,
    or, for the dense form of a block larger than the scratch's dense capacity (no observation
    for the local form), one call per sub-block it holds (every row of ``G`` is then valid)."""
    nb = len(q)
    step = scratch.dense_capacity
    if plan.local is None or (obs is not None and evidence is not None) or nb <= step:
        return evaluate_deep_block(
            cm, plan, q, scratch.block(nb), G, obs=obs, evidence=evidence,
            use_utility=use_utility, use_info_gain=use_info_gain,
        )  # fmt: skip
    for start in range(0, nb, step):
        stop = min(start + step, nb)
        evaluate_deep_block(
            cm, plan, q[start:stop], scratch.block(stop - start), G[start:stop],
            use_utility=use_utility, use_info_gain=use_info_gain,
        )  # fmt: skip
    return scratch.block(nb).no_agents


def _evaluate_dense(
    cm: CompiledModel,
    plan: DeepPlan,
    q: np.ndarray,
    dblk: DeepBlock,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """Every map's value into ``dblk.vals (K, nb)``, state-major."""
    fp = cm.fast
    root = dblk.root
    np.copyto(root, q.T)
    vals = dblk.vals
    if use_utility:  # q . utility[g_k]: linear, straight from the root
        np.matmul(plan.utility_by_map, root, out=vals)
    else:
        vals.fill(0)
    if not use_info_gain:
        return
    dblk.X[0].fill(0)
    for rm, src, dst in dblk.generations:
        apply_row_map(rm, src, dst, dblk.row_tmp)
    M = dblk.X_maps  # masked in place: every generation has been propagated
    np.greater(M, fp.threshold, out=dblk.mask)
    np.multiply(M, dblk.mask, out=M)
    negH = dblk.negH
    np.matmul(fp.neg_entropy_row, M, out=negH)  # (K, 1, nb): one product per map
    np.add(vals, negH[:, 0], out=vals)
    qo, lq = dblk.qo, dblk.lq
    np.matmul(fp.A_joint, M, out=qo)  # (K, O, nb)
    np.add(qo, fp.eps, out=lq)
    np.log(lq, out=lq)
    np.multiply(lq, qo, out=lq)
    np.matmul(fp.ones_outcomes, lq, out=negH)
    np.subtract(vals, negH[:, 0], out=vals)


def _row_sums(x: np.ndarray, ones: np.ndarray, out: np.ndarray) -> None:
    """``out = x @ ones``: the sums of ``x``'s rows (a few terms each) by BLAS's gemv, ten times
    numpy's reduction over rows this short. ``x`` is finite by construction (products of the
    model's finite tables and beliefs, the logs of beliefs plus ``eps``), so the invalid-operation
    flag cannot come from the sums: OpenBLAS 0.3.31 (numpy 2.4.6's) raised it once in CI on a
    finite 1,275 x 5 gemv, in a test that passed beside it under numpy 2.5.5's OpenBLAS on the
    same machine (not reproduced here, with signalling NaNs or infinities around both operands,
    any kernel or thread count), as it had on the one-step local planner's same two sums
    (:mod:`.local`, ignored there too). numpy ignores the flag in matmul itself where it finds
    a BLAS that raises it (``ignore_floating_point_errors_in_matmul``); its probe missed this."""
    with np.errstate(invalid="ignore"):
        np.matmul(x, ones, out=out)


def _evaluate_local(
    cm: CompiledModel,
    plan: DeepPlan,
    obs: np.ndarray,
    q: np.ndarray,
    dblk: DeepBlock,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """Every map's value into ``dblk.vals_am (nb, K)`` from the observation's local tables."""
    lp = plan.local
    assert lp is not None  # the caller checked
    fp = cm.fast
    vals = dblk.vals_am
    if use_utility:
        np.matmul(q, plan.utility_by_source, out=vals)
    else:
        vals.fill(0)
    if not use_info_gain:
        return
    # Predicted states on the target slots: the sum over each target's sources (pads: a zero).
    np.copyto(dblk.q_view, q)
    idx, g = dblk.l_idx, dblk.l_g
    lp.pred_src.take(obs, axis=0, out=idx, mode="clip")
    np.add(idx, dblk.row_start, out=idx)
    dblk.qz_flat.take(idx, out=dblk.l_g_rows, mode="clip")
    pred = dblk.l_pred
    if lp.kin == 1:
        np.copyto(pred, g[:, 0])
    else:
        np.add(g[:, 0], g[:, 1], out=pred)
        for k in range(2, lp.kin):
            np.add(pred, g[:, k], out=pred)
    np.greater(pred, fp.threshold, out=dblk.l_mask)
    np.multiply(pred, dblk.l_mask, out=pred)  # the masked predicted states M
    nh = dblk.l_nh
    lp.neg_entropy.take(obs, axis=0, out=dblk.l_nh_rows, mode="clip")
    np.multiply(nh, dblk.l_pred2, out=nh)
    _row_sums(nh, lp.ones_kt, dblk.tmp_rows)
    np.add(vals, dblk.tmp_am, out=vals)
    # Predicted outcomes on the outcome slots, then their entropy.
    lp.qo_table.take(obs, axis=0, out=dblk.l_Q, mode="clip")
    np.einsum("itr,it->ir", dblk.l_Q3, dblk.l_pred2, out=dblk.l_qo)
    qo, lq = dblk.l_qo, dblk.l_lq
    np.add(qo, fp.eps, out=lq)
    np.log(lq, out=lq)
    np.multiply(lq, qo, out=lq)
    _row_sums(lq, lp.ones_kr, dblk.tmp_rows)
    np.subtract(vals, dblk.tmp_am, out=vals)
