"""The local one-step planner: one-step policies of a sparse one-factor, one-modality model.

Part of :mod:`edge_agent.aif.kernels`. :func:`evaluate_local_block` evaluates one-step policies of a
one-factor, one-modality model whose likelihood rows are sparse (a grid world) only on the few
states and outcomes the last observation leaves possible (the model's
:class:`~edge_agent.aif.kernels.local_plan.LocalPlan`, built at compile time; the reasoning is in
:mod:`~edge_agent.aif.kernels.local_plan`); agents it cannot serve exactly are reported and go to
:func:`~edge_agent.aif.kernels.block.evaluate_block`. :func:`policy_posterior_block` turns its
agent-major ``G`` into the policy posterior.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.columns import softmax_columns
from edge_agent.aif.kernels.workspace import CHUNK_ROWS

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.local_plan import LocalPlan
    from edge_agent.aif.kernels.workspace import Block, LocalViews


# --------------------------------------------------------------------------------------------
# the local one-step planner: kernels
# --------------------------------------------------------------------------------------------
def evaluate_local_block(
    cm: CompiledModel,
    obs: np.ndarray,
    q: np.ndarray,
    blk: Block,
    G: np.ndarray,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> IndexArray:
    """``G (nb, P)`` of a block just updated by :func:`infer_block`, on the local planner.

    ``obs (nb,)`` is the block's observation, ``q (nb, S)`` its posterior (C-contiguous) and
    ``blk.evidence`` the evidence :func:`infer_block` left. Returns the agents (indices into the
    block) whose evidence is too small for the local planner: their rows of ``G`` are not valid
    and must come from :func:`evaluate_block`. Runs :data:`CHUNK_ROWS` agents at a time, in
    scratch sized for that many.
    """
    lp = cm.local
    assert lp is not None  # the caller checked cm.local
    nb = len(obs)
    for start in range(0, nb, CHUNK_ROWS):
        stop = min(nb, start + CHUNK_ROWS)
        rows = slice(start, stop)
        _evaluate_local_rows(
            cm, lp, blk, blk.local_views(stop - start), obs=obs[rows], q=q[rows], G=G[rows],
            use_utility=use_utility, use_info_gain=use_info_gain,
        )  # fmt: skip
    bad = blk.l_bad
    np.less(blk.evidence, lp.min_evidence, out=bad)
    if not bad.any():
        return blk.no_agents
    return np.flatnonzero(bad)


def _evaluate_local_rows(
    cm: CompiledModel,
    lp: LocalPlan,
    blk: Block,
    lv: LocalViews,
    *,
    obs: np.ndarray,
    q: np.ndarray,
    G: np.ndarray,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """:func:`evaluate_local_block` of the rows of ``obs``, ``q`` and ``G`` (at most
    :data:`CHUNK_ROWS`), in ``lv`` shaped for them."""
    plan = cm.fast
    vals = G if lp.policy_node is None else lv.vals
    if use_utility:
        np.dot(q, lp.utility_by_source, out=vals)
    else:
        vals.fill(0)
    if use_info_gain:
        # Predicted states on the target slots: sum over each target's sources of w * q[src].
        idx, g = lv.idx, lv.g
        lp.pred_src.take(obs, axis=0, out=idx, mode="clip")
        np.add(idx, blk.row_offsets(q.shape[1], idx.shape[1], len(obs)), out=idx)
        q.reshape(-1).take(idx, out=g, mode="clip")
        lp.pred_w.take(obs, axis=0, out=lv.w, mode="clip")
        np.multiply(g, lv.w, out=g)
        pred = lv.pred
        if lp.kin == 1:
            np.copyto(pred, g)
        else:
            g3 = lv.g3
            np.add(g3[:, :, 0], g3[:, :, 1], out=pred)
            for k in range(2, lp.kin):
                np.add(pred, g3[:, :, k], out=pred)
        np.greater(pred, plan.threshold, out=lv.mask)
        np.multiply(pred, lv.mask, out=pred)  # the masked predicted states M
        nh = lv.nh
        lp.neg_entropy.take(obs, axis=0, out=nh, mode="clip")
        np.multiply(nh, pred, out=nh)
        # The two row sums below are BLAS products (gemv, 5-13 columns) of finite operands
        # of one sign (and of ln(qo + eps) with qo >= 0): none of it can be invalid, and a NaN
        # in them would raise nothing anyway. Yet OpenBLAS 0.3.31's SkylakeX gemv set
        # FE_INVALID on the first about once in three full test runs (never alone, never on
        # copies of its operands): the flag is not reported for this stretch (1 us a block).
        with np.errstate(invalid="ignore"):
            np.dot(lv.nh2, lp.ones_kt, out=lv.tmp)
            np.add(vals, lv.tmp2, out=vals)
            # Predicted outcomes on the outcome slots, then their entropy.
            lp.qo_table.take(obs, axis=0, out=lv.Q, mode="clip")
            # qo[i, r] = sum_t Q[i, t, r] M[i, t] per (agent, node) i; einsum's loop beats a
            # batched matmul of 13 x 5 matrices by ~2x.
            np.einsum("itr,it->ir", lv.Q3, lv.pred2, out=lv.qo2)
            qo, lq = lv.qo, lv.lq
            np.add(qo, plan.eps, out=lq)
            np.log(lq, out=lq)
            np.multiply(lq, qo, out=lq)
            np.dot(lv.lq2, lp.ones_kr, out=lv.tmp)
            np.subtract(vals, lv.tmp2, out=vals)
    if lp.policy_node is not None:
        vals.take(lp.policy_node, axis=1, out=G, mode="clip")


def policy_posterior_block(
    cm: CompiledModel, G: np.ndarray, blk: Block, gamma: float | np.ndarray
) -> None:
    """``q_pi = softmax(gamma * G + ln E)`` of agent-major ``G (nb, P)`` into ``blk.x (P, nb)``.

    ``gamma`` may be a 0-d array of the compute dtype (cheaper for tiny blocks).
    """
    np.multiply(G.T, gamma, out=blk.x)
    np.add(blk.x, cm.fast.lnE_col, out=blk.x)
    softmax_columns(blk.x, blk.col_a, floor=cm.fast.exp_floor)
