"""Column operations shared by the fast-path kernels (agents along the last axis, in place).

Part of :mod:`edge_agent.aif.kernels`: the state-major kernels
(:mod:`~edge_agent.aif.kernels.block`) and the local planner's
(:mod:`~edge_agent.aif.kernels.local`) both use them, so they live in a module below both.
"""

from __future__ import annotations

import numpy as np


def softmax_columns(x: np.ndarray, col: np.ndarray, *, floor: np.ndarray | None = None) -> None:
    """In place: softmax over axis 0 of ``x (K, nb)``; ``col`` is ``(nb,)`` scratch.

    ``floor`` (0-d, <= 0): the least argument of ``exp`` after the shift by the maximum (see
    :func:`~edge_agent.aif.kernels.fast_tables.policy_exp_floor`); None: none.
    """
    np.maximum.reduce(x, axis=0, out=col)
    np.subtract(x, col, out=x)
    if floor is not None:
        np.maximum(x, floor, out=x)
    np.exp(x, out=x)
    np.add.reduce(x, axis=0, out=col)
    np.divide(x, col, out=x)
