"""Agents that each infer with their own tables: pure batched float64 kernels.

The kernels of :mod:`edge_agent.aif.kernels` share one compiled model between all agents of a
group. Agents that learn with per-agent counts (``scope = "per_agent"``) each have their own
``A``, ``B``, ``D``: these kernels take the tables with a leading agent axis (``N``, or ``1`` for
a table every agent shares) and follow :class:`~edge_agent.aif.reference.ReferenceAgent`
(pymdp 0.0.7.1) step by step, for ``N`` agents at once: fixed-point state inference with its
free-energy stop per agent, utility and the state information gain over joint outcomes with
pymdp's ``exp(-16)`` threshold, marginal or full action selection.

Shapes: ``A[m]`` ``(N|1, O_m, S)`` over the joint state ``S = S_0 * ... * S_{F-1}`` (C order);
``B[f]`` ``(N|1, S_f, S_f, U_f)``; ``D[f]`` ``(N|1, S_f)``; ``qs[f]`` ``(N, S_f)``; ``obs``
``(N, M)`` int; ``policies`` ``(P, L, F)``. A learned ``B[f]`` may instead be a
:class:`~edge_agent.aif.sparse_transitions.SparseTransitions` (each agent's table on its
support), and a learned ``A[m]`` an :class:`OnSupport` (each agent's table on its prior's
support: :func:`log_likelihood`, :func:`observed_rows` and :func:`agents_likelihood` read it,
:func:`whole_tables` makes a few agents' ``(r, O_m, S)`` for the planning kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.aif import sparse_transitions as sparse
from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.joint_outcomes import JointLayout
from edge_agent.aif.kernels.inference import fixed_point, joint_rows, softmax_rows
from edge_agent.aif.sparse_transitions import SparseTransitions

#: A factor's transitions: ``(N|1, S, S, U)``, or each agent's on its support.
Transitions = np.ndarray | SparseTransitions


class OnSupport(NamedTuple):
    """Each agent's table of one modality kept on its prior's support: ``values`` ``(N, K)``,
    ``cell`` ``(O, S)`` int64, each cell's index into an agent's values, -1 off the support
    (where the table is 0: a cell the prior's support lacks has no count, ever)."""

    values: np.ndarray
    cell: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, O, S)``: the tables' shape, whole."""
        return (len(self.values), *self.cell.shape)

    @property
    def at(self) -> np.ndarray:
        """``(K,)``: each value's flat cell ``o S + s`` (the values are kept in the cells'
        row-major order, :func:`on_support`)."""
        return np.flatnonzero(self.cell.reshape(-1) >= 0)


#: A modality's tables: ``(N|1, O, S)``, or each agent's on its support.
Likelihood = np.ndarray | OnSupport


def on_support(tables: np.ndarray, support: np.ndarray) -> OnSupport:
    """``tables`` ``(N, O, S)`` kept on ``support`` ``(O, S)`` bool (the cells outside it must
    be 0: they are dropped)."""
    flat = support.reshape(-1)
    cell = np.full(flat.shape, -1, dtype=np.int64)
    cell[flat] = np.arange(int(flat.sum()), dtype=np.int64)
    values = np.ascontiguousarray(tables.reshape(len(tables), -1)[:, flat], dtype=np.float64)
    return OnSupport(values, cell.reshape(support.shape))


def whole_tables(a: Likelihood, rows: slice | np.ndarray) -> np.ndarray:
    """``(r, O, S)``: the tables of the agents ``rows`` whole (a copy; a table every agent
    shares, ``(1, O, S)``, as it is)."""
    if not isinstance(a, OnSupport):
        return a if a.shape[0] == 1 else a[rows]
    values = a.values[rows]
    out = np.zeros((len(values), a.cell.size))
    out[:, a.at] = values
    return out.reshape(len(values), *a.cell.shape)


def observed_rows(a: Likelihood, obs_m: np.ndarray) -> np.ndarray:
    """``(N, S)``: each agent's row ``obs_m[n]`` of its table (0 off the support)."""
    n = len(obs_m)
    if not isinstance(a, OnSupport):
        whole: np.ndarray = a[rows_of(a, n), obs_m]
        return whole
    at = a.cell[obs_m]  # (N, S)
    picked = np.take_along_axis(a.values, np.maximum(at, 0), axis=1)
    out: np.ndarray = np.where(at >= 0, picked, 0.0)
    return out


def rows_of(table: np.ndarray, n: int) -> np.ndarray:
    """Index of each agent's table: ``arange(n)`` for per-agent tables, zeros for shared."""
    return np.arange(n) if table.shape[0] == n and n > 1 else np.zeros(n, dtype=np.intp)


