"""Task allocation: task preferences and EFE costs (batched kernels), the award rule, the ledger.

Pieces, from the maths up (``docs/coordination.md`` has the protocol around them):

* :func:`task_utility` -- the utility vector ``U_task`` (per joint state) of a preference for a
  goal state, in the form :func:`~edge_agent.aif.kernels.compile_model` uses for ``C``.
* :func:`task_costs` -- batched bid costs: ``cost(n, t) = -max_pi G_t(n, pi)``, the expected free
  energy of agent ``n``'s best policy if its preferences were task ``t``'s.
* :class:`TaskPreferences` -- per-agent replacement of ``C`` for the agents holding a task: the
  group's shared compiled model is untouched; holders get ``Delta G`` added before acting.
* :func:`award` -- the award rule, a pure function of the set of bids.
* :class:`TaskBoard` -- the replicated ledger (tasks, bids, releases, dead sessions): every fact
  merges by a maximum or a union, so nodes that hold the same facts hold the same board, whatever
  the order the facts came in, and compute the same award.
* :class:`Auctioneer` -- one node's bookkeeping around the board: bidding windows on the local
  clock, award changes, claims of peers and the conflicts they reveal, and the metrics.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgpack
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.aif import kernels
from edge_agent.aif.kernels import CompiledModel, DenseTransition
from edge_agent.coordination.messages import (
    DIGEST_BYTES,
    MAX_BIDS_PER_MESSAGE,
    MAX_TASKS_PER_MESSAGE,
    BidColumns,
    Claim,
    Consumed,
    DeadSession,
    Release,
    ReleaseStatus,
    TaskSpec,
    TaskSync,
    Tombstone,
)
from edge_agent.errors import InputError

FloatArray = NDArray[np.floating]
IntArray = NDArray[np.int64]

#: Agents per block of :func:`task_costs` (bounds its ``(block, P, T)`` temporaries).
COST_BLOCK: Final = 256
#: Largest ``P * S`` for which :class:`TaskPreferences` keeps each holder's utility along every
#: policy precomputed (single-factor models); above it, the policy tree is walked every tick.
PRECOMPUTE_MAX: Final = 4096


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


def task_utility(
    cm: CompiledModel, goal_factor: int, goal_state: int, *, scale: float = 1.0
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
    """
    if not 0 <= goal_factor < cm.num_factors:
        raise InputError(f"goal factor {goal_factor} does not exist ({cm.num_factors} factors)")
    S_f = cm.num_states[goal_factor]
    if not 0 <= goal_state < S_f:
        raise InputError(f"goal state {goal_state} is out of range [0, {S_f})")
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
        for u in np.unique(policies[:, t]):
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


