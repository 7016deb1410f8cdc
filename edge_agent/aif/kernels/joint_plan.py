"""Tables of the joint small-block path: :class:`JointPlan`, :func:`build_joint_plan`.

Part of :mod:`edge_agent.aif.kernels`. A block of a handful of agents of a *multi-factor* model
costs numpy call overhead, not arithmetic: the other paths loop over factors, modalities and
policy-tree depths with many small calls. The joint small-block path (kernels in
:mod:`~edge_agent.aif.kernels.joint_small`) works on the factors *stacked*: the beliefs of all
factors side by side in one ``(nb, sum S_f)`` row per agent, so that each fixed-point iteration and
each stage of a tick is a few calls whatever the number of factors, modalities or depths:

* the log likelihood of a joint observation is one row of ``lnL_table``;
* every factor's marginal of ``lnL * q(s)`` is one product with the indicator ``M_ext``;
* the softmax of every factor at once normalises with one product with ``seg_ones``;
* every policy-tree node's predicted state of every factor is one product of the stacked
  posterior with the block-diagonal ``B_nodes``, and the nodes' joint states (mean field: the
  outer product of the factors') a gather and a product per factor; nodes that predict alike
  (``stay, left`` and ``left, stay``) are evaluated once.

:func:`build_joint_plan` builds the tables once per model, at compile time, when they are small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.fast_tables import joint_index, likelihood_table
from edge_agent.aif.kernels.transitions import Transition, propagate

if TYPE_CHECKING:
    from edge_agent.aif.kernels.tree import PolicyTree

#: Largest joint table (float entries) the joint small-block path may keep: ``lnL_table`` and
#: ``AT_ext`` (joint outcomes x joint states). Beyond it the model goes to the other paths.
JOINT_TABLE = 1 << 16
#: Largest scratch per agent (float entries) for the nodes' joint states and outcomes.
JOINT_SCRATCH = 1 << 13
#: Largest table of every node's joint transition built (then deduplicated) at compile time.
_BUILD_LIMIT = 1 << 20


@dataclass(frozen=True, eq=False)
class JointPlan:
    """Stacked-factor tables of a multi-factor model for blocks of a few agents.

    Beliefs are stacked: column ``offsets[f] + s`` of a ``(nb, sum S_f)`` row is ``q_f(s)``.
    Joint states and outcomes are in C order (last factor, last modality fastest).
    """

    dtype: np.dtype[np.floating]
    num_states: tuple[int, ...]
    offsets: tuple[int, ...]  # (F + 1,): stacked column of each factor's first state
    obs_strides: np.ndarray  # (M,) int64: joint outcome index = obs @ obs_strides
    lnL_table: np.ndarray  # (O_joint, S_joint): ln(prod_m A_m[o_m] + eps)
    M_avg: np.ndarray  # (S_joint, sum S): mean over the other factors (uniform q)
    M_ext: np.ndarray  # (S_joint, sum S + 1): sum over the other factors; last column: total
    seg_ones: np.ndarray  # (sum S, sum S): 1 where two columns belong to the same factor
    uniform_row: np.ndarray  # (sum S,): 1 / S_f
    uniform_joint: np.ndarray  # (S_joint,): 1 / S_joint
    fe_uniform: np.ndarray  # 0-d: sum_f sum_s u ln(u + eps) of the uniform beliefs
    num_nodes: int  # distinct policy-tree nodes, all depths
    #: Per factor, its distinct nodes' transitions side by side, block diagonal:
    #: ``(sum S, sum_f K_f * S_f)``; column block ``(f, k)`` is ``B_f`` of prefix ``k``, as ``B^T``.
    B_nodes: np.ndarray
    node_factor: tuple[np.ndarray, ...]  # per factor, (nodes,) intp: its node of each node
    factor_nodes: tuple[int, ...]  # K_f: distinct nodes per factor
    utility: np.ndarray  # (S_joint,)
    AT_ext: np.ndarray  # (S_joint, O_joint + 1): joint outcomes, then negH
    ones_outcomes: np.ndarray  # (O_joint,)
    node_policy: np.ndarray | None  # (nodes, P) 0/1: G = values @ node_policy; None: identity
    lnE: np.ndarray  # (P,)
    ones_policies: np.ndarray  # (P, 1)
    num_controls: tuple[int, ...]
    onehot_pad: np.ndarray  # (P, F * U_max): first action of each policy, one block per factor
    BS: np.ndarray  # (sum S, sum_f U_f * S_f): every factor's B[:, :, u]^T, block diagonal
    BT: tuple[np.ndarray, ...]  # per factor (U_f, S_f, S_f): B[:, :, u]^T (one agent's prior)
    prior_factor: np.ndarray  # (sum S,) intp: factor of each stacked column
    prior_stride: np.ndarray  # (sum S,) int64: S_f of each stacked column
    prior_base: np.ndarray  # (sum S,) int64: column of action 0 in BS's output
    threshold: np.ndarray  # 0-d, exp(-16)
    eps: np.ndarray  # 0-d, 1e-16

    @property
    def num_factors(self) -> int:
        return len(self.num_states)

    @property
    def width(self) -> int:
        """Stacked columns: ``sum S_f``."""
        return self.offsets[-1]

    @property
    def num_joint_states(self) -> int:
        return int(self.lnL_table.shape[1])

    @property
    def num_outcomes(self) -> int:
        """Joint outcomes of the information gain (those some state can produce)."""
        return int(self.ones_outcomes.shape[0])

    @property
    def num_policies(self) -> int:
        return int(self.lnE.shape[0])

    def gathers(self, f: int) -> bool:
        """Whether factor ``f``'s nodes must be gathered into node order (else they are in node
        order already, or a single node broadcasts over all)."""
        K, Kf = self.num_nodes, self.factor_nodes[f]
        in_order = Kf == self.num_nodes and np.array_equal(self.node_factor[f], np.arange(K))
        return not (in_order or Kf == 1)

    @property
    def nbytes(self) -> int:
        arrays = [
            self.obs_strides, self.lnL_table, self.M_avg, self.M_ext, self.seg_ones,
            self.uniform_row, self.uniform_joint, self.B_nodes, self.utility, self.AT_ext,
            self.ones_outcomes, *self.node_factor,
            self.lnE, self.ones_policies, self.onehot_pad, self.BS, *self.BT, self.prior_factor,
            self.prior_stride, self.prior_base,
        ]  # fmt: skip
        extra = 0 if self.node_policy is None else self.node_policy.nbytes
        return int(sum(a.nbytes for a in arrays) + extra)


def _nodes(policies: np.ndarray) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
    """Policy-tree nodes, depth by depth: ``(depth, action prefix (t, F))`` each, and the node
    each policy passes through at each depth, ``(L, P)``."""
    P, L, F = policies.shape
    nodes: list[tuple[int, np.ndarray]] = []
    node_of = np.zeros((L, P), dtype=np.intp)
    for t in range(L):
        prefixes = policies[:, : t + 1, :].reshape(P, -1)
        unique, inverse = np.unique(prefixes, axis=0, return_inverse=True)
        node_of[t] = len(nodes) + inverse.reshape(-1)
        nodes.extend((t, u.reshape(t + 1, F)) for u in unique)
    return nodes, node_of


def _composite(per_action: list[np.ndarray], actions: np.ndarray) -> np.ndarray:
    """``(S_f, S_f)``: row ``s`` is factor ``f``'s predicted state after ``actions`` from ``s``."""
    C = np.eye(per_action[0].shape[0])
    for a in actions:
        C = C @ per_action[int(a)]
    return C


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``rows`` in order of first appearance, and each row's index among them."""
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rows[first[order]], rank[inverse.reshape(-1)]


