"""The Wilcoxon signed-rank test, one-sided, in numpy and ``math`` (scipy is not a dependency).

A rollout's shadow gate (:mod:`.shadow`) asks whether the canaries' paired differences
(candidate less live excess surprise on the same agents, ticks and observations, less the
tolerated increase) are centred above 0.

The absolute differences are ranked from 1, tied values sharing their mean rank; ``T+`` is the
sum of the ranks of the positive differences. Zeros are treated as Pratt (1959) proposed: they
are ranked with the others and then left out of ``T+``, and the null distribution is corrected
for them (Cureton, 1967). The p-value is the **normal approximation**:

* mean ``(n (n + 1) - n0 (n0 + 1)) / 4``,
* variance ``(n (n + 1) (2n + 1) - n0 (n0 + 1) (2 n0 + 1) - sum(t^3 - t) / 2) / 24``,

``n`` the differences, ``n0`` the zeros among them, ``t`` the size of each group of tied
non-zero absolute values; no continuity correction. This is what scipy's ``wilcoxon`` computes
with ``zero_method="pratt", method="approx", correction=False``
(``tests/unit/host/hub/gates/test_wilcoxon.py`` holds its numbers). When every difference is 0 the
variance is 0 and nothing tells the two apart: ``p = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_agent_host.hub.gates.mann_whitney import rank

__all__ = ["SignedRankTest", "wilcoxon_signed_rank"]


@dataclass(frozen=True, slots=True)
class SignedRankTest:
    """A test's outcome: ``t_plus`` (the positive differences' rank sum), ``z``, the one-sided
    ``p`` value, ``n`` differences of which ``zeros`` were 0."""

    t_plus: float
    z: float
    p: float
    n: int
    zeros: int


def wilcoxon_signed_rank(
    d: npt.ArrayLike, *, alternative: Literal["greater", "less"] = "greater"
) -> SignedRankTest:
    """Whether the differences ``d`` are centred above 0 (``alternative="greater"``) or below.

    ``d``: a 1-D sample of finite numbers, at least one (``ValueError`` otherwise)."""
    a = np.asarray(d, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no differences: need at least one")
    if not np.isfinite(a).all():
        raise ValueError("the differences hold a value that is not finite")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative {alternative!r}: 'greater' or 'less'")
    n = int(a.size)
    zeros = int(np.count_nonzero(a == 0.0))
    ranks, ties = rank(np.abs(a))
    t_plus = float(ranks[a > 0.0].sum())
    if zeros:  # the zeros are the smallest absolute values: the first group of ties
        ties = ties[1:]
    mean = (n * (n + 1) - zeros * (zeros + 1)) / 4.0
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / 2.0
    variance = (n * (n + 1) * (2 * n + 1) - zeros * (zeros + 1) * (2 * zeros + 1) - tie_term) / 24.0
    if variance <= 0.0:  # every difference is 0
        return SignedRankTest(t_plus, 0.0, 1.0, n, zeros)
    z = (t_plus - mean) / math.sqrt(variance)
    tail = z if alternative == "greater" else -z
    return SignedRankTest(t_plus, z, 0.5 * math.erfc(tail / math.sqrt(2.0)), n, zeros)
