"""The joint small-block path: a whole tick of a multi-factor model for a few agents.

Part of :mod:`edge_agent.aif.kernels`. Same maths as the general path (pymdp 0.0.7.1's), on the
stacked-factor tables of a :class:`~edge_agent.aif.kernels.joint_plan.JointPlan`, writing into a
:class:`~edge_agent.aif.kernels.joint_scratch.JointScratch` (nothing is allocated per tick):

* :func:`infer_joint`: pymdp's simultaneous fixed-point iteration with every factor stacked in
  one row, so an iteration is about twenty calls whatever the number of factors; each agent
  stops when pymdp's would;
* :func:`evaluate_joint`: ``G (nb, P)`` from every distinct policy-tree node's predicted joint
  state, in a handful of dense products;
* :func:`posterior_joint`, :func:`select_joint`, :func:`prior_joint`: ``q_pi``, deterministic
  action selection from the action marginals, and the next prior.

Hard observations only: the log likelihood of an observation lies in ``[ln eps, 0]``, so the
factors' softmax needs no shift by its maximum (the arguments stay above ``2 ln eps``).
"""

from __future__ import annotations

import numpy as np

from edge_agent.aif.kernels.inference import free_energy
from edge_agent.aif.kernels.joint_plan import JointPlan
from edge_agent.aif.kernels.joint_scratch import JointScratch


def _outer(ops: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]) -> None:
    for a, b, out in ops:
        np.multiply(a, b, out=out)


def infer_joint(
    plan: JointPlan,
    obs: np.ndarray,
    prior: list[np.ndarray],
    qs: list[np.ndarray],
    sc: JointScratch,
    *,
    num_iter: int,
    dF_tol: float,
) -> None:
    """Posterior ``qs[f] (nb, S_f)`` from hard ``obs (nb, M)`` and ``prior[f] (nb, S_f)``.

    Same maths as :func:`~edge_agent.aif.kernels.inference.infer_states`; leaves the joint
    posterior in ``sc.joint`` and the stacked one in ``sc.Q[sc.current]`` for
    :func:`evaluate_joint` and :func:`prior_joint`.
    """
    np.dot(obs, plan.obs_strides, out=sc.oidx)
    plan.lnL_table.take(sc.oidx, axis=0, out=sc.lnL, mode="clip")
    for part, p in zip(sc.lp_parts, prior, strict=True):
        np.copyto(part, p)
    lp = sc.lp
    np.add(lp, plan.eps, out=lp)
    np.log(lp, out=lp)
    # pymdp starts from uniform beliefs and their free energy without the likelihood term.
    np.dot(lp, plan.uniform_row, out=sc.prev)
    np.subtract(plan.fe_uniform, sc.prev, out=sc.prev)
    tol = float(plan.dtype.type(dF_tol))  # the comparison numpy makes, in the compute dtype
    if not tol <= 1.0:  # dF starts at 1: no iteration at all
        np.copyto(sc.Q[0], plan.uniform_row)
        np.copyto(sc.joint, plan.uniform_joint)
        _copy_out(sc, 0, qs)
        return
    # dF starts at 1 >= tol: every agent takes the first iteration (from the uniform beliefs,
    # which it does not need to read), and dF is its change.
    if sc.nb == 1:
        cur = _iterate_one(plan, sc, num_iter, tol)
    else:
        cur = _iterate_block(plan, sc, num_iter, tol)
    _copy_out(sc, cur, qs)


def _update(plan: JointPlan, sc: JointScratch, cur: int, first: bool) -> None:
    """One fixed-point update of every agent's beliefs ``sc.Q[cur]`` into ``sc.Q[1 - cur]``:
    the new beliefs, their joint, marginals (``sc.R``) and free energy terms (``sc.ent``)."""
    X = sc.Q[1 - cur]
    if first:  # uniform beliefs: the mean over the other factors
        np.dot(sc.lnL, plan.M_avg, out=X)
    else:
        np.divide(sc.marg, sc.Q[cur], out=X)
    np.add(X, sc.lp, out=X)
    np.exp(X, out=X)  # softmax of every factor at once: arguments in [2 ln eps, 0]
    np.dot(X, plan.seg_ones, out=sc.Z)
    np.divide(X, sc.Z, out=X)
    for a, b, out in sc.outer[1 - cur]:  # the joint (_outer, inlined: once per iteration)
        np.multiply(a, b, out=out)
    np.multiply(sc.lnL, sc.joint, out=sc.W)
    np.dot(sc.W, plan.M_ext, out=sc.R)  # every factor's marginal, and the total
    # the free energy's complexity (its accuracy is the total: the caller subtracts it)
    free_energy(X, sc.lp, axis=1, eps=plan.eps, out=sc.ent, work=sc.t)


def _iterate_one(plan: JointPlan, sc: JointScratch, num_iter: int, tol: float) -> int:
    """The iterations of one agent (the free energy's bookkeeping in Python floats); returns
    which of ``sc.Q`` holds the posterior."""
    cur, prev, dF = 0, float(sc.prev[0]), 1.0
    for it in range(num_iter):
        if not dF >= tol:
            break
        _update(plan, sc, cur, it == 0)
        vfe = float(sc.ent[0]) - float(sc.total[0])
        dF, prev, cur = abs(prev - vfe), vfe, 1 - cur
    return cur


