"""Task utilities and bid costs: batched kernels over the policy tree.

:func:`task_utility` is the utility vector ``U_task`` (per joint state) of a preference for a goal
state, in the form :func:`~edge_agent.aif.kernels.compile_model` uses for ``C``; :func:`task_costs`
the batched bid costs ``cost(n, t) = -max_pi G_t(n, pi)``, the expected free energy of agent
``n``'s best policy if its preferences were task ``t``'s. Pure functions of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.aif.kernels import CompiledModel, DenseTransition
from edge_agent.aif.kernels.compiled import MAX_JOINT_TABLE
from edge_agent.aif.settings import MAX_POLICY_LEN
from edge_agent.arrays import distinct
from edge_agent.errors import InputError

IntArray = NDArray[np.int64]

#: Agents per block of :func:`task_costs` (bounds its ``(block, P, T)`` temporaries).
COST_BLOCK: Final = 256
#: Largest ``P * S`` for which :class:`TaskPreferences` keeps each holder's utility along every
#: policy precomputed (single-factor models); above it, the policy tree is walked every tick.
PRECOMPUTE_MAX: Final = 4096
#: The lowest bid cost any group can compute (:func:`task_costs`), rounded down: ``cost = -max_pi
#: [sum_tau qx . U_task + information gain]``, ``U_task <= 0`` (shifted to a maximum of 0), and
#: one step's information gain is at most the entropy of the predicted outcome, ``ln O_joint``,
#: with ``O_joint <= MAX_JOINT_TABLE`` (``compile_model`` refuses larger tables); at most
#: ``MAX_POLICY_LEN`` steps: ``-8 ln 2**24 = -133.08`` nats. A bid below it is no agent's cost:
#: receivers refuse it. Any cost above it is believable (a receiver knows neither the bidder's
#: beliefs nor its model), so the floor bounds the numbers, not who wins.
MIN_BID_COST: Final = float(-math.ceil(MAX_POLICY_LEN * math.log(MAX_JOINT_TABLE)))
#: Largest factor whose goal distances a group keeps as one table (:func:`goal_distances`:
#: ``S x S`` int16, 128 kB at 256 states); larger factors search per goal.
DISTANCE_TABLE_MAX: Final = 256


# --------------------------------------------------------------------------------------------
# task preferences as utilities
# --------------------------------------------------------------------------------------------
def transition_support(trans: kernels.Transition, num_states: int) -> NDArray[np.bool_]:
    """``reach[s, s2]``: some action moves state ``s`` to ``s2`` with non-zero probability."""
    reach = np.zeros((num_states, num_states), dtype=bool)
    if isinstance(trans, DenseTransition):
        np.any(trans.BT > 0, axis=0, out=reach)
        return reach
    for layers in trans.layers:
        for tgt, src, w in layers:
            keep = slice(None) if w is None else w > 0
            reach[src[keep], tgt[keep]] = True
    return reach


def steps_to_goal(reach: NDArray[np.bool_], goal: int) -> IntArray:
    """Fewest transitions from every state to ``goal`` (breadth-first, over model states).

    States that cannot reach the goal get ``max + 1`` of the reachable ones.
    """
    S = reach.shape[0]
    dist = np.full(S, -1, dtype=np.int64)
    dist[goal] = 0
    frontier = np.zeros(S, dtype=bool)
    frontier[goal] = True
    for level in range(1, S):
        pred = reach[:, frontier].any(axis=1) & (dist < 0)
        if not pred.any():
            break
        dist[pred] = level
        frontier = pred
    dist[dist < 0] = int(dist.max()) + 1
    return dist


def goal_distances(reach: NDArray[np.bool_]) -> NDArray[np.int16]:
    """``dist[s, g]``: :func:`steps_to_goal` ``(reach, g)[s]`` for every goal ``g`` at once (one
    breadth-first search from all goals; ``S x S`` int16, for factors of at most
    :data:`DISTANCE_TABLE_MAX` states). A formation's bids need the utilities of many goals of
    the same factor: one table instead of a search per goal."""
    S = reach.shape[0]
    if S > DISTANCE_TABLE_MAX:
        raise InputError(f"a distance table of {S} states, at most {DISTANCE_TABLE_MAX}")
    step = reach.astype(np.float32)  # counts of at most S paths: exact in float32, and BLAS
    dist = np.full((S, S), -1, dtype=np.int16)
    np.fill_diagonal(dist, 0)
    frontier = np.eye(S, dtype=np.float32)
    for level in range(1, S):
        pred = ((step @ frontier) > 0) & (dist < 0)
        if not pred.any():
            break
        dist[pred] = level
        frontier = pred.astype(np.float32)
    far = dist.max(axis=0) + 1
    unreached = dist < 0
    dist[unreached] = np.broadcast_to(far, dist.shape)[unreached]
    return dist


def task_utilities(
    cm: CompiledModel,
    goal_factor: int,
    goal_states: Sequence[int],
    *,
    scale: float,
    distances: NDArray[np.int16],
) -> NDArray[np.float64]:
    """``(S_joint, G)``: :func:`task_utility` of each of ``goal_states`` of ``goal_factor``
    (equal up to rounding: one matrix product per modality for them all instead of one per
    goal), from the factor's :func:`goal_distances`. A formation's first bids need the
    utilities of some sixty new goals at once."""
    if not 0 <= goal_factor < cm.num_factors:
        raise InputError(f"goal factor {goal_factor} does not exist ({cm.num_factors} factors)")
    states = np.asarray(goal_states, dtype=np.int64)
    S_f = cm.num_states[goal_factor]
    if states.size and not ((states >= 0) & (states < S_f)).all():
        raise InputError(f"goal states {goal_states} are out of range [0, {S_f})")
    d = distances[:, states].astype(np.float64)
    S_joint = int(np.prod(cm.num_states))
    d_joint = d[np.unravel_index(np.arange(S_joint), cm.num_states)[goal_factor]]
    U = np.zeros((S_joint, states.size))
    for A in cm.A_rows:
        a = A.astype(np.float64)
        mass = a.sum(axis=1)[:, None]
        expected = np.divide(
            a @ d_joint, mass, out=np.zeros((a.shape[0], states.size)), where=mass > 0
        )
        lnC = -scale * expected
        lnC -= lnC.max(axis=0)
        lnC -= np.log(np.exp(lnC).sum(axis=0))
        U += a.T @ lnC
    U -= U.max(axis=0)
    return U


def task_utility(
    cm: CompiledModel,
    goal_factor: int,
    goal_state: int,
    *,
    scale: float = 1.0,
    distances: NDArray[np.int16] | None = None,
) -> NDArray[np.float64]:
    """``U_task (S_joint,)``: the utility of a preference for ``goal_state`` of ``goal_factor``.

    The preference over outcomes is ``C_m(o) = -scale * E[d(s) | o]`` per modality, where ``d`` is
    the number of transitions from ``s`` to the goal (:func:`steps_to_goal` on the support of
    ``B``) and the expectation is over the joint states that can produce ``o`` (flat prior).
    It is highest for what the goal state emits and falls off with distance, so even a one-step
    planner sees which way the goal is. ``U = sum_m A_m^T ln softmax(C_m)`` exactly as
    :func:`~edge_agent.aif.kernels.compile_model` turns ``C`` into utility, shifted so that its
    maximum is 0 (a constant shift changes no policy posterior and makes costs comparable
    across tasks). Modalities that carry no information about ``goal_factor`` get a flat ``C``.
    ``distances``: :func:`goal_distances` of ``goal_factor``'s transitions, when the caller
    keeps it (the same result, without a search).
    """
    if not 0 <= goal_factor < cm.num_factors:
        raise InputError(f"goal factor {goal_factor} does not exist ({cm.num_factors} factors)")
    S_f = cm.num_states[goal_factor]
    if not 0 <= goal_state < S_f:
        raise InputError(f"goal state {goal_state} is out of range [0, {S_f})")
    if distances is not None:
        d = distances[:, goal_state].astype(np.float64)
    else:
        reach = transition_support(cm.transitions[goal_factor], S_f)
        d = steps_to_goal(reach, goal_state).astype(np.float64)
    S_joint = int(np.prod(cm.num_states))
    d_joint = d[np.unravel_index(np.arange(S_joint), cm.num_states)[goal_factor]]
    U = np.zeros(S_joint)
    for A in cm.A_rows:
        a = A.astype(np.float64)
        mass = a.sum(axis=1)
        expected = np.divide(a @ d_joint, mass, out=np.zeros(a.shape[0]), where=mass > 0)
        C = -scale * expected
        lnC = C - C.max()
        lnC -= np.log(np.exp(lnC).sum())
        U += lnC @ a
    U -= U.max()
    return U


# --------------------------------------------------------------------------------------------
# utilities along the policy tree
# --------------------------------------------------------------------------------------------
def _joint(states: list[np.ndarray]) -> np.ndarray:
    """``(N, J, S_0 * ... * S_{F-1})`` from per-factor ``(N, J, S_f)`` (last factor fastest)."""
    joint = states[0]
    N, J = joint.shape[:2]
    for q in states[1:]:
        joint = (joint[..., :, None] * q[..., None, :]).reshape(N, J, -1)
    return joint


def tree_joint_states(
    cm: CompiledModel, qs: Sequence[np.ndarray]
) -> Iterator[tuple[np.ndarray, IntArray]]:
    """Per depth of the policy tree: ``(qx (N, J, S_joint), policy_joint (P,))``.

    ``qx[:, j]`` is the predicted joint state of joint node ``j``; policy ``p`` passes through
    node ``policy_joint[p]``. The walk is :func:`~edge_agent.aif.kernels.evaluate_policies`'s.
    """
    N = qs[0].shape[0]
    states: list[np.ndarray] = [np.asarray(q, dtype=cm.dtype)[:, None, :] for q in qs]
    for t, depth in enumerate(cm.tree.depths):
        new_states = []
        for f, trans in enumerate(cm.transitions):
            parents = states[f]
            out = np.empty((N, len(depth.parent[f]), cm.num_states[f]), dtype=cm.dtype)
            for u, nodes in depth.by_action[f]:
                src = parents[:, 0] if t == 0 else parents[:, depth.parent[f][nodes]]
                pred = kernels.propagate(trans, src, u)
                out[:, nodes] = pred[:, None, :] if t == 0 else pred
            new_states.append(out)
        states = new_states
        yield (
            _joint([states[f][:, depth.joint[:, f]] for f in range(cm.num_factors)]),
            (depth.policy_joint),
        )


def policy_utility(cm: CompiledModel, qs: Sequence[np.ndarray], W: np.ndarray) -> np.ndarray:
    """``V[n, p, k] = sum_t qx_t(n, p) . W[:, k]``: utilities ``W (S_joint, K)`` summed along
    every policy of every agent. ``(N, P, K)`` float64."""
    N = qs[0].shape[0]
    V = np.zeros((N, cm.num_policies, W.shape[1]))
    for qx, policy_joint in tree_joint_states(cm, qs):
        V += (qx @ W)[:, policy_joint, :]
    return V


def policy_utility_rows(
    cm: CompiledModel, qs: Sequence[np.ndarray], W_rows: np.ndarray
) -> np.ndarray:
    """``V[n, p] = sum_t qx_t(n, p) . W_rows[n]``: one utility vector per agent. ``(N, P)``."""
    N = qs[0].shape[0]
    V = np.zeros((N, cm.num_policies))
    for qx, policy_joint in tree_joint_states(cm, qs):
        V += np.einsum("njs,ns->nj", qx, W_rows)[:, policy_joint]
    return V


def transpose_apply(trans: kernels.Transition, X: np.ndarray, u: int) -> np.ndarray:
    """``X @ B[:, :, u]`` for rows ``X (k, S)``: each row pulled back one step (``B_u^T x``)."""
    if isinstance(trans, DenseTransition):
        pulled: np.ndarray = X @ trans.BT[u].T
        return pulled
    out = np.zeros_like(X)
    for tgt, src, w in trans.layers[u]:
        contrib = X[:, tgt] if w is None else X[:, tgt] * w
        np.add.at(out.T, src, contrib.T)  # sources repeat: accumulate
    return out


def policy_backward(cm: CompiledModel, W: np.ndarray) -> np.ndarray:
    """``V (P, S)`` with ``V[pi] . q = sum_t qx_t(pi) . W`` for a single-factor model.

    ``V[pi] = B_{u_1}^T (W + B_{u_2}^T (W + ... + B_{u_L}^T W))``: the utility ``W (S,)`` summed
    along policy ``pi``, pulled back to the current state, so that the policy values of any
    belief ``q`` are one product.
    """
    if cm.num_factors != 1:
        raise InputError("policy_backward needs a single-factor model")
    trans = cm.transitions[0]
    policies = cm.tree.policies[:, :, 0]
    P, L = policies.shape
    acc = np.zeros((P, W.shape[0]))
    for t in range(L - 1, -1, -1):
        X = acc + W
        for u in distinct(policies[:, t]):
            rows = policies[:, t] == u
            acc[rows] = transpose_apply(trans, X[rows], int(u))
    return acc


def task_costs(
    cm: CompiledModel,
    qs: Sequence[np.ndarray],
    G: np.ndarray,
    utilities: np.ndarray,
    *,
    base_utility: np.ndarray | None,
    block: int = COST_BLOCK,
) -> NDArray[np.float32]:
    """Bid costs ``(N, T)``: ``-max_pi [G(n, pi) + sum_t qx_t(n, pi) . (U_task - U_base)]``.

    ``qs[f] (N, S_f)`` and ``G (N, P)`` are the agents' current beliefs and expected free energy
    (pymdp's sign, higher is better, as ``AifAgentGroup.G``); ``utilities (S_joint, T)`` one
    :func:`task_utility` per task; ``base_utility`` the model's own ``cm.utility`` when ``G``
    includes utility (``use_utility``), else None. So the cost is minus the value of the agent's
    best policy with its preferences replaced by the task's -- the information gain stays as the
    agent's settings compute it. Lower is better. Batched over agents in blocks of ``block``.
    """
    N = qs[0].shape[0]
    if G.shape != (N, cm.num_policies):
        raise InputError(f"G has shape {G.shape}, expected ({N}, {cm.num_policies})")
    W = utilities.astype(np.float64)
    if base_utility is not None:
        W = W - base_utility.astype(np.float64)[:, None]
    out = np.empty((N, W.shape[1]), dtype=np.float32)
    for start in range(0, N, block):
        sl = slice(start, min(N, start + block))
        V = policy_utility(cm, [q[sl] for q in qs], W)
        V += G[sl, :, None]
        np.negative(V.max(axis=1), out=out[sl], casting="same_kind")
    return out


def select_bids(costs: np.ndarray, k: int) -> tuple[IntArray, IntArray, np.ndarray]:
    """The ``k`` cheapest agents of every task: ``(task_index, agent_pos, cost)`` flat arrays.

    ``costs`` is ``(n_agents, T)``; ``agent_pos`` indexes its rows.
    """
    n, T = costs.shape
    k = min(k, n)
    if k <= 0 or T == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=costs.dtype)
    idx = (
        np.argpartition(costs, k - 1, axis=0)[:k]
        if k < n
        else np.broadcast_to(np.arange(n)[:, None], (n, T))
    )
    task_index = np.broadcast_to(np.arange(T), (k, T)).ravel().astype(np.int64)
    agent_pos = np.ascontiguousarray(idx).ravel().astype(np.int64)
    return task_index, agent_pos, costs[agent_pos, task_index]
