"""One daemon per state directory: an exclusive ``flock`` on ``{state_dir}/edge-agentd.lock``.

Two daemons on one state directory would both restore and both write snapshots, the outbox and
the sequence numbers, each overwriting the other's. The daemon takes the lock before it reads or
writes anything there and holds it for its life (the kernel drops it when the process ends,
however it ends; forked workers share it until they exit with the daemon). The file holds the
holder's pid and command line, so that a second daemon refuses in one line that names it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Final

from edge_agent.errors import ConfigError, EdgeAgentError

__all__ = ["LOCK_NAME", "StateDirBusyError", "StateDirLock", "held_by", "lock_holder"]

LOCK_NAME: Final = "edge-agentd.lock"


class StateDirBusyError(EdgeAgentError):
    """Another process holds the state directory's lock (``run`` exits 2: restarting this one
    cannot help while the other runs)."""


def lock_holder(state_dir: Path) -> str:
    """Who holds ``state_dir``'s lock, as written in the lock file: ``pid N (command line)``."""
    try:
        text = (state_dir / LOCK_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "an unknown process"
    pid, _, command = text.partition("\n")
    if not pid.strip().isdigit():
        return "an unknown process (it has not written its pid yet)"
    command = command.strip()
    return f"pid {pid.strip()}" + (f" ({command})" if command else "")


def held_by(state_dir: Path) -> str | None:
    """Who holds ``state_dir``'s lock now (as :func:`lock_holder`), or None when nobody does.
    Takes nothing: ``check-config`` beside a running daemon asks this."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(state_dir)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _command_line() -> str:
    """This process's command line as ps shows it (``/proc/self/cmdline``; else ``sys.argv``)."""
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
        words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    except OSError:
        words = list(sys.argv)
    return " ".join(words)[:512]


class StateDirLock:
    """The held lock of one state directory; :meth:`release` (or the process's end) frees it."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    @property
    def path(self) -> Path:
        return self.state_dir / LOCK_NAME

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirLock:
        """Take the lock of ``state_dir`` (which exists) without waiting, and write this
        process's pid and command line into it. Raises :class:`StateDirBusyError` naming the
        holder when another process has it, ConfigError when the file cannot be opened."""
        path = state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ConfigError(
                f"{path}: cannot open the state directory's lock: {err.strerror or err}", path=None
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusyError(
                f"state_dir {state_dir} is in use by another daemon, {lock_holder(state_dir)}: "
                "two daemons on one state directory overwrite each other's snapshots; stop "
                "that one or give this one another state_dir (--state-dir DIR)"
            ) from None
        except OSError as err:
            os.close(fd)
            raise ConfigError(f"{path}: cannot lock: {err.strerror or err}", path=None) from err
        command = _command_line()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only its holder is not named
        return cls(state_dir, fd)

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: removing it would race a new holder."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
