"""A shadow evaluation's paired numbers: the live group's and the candidate's excess surprise on
the same agents, the same ticks and the same observations (``docs/health.md`` "Shadow
evaluation").

Both groups' health parts (:class:`~edge_agent.core.health.AifHealth`, aligned with
:meth:`~edge_agent.core.health.AifHealth.align`) tell a :class:`PairedExcess` each measured
tick's mean excess surprise over the agents they measured, the live group first; a tick that
both measured is one pair, ``candidate - live``. The pairs are kept in two preallocated arrays
(at most :data:`MAX_PAIRS`; later ticks are counted, not kept): no allocation per tick.

What a node reports (and the hub tests) is one difference per **window** of :data:`PAIR_BLOCK`
consecutive paired ticks, their mean: a world whose surprises come on some ticks of an episode
only (the T-maze's reward arm, seen on one tick in three) differs from the live model on those
ticks and on no others, and a test on single ticks would see a median of 0 there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = ["MAX_PAIRS", "PAIR_BLOCK", "REPORTED_PAIRS", "PairedExcess", "PairedResult"]

#: Pairs kept (a measured tick is every 4th: an hour of shadow at 4 Hz).
MAX_PAIRS: Final = 4096
#: Paired ticks per reported window (module docstring): 4 measured ticks are 16 ticks.
PAIR_BLOCK: Final = 4
#: Windows a result carries at most (the protocol's list length): longer shadows are reported as
#: this many windows of more ticks each.
REPORTED_PAIRS: Final = 256


@dataclass(frozen=True, slots=True)
class PairedResult:
    """The paired result of a shadow: ``n`` paired ticks; the mean excess surprise (nats) of the
    live group and of the candidate over them and ``mean_diff``, candidate less live; ``diffs``
    the difference of each window (module docstring; at most :data:`REPORTED_PAIRS`), their
    standard deviation ``sd_diff`` and the paired t statistic ``mean / (sd / sqrt(windows))``
    (None: fewer than 2 windows or no spread); ``unpaired`` ticks one side measured without the
    other."""

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
            "shadow_windows": len(self.diffs),
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
        if n:
            starts = np.arange(0, n, PAIR_BLOCK)
            if starts.size > REPORTED_PAIRS:
                starts = np.linspace(0, n, REPORTED_PAIRS + 1).astype(np.intp)[:-1]
            windows = np.add.reduceat(diffs, starts) / np.diff(np.r_[starts, n])
        else:
            windows = diffs
        k = windows.size
        sd = float(windows.std(ddof=1)) if k > 1 else 0.0
        t = float(windows.mean()) / (sd / math.sqrt(k)) if k > 1 and sd > 0.0 else None
        return PairedResult(
            n=n,
            live_mean=float(live.mean()) if n else 0.0,
            candidate_mean=float(cand.mean()) if n else 0.0,
            mean_diff=float(diffs.mean()) if n else 0.0,
            sd_diff=sd,
            t=t,
            diffs=tuple(float(d) for d in windows),
            unpaired=self.unpaired + (self._pending is not None),
        )
