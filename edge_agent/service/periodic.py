"""Periodic jobs of a service's loop: run a job at most every so many seconds."""

from __future__ import annotations

from collections.abc import Callable


class Periodic:
    """A job a service's loop runs at most every ``interval_s`` seconds (monotonic clock), checked
    after each turn of the loop: the one helper for the daemon's status, RSS, temperature,
    snapshot, telemetry and report timers and the hub's. ``interval_s`` is read at each run,
    so a callable follows a value that changes (the telemetry interval a reload sets)."""

    def __init__(
        self,
        interval_s: float | Callable[[], float],
        job: Callable[[], object],
        *,
        now: float,
        first_after: bool = False,
    ) -> None:
        self._interval = interval_s
        self.job = job
        self.next_at = now + (self.interval_s if first_after else 0.0)

    @property
    def interval_s(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    def run_if_due(self, now: float) -> bool:
        """Run the job if its time has come; returns whether it ran."""
        if now < self.next_at:
            return False
        self.next_at = now + self.interval_s
        self.job()
        return True