def _node_tables(
    BT: list[list[np.ndarray]], nodes: list[tuple[int, np.ndarray]], node_of: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The distinct nodes: per factor its distinct transitions ``(K_f, S_f, S_f)``, each node's
    per-factor transition ``(K, F)``, and ``node_policy (K, P)``.

    Nodes whose action prefixes predict alike (exactly: "stay then left" and "left then stay", or
    "go to u" from anywhere) are evaluated once; ``node_policy[k, p]`` counts how often policy
    ``p`` passes through node ``k``.
    """
    per_factor, which = [], []
    for f, per_action in enumerate(BT):
        flat = np.stack([_composite(per_action, prefix[:, f]).reshape(-1) for _, prefix in nodes])
        distinct, index = _distinct(flat)
        S = per_action[0].shape[0]
        per_factor.append(distinct.reshape(-1, S, S))
        which.append(index)
    combos, node = _distinct(np.stack(which, axis=1))
    P = node_of.shape[1]
    node_policy = np.zeros((len(combos), P))
    for t in range(node_of.shape[0]):
        np.add.at(node_policy, (node[node_of[t]], np.arange(P)), 1.0)
    return per_factor, combos, node_policy


def build_joint_plan(
    *,
    num_states: tuple[int, ...],
    num_controls: tuple[int, ...],
    A_rows: tuple[np.ndarray, ...],
    transitions: tuple[Transition, ...],
    tree: PolicyTree,
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    lnE: np.ndarray,
    dtype: np.dtype[np.floating],
) -> JointPlan | None:
    """The joint small-block path's tables for a multi-factor model, if they are small."""
    S, U = num_states, num_controls
    F = len(S)
    Sj, n_out = int(np.prod(S)), int(A_joint_T.shape[1])
    O_joint = int(np.prod([a.shape[0] for a in A_rows]))  # lnL_table's rows: every outcome
    policies = tree.policies
    nodes, node_of = _nodes(policies)
    too_big = Sj * max(O_joint, n_out + 1) > JOINT_TABLE
    if F < 2 or too_big or len(nodes) * max(S) ** 2 > _BUILD_LIMIT:
        return None
    offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(S)]))
    W = offsets[-1]
    joint = joint_index(S)
    M_ext = np.zeros((Sj, W + 1))
    for f in range(F):
        M_ext[np.arange(Sj), offsets[f] + joint[:, f]] = 1.0
    M_ext[:, W] = 1.0
    factor_of = np.repeat(np.arange(F), S)
    size_of = np.asarray(S, dtype=np.float64)[factor_of]
    M_avg = M_ext[:, :W] * (size_of / Sj)
    seg_ones = (factor_of[:, None] == factor_of[None, :]).astype(np.float64)
    uniform = 1.0 / size_of
    # B[:, s, u]^T per factor and action: row s is the prediction from state s.
    BT = [
        [propagate(tr, np.eye(S[f], dtype=dtype), u).astype(np.float64) for u in range(U[f])]
        for f, tr in enumerate(transitions)
    ]
    per_factor, combos, node_policy = _node_tables(BT, nodes, node_of)
    K, P = node_policy.shape
    if K * (Sj + n_out + 1) > JOINT_SCRATCH:
        return None
    identity = K == P and np.array_equal(node_policy, np.eye(P))
    node_widths = [len(d) * s for d, s in zip(per_factor, S, strict=True)]
    node_offsets = np.concatenate([[0], np.cumsum(node_widths)])
    B_nodes = np.zeros((W, int(node_offsets[-1])))
    for f, distinct in enumerate(per_factor):
        for k, C in enumerate(distinct):
            c0 = int(node_offsets[f]) + k * S[f]
            B_nodes[offsets[f] : offsets[f + 1], c0 : c0 + S[f]] = C
    U_max = max(U)
    onehot_pad = np.zeros((P, F * U_max))
    for f in range(F):
        onehot_pad[np.arange(P), f * U_max + policies[:, 0, f]] = 1.0
    widths = [U[f] * S[f] for f in range(F)]
    out_offsets = np.concatenate([[0], np.cumsum(widths)])
    BS = np.zeros((W, int(out_offsets[-1])))
    for f in range(F):
        for u in range(U[f]):
            c0 = int(out_offsets[f]) + u * S[f]
            BS[offsets[f] : offsets[f + 1], c0 : c0 + S[f]] = BT[f][u]
    states_of = np.concatenate([np.arange(s) for s in S])
    fe_uniform = sum(float(s * (1 / s) * np.log(1 / s + EPS)) for s in S)

    def c(x: np.ndarray, dt: np.dtype[np.generic] = dtype) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=dt)
        out.setflags(write=False)
        return out

    i64 = np.dtype(np.int64)
    num_obs = tuple(a.shape[0] for a in A_rows)
    strides = np.array([int(np.prod(num_obs[m + 1 :])) for m in range(len(num_obs))])
    return JointPlan(
        dtype=dtype,
        num_states=S,
        offsets=offsets,
        obs_strides=c(strides, i64),
        lnL_table=c(likelihood_table(A_rows, dtype)),
        M_avg=c(M_avg),
        M_ext=c(M_ext),
        seg_ones=c(seg_ones),
        uniform_row=c(uniform),
        uniform_joint=c(np.full(Sj, 1.0 / Sj)),
        fe_uniform=c(np.array(fe_uniform)),
        num_nodes=K,
        B_nodes=c(B_nodes),
        node_factor=tuple(c(combos[:, f], np.dtype(np.intp)) for f in range(F)),
        factor_nodes=tuple(len(d) for d in per_factor),
        utility=c(utility),
        AT_ext=c(np.concatenate([A_joint_T, neg_entropy[:, None]], axis=1)),
        ones_outcomes=c(np.ones(n_out)),
        node_policy=None if identity else c(node_policy),
        lnE=c(lnE),
        ones_policies=c(np.ones((P, 1))),
        num_controls=U,
        onehot_pad=c(onehot_pad),
        BS=c(BS),
        BT=tuple(c(np.stack(per_action)) for per_action in BT),
        prior_factor=c(factor_of, np.dtype(np.intp)),
        prior_stride=c(np.asarray(S)[factor_of], i64),
        prior_base=c(out_offsets[factor_of] + states_of, i64),
        threshold=c(np.array(EXP_M16)),
        eps=c(np.array(EPS)),
    )
