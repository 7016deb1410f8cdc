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

#: A batch's outcomes are compared with their limits this many values at most at a time
#: (:meth:`GroupInputs._within`: the limits of as many agents' rows side by side, made once).
CHECK_VALUES = 4096


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
        #: The limits of as many agents' rows side by side as a batch has (at most
        #: :data:`CHECK_VALUES` values; made again, longer, for a larger batch) and the
        #: compare's output beside them: a batch's outcomes compared as one run of values (a
        #: compare of ``(N, M)`` against ``(M,)`` loops over its ``N`` rows of ``M`` values, a
        #: call of numpy's inner loop each).
        self._limits = self._limit[:0]
        self._below = np.zeros(0, dtype=bool)
        #: The int64 outcomes of a batch given in another dtype or layout (made once per batch
        #: shape, written again at each such batch: no array made a tick, and the same array
        #: tick after tick, which a compiled tick reads where it is).
        self._converted = np.zeros((0, len(self.num_obs)), dtype=np.int64)

    @staticmethod
    def check_nbytes(n_agents: int, num_modalities: int) -> int:
        """The most bytes the check of a batch of ``n_agents`` holds (its limits and the
        compare's output, at most :data:`CHECK_VALUES` values of 8 + 1 bytes; the batch's
        outcomes converted to int64, 8 bytes a value): reserved with the group
        (:meth:`GroupMemory.bytes_for <edge_agent.core.group_memory.GroupMemory.
        bytes_for>`)."""
        values = min(n_agents * num_modalities, max(CHECK_VALUES, num_modalities))
        converted = n_agents * num_modalities * np.dtype(np.int64).itemsize
        return values * (np.dtype(np.uint64).itemsize + 1) + converted

    def obs(self, obs: np.ndarray, n_agents: int) -> IntArray:
        """``obs (N, M)`` integer outcomes, each within its modality's range, as int64: ``obs``
        itself when it is C-contiguous int64, else the group's own array of them (written
        again by the next such call: read it within the tick)."""
        return self._outcomes(np.asarray(obs), n_agents)

    def _outcomes(self, arr: np.ndarray, n_agents: int) -> IntArray:
        """:meth:`obs` of an array."""
        expected = (n_agents, len(self.num_obs))
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        o = arr if arr.dtype == np.int64 and arr.flags.c_contiguous else self._convert(arr)
        if n_agents == 1:  # one agent: plain Python beats numpy calls (loop over modalities)
            values = o[0].tolist()
            ok = min(values) >= 0 and all(map(operator.lt, values, self.num_obs))
        else:  # negative outcomes wrap to huge values
            ok = self._within(o.view(np.uint64).reshape(-1))
        if not ok:
            self._raise_out_of_range(o)
        return o

    def _convert(self, arr: np.ndarray) -> IntArray:
        """``arr`` (integer outcomes of the batch's shape) as int64 in :attr:`_converted`
        (``np.ascontiguousarray``'s values, into the array kept for the batch's shape)."""
        out = self._converted
        if out.shape != arr.shape:
            self._converted = out = np.zeros(arr.shape, dtype=np.int64)
        np.copyto(out, arr, casting="unsafe")
        return out

    def _within(self, values: np.ndarray) -> bool:
        """Whether every outcome of ``values`` (an ``(N, M)`` batch's, flat, uint64) is below its
        modality's limit: compared with :attr:`_limits` (made for the largest batch yet, at most
        :data:`CHECK_VALUES` values) a run of its length at a time, the rest against its
        start."""
        size = values.size
        limits, below = self._limits, self._below
        if size == limits.size:  # (a tick's case: the batch the limits were made for)
            np.less(values, limits, out=below)
            return int(np.count_nonzero(below)) == size
        if size > limits.size:  # a larger batch than before: longer limits, up to the most
            M = len(self.num_obs)
            rows = max(1, min(size, CHECK_VALUES) // M)
            if rows * M > limits.size:
                self._limits = limits = np.tile(self._limit, rows)
                self._below = below = np.zeros(limits.size, dtype=bool)
        run = limits.size
        whole = size // run * run
        count = 0
        for start in range(0, whole, run):
            np.less(values[start:start + run], limits, out=below)
            count += int(np.count_nonzero(below))
        if whole < size:
            rest = size - whole
            np.less(values[whole:], limits[:rest], out=below[:rest])
            count += int(np.count_nonzero(below[:rest]))
        return count == size

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
