"""Batched Active Inference kernels: pure functions on ``(n_agents, ...)`` arrays.

Every function here takes all its inputs as arguments and returns new arrays; no I/O, no clock,
no logging, no Python loop over agents (loops run over factors, modalities, policy-tree depths and
action values, which are model constants). The maths is pymdp 0.0.7.1's (see
:mod:`edge_agent.aif.reference`), rearranged for batches:

* single-factor inference ``softmax(ln(L + eps) + ln(prior + eps))`` is computed as the
  equivalent normalised product ``(L + eps) * (prior + eps) / Z``;
* multi-factor inference runs pymdp's simultaneous fixed-point updates with a per-agent
  convergence mask, so each agent stops exactly when pymdp would;
* expected free energy is evaluated on a policy *tree*: policies sharing a prefix share the
  predicted states of that prefix, and each factor is propagated separately (mean field);
* utility is linear in the joint predicted state, ``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``,
  and the information gain is ``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's
  ``exp(-16)`` state threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference import EPS, EXP_M16
from edge_agent.errors import ModelError
from edge_agent.quant import LogU8, QuantizedModel, SparseColumns, decode_log_u8

#: Joint outcome x joint state tables larger than this are refused (memory of the info gain).
MAX_JOINT_TABLE = 1 << 24

IntArray = NDArray[np.int64]


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
    layers: tuple[tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], ...], ...]  # [u][layer]
    full_first: tuple[bool, ...]  # [u]: first layer's targets are exactly 0..S-1 in order

    @property
    def nbytes(self) -> int:
        total = 0
        for per_u in self.layers:
            for tgt, src, w in per_u:
                total += tgt.nbytes + src.nbytes + (w.nbytes if w is not None else 0)
        return total


Transition = DenseTransition | SparseTransition


def make_transition(
    B: np.ndarray | LogU8 | SparseColumns, dtype: type[np.floating]
) -> Transition:
    """Compile one factor's transitions from a dense float table or a quantized one."""
    if isinstance(B, LogU8):
        B = decode_log_u8(B)
    if isinstance(B, np.ndarray):
        return DenseTransition(BT=np.ascontiguousarray(B.transpose(2, 1, 0), dtype=dtype))
    S = B.num_states
    k, _, U = B.index.shape
    weights = np.ones((k, S, U)) if B.values is None else decode_log_u8(B.values)
    per_u = []
    full_first = []
    for u in range(U):
        tgt = B.index[:, :, u].astype(np.intp).ravel()
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
        return q @ trans.BT[u]
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
                tuple((int(u), np.flatnonzero(actions == u).astype(np.int64)) for u in np.unique(actions))
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
    for a, c in zip(A_flat, C, strict=True):
        lnC = np.log(_softmax_vec(c) + EPS)
        utility += lnC @ a
    A_joint = np.ones((1, S_joint))
    for a in A_flat:  # joint over modalities, last modality fastest (pymdp's spm_cross order)
        A_joint = (A_joint[:, None, :] * a[None, :, :]).reshape(-1, S_joint)
    neg_entropy = (A_joint * np.log(A_joint + EXP_M16)).sum(axis=0)

    def c(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=dtype)
        out.setflags(write=False)
        return out

    return CompiledModel(
        dtype=np.dtype(dtype),
        num_obs=num_obs,
        num_states=num_states,
        num_controls=num_controls,
        A_rows=tuple(c(a) for a in A_flat),
        transitions=tuple(make_transition(b, dtype) for b in B),
        D=tuple(c(d) for d in D),
        lnE=c(lnE),
        utility=c(utility),
        neg_entropy=c(neg_entropy),
        A_joint_T=c(A_joint.T),
        tree=build_policy_tree(policies, num_controls, dtype),
    )


def _softmax_vec(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


# --------------------------------------------------------------------------------------------
# state inference
# --------------------------------------------------------------------------------------------
def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def likelihood(cm: CompiledModel, obs: np.ndarray) -> np.ndarray:
    """``prod_m A[m][obs[:, m]]`` over the joint state: ``(N, S_joint)``."""
    L = cm.A_rows[0][obs[:, 0]]
    for m in range(1, cm.num_modalities):
        L = L * cm.A_rows[m][obs[:, m]]
    return L


def infer_states(
    cm: CompiledModel,
    obs: np.ndarray,
    prior: list[np.ndarray],
    *,
    num_iter: int,
    dF_tol: float,
) -> list[np.ndarray]:
    """Posterior per factor, ``(N, S_f)`` each, from ``obs (N, M)`` and a prior per factor."""
    L = likelihood(cm, obs)
    if cm.num_factors == 1:
        q = (L + EPS) * (prior[0] + EPS)
        q /= q.sum(axis=1, keepdims=True)
        return [q]
    N = obs.shape[0]
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
        joint = joint[..., None] * q.reshape(q.shape[:-1] + (1,) * (joint.ndim - q.ndim + 1) + q.shape[-1:])
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
    return np.argmax(p, axis=1).astype(np.int64)


def select_stochastic(p: np.ndarray, alpha: float, rng: np.random.Generator) -> IntArray:
    """Sample per row from ``softmax(alpha * ln(p + eps))`` (pymdp's stochastic selection)."""
    probs = softmax_rows(alpha * np.log(p + EPS))
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), p.shape[1] - 1).astype(np.int64)


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