def _iterate_block(plan: JointPlan, sc: JointScratch, num_iter: int, tol: float) -> int:
    """The iterations of a block: each agent stops when its own free energy settles (pymdp's
    loop per agent); returns which of ``sc.Q`` holds the posterior."""
    nb = sc.nb
    prev, vfe, dF, d = sc.prev, sc.vfe, sc.dF, sc.d
    cur = 0
    stale = False  # the joint is not that of the accepted beliefs (some agents stopped early)
    for it in range(num_iter):
        n_active = nb
        if it > 0:
            np.greater_equal(dF, tol, out=sc.active)
            n_active = int(np.add.reduce(sc.active, dtype=np.intp))  # count_nonzero's count
            if n_active == 0:
                break
        _update(plan, sc, cur, it == 0)
        np.subtract(sc.ent, sc.total, out=vfe)
        np.subtract(prev, vfe, out=d)
        np.abs(d, out=d)
        if n_active == nb:  # every agent takes the new values: swap buffers, copy nothing
            cur = 1 - cur
            dF, d = d, dF
            prev, vfe = vfe, prev
        else:
            np.copyto(sc.Q[cur], sc.Q[1 - cur], where=sc.active_col)
            np.copyto(dF, d, where=sc.active)
            np.copyto(prev, vfe, where=sc.active)
            stale = True
    if stale:
        _outer(sc.outer[cur])
    return cur


def _copy_out(sc: JointScratch, cur: int, qs: list[np.ndarray]) -> None:
    sc.current = cur
    for q, part in zip(qs, sc.parts[cur], strict=True):
        np.copyto(q, part)


def evaluate_joint(
    plan: JointPlan,
    sc: JointScratch,
    G: np.ndarray,
    *,
    use_utility: bool,
    use_info_gain: bool,
) -> None:
    """``G (nb, P)`` from the posterior :func:`infer_joint` left in the scratch.

    Same maths as :func:`~edge_agent.aif.kernels.control.evaluate_policies`: per node, utility
    plus ``M . negH - H[q(o)]`` with ``M`` the predicted joint state above pymdp's threshold.
    """
    vals = G if sc.vals is None else sc.vals
    np.dot(sc.Q[sc.current], plan.B_nodes, out=sc.PF)  # every factor's nodes
    for part, nodes, out in sc.gather:
        part.take(nodes, axis=1, out=out, mode="clip")
    _outer(sc.pred_ops)  # the nodes' joint states
    if use_utility:
        np.dot(sc.pred_rows, plan.utility, out=sc.util_rows)
    if use_info_gain:
        np.greater(sc.pred, plan.threshold, out=sc.mask)
        np.multiply(sc.pred, sc.mask, out=sc.M)
        np.dot(sc.M_rows, plan.AT_ext, out=sc.QO)  # joint outcomes, then M . negH
        lq = sc.LQ
        np.add(sc.qo, plan.eps, out=lq)
        np.log(lq, out=lq)
        np.multiply(lq, sc.qo, out=lq)
        np.dot(lq, plan.ones_outcomes, out=sc.H_rows)
        if use_utility:
            np.add(sc.util, sc.negH, out=vals)
        else:
            np.copyto(vals, sc.negH)
        np.subtract(vals, sc.H, out=vals)
    elif use_utility:
        np.copyto(vals, sc.util)
    else:
        vals.fill(0)
    if sc.vals is not None:
        assert plan.node_policy is not None  # vals exists for it
        np.dot(vals, plan.node_policy, out=G)


def posterior_joint(
    plan: JointPlan, G: np.ndarray, q_pi: np.ndarray, sc: JointScratch, gamma: np.ndarray
) -> None:
    """``q_pi = softmax(gamma * G + ln E)`` per agent, ``(nb, P)`` agent-major."""
    np.multiply(G, gamma, out=q_pi)
    np.add(q_pi, plan.lnE, out=q_pi)
    np.maximum.reduce(q_pi, axis=1, keepdims=True, out=sc.col)
    np.subtract(q_pi, sc.col, out=q_pi)
    np.exp(q_pi, out=q_pi)
    np.dot(q_pi, plan.ones_policies, out=sc.col)
    np.divide(q_pi, sc.col, out=q_pi)


def select_joint(plan: JointPlan, q_pi: np.ndarray, sc: JointScratch, actions: np.ndarray) -> None:
    """Deterministic actions ``(nb, F)`` from the action marginals of ``q_pi (nb, P)``: the most
    probable action of each factor (pymdp's ``sample_action``, marginal mode)."""
    np.dot(q_pi, plan.onehot_pad, out=sc.marg_pad)
    if actions.dtype == np.intp:  # np.argmax without its Python wrapper
        sc.marg3.argmax(axis=2, out=actions)
    else:
        sc.marg3.argmax(axis=2, out=sc.ibuf)
        np.copyto(actions, sc.ibuf)


def prior_joint(
    plan: JointPlan, sc: JointScratch, actions: np.ndarray, prior: list[np.ndarray]
) -> None:
    """Next prior ``prior[f] (nb, S_f) = B[f][:, :, actions[:, f]] @ qs[f]`` of the beliefs
    :func:`infer_joint` left in the scratch."""
    if sc.nb == 1:  # one agent: a product per factor beats index arithmetic
        for f, (p, q) in enumerate(zip(prior, sc.parts[sc.current], strict=True)):
            np.dot(q[0], plan.BT[f][int(actions[0, f])], out=p[0])
        return
    np.dot(sc.Q[sc.current], plan.BS, out=sc.PB)
    actions.take(plan.prior_factor, axis=1, out=sc.pidx, mode="clip")
    np.multiply(sc.pidx, plan.prior_stride, out=sc.pidx)
    np.add(sc.pidx, sc.prior_base, out=sc.pidx)
    sc.PB_flat.take(sc.pidx, out=sc.prior, mode="clip")
    for p, part in zip(prior, sc.prior_parts, strict=True):
        np.copyto(p, part)
