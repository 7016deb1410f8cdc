"""The small-block one-step planner: one-factor, one-step policies for blocks of a few agents.

Part of :mod:`edge_agent.aif.kernels`. :func:`evaluate_small_block` evaluates one-step policies of a
one-factor model for blocks of a few agents with a few dense products (the model's
:class:`~edge_agent.aif.kernels.small_plan.SmallPlan`, built at compile time): fewest numpy calls;
:func:`small_prior_block` reads the next prior from its predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.workspace import Block


# --------------------------------------------------------------------------------------------
# the small-block one-step planner: kernels
# --------------------------------------------------------------------------------------------
def evaluate_small_block(
    cm: CompiledModel,
    q: np.ndarray,
    blk: Block,
    G: np.ndarray,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """``G (nb, P)`` from beliefs ``q (nb, S)`` (agent-major) on the small-block planner.

    Leaves every node's prediction in ``blk.s_pred`` for :func:`small_prior_block`.
    """
    sp = cm.small
    assert sp is not None  # the caller checked cm.small
    small_predict(cm, q, blk)
    vals = G if sp.policy_node is None else blk.s_vals
    if use_info_gain:
        pred, M = blk.s_pred, blk.s_M
        np.greater(pred, cm.fast.threshold, out=blk.s_mask)
        np.multiply(pred, blk.s_mask, out=M)
        np.dot(blk.s_M_rows, sp.AT_ext, out=blk.s_qo_ext_rows)  # outcomes, then M . negH
        qo, lq = blk.s_qo, blk.s_lq
        np.add(qo, cm.fast.eps, out=lq)
        np.log(lq, out=lq)
        np.multiply(lq, qo, out=lq)
        if use_utility:
            np.add(blk.s_util, blk.s_negH, out=vals)
        else:
            np.copyto(vals, blk.s_negH)
        np.subtract(vals, np.add.reduce(lq, axis=2, out=blk.s_tmp), out=vals)
    elif use_utility:
        np.copyto(vals, blk.s_util)
    else:
        vals.fill(0)
    if sp.policy_node is not None:
        vals.take(sp.policy_node, axis=1, out=G, mode="clip")


def small_predict(cm: CompiledModel, q: np.ndarray, blk: Block) -> None:
    """Every node's prediction from beliefs ``q (nb, S)`` into ``blk.s_out`` (what
    :func:`evaluate_small_block` starts from, and :func:`small_prior_block` reads): one product,
    so the same beliefs give the same numbers whenever it is made."""
    sp = cm.small
    assert sp is not None  # the caller checked cm.small
    np.dot(q, sp.BT_nodes, out=blk.s_out)


def small_prior_block(
    cm: CompiledModel, blk: Block, actions: np.ndarray, prior: np.ndarray
) -> bool:
    """Next prior ``(nb, S)`` from :func:`evaluate_small_block`'s predictions; False (nothing
    written) when an action has no first-depth node."""
    sp = cm.small
    assert sp is not None
    S = prior.shape[1]
    if blk.nb == 1:  # one agent: plain indexing beats index arithmetic
        j = int(sp.node_of_action[actions[0]])
        if j < 0:
            return False
        np.copyto(prior[0], blk.s_out[0, j * S : (j + 1) * S])
        return True
    node = blk.s_node
    sp.node_of_action.take(actions, out=node, mode="clip")
    if not sp.every_action_has_node and node.min() < 0:
        return False
    np.multiply(node, S, out=node)
    np.add(node, blk.row_start(blk.s_out.shape[1]), out=node)
    idx = blk.s_idx
    np.add(node[:, None], blk.s_states, out=idx)
    blk.s_out.reshape(-1).take(idx, out=prior, mode="clip")
    return True
