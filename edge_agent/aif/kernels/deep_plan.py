"""Tables of the deep planner: :class:`DeepPlan` and :func:`build_deep_plan`.

Part of :mod:`edge_agent.aif.kernels`. The deep planner evaluates policies of two or more steps of
a one-factor model whose transitions are deterministic (every action moves each state to one
state: a grid world) with every policy-tree node that predicts the same states evaluated once.
:func:`build_deep_plan` compiles its tables once per model; its kernels are in
:mod:`~edge_agent.aif.kernels.deep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.fast_tables import RowMap
from edge_agent.aif.kernels.transitions import SparseTransition, Transition
from edge_agent.arrays import distinct

if TYPE_CHECKING:
    from edge_agent.aif.kernels.tree import PolicyTree


# --------------------------------------------------------------------------------------------
# the deep planner: tables
# --------------------------------------------------------------------------------------------
# Sparse policy evaluation, exact. With deterministic transitions every action is a map ``f_u``
# of states to states, and the states a policy-tree node predicts are the root beliefs pushed
# forward through the composition of its actions, ``g = f_ut o ... o f_u1``:
# ``pred[t] = sum over s with g(s) = t of q[s]``. A node's value (utility plus information gain)
# depends on nothing but its predicted states, and the same tables serve every depth, so nodes
# whose compositions are the same map (as integer arrays, compared exactly at compile time) have
# the same value: on a grid, moves along different axes commute, "stay" is the identity, and the
# 5 + 25 + 125 nodes of a three-step tree compose to 45 distinct maps. The planner evaluates each
# distinct map once and sums, per policy, the values of the maps its depths reach:
# ``G = vals @ counts`` with ``counts[k, p]`` the (small, exact) number of depths of policy ``p``
# whose node composes to map ``k``. Nothing is pruned: every policy's ``G`` is the same sum of the
# same node values as on the general path, whose predicted states are the same sums of ``q``
# taken in another order (rounding only).
#
# When the model also has one modality with sparse likelihood rows (grid10), an agent that has just
# observed ``o`` holds all its belief above the information-gain threshold on the candidate
# states ``C(o)`` (the non-zeros of ``A[o]``), unless its evidence is tiny (see
# :mod:`~edge_agent.aif.kernels.local_plan`, the same argument for one step). The predicted states
# of map ``k`` that can pass the threshold then lie in ``T(o, k) = g_k(C(o))`` and the outcomes in
# ``R(o, k)``, the outcomes of ``T(o, k)``: the local tables gather only those (every source of
# each target, so the sums are the general path's), and the other entries the general path
# computes are exact zeros after the threshold.


@dataclass(frozen=True, eq=False)
class DeepLocal:
    """Per-observation tables of the deep planner's local form (see the comment above)."""

    kt: int  # target slots per map
    kin: int  # source slots per target
    kr: int  # outcome slots per map
    #: (O, kin * K * kt): source state of every (source slot, map, target slot); S pads (a zero)
    pred_src: IndexArray
    neg_entropy: np.ndarray  # (O, K * kt): negH of every target slot (0 pads)
    qo_table: np.ndarray  # (O, K * kt * kr): A[outcome slot, target slot] (0 pads), target-major
    ones_kt: np.ndarray  # (kt,)
    ones_kr: np.ndarray  # (kr,)
    #: An agent whose evidence is at least this has no predicted state outside T(o, k) that can
    #: pass the threshold (its sources all hold less than EXP_M16 / (2 * kin_all)).
    min_evidence: float

    @property
    def nbytes(self) -> int:
        arrays = (self.pred_src, self.neg_entropy, self.qo_table, self.ones_kt, self.ones_kr)
        return int(sum(a.nbytes for a in arrays))