# --------------------------------------------------------------------------------------------
# per-agent preferences for the agents holding a task
# --------------------------------------------------------------------------------------------
class TaskPreferences:
    """Which agents of a group hold a task, and their utility override.

    The compiled model's utility is shared by the whole group; a holder's preferences are
    replaced by adding ``Delta G(n, pi) = sum_t qx_t(n, pi) . Delta U_n`` to its ``G`` (with
    ``Delta U_n = U_task - U_base``) and recomputing its ``q_pi``, which is exactly the ``G`` a
    model with the task's ``C`` would give (utility is linear in the predicted joint state).
    Storage: ``slot (N,) int32`` (-1: no task) and a table ``(max_held, S_joint)`` of ``Delta U``
    rows, one per held task.
    """

    def __init__(
        self, group_cm: CompiledModel, n_agents: int, *, use_utility: bool, max_held: int = 256
    ) -> None:
        self.cm = group_cm
        self.n_agents = n_agents
        self.use_utility = use_utility
        S_joint = int(np.prod(group_cm.num_states))
        self.max_held = max(1, min(max_held, n_agents))
        self.slot = np.full(n_agents, -1, dtype=np.int32)
        self.delta = np.zeros((self.max_held, S_joint), dtype=np.float64)
        P = group_cm.num_policies
        self.backward: np.ndarray | None = None
        self._backward_cache: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        if group_cm.num_factors == 1 and P * S_joint <= PRECOMPUTE_MAX:
            self.backward = np.zeros((self.max_held, P, S_joint), dtype=group_cm.dtype)
        self.goal_factor = np.zeros(self.max_held, dtype=np.int64)
        self.goal_state = np.zeros(self.max_held, dtype=np.int64)
        self.deadline = np.zeros(self.max_held, dtype=np.float64)
        self.task_of_slot: list[tuple[str, int] | None] = [None] * self.max_held
        self._free = list(range(self.max_held - 1, -1, -1))
        self.rows: IntArray = np.empty(0, dtype=np.int64)

    @classmethod
    def bytes_for(
        cls, group_cm: CompiledModel, n_agents: int, *, use_utility: bool, max_held: int = 256
    ) -> int:
        """:attr:`nbytes` of preferences for ``n_agents``, before allocating them: one ``int32``
        slot per agent and ``min(max_held, n_agents)`` rows (measured on a one-slot table)."""
        probe = cls(group_cm, 1, use_utility=use_utility, max_held=1)
        per_row = probe.nbytes - probe.slot.nbytes
        return n_agents * probe.slot.itemsize + max(1, min(max_held, n_agents)) * per_row

    @property
    def nbytes(self) -> int:
        """Bytes of the per-agent and per-slot tables (for the memory budget)."""
        arrays: list[np.ndarray] = [
            self.slot,
            self.delta,
            self.goal_factor,
            self.goal_state,
            self.deadline,
        ]
        if self.backward is not None:
            arrays.append(self.backward)
        return int(sum(a.nbytes for a in arrays))

    @property
    def held(self) -> dict[int, tuple[str, int]]:
        """``agent -> (task, epoch)`` for every holder."""
        return {
            int(a): self.task_of_slot[int(self.slot[a])]  # type: ignore[misc]
            for a in self.rows
        }

    def assign(
        self,
        agent: int,
        spec: TaskSpec,
        epoch: int,
        utility: np.ndarray,
        *,
        key: Hashable | None = None,
    ) -> bool:
        """Give ``agent`` the task; False when the table is full (the caller counts it).

        ``key``: tasks with equal keys have equal ``utility`` (e.g. the same goal), so the
        per-policy utilities computed for one are reused for the next (LRU of ``max_held``).
        """
        if not 0 <= agent < self.n_agents:
            raise InputError(f"agent {agent} is out of range [0, {self.n_agents})")
        if self.slot[agent] >= 0:
            self.release(agent)
        if not self._free:
            return False
        s = self._free.pop()
        self.slot[agent] = s
        self.delta[s] = utility - self.cm.utility if self.use_utility else utility
        if self.backward is not None:
            cached = self._backward_cache.get(key) if key is not None else None
            if cached is None:
                cached = policy_backward(self.cm, self.delta[s]).astype(self.backward.dtype)
                if key is not None:
                    self._backward_cache[key] = cached
                    while len(self._backward_cache) > self.max_held:
                        self._backward_cache.popitem(last=False)
            elif key is not None:
                self._backward_cache.move_to_end(key)
            self.backward[s] = cached
        self.goal_factor[s] = spec.goal_factor
        self.goal_state[s] = spec.goal_state
        self.deadline[s] = spec.deadline
        self.task_of_slot[s] = (spec.task, epoch)
        self.rows = np.flatnonzero(self.slot >= 0)
        return True

    def release(self, agent: int) -> tuple[str, int] | None:
        """Take the task away from ``agent``; returns what it held."""
        s = int(self.slot[agent])
        if s < 0:
            return None
        held = self.task_of_slot[s]
        self.task_of_slot[s] = None
        self.slot[agent] = -1
        self._free.append(s)
        self.rows = np.flatnonzero(self.slot >= 0)
        return held

    def adjust(
        self,
        qs: Sequence[np.ndarray],
        G: np.ndarray,
        q_pi: np.ndarray,
        *,
        gamma: float,
        lnE: np.ndarray,
    ) -> None:
        """In place, holders only: ``G += Delta G`` and ``q_pi = softmax(gamma * G + ln E)``.

        ``qs``, ``G`` and ``q_pi`` are the group's arrays after ``infer_policies``.
        """
        rows = self.rows
        if rows.size == 0:
            return
        dG = self.policy_delta([q[rows] for q in qs], rows)
        G_rows = G[rows] + dG
        G[rows] = G_rows
        x = gamma * G_rows + lnE
        q_pi[rows] = kernels.softmax_rows(x)

    def policy_delta(self, qs_rows: Sequence[np.ndarray], rows: IntArray) -> np.ndarray:
        """``Delta G (len(rows), P)`` of holders ``rows`` whose beliefs are ``qs_rows[f]``.

        The piece a fused kernel needs: add it to those agents' ``G`` after evaluating the
        policies and before the policy posterior (see ``docs/coordination.md``).
        """
        slots = self.slot[rows]
        if self.backward is not None:
            out: np.ndarray = np.einsum("ns,nps->np", qs_rows[0], self.backward[slots])
            return out
        return policy_utility_rows(self.cm, qs_rows, self.delta[slots])

    def reached(self, qs: Sequence[np.ndarray], threshold: float) -> IntArray:
        """Holders whose belief in their goal state is at least ``threshold``."""
        rows = self.rows
        if rows.size == 0:
            return rows
        slots = self.slot[rows]
        p = np.zeros(rows.size)
        for f in np.unique(self.goal_factor[slots]):
            sel = self.goal_factor[slots] == f
            p[sel] = qs[int(f)][rows[sel], self.goal_state[slots[sel]]]
        return rows[p >= threshold]

    def expired(self, wall_now: float) -> IntArray:
        """Holders whose task has a deadline that passed."""
        rows = self.rows
        if rows.size == 0:
            return rows
        d = self.deadline[self.slot[rows]]
        return rows[(d > 0) & (d <= wall_now)]


# --------------------------------------------------------------------------------------------
# the award rule
# --------------------------------------------------------------------------------------------
class Bid(NamedTuple):
    task: str
    epoch: int
    node: str
    group: str
    agent: int
    cost: float
    bdseq: int
    bseq: int

    @property
    def holder(self) -> tuple[str, str, int]:
        return (self.node, self.group, self.agent)


def award(open_epochs: Mapping[str, int], bids: Iterable[Bid]) -> dict[str, Bid]:
    """The award rule: a pure function of the set of bids.

    1. Only bids on an open task at its current epoch count.
    2. Per ``(task, epoch, node, group, agent)`` the bid with the largest ``(bdseq, bseq)``
       counts (a re-bid replaces an earlier one); on equal sequence, the lower cost.
    3. Bids are taken in increasing ``(cost, task, node, group, agent)`` order (strings compare
       by code point); a bid wins when its task has no winner yet and its agent holds no task.

    So every agent holds at most one task and every task at most one agent; the result depends
    on the set of bids only, not on their order or duplicates. It is the greedy assignment:
    when every task has at least as many distinct bidders as there are open tasks, every task
    gets an agent.
    """
    best: dict[tuple[str, int, str, str, int], Bid] = {}
    for b in bids:
        if open_epochs.get(b.task) != b.epoch:
            continue
        key = (b.task, b.epoch, b.node, b.group, b.agent)
        cur = best.get(key)
        if cur is None or (b.bdseq, b.bseq, -b.cost) > (cur.bdseq, cur.bseq, -cur.cost):
            best[key] = b
    order = sorted(best.values(), key=lambda b: (b.cost, b.task, b.node, b.group, b.agent))
    out: dict[str, Bid] = {}
    taken: set[tuple[str, str, int]] = set()
    for b in order:
        if b.task in out or b.holder in taken:
            continue
        out[b.task] = b
        taken.add(b.holder)
        if len(out) == len(open_epochs):
            break
    return out


