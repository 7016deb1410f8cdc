"""Tables of the small-block one-step planner: :class:`SmallPlan`, :func:`build_small_plan`.

Part of :mod:`edge_agent.aif.kernels`. The small-block planner evaluates one-step policies of a
one-factor model for blocks of at most :data:`SMALL_BLOCK` agents with a few dense products.
:func:`build_small_plan` compiles its tables once per model (for
:func:`~edge_agent.aif.kernels.compiled.compile_model`); its kernels are in
:mod:`~edge_agent.aif.kernels.small`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.transitions import (
    SparseTransition,
    Transition,
    propagate,
    source_rows,
)

if TYPE_CHECKING:
    from edge_agent.aif.kernels.tree import PolicyTree


# --------------------------------------------------------------------------------------------
# the small-block one-step planner: tables
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
    P = len(depth.policy_joint)
    identity = P == K and np.array_equal(depth.policy_joint, np.arange(K))
    node_of_action = tree.root_node_of_action[0].astype(np.intp)
    node_of_action.setflags(write=False)
    return SmallPlan(
        **small_values(
            trans=trans, tree=tree, A_joint_T=A_joint_T, utility=utility,
            neg_entropy=neg_entropy, dtype=dtype,
        ),
        policy_node=None if identity else depth.policy_joint.astype(np.intp),
        node_of_action=node_of_action,
        every_action_has_node=bool(node_of_action.min() >= 0),
    )


def small_values(
    *,
    trans: Transition,
    tree: PolicyTree,
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> dict[str, Any]:
    """``BT_nodes`` and ``AT_ext`` (read-only): the small-block planner's tables, which a
    refresh of ``A`` (through the utility and the outcomes) changes."""
    depth = tree.depths[0]
    S = trans.num_states if isinstance(trans, SparseTransition) else int(trans.BT.shape[1])
    K = len(depth.parent[0])
    BT_nodes = np.zeros((S, K * S + K))
    eye = np.eye(S)
    for u, nodes in depth.by_action[0]:
        BT = propagate(trans, eye, u) if isinstance(trans, SparseTransition) else trans.BT[u]
        for j in nodes:
            BT_nodes[:, j * S : (j + 1) * S] = BT  # row s: B[:, s, u]
            BT_nodes[:, K * S + j] = BT @ utility.astype(np.float64)
    return _read_only(BT_nodes, A_joint_T, neg_entropy, dtype)


def refreshed_small_values(
    small: SmallPlan,
    *,
    tree: PolicyTree,
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> dict[str, Any]:
    """:func:`small_values` after a refresh of ``A`` (the transitions as they were): the
    transition columns of ``small.BT_nodes`` kept, each node's utility column computed again
    from them (one product per action), ``AT_ext`` made anew. Equal to :func:`small_values` up
    to rounding (bit for bit when the transitions' entries are exact in ``dtype``)."""
    S = small.BT_nodes.shape[0]
    K = small.num_nodes
    BT_nodes = np.array(small.BT_nodes, dtype=dtype)
    u64 = np.asarray(utility, dtype=np.float64)
    for _, nodes in tree.depths[0].by_action[0]:
        first = int(nodes[0]) * S
        BT = small.BT_nodes[:, first : first + S].astype(np.float64)  # row s: B[:, s, u]
        BT_nodes[:, K * S + np.asarray(nodes, dtype=np.intp)] = (BT @ u64)[:, None]
    return _read_only(BT_nodes, A_joint_T, neg_entropy, dtype)


def refreshed_small_rows(
    small: SmallPlan,
    *,
    tree: PolicyTree,
    trans: Transition,
    columns: np.ndarray,
    utility: np.ndarray,
    dtype: np.dtype[np.floating],
) -> np.ndarray:
    """``small.BT_nodes`` after a refresh of the transitions to ``trans`` in the ``columns``
    (``(S, U)``: source state, action) alone: a copy whose rows of those sources are made again
    for the nodes of those actions (the predictions from each source, then its utility). Equal
    to :func:`small_values`' up to rounding."""
    S = small.BT_nodes.shape[0]
    K = small.num_nodes
    BT_nodes = small.BT_nodes.copy()
    u64 = np.asarray(utility, dtype=np.float64)
    for u, nodes in tree.depths[0].by_action[0]:
        sources = np.flatnonzero(columns[:, u])
        if not len(sources):
            continue
        if isinstance(trans, SparseTransition):
            rows = source_rows(trans, sources, u)  # row s: B[:, s, u]
        else:
            rows = trans.BT[u][sources].astype(np.float64)
        gain = rows @ u64
        for j in nodes:
            BT_nodes[sources, j * S : (j + 1) * S] = rows
            BT_nodes[sources, K * S + j] = gain
    BT_nodes.setflags(write=False)
    return BT_nodes


def _read_only(
    BT_nodes: np.ndarray, A_joint_T: np.ndarray, neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> dict[str, Any]:
    """``BT_nodes`` in ``dtype`` and ``AT_ext`` (``A_joint_T`` with the outcome entropy as one
    more column), C-contiguous and read-only."""
    AT_ext = np.concatenate([A_joint_T, neg_entropy[:, None]], axis=1)
    arrays = [np.ascontiguousarray(x, dtype=dtype) for x in (BT_nodes, AT_ext)]
    for arr in arrays:
        arr.setflags(write=False)
    return {"BT_nodes": arrays[0], "AT_ext": arrays[1]}
