"""What an Active Inference group's tick and stage verbs take from outside, checked at the boundary.

:class:`GroupInputs` checks a tick's evidence (integer outcomes ``(N, M)``, or soft evidence: a
distribution over each modality's outcomes) and externally chosen actions ``(N, F)`` against the
model's sizes, and raises :class:`~edge_agent.errors.InputError` naming what is wrong before
anything reaches the kernels (STYLE 2).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from edge_agent.core.group_blocks import IntArray
from edge_agent.errors import InputError

__all__ = ["GroupInputs"]

#: A batch's outcomes are checked this many agents' rows at a time (:meth:`GroupInputs._within`).
_CHECK_ROWS = 64


class GroupInputs:
    """The checks of a group whose model has ``num_obs`` outcomes per modality and
    ``num_controls`` actions per factor (``dtype``: the compute dtype soft evidence is given
    in)."""

    def __init__(
        self, num_obs: Sequence[int], num_controls: Sequence[int], dtype: np.dtype
    ) -> None:
        self.num_obs = tuple(int(o) for o in num_obs)
        self.num_controls = tuple(int(u) for u in num_controls)
        self.dtype = dtype
        self._limit = np.array(self.num_obs, dtype=np.uint64)
        #: The limits of :data:`_CHECK_ROWS` agents side by side: a batch's rows compared that
        #: many at a time (a compare of ``(N, M)`` against ``(M,)`` loops over its ``N`` rows
        #: of ``M`` values, a call of numpy's inner loop each).
        self._limits = np.tile(self._limit, _CHECK_ROWS)

    def obs(self, obs: np.ndarray, n_agents: int) -> IntArray:
        """``obs (N, M)`` integer outcomes, each within its modality's range, as int64."""
        return self._outcomes(np.asarray(obs), n_agents)

    def _outcomes(self, arr: np.ndarray, n_agents: int) -> IntArray:
        """:meth:`obs` of an array."""
        expected = (n_agents, len(self.num_obs))
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        o = np.ascontiguousarray(arr, dtype=np.int64)
        if n_agents == 1:  # one agent: plain Python beats numpy calls (loop over modalities)
            values = o[0].tolist()
            ok = min(values) >= 0 and all(map(operator.lt, values, self.num_obs))
        elif n_agents < 4 * _CHECK_ROWS:  # one pass: negative outcomes wrap to huge values
            ok = bool(np.logical_and.reduce(np.less(o.view(np.uint64), self._limit), axis=None))
        else:  # a large batch's rows 64 at a time
            ok = self._within(o.view(np.uint64))
        if not ok:
            self._raise_out_of_range(o)
        return o

    def _within(self, o: np.ndarray) -> bool:
        """Whether every outcome of ``o (N, M)`` (uint64) is below its modality's limit: the
        rows :data:`_CHECK_ROWS` at a time against :attr:`_limits`, the rest against the
        limits."""
        whole = o.shape[0] // _CHECK_ROWS * _CHECK_ROWS
        below = 0
        if whole:
            below = int(np.count_nonzero(np.less(o[:whole].reshape(-1, self._limits.shape[0]),
                                                 self._limits)))
        if whole < o.shape[0]:
            below += int(np.count_nonzero(np.less(o[whole:], self._limit)))
        return below == o.size

    def evidence(
        self, obs: np.ndarray | Sequence[np.ndarray], n_agents: int
    ) -> tuple[IntArray | None, list[np.ndarray] | None]:
        """``(hard, None)`` for ``(N, M)`` integer outcomes (see :meth:`obs`), or ``(None,
        soft)`` for soft evidence: a sequence of ``M`` float arrays ``(N, O_m)``, a distribution
        over each modality's outcomes (pymdp's ``distr_obs``: the likelihood is ``sum_o p_m(o)
        A[m][o]``)."""
        if not (
            isinstance(obs, list | tuple)
            and obs
            and all(isinstance(p, np.ndarray) and p.dtype.kind == "f" for p in obs)
        ):
            return self._outcomes(np.asarray(obs), n_agents), None
        M = len(self.num_obs)
        if len(obs) != M:
            raise InputError(f"soft evidence has {len(obs)} modalities, expected {M}")
        soft = []
        for m, (p, o) in enumerate(zip(obs, self.num_obs, strict=True)):
            if p.shape != (n_agents, o):
                raise InputError(
                    f"soft evidence of modality {m} has shape {p.shape}, "
                    f"expected {(n_agents, o)}"
                )
            if not (np.isfinite(p).all() and (p >= 0).all()):
                raise InputError(f"soft evidence of modality {m} must be finite and non-negative")
            soft.append(np.ascontiguousarray(p, dtype=self.dtype))
        return None, soft

    def actions(self, actions: np.ndarray, n_agents: int) -> IntArray:
        """``actions (N, F)`` integers, each within its factor's controls, as int64."""
        arr = np.asarray(actions)
        expected = (n_agents, len(self.num_controls))
        if arr.shape != expected:
            raise InputError(f"actions has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        for f, u in enumerate(self.num_controls):
            col = arr[:, f]
            if col.min() < 0 or col.max() >= u:
                raise InputError(f"actions on factor {f} must be in [0, {u}), got {int(col.max())}")
        return arr.astype(np.int64, copy=False)

    def _raise_out_of_range(self, obs: IntArray) -> None:
        for m, o in enumerate(self.num_obs):
            col = obs[:, m]
            bad = (col < 0) | (col >= o)
            if bad.any():
                agent = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"obs[{agent}, {m}] = {int(col[agent])} is out of range [0, {o}) "
                    f"({int(bad.sum())} agent(s) out of range in modality {m})"
                )
