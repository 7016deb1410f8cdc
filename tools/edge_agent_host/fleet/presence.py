"""A node's presence as the fleet tables, the hub's page and its metrics show it: one rule.

A node's retained state topic says ``online`` or ``offline`` (its birth, its will). That is not
enough: a broker that locks a node out (``edge-agent-host broker revoke``) keeps its session
open with every right denied and refuses its will when the session ends, so no death message
ever comes and the retained state keeps saying ``online``. Such a node is ``silent``: its state
says online, but nothing live came from it for ``silent_after_s``.

The default, :data:`SILENT_AFTER_S`, is two telemetry periods of the slowest shipped firmware
profile (30 s: ``pi-zero-2w``, ``pi-3b-plus``, ``generic-arm64``), so a healthy node of any
profile is heard at least once within it; a fleet whose nodes report less often (the daemon's
``[mqtt] telemetry_interval_s``) sets it higher (``--silent-after``, the hub's
``[hub] silent_after_s``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, Literal

__all__ = ["PRESENCES", "SILENT_AFTER_S", "Presence", "presence"]

SILENT_AFTER_S: Final = 60.0
"""Seconds without a live message after which an online node is ``silent`` (module docstring)."""

Presence = Literal["online", "silent", "offline", "unknown"]
PRESENCES: Final[tuple[Presence, ...]] = ("online", "silent", "offline", "unknown")


def presence(
    row: Mapping[str, Any], silent_after_s: float = SILENT_AFTER_S, now: float | None = None
) -> Presence:
    """``online``, ``silent`` (online, but not heard for ``silent_after_s``), ``offline``, or
    ``unknown`` (no state message yet) for one fleet row.

    ``row``: ``online`` (the retained state: True, False or None), ``last_seen`` (when a live,
    not retained, message of any kind last came from the node: state, birth, death, telemetry,
    event, result; wall clock) and ``first_seen`` (when the node was first registered, by any
    message, retained or not): a node only ever heard in retained messages counts from then.
    Without either, an online node is taken at its word. Both stores keep them so: the hub
    service's (``hub/storage/database.py``) and the operator's client's (``fleetctl/store.py``).
    """
    online = row.get("online")
    if online is None:
        return "unknown"
    if not online:
        return "offline"
    heard = row.get("last_seen")
    if heard is None:
        heard = row.get("first_seen")
    now = time.time() if now is None else now
    if heard is not None and now - float(heard) > silent_after_s:
        return "silent"
    return "online"
