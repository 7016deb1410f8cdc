"""The protocol's name rule and integer range, apart from the message models: what a config
validates against without importing the wire protocol (``protocol`` re-exports both)."""

from __future__ import annotations

from typing import Final

__all__ = ["NAME_PATTERN", "UINT32"]

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Node ids, fleet names, group names and agent ids: one safe MQTT topic level, 1-64 chars."""

UINT32: Final = 1 << 32
