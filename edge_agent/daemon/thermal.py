"""CPU temperature from ``/sys/class/thermal`` (absent on most x86 VMs: then ``None``), and a
Raspberry Pi's under-voltage and throttling flags from its firmware (absent elsewhere)."""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass

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
    falls below ``throttle_c`` (every group pauses meanwhile: :mod:`edge_agent.daemon.protection`).
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


# --- the Raspberry Pi firmware's under-voltage and throttling flags -----------------------------

#: Where the Raspberry Pi kernel's firmware driver exposes what ``vcgencmd get_throttled``
#: prints (hex): ``/sys/devices/platform/soc/soc:firmware/get_throttled`` on Raspberry Pi OS.
#: Absent on other hardware (and on mainline kernels without the Raspberry Pi patches).
THROTTLED_GLOB = "/sys/devices/platform/soc*/*firmware/get_throttled"

#: Bit -> name of the flags (the Raspberry Pi documentation of ``vcgencmd get_throttled``):
#: bits 0-3 hold now, bits 16-19 have held at some point since boot.
THROTTLE_BITS: dict[int, str] = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


@dataclass(frozen=True)
class FirmwareFlags:
    """The firmware's flags decoded (``value``: the raw bits, as ``vcgencmd`` shows them)."""

    value: int

    def flag(self, name: str) -> bool:
        """Whether flag ``name`` (a value of :data:`THROTTLE_BITS`) is set."""
        bit = next(b for b, n in THROTTLE_BITS.items() if n == name)
        return bool(self.value >> bit & 1)

    def as_dict(self) -> dict[str, int]:
        """Every flag as 0/1, and ``raw``: the status file's, telemetry's and Prometheus'."""
        out = {name: int(self.value >> bit & 1) for bit, name in THROTTLE_BITS.items()}
        out["raw"] = self.value
        return out

    def describe(self) -> str:
        """``ok``, or what holds now and what has held since boot, with the raw hex."""
        now = [
            n.replace("_", " ") for b, n in THROTTLE_BITS.items() if b < 16 and self.value >> b & 1
        ]
        since = [
            n.removesuffix("_occurred").replace("_", " ")
            for b, n in THROTTLE_BITS.items()
            if b >= 16 and self.value >> b & 1
        ]
        parts = [f"NOW {', '.join(now)}"] if now else []
        parts += [f"since boot {', '.join(since)}"] if since else []
        return f"{'; '.join(parts) or 'ok'} (0x{self.value:x})"


def read_firmware_flags(pattern: str = THROTTLED_GLOB) -> FirmwareFlags | None:
    """The Raspberry Pi firmware's under-voltage and throttling flags from the first file
    matching ``pattern`` (hex, with or without ``0x``); None where there is none (not a Pi) or
    it cannot be read."""
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, encoding="ascii") as fh:
                return FirmwareFlags(int(fh.read().strip(), 16))
        except (OSError, ValueError):
            continue
    return None
