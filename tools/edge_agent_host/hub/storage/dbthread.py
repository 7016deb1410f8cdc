"""The database's own thread: every call the service makes runs here, each with a deadline.

A PostgreSQL server that is stopped (SIGSTOP, a frozen VM, a storage stall) still has its TCP
connections acknowledged by the kernel: no statement timeout, TCP user timeout or keepalive
fires, and a driver call waits for ever. So the service's loop never calls the database itself:
:meth:`DatabaseThread.call` hands the call to this thread and waits for it, running the loop's
``while_waiting`` (the systemd watchdog, the status file) every :data:`TICK_S`. A call still
running at its deadline is overdue: ``abort`` is called (the engine shuts the connection's socket
down, or interrupts SQLite) so that the driver returns with an error, and
:class:`DatabaseOverdueError` tells the service to treat the database as down (hold the messages,
reconnect with back-off). While an overdue call has not come back, :attr:`DatabaseThread.busy`
stays True and every new call fails at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, TypeVar

from edge_agent_host.hub.storage.database import DatabaseUnavailableError

logger = logging.getLogger(__name__)

__all__ = ["TICK_S", "DatabaseOverdueError", "DatabaseThread"]

T = TypeVar("T")
TICK_S: Final = 0.5


class DatabaseOverdueError(DatabaseUnavailableError):
    """A database call did not finish by its deadline (or an earlier one still has not)."""


class DatabaseThread:
    """One daemon thread that runs database calls one at a time (see the module docstring)."""

    def __init__(self, name: str = "hub-db") -> None:
        self._cond = threading.Condition()
        self._job: tuple[Callable[[], object], Future[object]] | None = None
        self._busy_since: float | None = None
        self._stopping = False
        self.overdue = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a call (an overdue one, when the loop is not waiting) is still running."""
        with self._cond:
            return self._busy_since is not None

    def busy_s(self) -> float:
        """How long the running call has been running (0 when none is)."""
        with self._cond:
            return self._busy_s_locked()

    def call(
        self,
        fn: Callable[[], T],
        deadline_s: float,
        *,
        while_waiting: Callable[[], None],
        abort: Callable[[], None],
    ) -> T:
        """``fn()`` on the database thread; its result or its exception. Raises
        :class:`DatabaseOverdueError` when it has not finished within ``deadline_s`` (after
        calling ``abort``) or when an earlier call still has not. Called from a call that runs
        here, ``fn`` runs at once, within that call's deadline."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future[object] = Future()
        with self._cond:
            if self._busy_since is not None:
                raise DatabaseOverdueError(
                    f"an earlier call has not come back for {self._busy_s_locked():.0f} s"
                )
            self._job = (fn, future)
            self._busy_since = time.monotonic()
            self._cond.notify_all()
        deadline = time.monotonic() + deadline_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return future.result(min(TICK_S, left))  # type: ignore[return-value]
            except TimeoutError:
                while_waiting()
        if future.done():
            return future.result()  # type: ignore[return-value]
        self.overdue += 1
        try:
            abort()
        except Exception:  # aborting is best effort: the call stays overdue either way
            logger.debug("aborting the overdue database call failed", exc_info=True)
        raise DatabaseOverdueError(f"no answer within {deadline_s:g} s")

    def _busy_s_locked(self) -> float:
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stopping:
                    self._cond.wait()
                if self._job is None:
                    return
                fn, future = self._job
                self._job = None
            error: BaseException | None = None
            result: object = None
            try:
                result = fn()
            except BaseException as err:  # handed to the caller, who decides
                error = err
            with self._cond:  # free before the caller hears, so that it may call again at once
                self._busy_since = None
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def stop(self) -> None:
        """Let the thread end after the call it runs (a stuck one is left behind: daemon)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
