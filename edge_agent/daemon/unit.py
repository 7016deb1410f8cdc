"""The device daemon's systemd unit and the drop-in that adapts it to a firmware profile.

The unit is a static file (``edge_agent/data/edge-agent.service``, linked from ``systemd/``;
``edge-agent systemd-unit`` prints it) with the Raspberry Pi 4 2 GB profile's numbers;
:func:`profile_dropin` (``edge-agent systemd-dropin --profile NAME``) writes what differs per
device into a drop-in. sd_notify and the watchdog gate, which every service shares, are
:mod:`edge_agent.service.systemd`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.config.profiles import FirmwareProfile

__all__ = ["DROPIN_PATH", "SHIPPED_EXEC_START", "profile_dropin"]

SHIPPED_EXEC_START = "/opt/edge-agent/venv/bin/edge-agentd --config /etc/edge-agent/config.toml"
"""``ExecStart=`` of the shipped unit (``systemd/edge-agent.service``): the venv layout of
``docs/deployment.md``."""

DROPIN_PATH = "/etc/systemd/system/edge-agent.service.d/profile.conf"
"""Where ``edge-agent systemd-dropin`` output goes on a device."""


def profile_dropin(profile: FirmwareProfile, *, exec_start: str | None = None) -> str:
    """A systemd drop-in for the static unit: the profile's memory limits (``MemoryHigh=``,
    ``MemoryMax=``) and watchdog, and optionally another ``ExecStart=`` (a drop-in first clears
    the unit's). Raises ``ValueError`` for a command systemd would misread."""
    lines = [
        f"# {DROPIN_PATH}: edge-agent systemd-dropin --profile {profile.name}",
        "[Service]",
        f"MemoryHigh={profile.memory_high_mb}M",
        f"MemoryMax={profile.memory_max_mb}M",
        f"WatchdogSec={profile.watchdog_interval_s:g}s",
    ]
    if exec_start is not None:
        if not exec_start.strip() or any(ch in exec_start for ch in "\r\n\0"):
            raise ValueError(f"exec_start must be one non-empty line, got {exec_start!r}")
        if not exec_start.startswith("/"):
            raise ValueError(f"exec_start must start with an absolute path, got {exec_start!r}")
        lines += ["ExecStart=", f"ExecStart={exec_start}"]
    return "\n".join(lines) + "\n"
