"""The fixed-rate tick clock and tick statistics.

Deadlines are absolute on the monotonic clock (``next = previous + period``), so a slow tick does
not shift every later one. A tick that ends after the next deadline is an *overrun*; if the loop
falls more than one period behind, the missed deadlines are skipped (counted in ``missed``) rather
than run back to back, which would only make the device hotter and later.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_agent.arrays import percentiles


class TickStats:
    """Latency of the last ``window`` ticks (a preallocated ring) and lifetime counters."""

    def __init__(self, window: int = 1024) -> None:
        self._lat = np.zeros(window, dtype=np.float64)
        self._n = 0
        self.ticks = 0
        self.overruns = 0
        self.missed = 0
        #: Seconds spent in ticks since start (a summary's sum: busy_s / ticks is the mean).
        self.busy_s = 0.0
        self.last_tick_monotonic: float | None = None

    def record(self, latency_s: float, *, overrun: bool, now: float) -> None:
        self._lat[self._n % len(self._lat)] = latency_s
        self._n += 1
        self.ticks += 1
        self.busy_s += latency_s
        self.overruns += int(overrun)
        self.last_tick_monotonic = now

    def percentiles_ms(self) -> tuple[float, float]:
        """``(p50, p99)`` tick latency in milliseconds over the window (0 before any tick)."""
        n = min(self._n, len(self._lat))
        if n == 0:
            return 0.0, 0.0
        p50, p99 = percentiles(self._lat[:n], [50.0, 99.0])
        return float(p50) * 1e3, float(p99) * 1e3


class TickClock:
    """Wakes the loop on monotonic deadlines at ``hz``; ``wait`` returns False once stopped."""

    def __init__(self, hz: float, stop: threading.Event) -> None:
        self._stop = stop
        self.hz = hz
        self.period = 1.0 / hz
        self.next_deadline = time.monotonic()

    def set_rate(self, hz: float) -> None:
        """Change the rate from the next tick on."""
        if hz <= 0:
            raise ValueError(f"tick rate must be positive, got {hz}")
        self.hz = hz
        self.period = 1.0 / hz

    def wait(self, stats: TickStats) -> bool:
        """Sleep until the next deadline; ``False`` when the stop event is set meanwhile."""
        now = time.monotonic()
        if now - self.next_deadline > self.period:  # more than a period behind: skip ahead
            behind = int((now - self.next_deadline) / self.period)
            stats.missed += behind
            self.next_deadline += behind * self.period
        delay = self.next_deadline - now
        if delay > 0 and self._stop.wait(delay):
            return False
        self.next_deadline += self.period
        return not self._stop.is_set()

    def is_overrun(self, end: float) -> bool:
        """Did a tick that ended at ``end`` miss the next deadline?"""
        return end > self.next_deadline