# --------------------------------------------------------------------------------------------
# the replicated ledger
# --------------------------------------------------------------------------------------------
def seq_key(bdseq: int, bseq: int) -> int:
    """``(bdseq, bseq)`` as one int that orders the same way (both are uint32)."""
    return (bdseq << 32) | bseq


class _Intern:
    """Names to dense ids (for vectorised look-ups); ids are local to one board."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def ranks(self) -> NDArray[np.int64]:
        """Rank of every id by its name (code point order)."""
        order = sorted(range(len(self.names)), key=self.names.__getitem__)
        out = np.empty(len(order), dtype=np.int64)
        out[order] = np.arange(len(order))
        return out


class _Growable:
    """A 1-D int64 array that doubles when it fills; unset entries hold ``fill``."""

    def __init__(self, fill: int) -> None:
        self.fill = fill
        self.data = np.full(16, fill, dtype=np.int64)

    def ensure(self, n: int) -> None:
        if n > self.data.size:
            grown = np.full(max(n, 2 * self.data.size), self.fill, dtype=np.int64)
            grown[: self.data.size] = self.data
            self.data = grown


class _SetHash:
    """An order-independent hash of a set of facts, updated in O(1) per added/removed fact:
    the sum of the facts' 128-bit BLAKE2b hashes modulo 2**128."""

    MOD: Final = 1 << 128

    def __init__(self) -> None:
        self.value = 0

    @staticmethod
    def _h(fact: tuple[object, ...]) -> int:
        packed = msgpack.packb(fact, use_bin_type=True)
        return int.from_bytes(hashlib.blake2b(packed, digest_size=16).digest(), "little")

    def add(self, fact: tuple[object, ...]) -> None:
        self.value = (self.value + self._h(fact)) % self.MOD

    def remove(self, fact: tuple[object, ...]) -> None:
        self.value = (self.value - self._h(fact)) % self.MOD


def stable_hash64(fact: tuple[object, ...]) -> int:
    """A 64-bit hash of ``fact`` that is the same on every node (BLAKE2b of its msgpack)."""
    packed = msgpack.packb(fact, use_bin_type=True)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


_MASK64: Final = (1 << 64) - 1
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)
_ODD: Final = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
)


def _splitmix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser, element-wise (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


class _TaskBids:
    """One task's bids at its current epoch: ``holder id -> (cost, seq_key)``."""

    __slots__ = ("cache", "digest", "rows")

    def __init__(self) -> None:
        self.rows: dict[int, tuple[float, int]] = {}
        self.cache: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]] | None = None
        self.digest: int | None = None

    def arrays(self) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
        if self.cache is None:
            n = len(self.rows)
            holders = np.fromiter(self.rows.keys(), dtype=np.int64, count=n)
            values = list(self.rows.values())
            costs = np.fromiter((v[0] for v in values), dtype=np.float64, count=n)
            seqs = np.fromiter((v[1] for v in values), dtype=np.int64, count=n)
            self.cache = (holders, costs, seqs)
        return self.cache


