"""Where running daemons announce their status files, so ``edge-agent status`` finds them.

Each daemon writes ``<pid>.json`` (its pid, status file and config) into one directory at start
and removes it when it stops. ``edge-agent status`` without ``--config`` lists the entries whose
process still runs: one daemon is shown; several are listed, to be chosen with ``--config`` or
``--status-file``. The directory is ``$EDGE_AGENT_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/edge-agent/daemons`` (a logged-in user's tmpfs), else
``/run/edge-agent/daemons`` for root, else ``{tmp}/edge-agent-{uid}/daemons``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_agent.fsutil import write_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningDaemon:
    """One announced daemon."""

    pid: int
    status_file: Path
    config: str
    entry: Path


def runtime_dir() -> Path:
    """The directory daemons announce themselves in (module docstring)."""
    explicit = os.environ.get("EDGE_AGENT_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "edge-agent" / "daemons"
    if os.geteuid() == 0:
        return Path("/run/edge-agent/daemons")
    return Path(tempfile.gettempdir()) / f"edge-agent-{os.getuid()}" / "daemons"


def announce(status_file: Path, config: str, directory: Path | None = None) -> Path | None:
    """Write this process's entry; returns its path, or None if the directory is not writable
    (the daemon runs all the same; ``status`` then needs ``--config``)."""
    folder = directory or runtime_dir()
    entry = folder / f"{os.getpid()}.json"
    record = {"pid": os.getpid(), "status_file": str(status_file.absolute()), "config": config}
    try:
        write_atomic(entry, json.dumps(record).encode(), durable=False, mkdir=True)
    except OSError as err:
        logger.warning("cannot announce the status file in %s: %s", folder, err)
        return None
    return entry


def withdraw(entry: Path | None) -> None:
    """Remove an entry written by :func:`announce` (at a clean stop)."""
    if entry is not None:
        entry.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_daemons(directory: Path | None = None) -> list[RunningDaemon]:
    """Announced daemons whose process still runs, oldest pid first; stale entries (a daemon
    killed with SIGKILL) are ignored."""
    folder = directory or runtime_dir()
    found = []
    for entry in sorted(folder.glob("*.json")):
        try:
            record = json.loads(entry.read_text())
            daemon = RunningDaemon(
                pid=int(record["pid"]),
                status_file=Path(record["status_file"]),
                config=str(record["config"]),
                entry=entry,
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid_alive(daemon.pid):
            found.append(daemon)
    return sorted(found, key=lambda d: d.pid)
