"""The learning tick compiled: one pass over the agents per tick (``tick.c``), in the library
the wheel builds (``_tick``, see ``setup.py``; ``recipe.py`` is how), bound with :mod:`ctypes`
in :mod:`~edge_agent.aif.kernels.native.binding` (its structs, :func:`~edge_agent.aif.kernels.
native.binding.load`, :class:`~edge_agent.aif.kernels.native.binding.NativeTick`).

This module is what needs neither the library nor the binding, so that a process that only sizes
the pass, or whose groups step with numpy, neither loads the one nor imports the other (a daemon's
memory, docs/memory.md): the model sizes the pass bounds (:data:`LIMITS`) and the package's
library's values of them (:data:`PACKAGE_LIMITS`, tick.h's: the binding refuses a package library
that reports others), a model checked against them (:func:`too_large`), whether the package was
installed with its library at all (:func:`not_installed`, :func:`library_path`), a learned factor's
transitions as the pass takes them (:class:`TransitionEntries`), and what a group that does not
learn would hold in the pass, known without building it or loading the library
(:func:`frozen_nbytes`: exactly ``NativeTick.nbytes``, the scratch by :func:`scratch_doubles`, the
twin of tick.c's ``edge_tick_scratch_doubles``).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_agent.aif import joint_outcomes
from edge_agent.arrays import distinct

__all__ = ["BLOCK", "LIMITS", "LNL_TABLE", "PACKAGE_LIMITS", "TransitionEntries", "TwoSteps",
           "entry_actions", "frozen_nbytes", "library_path", "not_installed", "outcome_twins",
           "policy_reach",
           "scratch_doubles", "support_entries", "too_large", "two_steps", "use"]

#: The model sizes the pass bounds, each by tick.h's limit (``TICK_LIMITS``); their values are
#: the library's (``binding.limits``). A limit added to tick.h is named here too, or the library
#: is refused.
LIMITS = {"factors": "MAX_F", "joint": "MAX_S", "modalities": "MAX_M", "policies": "MAX_P",
          "controls": "MAX_U"}
#: The package's library's limits by :data:`LIMITS`' names: tick.h's ``TICK_LIMITS`` values,
#: known without loading it (:func:`too_large`); the binding's ``load`` refuses a package
#: library that reports others (test_binding.py reads them in tick.h too).
PACKAGE_LIMITS = {"factors": 4, "joint": 128, "modalities": 8, "policies": 64, "controls": 16}
#: The agents of a block of the pass (tick.c's ``BLK``): its scratch is lanes of that many
#: doubles (:func:`scratch_doubles`).
BLOCK = 8

#: The largest log likelihood table (joint outcomes x joint states, doubles: 512 KiB) a model
#: nobody learns is given (``tick_model.lnL``); above it the pass takes the product and its logs.
LNL_TABLE = 1 << 16


#: Another build of the sources this process steps with (:func:`use`), else None.
_used: Path | None = None


def use(path: Path) -> None:
    """Step this process's groups with the library at ``path`` (another build of the sources:
    the build's first, counting one, :mod:`edge_agent.core.tick_profile`) instead of the
    package's: before anything loads the library (the binding loads it once a process)."""
    global _used  # noqa: PLW0603 - one library a process, as the binding loads it once
    _used = path


def library_path() -> Path | None:
    """The library the package was built with (None: built without a C compiler), or the one
    :func:`use` names."""
    if _used is not None:
        return _used
    spec = importlib.util.find_spec(f"{__name__}._tick")
    return None if spec is None or spec.origin is None else Path(spec.origin)


def not_installed() -> str | None:
    """Why there is no compiled tick here that is known without loading it: the package was
    installed without its library (None: it has one, not yet checked: ``binding.unavailable``)."""
    if library_path() is None:
        return ("edge-agent was installed without its compiled tick (no C compiler then): "
                "reinstall it with gcc present (apt-get install gcc)")
    return None


def too_large(num_states: Sequence[int], num_controls: Sequence[int], num_modalities: int,
              num_policies: int, bounds: Mapping[str, int] = PACKAGE_LIMITS) -> str | None:
    """Which of the limits ``bounds`` (by :data:`LIMITS`' names; default the package's library's,
    not loaded; a library's own: :func:`binding.limits <edge_agent.aif.kernels.native.binding.
    limits>`) a model is above (None: none)."""
    sizes = {"factors": len(num_states), "joint": int(np.prod(num_states)),
             "modalities": num_modalities, "policies": num_policies,
             "controls": max(num_controls)}
    for name, value in sizes.items():
        if value > bounds[name]:
            return f"{name} {value} above the compiled tick's {bounds[name]}"
    return None


