"""A group's drift alarm: a sequential change detector on its excess surprise
(``docs/health.md``, "The drift alarm").

The excess surprise (surprise less the entropy of the outcome distribution predicted) has mean 0
for a model that fits the world, whatever the model, so the mean before a change is known and
need not be estimated: the detector is the Page-Hinkley test with that mean known, Page's
one-sided CUSUM. Each tick it is told the group's mean excess surprise over the agents sampled,
``x_t`` (nats), and how many agents that mean is over, ``k_t``; it standardises the excess
beyond a tolerance,

    z_t = (x_t - tolerance) / s_t,    s_t = max(sigma_t / sqrt(k_t), MIN_SE),

``sigma_t`` a moving estimate of one agent-step's standard deviation, and accumulates

    g_t = min(CAP * threshold, max(0, g_{t-1} + z_t - drift)).

It alarms when ``g_t`` exceeds ``threshold`` and clears, with hysteresis, when ``g_t`` falls to
``threshold * CLEAR``. ``drift`` is the allowance per tick (in standard errors): while the model
fits (``x_t`` averages 0 <= tolerance), ``g`` falls by at least ``drift`` per tick on average,
so false alarms are rare whatever the group's size (their measured rate is in
``docs/health.md``, ``benchmarks/bench_health.py``); a misfit of ``mu`` nats is found in about
``threshold / ((mu - tolerance) / s - drift)`` ticks. The cap bounds how long an alarm takes to
clear once the model fits again.

Why not ADWIN: it compares two windows of the series and so needs their values kept (memory
growing with the window), and it would also flag a change towards a *better* fit; the known
reference mean of the excess surprise is exactly what a CUSUM uses best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.core.health_window import DriftReading

__all__ = ["DriftDetector", "DriftSettings"]

#: The statistic is held at most this many thresholds (how long clearing may take).
CAP = 2.0
#: The alarm clears when the statistic falls to this share of the threshold.
CLEAR = 0.5
#: The smallest standard error a tick's mean is given (nats): a group whose agents all saw the
#: same excess does not divide by 0.
MIN_SE = 1e-3
#: The moving variance forgets with this weight per tick (about 100 ticks), after an equal-weight
#: start.
VARIANCE_WEIGHT = 0.01


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """The detector's parameters (``docs/health.md`` gives their measured false-alarm rate)."""

    #: Excess surprise (nats per agent-step) tolerated before it counts against the model.
    tolerance: float = 0.05
    #: Allowance per tick, in standard errors of the tick's mean.
    drift: float = 0.5
    #: The alarm fires when the statistic exceeds this.
    threshold: float = 12.0


class DriftDetector:
    """Page-Hinkley with the mean known (one-sided CUSUM) on a group's excess surprise; see the
    module docstring. :meth:`update` once per tick; :attr:`alarm`, :meth:`reading`."""

    def __init__(self, settings: DriftSettings | None = None) -> None:
        self.settings = settings or DriftSettings()
        self.statistic = 0.0
        self.alarm = False
        self.since: float | None = None
        self.alarms = 0
        #: Ticks folded in (the series' length, for a false-alarm rate).
        self.updates = 0
        self._variance = 0.0
        self._ticks = 0

    def update(self, mean: float, var: float, k: int, now: float) -> bool | None:
        """Fold one tick's mean excess surprise ``mean`` over ``k`` agent-steps whose variance
        (population) was ``var``; ``now``: wall clock seconds. Returns True when the alarm
        fires at this tick, False when it clears, None when neither."""
        if k <= 0 or not math.isfinite(mean):
            return None
        s = self.settings
        # One agent-step's variance: the tick's spread between agents, or for a tick of one
        # agent its deviation from the known mean 0.
        sample_var = var * k / (k - 1) if k > 1 and math.isfinite(var) else mean * mean
        self._ticks += 1
        self.updates += 1
        weight = max(1.0 / self._ticks, VARIANCE_WEIGHT)
        self._variance += weight * (sample_var - self._variance)
        se = max(math.sqrt(self._variance / k), MIN_SE)
        z = (mean - s.tolerance) / se
        self.statistic = min(CAP * s.threshold, max(0.0, self.statistic + z - s.drift))
        if not self.alarm and self.statistic > s.threshold:
            self.alarm, self.since = True, now
            self.alarms += 1
            return True
        if self.alarm and self.statistic <= CLEAR * s.threshold:
            self.alarm, self.since = False, None
            return False
        return None

    def reset(self) -> None:
        """Forget the series (a new model: what was measured was another's)."""
        self.statistic = 0.0
        self.alarm = False
        self.since = None
        self._variance = 0.0
        self._ticks = 0

    def reading(self) -> DriftReading:
        return DriftReading(
            alarm=self.alarm,
            statistic=self.statistic,
            threshold=self.settings.threshold,
            since=self.since,
        )
