"""Batched Active Inference kernels: pure functions on arrays of many agents.

Every function here takes all its inputs (and, on the fast path, its scratch buffers) as arguments;
no I/O, no clock, no logging, no Python loop over agents (loops run over factors, modalities,
policy-tree depths, action values and sparse-table layers, which are model constants). The maths is
pymdp 0.0.7.1's (see :mod:`edge_agent.aif.reference`), rearranged for batches:

* single-factor inference ``softmax(ln(L + eps) + ln(prior + eps))`` is computed as the
  equivalent normalised product ``(L + eps) * (prior + eps) / Z``;
* multi-factor inference runs pymdp's simultaneous fixed-point updates with a per-agent
  convergence mask, so each agent stops exactly when pymdp would;
* expected free energy is evaluated on a policy *tree*: policies sharing a prefix share the
  predicted states of that prefix, and each factor is propagated separately (mean field);
* utility is linear in the joint predicted state, ``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``,
  and the information gain is ``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's
  ``exp(-16)`` state threshold.

Two implementations of the same maths live here:

* the **general path** (:func:`infer_states`, :func:`evaluate_policies`, :func:`next_prior`, ...)
  works on agent-major ``(n_agents, ...)`` arrays and allocates its results. It is short and
  readable, and the unit tests use it as the yardstick for the fast paths;
* the **fast paths** work on one block of agents at a time and write into the preallocated
  buffers of a :class:`Workspace` (nothing is allocated per tick). They compute the same sums in
  another order and layout, so they agree with the general path to rounding
  (``tests/unit/test_kernels.py``). :class:`~edge_agent.core.agents.AifAgentGroup` runs them:

  - :func:`infer_block`: state inference, one factor agent-major, several factors state-major;
  - :func:`evaluate_block`: the policy tree in a *state-major* layout (agent index last), any
    model, any horizon; sparse tables become row gathers (:class:`RowMap`) or shifted slices
    (:class:`Diagonals`);
  - :func:`evaluate_local_block`: one-step policies of a one-factor, one-modality model whose
    likelihood rows are sparse (a grid world), evaluated only on the few states and outcomes the
    last observation leaves possible (:class:`LocalPlan`); agents it cannot serve exactly are
    reported and go to :func:`evaluate_block`;
  - :func:`evaluate_small_block`: one-step policies of a one-factor model for blocks of a few
    agents, with a few dense products (:class:`SmallPlan`): fewest numpy calls;
  - :func:`select_block`, :func:`prior_block`, :func:`small_prior_block`,
    :func:`propagate_block`: action selection and the next prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import SPARSE_RATIO, LogU8, QuantizedModel, SparseColumns, decode_log_u8
from edge_agent.aif.reference import EPS, EXP_M16
from edge_agent.errors import ModelError

#: Joint outcome x joint state tables larger than this are refused (memory of the info gain).
MAX_JOINT_TABLE = 1 << 24

IntArray = NDArray[np.int64]
IndexArray = NDArray[np.intp]


# --------------------------------------------------------------------------------------------
# transitions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DenseTransition:
    """``BT[u]`` is ``B[:, :, u].T`` so that ``q @ BT[u]`` predicts the next state."""

    BT: np.ndarray  # (U, S, S')

    @property
    def nbytes(self) -> int:
        return int(self.BT.nbytes)


@dataclass(frozen=True, eq=False)
class SparseTransition:
    """Per action, layers of ``(target, source, weight)`` with unique targets in each layer.

    ``out[..., tgt] += q[..., src] * w`` layer by layer predicts the next state; deterministic
    transitions have ``w is None`` and usually one layer that covers every target.
    """

    num_states: int
    layers: tuple[tuple[tuple[IndexArray, IndexArray, np.ndarray | None], ...], ...]  # [u][layer]
    full_first: tuple[bool, ...]  # [u]: first layer's targets are exactly 0..S-1 in order

    @property
    def nbytes(self) -> int:
        total = 0
        for per_u in self.layers:
            for tgt, src, w in per_u:
                total += tgt.nbytes + src.nbytes + (w.nbytes if w is not None else 0)
        return total


Transition = DenseTransition | SparseTransition


def make_transition(B: np.ndarray | LogU8 | SparseColumns, dtype: type[np.floating]) -> Transition:
    """Compile one factor's transitions from a dense float table or a quantized one.

    Column-sparse tables (quantized ``SparseColumns``, or dense float tables with at most
    ``S / SPARSE_RATIO`` non-zeros per column) become a :class:`SparseTransition`; the weights are
    the table's own values, so both forms compute the same products.
    """
    if isinstance(B, LogU8):
        B = decode_log_u8(B)
    if isinstance(B, np.ndarray):
        S, _, U = B.shape
        nonzero = B != 0
        k = int(nonzero.sum(axis=0).max())
        if k * SPARSE_RATIO > S:
            return DenseTransition(BT=np.ascontiguousarray(B.transpose(2, 1, 0), dtype=dtype))
        order = np.argsort(~nonzero, axis=0, kind="stable")[:k]  # non-zero rows first, (k, S, U)
        weights = np.take_along_axis(B, order, axis=0)
        return _sparse_transition(S, order, weights, dtype)
    S = B.num_states
    k, _, U = B.index.shape
    dense_w = np.ones((k, S, U)) if B.values is None else decode_log_u8(B.values)
    return _sparse_transition(S, B.index.astype(np.intp), dense_w, dtype)


def _sparse_transition(
    S: int, index: np.ndarray, weights: np.ndarray, dtype: type[np.floating]
) -> SparseTransition:
    """Layers from ``k`` (target, weight) entries per column (``index``, ``weights``: (k, S, U))."""
    k, _, U = index.shape
    per_u = []
    full_first = []
    for u in range(U):
        tgt = index[:, :, u].astype(np.intp).ravel()
        src = np.broadcast_to(np.arange(S), (k, S)).ravel()
        w = weights[:, :, u].ravel()
        keep = w > 0
        tgt, src, w = tgt[keep], src[keep], w[keep]
        # Split into layers where each target appears at most once.
        order = np.lexsort((src, tgt))
        tgt, src, w = tgt[order], src[order], w[order]
        rank = np.zeros(len(tgt), dtype=np.intp)
        if len(tgt) > 1:
            same = tgt[1:] == tgt[:-1]
            for i in np.flatnonzero(same):  # model constant, compile time only
                rank[i + 1] = rank[i] + 1
        layers = []
        for r in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == r
            wr = w[sel].astype(dtype)
            layers.append((tgt[sel], src[sel], None if np.all(wr == 1) else wr))
        per_u.append(tuple(layers))
        full_first.append(bool(layers) and np.array_equal(layers[0][0], np.arange(S)))
    return SparseTransition(num_states=S, layers=tuple(per_u), full_first=tuple(full_first))


def propagate(trans: Transition, q: np.ndarray, u: int) -> np.ndarray:
    """Predicted next state ``B[:, :, u] @ q`` for every row of ``q`` (shape ``(..., S)``)."""
    if isinstance(trans, DenseTransition):
        pred: np.ndarray = q @ trans.BT[u]
        return pred
    layers = trans.layers[u]
    if trans.full_first[u]:
        _, src, w = layers[0]
        out = np.take(q, src, axis=-1)
        if w is not None:
            out *= w
        rest = layers[1:]
    else:
        out = np.zeros(q.shape, dtype=q.dtype)
        rest = layers
    for tgt, src, w in rest:
        contrib = np.take(q, src, axis=-1)
        if w is not None:
            contrib *= w
        out[..., tgt] += contrib
    return out


def propagate_per_agent(trans: Transition, q: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``B[:, :, actions[n]] @ q[n]`` for every agent ``n``: loops over action values only."""
    out = np.empty_like(q)
    for u in np.unique(actions):
        sel = actions == u
        out[sel] = propagate(trans, q[sel], int(u))
    return out