class TransitionEntries(NamedTuple):
    """A learned factor's transitions as the pass takes them: entries ``[start[u], start[u +
    1])`` are action ``u``'s, ``row`` and ``col`` each entry's next state and state, ``flat``
    its index into the factor's ``(S, S, U)`` counts (C order; -1: a pad, whose value is 0 and
    which learns nothing). The values are the caller's, in this order (:meth:`NativeTick.
    bind_transitions`)."""

    start: np.ndarray
    row: np.ndarray
    col: np.ndarray
    flat: np.ndarray

    @property
    def size(self) -> int:
        """The entries (the values one agent's table holds)."""
        return len(self.row)


def entry_actions(start: np.ndarray) -> np.ndarray:
    """Each entry's action, from the entries' ``start`` (action ``u``'s are ``[start[u],
    start[u + 1])``)."""
    return np.repeat(np.arange(len(start) - 1), np.diff(start))


def support_entries(support: np.ndarray) -> TransitionEntries:
    """Every entry of ``support`` ``(S, S, U)`` (bool), action by action, row-major."""
    S, _, U = support.shape
    u, row, col = np.nonzero(support.transpose(2, 0, 1))
    start = np.searchsorted(u, np.arange(U + 1)).astype(np.int64)
    flat = (row * S + col) * U + u
    return TransitionEntries(start, row.astype(np.int64), col.astype(np.int64),
                             flat.astype(np.int64))


