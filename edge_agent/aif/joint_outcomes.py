"""The joint outcomes a model's states can produce, and where a joint-outcome table with
likelihoods of each agent's own can be non-zero: pure functions over the tables' supports.

The information gain (pymdp's state information gain over joint outcomes) needs only the joint
outcomes some state can produce (:func:`possible_outcomes`: the others add exactly nothing) and,
where some modality's likelihood is each agent's own, only the (outcome, state) entries where
every modality's support holds (:func:`joint_layout`). The per-agent kernels
(:mod:`edge_agent.aif.per_agent`) and the compiled tick's binding
(:mod:`edge_agent.aif.kernels.native`) both plan with them; this module imports numpy alone, so a
group that does not learn builds its compiled tick without the learning maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["JointLayout", "joint_entries", "joint_layout", "possible_outcomes"]


def possible_outcomes(supports: Sequence[np.ndarray]) -> np.ndarray:
    """``(K, M)``: the joint outcomes (each modality's outcome, C order) that some state can
    produce under ``supports[m]`` ``(O_m, S)`` bool (where ``A[m]`` may be non-zero): the rows
    :func:`outcome_tables` keeps. The others are 0 for every state and add exactly nothing to
    the information gain."""
    num_obs = tuple(s.shape[0] for s in supports)
    every = np.indices(num_obs).reshape(len(num_obs), -1).T  # (O_joint, M), C order
    possible = np.ones((every.shape[0], supports[0].shape[1]), dtype=bool)
    for m, s in enumerate(supports):
        possible &= s[every[:, m]]
    out: np.ndarray = every[possible.any(axis=1)]
    return out


def joint_entries(
    supports: Sequence[np.ndarray], outcomes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (joint outcome, state) entries of ``outcomes`` ``(K, M)`` where every modality's
    support (``supports[m]`` ``(O_m, S)`` bool) holds, outcome by outcome, states ascending:
    ``(k_of, state_of)`` ``(E,)`` intp each (:class:`JointLayout`'s entries)."""
    where = np.ones((len(outcomes), supports[0].shape[1]), dtype=bool)
    for m, support in enumerate(supports):
        where &= support[outcomes[:, m]]
    k_of, state_of = np.nonzero(where)
    return k_of, state_of


class JointLayout(NamedTuple):
    """Where the joint-outcome table of agents with their own likelihoods can be non-zero:
    entries ``e`` of (joint outcome ``k_e``, state ``s_e``) where every modality's support
    holds (the T-maze: 22 of 12 x 8). ``shared`` ``(E,)``: the product of the shared
    modalities' entries; ``learned``: per learned modality ``m``, the index of each entry into
    ``A[m]`` ``(O_m, S)`` flattened; ``state_of`` and ``outcome_of`` ``(E,)`` intp;
    ``outcome_start`` ``(K,)`` intp: where each outcome's entries begin (they are outcome by
    outcome, every outcome has at least one: :func:`possible_outcomes`), so that a sum over each
    outcome's entries is one ``np.add.reduceat``; ``to_state`` ``(E, S)``: 0/1 float64, entry
    to its state."""

    shared: np.ndarray
    learned: tuple[tuple[int, np.ndarray], ...]
    state_of: np.ndarray
    outcome_of: np.ndarray
    outcome_start: np.ndarray
    to_state: np.ndarray


def joint_layout(
    A: Sequence[np.ndarray], supports: Sequence[np.ndarray], outcomes: np.ndarray,
    learned: Sequence[int],
) -> JointLayout:
    """The :class:`JointLayout` of ``outcomes`` ``(K, M)`` (:func:`possible_outcomes`) under
    ``supports[m]`` ``(O_m, S)`` bool; ``A[m]`` ``(1, O_m, S)`` gives the shared modalities'
    values (those not in ``learned``, whose tables are the agents' own)."""
    S = supports[0].shape[1]
    k_of, state_of = joint_entries(supports, outcomes)
    if not np.bincount(k_of, minlength=len(outcomes)).all():
        raise ValueError("a joint outcome no state produces under the supports: plan with "
                         "possible_outcomes(supports)")
    shared = np.ones(len(k_of))
    for m, a in enumerate(A):
        if m not in learned:
            shared *= a[0][outcomes[k_of, m], state_of]
    own = tuple((m, outcomes[k_of, m] * S + state_of) for m in learned)
    return JointLayout(shared=shared, learned=own, state_of=state_of, outcome_of=k_of,
                       outcome_start=np.searchsorted(k_of, np.arange(len(outcomes))),
                       to_state=np.eye(S)[state_of])