class TaskBoard:
    """The ledger one node keeps of the fleet's auctions. Every fact merges by a maximum or a
    union, so two boards with the same facts are equal, whatever the order the facts came in
    (they compute the same :meth:`award` and have the same :meth:`digest`).

    Facts and how they merge:

    * a task's spec: the spec with the largest :meth:`TaskSpec.order_key`;
    * a task's epoch (``floor``): the largest epoch seen in a spec, a bid or an ``abandoned``
      release (``epoch + 1``); raising it drops every bid of older epochs;
    * closed: per task the largest epoch a ``done``/``expired`` release was for; a task is
      *live* while its floor is above it, and *open* when it is live and has a spec;
    * consumed: per ``(node, group, agent)`` the largest ``(bdseq, bseq)`` of its releases; bids
      up to it no longer count (they are dropped);
    * dead: per node the largest ``bdseq`` known dead (offline will or death); that session's
      bids no longer count (they are dropped);
    * bids: per ``(task, node, group, agent)`` at the task's floor, the largest
      ``(bdseq, bseq)``, then the lowest cost.

    The digest is a set hash over the canonical facts -- live tasks' specs and floors, stored
    bids (which are exactly the valid ones), tombstones, consumed and dead entries -- kept up to
    date in O(1) per change. Bounded: ``max_tasks`` task entries (closed ones are evicted
    first), ``max_bids`` bids, ``max_tombstones``, ``max_consumed`` and ``max_nodes``; what does
    not fit is refused and counted in ``overflow``.
    """

    def __init__(
        self,
        *,
        max_tasks: int = 4096,
        max_bids: int = 1 << 17,
        max_tombstones: int = 1 << 16,
        max_consumed: int = 1 << 16,
        max_nodes: int = 4096,
    ) -> None:
        self.max_tasks = max_tasks
        self.max_bids = max_bids
        self.max_tombstones = max_tombstones
        self.max_consumed = max_consumed
        self.max_nodes = max_nodes
        self.max_holders = max_bids + max_consumed
        self.specs: dict[str, TaskSpec] = {}
        self.floor: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self.bids: dict[str, _TaskBids] = {}
        self.consumed: dict[tuple[str, str, int], int] = {}
        self.dead: dict[str, int] = {}
        self._live: set[str] = set()
        self._hash = _SetHash()
        self._nodes = _Intern()
        self._groups = _Intern()
        self._holders: dict[tuple[int, int, int], int] = {}
        self._holder_tasks: dict[int, set[str]] = {}
        self._holder_node = _Growable(0)
        self._holder_group = _Growable(0)
        self._holder_agent = _Growable(0)
        self._holder_consumed = _Growable(-1)
        self._holder_hash = _Growable(0)
        self._task_hash: dict[str, int] = {}
        self._node_dead = _Growable(-1)
        self.n_bids = 0
        self.version = 0
        self.overflow = 0
        self.stale_bids = 0
        self._award: tuple[int, dict[str, Bid]] = (-1, {})
        self._digest: tuple[int, bytes] = (-1, b"")

    # -- interning ------------------------------------------------------------------------------
    def _node(self, name: str) -> int | None:
        if name not in self._nodes.ids and len(self._nodes.names) >= self.max_nodes:
            self.overflow += 1
            return None
        i = self._nodes(name)
        self._node_dead.ensure(i + 1)
        return i

    def _holder(self, node: str, group: str, agent: int) -> int | None:
        n = self._node(node)
        if n is None:
            return None
        g = self._groups(group)
        key = (n, g, agent)
        h = self._holders.get(key)
        if h is None:
            if len(self._holders) >= self.max_holders:
                self.overflow += 1
                return None
            h = self._holders[key] = len(self._holders)
            signed = np.int64(np.uint64(stable_hash64((node, group, agent))).view(np.int64))
            for arr, value in (
                (self._holder_node, n),
                (self._holder_group, g),
                (self._holder_agent, agent),
                (self._holder_consumed, -1),
                (self._holder_hash, signed),
            ):
                arr.ensure(h + 1)
                arr.data[h] = value
            consumed = self.consumed.get((node, group, agent))
            if consumed is not None:
                self._holder_consumed.data[h] = consumed
        return h

    def _holder_name(self, h: int) -> tuple[str, str, int]:
        return (
            self._nodes.names[self._holder_node.data[h]],
            self._groups.names[self._holder_group.data[h]],
            int(self._holder_agent.data[h]),
        )

    # -- queries --------------------------------------------------------------------------------
    def epoch(self, task: str) -> int | None:
        return self.floor.get(task)

    def is_open(self, task: str) -> bool:
        return task in self._live and task in self.specs

    def open_epochs(self) -> dict[str, int]:
        specs = self.specs
        return {t: self.floor[t] for t in self._live if t in specs}

    def is_dead(self, node: str, bdseq: int) -> bool:
        return self.dead.get(node, -1) >= bdseq

    def bidders(self, task: str, node: str, group: str) -> set[int]:
        """Agents of ``node/group`` with a bid on ``task``."""
        per = self.bids.get(task)
        n, g = self._nodes.ids.get(node), self._groups.ids.get(group)
        if per is None or n is None or g is None:
            return set()
        hn, hg, ha = self._holder_node.data, self._holder_group.data, self._holder_agent.data
        return {int(ha[h]) for h in per.rows if hn[h] == n and hg[h] == g}

    def valid_bids(self, task: str) -> Iterator[Bid]:
        """Bids that count for ``task`` at its current epoch (all the stored ones)."""
        epoch = self.floor.get(task)
        per = self.bids.get(task)
        if epoch is None or per is None:
            return
        for h, (cost, k) in per.rows.items():
            yield Bid(task, epoch, *self._holder_name(h), cost, k >> 32, k & 0xFFFFFFFF)

    def award(self) -> dict[str, Bid]:
        """:func:`award` over the current facts (the same result, vectorised; cached)."""
        version, cached = self._award
        if version == self.version:
            return cached
        open_epochs = self.open_epochs()
        tasks = sorted(t for t in open_epochs if t in self.bids)
        out: dict[str, Bid] = {}
        if tasks:
            parts = [self.bids[t].arrays() for t in tasks]
            sizes = [p[0].size for p in parts]
            pos = np.repeat(np.arange(len(tasks)), sizes)
            holders = np.concatenate([p[0] for p in parts])
            costs = np.concatenate([p[1] for p in parts])
            seqs = np.concatenate([p[2] for p in parts])
            order = np.lexsort(
                (
                    self._holder_agent.data[holders],
                    self._groups.ranks()[self._holder_group.data[holders]],
                    self._nodes.ranks()[self._holder_node.data[holders]],
                    pos,  # tasks are sorted by name, so a position is a rank
                    costs,
                )
            )
            taken: set[int] = set()
            n_tasks = len(tasks)
            pos_l, holders_l = pos[order].tolist(), holders[order].tolist()
            for i, t, h in zip(order.tolist(), pos_l, holders_l, strict=True):
                task = tasks[t]
                if task in out or h in taken:
                    continue
                k = int(seqs[i])
                out[task] = Bid(
                    task,
                    open_epochs[task],
                    *self._holder_name(h),
                    float(costs[i]),
                    k >> 32,
                    k & 0xFFFFFFFF,
                )
                taken.add(h)
                if len(out) == n_tasks:
                    break
        self._award = (self.version, out)
        return out

    def digest(self) -> bytes:
        """16-byte hash of every fact that matters, independent of their order.

        Tasks, tombstones, consumed and dead entries are in a set hash updated on every change;
        bids are hashed per task (vectorised, cached until that task's bids change).
        """
        version, cached = self._digest
        if version == self.version:
            return cached
        total = 0
        for task, per in self.bids.items():
            if per.digest is None:
                per.digest = self._bids_hash(task, per)
            total = (total + per.digest) & _MASK64
        packed = self._hash.value.to_bytes(16, "little") + total.to_bytes(8, "little")
        result = hashlib.blake2b(packed, digest_size=DIGEST_BYTES).digest()
        self._digest = (self.version, result)
        return result

    def _bids_hash(self, task: str, per: _TaskBids) -> int:
        if not per.rows:
            return 0
        th = self._task_hash.get(task)
        if th is None:
            th = self._task_hash[task] = stable_hash64(("task", task))
        holders, costs, seqs = per.arrays()
        x = self._holder_hash.data[holders].view(np.uint64)
        x = x ^ (costs.view(np.uint64) * _ODD[0]) ^ (seqs.view(np.uint64) * _ODD[1])
        x = _splitmix(x ^ np.uint64((th * int(_ODD[2])) & _MASK64))
        return int(x.sum(dtype=np.uint64))

    # -- canonical facts in the digest ----------------------------------------------------------
    def _spec_fact(self, spec: TaskSpec) -> tuple[object, ...]:
        return ("spec", spec.task, *spec.order_key()[1:])

    def _set_live(self, task: str, live: bool) -> None:
        if live == (task in self._live):
            return
        change = self._hash.add if live else self._hash.remove
        change(("floor", task, self.floor[task]))
        spec = self.specs.get(task)
        if spec is not None:
            change(self._spec_fact(spec))
        if live:
            self._live.add(task)
        else:
            self._live.discard(task)

    def _update_live(self, task: str) -> None:
        """Live: not closed at its current epoch. Closed tasks keep their spec and floor (they
        matter only if a larger epoch reopens them) outside the digest."""
        self._set_live(task, self.floor.get(task, -1) > self.closed.get(task, -1))

    # -- merging facts --------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1

    def _remove_bid(self, task: str, per: _TaskBids, h: int) -> None:
        del per.rows[h]
        per.cache = per.digest = None
        self.n_bids -= 1
        tasks = self._holder_tasks.get(h)
        if tasks is not None:
            tasks.discard(task)

    def _drop_bids(self, task: str) -> None:
        per = self.bids.pop(task, None)
        if per is None:
            return
        for h in list(per.rows):
            self._remove_bid(task, per, h)

    def _evict_closed(self) -> None:
        for task in [t for t in self.floor if t not in self._live]:
            del self.floor[task]
            self.specs.pop(task, None)

    def _raise_floor(self, task: str, epoch: int) -> bool:
        cur = self.floor.get(task)
        if cur is not None and epoch <= cur:
            return False
        if cur is None and len(self.floor) >= self.max_tasks:
            self._evict_closed()
        if cur is None and len(self.floor) >= self.max_tasks:
            self.overflow += 1
            return False
        self._drop_bids(task)
        if task in self._live:
            self._hash.remove(("floor", task, cur))
            self._hash.add(("floor", task, epoch))
        self.floor[task] = epoch
        self._update_live(task)
        self._changed()
        return True

    def add_spec(self, spec: TaskSpec) -> bool:
        """Merge a task spec (an announcement, or one part of a sync)."""
        task = spec.task
        changed = self._raise_floor(task, spec.epoch)
        if task not in self.floor:
            return changed  # no room
        cur = self.specs.get(task)
        if cur is None or spec.order_key() > cur.order_key():
            self.specs[task] = spec
            if cur is None or cur.order_key()[1:] != spec.order_key()[1:]:
                if task in self._live:
                    if cur is not None:
                        self._hash.remove(self._spec_fact(cur))
                    self._hash.add(self._spec_fact(spec))
                self._changed()
                changed = True
        return changed

    def _accepts_epoch(self, task: str, epoch: int) -> tuple[bool, bool]:
        """(bids at ``epoch`` can be stored, the floor was raised)."""
        floor = self.floor.get(task)
        if self.closed.get(task, -1) >= epoch or (floor is not None and epoch < floor):
            return False, False
        if floor is None or epoch > floor:
            raised = self._raise_floor(task, epoch)
            return self.floor.get(task) == epoch, raised
        return True, False

    def _insert(self, task: str, per: _TaskBids, h: int, cost: float, key: int) -> bool:
        if key <= self._holder_consumed.data[h]:
            return False
        cur = per.rows.get(h)
        if cur is not None:
            if (cur[1], -cur[0]) >= (key, -cost):
                return False
        else:
            if self.n_bids >= self.max_bids:
                self.overflow += 1
                return False
            self.n_bids += 1
            self._holder_tasks.setdefault(h, set()).add(task)
        per.rows[h] = (cost, key)
        per.cache = per.digest = None
        return True

    def add_bid(self, bid: Bid) -> bool:
        """Merge one bid. False when it changes nothing (stale, invalid, a duplicate)."""
        return self.add_bids(
            bid.node,
            bid.group,
            bid.bdseq,
            bid.bseq,
            [bid.task],
            epochs=[bid.epoch],
            task_index=[0],
            agents=[bid.agent],
            costs=[bid.cost],
        )

    def add_bids(
        self,
        node: str,
        group: str,
        bdseq: int,
        bseq: int,
        tasks: Sequence[str],
        *,
        epochs: Sequence[int],
        task_index: Sequence[int],
        agents: Sequence[int],
        costs: Sequence[float],
    ) -> bool:
        """Merge one node's bid message (columnar, as :class:`TaskBids` carries it)."""
        key = seq_key(bdseq, bseq)
        changed = False
        usable: list[_TaskBids | None] = []
        for task, epoch in zip(tasks, epochs, strict=True):
            # A bid's epoch counts even when the bid does not: floors depend on every bid seen.
            ok, raised = self._accepts_epoch(task, epoch)
            changed |= raised
            usable.append(self.bids.setdefault(task, _TaskBids()) if ok else None)
        node_id = self._node(node)
        if node_id is None or self._node_dead.data[node_id] >= bdseq:
            self.stale_bids += len(task_index)
            return changed
        inserted = False
        for t, agent, cost in zip(task_index, agents, costs, strict=True):
            per = usable[t]
            h = self._holder(node, group, agent) if per is not None else None
            if per is None or h is None or not self._insert(tasks[t], per, h, cost, key):
                self.stale_bids += 1
                continue
            inserted = True
        if inserted:
            self._changed()
        return changed or inserted

    def add_consumed(self, node: str, group: str, agent: int, bdseq: int, bseq: int) -> bool:
        name_key = (node, group, agent)
        key = seq_key(bdseq, bseq)
        cur = self.consumed.get(name_key)
        if cur is not None and cur >= key:
            return False
        if cur is None and len(self.consumed) >= self.max_consumed:
            self.overflow += 1
            return False
        if cur is not None:
            self._hash.remove(("consumed", *name_key, cur))
        self._hash.add(("consumed", *name_key, key))
        self.consumed[name_key] = key
        h = self._holder(node, group, agent)
        if h is not None:
            self._holder_consumed.data[h] = key
            for task in list(self._holder_tasks.get(h, ())):
                per = self.bids[task]
                if per.rows[h][1] <= key:
                    self._remove_bid(task, per, h)
        self._changed()
        return True

    def close(self, task: str, epoch: int) -> bool:
        """Merge a tombstone: ``task`` was done or expired at ``epoch``."""
        cur = self.closed.get(task)
        if cur is not None and cur >= epoch:
            return False
        if cur is None and len(self.closed) >= self.max_tombstones:
            self.overflow += 1
            return False
        if cur is not None:
            self._hash.remove(("closed", task, cur))
        self._hash.add(("closed", task, epoch))
        self.closed[task] = epoch
        if self.floor.get(task, -1) <= epoch:
            self._drop_bids(task)
        self._update_live(task)
        self._changed()
        return True

    def add_release(self, rel: Release) -> bool:
        """Merge a holder's release (its bids are consumed; done/expired close, abandoned
        re-auctions at ``epoch + 1``)."""
        changed = self.add_consumed(rel.node, rel.group, rel.agent, rel.bdseq, rel.bseq)
        if rel.status is ReleaseStatus.ABANDONED:
            changed |= self._raise_floor(rel.task, rel.epoch + 1)
        else:
            changed |= self.close(rel.task, rel.epoch)
        return changed

    def add_dead(self, node: str, bdseq: int) -> list[Bid]:
        """Merge a dead session: its bids stop counting.

        Returns the winning bids it had just before (what the award gave its agents). Turning
        them into ``abandoned`` releases (:func:`abandon`) re-auctions those tasks at the next
        epoch; that is the caller's choice, so the board stays a function of its facts alone.
        """
        cur = self.dead.get(node)
        if cur is not None and cur >= bdseq:
            return []
        node_id = self._node(node)
        if node_id is None:
            return []
        held = [b for b in self.award().values() if b.node == node and b.bdseq <= bdseq]
        if cur is not None:
            self._hash.remove(("dead", node, cur))
        self._hash.add(("dead", node, bdseq))
        self.dead[node] = bdseq
        self._node_dead.data[node_id] = bdseq
        hn = self._holder_node.data
        for task, per in self.bids.items():
            for h in [h for h, (_, k) in per.rows.items() if hn[h] == node_id and k >> 32 <= bdseq]:
                self._remove_bid(task, per, h)
        self._changed()
        return held

    # -- sync -----------------------------------------------------------------------------------
    def sync_parts(self) -> list[TaskSync]:
        """The whole ledger as :class:`TaskSync` parts, each under the message limits."""
        specs = [
            s.model_copy(update={"epoch": self.floor[t]})
            for t, s in self.specs.items()
            if t in self._live
        ]
        closed = [Tombstone(task=t, epoch=e) for t, e in self.closed.items()]
        consumed = [
            Consumed(node=n, group=g, agent=a, bdseq=k >> 32, bseq=k & 0xFFFFFFFF)
            for (n, g, a), k in self.consumed.items()
        ]
        dead = [DeadSession(node=n, bdseq=b) for n, b in self.dead.items()]
        bids = [b for t in self.bids for b in self.valid_bids(t)]
        step = MAX_TASKS_PER_MESSAGE
        n_parts = max(
            1,
            *(math.ceil(len(x) / step) for x in (specs, closed, consumed, dead)),
            math.ceil(len(bids) / MAX_BIDS_PER_MESSAGE),
        )
        parts = []
        for i in range(n_parts):
            sl = slice(i * step, (i + 1) * step)
            chunk = bids[i * MAX_BIDS_PER_MESSAGE : (i + 1) * MAX_BIDS_PER_MESSAGE]
            parts.append(
                TaskSync(
                    tasks=specs[sl],
                    closed=closed[sl],
                    consumed=consumed[sl],
                    dead=dead[sl],
                    bids=bid_columns(chunk),
                )
            )
        return parts

    def merge_sync(self, part: TaskSync) -> tuple[bool, list[Bid]]:
        """Merge one sync part; returns (changed, what newly dead sessions held)."""
        before = self.version
        for spec in part.tasks:
            self.add_spec(spec)
        for tomb in part.closed:
            self.close(tomb.task, tomb.epoch)
        for c in part.consumed:
            self.add_consumed(c.node, c.group, c.agent, c.bdseq, c.bseq)
        held: list[Bid] = []
        for d in part.dead:
            held += self.add_dead(d.node, d.bdseq)
        for bid in bids_from_columns(part.bids):
            self.add_bid(bid)
        return self.version != before, held