def policy_reach(
    b_arrays: Sequence[tuple[np.ndarray, ...]], policies_first: np.ndarray,
    state_index: np.ndarray, entry_state: np.ndarray, entry_outcome: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each one-step policy's joint outcomes (ascending) that some state its predicted states
    can be non-zero on gives: the states whose every factor's state is in the image of that
    factor's action (its entries' rows: a learned factor's support). The pass sums a policy's
    predicted outcome over these only: every other one's is exactly 0 for every agent (each of
    its entries' states has a factor the action never moves to: its predicted probability is
    0, never added to). ``(reach_start (P + 1), reach)``, int64; when every policy reaches
    every outcome the pass is given none (NULL: the outcomes in order, no list read)."""
    lists = []
    for actions in policies_first:
        ok = np.ones(len(entry_state), dtype=np.bool_)
        for f, (start, row, *_rest) in enumerate(b_arrays):
            image = np.zeros(state_index.shape[1], dtype=np.bool_)
            image[row[start[actions[f]]:start[actions[f] + 1]]] = True
            ok &= image[state_index[f, entry_state]]
        lists.append(distinct(entry_outcome[ok]))  # np.unique would import numpy.ma
    start = np.cumsum([0, *(len(k) for k in lists)]).astype(np.int64)
    reach = np.concatenate([*lists, np.zeros(1, dtype=np.int64)]).astype(np.int64)
    return start, reach


def outcome_twins(
    entry_outcome: np.ndarray, entry_state: np.ndarray, state_entry: np.ndarray, *,
    entry_shared: np.ndarray, entry_index: Sequence[np.ndarray | None], outcomes: int,
) -> np.ndarray | None:
    """Each joint outcome's first earlier outcome whose predicted probability is always the
    same number (-1: none), or None when no outcome has one (``tick_model.outcome_twin``).
    The pass sums an outcome's prediction over its entries in ``state_entry``'s order; an
    entry's value is its shared factor (``entry_shared``) times each learned table's value at
    its index (``entry_index``), so two outcomes whose entries are, in that order, of the same
    states with the same shared factor (its bits) and the same indices sum the same products in
    the same order, in every lane, every tick: the pass sums and logs the first one only (the
    T-maze: a cue outcome's twin, the other cue outcome's, where the cue is not seen)."""
    keys: list[list[tuple[int, ...]]] = [[] for _ in range(outcomes)]
    bits = np.ascontiguousarray(entry_shared, dtype=np.float64).view(np.int64)
    learned = [index for index in entry_index if index is not None]
    for e in state_entry:
        keys[int(entry_outcome[e])].append(
            (int(entry_state[e]), int(bits[e]), *(int(index[e]) for index in learned)))
    first: dict[tuple[tuple[int, ...], ...], int] = {}
    twin = np.full(outcomes, -1, dtype=np.int64)
    for k, key in enumerate(keys):
        found = first.setdefault(tuple(key), k)
        if found != k:
            twin[k] = found
    return twin if (twin >= 0).any() else None


class TwoSteps(NamedTuple):
    """Two-step policies as the pass plans them (``tick_model``'s two-step fields, tick.h),
    the work policies share once: the distinct first steps (``first_policy`` ``(J1,)``, a policy
    taking each; ``policy_first_joint`` ``(P,)``, each policy's), each factor's second-step
    nodes (``second_start`` ``(F + 1,)``: factor ``f``'s are ``[second_start[f],
    second_start[f + 1])``; ``second_parent``, ``second_action``: each one's first and second
    action), the distinct second-step joint nodes (``second_joint`` ``(J2, F)``: each one's
    node of every factor, its index among the factor's; ``policy_second_joint`` ``(P,)``, each
    policy's). Every array int64."""

    first_policy: np.ndarray
    policy_first_joint: np.ndarray
    second_start: np.ndarray
    second_parent: np.ndarray
    second_action: np.ndarray
    second_joint: np.ndarray
    policy_second_joint: np.ndarray

    @property
    def second_actions(self) -> np.ndarray:
        """``(J2, F)``: each second-step joint node's second action of every factor."""
        F = len(self.second_start) - 1
        nodes = self.second_joint + self.second_start[:F]
        return self.second_action[nodes] if len(nodes) else np.zeros((0, F), dtype=np.int64)

    @property
    def nodes(self) -> int:
        """The joint nodes the pass evaluates (J1 + J2)."""
        return len(self.first_policy) + len(self.second_joint)


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct row of ``rows`` ``(P, F)``, in order of appearance, and
    each row's distinct row (np.unique would sort them, and import numpy.ma)."""
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        j = seen.setdefault(row.tobytes(), len(seen))
        if j == len(first):  # a row not seen before: its first
            first.append(i)
        inverse[i] = j
    return np.array(first, dtype=np.int64), inverse


def two_steps(policies: np.ndarray, transitions: Sequence[np.ndarray]) -> TwoSteps:
    """The pass's plan of two-step ``policies`` ``(P, 2, F)`` over the factors' ``transitions``
    (dense ``(S_f, S_f, U_f)`` float64: a group that learns nothing). A factor's second-step
    nodes are its distinct (first action, second action) pairs, those whose two steps are the
    same map from any beliefs (``B[:, :, u2] @ B[:, :, u1]`` equal element for element, as the
    numpy twin merges its joint nodes: fast_tables._merged_joint) one node (the first pair's:
    their predictions then differ by rounding alone)."""
    P, _, F = policies.shape
    first_policy, policy_first_joint = _distinct_rows(np.ascontiguousarray(policies[:, 0, :]))
    start, parent, action = [0], [], []
    local = np.zeros((P, F), dtype=np.int64)
    for f, table in enumerate(transitions):
        b = np.asarray(table, dtype=np.float64)
        seen: dict[bytes, int] = {}
        for p in range(P):
            u1, u2 = int(policies[p, 0, f]), int(policies[p, 1, f])
            key = (b[:, :, u2] @ b[:, :, u1]).tobytes()
            if key not in seen:
                seen[key] = len(seen)
                parent.append(u1)
                action.append(u2)
            local[p, f] = seen[key]
        start.append(start[-1] + len(seen))
    first_joint, policy_second_joint = _distinct_rows(local)
    return TwoSteps(first_policy, policy_first_joint, np.array(start, dtype=np.int64),
                    np.array(parent, dtype=np.int64), np.array(action, dtype=np.int64),
                    np.ascontiguousarray(local[first_joint]), policy_second_joint)


def scratch_doubles(
    num_states: Sequence[int], num_controls: Sequence[int], *, policies: int, outcomes: int,
    entries: int, learned_values: int = 0, two: TwoSteps | None = None,
    shared_table: int = 0,
) -> int:
    """The doubles of scratch the pass needs (``tick_model.scratch``), alignment slack included:
    tick.c's ``edge_tick_scratch_doubles`` (its ``carve``, lane by lane, in its order; change
    both together, test_binding.py checks them equal) for a model of ``num_states`` and
    ``num_controls`` per factor planning ``policies`` one-step policies over ``outcomes``
    possible joint outcomes and ``entries`` (outcome, state) entries; ``learned_values``: the
    learned modalities' ``O_m S`` values summed (0: nothing learned); ``two``: the plan of
    two-step policies (:func:`two_steps`; None: one-step); ``shared_table``: the joint
    outcomes (``prod_m O_m``) of the tables a pass of shared counts learning ``A`` makes once a
    tick (``tick_model.shared_tables``: ``lnL`` and, more than one factor, ``lnQ1``; 0: none)."""
    W, S = sum(num_states), math.prod(num_states)
    planned, moved2 = policies, 0
    if two is not None:  # the joint nodes' outcomes and values, each factor's nodes' states
        planned = two.nodes
        moved2 = sum(int(two.second_start[f + 1] - two.second_start[f]) * s
                     for f, s in enumerate(num_states))
    lanes = (7 * W  # log_prior, cur, nxt, log_cur, log_nxt, qL, step1
             + 6 * S  # log_lik, joint, weighted, utility, neg_entropy, qj
             + 2 * entries  # value, log_value
             + sum(u * s for u, s in zip(num_controls, num_states, strict=True))  # moved
             + 2 * planned * outcomes  # qo, log_qo
             + 3 * policies  # G, x, q_pi
             + moved2 + (0 if two is None else two.nodes)  # moved2, node
             # outcome_start, outcome_entry, a learned table's entry_slot, each outcome's
             # packed row and each node's terms' rows (outcome twins): int64s
             + -(-(outcomes + 1 + entries + (entries if learned_values else 0) + outcomes
                   + planned * outcomes) // BLOCK)
             + learned_values  # A: the learned tables
             + -(-shared_table * S // BLOCK)  # the tick's lnL (shared_tables)
             + (-(-shared_table * W // BLOCK) if len(num_states) > 1 else 0))  # its lnQ1
    return (lanes + 1) * BLOCK


def frozen_nbytes(
    supports: Sequence[np.ndarray], transitions: Sequence[np.ndarray], policies: np.ndarray
) -> int:
    """Exactly :attr:`NativeTick.nbytes` of the pass of a model nobody learns (``learned=()``,
    no ``learned_B``), without building it or loading the library: ``supports[m]`` ``(O_m, S)``
    bool, where ``A[m]`` is non-zero (the supports the pass is given), ``transitions[f]``
    ``(S_f, S_f, U_f)`` float64, ``B[f]`` (the pass's entries its non-zero ones; two-step
    policies merge the second steps its values make alike, :func:`two_steps`), ``policies``
    ``(P, L, F)``, ``L`` 1 or 2. Each array :class:`NativeTick` makes is counted here at its
    size (its tables as the pass takes them; the outcomes and entries the information gain
    reads, :func:`joint_outcomes.joint_entries`; each policy's reach, :func:`policy_reach`, and
    a two-step plan's arrays and its second steps' reach; the scratch, :func:`scratch_doubles`):
    change both together (test_equality.py checks them equal for every world the repository
    ships, one-step and two-step)."""
    num_obs = [int(s.shape[0]) for s in supports]
    num_states = [int(t.shape[0]) for t in transitions]
    num_controls = [int(t.shape[2]) for t in transitions]
    S, W, F, P = int(supports[0].shape[1]), sum(num_states), len(transitions), len(policies)
    outcomes = joint_outcomes.possible_outcomes(list(supports))
    entry_outcome, entry_state = joint_outcomes.joint_entries(supports, outcomes)
    E = len(entry_state)
    factor_entries = [support_entries(np.asarray(t) != 0) for t in transitions]
    state_index = np.indices(num_states).reshape(F, S)
    _, reach = policy_reach(factor_entries, np.ascontiguousarray(policies[:, 0, :]),
                      state_index, entry_state, entry_outcome)
    two = None if policies.shape[1] == 1 else two_steps(policies, transitions)
    planned = 0  # a two-step plan's arrays (tick_model's two-step fields)
    if two is not None:
        _, reach2 = policy_reach(factor_entries, two.second_actions, state_index, entry_state,
                                 entry_outcome)
        planned = (sum(a.size for a in two) + len(two.second_joint) + 1 + len(reach2))
    joint_obs = math.prod(num_obs)
    lnL = joint_obs * S <= LNL_TABLE
    values = (sum(u + 1 + 3 * e.size for u, e in zip(num_controls, factor_entries, strict=True))
              + W + P + P * F + F * S  # B's entries; D, lnE, policies_first, state_index
              + 4 * E + (S + 1) + (P + 1) + len(reach) + S  # entries, state_start, reach, utility
              + sum(num_obs) + sum(o * S for o in num_obs)  # lnC, the shared A
              + (joint_obs * S if lnL else 0) + (joint_obs * W if lnL and F > 1 else 0)  # lnL, lnQ1
              + planned + scratch_doubles(num_states, num_controls, policies=P,
                                          outcomes=len(outcomes), entries=E, two=two))
    return 8 * values  # every array is float64 or int64