# --------------------------------------------------------------------------------------------
# the policy tree
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Depth:
    """One depth of the policy tree.

    Per factor ``f``: nodes are the distinct action prefixes of that factor; ``parent[f]`` indexes
    the previous depth's nodes of ``f``, ``by_action[f]`` lists ``(u, node indices)``.
    Joint nodes combine one node per factor; ``joint[:, f]`` says which; ``policy_joint[p]`` is
    the joint node policy ``p`` passes through at this depth.
    """

    parent: tuple[IntArray, ...]
    by_action: tuple[tuple[tuple[int, IntArray], ...], ...]
    joint: IntArray  # (J, F)
    policy_joint: IntArray  # (P,)
    joint_is_identity: bool


@dataclass(frozen=True, eq=False)
class PolicyTree:
    policies: IntArray  # (P, L, F)
    depths: tuple[Depth, ...]
    #: ``first_action_onehot[f]`` (P, U_f): which first action each policy takes on factor f.
    first_action_onehot: tuple[np.ndarray, ...]
    #: ``root_node_of_action[f][u]``: depth-0 node of factor f reached by action u, or -1.
    root_node_of_action: tuple[IntArray, ...]

    @property
    def nbytes(self) -> int:
        total = self.policies.nbytes + sum(x.nbytes for x in self.first_action_onehot)
        for d in self.depths:
            total += d.joint.nbytes + d.policy_joint.nbytes + sum(p.nbytes for p in d.parent)
        return int(total)


def build_policy_tree(
    policies: np.ndarray, num_controls: tuple[int, ...], dtype: type[np.floating]
) -> PolicyTree:
    P, L, F = policies.shape
    depths = []
    prev_node = [np.zeros(P, dtype=np.int64) for _ in range(F)]  # root
    for t in range(L):
        parents, by_action, node_of_policy = [], [], []
        for f in range(F):
            keys = np.stack([prev_node[f], policies[:, t, f]], axis=1)
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            parents.append(uniq[:, 0].astype(np.int64))
            actions = uniq[:, 1]
            by_action.append(
                tuple(
                    (int(u), np.flatnonzero(actions == u).astype(np.int64))
                    for u in np.unique(actions)
                )
            )
            node_of_policy.append(inverse.ravel().astype(np.int64))
        stacked = np.stack(node_of_policy, axis=1)
        joint, policy_joint = np.unique(stacked, axis=0, return_inverse=True)
        identity = F == 1 and np.array_equal(joint[:, 0], np.arange(len(joint)))
        depths.append(
            Depth(
                parent=tuple(parents),
                by_action=tuple(by_action),
                joint=joint.astype(np.int64),
                policy_joint=policy_joint.ravel().astype(np.int64),
                joint_is_identity=bool(identity),
            )
        )
        prev_node = node_of_policy
    onehot = []
    for f, u in enumerate(num_controls):
        m = np.zeros((P, u), dtype=dtype)
        m[np.arange(P), policies[:, 0, f]] = 1.0
        onehot.append(m)
    root_nodes = []
    for f, u in enumerate(num_controls):
        lookup = np.full(u, -1, dtype=np.int64)
        for action, nodes in depths[0].by_action[f]:
            lookup[action] = nodes[0]
        root_nodes.append(lookup)
    return PolicyTree(
        policies=policies.astype(np.int64),
        depths=tuple(depths),
        first_action_onehot=tuple(onehot),
        root_node_of_action=tuple(root_nodes),
    )


