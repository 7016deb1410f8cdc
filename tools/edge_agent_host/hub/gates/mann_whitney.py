"""The Mann-Whitney U test, one-sided, in numpy and ``math`` (scipy is not a dependency).

A rollout's health gate (:mod:`.health`) compares a wave's nodes against the nodes not yet
touched with it, as Kayenta compares a canary against its baseline: each node's window mean is
one sample, and the question is whether the wave's values are stochastically greater than the
others' (after the tolerated shift is taken off).

``U`` counts the pairs ``(x_i, y_j)`` with ``x_i > y_j``, ties counted a half. Its p-value under
"neither is stochastically greater" is

* **exact** when both samples hold at most :data:`EXACT_MAX` values and there is no tie: the
  distribution of ``U`` counted by the recurrence
  ``f(m, n, u) = f(m - 1, n, u - n) + f(m, n - 1, u)`` (Mann and Whitney, 1947);
* else the **normal approximation** with the tie correction of the variance
  ``n1 n2 / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1)))`` (t: the size of each group of tied
  values, N = n1 + n2) and a continuity correction of 0.5: what scipy's ``mannwhitneyu``
  computes with ``method="asymptotic"`` (``tests/unit/host/hub/gates/test_mann_whitney.py`` holds
  its numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["EXACT_MAX", "RankTest", "mann_whitney_u", "rank"]

#: Both samples at most this many values (and no tie): the exact distribution of U.
EXACT_MAX: Final = 20

Alternative = Literal["greater", "less"]


@dataclass(frozen=True, slots=True)
class RankTest:
    """A test's outcome: ``u`` (of the first sample), the one-sided ``p`` value, the sample
    sizes and ``method`` (``exact`` or ``normal``)."""

    u: float
    p: float
    n1: int
    n2: int
    method: str


def rank(values: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Ranks from 1 (tied values share their mean rank) and the size of each group of ties."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    sizes = np.diff(np.r_[starts, a.size])
    mean_rank = starts + (sizes + 1) / 2.0
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, sizes)
    return ranks, sizes.astype(np.int64)


def mann_whitney_u(
    x: npt.ArrayLike, y: npt.ArrayLike, *, alternative: Alternative = "greater"
) -> RankTest:
    """Whether ``x`` is stochastically greater (``alternative="greater"``) or less than ``y``.

    ``x`` and ``y``: 1-D samples of finite numbers, at least one value each (``ValueError``
    otherwise)."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"samples of {a.size} and {b.size} values: need at least one each")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the samples hold a value that is not finite")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative {alternative!r}: 'greater' or 'less'")
    n1, n2 = int(a.size), int(b.size)
    ranks, ties = rank(np.concatenate([a, b]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    u_tail = u if alternative == "greater" else n1 * n2 - u
    if max(n1, n2) <= EXACT_MAX and int(ties.max()) == 1:
        counts = _u_counts(n1, n2)
        p = float(counts[round(u_tail) :].sum()) / float(counts.sum())
        return RankTest(u, min(1.0, p), n1, n2, "exact")
    n = n1 + n2
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (n * (n - 1))
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0.0:  # every value is the same: nothing tells the samples apart
        return RankTest(u, 1.0, n1, n2, "normal")
    z = (u_tail - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return RankTest(u, 0.5 * math.erfc(z / math.sqrt(2.0)), n1, n2, "normal")


@cache
def _u_counts(n1: int, n2: int) -> npt.NDArray[np.float64]:
    """How many of the ``C(n1 + n2, n1)`` orders give each ``U = 0 .. n1 n2`` (no ties)."""
    # table[m][k] = counts for sizes (m, k), built up in k for each m.
    table: list[list[npt.NDArray[np.float64]]] = [
        [np.ones(1, dtype=np.float64) for _ in range(n2 + 1)] for _ in range(n1 + 1)
    ]
    for m in range(1, n1 + 1):
        for k in range(1, n2 + 1):
            out = np.zeros(m * k + 1, dtype=np.float64)
            drop_x = table[m - 1][k]  # the largest value is an x: it beats all k y's
            out[k : k + drop_x.size] += drop_x
            drop_y = table[m][k - 1]  # the largest value is a y: U unchanged
            out[: drop_y.size] += drop_y
            table[m][k] = out
    return table[n1][n2]
