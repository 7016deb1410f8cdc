"""Tables of the state-major fast path: sparse maps, dense propagation and the per-model FastPlan.

Part of :mod:`edge_agent.aif.kernels`. The fast paths work on one block of agents at a time and
compute the same sums as the general path in another order and layout. :func:`build_fast_plan`
compiles the policy tree, the transitions and the outcome table once per model; sparse tables
become row gathers (:class:`RowMap`) or shifted slices (:class:`Diagonals`), and a sparse ``B``
also gets the agent-major tables (:class:`AgentPropagation`) that
:func:`~edge_agent.aif.kernels.agent_major.propagate_block` uses for the next prior. The layout is
described in the comment below.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.array_types import IndexArray, IntArray
from edge_agent.aif.kernels.transitions import SparseTransition, Transition, entry_weights
from edge_agent.arrays import distinct

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_agent.aif.kernels.tree import Depth, PolicyTree


# --------------------------------------------------------------------------------------------
# the state-major fast path: tables
# --------------------------------------------------------------------------------------------
# Layout. A block of ``nb`` agents is processed with the agent index *last*: a factor's beliefs
# are ``(S_f, nb)`` (``q^T``); the predicted states of the ``K`` nodes of one policy-tree depth
# are ``(S_f, K, nb)``, stored as ``S_f * K + 1`` rows of ``nb`` whose last row is zeros (the
# source of "no source" in a :class:`RowMap`); the joint predicted states of ``J`` joint nodes are
# ``(S_joint, J * nb)``. A gather then moves whole rows of ``nb`` agents (about as fast as a copy,
# where a gather along the last axis of agent-major arrays costs ~10x more), sums over states are
# BLAS matrix-vector products, and sparse tables are applied as a few row gathers
# (:class:`RowMap`) or shifted slices (:class:`Diagonals`) instead of dense products.

#: Below this many columns (joint nodes x agents) one dense BLAS product beats the several numpy
#: calls of a sparse table, whatever the sparsity (per-call overhead dominates).
SMALL_WIDTH = 32
#: Cost of one multiply-add inside BLAS relative to one element of a numpy pass (about 1/4 for
#: float32 and float64 on the x86-64 benchmark machine); picks sparse or dense outcome tables.
MAC_PER_PASS = 0.25
#: Largest fused log-likelihood table (joint states x joint outcomes, float entries) kept for
#: multi-modality models: a hard observation's ``ln(L + eps)`` is then one gathered column.
LIKELIHOOD_TABLE = 1 << 16

#: Bits of headroom above the smallest normal float that the belief floor leaves a product of
#: every factor's floored beliefs (:func:`belief_floor`): enough for the product to be multiplied
#: by a log likelihood as small as one ulp of 1 (2^-24 in float32) and stay normal.
FLOOR_HEADROOM_BITS = 26
#: The belief floor is at most 2^-40 (9.1e-13), whatever the number of factors (see
#: :func:`belief_floor`).
FLOOR_MAX_EXPONENT = -40
#: The softmax of the policy posterior in float32 takes no argument below ``ln(tiny) + 33 ln 2``
#: (about -64.5): ``exp`` then gives about 2^-93, which stays normal after division by a sum of
#: up to 2^32 terms (see :func:`policy_exp_floor`).
EXP_FLOOR_HEADROOM_BITS = 33

LayerList = tuple[tuple[IndexArray, IndexArray, np.ndarray | None], ...]


def belief_floor(dtype: np.dtype[np.floating], num_factors: int) -> float:
    """The floor the state-major kernels put under each factor's beliefs (and, in float32, the
    planner's predicted states) before they multiply them into a joint: ``2^-e`` with
    ``e = max(40, (|minexp| - 26) // F)``.

    Near-certain float32 beliefs (1e-20 and 1e-25, say) have products below the smallest normal
    float (2^-126, 1.2e-38); x86-64 processors compute on such subnormal numbers about ten to a
    hundred times slower than on normal ones, and those products were up to half the T-maze
    tick. With every factor floored, a product of ``F`` factors is at least ``2^-(|minexp| -
    26)``, so it and its products with a log likelihood (``|ln(L + eps)| >= 2^-24`` unless 0)
    stay normal. In float32 that holds for two factors; the cap ``2^-40`` keeps a three-factor
    joint normal (``>= 2^-120``) but not its products with log likelihoods below ``2^-6`` in
    magnitude, and from four factors on leaves some tail products subnormal (slower, not
    wrong).

    Float32, two factors: ``2^-50`` (8.9e-16); three or more: ``2^-40`` (9.1e-13). Float64:
    ``2^-498`` for two factors, ``2^-332`` for three: below every belief the fixed-point
    iteration can produce (``>= eps^2 / S_f``, eps = 1e-16) for up to 8 factors of fewer than
    200,000 states each, so float64
    results are bit for bit those without the floor. The floor changes the iteration's
    expected log likelihood of a factor's state by at most ``|ln eps| (F - 1) max(S_f) floor``
    (36.9 * 4 * 8.9e-16 = 1.3e-13 for the T-maze in float32), hence each belief by that much
    relative: far below float32 rounding (6e-8). The beliefs themselves are not floored.
    """
    minexp = -int(np.finfo(dtype).minexp)  # 126 (float32), 1022 (float64)
    e = max(-FLOOR_MAX_EXPONENT, (minexp - FLOOR_HEADROOM_BITS) // max(num_factors, 1))
    return float(2.0**-e)


def policy_exp_floor(dtype: np.dtype[np.floating]) -> float | None:
    """The least argument of ``exp`` in the policy posterior's softmax (after the shift by the
    maximum), or None for none: float32 only, ``ln(tiny) + 33 ln 2`` (-64.5). A policy whose
    ``gamma G + ln E`` is more than 64.5 nats below the best one's gets ``q_pi`` about 1e-28
    times the best one's instead of less (0 or a subnormal, which x86-64 computes on slowly);
    every other ``q_pi`` changes by at most ``P * 1e-28`` relative. Float64 keeps pymdp's softmax
    exactly (its subnormals need arguments below -708)."""
    if np.dtype(dtype) != np.float32:
        return None
    return float(np.log(np.finfo(np.float32).tiny) + EXP_FLOOR_HEADROOM_BITS * np.log(2.0))


@functools.lru_cache(maxsize=64)
def joint_index(num_states: tuple[int, ...]) -> np.ndarray:
    """``(S_joint, F)``: each joint state's per-factor states, C order (read-only, made once
    per shape: a learning group's every refresh reads it)."""
    grids = np.indices(num_states).reshape(len(num_states), -1).T
    grids.setflags(write=False)
    return grids


