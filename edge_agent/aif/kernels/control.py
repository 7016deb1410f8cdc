"""Expected free energy and policies on the general path: ``G``, ``q_pi``, actions, the next prior.

Part of :mod:`edge_agent.aif.kernels` (agent-major arrays, results allocated; the yardstick of the
fast paths). Expected free energy is evaluated on the policy tree: policies sharing a prefix share
the predicted states of that prefix, and each factor is propagated separately (mean field). Utility
is linear in the joint predicted state, ``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``, and the
information gain is ``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's ``exp(-16)``
state threshold. Action selection is pymdp's ``sample_action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.array_types import IntArray
from edge_agent.aif.kernels.inference import joint_rows, softmax_rows
from edge_agent.aif.kernels.transitions import propagate, propagate_per_agent

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel


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
            qx = joint_rows([states[f][:, depth.joint[:, f]] for f in range(cm.num_factors)])
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


def needs_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng``, or a clear error where stochastic selection got none (deterministic callers may
    pass ``None`` and never import ``numpy.random``)."""
    if rng is None:
        raise ValueError("stochastic action selection needs a numpy.random.Generator, got None")
    return rng


def select_actions(
    cm: CompiledModel,
    q_pi: np.ndarray,
    *,
    mode: str,
    deterministic: bool,
    alpha: float,
    rng: np.random.Generator | None,
) -> IntArray:
    """Actions ``(N, F)`` from the policy posterior, pymdp's ``sample_action``; ``rng`` may be
    ``None`` when ``deterministic``."""
    rng = None if deterministic else needs_rng(rng)
    if mode == "full":
        idx = select_deterministic(q_pi) if rng is None else select_stochastic(q_pi, alpha, rng)
        return cm.tree.policies[idx, 0, :]
    marginals = action_marginals(cm, q_pi)
    cols = [
        select_deterministic(m) if rng is None else select_stochastic(m, alpha, rng)
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