def apply_tables(table: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(N, I)``: ``table[n] @ q[n]`` for ``table`` ``(N|1, I, J)`` and ``q`` ``(N, J)``: one
    matrix product for a shared table, one batched product over the agents' own tables (no
    gather, no copy of them)."""
    if table.shape[0] == 1:
        shared: np.ndarray = q @ table[0].T
        return shared
    out: np.ndarray = np.einsum("nij,nj->ni", table, q)
    return out


def agents_of(b: Transitions, sl: slice) -> Transitions:
    """The transitions of the agents ``sl`` (a shared table as it is)."""
    if isinstance(b, SparseTransitions):
        return b._replace(values=b.values[sl])
    return b if b.shape[0] == 1 else b[sl]


def agents_likelihood(A: Sequence[Likelihood], rows: np.ndarray) -> list[np.ndarray]:
    """Each modality's ``A`` of the agents ``rows`` (indices): ``(r, O_m, S)`` for a table each
    agent has its own of (``A[m]`` ``(N, O_m, S)`` or :class:`OnSupport`: a copy of those
    agents', whole), ``(O_m, S)`` for one they share (``(1, O_m, S)``: a view)."""
    return [whole_tables(flat, rows) if isinstance(flat, OnSupport) or len(flat) > 1
            else flat[0] for flat in A]


def log_likelihood(A: Sequence[Likelihood], obs: np.ndarray) -> np.ndarray:
    """``(N, S)``: ``ln(prod_m A[m][o_m] + 1e-16)`` per agent (pymdp's ``spm_log_single``)."""
    n = obs.shape[0]
    lik = np.ones((n, A[0].shape[2]))
    for m, a in enumerate(A):
        lik *= observed_rows(a, obs[:, m])
    out: np.ndarray = np.log(lik + EPS)
    return out


def priors(
    B: Sequence[Transitions], D: Sequence[np.ndarray], qs: Sequence[np.ndarray],
    action: np.ndarray, acted: np.ndarray,
) -> list[np.ndarray]:
    """``B[f][:, :, a_f] @ qs[f]`` for agents that acted, ``D[f]`` for the others. A shared
    ``B`` is applied as one matrix product per action taken (no copy of it per agent)."""
    n = qs[0].shape[0]
    out = []
    for f, (b, d) in enumerate(zip(B, D, strict=True)):
        if isinstance(b, SparseTransitions):
            moved = sparse.apply_each(b, qs[f], action[:, f])
        elif b.shape[0] == 1 and n > 1:
            moved = np.empty_like(qs[f])
            for u in sorted(set(action[:, f].tolist())):
                chosen = action[:, f] == u
                moved[chosen] = qs[f][chosen] @ b[0, :, :, u].T
        else:
            moved = np.einsum("nij,nj->ni", b[rows_of(b, n), :, :, action[:, f]], qs[f])
        out.append(np.where(acted[:, None], moved, d[rows_of(d, n)]))
    return out


def infer_states(
    log_lik: np.ndarray, log_prior: Sequence[np.ndarray], num_states: Sequence[int],
    num_iter: int, dF_tol: float,
) -> list[np.ndarray]:
    """Posteriors ``qs[f]`` ``(N, S_f)``: ``softmax(ln L + ln prior)`` for one factor, else
    pymdp's vanilla fixed-point iteration, each agent stopping when its free energy changes by
    less than ``dF_tol`` (the general path's,
    :func:`~edge_agent.aif.kernels.inference.fixed_point`)."""
    n = log_lik.shape[0]
    if len(num_states) == 1:
        return [softmax_rows(log_lik + log_prior[0])]
    return fixed_point(log_lik.reshape(n, *num_states), list(log_prior), num_iter=num_iter,
                       dF_tol=dF_tol)


def outcome_tables(
    A: Sequence[np.ndarray], outcomes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(A_joint, neg_entropy)``: per agent the joint-outcome likelihood ``(N|1, O, S)`` (last
    modality fastest; ``A[0]`` itself for one modality) and ``sum_o p(o|s) ln(p(o|s) + e^-16)``
    ``(N|1, S)``. ``outcomes`` ``(K, M)`` (from :func:`~edge_agent.aif.joint_outcomes.
    possible_outcomes`): only those rows of ``A_joint``, the same products in the same order
    (the others are zeros)."""
    n = max(a.shape[0] for a in A)
    S = A[0].shape[2]
    out = A[0]
    if len(A) > 1 and outcomes is not None:
        # The shared tables' rows stay (1, K, S) until an agent's own table joins the product.
        out = A[0][:, outcomes[:, 0], :]
        for m, a in enumerate(A[1:], start=1):
            out = out * a[:, outcomes[:, m], :]
    elif len(A) > 1:
        out = np.ones((n, 1, S))
        for a in A:
            out = (out[:, :, None, :] * a[:, None, :, :]).reshape(n, -1, S)
    return out, neg_entropy_rows(out)


class CompactJoint(NamedTuple):
    """The agents' joint-outcome tables on a :class:`~edge_agent.aif.joint_outcomes.
    JointLayout`: ``values`` ``(N, E)`` and ``neg_entropy`` ``(N, S)`` (as
    :func:`outcome_tables`)."""

    values: np.ndarray
    neg_entropy: np.ndarray
    layout: JointLayout


def compact_joint(A: Sequence[np.ndarray], layout: JointLayout) -> CompactJoint:
    """The agents' joint-outcome tables on ``layout`` from their tables ``A[m]`` ``(N|1, O_m,
    S)``, with ``sum_o p(o|s) ln(p(o|s) + e^-16)``."""
    values = None
    for m, index in layout.learned:
        picked = A[m].reshape(A[m].shape[0], -1)[:, index]
        values = picked * layout.shared if values is None else values * picked
    if values is None:
        values = layout.shared[None]
    entropy = np.add(values, EXP_M16)
    np.log(entropy, out=entropy)
    entropy *= values
    return CompactJoint(values, entropy @ layout.to_state, layout)


#: :func:`neg_entropy_rows` works through this many table entries at a time.
ENTROPY_CHUNK = 1 << 16


def neg_entropy_rows(table: np.ndarray) -> np.ndarray:
    """``(N, S)``: ``sum_o p(o|s) ln(p(o|s) + e^-16)`` of ``table`` ``(N, O, S)``, a few
    agents at a time in one scratch of at most :data:`ENTROPY_CHUNK` entries (a per-agent
    table of grid10's, 10^7 entries for 1,000 agents, is read once, with no temporary of its
    size)."""
    n, outcomes, S = table.shape
    out = np.empty((n, S))
    step = max(1, ENTROPY_CHUNK // (outcomes * S))
    scratch = np.empty((min(step, n), outcomes, S))
    for start in range(0, n, step):
        part = table[start : start + step]
        t = scratch[: part.shape[0]]
        np.add(part, EXP_M16, out=t)
        np.log(t, out=t)
        np.multiply(t, part, out=t)
        np.add.reduce(t, axis=1, out=out[start : start + step])
    return out


def moved_by_action(b: Transitions, q: np.ndarray) -> np.ndarray:
    """``(N, U, S)``: ``B[:, :, u] @ q[n]`` for every action ``u`` of one factor: one gather
    on a sparse table, one batched product over the agents' own dense tables, one matrix
    product for a shared one."""
    if isinstance(b, SparseTransitions):
        return sparse.apply_all(b, q)
    if b.shape[0] == 1:  # one product: q (N, S_j) by the table as (S_j, S_i * U)
        S_i, S_j, U = b.shape[1:]
        by_source = b[0].transpose(1, 0, 2).reshape(S_j, S_i * U)
        shared: np.ndarray = (q @ by_source).reshape(-1, S_i, U).transpose(0, 2, 1)
        return shared
    out: np.ndarray = np.einsum("nsju,nj->nus", b, q)
    return out


def _apply(b: Transitions, q: np.ndarray, u: int) -> np.ndarray:
    if isinstance(b, SparseTransitions):
        return sparse.apply_action(b, q, u)
    return apply_tables(b[:, :, :, u], q)


def expected_free_energy(
    qs: Sequence[np.ndarray], A: Sequence[np.ndarray], B: Sequence[Transitions],
    lnC: Sequence[np.ndarray], policies: np.ndarray, *,
    outcomes: tuple[np.ndarray, np.ndarray] | CompactJoint | None, use_utility: bool,
) -> np.ndarray:
    """``G`` ``(N, P)``: utility ``qo . ln softmax(C)`` and (when ``outcomes`` from
    :func:`outcome_tables` are given) the state information gain, summed over each policy's
    steps, with each agent's own tables. One-step policies are evaluated all at once: each
    factor's table applied once per action, the terms of every policy in a few batched
    products."""
    n = qs[0].shape[0]
    P, L, F = policies.shape
    # Utility is linear in the joint state: q . sum_m (ln C_m @ A_m), per agent once a tick.
    utility = None
    if use_utility:
        utility = sum(np.einsum("nos,o->ns", a, ln_c) for a, ln_c in zip(A, lnC, strict=True))
    if L == 1:
        moved = [moved_by_action(B[f], qs[f])[:, policies[:, 0, f]] for f in range(F)]
        q_joint = moved[0]
        for q_f in moved[1:]:  # (N, P, S): the joint over the factors, C order
            q_joint = (q_joint[:, :, :, None] * q_f[:, :, None, :]).reshape(n, P, -1)
        return _policy_terms(q_joint, utility, outcomes)
    G = np.zeros((n, P))
    for p in range(P):
        q: list[np.ndarray] = list(qs)
        for t in range(L):
            q = [_apply(B[f], q[f], int(policies[p, t, f])) for f in range(F)]
            G[:, p] += _policy_terms(joint_rows(q)[:, None, :], utility, outcomes)[:, 0]
    return G


def _policy_terms(
    q_joint: np.ndarray, utility: np.ndarray | None,
    outcomes: tuple[np.ndarray, np.ndarray] | CompactJoint | None,
) -> np.ndarray:
    """``(N, P)``: utility and state information gain of the predicted joint states
    ``q_joint`` ``(N, P, S)`` (a table shared by the agents, ``(1, ...)``: one product)."""
    G = np.zeros(q_joint.shape[:2])
    if utility is not None:
        G += _per_agent_dot(q_joint, utility)
    if isinstance(outcomes, CompactJoint):
        kept = np.where(q_joint > EXP_M16, q_joint, 0.0)
        layout = outcomes.layout
        # Each outcome's entries summed in place (they are outcome by outcome), not a product
        # with a 0/1 (E, K) matrix: E x K multiply-adds a row (7,664 x 256 at the limits world's)
        # for E additions.
        qo = np.add.reduceat(kept[:, :, layout.state_of] * outcomes.values[:, None, :],
                             layout.outcome_start, axis=-1)
        G += _per_agent_dot(kept, outcomes.neg_entropy)
        log_qo = np.add(qo, EPS)
        np.log(log_qo, out=log_qo)
        G -= np.einsum("npo,npo->np", qo, log_qo)
    elif outcomes is not None:
        A_joint, neg_entropy = outcomes
        kept = np.where(q_joint > EXP_M16, q_joint, 0.0)
        if A_joint.shape[0] == 1:
            qo = kept @ A_joint[0].T  # (N, P, O)
        else:
            qo = np.matmul(kept, A_joint.transpose(0, 2, 1))
        G += _per_agent_dot(kept, neg_entropy)
        log_qo = np.add(qo, EPS)
        np.log(log_qo, out=log_qo)
        G -= np.einsum("npo,npo->np", qo, log_qo)
    return G


def _per_agent_dot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(N, P)``: ``q[n, p] . v[n]`` for ``q`` ``(N, P, S)`` and ``v`` ``(N|1, S)``."""
    if v.shape[0] == 1:
        shared: np.ndarray = q @ v[0]
        return shared
    out: np.ndarray = np.einsum("nps,ns->np", q, v)
    return out


def select_actions(
    q_pi: np.ndarray, policies: np.ndarray, num_controls: Sequence[int], *, mode: str,
    deterministic: bool, alpha: float, rng: np.random.Generator | None,
) -> np.ndarray:
    """``(N, F)``: the next action of every agent from its ``q_pi`` (pymdp's
    ``sample_action``: ``marginal`` sums ``q_pi`` per first action of each factor, ``full``
    picks a policy); deterministic: the first maximum, else a draw from
    ``softmax(alpha * ln p)``."""
    n = q_pi.shape[0]
    first = policies[:, 0, :]

    def choose(p: np.ndarray) -> np.ndarray:
        if deterministic:
            best: np.ndarray = np.argmax(p, axis=1)
            return best
        if rng is None:
            raise ValueError("stochastic action selection needs a random generator")
        weights = softmax_rows(np.log(p + EPS) * alpha)
        draws = rng.random((n, 1))
        below = np.asarray((np.cumsum(weights, axis=1) < draws).sum(axis=1))
        chosen: np.ndarray = np.minimum(below, p.shape[1] - 1)
        return chosen

    if mode == "full":
        return np.asarray(first[choose(q_pi)], dtype=np.int64)
    out = np.empty((n, len(num_controls)), dtype=np.int64)
    for f, u in enumerate(num_controls):
        if u == 1 and deterministic:  # one action: nothing to choose (and nothing drawn)
            out[:, f] = 0
            continue
        marginal = q_pi @ np.eye(u)[first[:, f]]
        marginal /= marginal.sum(axis=1, keepdims=True)
        out[:, f] = choose(marginal)
    return out
