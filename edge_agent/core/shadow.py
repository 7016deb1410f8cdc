"""A shadow evaluation's paired numbers: the live group's and the candidate's excess surprise on
the same agents, the same ticks and the same observations (``docs/health.md`` "Shadow
evaluation").

Both groups' health parts (:class:`~edge_agent.core.health.AifHealth`, aligned with
:meth:`~edge_agent.core.health.AifHealth.align`) tell a :class:`PairedExcess` each measured
tick's mean excess surprise over the agents they measured, the live group first; a tick that
both measured is one pair, ``candidate - live``. The pairs are kept in two preallocated arrays
(at most :data:`MAX_PAIRS`; later ticks are counted, not kept): no allocation per tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = ["MAX_PAIRS", "REPORTED_PAIRS", "PairedExcess", "PairedResult"]

#: Pairs kept (a measured tick is every 4th: an hour of shadow at 4 Hz).
MAX_PAIRS: Final = 4096
#: Differences a result carries at most (the protocol's list length): more pairs are reported
#: as this many means of consecutive pairs.
REPORTED_PAIRS: Final = 256


@dataclass(frozen=True, slots=True)
class PairedResult:
    """The paired result of a shadow: ``n`` pairs; the mean excess surprise (nats) of the live
    group and of the candidate over them; the mean and standard deviation of ``candidate -
    live``; the paired t statistic ``mean / (sd / sqrt(n))`` (None: fewer than 2 pairs or no
    spread); ``diffs`` the differences (at most :data:`REPORTED_PAIRS`, means of consecutive
    pairs when there are more); ``unpaired`` ticks one side measured without the other."""

    n: int
    live_mean: float
    candidate_mean: float
    mean_diff: float
    sd_diff: float
    t: float | None
    diffs: tuple[float, ...]
    unpaired: int

    def as_data(self) -> dict[str, Any]:
        """The result as the protocol's data (flat, scalars and a list; docs/protocol.md)."""
        out: dict[str, Any] = {
            "shadow_pairs": self.n,
            "shadow_live_excess": round(self.live_mean, 6),
            "shadow_candidate_excess": round(self.candidate_mean, 6),
            "shadow_mean_diff": round(self.mean_diff, 6),
            "shadow_sd_diff": round(self.sd_diff, 6),
            "shadow_diffs": [round(d, 6) for d in self.diffs],
            "shadow_unpaired": self.unpaired,
        }
        if self.t is not None:
            out["shadow_t"] = round(self.t, 4)
        return out


class PairedExcess:
    """Pairs the two groups' measured ticks (module docstring)."""

    def __init__(self, capacity: int = MAX_PAIRS) -> None:
        self._live = np.zeros(capacity)
        self._candidate = np.zeros(capacity)
        self.n = 0
        self.unpaired = 0
        self._clock = -1
        self._pending: float | None = None

    def live(self, clock: int, excess: np.ndarray) -> None:
        """The live group measured tick ``clock``: its agents' excess surprise ``(r,)``."""
        if self._pending is not None:
            self.unpaired += 1
        self._clock, self._pending = clock, float(excess.mean()) if excess.size else None

    def candidate(self, clock: int, excess: np.ndarray) -> None:
        """The candidate measured tick ``clock`` (after the live group, on the same agents)."""
        pending, self._pending = self._pending, None
        if pending is None or clock != self._clock or not excess.size:
            self.unpaired += 1
            return
        if self.n < self._live.size:
            self._live[self.n] = pending
            self._candidate[self.n] = float(excess.mean())
            self.n += 1
        else:
            self.unpaired += 1

    def result(self) -> PairedResult:
        """The pairs so far (module docstring)."""
        n = self.n
        live, cand = self._live[:n], self._candidate[:n]
        diffs = cand - live
        mean = float(diffs.mean()) if n else 0.0
        sd = float(diffs.std(ddof=1)) if n > 1 else 0.0
        t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0.0 else None
        if n > REPORTED_PAIRS:
            edges = np.linspace(0, n, REPORTED_PAIRS + 1).astype(np.intp)
            shown = np.add.reduceat(diffs, edges[:-1]) / np.diff(edges)
        else:
            shown = diffs
        return PairedResult(
            n=n,
            live_mean=float(live.mean()) if n else 0.0,
            candidate_mean=float(cand.mean()) if n else 0.0,
            mean_diff=mean,
            sd_diff=sd,
            t=t,
            diffs=tuple(float(d) for d in shown),
            unpaired=self.unpaired + (self._pending is not None),
        )
