"""The small-block one-step planner: one-factor, one-step policies for blocks of a few agents.

Part of :mod:`edge_agent.aif.kernels`. :func:`evaluate_small_block` evaluates one-step policies of a
one-factor model for blocks of a few agents with a few dense products (:class:`SmallPlan`): fewest
numpy calls; :func:`small_prior_block` reads the next prior from its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels._types import IndexArray
from edge_agent.aif.kernels.transitions import SparseTransition, Transition, propagate

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.tree import PolicyTree
    from edge_agent.aif.kernels.workspace import Block


# --------------------------------------------------------------------------------------------
# the small-block one-step planner
# --------------------------------------------------------------------------------------------
# A block of a handful of agents costs numpy call overhead, not arithmetic: the sparse tables of
# the other paths take many small calls. For one factor and one-step policies, this path predicts
# every first-depth node with one dense product ``q @ BT_nodes`` and evaluates all nodes with a
# few more (about 25 numpy calls in all, whatever the model).

#: Blocks of at most this many agents use the small-block planner when the model has one.
SMALL_BLOCK = 16
#: Largest ``S * K * S`` table the small-block planner may keep (float entries).
SMALL_TABLE = 1 << 18


@dataclass(frozen=True, eq=False)
class SmallPlan:
    """Dense one-step tables for a few agents.

    ``q @ BT_nodes`` is ``(K * S + K)`` per agent: the predicted states of every first-depth node
    (node-major), then every node's utility; ``M @ AT_ext`` is ``(O + 1)`` per node: the predicted
    outcomes of the masked states ``M``, then ``M . negH``.
    """

    BT_nodes: np.ndarray  # (S, K * S + K)
    AT_ext: np.ndarray  # (S, O + 1)
    policy_node: IndexArray | None  # (P,) node of each policy; None: policy p is node p
    node_of_action: IndexArray  # (U,) first-depth node of each action (-1: none)
    every_action_has_node: bool

    @property
    def num_nodes(self) -> int:
        S = self.BT_nodes.shape[0]
        return int(self.BT_nodes.shape[1] // (S + 1))

    @property
    def nbytes(self) -> int:
        extra = 0 if self.policy_node is None else self.policy_node.nbytes
        return int(self.BT_nodes.nbytes + self.AT_ext.nbytes + self.node_of_action.nbytes + extra)


def build_small_plan(
    *,
    trans: Transition,
    tree: PolicyTree,
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> SmallPlan | None:
    """The small-block planner's tables for one factor and one-step policies, if small enough."""
    if len(tree.depths) != 1:
        return None
    depth = tree.depths[0]
    S = trans.num_states if isinstance(trans, SparseTransition) else int(trans.BT.shape[1])
    K = len(depth.parent[0])
    if S * K * S > SMALL_TABLE:
        return None
    BT_nodes = np.zeros((S, K * S + K))
    eye = np.eye(S)
    for u, nodes in depth.by_action[0]:
        BT = propagate(trans, eye, u) if isinstance(trans, SparseTransition) else trans.BT[u]
        for j in nodes:
            BT_nodes[:, j * S : (j + 1) * S] = BT  # row s: B[:, s, u]
            BT_nodes[:, K * S + j] = BT @ utility.astype(np.float64)
    AT_ext = np.concatenate([A_joint_T, neg_entropy[:, None]], axis=1)
    P = len(depth.policy_joint)
    identity = P == K and np.array_equal(depth.policy_joint, np.arange(K))
    node_of_action = tree.root_node_of_action[0].astype(np.intp)
    arrays = [np.ascontiguousarray(x, dtype=dtype) for x in (BT_nodes, AT_ext)]
    for arr in (*arrays, node_of_action):
        arr.setflags(write=False)
    return SmallPlan(
        BT_nodes=arrays[0],
        AT_ext=arrays[1],
        policy_node=None if identity else depth.policy_joint.astype(np.intp),
        node_of_action=node_of_action,
        every_action_has_node=bool(node_of_action.min() >= 0),
    )


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
    np.dot(q, sp.BT_nodes, out=blk.s_out)
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
        vals.take(sp.policy_node, axis=1, out=G)


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
    sp.node_of_action.take(actions, out=node)
    if not sp.every_action_has_node and node.min() < 0:
        return False
    np.multiply(node, S, out=node)
    np.add(node, blk.row_start(blk.s_out.shape[1]), out=node)
    idx = blk.s_idx
    np.add(node[:, None], blk.s_states, out=idx)
    blk.s_out.reshape(-1).take(idx, out=prior)
    return True
