"""Kernels of the state-major fast path: inference, tree evaluation, selection, prior of a block.

Part of :mod:`edge_agent.aif.kernels`. Each kernel works on one block of agents and writes into the
buffers of a :class:`~edge_agent.aif.kernels.workspace.Block`; they compute the same sums as the
general path in another order and layout, so they agree with it to rounding
(``tests/unit/aif/kernels/test_kernels.py``):

- :func:`infer_block`: state inference, one factor agent-major, several factors state-major;
- :func:`evaluate_block`: the policy tree in a *state-major* layout (agent index last), any
  model, any horizon;
- :func:`select_block`, :func:`prior_block`: action selection and the next prior.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels.columns import softmax_columns
from edge_agent.aif.kernels.control import needs_rng
from edge_agent.aif.kernels.fast_tables import (
    SMALL_WIDTH,
    Diagonals,
    FastDepth,
    FastPlan,
    RowMap,
    apply_dense_propagation,
    apply_diagonals,
    apply_row_map,
)
from edge_agent.aif.kernels.inference import free_energy

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.workspace import Block


# --------------------------------------------------------------------------------------------
# the state-major fast path: kernels
# --------------------------------------------------------------------------------------------
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


def fixed_point_block(
    cm: CompiledModel,
    lnL: np.ndarray,
    blk: Block,
    *,
    num_iter: int,
    dF_tol: float,
) -> int:
    """pymdp's ``run_vanilla_fpi`` for a block, agents last (see :func:`fixed_point`), every
    factor at once on the stacked beliefs.

    ``lnL``: ``(S_joint, nb)`` log joint likelihood (last factor fastest); the log prior is in
    ``blk.stk_lp``. Returns which of ``blk.stk_q`` holds the posterior. Agents whose free energy
    changed by less than ``dF_tol`` stop. A factor's update ``softmax(E_others[lnL] + ln prior)``
    needs no shift by its maximum: both terms lie in ``[ln eps, 0]`` (``L`` and the prior are
    probabilities), so ``exp`` stays above ``eps^2`` (as on the joint small-block path).

    The joint is the product of the factors' beliefs floored at ``plan.floor``
    (:func:`~edge_agent.aif.kernels.fast_tables.belief_floor`), and a factor's marginal is
    divided by its floored beliefs: the expected log likelihood is that of the floored beliefs,
    within ``|ln eps| (F - 1) max(S_f) floor`` of the exact one (1.3e-13 for the float32
    T-maze; float64 unchanged), and no product is a subnormal float, which x86-64 processors
    compute on slowly.
    """
    plan = cm.fast
    assert plan.marg_T is not None  # several factors: the stacked tables exist
    assert plan.seg_ones is not None
    assert plan.uniform_col is not None
    eps = plan.eps
    nb = lnL.shape[1]
    floor = plan.floor
    Qs, parts, t = blk.stk_q, blk.stk_parts, blk.stk_t
    np.copyto(Qs[0], plan.uniform_col)
    _outer_columns(parts[0], blk.joint, blk.X2)
    # ``blk.weighted``: ``lnL * q(s)`` of the beliefs an iteration starts from, the uniform ones'
    # here, then what the last free energy left (the accepted beliefs' for every agent still
    # iterating; an agent that stopped is computed on but not read).
    np.multiply(lnL, blk.joint, out=blk.weighted)
    joint_new = blk.joint_new
    prev, vfe, dF, d, active = blk.prev, blk.vfe, blk.dF, blk.col_c, blk.active
    free_energy(Qs[0], blk.stk_lp, axis=0, eps=eps, out=prev, work=t)
    # dF starts at 1: every agent takes the first iteration unless dF_tol > 1 (the comparison
    # numpy makes, in the compute dtype).
    all_first = float(lnL.dtype.type(dF_tol)) <= 1.0
    dF.fill(1.0)
    cur = 0
    for it in range(num_iter):
        if it > 0 or not all_first:
            np.greater_equal(dF, dF_tol, out=active)
            n_active = int(np.count_nonzero(active))
            if n_active == 0:
                break
        else:
            n_active = nb
        Q, X = Qs[cur], Qs[1 - cur]
        np.matmul(plan.marg_T, blk.weighted, out=X)  # every factor's marginal of lnL * q(s)
        np.maximum(Q, floor, out=t)  # the beliefs the joint was made of
        np.divide(X, t, out=X)
        np.add(X, blk.stk_lp, out=X)
        np.exp(X, out=X)  # every factor's softmax at once (no shift needed, see above)
        np.matmul(plan.seg_ones, X, out=t)
        np.divide(X, t, out=X)
        np.maximum(X, floor, out=t)
        _outer_columns(blk.stk_t_parts, joint_new, blk.X2)
        # every agent's free energy; leaves lnL * q(s) in blk.weighted, where the next
        # iteration starts from
        free_energy(X, blk.stk_lp, joint_new, lnL, axis=0, eps=eps, out=vfe, work=t,
                    weighted=blk.weighted, accuracy=blk.col_a)
        np.subtract(prev, vfe, out=d)
        np.abs(d, out=d)
        if n_active == nb:
            cur = 1 - cur
            dF, d = d, dF
            prev, vfe = vfe, prev
        else:
            np.copyto(Q, X, where=active)
            np.copyto(dF, d, where=active)
            np.copyto(prev, vfe, where=active)
    return cur


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
        plan.A_eps.take(obs[:, 0], axis=0, out=out, mode="clip")
        return
    else:
        cm.A_rows[0].take(obs[:, 0], axis=0, out=out, mode="clip")
        for m in range(1, M):
            cm.A_rows[m].take(obs[:, m], axis=0, out=tmp, mode="clip")
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
    if soft is None and obs is not None and plan.lnL_T is not None and blk.oidx is not None:
        # A small joint space: the observation's log likelihood is one column of the fused
        # table (bit for bit the product, eps and log below), gathered state-major.
        np.dot(obs, plan.obs_strides, out=blk.oidx)
        plan.lnL_T.take(blk.oidx, axis=1, out=blk.lnL, mode="clip")
    else:
        L = blk.view(blk.q_tmp, nb, plan.num_joint_states)
        _block_likelihood(cm, obs, soft, L, blk)
        np.log(L, out=L)
        np.copyto(blk.lnL, L.T)
    _fixed_point_posterior(cm, prior, qs, blk, num_iter=num_iter, dF_tol=dF_tol, roots=roots)


def _fixed_point_posterior(
    cm: CompiledModel,
    prior: list[np.ndarray],
    qs: list[np.ndarray],
    blk: Block,
    *,
    num_iter: int,
    dF_tol: float,
    roots: bool,
) -> None:
    """Several factors: the posterior ``qs[f] (nb, S_f)`` from the log likelihood in
    ``blk.lnL`` and ``prior[f] (nb, S_f)`` (:func:`fixed_point_block`)."""
    for f, p in enumerate(prior):
        np.copyto(blk.log_prior[f], p.T)
    np.add(blk.stk_lp, cm.fast.eps, out=blk.stk_lp)
    np.log(blk.stk_lp, out=blk.stk_lp)
    cur = fixed_point_block(cm, blk.lnL, blk, num_iter=num_iter, dF_tol=dF_tol)
    for q, root, part in zip(qs, blk.roots, blk.stk_parts[cur], strict=True):
        np.copyto(q, part.T)
        if roots:
            np.copyto(root[:-1], part)


def infer_block_log_likelihood(
    cm: CompiledModel,
    log_lik: np.ndarray,
    prior: list[np.ndarray],
    qs: list[np.ndarray],
    blk: Block,
    *,
    num_iter: int,
    dF_tol: float,
) -> None:
    """:func:`infer_block` of a model of several factors from each agent's own log likelihood
    ``log_lik (nb, S_joint)`` (``ln(L + eps)``, e.g. under the agent's own learned ``A``) instead
    of ``cm``'s: the same fixed-point iteration (pymdp's vanilla one, every agent stopping when
    its own free energy settles), state-major. Writes ``qs[f] (nb, S_f)``."""
    np.copyto(blk.lnL, log_lik.T)
    _fixed_point_posterior(cm, prior, qs, blk, num_iter=num_iter, dF_tol=dF_tol, roots=False)


def surprise_block(cm: CompiledModel, blk: Block, out: np.ndarray) -> None:
    """Each agent's surprise ``-ln p(o)`` (nats) of the observation :func:`infer_block` just
    inferred from, under its prior predictive, into ``out (nb,)``: ``p(o) = sum_s (L(o|s) + eps)
    prod_f (prior_f(s_f) + eps)``, the normaliser of the inference (one factor: the evidence it
    divided by; several: from the log likelihood and log prior it left state-major, summed over
    the joint states in ``blk.weighted``, free after the fixed point)."""
    if cm.num_factors == 1:
        np.copyto(out, blk.evidence)
    else:
        S, nb = cm.num_states, blk.nb
        F = len(S)
        joint = blk.weighted.reshape(*S, nb)  # sum_f ln(prior_f + eps), last factor fastest
        for f, lp in enumerate(blk.log_prior):
            shape = [1] * F + [nb]
            shape[f] = S[f]
            if f == 0:
                np.copyto(joint, lp.reshape(shape))
            else:
                np.add(joint, lp.reshape(shape), out=joint)
        np.add(blk.weighted, blk.lnL, out=blk.weighted)
        np.exp(blk.weighted, out=blk.weighted)
        np.sum(blk.weighted, axis=0, out=out)
    np.maximum(out, np.finfo(out.dtype).tiny, out=out)  # eps^(F+1) may underflow float32
    np.log(out, out=out)
    np.negative(out, out=out)


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
    floor = cm.fast.floor if cm.fast.floor_predictions else None
    for f, (child, nodes) in enumerate(zip(children, depth.joint_nodes, strict=True)):
        # In float32, floored before the product as in the fixed point (no subnormal joint
        # states): a joint state's prediction moves by at most about F floor, so the utility by
        # that times the sum of |utility| over joint states, and the information gain only
        # where a prediction lies that close to pymdp's threshold (exp(-16)).
        S = cm.num_states[f]
        K = depth.num_nodes[f]
        states = child[:-1].reshape(S, K, nb)
        if nodes is not None:
            gathered = blk.view(blk.gathered[f], S, J, nb)
            states.take(nodes, axis=1, out=gathered, mode="clip")
            if floor is not None:
                np.maximum(gathered, floor, out=gathered)
            states = gathered
        elif floor is not None:  # the joint nodes (K = J) or one node that broadcasts (K = 1)
            floored = blk.view(blk.gathered[f], S, K, nb)
            np.maximum(states, floor, out=floored)
            states = floored
        per_factor.append(states)
    F = cm.num_factors
    cur = per_factor[0]
    size = cur.shape[0]
    for f in range(1, F):
        s = cm.num_states[f]
        dst_buf = blk.X if (F - 1 - f) % 2 == 0 else blk.X2
        dst = blk.view(dst_buf, size, s, J, nb)
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
    # (the buffers' views come from the block's cache: at 100 agents a reshape costs as much
    # as a pass over the data)
    mask = blk.view(blk.mask, S, W)
    M = blk.view(blk.M, S, W)  # the first S rows of ``M_rows`` below
    np.greater(X, plan.threshold, out=mask)
    np.multiply(X, mask, out=M)
    tmpv = blk.view(blk.tmpv, 1, W)
    np.matmul(plan.neg_entropy_row, M, out=tmpv)
    np.add(out, tmpv, out=out)
    n_out = plan.num_outcomes
    qo = blk.view(blk.qo, n_out, W)
    lq = blk.view(blk.lq, n_out, W)
    om = plan.outcome_map
    if om is None or W < SMALL_WIDTH:
        np.matmul(plan.A_joint, M, out=qo)
    elif isinstance(om, Diagonals):
        apply_diagonals(om, M, qo, lq)
    else:
        M_rows = blk.view(blk.M, S + 1, W)
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
        target = blk.G.reshape(1, W) if direct else blk.view(blk.val, 1, W)
        _node_values(plan, X, blk, target, use_utility=use_utility, use_info_gain=use_info_gain)
        if not direct:
            values = target.reshape(depth.num_joint, nb)
            if depth.policy_joint is None:  # t > 0 here
                np.add(blk.G, values, out=blk.G)
            elif t == 0:
                values.take(depth.policy_joint, axis=0, out=blk.G, mode="clip")
            else:
                values.take(depth.policy_joint, axis=0, out=blk.tmpP, mode="clip")
                np.add(blk.G, blk.tmpP, out=blk.G)
        parents = children
        prev_nodes = list(depth.num_nodes)
    np.multiply(blk.G, gamma, out=blk.x)
    np.add(blk.x, plan.lnE_col, out=blk.x)
    softmax_columns(blk.x, blk.col_a, floor=plan.exp_floor)


def _select_columns(
    p: np.ndarray,
    blk: Block,
    *,
    deterministic: bool,
    alpha: float,
    rng: np.random.Generator | None,
    eps: np.ndarray,
) -> np.ndarray:
    """Per column of ``p (K, nb)``, the selected row (:func:`select_deterministic` or
    :func:`select_stochastic` on the transpose); returns ``blk.ibuf``."""
    if deterministic:
        p.argmax(axis=0, out=blk.ibuf)  # np.argmax without its Python wrapper
        return blk.ibuf
    K, nb = p.shape
    ge = blk.ge[: K * nb].reshape(K, nb)
    probs = blk.tmpP[:K] if blk.tmpP.shape[0] >= K else np.empty_like(p)
    np.add(p, eps, out=probs)
    np.log(probs, out=probs)
    np.multiply(probs, alpha, out=probs)
    softmax_columns(probs, blk.col_b)
    np.cumsum(probs, axis=0, out=probs)
    needs_rng(rng).random(out=blk.rand)
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
    rng: np.random.Generator | None,
) -> None:
    """Actions ``(nb, F)`` into ``actions`` from ``q_pi (P, nb)``; same as :func:`select_actions`
    (and the same random numbers, in the same order; ``rng`` may be ``None`` when
    ``deterministic``)."""
    plan = cm.fast
    nb = blk.nb
    if mode == "full":
        idx = _select_columns(
            q_pi, blk, deterministic=deterministic, alpha=alpha, rng=rng, eps=plan.eps
        )
        plan.first_actions.take(idx, axis=0, out=actions, mode="clip")
        return
    for f, onehot_T in enumerate(plan.onehot_T):
        U = onehot_T.shape[0]
        if U == 1 and deterministic:  # an uncontrolled factor (a draw would still be made)
            actions[:, f] = 0
            continue
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
        lookup.take(actions[:, f], out=node, mode="clip")
        np.multiply(node, nb, out=node)
        np.add(node, blk.arange, out=node)
        idx = blk.idx[: nb * S].reshape(nb, S)
        np.add(node[:, None], blk.state_stride[f], out=idx)
        blk.children[0][f].reshape(-1).take(idx, out=prior[f], mode="clip")
    return True
