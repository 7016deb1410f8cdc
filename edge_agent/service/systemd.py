"""systemd integration without dependencies: sd_notify, a progress-based watchdog, fault dumps.

* :class:`SdNotifier` speaks the ``sd_notify(3)`` datagram protocol over ``$NOTIFY_SOCKET``
  (a filesystem path, or the abstract namespace when it starts with ``@``). Every method is a
  no-op returning ``False`` when the daemon is not run by systemd, and a failed send is logged
  once and counted, never raised: systemd being slow must not take the tick loop down.
* :class:`WatchdogGate` decides when ``WATCHDOG=1`` may be sent. It reports progress, not
  liveness: the daemon records every completed tick and pings only while ticks keep finishing, so
  a scheduler stuck in a backend call stops the pings and systemd restarts the service.
* :func:`fault_dumps_to_journal`: the thread stacks Python's ``faulthandler`` writes when the
  watchdog kills the daemon (``SIGABRT``) go to their own journal stream at priority
  ``warning``, so that ``journalctl -p warning`` shows the one trace that explains the kill
  (written to stderr they would be ``info``: faulthandler writes raw lines from a signal
  handler, without the ``<4>`` prefix every logged line has).

Both services use it: ``edge-agentd`` and ``edge-agent-hub``. The device daemon's unit file and
its per-profile drop-in are :mod:`edge_agent.daemon.unit`.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)

__all__ = [
    "JOURNAL_STDOUT",
    "SdNotifier",
    "WatchdogGate",
    "fault_dumps_to_journal",
    "stderr_is_journal",
]


class SdNotifier:
    """Send ``sd_notify`` state changes to the service manager.

    ``env`` defaults to ``os.environ``; it is read once, at construction. One unbound
    ``AF_UNIX``/``SOCK_DGRAM`` socket is opened on the first send and reused; each call sends one
    datagram. Methods return ``True`` when the datagram was sent and ``False`` when
    ``NOTIFY_SOCKET`` is unset or unusable or the send failed. Safe to call from several threads.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._address = _parse_notify_socket(self._env.get("NOTIFY_SOCKET"))
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.send_errors = 0

    @property
    def enabled(self) -> bool:
        """Whether a usable ``NOTIFY_SOCKET`` was given (the process runs under ``Type=notify``)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=value`` assignments as one datagram, joined by newlines."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                    # Never block the tick loop: a manager that does not read its socket (or a
                    # test harness that stopped) costs a dropped, counted notification.
                    self._sock.setblocking(False)
                self._sock.sendto(payload, self._address)
            except OSError as err:
                self.send_errors += 1
                if self.send_errors == 1:
                    logger.warning(
                        "sd_notify to %r failed: %s (further failures are only counted)",
                        self._env.get("NOTIFY_SOCKET"),
                        err,
                    )
                else:
                    logger.debug("sd_notify failed again (%d failures): %s", self.send_errors, err)
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``, optionally with ``STATUS=``: start-up (or a reload) has finished."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status_assignment(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(_status_assignment(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive ping; send it only when :class:`WatchdogGate` says so."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (the final snapshot is being written)."""
        if status is None:
            return self.notify("STOPPING=1")
        return self.notify("STOPPING=1", _status_assignment(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (CLOCK_MONOTONIC in µs).

        systemd >= 253 (``Type=notify-reload``) uses the timestamp to match the reload it asked
        for; older versions ignore it. Send :meth:`ready` once the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more before the start/stop timeout fires."""
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds from ``WATCHDOG_USEC``, or ``None`` when disabled.

        As ``sd_watchdog_enabled(3)``: when ``WATCHDOG_PID`` is set and is not this process's pid
        the watchdog belongs to another process and ``None`` is returned. Ping at half of it.
        """
        raw_usec = self._env.get("WATCHDOG_USEC")
        if raw_usec is None:
            return None
        raw_pid = self._env.get("WATCHDOG_PID")
        if raw_pid is not None:
            try:
                pid = int(raw_pid)
            except ValueError:
                logger.warning(
                    "ignoring the systemd watchdog: WATCHDOG_PID=%r is not a pid", raw_pid
                )
                return None
            if pid != os.getpid():
                return None
        try:
            usec = int(raw_usec)
        except ValueError:
            logger.warning(
                "ignoring the systemd watchdog: WATCHDOG_USEC=%r is not a number", raw_usec
            )
            return None
        if usec <= 0:
            return None
        return usec / 1_000_000

    def stats(self) -> dict[str, int | bool]:
        """JSON-able counters for status and telemetry."""
        return {"enabled": self.enabled, "sent": self.sent, "send_errors": self.send_errors}

    def close(self) -> None:
        """Close the socket; a later call opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _parse_notify_socket(value: str | None) -> str | None:
    """``NOTIFY_SOCKET`` as an ``AF_UNIX`` address (``@name`` -> ``"\\0name"``) or ``None``."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    logger.warning(
        "ignoring NOTIFY_SOCKET=%r: only AF_UNIX paths and @abstract names are supported", value
    )
    return None


def _status_assignment(text: str) -> str:
    return "STATUS=" + text.replace("\r", " ").replace("\n", " ")


class WatchdogGate:
    """Decide when to send ``WATCHDOG=1`` from tick progress.

    ``watchdog_interval_s`` is the watchdog timeout (:meth:`SdNotifier.watchdog_interval`);
    ``tick_period_s`` the scheduler's tick period. :meth:`should_ping` is true only when

    * the last completed tick ended within ``max(2 * tick_period_s, stale_floor_s)`` of ``now``,
      so a stalled loop stops pinging and systemd's watchdog fires; and
    * at least ``watchdog_interval_s / 2`` has passed since the last ping it allowed (systemd's
      advice), so a fast loop does not flood the notify socket.

    A ``True`` answer counts as a ping sent. ``now`` is ``time.monotonic()``; the gate reads no
    clock itself. Keep ``2 * tick_period_s`` below ``watchdog_interval_s`` or stalls shorter than
    that go unnoticed.
    """

    def __init__(
        self, *, watchdog_interval_s: float, tick_period_s: float, stale_floor_s: float = 2.0
    ) -> None:
        if not watchdog_interval_s > 0:
            raise ValueError(f"watchdog_interval_s must be > 0, got {watchdog_interval_s!r}")
        if not tick_period_s > 0:
            raise ValueError(f"tick_period_s must be > 0, got {tick_period_s!r}")
        if not stale_floor_s >= 0:
            raise ValueError(f"stale_floor_s must be >= 0, got {stale_floor_s!r}")
        self.watchdog_interval_s = watchdog_interval_s
        self.ping_every_s = watchdog_interval_s / 2
        self.stale_after_s = max(2 * tick_period_s, stale_floor_s)
        self.last_tick: float | None = None
        self.last_ping: float | None = None
        self.pings = 0
        self.stale_refusals = 0

    def record_tick(self, now: float) -> None:
        """Note that a tick completed at ``now``."""
        self.last_tick = now

    def is_stalled(self, now: float) -> bool:
        """Whether no tick has completed within the staleness window (or none ever did)."""
        return self.last_tick is None or now - self.last_tick > self.stale_after_s

    def should_ping(self, now: float) -> bool:
        """Whether to send ``WATCHDOG=1`` now; a ``True`` answer is recorded as the ping."""
        if self.is_stalled(now):
            self.stale_refusals += 1
            return False
        if self.last_ping is not None and now - self.last_ping < self.ping_every_s:
            return False
        self.last_ping = now
        self.pings += 1
        return True


# --- fault dumps to the journal ---------------------------------------------------------------

JOURNAL_STDOUT = "/run/systemd/journal/stdout"
"""journald's stream socket: what ``sd_journal_stream_fd(3)`` connects to."""
#: syslog's LOG_WARNING.
_LOG_WARNING = 4
#: The journal stream that fault dumps go to, kept open for the life of the process.
_fault_stream: socket.socket | None = None


def stderr_is_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) is the journal stream systemd connected (``JOURNAL_STREAM`` is
    its ``device:inode``, as ``systemd.exec(5)`` says to check)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def fault_dumps_to_journal(
    identifier: str = "edge-agentd",
    *,
    env: Mapping[str, str] | None = None,
    socket_path: str = JOURNAL_STDOUT,
) -> bool:
    """Under journald, send ``faulthandler``'s dumps (every thread's stack on ``SIGABRT``,
    ``SIGSEGV``, ...) to a journal stream of their own at priority ``warning``.

    The stream is what ``sd_journal_stream_fd(identifier, LOG_WARNING, 0)`` opens: a connection
    to journald's stdout socket with a header naming the identifier and priority. Returns
    whether the dumps go there; False (stderr keeps them) when stderr is not the journal or
    the socket cannot be reached, which is logged."""
    global _fault_stream  # noqa: PLW0603 - one stream per process, held until it ends
    if not stderr_is_journal(env):
        return False
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        stream.connect(socket_path)
        stream.shutdown(socket.SHUT_RD)
        # identifier, unit (empty), priority, level prefix, to syslog, kmsg, console
        stream.sendall(f"{identifier}\n\n{_LOG_WARNING}\n0\n0\n0\n0\n".encode())
    except OSError as err:
        stream.close()
        logger.warning(
            "fault dumps stay on stderr (journal priority info): cannot open a journal stream "
            "at %s: %s",
            socket_path,
            err,
        )
        return False
    faulthandler.enable(file=stream.fileno(), all_threads=True)
    if _fault_stream is not None:
        _fault_stream.close()
    _fault_stream = stream
    return True