def likelihood_table(A_rows: tuple[np.ndarray, ...], dtype: np.dtype[np.floating]) -> np.ndarray:
    """``ln(A_0[o_0] * A_1[o_1] * ... + eps)`` for every joint outcome, in the compute dtype and
    in the general path's order of operations (so a row equals its log likelihood bit for bit)."""
    num_obs = tuple(a.shape[0] for a in A_rows)
    outcomes = joint_index(num_obs)
    L = A_rows[0][outcomes[:, 0]]
    for m in range(1, len(A_rows)):
        L = L * A_rows[m][outcomes[:, m]]
    out: np.ndarray = np.log(L + dtype.type(EPS))
    return out


@dataclass(frozen=True, eq=False)
class RowMap:
    """A sparse linear map on rows: ``out[r] = sum over layers of w[r] * x[src[r]]``.

    ``x`` is ``(num_in + 1, width)``, its last row (index ``num_in``) zeros. ``first_src`` ``(R,)``
    is every output row's first source (the zero row when it has none) and ``first_w`` ``(R, 1)``
    its weight (``None``: all ones). ``extra`` holds further layers ``(tgt, src, w)``, each ``tgt``
    without repeats, added in order (the order :func:`propagate` adds them in).
    """

    num_in: int
    first_src: IndexArray
    first_w: np.ndarray | None
    extra: LayerList
    #: The same map built from the transition's entry ids in place of its weights (kept by
    #: :func:`refreshed_propagation` after its first refresh: new weights of the same structure
    #: are then one gather; a few KB a shared model, not counted in :attr:`nbytes`); None before.
    weight_ids: RowMap | None = field(default=None, repr=False, compare=False)

    @property
    def max_extra(self) -> int:
        return max((len(t) for t, _, _ in self.extra), default=0)

    @property
    def passes(self) -> int:
        """Rows touched by :func:`apply_row_map` (a cost estimate)."""
        rows = len(self.first_src) * (1 if self.first_w is None else 2)
        return rows + sum(len(t) * (4 if w is None else 5) for t, _, w in self.extra)

    @property
    def nbytes(self) -> int:
        total = self.first_src.nbytes + (0 if self.first_w is None else self.first_w.nbytes)
        for t, s, w in self.extra:
            total += t.nbytes + s.nbytes + (0 if w is None else w.nbytes)
        return int(total)


