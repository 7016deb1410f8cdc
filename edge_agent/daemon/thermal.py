"""CPU temperature from ``/sys/class/thermal`` (absent on most x86 VMs: then ``None``)."""

from __future__ import annotations

import glob
import logging

logger = logging.getLogger(__name__)


def read_cpu_temp_c(zone_glob: str = "/sys/class/thermal/thermal_zone*/temp") -> float | None:
    """Hottest thermal zone in degrees Celsius, or ``None`` when no zone can be read."""
    hottest: float | None = None
    for path in sorted(glob.glob(zone_glob)):
        try:
            with open(path, encoding="ascii") as fh:
                milli = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        value = milli / 1000.0
        hottest = value if hottest is None else max(hottest, value)
    return hottest


class ThermalGovernor:
    """The thermal state of the device, from readings: ``throttled`` from ``throttle_c`` until
    the temperature falls ``hysteresis_c`` below it; ``critical`` from ``critical_c`` until it
    falls below ``throttle_c`` (every group pauses meanwhile: :mod:`edge_agent.daemon.health`).
    A state machine only: the daemon acts on its changes."""

    def __init__(
        self,
        throttle_c: float,
        factor: float,
        hysteresis_c: float = 5.0,
        critical_c: float | None = None,
    ) -> None:
        self.throttle_c = throttle_c
        self.critical_c = critical_c
        self.factor = factor
        self.hysteresis_c = hysteresis_c
        self.throttled = False
        self.critical = False
        self.last_temp_c: float | None = None
        self.throttle_events = 0
        self.critical_events = 0

    def update(self, temp_c: float | None) -> bool | None:
        """Feed a reading; returns True/False when the throttled state changes, else None
        (``critical`` changes are read from the attribute)."""
        self.last_temp_c = temp_c
        if temp_c is None:
            return None
        if self.critical_c is not None:
            if not self.critical and temp_c >= self.critical_c:
                self.critical = True
                self.critical_events += 1
            elif self.critical and temp_c < self.throttle_c:
                self.critical = False
        if not self.throttled and temp_c >= self.throttle_c:
            self.throttled = True
            self.throttle_events += 1
            return True
        if self.throttled and temp_c < self.throttle_c - self.hysteresis_c:
            self.throttled = False
            return False
        return None
