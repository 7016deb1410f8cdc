"""Where running daemons announce their status files, so ``edge-agent status`` finds them.

Each daemon writes ``<pid>.json`` (its pid, status file and config) into one directory at start
(removing entries of daemons that died without a clean stop) and removes it when it stops.
``edge-agent status`` without ``--config`` lists the entries whose process still runs: one daemon
is shown; several are listed, to be chosen with ``--config`` or ``--status-file``.

The directory is ``$EDGE_AGENT_RUNTIME_DIR``, else ``$RUNTIME_DIRECTORY/daemons`` under systemd
(``RuntimeDirectory=edge-agent``: ``/run/edge-agent/daemons``), else
``$XDG_RUNTIME_DIR/edge-agent/daemons`` (a logged-in user's tmpfs), else
``/run/edge-agent/daemons`` for root, else ``{tmp}/edge-agent-{uid}/daemons``. ``status`` looks in
its own user's directory and in ``/run/edge-agent/daemons`` (or only in
``$EDGE_AGENT_RUNTIME_DIR`` when that is set).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.fsutil import write_atomic
from edge_agent.service.pids import pid_alive

logger = logging.getLogger(__name__)


#: Where a daemon under systemd (``RuntimeDirectory=edge-agent``) or run by root announces itself.
SYSTEM_DIR = Path("/run/edge-agent/daemons")


@dataclass(frozen=True)
class RunningDaemon:
    """One announced daemon whose process runs. ``status_file`` is None when its entry cannot
    be read (``problem`` says why: typically the entry of another user's daemon)."""

    pid: int
    entry: Path
    status_file: Path | None
    config: str = ""
    problem: str = ""


def runtime_dir() -> Path:
    """The directory this process announces itself in (module docstring)."""
    explicit = os.environ.get("EDGE_AGENT_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("RUNTIME_DIRECTORY")  # RuntimeDirectory= (colon-separated list)
    if systemd:
        return Path(systemd.split(":")[0]) / "daemons"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "edge-agent" / "daemons"
    if os.geteuid() == 0:
        return SYSTEM_DIR
    return Path(tempfile.gettempdir()) / f"edge-agent-{os.getuid()}" / "daemons"


def search_dirs() -> list[Path]:
    """Where ``edge-agent status`` looks: ``$EDGE_AGENT_RUNTIME_DIR`` alone when set, else this
    user's :func:`runtime_dir` and :data:`SYSTEM_DIR` (the systemd service's)."""
    if os.environ.get("EDGE_AGENT_RUNTIME_DIR"):
        return [runtime_dir()]
    return list(dict.fromkeys((runtime_dir(), SYSTEM_DIR)))


def _entry_pid(entry: Path) -> int | None:
    """The pid an entry is named after (``<pid>.json``), None for other files."""
    return int(entry.stem) if entry.stem.isascii() and entry.stem.isdigit() else None


def announce(status_file: Path, config: str, directory: Path | None = None) -> Path | None:
    """Write this process's entry; returns its path, or None if the directory is not writable
    (the daemon runs all the same; ``status`` then needs ``--config``)."""
    folder = directory or runtime_dir()
    for other in folder.glob("*.json"):  # daemons that died without a clean stop (SIGKILL, OOM)
        pid = _entry_pid(other)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            try:
                other.unlink()
            except OSError:
                pass
            else:
                logger.info("removed the entry of a daemon no longer running: %s", other)
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


def running_daemons(directories: Sequence[Path] | None = None) -> list[RunningDaemon]:
    """Announced daemons whose process still runs, in ``directories`` (default
    :func:`search_dirs`), lowest pid first. Entries of dead processes (a daemon killed with
    SIGKILL) are ignored; an entry that cannot be read is returned with its ``problem``."""
    found: dict[int, RunningDaemon] = {}
    for folder in directories if directories is not None else search_dirs():
        for entry in sorted(folder.glob("*.json")):
            pid = _entry_pid(entry)
            if pid is None or pid in found or not pid_alive(pid):
                continue
            try:
                record = json.loads(entry.read_text())
                found[pid] = RunningDaemon(
                    pid=pid,
                    entry=entry,
                    status_file=Path(record["status_file"]),
                    config=str(record["config"]),
                )
            except OSError as err:
                found[pid] = RunningDaemon(
                    pid, entry, None, problem=f"cannot read {entry}: {err.strerror or err}"
                )
            except (ValueError, KeyError, TypeError) as err:
                found[pid] = RunningDaemon(pid, entry, None, problem=f"{entry}: malformed ({err})")
    return [found[pid] for pid in sorted(found)]
