"""The groups' state in and out of snapshots: what the daemon saves and what it restores at start.

:func:`save_groups` gathers every group's state (:meth:`GroupRuntime.state
<edge_agent.daemon.group_runtime.GroupRuntime.state>`, their own arrays, written out at once)
into one snapshot of the :class:`~edge_agent.daemon.snapshots.SnapshotStore`, each group's under
``group.<name>.`` beside what the snapshot records of it (:meth:`GroupRuntime.snapshot_meta`: the
model's identity and the group's size). :func:`restore_groups` loads the last good snapshot into
every group whose name, model and size still match (:meth:`GroupRuntime.restore`), straight into
the group's arrays, and says in the log what it restored, from where and how to start fresh.
Nothing here imports the service module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_agent import __version__
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.snapshots.store import SnapshotInfo, SnapshotStore
from edge_agent.errors import EdgeAgentError, SnapshotError

__all__ = ["SNAPSHOT_FORMAT", "restore_groups", "save_groups"]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "edge-agent-groups-v1"

#: ``event(kind, severity, detail)``: an event for the status file and the fleet.
Event = Callable[[str, str, str], None]


def save_groups(
    store: SnapshotStore, groups: Sequence[GroupRuntime], config: str, *, force: bool = False
) -> SnapshotInfo | None:
    """Write every group's state to a snapshot of ``store`` (``config``: where the config came
    from, recorded in the snapshot); None when the store's hourly budget is spent (``force``
    writes anyway). Raises OSError or SnapshotError when it cannot be written."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "groups": {},
        "version": __version__,
        "config": config,
    }
    for g in groups:
        for k, v in g.state().items():
            arrays[f"group.{g.name}.{k}"] = v
        meta["groups"][g.name] = g.snapshot_meta()
    return store.save(arrays, meta, force=force)


def restore_groups(
    store: SnapshotStore, groups: Sequence[GroupRuntime], event: Event, note: str = ""
) -> str | None:
    """Load the last good snapshot of ``store`` into the groups whose name, model and size still
    match; returns the snapshot's path (None: there was none, or none could be read). ``event``
    reports each damaged snapshot passed over; ``note`` ends the log line (the demo's shared
    state directory)."""
    try:
        snap = store.load_latest()
    except SnapshotError as err:
        logger.error("snapshots unreadable: %s", err)
        return None
    for path, reason in store.corrupt_events:
        event("snapshot_corrupt", "warning", f"{path}: {reason}")
    if snap is None:
        logger.info("fresh start: no snapshot to restore in %s%s", store.state_dir, note)
        return None
    groups_meta = snap.meta.get("groups", {})
    restored: dict[str, int] = {}
    for g in groups:
        meta = groups_meta.get(g.name)
        if not meta:
            continue
        # read straight into the group's arrays: nothing inflated is held beside them
        state = snap.arrays.under(f"group.{g.name}.")
        try:
            if not g.restore(meta, state):
                continue
        except EdgeAgentError as err:
            logger.warning("snapshot for group %s not restored: %s", g.name, err)
            continue
        restored[g.name] = g.n_agents
    logger.info(
        "restored %s from snapshot %s (seq %d, written %s, %s ago, by config %s); "
        "to start fresh, move it away or run with another state_dir%s",
        ", ".join(f"{name} ({n} agents)" for name, n in restored.items()) or "no group",
        snap.path,
        snap.seq,
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.created)),
        _duration(max(0.0, time.time() - snap.created)),
        snap.meta.get("config", "unknown"),
        note,
    )
    for name in groups_meta:
        if name not in restored:
            logger.info(
                "snapshot group %s not restored: no group of that name, model and size", name
            )
    return str(snap.path)


def _duration(seconds: float) -> str:
    """``42 s``, ``5.0 min``, ``3.2 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