# --------------------------------------------------------------------------------------------
# the compiled model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CompiledModel:
    """Shared, read-only compute tables for one model, in one float dtype.

    Built once per model (``compile_model``); every agent group on that model shares it, and its
    ``nbytes`` is what the memory budget counts once per model.
    """

    dtype: np.dtype[np.floating]
    num_obs: tuple[int, ...]
    num_states: tuple[int, ...]
    num_controls: tuple[int, ...]
    #: ``A_rows[m][o]`` is ``A[m][o]`` flattened over the joint state: (O_m, S_joint).
    A_rows: tuple[np.ndarray, ...]
    transitions: tuple[Transition, ...]
    D: tuple[np.ndarray, ...]
    lnE: np.ndarray  # (P,)
    #: Utility per joint state: sum_m A_m^T ln softmax(C_m).  (S_joint,)
    utility: np.ndarray
    #: sum_o p(o|s) ln(p(o|s) + e^-16) over joint outcomes, per joint state.  (S_joint,)
    neg_entropy: np.ndarray
    #: Joint outcome likelihood, transposed: (S_joint, O_joint).
    A_joint_T: np.ndarray
    tree: PolicyTree
    #: The state-major tables of the fast path (built from the fields above).
    fast: FastPlan
    #: The local one-step planner's tables, when the model suits it (see LocalPlan).
    local: LocalPlan | None
    #: The small-block planner's tables, when the model suits it (see SmallPlan).
    small: SmallPlan | None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def num_factors(self) -> int:
        return len(self.num_states)

    @property
    def num_modalities(self) -> int:
        return len(self.num_obs)

    @property
    def num_policies(self) -> int:
        return int(self.tree.policies.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of every shared table (the budget's per-model charge)."""
        arrays = [*self.A_rows, *self.D, self.lnE, self.utility, self.neg_entropy, self.A_joint_T]
        return int(
            sum(a.nbytes for a in arrays)
            + sum(t.nbytes for t in self.transitions)
            + self.tree.nbytes
            + self.fast.nbytes
            + (0 if self.local is None else self.local.nbytes)
            + (0 if self.small is None else self.small.nbytes)
        )


def compile_model(
    model: GenerativeModel | QuantizedModel,
    policies: np.ndarray,
    *,
    dtype: type[np.floating] = np.float64,
    E: np.ndarray | None = None,
) -> CompiledModel:
    """Precompute the batched kernels' tables from a float or quantized model.

    A quantized model keeps its sparse transitions sparse; everything else is decoded once.
    """
    if isinstance(model, QuantizedModel):
        A = [decode_log_u8(a) for a in model.A]
        B: list[np.ndarray | LogU8 | SparseColumns] = list(model.B)
        dq = model.dequantize()
        C, D = list(dq.C), list(dq.D)
        E_model = dq.E
    else:
        A, B, C, D, E_model = list(model.A), list(model.B), list(model.C), list(model.D), model.E
    num_obs = tuple(a.shape[0] for a in A)
    num_states = tuple(d.shape[0] for d in D)
    num_controls = model.num_controls
    S_joint = int(np.prod(num_states))
    O_joint = int(np.prod(num_obs))
    if S_joint * O_joint > MAX_JOINT_TABLE:
        raise ModelError(
            f"joint outcome table {O_joint} x {S_joint} exceeds {MAX_JOINT_TABLE} entries; "
            "the information gain over joint outcomes would not fit on a small device"
        )
    P = policies.shape[0]
    E_used = E if E is not None else E_model
    if E_used is not None and E_used.shape != (P,):
        raise ModelError(f"E has {E_used.shape[0]} entries but there are {P} policies")
    lnE = np.log((E_used if E_used is not None else np.full(P, 1.0 / P)) + EPS)

    A_flat = [a.reshape(a.shape[0], S_joint) for a in A]
    utility = np.zeros(S_joint)
    for a, c_m in zip(A_flat, C, strict=True):
        lnC = np.log(_softmax_vec(c_m) + EPS)
        utility += lnC @ a
    A_joint = np.ones((1, S_joint))
    for a in A_flat:  # joint over modalities, last modality fastest (pymdp's spm_cross order)
        A_joint = (A_joint[:, None, :] * a[None, :, :]).reshape(-1, S_joint)
    neg_entropy = (A_joint * np.log(A_joint + EXP_M16)).sum(axis=0)

    def c(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=dtype)
        out.setflags(write=False)
        return out

    A_rows = tuple(c(a) for a in A_flat)
    transitions = tuple(make_transition(b, dtype) for b in B)
    tree = build_policy_tree(policies, num_controls, dtype)
    A_joint_T = c(A_joint.T)
    return CompiledModel(
        dtype=np.dtype(dtype),
        num_obs=num_obs,
        num_states=num_states,
        num_controls=num_controls,
        A_rows=A_rows,
        transitions=transitions,
        D=tuple(c(d) for d in D),
        lnE=c(lnE),
        utility=c(utility),
        neg_entropy=c(neg_entropy),
        A_joint_T=A_joint_T,
        tree=tree,
        fast=build_fast_plan(
            lnE=c(lnE),
            A_rows=A_rows,
            transitions=transitions,
            tree=tree,
            A_joint_T=A_joint_T,
            utility=c(utility),
            neg_entropy=c(neg_entropy),
            dtype=np.dtype(dtype),
        ),
        local=None
        if len(A_rows) > 1 or len(transitions) > 1
        else build_local_plan(
            A=A_rows[0],
            trans=transitions[0],
            tree=tree,
            utility=utility,
            neg_entropy=neg_entropy,
            dtype=np.dtype(dtype),
        ),
        small=None
        if len(transitions) > 1
        else build_small_plan(
            trans=transitions[0],
            tree=tree,
            A_joint_T=A_joint_T,
            utility=utility,
            neg_entropy=neg_entropy,
            dtype=np.dtype(dtype),
        ),
    )


def _softmax_vec(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


# --------------------------------------------------------------------------------------------
# state inference
# --------------------------------------------------------------------------------------------
def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    out: np.ndarray = x - x.max(axis=-1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def likelihood(cm: CompiledModel, obs: np.ndarray) -> np.ndarray:
    """``prod_m A[m][obs[:, m]]`` over the joint state: ``(N, S_joint)``."""
    L: np.ndarray = cm.A_rows[0][obs[:, 0]]
    for m in range(1, cm.num_modalities):
        L = L * cm.A_rows[m][obs[:, m]]
    return L


def soft_likelihood(cm: CompiledModel, soft: list[np.ndarray]) -> np.ndarray:
    """``prod_m sum_o p_m(o) A[m][o]`` over the joint state, ``(N, S_joint)``, from soft evidence
    ``soft[m] (N, O_m)`` (a distribution over each modality's outcomes; pymdp's ``distr_obs``)."""
    L: np.ndarray = soft[0] @ cm.A_rows[0]
    for m in range(1, cm.num_modalities):
        L = L * (soft[m] @ cm.A_rows[m])
    return L


def infer_states(
    cm: CompiledModel,
    obs: np.ndarray | None,
    prior: list[np.ndarray],
    *,
    num_iter: int,
    dF_tol: float,
    soft: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Posterior per factor, ``(N, S_f)`` each, from ``obs (N, M)`` (or soft evidence ``soft``,
    see :func:`soft_likelihood`) and a prior per factor."""
    if soft is not None:
        L = soft_likelihood(cm, soft)
    elif obs is not None:
        L = likelihood(cm, obs)
    else:
        raise ValueError("infer_states needs obs or soft evidence")
    if cm.num_factors == 1:
        q = (L + EPS) * (prior[0] + EPS)
        q /= q.sum(axis=1, keepdims=True)
        return [q]
    N = L.shape[0]
    lnL = np.log(L + EPS).reshape(N, *cm.num_states)
    log_prior = [np.log(p + EPS) for p in prior]
    return fixed_point(lnL, log_prior, num_iter=num_iter, dF_tol=dF_tol)


def fixed_point(
    lnL: np.ndarray, log_prior: list[np.ndarray], *, num_iter: int, dF_tol: float
) -> list[np.ndarray]:
    """pymdp's ``run_vanilla_fpi`` for a batch: simultaneous mean-field updates per agent.

    ``lnL``: ``(N, S_0, ..., S_{F-1})`` log joint likelihood; ``log_prior[f]``: ``(N, S_f)``.
    Agents whose free energy changed by less than ``dF_tol`` stop updating, as pymdp's loop does.
    """
    N = lnL.shape[0]
    F = lnL.ndim - 1
    dtype = lnL.dtype
    qs = [np.full((N, lnL.shape[f + 1]), 1.0 / lnL.shape[f + 1], dtype=dtype) for f in range(F)]
    prev = _free_energy(qs, log_prior, None)
    dF = np.ones(N, dtype=dtype)
    tiny = np.finfo(dtype).tiny
    for _ in range(num_iter):
        active = dF >= dF_tol
        if not active.any():
            break
        weighted = lnL * _outer_rows(qs)
        new = []
        for f in range(F):
            others = tuple(1 + i for i in range(F) if i != f)
            qL = weighted.sum(axis=others) / np.maximum(qs[f], tiny)
            new.append(softmax_rows(qL + log_prior[f]))
        vfe = _free_energy(new, log_prior, lnL)
        qs = [np.where(active[:, None], n, o) for n, o in zip(new, qs, strict=True)]
        dF = np.where(active, np.abs(prev - vfe), dF)
        prev = np.where(active, vfe, prev)
    return qs


def _outer_rows(qs: list[np.ndarray]) -> np.ndarray:
    """Joint ``(N, S_0, ..., S_{F-1})`` from per-factor ``(N, S_f)`` (any leading dims work)."""
    joint = qs[0]
    for q in qs[1:]:
        lead = q.shape[:-1] + (1,) * (joint.ndim - q.ndim + 1)
        joint = joint[..., None] * q.reshape(lead + q.shape[-1:])
    return joint


def _free_energy(
    qs: list[np.ndarray], log_prior: list[np.ndarray], lnL: np.ndarray | None
) -> np.ndarray:
    vfe = np.zeros(qs[0].shape[0], dtype=qs[0].dtype)
    for q, lp in zip(qs, log_prior, strict=True):
        vfe += (q * np.log(q + EPS)).sum(axis=1) - (q * lp).sum(axis=1)
    if lnL is not None:
        vfe -= (_outer_rows(qs) * lnL).reshape(lnL.shape[0], -1).sum(axis=1)
    return vfe


# --------------------------------------------------------------------------------------------
# expected free energy and policies
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PolicyEvaluation:
    """What :func:`evaluate_policies` returns.

    ``G``: ``(N, P)`` negative expected free energy (pymdp's sign: higher is better).
    ``first_step``: per factor, ``(N, K_f, S_f)`` predicted states after each distinct first action
    (reused as the next prior for the chosen action, see :func:`next_prior`).
    """

    G: np.ndarray
    first_step: tuple[np.ndarray, ...]


def evaluate_policies(
    cm: CompiledModel, qs: list[np.ndarray], *, use_utility: bool, use_info_gain: bool
) -> PolicyEvaluation:
    """``G`` for every policy of every agent, walking the policy tree depth by depth."""
    N = qs[0].shape[0]
    tree = cm.tree
    G = np.zeros((N, cm.num_policies), dtype=cm.dtype)
    states: list[np.ndarray] = [q[:, None, :] for q in qs]  # root: (N, 1, S_f)
    first_step: tuple[np.ndarray, ...] = ()
    for t, depth in enumerate(tree.depths):
        new_states = []
        for f, trans in enumerate(cm.transitions):
            parents = states[f]
            out = np.empty((N, len(depth.parent[f]), cm.num_states[f]), dtype=cm.dtype)
            for u, nodes in depth.by_action[f]:
                src = parents[:, 0] if t == 0 else parents[:, depth.parent[f][nodes]]
                pred = propagate(trans, src, u)
                out[:, nodes] = pred[:, None, :] if t == 0 else pred
            new_states.append(out)
        states = new_states
        if t == 0:
            first_step = tuple(states)
        if cm.num_factors == 1:
            qx = states[0] if depth.joint_is_identity else states[0][:, depth.joint[:, 0]]
        else:
            qx = _outer_rows([states[f][:, depth.joint[:, f]] for f in range(cm.num_factors)])
            qx = qx.reshape(N, len(depth.joint), -1)
        values = node_values(cm, qx, use_utility=use_utility, use_info_gain=use_info_gain)
        G += values[:, depth.policy_joint]
    return PolicyEvaluation(G=G, first_step=first_step)


def node_values(
    cm: CompiledModel, qx: np.ndarray, *, use_utility: bool, use_info_gain: bool
) -> np.ndarray:
    """Utility plus information gain of predicted joint states ``qx (N, J, S_joint)`` -> (N, J)."""
    N, J, _ = qx.shape
    value = np.zeros((N, J), dtype=cm.dtype)
    if use_utility:
        value += qx @ cm.utility
    if use_info_gain:
        masked = np.where(qx > EXP_M16, qx, 0)
        value += masked @ cm.neg_entropy
        qo = masked @ cm.A_joint_T  # (N, J, O_joint)
        ln_qo = np.log(qo + EPS)
        value -= np.einsum("njo,njo->nj", qo, ln_qo)
    return value


def policy_posterior(G: np.ndarray, lnE: np.ndarray, gamma: float) -> np.ndarray:
    """``q_pi = softmax(gamma * G + ln E)`` per agent: ``(N, P)``."""
    return softmax_rows(G * gamma + lnE)


def action_marginals(cm: CompiledModel, q_pi: np.ndarray) -> list[np.ndarray]:
    """Posterior over each factor's next action: ``(N, U_f)`` per factor."""
    out = []
    for onehot in cm.tree.first_action_onehot:
        m = q_pi @ onehot
        m /= m.sum(axis=1, keepdims=True)
        out.append(m)
    return out


def select_deterministic(p: np.ndarray) -> IntArray:
    """Per row, the index of the maximum, the first on exact ties (pymdp's ``np.argmax``)."""
    out: IntArray = np.argmax(p, axis=1).astype(np.int64)
    return out


def select_stochastic(p: np.ndarray, alpha: float, rng: np.random.Generator) -> IntArray:
    """Sample per row from ``softmax(alpha * ln(p + eps))`` (pymdp's stochastic selection)."""
    probs = softmax_rows(alpha * np.log(p + EPS))
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    out: IntArray = np.minimum((cdf < u).sum(axis=1), p.shape[1] - 1).astype(np.int64)
    return out


def select_actions(
    cm: CompiledModel,
    q_pi: np.ndarray,
    *,
    mode: str,
    deterministic: bool,
    alpha: float,
    rng: np.random.Generator,
) -> IntArray:
    """Actions ``(N, F)`` from the policy posterior, pymdp's ``sample_action``."""
    if mode == "full":
        idx = select_deterministic(q_pi) if deterministic else select_stochastic(q_pi, alpha, rng)
        return cm.tree.policies[idx, 0, :]
    marginals = action_marginals(cm, q_pi)
    cols = [
        select_deterministic(m) if deterministic else select_stochastic(m, alpha, rng)
        for m in marginals
    ]
    return np.stack(cols, axis=1)


def next_prior(
    cm: CompiledModel,
    qs: list[np.ndarray],
    actions: np.ndarray,
    first_step: tuple[np.ndarray, ...] | None,
) -> list[np.ndarray]:
    """Prior for the next step, ``B[f][:, :, a_f] @ qs[f]`` per agent.

    When ``first_step`` (from :func:`evaluate_policies` on these ``qs``) holds the prediction for
    every chosen action, it is reused instead of recomputed.
    """
    out = []
    for f, trans in enumerate(cm.transitions):
        lookup = cm.tree.root_node_of_action[f]
        a = actions[:, f]
        if first_step is not None and np.all(lookup[a] >= 0):
            nodes = lookup[a]
            out.append(np.take_along_axis(first_step[f], nodes[:, None, None], axis=1)[:, 0])
        else:
            out.append(propagate_per_agent(trans, qs[f], a))
    return out


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

LayerList = tuple[tuple[IndexArray, IndexArray, np.ndarray | None], ...]


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
    np.take(x, rm.first_src, axis=0, out=out)
    if rm.first_w is not None:
        np.multiply(out, rm.first_w, out=out)
    width = x.shape[1]
    for tgt, src, w in rm.extra:
        k = len(tgt)
        contrib = tmp[: k * width].reshape(k, width)
        rows = tmp[k * width : 2 * k * width].reshape(k, width)
        np.take(x, src, axis=0, out=contrib)
        if w is not None:
            np.multiply(contrib, w, out=contrib)
        np.take(out, tgt, axis=0, out=rows)
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
    for u in np.unique(action):  # model constants: actions and layers
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
    for d in np.unique(offsets):  # model constant
        rows = o_idx[offsets == d]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        w = np.ascontiguousarray(A[np.arange(lo, hi), np.arange(lo, hi) + d][:, None])
        w.setflags(write=False)
        diags.append((int(d), lo, hi, w))
    diags.sort(key=lambda item: item[1] - item[2])  # widest first (stable)
    return Diagonals(num_out=int(A.shape[0]), diagonals=tuple(diags))


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
        np.take(parents, par, axis=1, out=src)
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
        return max(d.num_joint for d in self.depths)

    @property
    def nbytes(self) -> int:
        arrays = [*self.ones_states, *self.onehot_T, self.first_actions, self.utility_row]
        arrays += [*self.root_node_of_action, self.ones_outcomes]
        if self.A_eps is not None:
            arrays.append(self.A_eps)
        total = sum(a.nbytes for a in arrays) + sum(d.nbytes for d in self.depths)
        total += sum(ap.nbytes for ap in self.agent_propagation if ap is not None)
        return int(total + (0 if self.outcome_map is None else self.outcome_map.nbytes))


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
            parent = depth.parent[f].astype(np.intp)
            action = np.empty(len(parent), dtype=np.intp)
            for u, nodes in depth.by_action[f]:
                action[nodes] = u
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
        joint_nodes: list[IndexArray | None] = []
        for f in range(F):
            col = depth.joint[:, f].astype(np.intp)
            same = counts[f] == J and np.array_equal(col, np.arange(J))
            joint_nodes.append(None if same or counts[f] == 1 else col)
        P = len(depth.policy_joint)
        identity = P == J and np.array_equal(depth.policy_joint, np.arange(J))
        depths.append(
            FastDepth(
                propagation=tuple(props),
                num_nodes=tuple(counts),
                joint_nodes=tuple(joint_nodes),
                num_joint=J,
                policy_joint=None if identity else depth.policy_joint.astype(np.intp),
            )
        )
        prev_nodes = counts

    A_joint = A_joint_T.T  # (O, S_joint), F-ordered view: BLAS reads it transposed
    num_out, S_joint = A_joint.shape
    dense_cost = num_out * S_joint * MAC_PER_PASS
    candidates: list[RowMap | Diagonals] = []
    if np.any(A_joint != 0):
        candidates = [diagonals(A_joint), outcome_row_map(np.ascontiguousarray(A_joint))]
    best = min(candidates, key=lambda c: c.passes, default=None)
    outcome_map = best if best is not None and best.passes < dense_cost else None

    def ro(x: np.ndarray) -> np.ndarray:
        x.setflags(write=False)
        return x

    return FastPlan(
        num_states=num_states,
        num_outcomes=int(num_out),
        depths=tuple(depths),
        A_eps=ro(A_rows[0] + dtype.type(EPS)) if len(A_rows) == 1 else None,
        A_joint=A_joint,
        outcome_map=outcome_map,
        utility_row=ro(utility.reshape(1, -1)),
        neg_entropy_row=ro(neg_entropy.reshape(1, -1)),
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
        lnE_col=ro(np.ascontiguousarray(lnE.reshape(-1, 1))),
        max_extra_rows=max_extra,
        max_dense_nodes=tuple(max_dense),
        agent_propagation=tuple(
            agent_propagation(t, dtype) if isinstance(t, SparseTransition) else None
            for t in transitions
        ),
    )


# --------------------------------------------------------------------------------------------
# the state-major fast path: scratch buffers
# --------------------------------------------------------------------------------------------
#: Scratch buffers only the dense (state-major policy tree) evaluation uses.
_DENSE_ONLY: tuple[str, ...] = ("row_tmp", "dense_in", "dense_out", "mask", "M", "qo", "lq")
_DENSE_ONLY += ("val", "tmpv", "X", "X2", "idx", "node", "arange")


def buffer_class(name: str) -> str:
    """Which capacity a scratch buffer is sized for: ``"dense"``, ``"small"`` or ``"all"``."""
    if name in _DENSE_ONLY or name.startswith(("root", "child", "gathered")):
        return "dense"
    if name.startswith("s_"):
        return "small"
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
        out["fp_tmp"] = (max(S), fdt)
        for f, s in enumerate(S):
            out[f"log_prior{f}"] = (s, fdt)
            out[f"new_qs{f}"] = (s, fdt)
            out[f"gathered{f}"] = (s * J, fdt)
        for name in ("vfe", "prev", "dF", "col_c"):
            out[name] = (1, fdt)
        out["active"] = (1, bdt)
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
    props = [ap for ap in plan.agent_propagation if ap is not None]
    if props:
        E = max(ap.max_extra for ap in props)
        out["p_idx"] = (max(*S, E), idt)
        out["p_idx2"] = (E, idt)
        out["p_val"] = (max(*S, E), fdt)
        out["p_val2"] = (E, fdt)
    return {k: v for k, v in out.items() if v[0] > 0}


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
        self.nb = nb
        self.dense = dense
        self.small = small
        self._row_start: dict[int, IndexArray] = {}
        self._views: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}

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
            self.fp_tmp = buf("fp_tmp")
            self.log_prior = [shaped(f"log_prior{f}", s, nb) for f, s in enumerate(S)]
            self.new_qs = [shaped(f"new_qs{f}", s, nb) for f, s in enumerate(S)]
            self.vfe = shaped("vfe", nb)
            self.prev = shaped("prev", nb)
            self.dF = shaped("dF", nb)
            self.col_c = shaped("col_c", nb)
            self.active = shaped("active", nb)
        # posterior over policies, action selection, history encoding
        self.G = shaped("G", P, nb)
        self.x = shaped("x", P, nb)
        self.tmpP = shaped("tmpP", P, nb)
        self.col_a = shaped("col_a", nb)
        self.col_b = shaped("col_b", nb)
        self.marg = buf("marg")
        self.ge = buf("ge")
        self.ibuf = shaped("ibuf", nb)
        self.rand = shaped("rand", nb, 1)
        self.enc = shaped("enc", nb, sum(S))
        self.no_agents = np.zeros(0, dtype=np.intp)
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
        if lp is not None:
            K = len(lp.node_action)
            n = K * lp.kt * lp.kin
            self.l_idx = shaped("l_idx", nb, n)
            self.l_g = shaped("l_g", nb, n)
            self.l_g3 = self.l_g.reshape(nb, K * lp.kt, lp.kin)
            self.l_w = shaped("l_w", nb, n)
            self.l_pred = shaped("l_pred", nb, K * lp.kt)
            self.l_mask = shaped("l_mask", nb, K * lp.kt)
            self.l_nh = shaped("l_nh", nb, K * lp.kt)
            self.l_nh2 = self.l_nh.reshape(nb * K, lp.kt)
            self.l_tmp = shaped("l_tmp", nb * K)
            self.l_tmp2 = self.l_tmp.reshape(nb, K)
            self.l_vals = shaped("l_vals", nb, K) if "l_vals" in flat else self.l_tmp2
            self.l_Q = shaped("l_Q", nb, K * lp.kt * lp.kr)
            self.l_Q3 = self.l_Q.reshape(nb * K, lp.kt, lp.kr)
            self.l_pred2 = self.l_pred.reshape(nb * K, lp.kt)
            self.l_qo = shaped("l_qo", nb, K * lp.kr)
            self.l_qo2 = self.l_qo.reshape(nb * K, lp.kr)
            self.l_lq = shaped("l_lq", nb, K * lp.kr)
            self.l_lq2 = self.l_lq.reshape(nb * K, lp.kr)
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

    def view(self, buffer: np.ndarray, *shape: int) -> np.ndarray:
        """A prefix of one of this block's flat buffers, reshaped (made once, then cached)."""
        key = (id(buffer), shape)
        out = self._views.get(key)
        if out is None:
            out = buffer[: int(np.prod(shape))].reshape(shape)
            self._views[key] = out
        return out

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
        caps = {"all": capacity, "dense": dense_cap, "small": self.small_capacity}
        self._flat: dict[str, np.ndarray] = {}
        self._per_agent: dict[str, int] = {}
        for name, (per, dt) in block_layout(cm, info_gain=info_gain).items():
            self._flat[name] = np.zeros(per * caps[buffer_class(name)], dtype=dt)
            self._per_agent[name] = per
        self._blocks: dict[int, Block] = {}

    @staticmethod
    def bytes_per_agent(cm: CompiledModel, *, info_gain: bool) -> dict[str, int]:
        """Scratch bytes per agent of capacity, by :func:`buffer_class`."""
        out = {"all": 0, "dense": 0, "small": 0}
        for name, (per, dt) in block_layout(cm, info_gain=info_gain).items():
            out[buffer_class(name)] += per * dt.itemsize
        return out

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._flat.values()))

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
                if buffer_class(k) == "all"
                or (buffer_class(k) == "dense" and dense)
                or (buffer_class(k) == "small" and small)
            }
            blk = Block(self._cm, flat, self._per_agent, nb, dense=dense, small=small)
            self._blocks[nb] = blk
        return blk


# --------------------------------------------------------------------------------------------
# the state-major fast path: kernels
# --------------------------------------------------------------------------------------------
def _softmax_columns(x: np.ndarray, col: np.ndarray) -> None:
    """In place: softmax over axis 0 of ``x (K, nb)``; ``col`` is ``(nb,)`` scratch."""
    np.maximum.reduce(x, axis=0, out=col)
    np.subtract(x, col, out=x)
    np.exp(x, out=x)
    np.add.reduce(x, axis=0, out=col)
    np.divide(x, col, out=x)


def _outer_columns(qs: list[np.ndarray], out: np.ndarray, tmp: np.ndarray) -> None:
    """Joint ``(S_0 * ... * S_{F-1}, nb)`` of per-factor ``(S_f, nb)`` (last factor fastest).

    ``out`` and ``tmp`` are buffers of at least that many elements (``tmp`` is needed for F > 2).
    """
    nb = qs[0].shape[1]
    out_flat = out.reshape(-1)
    cur = qs[0]
    size = qs[0].shape[0]
    F = len(qs)
    for f in range(1, F):
        s = qs[f].shape[0]
        dst_buf = out_flat if (F - 1 - f) % 2 == 0 else tmp
        dst = dst_buf[: size * s * nb].reshape(size, s, nb)
        np.multiply(cur[:, None, :], qs[f][None, :, :], out=dst)
        cur = dst.reshape(size * s, nb)
        size *= s
    if F == 1:
        np.copyto(out, qs[0])


def _free_energy_columns(
    qs: list[np.ndarray],
    log_prior: list[np.ndarray],
    lnL: np.ndarray | None,
    *,
    joint: np.ndarray | None,
    out: np.ndarray,
    blk: Block,
    eps: np.ndarray,
) -> None:
    """pymdp's ``calc_free_energy`` per agent into ``out (nb,)``; see :func:`_free_energy`.

    Uses ``blk.fp_tmp``, ``blk.weighted``, ``blk.col_a`` and ``blk.col_b`` as scratch.
    """
    out.fill(0)
    a, b = blk.col_a, blk.col_b
    for q, lp in zip(qs, log_prior, strict=True):
        t = blk.fp_tmp[: q.size].reshape(q.shape)
        np.add(q, eps, out=t)
        np.log(t, out=t)
        np.multiply(q, t, out=t)
        np.add.reduce(t, axis=0, out=a)
        np.multiply(q, lp, out=t)
        np.add.reduce(t, axis=0, out=b)
        np.subtract(a, b, out=a)
        np.add(out, a, out=out)
    if lnL is not None and joint is not None:
        np.multiply(joint, lnL, out=blk.weighted)
        np.add.reduce(blk.weighted, axis=0, out=a)
        np.subtract(out, a, out=out)


def fixed_point_block(
    lnL: np.ndarray,
    log_prior: list[np.ndarray],
    qs: list[np.ndarray],
    blk: Block,
    eps: np.ndarray,
    *,
    num_iter: int,
    dF_tol: float,
) -> None:
    """pymdp's ``run_vanilla_fpi`` for a block, agents last (see :func:`fixed_point`).

    ``lnL``: ``(S_joint, nb)`` log joint likelihood (last factor fastest); ``log_prior[f]`` and the
    output ``qs[f]``: ``(S_f, nb)``. Agents whose free energy changed by less than ``dF_tol`` stop.
    """
    shape = tuple(q.shape[0] for q in qs)
    F = len(qs)
    nb = lnL.shape[1]
    tiny = np.finfo(lnL.dtype).tiny
    for q in qs:
        q.fill(1.0 / q.shape[0])
    joint, joint_new = blk.joint, blk.joint_new
    _outer_columns(qs, joint, blk.X2)
    prev, vfe, dF, col, active = blk.prev, blk.vfe, blk.dF, blk.col_a, blk.active
    _free_energy_columns(qs, log_prior, None, joint=None, out=prev, blk=blk, eps=eps)
    dF.fill(1.0)
    weighted = blk.weighted.reshape(*shape, nb)
    for _ in range(num_iter):
        np.greater_equal(dF, dF_tol, out=active)
        n_active = int(np.count_nonzero(active))
        if n_active == 0:
            break
        np.multiply(lnL, joint, out=blk.weighted)
        for f in range(F):
            qL = blk.new_qs[f]
            others = tuple(i for i in range(F) if i != f)
            np.add.reduce(weighted, axis=others, out=qL)
            denom = blk.fp_tmp[: qL.size].reshape(qL.shape)
            np.maximum(qs[f], tiny, out=denom)
            np.divide(qL, denom, out=qL)
            np.add(qL, log_prior[f], out=qL)
            _softmax_columns(qL, col)
        _outer_columns(blk.new_qs, joint_new, blk.X2)
        _free_energy_columns(blk.new_qs, log_prior, lnL, joint=joint_new, out=vfe, blk=blk, eps=eps)
        np.subtract(prev, vfe, out=blk.col_c)
        np.abs(blk.col_c, out=blk.col_c)
        if n_active == nb:
            for q, new in zip(qs, blk.new_qs, strict=True):
                np.copyto(q, new)
            joint, joint_new = joint_new, joint
            np.copyto(dF, blk.col_c)
            np.copyto(prev, vfe)
        else:
            for q, new in zip(qs, blk.new_qs, strict=True):
                np.copyto(q, new, where=active)
            np.copyto(joint, joint_new, where=active)
            np.copyto(dF, blk.col_c, where=active)
            np.copyto(prev, vfe, where=active)


def _block_likelihood(
    cm: CompiledModel,
    obs: np.ndarray | None,
    soft: list[np.ndarray] | None,
    out: np.ndarray,
    blk: Block,
) -> None:
    """``out (nb, S_joint) = L + eps``: :func:`likelihood` or :func:`soft_likelihood`, plus eps."""
    plan = cm.fast
    M = cm.num_modalities
    tmp = blk.view(blk.q_tmp2, *out.shape) if M > 1 else out
    if soft is not None:
        np.dot(soft[0], cm.A_rows[0], out=out)
        for m in range(1, M):
            np.dot(soft[m], cm.A_rows[m], out=tmp)
            np.multiply(out, tmp, out=out)
    elif obs is None:
        raise ValueError("infer_block needs obs or soft evidence")
    elif plan.A_eps is not None:  # one modality: L + eps is a row of A + eps
        plan.A_eps.take(obs[:, 0], axis=0, out=out)
        return
    else:
        cm.A_rows[0].take(obs[:, 0], axis=0, out=out)
        for m in range(1, M):
            cm.A_rows[m].take(obs[:, m], axis=0, out=tmp)
            np.multiply(out, tmp, out=out)
    np.add(out, plan.eps, out=out)


def infer_block(
    cm: CompiledModel,
    obs: np.ndarray | None,
    prior: list[np.ndarray],
    qs: list[np.ndarray],
    blk: Block,
    *,
    num_iter: int,
    dF_tol: float,
    roots: bool = True,
    soft: list[np.ndarray] | None = None,
) -> None:
    """Posterior of a block of agents from ``obs (nb, M)`` (or soft evidence ``soft[m] (nb,
    O_m)``, see :func:`soft_likelihood`) and ``prior[f] (nb, S_f)``.

    Writes ``qs[f] (nb, S_f)`` (agent-major, e.g. the group's own rows), ``blk.evidence`` (one
    factor) and, if ``roots``, the state-major copy ``blk.roots[f][:S_f]`` that
    :func:`evaluate_block` starts from. Same maths as :func:`infer_states`.
    """
    plan = cm.fast
    nb = blk.nb
    eps = plan.eps
    Sj = plan.num_joint_states
    if cm.num_factors == 1:
        S = cm.num_states[0]
        q = qs[0]
        tmp = blk.view(blk.q_tmp, nb, S)
        _block_likelihood(cm, obs, soft, q, blk)
        np.add(prior[0], eps, out=tmp)
        np.multiply(q, tmp, out=q)
        np.matmul(q, plan.ones_states[0], out=blk.evidence)
        np.divide(q, blk.evidence[:, None], out=q)
        if roots:
            np.copyto(blk.roots[0][:S], q.T)
        return
    L = blk.view(blk.q_tmp, nb, Sj)
    _block_likelihood(cm, obs, soft, L, blk)
    np.log(L, out=L)
    np.copyto(blk.lnL, L.T)
    for f, p in enumerate(prior):
        lp = blk.log_prior[f]
        np.add(p.T, eps, out=lp)
        np.log(lp, out=lp)
    qsT = [root[:-1] for root in blk.roots]
    fixed_point_block(blk.lnL, blk.log_prior, qsT, blk, eps, num_iter=num_iter, dF_tol=dF_tol)
    for q, qT in zip(qs, qsT, strict=True):
        np.copyto(q, qT.T)


def load_roots(qs: list[np.ndarray], blk: Block) -> None:
    """Copy agent-major beliefs ``qs[f] (nb, S_f)`` into the block's state-major roots."""
    for q, root in zip(qs, blk.roots, strict=True):
        np.copyto(root[:-1], q.T)


def _joint_states(
    cm: CompiledModel, depth: FastDepth, children: list[np.ndarray], blk: Block
) -> np.ndarray:
    """Joint predicted states ``(S_joint, J * nb)`` of a depth's joint nodes."""
    nb = blk.nb
    J = depth.num_joint
    if cm.num_factors == 1:
        return children[0][:-1].reshape(cm.num_states[0], J * nb)
    per_factor = []
    for f, (child, nodes) in enumerate(zip(children, depth.joint_nodes, strict=True)):
        S = cm.num_states[f]
        states = child[:-1].reshape(S, depth.num_nodes[f], nb)
        if nodes is not None:
            gathered = blk.gathered[f][: S * J * nb].reshape(S, J, nb)
            states.take(nodes, axis=1, out=gathered)
            states = gathered
        per_factor.append(states)
    F = cm.num_factors
    cur = per_factor[0]
    size = cur.shape[0]
    for f in range(1, F):
        s = cm.num_states[f]
        dst_buf = blk.X if (F - 1 - f) % 2 == 0 else blk.X2
        dst = dst_buf[: size * s * J * nb].reshape(size, s, J, nb)
        np.multiply(cur[:, None], per_factor[f][None], out=dst)
        cur = dst.reshape(size * s, J, nb)
        size *= s
    return cur.reshape(size, J * nb)


def _node_values(
    plan: FastPlan,
    X: np.ndarray,
    blk: Block,
    out: np.ndarray,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """Utility plus information gain of joint states ``X (S_joint, W)`` into ``out (1, W)``."""
    S, W = X.shape
    if use_utility:
        np.matmul(plan.utility_row, X, out=out)
    else:
        out.fill(0)
    if not use_info_gain:
        return
    mask = blk.mask[: S * W].reshape(S, W)
    M_rows = blk.M[: (S + 1) * W].reshape(S + 1, W)
    M = M_rows[:S]
    np.greater(X, plan.threshold, out=mask)
    np.multiply(X, mask, out=M)
    tmpv = blk.tmpv[:W].reshape(1, W)
    np.matmul(plan.neg_entropy_row, M, out=tmpv)
    np.add(out, tmpv, out=out)
    n_out = plan.num_outcomes
    qo = blk.qo[: n_out * W].reshape(n_out, W)
    lq = blk.lq[: n_out * W].reshape(n_out, W)
    om = plan.outcome_map
    if om is None or W < SMALL_WIDTH:
        np.matmul(plan.A_joint, M, out=qo)
    elif isinstance(om, Diagonals):
        apply_diagonals(om, M, qo, lq)
    else:
        M_rows[S].fill(0)
        apply_row_map(om, M_rows, qo, blk.row_tmp)
    np.add(qo, plan.eps, out=lq)
    np.log(lq, out=lq)
    np.multiply(lq, qo, out=lq)
    np.matmul(plan.ones_outcomes, lq, out=tmpv)
    np.subtract(out, tmpv, out=out)


def evaluate_block(
    cm: CompiledModel,
    blk: Block,
    *,
    use_utility: bool,
    use_info_gain: bool,
    gamma: float | np.ndarray,
) -> None:
    """``G`` and ``q_pi`` ``(P, nb)`` into ``blk.G`` and ``blk.x`` from the beliefs ``blk.roots``.

    Same maths as :func:`evaluate_policies` followed by :func:`policy_posterior`; the first depth's
    predicted states stay in ``blk.children[0]`` for :func:`prior_block`.
    """
    plan = cm.fast
    nb = blk.nb
    parents = blk.roots
    for root in parents:
        root[-1].fill(0)
    prev_nodes = [1] * cm.num_factors
    last = len(plan.depths) - 1
    for t, depth in enumerate(plan.depths):
        children = blk.children[t]
        for f, prop in enumerate(depth.propagation):
            child = children[f]
            if isinstance(prop, RowMap):
                apply_row_map(prop, parents[f], child[:-1], blk.row_tmp)
            else:
                S = cm.num_states[f]
                apply_dense_propagation(
                    prop,
                    parents[f][:-1].reshape(S, prev_nodes[f], nb),
                    child[:-1].reshape(S, depth.num_nodes[f], nb),
                    blk.dense_in,
                    blk.dense_out,
                )
            if t < last:
                child[-1].fill(0)
        X = _joint_states(cm, depth, children, blk)
        W = X.shape[1]
        direct = t == 0 and depth.policy_joint is None
        target = blk.G.reshape(1, W) if direct else blk.val[:W].reshape(1, W)
        _node_values(plan, X, blk, target, use_utility=use_utility, use_info_gain=use_info_gain)
        if not direct:
            values = target.reshape(depth.num_joint, nb)
            if depth.policy_joint is None:  # t > 0 here
                np.add(blk.G, values, out=blk.G)
            elif t == 0:
                values.take(depth.policy_joint, axis=0, out=blk.G)
            else:
                values.take(depth.policy_joint, axis=0, out=blk.tmpP)
                np.add(blk.G, blk.tmpP, out=blk.G)
        parents = children
        prev_nodes = list(depth.num_nodes)
    np.multiply(blk.G, gamma, out=blk.x)
    np.add(blk.x, plan.lnE_col, out=blk.x)
    _softmax_columns(blk.x, blk.col_a)


def _select_columns(
    p: np.ndarray,
    blk: Block,
    *,
    deterministic: bool,
    alpha: float,
    rng: np.random.Generator,
    eps: np.ndarray,
) -> np.ndarray:
    """Per column of ``p (K, nb)``, the selected row (:func:`select_deterministic` or
    :func:`select_stochastic` on the transpose); returns ``blk.ibuf``."""
    K, nb = p.shape
    ge = blk.ge[: K * nb].reshape(K, nb)
    if deterministic:
        np.argmax(p, axis=0, out=blk.ibuf)
        return blk.ibuf
    probs = blk.tmpP[:K] if blk.tmpP.shape[0] >= K else np.empty_like(p)
    np.add(p, eps, out=probs)
    np.log(probs, out=probs)
    np.multiply(probs, alpha, out=probs)
    _softmax_columns(probs, blk.col_b)
    np.cumsum(probs, axis=0, out=probs)
    rng.random(out=blk.rand)
    u = blk.rand[:, 0]  # float64, as in select_stochastic
    np.multiply(u, probs[-1], out=u)
    np.less(probs, u, out=ge)
    np.add.reduce(ge, axis=0, dtype=np.intp, out=blk.ibuf)
    np.minimum(blk.ibuf, K - 1, out=blk.ibuf)
    return blk.ibuf


def select_block(
    cm: CompiledModel,
    q_pi: np.ndarray,
    blk: Block,
    actions: np.ndarray,
    *,
    mode: str,
    deterministic: bool,
    alpha: float,
    rng: np.random.Generator,
) -> None:
    """Actions ``(nb, F)`` into ``actions`` from ``q_pi (P, nb)``; same as :func:`select_actions`
    (and the same random numbers, in the same order)."""
    plan = cm.fast
    nb = blk.nb
    if mode == "full":
        idx = _select_columns(
            q_pi, blk, deterministic=deterministic, alpha=alpha, rng=rng, eps=plan.eps
        )
        plan.first_actions.take(idx, axis=0, out=actions)
        return
    for f, onehot_T in enumerate(plan.onehot_T):
        U = onehot_T.shape[0]
        m = blk.view(blk.marg, U, nb)
        if plan.onehot_is_identity[f]:  # policy p starts with action p: the marginal is q_pi
            np.add.reduce(q_pi, axis=0, out=blk.col_a)
            np.divide(q_pi, blk.col_a, out=m)
        else:
            np.matmul(onehot_T, q_pi, out=m)
            np.add.reduce(m, axis=0, out=blk.col_a)
            np.divide(m, blk.col_a, out=m)
        idx = _select_columns(
            m, blk, deterministic=deterministic, alpha=alpha, rng=rng, eps=plan.eps
        )
        actions[:, f] = idx


def prior_block(
    cm: CompiledModel, blk: Block, actions: np.ndarray, prior: list[np.ndarray]
) -> bool:
    """Next prior ``prior[f] (nb, S_f)`` from the first-depth predictions of :func:`evaluate_block`.

    Returns False (and writes nothing) when an action has no first-depth node; the caller then
    propagates with :func:`propagate_per_agent`.
    """
    plan = cm.fast
    nb = blk.nb
    for f, lookup in enumerate(plan.root_node_of_action):
        if lookup.min() < 0 and lookup[actions[:, f]].min() < 0:
            return False
    for f, lookup in enumerate(plan.root_node_of_action):
        S = cm.num_states[f]
        node = blk.node
        lookup.take(actions[:, f], out=node)
        np.multiply(node, nb, out=node)
        np.add(node, blk.arange, out=node)
        idx = blk.idx[: nb * S].reshape(nb, S)
        np.add(node[:, None], blk.state_stride[f], out=idx)
        blk.children[0][f].reshape(-1).take(idx, out=prior[f])
    return True


# --------------------------------------------------------------------------------------------
# per-agent propagation, agent-major
# --------------------------------------------------------------------------------------------
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

    @property
    def max_extra(self) -> int:
        return max((t.shape[1] for t, _, _ in self.extra), default=0)

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
            pad = np.setdiff1d(np.arange(S), used)[: E - len(used)]  # E <= S: enough targets
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


def propagate_agents(
    ap: AgentPropagation, q: np.ndarray, actions: np.ndarray, out: np.ndarray, blk: Block
) -> None:
    """``out[n] = B[:, :, actions[n]] @ q[n]`` for C-contiguous ``q`` and ``out`` ``(nb, S)``."""
    nb, S = q.shape
    flat_q = q.reshape(-1)
    starts = blk.row_start(S)[:, None]
    idx = blk.view(blk.p_idx, nb, S)
    ap.first_src.take(actions, axis=0, out=idx)
    np.add(idx, starts, out=idx)
    flat_q.take(idx, out=out)
    if ap.first_w is not None:
        w = blk.view(blk.p_val, nb, S)
        ap.first_w.take(actions, axis=0, out=w)
        np.multiply(out, w, out=out)
    flat_out = out.reshape(-1)
    for tgt, src, weight in ap.extra:
        E = tgt.shape[1]
        ti, si = blk.view(blk.p_idx, nb, E), blk.view(blk.p_idx2, nb, E)
        vals, cur = blk.view(blk.p_val, nb, E), blk.view(blk.p_val2, nb, E)
        tgt.take(actions, axis=0, out=ti)
        np.add(ti, starts, out=ti)
        src.take(actions, axis=0, out=si)
        np.add(si, starts, out=si)
        flat_q.take(si, out=vals)
        weight.take(actions, axis=0, out=cur)
        np.multiply(vals, cur, out=vals)
        flat_out.take(ti, out=cur)
        np.add(cur, vals, out=cur)
        flat_out[ti] = cur


def propagate_block(
    cm: CompiledModel,
    qs: list[np.ndarray],
    actions: np.ndarray,
    prior: list[np.ndarray],
    blk: Block,
) -> None:
    """Next prior ``prior[f] (nb, S_f) = B[f][:, :, actions[:, f]] @ qs[f]`` per agent."""
    for f, ap in enumerate(cm.fast.agent_propagation):
        a = actions[:, f]
        if ap is None:
            prior[f][...] = propagate_per_agent(cm.transitions[f], qs[f], a)
        else:
            propagate_agents(ap, qs[f], np.ascontiguousarray(a), prior[f], blk)


# --------------------------------------------------------------------------------------------
# the local one-step planner
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

    @property
    def nbytes(self) -> int:
        arrays = [self.node_action, self.pred_src, self.pred_w, self.neg_entropy, self.qo_table]
        arrays += [self.utility_by_source, self.ones_kt, self.ones_kr]
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
    negH = np.zeros((num_out, K, kt), dtype=dtype)
    qo_table = np.zeros((num_out, K, kt, kr), dtype=dtype)
    for o in range(num_out):
        for j in range(K):
            u = int(node_action[j])
            T, R = T_sets[o][j], R_sets[o][j]
            for i, t in enumerate(T):
                for k, (s, weight) in enumerate(sources[u][t]):
                    pred_src[o, j, i, k] = s
                    pred_w[o, j, i, k] = weight
                negH[o, j, i] = neg_entropy[t]
            qo_table[o, j, : len(T), : len(R)] = A[np.ix_(R, T)].T
    dense_B = np.zeros((S, S, len(trans.layers)))
    for u, layers in enumerate(trans.layers):
        for tgt, src, w in layers:
            dense_B[tgt, src, u] += 1.0 if w is None else w.astype(np.float64)
    utility_by_source = np.stack(
        [dense_B[:, :, int(u)].T @ utility.astype(np.float64) for u in node_action], axis=1
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
        neg_entropy=ro(negH.reshape(num_out, -1)),
        qo_table=ro(qo_table.reshape(num_out, -1)),
        utility_by_source=ro(utility_by_source.astype(dtype)),
        ones_kt=ro(np.ones(kt, dtype=dtype)),
        ones_kr=ro(np.ones(kr, dtype=dtype)),
        min_evidence=2.0 * EPS / tau,
    )


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
    and must come from :func:`evaluate_block`.
    """
    lp = cm.local
    assert lp is not None  # the caller checked cm.local
    plan = cm.fast
    vals = G if lp.policy_node is None else blk.l_vals
    if use_utility:
        np.dot(q, lp.utility_by_source, out=vals)
    else:
        vals.fill(0)
    if use_info_gain:
        # Predicted states on the target slots: sum over each target's sources of w * q[src].
        idx, g = blk.l_idx, blk.l_g
        lp.pred_src.take(obs, axis=0, out=idx)
        np.add(idx, blk.row_start(q.shape[1])[:, None], out=idx)
        q.reshape(-1).take(idx, out=g)
        lp.pred_w.take(obs, axis=0, out=blk.l_w)
        np.multiply(g, blk.l_w, out=g)
        pred = blk.l_pred
        if lp.kin == 1:
            np.copyto(pred, g)
        else:
            g3 = blk.l_g3
            np.add(g3[:, :, 0], g3[:, :, 1], out=pred)
            for k in range(2, lp.kin):
                np.add(pred, g3[:, :, k], out=pred)
        np.greater(pred, plan.threshold, out=blk.l_mask)
        np.multiply(pred, blk.l_mask, out=pred)  # the masked predicted states M
        nh = blk.l_nh
        lp.neg_entropy.take(obs, axis=0, out=nh)
        np.multiply(nh, pred, out=nh)
        np.dot(blk.l_nh2, lp.ones_kt, out=blk.l_tmp)
        np.add(vals, blk.l_tmp2, out=vals)
        # Predicted outcomes on the outcome slots, then their entropy.
        lp.qo_table.take(obs, axis=0, out=blk.l_Q)
        # qo[i, r] = sum_t Q[i, t, r] M[i, t] per (agent, node) i; einsum's loop beats a
        # batched matmul of 13 x 5 matrices by ~2x.
        np.einsum("itr,it->ir", blk.l_Q3, blk.l_pred2, out=blk.l_qo2)
        qo, lq = blk.l_qo, blk.l_lq
        np.add(qo, plan.eps, out=lq)
        np.log(lq, out=lq)
        np.multiply(lq, qo, out=lq)
        np.dot(blk.l_lq2, lp.ones_kr, out=blk.l_tmp)
        np.subtract(vals, blk.l_tmp2, out=vals)
    if lp.policy_node is not None:
        vals.take(lp.policy_node, axis=1, out=G)
    bad = blk.l_bad
    np.less(blk.evidence, lp.min_evidence, out=bad)
    if not bad.any():
        return blk.no_agents
    return np.flatnonzero(bad)


def policy_posterior_block(
    cm: CompiledModel, G: np.ndarray, blk: Block, gamma: float | np.ndarray
) -> None:
    """``q_pi = softmax(gamma * G + ln E)`` of agent-major ``G (nb, P)`` into ``blk.x (P, nb)``.

    ``gamma`` may be a 0-d array of the compute dtype (cheaper for tiny blocks).
    """
    np.multiply(G.T, gamma, out=blk.x)
    np.add(blk.x, cm.fast.lnE_col, out=blk.x)
    _softmax_columns(blk.x, blk.col_a)


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
