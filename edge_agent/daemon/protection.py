"""The daemon's protection: memory degradation and thermal protection, one owner for both.

(Not the groups' health, the measures of how their models fit what they see: docs/health.md.)

Memory (every second): RSS above the profile's soft limit halves every history (not below
:data:`MIN_HISTORY` steps), then pauses the lowest-priority running group, one step per check;
groups paused for memory resume once RSS is back under 90 % of the limit.

Temperature (every 5 s, the hottest thermal zone): at ``throttle_c`` the tick rate drops to
``throttled_tick_factor`` x the base rate until the CPU is ``5 C`` below ``throttle_c``; at
``critical_c`` every running group pauses (no agent steps, the daemon keeps its loop, watchdog,
status and fleet link) until the temperature falls below ``throttle_c``.

Power (with the temperature, on a Raspberry Pi): the firmware's under-voltage and throttling
flags (what ``vcgencmd get_throttled`` prints) are kept for the status file, telemetry and
Prometheus; under-voltage appearing is logged and reported as an event.

Every change is logged and reported through the ``emit`` callback the daemon passes in (its
event log, which publishes over MQTT), so this module never imports the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from edge_agent.config.profiles import FirmwareProfile
from edge_agent.core.budget import RssSampler, format_bytes
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.scheduler import TickClock
from edge_agent.daemon.thermal import FirmwareFlags, ThermalGovernor

logger = logging.getLogger(__name__)

#: Never shrink a history below this many steps when degrading.
MIN_HISTORY = 8

#: ``emit(name, severity, message)``: the daemon's event log.
EventSink = Callable[[str, str, str], None]


class Protection:
    """Watches RSS and temperature and degrades, pauses and resumes groups accordingly."""

    def __init__(self, profile: FirmwareProfile, rss: RssSampler, emit: EventSink) -> None:
        self.profile = profile
        self.rss = rss
        self.emit = emit
        t = profile.thermal
        self.thermal = ThermalGovernor(
            t.throttle_c, t.throttled_tick_factor, critical_c=t.critical_c
        )
        self.degradations: list[str] = []
        #: The Raspberry Pi firmware's flags at the last check; None where there are none.
        self.power: FirmwareFlags | None = None

    # -- power ------------------------------------------------------------------------------------
    def check_power(self, flags: FirmwareFlags | None) -> None:
        """Keep the firmware's flags; under-voltage that was not there at the last check is an
        event (a weak power supply: the first thing to check on a Pi that misbehaves)."""
        before = self.power
        self.power = flags
        if flags is None or not flags.flag("under_voltage"):
            return
        if before is None or not before.flag("under_voltage"):
            msg = (
                f"under-voltage: the power supply cannot hold 5 V ({flags.describe()}); the "
                "firmware throttles the CPU and the SD card is at risk"
            )
            logger.warning("%s", msg)
            self.emit("under_voltage", "warning", msg)

    # -- memory -----------------------------------------------------------------------------------
    def check_memory(self, groups: Sequence[GroupRuntime]) -> None:
        rss = self.rss.sample()
        soft = self.profile.soft_limit_bytes
        if rss <= soft:
            if rss < 0.9 * soft:
                self._resume(groups, "memory", "RSS back under the soft limit")
            return
        # Step 1: shrink histories by half (not below MIN_HISTORY); step 2: pause low priority.
        halved = [g for g in groups if g.halve_history(MIN_HISTORY)]
        if halved:
            msg = (
                f"RSS {format_bytes(rss)} above soft limit {format_bytes(soft)}: histories halved "
                f"({', '.join(f'{g.name}={g.history_capacity}' for g in halved)})"
            )
        else:
            running = sorted((g for g in groups if not g.paused), key=lambda g: g.config.priority)
            if len(running) <= 1:
                msg = f"RSS {format_bytes(rss)} above soft limit; nothing left to degrade"
                if msg in self.degradations[-1:]:
                    return
            else:
                victim = running[0]
                victim.pause("memory")
                msg = (
                    f"RSS {format_bytes(rss)} above soft limit {format_bytes(soft)}: paused group "
                    f"{victim.name} (priority {victim.config.priority})"
                )
        self.degradations.append(msg)
        logger.warning("%s", msg)
        self.emit("memory_degraded", "warning", msg)

    # -- temperature ------------------------------------------------------------------------------
    def check_thermal(
        self, groups: Sequence[GroupRuntime], clock: TickClock, base_hz: float, temp: float | None
    ) -> None:
        """Act on a temperature reading: throttle or restore the tick rate, pause every group
        above ``critical_c`` and resume them below ``throttle_c``."""
        was_critical = self.thermal.critical
        change = self.thermal.update(temp)
        if change is True:
            hz = base_hz * self.thermal.factor
            clock.set_rate(hz)
            msg = (
                f"CPU {temp:.1f} C >= {self.thermal.throttle_c:.1f} C: "
                f"tick rate lowered to {hz:.2f} Hz"
            )
            logger.warning("%s", msg)
            self.emit("thermal_throttle", "warning", msg)
        elif change is False:
            clock.set_rate(base_hz)
            logger.info("CPU %.1f C: tick rate restored to %.2f Hz", temp or 0.0, base_hz)
        if self.thermal.critical and not was_critical:
            paused = [g.name for g in groups if not g.paused]
            for g in groups:
                g.pause("thermal")
            msg = (
                f"CPU {temp:.1f} C >= critical {self.thermal.critical_c:.1f} C: every group "
                f"paused ({', '.join(paused) or 'none running'}) until below "
                f"{self.thermal.throttle_c:.1f} C"
            )
            self.degradations.append(msg)
            logger.error("%s", msg)
            self.emit("thermal_critical", "error", msg)
        elif was_critical and not self.thermal.critical:
            self._resume(groups, "thermal", f"CPU {temp:.1f} C below {self.thermal.throttle_c} C")

    def _resume(self, groups: Sequence[GroupRuntime], reason: str, why: str) -> None:
        for g in groups:
            if g.resume(reason):
                logger.info("%s: resumed group %s", why, g.name)
