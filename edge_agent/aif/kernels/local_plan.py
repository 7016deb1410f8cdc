"""Tables of the local one-step planner: :class:`LocalPlan` and :func:`build_local_plan`.

Part of :mod:`edge_agent.aif.kernels`. The local planner evaluates one-step policies of a
one-factor, one-modality model whose likelihood rows are sparse (a grid world) only on the few
states and outcomes the last observation leaves possible. :func:`build_local_plan` compiles its
tables once per model (for :func:`~edge_agent.aif.kernels.compiled.compile_model`); its kernels
are in :mod:`~edge_agent.aif.kernels.local`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.array_types import IndexArray
from edge_agent.aif.kernels.transitions import SparseTransition, Transition
from edge_agent.arrays import distinct

if TYPE_CHECKING:
    from edge_agent.aif.kernels.tree import PolicyTree


# --------------------------------------------------------------------------------------------
# the local one-step planner: tables
# --------------------------------------------------------------------------------------------
# For a model with one factor and one modality whose likelihood rows are sparse (a grid world:
# each outcome is produced by a handful of cells), an agent that has just observed ``o`` holds all
# of its belief above the information-gain threshold on the candidate states ``C(o)`` (the
# non-zeros of ``A[o, :]``), unless its prior contradicted the observation so much that the
# evidence ``Z = sum (A[o] + eps)(prior + eps)`` is tiny (then the eps floor of the other states
# can exceed the threshold; such agents are sent to the dense path). For one-step policies, the
# predicted states that can pass the threshold then lie in ``T(o, u)`` (the targets of ``C(o)``
# under ``B[:, :, u]``) and the predicted outcomes in ``R(o, u)`` (the outcomes of ``T(o, u)``):
# small sets known at compile time. Gathering per agent only those entries (from tables indexed by
# the observation) costs about ``|T| + |R|`` per action instead of ``S + O`` and takes ``|R|``
# logarithms instead of ``O``, with the same sums as the dense path (only exact zeros are left
# out). Utility needs every predicted state, and is ``q . (B_u^T utility)``.


@dataclass(frozen=True, eq=False)
class LocalPlan:
    """Tables of the local one-step planner (see the section comment above)."""

    node_action: IndexArray  # (K,) action of each first-depth node
    policy_node: IndexArray | None  # (P,) node of each policy; None: policy p is node p
    kt: int  # target slots per node
    kin: int  # source slots per target
    kr: int  # outcome slots per node
    pred_src: IndexArray  # (O, K * kt * kin) source state of every (node, target, source) slot
    pred_w: np.ndarray  # (O, K * kt * kin) its transition weight (0 pads)
    neg_entropy: np.ndarray  # (O, K * kt) negH of every target slot (0 pads)
    qo_table: np.ndarray  # (O, K * kt * kr) A[outcome slot, target slot] (0 pads), target-major
    utility_by_source: np.ndarray  # (S, K) sum over t of B[t, s, u_j] * utility[t]
    ones_kt: np.ndarray  # (kt,)
    ones_kr: np.ndarray  # (kr,)
    #: An agent whose evidence Z is at least this has every non-candidate state's posterior so
    #: far below the threshold that no predicted state outside T(o, u) can pass it.
    min_evidence: float
    #: Where the value tables come from (what a refresh of ``A`` gathers again): the target
    #: state of every slot of ``neg_entropy`` (``S``: a pad) and the entry of ``A`` flattened of
    #: every slot of ``qo_table`` (``O * S``: a pad).
    target_index: IndexArray | None = None
    outcome_index: IndexArray | None = None

    @property
    def nbytes(self) -> int:
        arrays = [self.node_action, self.pred_src, self.pred_w, self.neg_entropy, self.qo_table]
        arrays += [self.utility_by_source, self.ones_kt, self.ones_kr]
        arrays += [a for a in (self.target_index, self.outcome_index) if a is not None]
        if self.policy_node is not None:
            arrays.append(self.policy_node)
        return int(sum(a.nbytes for a in arrays))


def build_local_plan(
    *,
    A: np.ndarray,
    trans: Transition,
    tree: PolicyTree,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> LocalPlan | None:
    """The local planner's tables, or None when the model does not suit it (or it would not pay).

    Needs one factor, one modality (``A (O, S)``), one-step policies and a sparse ``B``.
    """
    if len(tree.depths) != 1 or not isinstance(trans, SparseTransition):
        return None
    num_out, S = A.shape
    depth = tree.depths[0]
    K = len(depth.parent[0])
    node_action = np.empty(K, dtype=np.intp)
    for u, nodes in depth.by_action[0]:
        node_action[nodes] = u
    # Per action: the sources of every target (layer order) and the targets of every source.
    sources: list[list[list[tuple[int, float]]]] = []
    targets: list[list[list[int]]] = []
    for layers in trans.layers:
        src_of: list[list[tuple[int, float]]] = [[] for _ in range(S)]
        tgt_of: list[list[int]] = [[] for _ in range(S)]
        for tgt, src, w in layers:
            for i in range(len(tgt)):  # compile time: model constants
                weight = 1.0 if w is None else float(w[i])
                src_of[int(tgt[i])].append((int(src[i]), weight))
                tgt_of[int(src[i])].append(int(tgt[i]))
        sources.append(src_of)
        targets.append(tgt_of)
    kin = max(len(s) for per_u in sources for s in per_u)
    cand = [np.flatnonzero(A[o]) for o in range(num_out)]
    T_sets = [
        [
            sorted({t for c in cand[o] for t in targets[int(node_action[j])][int(c)]})
            for j in range(K)
        ]
        for o in range(num_out)
    ]
    kt = max(1, *(len(t) for per_o in T_sets for t in per_o))
    R_sets = [
        [sorted({int(r) for t in T_sets[o][j] for r in np.flatnonzero(A[:, t])}) for j in range(K)]
        for o in range(num_out)
    ]
    kr = max(1, *(len(r) for per_o in R_sets for r in per_o))
    if kr * kt > 2 * num_out or kt * kin > S:
        return None  # not sparse enough to beat the dense path
    pred_src = np.zeros((num_out, K, kt, kin), dtype=np.intp)
    pred_w = np.zeros((num_out, K, kt, kin), dtype=dtype)
    target_index = np.full((num_out, K, kt), S, dtype=np.intp)
    outcome_index = np.full((num_out, K, kt, kr), num_out * S, dtype=np.intp)
    for o in range(num_out):
        for j in range(K):
            u = int(node_action[j])
            T, R = T_sets[o][j], R_sets[o][j]
            for i, t in enumerate(T):
                for k, (s, weight) in enumerate(sources[u][t]):
                    pred_src[o, j, i, k] = s
                    pred_w[o, j, i, k] = weight
                target_index[o, j, i] = t
            outcome_index[o, j, : len(T), : len(R)] = (
                np.asarray(R, dtype=np.intp)[None, :] * S + np.asarray(T, dtype=np.intp)[:, None]
            )
    # No predicted state outside T may pass the threshold: its at most kin sources each hold at
    # most tau (a power-of-two fraction of it, with a factor 2 for rounding).
    tau = float(EXP_M16) / 2.0 ** (int(np.ceil(np.log2(max(kin, 1)))) + 1)
    P = len(depth.policy_joint)
    identity = P == K and np.array_equal(depth.policy_joint, np.arange(K))

    def ro(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x)
        out.setflags(write=False)
        return out

    return LocalPlan(
        node_action=ro(node_action),
        policy_node=None if identity else ro(depth.policy_joint.astype(np.intp)),
        kt=kt,
        kin=kin,
        kr=kr,
        pred_src=ro(pred_src.reshape(num_out, -1)),
        pred_w=ro(pred_w.reshape(num_out, -1)),
        ones_kt=ro(np.ones(kt, dtype=dtype)),
        ones_kr=ro(np.ones(kr, dtype=dtype)),
        min_evidence=2.0 * EPS / tau,
        target_index=ro(target_index.reshape(num_out, -1)),
        outcome_index=ro(outcome_index.reshape(num_out, -1)),
        **local_values(
            target_index, outcome_index, node_action, A=A, trans=trans, utility=utility,
            neg_entropy=neg_entropy, dtype=dtype,
        ),
    )


def refreshed_local(
    local: LocalPlan,
    trans: SparseTransition,
    *,
    A: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> LocalPlan:
    """``local`` with the transitions ``trans``, of the same structure as those it was built with
    (:func:`~edge_agent.aif.kernels.transitions.same_structure`: the slots stay): the weights of
    the prediction slots gathered from ``trans``' layers and the value tables made again
    (:func:`local_values`). Equal to :func:`build_local_plan` with ``trans``.

    A target's sources fill its slots in the order of the layers, one a layer (a layer's targets
    are distinct, and a target with ``c`` sources is in the first ``c``): slot ``k`` of target
    ``t`` under action ``u`` holds the weight of layer ``k``'s entry for ``t``."""
    assert local.target_index is not None
    assert local.outcome_index is not None
    S = trans.num_states
    weights = np.zeros((len(trans.layers), local.kin, S + 1))  # column S: the pads' target
    for u, layers in enumerate(trans.layers):
        for k, (tgt, _, w) in enumerate(layers):
            weights[u, k, tgt] = 1.0 if w is None else w
    num_out, K = local.pred_w.shape[0], len(local.node_action)
    target = local.target_index.reshape(num_out, K, local.kt, 1)
    action = local.node_action.reshape(1, K, 1, 1)
    pred_w = weights[action, np.arange(local.kin).reshape(1, 1, 1, -1), target]
    pred_w = np.ascontiguousarray(pred_w.reshape(num_out, -1), dtype=dtype)
    pred_w.setflags(write=False)
    return replace(local, pred_w=pred_w, **local_values(
        local.target_index, local.outcome_index, local.node_action, A=A, trans=trans,
        utility=utility, neg_entropy=neg_entropy, dtype=dtype,
    ))  # fmt: skip