def bid_columns(bids: Sequence[Bid]) -> BidColumns:
    """Pack bids of any nodes into a :class:`BidColumns`."""
    if not bids:
        return BidColumns()
    nodes = sorted({b.node for b in bids})
    groups = sorted({b.group for b in bids})
    tasks = sorted({b.task for b in bids})
    ni = {n: i for i, n in enumerate(nodes)}
    gi = {g: i for i, g in enumerate(groups)}
    ti = {t: i for i, t in enumerate(tasks)}
    return BidColumns(
        nodes=nodes,
        groups=groups,
        tasks=tasks,
        task_index=np.array([ti[b.task] for b in bids], "<u2").tobytes(),
        epoch=np.array([b.epoch for b in bids], "<u4").tobytes(),
        node_index=np.array([ni[b.node] for b in bids], "<u2").tobytes(),
        bdseq=np.array([b.bdseq for b in bids], "<u4").tobytes(),
        group_index=np.array([gi[b.group] for b in bids], "<u2").tobytes(),
        agent=np.array([b.agent for b in bids], "<u4").tobytes(),
        cost=np.array([b.cost for b in bids], "<f4").tobytes(),
        bseq=np.array([b.bseq for b in bids], "<u4").tobytes(),
    )


def bids_from_columns(cols: BidColumns) -> Iterator[Bid]:
    if cols.n_bids == 0:
        return
    task = cols.column("task_index").tolist()
    epoch = cols.column("epoch").tolist()
    node = cols.column("node_index").tolist()
    bdseq = cols.column("bdseq").tolist()
    group = cols.column("group_index").tolist()
    agent = cols.column("agent").tolist()
    cost = cols.column("cost").tolist()
    bseq = cols.column("bseq").tolist()
    for i in range(cols.n_bids):
        yield Bid(
            cols.tasks[task[i]],
            epoch[i],
            cols.nodes[node[i]],
            cols.groups[group[i]],
            agent[i],
            cost[i],
            bdseq[i],
            bseq[i],
        )