@dataclass(frozen=True, eq=False)
class DeepPlan:
    """Tables of the deep planner for a one-factor model with deterministic transitions."""

    num_states: int  # S
    maps: IndexArray  # (K, S): g_k(s), the target of state s under distinct map k
    counts_T: np.ndarray  # (K, P): depths of policy p whose node composes to map k
    #: Per generation (maps first reached at one depth): ``(k0, k1, rm)``, the RowMap from the
    #: buffer rows before ``1 + k0 * S`` (row 0 zeros, map k's state t at row ``1 + k * S + t``)
    #: to maps ``k0 .. k1 - 1``; map 0 is the root's (the identity), copied in.
    generations: tuple[tuple[int, int, RowMap], ...]
    utility_by_source: np.ndarray  # (S, K): utility[g_k(s)]
    utility_by_map: np.ndarray  # (K, S): its transpose, C-contiguous
    local: DeepLocal | None

    @property
    def num_maps(self) -> int:
        return int(self.maps.shape[0])

    @property
    def max_extra_rows(self) -> int:
        """Largest extra layer of a generation's RowMap (its scratch)."""
        return max((g[2].max_extra for g in self.generations), default=0)

    @property
    def nbytes(self) -> int:
        arrays = (self.maps, self.counts_T, self.utility_by_source, self.utility_by_map)
        total = sum(a.nbytes for a in arrays) + sum(g[2].nbytes for g in self.generations)
        return int(total + (0 if self.local is None else self.local.nbytes))


def deterministic_maps(trans: Transition) -> IndexArray | None:
    """``(U, S)`` target of every state under every action, or None if some ``B[:, s, u]`` is not
    a single 1 (then the deep planner does not apply)."""
    if not isinstance(trans, SparseTransition):
        return None
    S = trans.num_states
    out = np.full((len(trans.layers), S), -1, dtype=np.intp)
    for u, layers in enumerate(trans.layers):
        for tgt, src, w in layers:
            if w is not None or np.any(out[u, src] >= 0):
                return None
            out[u, src] = tgt
    if np.any(out < 0):
        return None
    return out