def apply_row_map(rm: RowMap, x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out = rm(x)``: ``x`` ``(num_in + 1, W)`` with a zero last row, ``out`` ``(R, W)``.

    ``tmp`` is a flat buffer of at least ``2 * rm.max_extra * W`` elements.
    """
    x.take(rm.first_src, axis=0, out=out, mode="clip")  # the method: no np.take wrapper
    if rm.first_w is not None:
        np.multiply(out, rm.first_w, out=out)
    width = x.shape[1]
    for tgt, src, w in rm.extra:
        k = len(tgt)
        contrib = tmp[: k * width].reshape(k, width)
        rows = tmp[k * width : 2 * k * width].reshape(k, width)
        x.take(src, axis=0, out=contrib, mode="clip")
        if w is not None:
            np.multiply(contrib, w, out=contrib)
        out.take(tgt, axis=0, out=rows, mode="clip")
        np.add(rows, contrib, out=rows)
        out[tgt] = rows


def _row_map_from_layers(
    num_in: int,
    num_out: int,
    layers: list[list[tuple[IndexArray, IndexArray, np.ndarray]]],
    dtype: np.dtype[np.floating],
) -> RowMap:
    """Assemble a RowMap from per-layer lists of ``(out rows, in rows, weights)`` pieces."""
    first_src = np.full(num_out, num_in, dtype=np.intp)
    first_w = np.ones((num_out, 1), dtype=dtype)
    for rows, src, w in layers[0] if layers else []:
        first_src[rows] = src
        first_w[rows, 0] = w
    extra = []
    for pieces in layers[1:]:
        tgt = np.concatenate([p[0] for p in pieces]).astype(np.intp)
        src = np.concatenate([p[1] for p in pieces]).astype(np.intp)
        w = np.concatenate([p[2] for p in pieces]).astype(dtype)[:, None]
        extra.append((tgt, src, None if np.all(w == 1) else w))
    for arr in (first_src, first_w, *(a for layer in extra for a in layer if a is not None)):
        arr.setflags(write=False)
    return RowMap(
        num_in=num_in,
        first_src=first_src,
        first_w=None if np.all(first_w == 1) else first_w,
        extra=tuple(extra),
    )


def propagation_row_map(
    trans: SparseTransition,
    parent: IndexArray,
    action: IndexArray,
    num_parents: int,
    dtype: np.dtype[np.floating],
) -> RowMap:
    """One tree depth of one factor as a RowMap: child node ``j`` is ``B[:, :, action[j]]`` applied
    to parent node ``parent[j]``; rows are ``s * K + j`` (children) and ``s * num_parents + p``."""
    K = len(action)
    layers: list[list[tuple[IndexArray, IndexArray, np.ndarray]]] = []
    for u in distinct(action):  # model constants: actions and layers
        nodes = np.flatnonzero(action == u)
        for ell, (tgt, src, w) in enumerate(trans.layers[int(u)]):
            while len(layers) <= ell:
                layers.append([])
            rows = (tgt[:, None] * K + nodes[None, :]).ravel()
            srcs = (src[:, None] * num_parents + parent[nodes][None, :]).ravel()
            weights = np.ones(len(tgt)) if w is None else w.astype(np.float64)
            layers[ell].append((rows, srcs, np.repeat(weights, len(nodes))))
    return _row_map_from_layers(trans.num_states * num_parents, trans.num_states * K, layers, dtype)


def outcome_row_map(A: np.ndarray) -> RowMap:
    """``qo = A @ m`` for a sparse ``A (O, S)`` as a RowMap (row ``o`` sums its non-zeros)."""
    num_out, S = A.shape
    nonzero = A != 0
    per_row = nonzero.sum(axis=1)
    order = np.argsort(~nonzero, axis=1, kind="stable")  # non-zero columns first
    layers: list[list[tuple[IndexArray, IndexArray, np.ndarray]]] = []
    for ell in range(int(per_row.max())):
        rows = np.flatnonzero(per_row > ell)
        cols = order[rows, ell]
        layers.append([(rows, cols, A[rows, cols])])
    return _row_map_from_layers(S, num_out, layers, A.dtype)


def _row_map_fewest_passes(A: np.ndarray) -> int:
    """The fewest :attr:`RowMap.passes` :func:`outcome_row_map` of ``A (O, S)`` can have (its
    weights all 1): its layers are as long as the rows with more non-zeros than the layer's
    index, whatever the weights are."""
    per_row = np.count_nonzero(A, axis=1)
    extra = int(np.maximum(per_row - 1, 0).sum())  # rows of the layers after the first
    return int(A.shape[0]) + 4 * extra


@dataclass(frozen=True, eq=False)
class Diagonals:
    """``out = A @ x`` for an ``A (O, S)`` whose non-zeros lie on a few diagonals ``s = o + d``.

    Each entry of ``diagonals`` is ``(d, lo, hi, w)``: rows ``lo <= o < hi`` get
    ``w[o - lo] * x[o + d]`` (``w`` is ``(hi - lo, 1)``). The first entry covers the most rows; the
    rows it leaves out are zeroed before the others are added.
    """

    num_out: int
    diagonals: tuple[tuple[int, int, int, np.ndarray], ...]

    @property
    def passes(self) -> int:
        return self.num_out + sum(2 * (hi - lo) for _, lo, hi, _ in self.diagonals[1:])

    @property
    def nbytes(self) -> int:
        return int(sum(w.nbytes for *_, w in self.diagonals))


def diagonals(A: np.ndarray) -> Diagonals:
    """The :class:`Diagonals` form of ``A (O, S)`` (any matrix with a non-zero entry)."""
    o_idx, s_idx = np.nonzero(A)
    offsets = s_idx - o_idx
    diags = []
    for d in distinct(offsets):  # model constant
        rows = o_idx[offsets == d]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        w = np.ascontiguousarray(A[np.arange(lo, hi), np.arange(lo, hi) + d][:, None])
        w.setflags(write=False)
        diags.append((int(d), lo, hi, w))
    diags.sort(key=lambda item: item[1] - item[2])  # widest first (stable)
    return Diagonals(num_out=int(A.shape[0]), diagonals=tuple(diags))


def reweighted_diagonals(dg: Diagonals, A: np.ndarray) -> Diagonals:
    """``dg`` with its weights gathered again from ``A (O, S)``, whose non-zeros lie where
    those of the matrix ``dg`` was made from did (a refresh that kept the support): equal to
    :func:`diagonals` of ``A``, whose diagonals, their order and their rows follow the support
    alone, for one gather per diagonal."""
    diags = []
    for d, lo, hi, _ in dg.diagonals:
        rows = np.arange(lo, hi)
        w = np.ascontiguousarray(A[rows, rows + d][:, None])
        w.setflags(write=False)
        diags.append((d, lo, hi, w))
    return Diagonals(num_out=dg.num_out, diagonals=tuple(diags))


def apply_diagonals(dg: Diagonals, x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out = A @ x`` for ``x (S, W)``, ``out (O, W)``; ``tmp`` is another ``(O, W)`` buffer."""
    d, lo, hi, w = dg.diagonals[0]
    if lo > 0:
        out[:lo] = 0
    if hi < dg.num_out:
        out[hi:] = 0
    np.multiply(x[lo + d : hi + d], w, out=out[lo:hi])
    for d, lo, hi, w in dg.diagonals[1:]:
        part = tmp[lo:hi]
        np.multiply(x[lo + d : hi + d], w, out=part)
        np.add(out[lo:hi], part, out=out[lo:hi])


# Per-agent propagation tables, agent-major: the next prior of a block in
# :func:`~edge_agent.aif.kernels.agent_major.propagate_block`.
@dataclass(frozen=True, eq=False)
class AgentPropagation:
    """``B[:, :, a_n] @ q[n]`` for every agent of a block, for a sparse ``B``, agent-major.

    ``SparseTransition``'s layers padded per action: ``first_src (U, S)`` is each target's first
    source (0 where it has none) and ``first_w (U, S)`` its weight (0 where none; ``None`` when
    every weight is 1); each extra layer is ``(tgt, src, w)`` of shape ``(U, E)``, padded with
    weight 0 on targets the action's layer does not use (so targets never repeat in a row). Same
    additions, in the same order, as :func:`propagate`.
    """

    first_src: IndexArray
    first_w: np.ndarray | None
    extra: tuple[tuple[IndexArray, IndexArray, np.ndarray], ...]
    #: As :attr:`RowMap.weight_ids`, for these tables.
    weight_ids: AgentPropagation | None = field(default=None, repr=False, compare=False)

    @property
    def max_extra(self) -> int:
        return max((t.shape[1] for t, _, _ in self.extra), default=0)

    @functools.cached_property
    def extra_widths(self) -> tuple[int, ...]:
        """Each extra layer's width ``E`` (read once, then a plain attribute)."""
        return tuple(t.shape[1] for t, _, _ in self.extra)

    @property
    def nbytes(self) -> int:
        total = self.first_src.nbytes + (0 if self.first_w is None else self.first_w.nbytes)
        return int(total + sum(t.nbytes + s.nbytes + w.nbytes for t, s, w in self.extra))


def agent_propagation(trans: SparseTransition, dtype: np.dtype[np.floating]) -> AgentPropagation:
    """Pad a sparse transition's per-action layers into :class:`AgentPropagation` tables."""
    S = trans.num_states
    U = len(trans.layers)
    first_src = np.zeros((U, S), dtype=np.intp)
    first_w = np.zeros((U, S), dtype=dtype)
    depth = max((len(layers) for layers in trans.layers), default=0)
    extra = []
    for u, layers in enumerate(trans.layers):
        if layers:
            tgt, src, w = layers[0]
            first_src[u, tgt] = src
            first_w[u, tgt] = 1 if w is None else w
    for ell in range(1, depth):
        E = max(len(layers[ell][0]) if len(layers) > ell else 0 for layers in trans.layers)
        tgt_tab = np.zeros((U, E), dtype=np.intp)
        src_tab = np.zeros((U, E), dtype=np.intp)
        w_tab = np.zeros((U, E), dtype=dtype)
        for u, layers in enumerate(trans.layers):
            used = layers[ell][0] if len(layers) > ell else np.zeros(0, dtype=np.intp)
            free = np.ones(S, dtype=bool)
            free[used] = False
            pad = np.flatnonzero(free)[: E - len(used)]  # E <= S: enough targets
            tgt_tab[u] = np.concatenate([used, pad])
            if len(layers) > ell:
                _, src, w = layers[ell]
                src_tab[u, : len(src)] = src
                w_tab[u, : len(src)] = 1 if w is None else w
        extra.append((tgt_tab, src_tab, w_tab))
    for arr in (first_src, first_w, *(a for layer in extra for a in layer)):
        arr.setflags(write=False)
    all_ones = bool(np.all(first_w == 1))
    return AgentPropagation(
        first_src=first_src, first_w=None if all_ones else first_w, extra=tuple(extra)
    )


@dataclass(frozen=True, eq=False)
class DensePropagation:
    """One tree depth of a factor with a dense ``B``: per action, its child nodes and parents."""

    BT: np.ndarray  # (U, S, S'): the DenseTransition's table
    by_action: tuple[tuple[int, IndexArray, IndexArray], ...]  # (u, child nodes, their parents)
    max_nodes: int

    @property
    def nbytes(self) -> int:
        return int(sum(n.nbytes + p.nbytes for _, n, p in self.by_action))


def apply_dense_propagation(
    dp: DensePropagation,
    parents: np.ndarray,
    children: np.ndarray,
    buf_in: np.ndarray,
    buf_out: np.ndarray,
) -> None:
    """``children[:, j] = B[:, :, u_j] @ parents[:, p_j]`` for ``(S, K, nb)`` node arrays."""
    S, _, nb = parents.shape
    for u, nodes, par in dp.by_action:
        k = len(nodes)
        src = buf_in[: S * k * nb].reshape(S, k, nb)
        parents.take(par, axis=1, out=src, mode="clip")
        res = buf_out[: S * k * nb].reshape(S, k * nb)
        np.matmul(dp.BT[u].T, src.reshape(S, k * nb), out=res)
        children[:, nodes, :] = res.reshape(S, k, nb)


@dataclass(frozen=True, eq=False)
class FastDepth:
    """One depth of the policy tree, compiled for the state-major layout."""

    propagation: tuple[RowMap | DensePropagation, ...]  # per factor
    num_nodes: tuple[int, ...]  # per factor: K_f
    #: Per factor, the factor's node of each joint node, or None when no gather is needed (the
    #: factor's nodes are the joint nodes, or it has a single node that broadcasts).
    joint_nodes: tuple[IndexArray | None, ...]
    num_joint: int
    policy_joint: IndexArray | None  # None: policy p is joint node p
    #: The tree's joint nodes at this depth: ``num_joint`` is fewer where joint nodes predict
    #: the same states from any beliefs (:func:`_merged_joint`); the scratch is sized for these.
    num_tree_joint: int

    @property
    def nbytes(self) -> int:
        total = sum(p.nbytes for p in self.propagation)
        total += sum(j.nbytes for j in self.joint_nodes if j is not None)
        return int(total + (0 if self.policy_joint is None else self.policy_joint.nbytes))


@dataclass(frozen=True, eq=False)
class FastPlan:
    """Everything the fast path needs beyond the :class:`CompiledModel` tables."""

    num_states: tuple[int, ...]
    num_outcomes: int  # joint outcomes O
    depths: tuple[FastDepth, ...]
    A_eps: np.ndarray | None  # (O_0, S): A + eps, when there is a single modality
    #: Several modalities, a small joint space: ``ln(prod_m A_m[o_m] + eps)`` of every joint
    #: outcome, one column each, ``(S_joint, prod O_m)`` (bit for bit the product of the rows).
    lnL_T: np.ndarray | None
    obs_strides: np.ndarray  # (M,) int64: joint outcome index = obs @ obs_strides
    #: Several factors: the beliefs stacked state-major, ``(sum S_f, nb)``, factor ``f`` in rows
    #: ``offsets[f]:offsets[f + 1]``. ``marg_T (sum S_f, S_joint)``: 1 where joint state ``j`` has
    #: factor state ``s`` (every factor's marginal in one product); ``seg_ones (sum S_f, sum S_f)``:
    #: 1 where two rows belong to the same factor (every factor's softmax sum in one product);
    #: ``uniform_col (sum S_f, 1)``: ``1 / S_f``. None with one factor.
    offsets: tuple[int, ...]
    marg_T: np.ndarray | None
    seg_ones: np.ndarray | None
    uniform_col: np.ndarray | None
    A_joint: np.ndarray  # (O, S_joint), a view of CompiledModel.A_joint_T
    outcome_map: RowMap | Diagonals | None  # None: the dense product is cheapest
    utility_row: np.ndarray  # (1, S_joint)
    neg_entropy_row: np.ndarray  # (1, S_joint)
    ones_outcomes: np.ndarray  # (1, O)
    ones_states: tuple[np.ndarray, ...]  # (S_f,)
    onehot_T: tuple[np.ndarray, ...]  # (U_f, P): which policies start with each action
    onehot_is_identity: tuple[bool, ...]  # per factor: onehot_T is the identity matrix
    first_actions: IntArray  # (P, F)
    root_node_of_action: tuple[IndexArray, ...]
    threshold: np.ndarray  # 0-d, exp(-16) in the compute dtype
    eps: np.ndarray  # 0-d, 1e-16 in the compute dtype
    #: 0-d, :func:`belief_floor`: under each factor's beliefs before they enter a joint
    floor: np.ndarray
    #: Whether the planner floors the predicted states too (float32 only: in float64 products
    #: of predictions above eps^2 / S_f are normal, and the floor would be a copy for nothing)
    floor_predictions: bool
    #: 0-d or None, :func:`policy_exp_floor`: under the policy posterior's softmax arguments
    exp_floor: np.ndarray | None
    lnE_col: np.ndarray  # (P, 1): ln E as a column
    max_extra_rows: int  # largest extra layer of a propagation RowMap
    max_dense_nodes: tuple[int, ...]  # per factor, most children of one action (dense B)
    #: Per factor, agent-major per-agent propagation tables (None for a dense B).
    agent_propagation: tuple[AgentPropagation | None, ...]

    @property
    def num_joint_states(self) -> int:
        return int(self.A_joint.shape[1])

    @property
    def max_joint_nodes(self) -> int:
        return max(d.num_tree_joint for d in self.depths)

    @property
    def nbytes(self) -> int:
        arrays = [*self.ones_states, *self.onehot_T, self.first_actions, self.utility_row]
        arrays += [*self.root_node_of_action, self.ones_outcomes]
        if self.A_eps is not None:
            arrays.append(self.A_eps)
        if self.lnL_T is not None:
            arrays.append(self.lnL_T)
        if self.marg_T is not None and self.seg_ones is not None:
            arrays += [self.marg_T, self.seg_ones]
        total = sum(a.nbytes for a in arrays) + sum(d.nbytes for d in self.depths)
        total += sum(ap.nbytes for ap in self.agent_propagation if ap is not None)
        return int(total + (0 if self.outcome_map is None else self.outcome_map.nbytes))


def likelihood_fields(
    A_rows: tuple[np.ndarray, ...],
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
    *,
    same_support: FastPlan | None = None,
) -> dict[str, Any]:
    """The fields of a :class:`FastPlan` that follow the likelihood (all but ``lnL_T``, which
    the caller builds or updates), read-only: what a refresh of ``A`` changes.

    ``same_support``: the plan of a likelihood whose joint table had the same non-zeros (a
    refresh that kept the support). Which outcome map is cheapest, and its shape, follow the
    support alone, so its choice is kept and a :class:`Diagonals` map only takes its weights
    again (:func:`reweighted_diagonals`); the result is what the call without it gives."""
    A_joint = A_joint_T.T  # (O, S_joint), F-ordered view: BLAS reads it transposed
    previous = None if same_support is None else same_support.outcome_map
    outcome_map: RowMap | Diagonals | None
    if same_support is not None and not isinstance(previous, RowMap):
        outcome_map = None if previous is None else reweighted_diagonals(previous, A_joint)
    else:
        outcome_map = _cheapest_outcome_map(A_joint)
    A_eps = None
    if len(A_rows) == 1:
        A_eps = A_rows[0] + dtype.type(EPS)
        A_eps.setflags(write=False)
    rows = [utility.reshape(1, -1), neg_entropy.reshape(1, -1)]
    for row in rows:
        row.setflags(write=False)
    return {
        "A_eps": A_eps,
        "A_joint": A_joint,
        "outcome_map": outcome_map,
        "utility_row": rows[0],
        "neg_entropy_row": rows[1],
    }


def _cheapest_outcome_map(A_joint: np.ndarray) -> RowMap | Diagonals | None:
    """``q(o) = A_joint @ q(s)`` as the cheaper of :func:`diagonals` and
    :func:`outcome_row_map`, or ``None`` when the dense product costs less than both."""
    num_out, S_joint = A_joint.shape
    dense_cost = num_out * S_joint * MAC_PER_PASS
    candidates: list[RowMap | Diagonals] = []
    if np.any(A_joint != 0):
        candidates = [diagonals(A_joint)]
        if candidates[0].passes > _row_map_fewest_passes(A_joint):  # else it cannot do better
            candidates.append(outcome_row_map(np.ascontiguousarray(A_joint)))
    best = min(candidates, key=lambda c: c.passes, default=None)
    return best if best is not None and best.passes < dense_cost else None


def _parents_and_actions(depth: Depth, f: int) -> tuple[IndexArray, IndexArray]:
    """Factor ``f``'s nodes at one depth of the policy tree: each one's parent node and the
    action that leads to it."""
    parent = depth.parent[f].astype(np.intp)
    action = np.empty(len(parent), dtype=np.intp)
    for u, nodes in depth.by_action[f]:
        action[nodes] = u
    return parent, action


def refreshed_propagation(
    plan: FastPlan, tree: PolicyTree, changed: Mapping[int, Transition],
    dtype: np.dtype[np.floating],
) -> FastPlan:
    """``plan`` with each changed factor ``f``'s transitions ``changed[f]``, of the same
    structure as those it was built with (:func:`~edge_agent.aif.kernels.transitions.
    same_structure`): every depth's propagation through them and their agent-major tables made
    again from their weights, then which joint nodes predict alike read again, once
    (:func:`_with_merged_joints`); the sizes the scratch follows (the largest extra layer, the
    most dense nodes, the tree's joint nodes) stay. Equal to :func:`build_fast_plan` with
    them."""
    for f, trans in changed.items():
        plan = _refreshed_factor(plan, tree, f, trans, dtype)
    depths = _with_merged_joints(list(plan.depths), tree, plan.num_states, dtype)
    return replace(plan, depths=tuple(depths))


def _refreshed_factor(
    plan: FastPlan, tree: PolicyTree, f: int, trans: Transition, dtype: np.dtype[np.floating]
) -> FastPlan:
    """``plan`` with factor ``f``'s propagation and agent-major tables made again from
    ``trans`` (:func:`refreshed_propagation`); the joint nodes left as they were."""
    depths = []
    prev_nodes = 1
    values = _entry_values(trans) if isinstance(trans, SparseTransition) else None
    for fast_depth, depth in zip(plan.depths, tree.depths, strict=True):
        old = fast_depth.propagation[f]
        prop: RowMap | DensePropagation
        if isinstance(trans, SparseTransition):
            assert values is not None
            assert isinstance(old, RowMap)
            ids = old.weight_ids
            if ids is None:  # (once per structure: where each weight comes from)
                parent, action = _parents_and_actions(depth, f)
                ids = propagation_row_map(_entry_ids(trans), parent, action, prev_nodes,
                                          np.dtype(np.float64))  # fmt: skip
            prop = _reweighted_row_map(old, ids, values, dtype)
        else:
            assert isinstance(old, DensePropagation)
            prop = DensePropagation(BT=trans.BT, by_action=old.by_action, max_nodes=old.max_nodes)
        props = list(fast_depth.propagation)
        props[f] = prop
        depths.append(replace(fast_depth, propagation=tuple(props)))
        prev_nodes = fast_depth.num_nodes[f]
    agent = list(plan.agent_propagation)
    mine = agent[f]
    if values is not None and mine is not None:
        agent_ids = mine.weight_ids
        if agent_ids is None:
            assert isinstance(trans, SparseTransition)
            agent_ids = agent_propagation(_entry_ids(trans), np.dtype(np.float64))
        agent[f] = _reweighted_agent(mine, agent_ids, values, dtype)
    else:
        agent[f] = (agent_propagation(trans, dtype) if isinstance(trans, SparseTransition)
                    else None)  # fmt: skip
    return replace(plan, depths=tuple(depths), agent_propagation=tuple(agent))


def _entry_ids(trans: SparseTransition) -> SparseTransition:
    """``trans`` with every entry's weight its id + 2 (entries in :attr:`SparseTransition.entries`
    order): built into a table, each weight says which entry it is (0 and 1 are the tables'
    defaults: no weight, weight one)."""
    starts = trans.entries[3]
    layers = []
    i = 0
    for per_u in trans.layers:
        out = []
        for tgt, src, _ in per_u:
            out.append((tgt, src, np.arange(starts[i], starts[i + 1], dtype=np.float64) + 2.0))
            i += 1
        layers.append(tuple(out))
    return SparseTransition(num_states=trans.num_states, layers=tuple(layers),
                            full_first=trans.full_first)  # fmt: skip


def _entry_values(trans: SparseTransition) -> np.ndarray:
    """float64 ``[0, 1, w_0, w_1, ...]``: the defaults, then every entry's weight (ids as
    :func:`_entry_ids` gives them)."""
    return np.concatenate([np.array([0.0, 1.0]), entry_weights(trans)])


def _gathered(
    ids: np.ndarray | None, values: np.ndarray, dtype: np.dtype[np.floating], none_if_ones: bool
) -> np.ndarray | None:
    if ids is None:
        return None
    out = values.take(ids.astype(np.intp)).astype(dtype)
    if none_if_ones and np.all(out == 1):
        return None
    out.setflags(write=False)
    return out


def _reweighted_row_map(
    old: RowMap, ids: RowMap, values: np.ndarray, dtype: np.dtype[np.floating]
) -> RowMap:
    """``old`` (of the structure ``ids`` was built with) with the weights ``values`` gathers:
    what :func:`propagation_row_map` makes of the new transition."""
    extra = tuple(
        (tgt, src, _gathered(w_ids, values, dtype, True))
        for (tgt, src, _), (_, _, w_ids) in zip(old.extra, ids.extra, strict=True)
    )
    return RowMap(num_in=old.num_in, first_src=old.first_src,
                  first_w=_gathered(ids.first_w, values, dtype, True), extra=extra,
                  weight_ids=ids)  # fmt: skip


def _reweighted_agent(
    old: AgentPropagation, ids: AgentPropagation, values: np.ndarray, dtype: np.dtype[np.floating]
) -> AgentPropagation:
    """As :func:`_reweighted_row_map`, for :func:`agent_propagation`'s tables."""
    extra = []
    for (tgt, src, _), (_, _, w_ids) in zip(old.extra, ids.extra, strict=True):
        w = _gathered(w_ids, values, dtype, False)
        assert w is not None
        extra.append((tgt, src, w))
    return AgentPropagation(first_src=old.first_src,
                            first_w=_gathered(ids.first_w, values, dtype, True),
                            extra=tuple(extra), weight_ids=ids)  # fmt: skip


def _joint_fields(
    joint: np.ndarray, policy_joint: np.ndarray, counts: list[int] | tuple[int, ...]
) -> dict[str, Any]:
    """:class:`FastDepth`'s ``joint_nodes``, ``num_joint`` and ``policy_joint`` of joint nodes
    ``joint (J, F)`` (factor nodes) through which policy ``p`` passes at ``policy_joint[p]``."""
    J = len(joint)
    joint_nodes: list[IndexArray | None] = []
    for f, count in enumerate(counts):
        col = joint[:, f].astype(np.intp)
        same = count == J and np.array_equal(col, np.arange(J))
        joint_nodes.append(None if same or count == 1 else col)
    P = len(policy_joint)
    identity = P == J and np.array_equal(policy_joint, np.arange(J))
    return {
        "joint_nodes": tuple(joint_nodes),
        "num_joint": J,
        "policy_joint": None if identity else policy_joint.astype(np.intp),
    }


def _node_operators(
    depths: list[FastDepth], num_states: tuple[int, ...], dtype: np.dtype[np.floating]
) -> list[list[np.ndarray]]:
    """Per depth and factor, every node's linear map from the root beliefs to its predicted
    states, ``(S, K, S)`` (node ``k``'s is ``[:, k, :]``): the depths' own propagation applied to
    the identity, in the plan's dtype."""
    parents = []
    for S in num_states:
        root = np.zeros((S + 1, S), dtype=dtype)
        root[:S] = np.eye(S, dtype=dtype)
        parents.append(root)
    prev_nodes = [1] * len(num_states)
    out = []
    for depth in depths:
        children, ops = [], []
        for f, prop in enumerate(depth.propagation):
            S, K = num_states[f], depth.num_nodes[f]
            child = np.zeros((S * K + 1, S), dtype=dtype)
            if isinstance(prop, RowMap):
                tmp = np.empty(2 * max(prop.max_extra, 1) * S, dtype=dtype)
                apply_row_map(prop, parents[f], child[:-1], tmp)
            else:
                size = S * prop.max_nodes * S
                apply_dense_propagation(
                    prop,
                    parents[f][:-1].reshape(S, prev_nodes[f], S),
                    child[:-1].reshape(S, K, S),
                    np.empty(size, dtype=dtype),
                    np.empty(size, dtype=dtype),
                )
            children.append(child)
            ops.append(child[:-1].reshape(S, K, S))
        out.append(ops)
        parents = children
        prev_nodes = list(depth.num_nodes)
    return out


def _merged_joint(
    depth: Depth, counts: tuple[int, ...], ops: list[np.ndarray]
) -> dict[str, Any] | None:
    """The joint fields of ``depth`` with joint nodes that predict the same states merged, or
    None when no two do. Two joint nodes are merged when, on every factor, their nodes' maps
    from the root beliefs (``ops``, :func:`_node_operators`) are equal element for element: a
    property of the model's transitions, read once here, never assumed (in a grid, two moves
    in either order; their predictions then differ by the order of the sums alone, so their
    values by rounding). The merged depth evaluates each distinct joint node once."""
    factor_class = []
    for f, op in enumerate(ops):
        seen: dict[bytes, int] = {}
        factor_class.append(
            [seen.setdefault(op[:, k, :].tobytes(), len(seen)) for k in range(counts[f])]
        )
    first: dict[tuple[int, ...], int] = {}  # a distinct joint node: its index among them
    keep: list[int] = []  # the tree's joint node that stands for each
    rep = np.empty(len(depth.joint), dtype=np.intp)
    for j, nodes in enumerate(depth.joint):
        key = tuple(factor_class[f][int(k)] for f, k in enumerate(nodes))
        if key not in first:
            first[key] = len(keep)
            keep.append(j)
        rep[j] = first[key]
    if len(keep) == len(depth.joint):
        return None
    return _joint_fields(depth.joint[np.array(keep, dtype=np.intp)], rep[depth.policy_joint],
                         counts)  # fmt: skip


def _with_merged_joints(
    depths: list[FastDepth], tree: PolicyTree, num_states: tuple[int, ...],
    dtype: np.dtype[np.floating],
) -> list[FastDepth]:
    """``depths`` with the joint nodes of every depth after the first merged where they predict
    the same states (:func:`_merged_joint`), else the tree's. Several factors only: with one,
    :func:`~edge_agent.aif.kernels.block.evaluate_block` reads a depth's nodes in place as its
    joint nodes (no gather, no buffer for one)."""
    if len(depths) < 2 or len(num_states) < 2:
        return depths
    ops = _node_operators(depths, num_states, dtype)
    out = depths[:1]
    for t in range(1, len(depths)):
        fd, depth = depths[t], tree.depths[t]
        merged = _merged_joint(depth, fd.num_nodes, ops[t])
        fields = merged or _joint_fields(depth.joint, depth.policy_joint, fd.num_nodes)
        out.append(replace(fd, **fields))
    return out


def build_fast_plan(
    *,
    lnE: np.ndarray,
    A_rows: tuple[np.ndarray, ...],
    transitions: tuple[Transition, ...],
    tree: PolicyTree,
    A_joint_T: np.ndarray,
    utility: np.ndarray,
    neg_entropy: np.ndarray,
    dtype: np.dtype[np.floating],
) -> FastPlan:
    """Compile the tree, the transitions and the outcome table for the state-major layout."""
    F = len(transitions)
    num_states = tuple(
        t.num_states if isinstance(t, SparseTransition) else int(t.BT.shape[1]) for t in transitions
    )
    depths = []
    prev_nodes = [1] * F
    max_extra = 0
    max_dense = [0] * F
    for depth in tree.depths:
        props: list[RowMap | DensePropagation] = []
        counts = []
        for f, trans in enumerate(transitions):
            parent, action = _parents_and_actions(depth, f)
            if isinstance(trans, SparseTransition):
                rm = propagation_row_map(trans, parent, action, prev_nodes[f], dtype)
                max_extra = max(max_extra, rm.max_extra)
                props.append(rm)
            else:
                by_action = tuple(
                    (int(u), nodes.astype(np.intp), parent[nodes])
                    for u, nodes in depth.by_action[f]
                )
                biggest = max(len(n) for _, n, _ in by_action)
                max_dense[f] = max(max_dense[f], biggest)
                props.append(DensePropagation(BT=trans.BT, by_action=by_action, max_nodes=biggest))
            counts.append(len(parent))
        J = len(depth.joint)
        depths.append(
            FastDepth(
                propagation=tuple(props),
                num_nodes=tuple(counts),
                **_joint_fields(depth.joint, depth.policy_joint, counts),
                num_tree_joint=J,
            )
        )
        prev_nodes = counts
    depths = _with_merged_joints(depths, tree, num_states, dtype)

    num_out, S_joint = A_joint_T.T.shape

    def ro(x: np.ndarray) -> np.ndarray:
        x.setflags(write=False)
        return x

    num_obs = [a.shape[0] for a in A_rows]
    exp_floor = policy_exp_floor(dtype)
    lnL_T = None
    if len(A_rows) > 1 and int(np.prod(num_obs)) * S_joint <= LIKELIHOOD_TABLE:
        lnL_T = ro(np.ascontiguousarray(likelihood_table(A_rows, dtype).T))
    strides = [int(np.prod(num_obs[m + 1 :])) for m in range(len(num_obs))]
    offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(num_states)]))
    marg_T = seg_ones = uniform_col = None
    if F > 1:
        joint_index = np.indices(num_states).reshape(F, -1)  # C order: last factor fastest
        marg = np.zeros((offsets[-1], S_joint), dtype=dtype)
        for f in range(F):
            marg[offsets[f] + joint_index[f], np.arange(S_joint)] = 1
        factor_of = np.repeat(np.arange(F), num_states)
        marg_T = ro(marg)
        seg_ones = ro((factor_of[:, None] == factor_of[None, :]).astype(dtype))
        uniform = 1.0 / np.asarray(num_states, dtype=np.float64)
        uniform_col = ro(uniform[factor_of, None].astype(dtype))

    return FastPlan(
        num_states=num_states,
        num_outcomes=int(num_out),
        depths=tuple(depths),
        lnL_T=lnL_T,
        obs_strides=ro(np.array(strides, dtype=np.int64)),
        offsets=offsets,
        marg_T=marg_T,
        seg_ones=seg_ones,
        uniform_col=uniform_col,
        **likelihood_fields(A_rows, A_joint_T, utility, neg_entropy, dtype),
        ones_outcomes=ro(np.ones((1, num_out), dtype=dtype)),
        ones_states=tuple(ro(np.ones(s, dtype=dtype)) for s in num_states),
        onehot_T=tuple(
            ro(np.ascontiguousarray(m.T, dtype=dtype)) for m in tree.first_action_onehot
        ),
        onehot_is_identity=tuple(
            m.shape[0] == m.shape[1] and bool(np.array_equal(m, np.eye(m.shape[0])))
            for m in tree.first_action_onehot
        ),
        first_actions=ro(np.ascontiguousarray(tree.policies[:, 0, :])),
        root_node_of_action=tuple(ro(r.astype(np.intp)) for r in tree.root_node_of_action),
        threshold=ro(np.array(EXP_M16, dtype=dtype)),
        eps=ro(np.array(EPS, dtype=dtype)),
        floor=ro(np.array(belief_floor(dtype, F), dtype=dtype)),
        floor_predictions=np.dtype(dtype) == np.float32,
        exp_floor=None if exp_floor is None else ro(np.array(exp_floor, dtype=dtype)),
        lnE_col=ro(np.ascontiguousarray(lnE.reshape(-1, 1))),
        max_extra_rows=max_extra,
        max_dense_nodes=tuple(max_dense),
        agent_propagation=tuple(
            agent_propagation(t, dtype) if isinstance(t, SparseTransition) else None
            for t in transitions
        ),
    )