def local_values(
    target_index: IndexArray,
    outcome_index: IndexArray,
    node_action: IndexArray,
    *,
    A: np.ndarray,
    trans: SparseTransition,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> dict[str, Any]:
    """The local planner's value tables (``neg_entropy``, ``qo_table``, ``utility_by_source``)
    gathered from the likelihood ``A (O, S)``, ``neg_entropy`` and ``utility`` by the slots'
    indices, read-only: what a refresh of ``A`` changes (the slots follow ``A``'s support)."""
    num_out, S = A.shape
    padded_negH = np.append(np.asarray(neg_entropy, dtype=np.float64), 0.0)
    # gathered in the tables' dtype (the same numbers as gathering float64 and casting after)
    padded_A = np.append(np.asarray(A, dtype=dtype).reshape(-1), 0.0).astype(dtype, copy=False)
    # sum over t of B[t, s, u] * utility[t], from B's layers (each layer's targets distinct):
    # one bincount over every action's layers, which adds each (u, s)'s terms from 0 in the
    # order of the layers, as np.add.at layer by layer did (the same sums, bit for bit)
    by_action = _utility_by_action(trans, distinct(node_action), utility).reshape(-1, S)
    utility_by_source = by_action[node_action].T
    out: dict[str, Any] = {
        "neg_entropy": padded_negH[target_index].reshape(num_out, -1),
        "qo_table": padded_A[outcome_index].reshape(num_out, -1),
        "utility_by_source": utility_by_source,
    }
    for name, table in out.items():
        out[name] = np.ascontiguousarray(table, dtype=dtype)
        out[name].setflags(write=False)
    return out


def _utility_by_action(
    trans: SparseTransition, actions: IndexArray, utility: np.ndarray
) -> np.ndarray:
    """``(U * S,)`` float64: ``sum_t B[t, s, u] * utility[t]`` at ``u * S + s`` for the
    ``actions`` (0 for the others), each sum taken from 0 over ``trans``' layers in order."""
    S, U = trans.num_states, len(trans.layers)
    u64 = np.asarray(utility, dtype=np.float64)
    slots, gains = [], []
    for u in actions:
        for tgt, src, w in trans.layers[int(u)]:
            slots.append(src + int(u) * S)
            gains.append(u64[tgt] if w is None else u64[tgt] * w.astype(np.float64))
    if not slots:
        return np.zeros(U * S)
    return np.bincount(np.concatenate(slots), np.concatenate(gains), minlength=U * S)