def _ro(x: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(x)
    out.setflags(write=False)
    return out


def build_deep_plan(
    *,
    A_rows: tuple[np.ndarray, ...],
    transitions: tuple[Transition, ...],
    tree: PolicyTree,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> DeepPlan | None:
    """The deep planner's tables, or None when the model does not suit it.

    Needs one factor, policies of at least two steps, deterministic transitions, and fewer
    distinct maps than policy-tree nodes (else it would save nothing).
    """
    if len(transitions) != 1 or len(tree.depths) < 2:
        return None
    fn = deterministic_maps(transitions[0])
    if fn is None:
        return None
    S = fn.shape[1]
    identity = np.arange(S, dtype=np.intp)
    index: dict[bytes, int] = {identity.tobytes(): 0}  # map 0: the root's, the identity
    maps: list[IndexArray] = [identity]
    made_by: list[tuple[int, int]] = [(-1, -1)]  # per map: (parent map, action)
    generation_end: list[int] = []
    node_maps: list[IndexArray] = []  # per depth: the distinct map of each node
    prev_of_node = np.zeros(1, dtype=np.intp)  # the root's node has map 0
    total_nodes = 0
    for depth in tree.depths:
        K_d = len(depth.parent[0])
        total_nodes += K_d
        of_node = np.empty(K_d, dtype=np.intp)
        for u, nodes in depth.by_action[0]:  # compile time: model constants
            for j in nodes:
                parent = int(prev_of_node[int(depth.parent[0][j])])
                g = fn[u][maps[parent]]  # f_u after the parent's map
                key = g.tobytes()
                if key not in index:
                    index[key] = len(maps)
                    maps.append(g)
                    made_by.append((parent, int(u)))
                of_node[j] = index[key]
        node_maps.append(of_node)
        generation_end.append(len(maps))
        prev_of_node = of_node
    K = len(maps)
    if total_nodes <= K:
        return None
    P = tree.policies.shape[0]
    counts = np.zeros((K, P))
    for depth, of_node in zip(tree.depths, node_maps, strict=True):
        node = depth.joint[depth.policy_joint, 0]
        np.add.at(counts, (of_node[node], np.arange(P)), 1.0)
    table = np.stack(maps)  # (K, S)
    # Every map, generation by generation, from its parent by one action (the general path's
    # propagation, in its order): buffer row 0 is zeros, map k's state t is row 1 + k * S + t.
    by_action = [[np.flatnonzero(fn[u] == t) for t in range(S)] for u in range(fn.shape[0])]
    generations = []
    start = 1
    for end in generation_end:
        if end == start:
            continue
        layers: list[tuple[list[int], list[int]]] = []
        for k in range(start, end):
            parent, u = made_by[k]
            for t in range(S):
                for ell, s in enumerate(by_action[u][t]):
                    while len(layers) <= ell:
                        layers.append(([], []))
                    layers[ell][0].append((k - start) * S + t)
                    layers[ell][1].append(1 + parent * S + int(s))
        first_src = np.zeros((end - start) * S, dtype=np.intp)  # row 0: no source
        first_src[layers[0][0]] = layers[0][1]
        extra = tuple(
            (_ro(np.array(t, dtype=np.intp)), _ro(np.array(s, dtype=np.intp)), None)
            for t, s in layers[1:]
        )
        rm = RowMap(num_in=1 + start * S, first_src=_ro(first_src), first_w=None, extra=extra)
        generations.append((start, end, rm))
        start = end
    srcs = [[np.flatnonzero(table[k] == t) for t in range(S)] for k in range(K)]
    depth_max = max(len(s) for per_k in srcs for s in per_k)
    util = np.asarray(utility, dtype=np.float64)[table]  # (K, S): utility[g_k(s)]
    local = None
    if len(A_rows) == 1:
        local = _build_local(
            A=np.asarray(A_rows[0], dtype=np.float64),
            table=table,
            srcs=srcs,
            neg_entropy=np.asarray(neg_entropy, dtype=np.float64),
            dtype=dtype,
            kin_all=depth_max,
        )
    return DeepPlan(
        num_states=S,
        maps=_ro(table),
        counts_T=_ro(counts.astype(dtype)),
        generations=tuple(generations),
        utility_by_source=_ro(util.T.astype(dtype)),
        utility_by_map=_ro(util.astype(dtype)),
        local=local,
    )


def _build_local(
    *,
    A: np.ndarray,
    table: IndexArray,
    srcs: list[list[IndexArray]],
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
    kin_all: int,
) -> DeepLocal | None:
    """The local form's tables (see the section comment), or None if A is not sparse enough."""
    num_out, S = A.shape
    K = table.shape[0]
    cand = [np.flatnonzero(A[o]) for o in range(num_out)]
    T_sets = [[distinct(table[k][cand[o]]) for k in range(K)] for o in range(num_out)]
    kt = max(1, *(len(t) for per_o in T_sets for t in per_o))
    R_sets = [[np.flatnonzero(A[:, T].any(axis=1)) for T in per_o] for per_o in T_sets]
    kr = max(1, *(len(r) for per_o in R_sets for r in per_o))
    kin = max(
        1, *(len(srcs[k][int(t)]) for per_o in T_sets for k, T in enumerate(per_o) for t in T)
    )
    if kr * kt > 2 * num_out or kt * kin > S:
        return None  # not sparse enough to beat the dense form
    pred_src = np.full((num_out, kin, K, kt), S, dtype=np.intp)
    negH = np.zeros((num_out, K, kt))
    qo_table = np.zeros((num_out, K, kt, kr))
    for o in range(num_out):  # compile time: model constants
        for k in range(K):
            T, R = T_sets[o][k], R_sets[o][k]
            for i, t in enumerate(T):
                sources = srcs[k][int(t)]
                pred_src[o, : len(sources), k, i] = sources
            negH[o, k, : len(T)] = neg_entropy[T]
            qo_table[o, k, : len(T), : len(R)] = A[np.ix_(R, T)].T
    # A target outside T(o, k) has at most kin_all sources, none a candidate: each holds at most
    # tau when the evidence is at least 2 eps / tau (a power-of-two fraction, a factor 2 for
    # rounding), so the prediction stays below the threshold.
    tau = float(EXP_M16) / 2.0 ** (int(np.ceil(np.log2(max(kin_all, 1)))) + 1)
    return DeepLocal(
        kt=kt,
        kin=kin,
        kr=kr,
        pred_src=_ro(pred_src.reshape(num_out, -1)),
        neg_entropy=_ro(negH.reshape(num_out, -1).astype(dtype)),
        qo_table=_ro(qo_table.reshape(num_out, -1).astype(dtype)),
        ones_kt=_ro(np.ones(kt, dtype=dtype)),
        ones_kr=_ro(np.ones(kr, dtype=dtype)),
        min_evidence=2.0 * EPS / tau,
    )
