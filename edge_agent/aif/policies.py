"""Policy enumeration, in pymdp's order."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ModelError


def controllable_factors(
    num_controls: Sequence[int], control_fac_idx: Sequence[int] | None
) -> tuple[int, ...]:
    """Factors the agent acts on: given, or every factor with more than one action."""
    if control_fac_idx is None:
        return tuple(f for f, u in enumerate(num_controls) if u > 1)
    for f in control_fac_idx:
        if not 0 <= f < len(num_controls):
            raise ModelError(f"control_fac_idx names factor {f}, model has {len(num_controls)}")
    return tuple(control_fac_idx)


def construct_policies(
    num_controls: Sequence[int], policy_len: int, control_fac_idx: Sequence[int] | None = None
) -> NDArray[np.int64]:
    """Every combination of actions over ``policy_len`` steps: ``(P, L, F)`` int64.

    Same order as pymdp's ``control.construct_policies``: the product over ``L*F`` action slots,
    time-major, the last factor at the last step varying fastest. Uncontrolled factors take
    action 0.
    """
    if policy_len < 1:
        raise ModelError(f"policy_len must be >= 1, got {policy_len}")
    controlled = controllable_factors(num_controls, control_fac_idx)
    per_factor = [num_controls[f] if f in controlled else 1 for f in range(len(num_controls))]
    slots = [range(u) for u in per_factor] * policy_len
    combos = np.array(list(itertools.product(*slots)), dtype=np.int64)
    return combos.reshape(len(combos), policy_len, len(num_controls))


def validate_policies(policies: np.ndarray, num_controls: Sequence[int]) -> NDArray[np.int64]:
    """Check a user-given ``(P, L, F)`` policy list against the model's action counts."""
    pol = np.asarray(policies)
    if pol.ndim != 3 or pol.shape[2] != len(num_controls) or pol.shape[0] == 0:
        raise ModelError(f"policies has shape {pol.shape}, expected (P, L, {len(num_controls)})")
    if not np.issubdtype(pol.dtype, np.integer):
        raise ModelError(f"policies must be integers, got {pol.dtype}")
    for f, u in enumerate(num_controls):
        col = pol[:, :, f]
        if col.min() < 0 or col.max() >= u:
            raise ModelError(f"policies use action {int(col.max())} on factor {f}, which has {u}")
    return pol.astype(np.int64)