def abandon(bid: Bid) -> Release:
    """The ``abandoned`` release of a dead session's winning bid (re-auction at epoch + 1)."""
    return Release(
        task=bid.task,
        epoch=bid.epoch,
        node=bid.node,
        group=bid.group,
        agent=bid.agent,
        bdseq=bid.bdseq,
        bseq=bid.bseq,
        status=ReleaseStatus.ABANDONED,
    )


# --------------------------------------------------------------------------------------------
# one node's auction bookkeeping
# --------------------------------------------------------------------------------------------
class AuctionSettings(BaseModel):
    """Task allocation settings of a node (the same on every node of a fleet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(
        1.0,
        gt=0.0,
        le=3600.0,
        description="Bidding window, from when this node first saw a task's epoch.",
    )
    min_bids_per_task: int = Field(
        4, ge=1, le=4096, description="Fewest agents a group bids per task (when it has them)."
    )
    max_bids_per_task: int = Field(
        64, ge=1, le=4096, description="Most agents a group bids per task in one round."
    )
    preference_scale: float = Field(
        1.0, gt=0.0, le=100.0, description="Nats of preference per transition towards a goal."
    )
    done_belief: float | None = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="A holder is done when q(goal state) reaches this; None: only when the "
        "application says so (CoordinationEngine.complete).",
    )
    state_every_s: float = Field(
        1.0, gt=0.0, le=3600.0, description="Period of task_state (digest and claims) messages."
    )
    state_min_interval_s: float = Field(
        0.2, ge=0.0, le=3600.0, description="Least time between two task_state messages."
    )
    sync_after_s: float = Field(
        3.0,
        gt=0.0,
        le=3600.0,
        description="Send a sync when a peer's digest matched none of ours for this long.",
    )
    sync_min_interval_s: float = Field(
        2.0, ge=0.0, le=3600.0, description="Least time between two syncs sent."
    )
    max_held_per_group: int = Field(
        256, ge=1, le=1 << 20, description="Tasks one group's agents can hold at once."
    )
    outbox_class: str = Field(
        "event", min_length=1, max_length=64, description="Outbox class of task messages."
    )
    max_tasks: int = Field(4096, ge=1, le=1 << 20, description="Tasks in the ledger.")
    max_bids: int = Field(1 << 17, ge=1, le=1 << 24, description="Bids in the ledger.")


@dataclass
class _Round:
    """One (task, epoch) as this node saw it."""

    opened: float
    first_award: float | None = None
    last_change: float | None = None
    last_bid: float = -math.inf


@dataclass
class _Conflict:
    detected: float


@dataclass
class AuctionMetrics:
    rounds: int = 0
    reawards: int = 0
    conflicts_detected: int = 0
    conflicts_resolved: int = 0
    resolve_s_total: float = 0.0
    converge_s_total: float = 0.0
    converge_s_max: float = 0.0
    converged_rounds: int = 0


class Auctioneer:
    """One node's view of the auctions around a :class:`TaskBoard` (no I/O, no clock reads:
    every method takes ``now``, the node's monotonic time).

    * A ``(task, epoch)`` round opens when this node first sees it open; its window closes
      ``window_s`` later *on this node's clock*. Winners act only after that.
    * After every change of the board the award is recomputed (:meth:`update`); a winner change
      after the window closed is a *re-award* (late bids, a merge after a partition, a death).
    * Peers' claims (``task_state``) that disagree with the local award are *conflicts*; a
      conflict is *resolved* when the claim goes away or the award agrees with it.
    * Time to converge of a round: from when it opened to its last winner change.
    """

    def __init__(
        self, node_id: str, board: TaskBoard, settings: AuctionSettings, *, max_peers: int = 4096
    ) -> None:
        self.node_id = node_id
        self.board = board
        self.settings = settings
        self.max_peers = max_peers
        self.rounds: dict[tuple[str, int], _Round] = {}
        self.current: dict[str, Bid] = {}
        self._seen_version = -1
        self.peer_claims: OrderedDict[str, list[Claim]] = OrderedDict()
        self.conflicts: dict[tuple[str, str, str, int, int], _Conflict] = {}
        self.metrics = AuctionMetrics()

    # -- rounds and windows ---------------------------------------------------------------------
    def update(self, now: float) -> list[tuple[str, int]]:
        """Bring rounds and the award up to date with the board; returns rounds opened now."""
        if self.board.version == self._seen_version:
            return []
        self._seen_version = self.board.version
        open_epochs = self.board.open_epochs()
        opened = []
        for task, epoch in open_epochs.items():
            key = (task, epoch)
            if key not in self.rounds:
                self.rounds[key] = _Round(opened=now)
                self.metrics.rounds += 1
                opened.append(key)
        for key in [k for k in self.rounds if open_epochs.get(k[0]) != k[1]]:
            self._finish(self.rounds.pop(key))
        new = self.board.award()
        for task, bid in new.items():
            old = self.current.get(task)
            if old is not None and old.holder == bid.holder and old.epoch == bid.epoch:
                continue
            rnd = self.rounds.get((task, bid.epoch))
            if rnd is None:
                continue
            if rnd.first_award is None:
                rnd.first_award = now
            elif now >= rnd.opened + self.settings.window_s:
                self.metrics.reawards += 1
            rnd.last_change = now
        for task, old in self.current.items():
            if task not in new and (task, old.epoch) in self.rounds:
                self.rounds[(task, old.epoch)].last_change = now
        self.current = new
        self._check_conflicts(now)
        return opened

    def _finish(self, rnd: _Round) -> None:
        if rnd.last_change is not None:
            took = rnd.last_change - rnd.opened
            m = self.metrics
            m.converged_rounds += 1
            m.converge_s_total += took
            m.converge_s_max = max(m.converge_s_max, took)

    def window_closed(self, task: str, epoch: int, now: float) -> bool:
        rnd = self.rounds.get((task, epoch))
        return rnd is not None and now >= rnd.opened + self.settings.window_s

    def holdings(self, now: float) -> dict[tuple[str, int], Bid]:
        """``(group, agent) -> bid`` for this node's winners whose window has closed."""
        return {
            (b.group, b.agent): b
            for b in self.current.values()
            if b.node == self.node_id and self.window_closed(b.task, b.epoch, now)
        }

    def winners(self) -> set[tuple[str, int]]:
        """``(group, agent)`` of this node's agents that win some task, window open or not."""
        return {(b.group, b.agent) for b in self.current.values() if b.node == self.node_id}

    def rebid_due(self, now: float) -> list[tuple[str, int]]:
        """Open rounds past their window without a winner, not rebid for one window."""
        due = []
        for (task, epoch), rnd in self.rounds.items():
            if (
                task not in self.current
                and now >= rnd.opened + self.settings.window_s
                and now >= rnd.last_bid + self.settings.window_s
            ):
                due.append((task, epoch))
        return due

    def next_window_close(self, now: float) -> float:
        """When the next bidding window still open closes (``inf`` when none is open)."""
        window = self.settings.window_s
        return min(
            (r.opened + window for r in self.rounds.values() if r.opened + window > now),
            default=math.inf,
        )

    def note_bid(self, task: str, epoch: int, now: float) -> None:
        rnd = self.rounds.get((task, epoch))
        if rnd is not None:
            rnd.last_bid = now

    # -- claims and conflicts -------------------------------------------------------------------
    def on_claims(self, node: str, claims: list[Claim], now: float) -> None:
        """A peer's ``task_state`` claims (its agents pursuing tasks)."""
        self.peer_claims[node] = claims
        self.peer_claims.move_to_end(node)
        while len(self.peer_claims) > self.max_peers:
            self.peer_claims.popitem(last=False)
        self._check_conflicts(now)

    def forget_peer(self, node: str, now: float) -> None:
        """A dead peer's claims go away (its conflicts are resolved by its death)."""
        if self.peer_claims.pop(node, None) is not None:
            self._check_conflicts(now)

    def _check_conflicts(self, now: float) -> None:
        current: set[tuple[str, str, str, int, int]] = set()
        for node, claims in self.peer_claims.items():
            for c in claims:
                w = self.current.get(c.task)
                if w is None or (w.node, w.group, w.agent, w.epoch) != (
                    node,
                    c.group,
                    c.agent,
                    c.epoch,
                ):
                    current.add((c.task, node, c.group, c.agent, c.epoch))
        m = self.metrics
        for key in current - self.conflicts.keys():
            self.conflicts[key] = _Conflict(detected=now)
            m.conflicts_detected += 1
        for key in self.conflicts.keys() - current:
            m.conflicts_resolved += 1
            m.resolve_s_total += now - self.conflicts.pop(key).detected

    # -- metrics --------------------------------------------------------------------------------
    def converge_stats(self) -> tuple[float, float, int]:
        """(mean, max, count) of time to converge over finished rounds and open ones."""
        m = self.metrics
        total, worst, n = m.converge_s_total, m.converge_s_max, m.converged_rounds
        for rnd in self.rounds.values():
            if rnd.last_change is not None:
                took = rnd.last_change - rnd.opened
                total += took
                worst = max(worst, took)
                n += 1
        return (total / n if n else 0.0, worst, n)
