"""What became of the files a daemon owns: parts moved aside, storage errors.

Every store of runtime state -- the outbox, the command nonce store, the fleet link's sequence
file, the deployment overlay and journal, the snapshot directory, the status file -- is given the
daemon's one :class:`StateFaults` and reports to it:

- **damaged** state (random bytes, a truncated database, a directory where a file should be) is
  moved aside with :meth:`StateFaults.move_aside` (``NAME.corrupt-STAMP`` beside it, see
  :func:`edge_agent.fsutil.move_aside`), logged in one line, counted per part and queued as a
  notice the daemon publishes as a ``state_recovered`` event; the store then starts fresh;
- a **storage error** (a full disk, a read-only file system, an I/O error) is counted per part
  with :meth:`StateFaults.storage_error`, and the last one kept for the status file; it is logged
  at most once per ``log_interval_s`` per part (the first at once, later lines say how many were
  folded in) and queued as a ``storage_error`` notice at the same rate. The store keeps working
  from memory and retries; :meth:`StateFaults.storage_ok` marks the part working again.

Nothing here raises: reporting a problem must never become one. Thread-safe (the fleet link
saves its sequence file on the transport's thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from edge_agent import fsutil

logger = logging.getLogger(__name__)

__all__ = ["PARTS", "Recovery", "StateFaults", "StorageNotice"]

#: The parts of the daemon's state, always present in the metrics (zero until something happens).
PARTS: Final = (
    "outbox",
    "nonces",
    "sequence",
    "overlay",
    "journal",
    "bundles",
    "snapshots",
    "status",
    "learning_reports",
)
_MAX_NOTICES: Final = 64
_MAX_RECENT: Final = 10


@dataclass(frozen=True, slots=True)
class Recovery:
    """A damaged part moved aside (``moved_to``) or, when that failed, left where it was."""

    part: str
    path: str
    moved_to: str | None
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class StorageNotice:
    """Storage errors of one part: the latest, how many so far, how many since the last notice."""

    part: str
    action: str
    error: str
    count: int
    folded: int
    time: float


class StateFaults:
    """Counts and notices of damaged state and storage errors (see the module docstring)."""

    def __init__(
        self,
        *,
        log_interval_s: float = 60.0,
        keep: int = fsutil.KEEP_MOVED_ASIDE,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.log_interval_s = log_interval_s
        self.keep = keep
        self._mono = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self.moved: dict[str, int] = dict.fromkeys(PARTS, 0)
        self.errors: dict[str, int] = dict.fromkeys(PARTS, 0)
        self.last_error: dict[str, Any] | None = None
        self._failing: set[str] = set()
        self._logged_at: dict[str, float] = {}
        self._folded: dict[str, int] = {}
        self._recent: deque[Recovery] = deque(maxlen=_MAX_RECENT)
        self._notices: deque[Recovery | StorageNotice] = deque()
        self.notices_dropped = 0

    # -- damaged state ---------------------------------------------------------------------------
    def move_aside(
        self,
        part: str,
        path: str | os.PathLike[str],
        reason: str,
        *,
        into: str | os.PathLike[str] | None = None,
        sidecars: Iterable[str] = (),
        keep: int | None = None,
        notify: bool = True,
    ) -> Path | None:
        """Move the damaged ``path`` of ``part`` aside (see :func:`edge_agent.fsutil.move_aside`;
        ``keep`` defaults to this object's), log it, count it and (``notify``) queue a notice.
        Returns where it went, or None when it could not be moved (logged as an error and
        counted as a storage error: the caller carries on without that file)."""
        try:
            dest = fsutil.move_aside(
                path,
                into=into,
                keep=self.keep if keep is None else keep,
                sidecars=sidecars,
                clock=self._wall,
            )
        except OSError as err:
            logger.error(
                "%s: %s is damaged (%s) and could not be moved aside: %s", part, path, reason, err
            )
            self.storage_error(part, err, "move a damaged file aside")
            recovery = Recovery(part, str(path), None, reason[:512], self._wall())
        else:
            logger.warning(
                "%s: %s is damaged (%s); moved aside to %s, starting fresh",
                part,
                path,
                reason,
                dest.name if into is None else dest,
            )
            recovery = Recovery(part, str(path), str(dest), reason[:512], self._wall())
        with self._lock:
            if recovery.moved_to is not None:
                self.moved[part] = self.moved.get(part, 0) + 1
            self._recent.append(recovery)
            if notify:
                self._notice(recovery)
        return None if recovery.moved_to is None else Path(recovery.moved_to)

    # -- storage ---------------------------------------------------------------------------------
    def storage_error(self, part: str, err: BaseException | str, action: str) -> None:
        """Count a refused write (or read) of ``part``; log it at most once per interval."""
        text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else err
        now = self._mono()
        with self._lock:
            count = self.errors.get(part, 0) + 1
            self.errors[part] = count
            self.last_error = {
                "part": part,
                "action": action,
                "error": text[:512],
                "time": self._wall(),
            }
            self._failing.add(part)
            last = self._logged_at.get(part)
            if last is not None and now - last < self.log_interval_s:
                self._folded[part] = self._folded.get(part, 0) + 1
                return
            self._logged_at[part] = now
            folded = self._folded.pop(part, 0)
            self._notice(StorageNotice(part, action, text[:512], count, folded, self._wall()))
        more = f" ({folded} more since the last such line)" if folded else ""
        logger.error(
            "%s: cannot %s: %s; running on from memory and retrying%s "
            "(logged at most once a minute per part)",
            part,
            action,
            text,
            more,
        )

    def storage_ok(self, part: str) -> None:
        """A write of ``part`` succeeded: it is no longer failing (logged once, if it was)."""
        with self._lock:
            if part not in self._failing:
                return
            self._failing.discard(part)
            count = self.errors.get(part, 0)
        logger.info("%s: storage works again (after %d error(s))", part, count)

    def failing(self, part: str) -> bool:
        with self._lock:
            return part in self._failing

    # -- reading ---------------------------------------------------------------------------------
    def take_notices(self) -> list[Recovery | StorageNotice]:
        """The notices queued since the last call, oldest first (for events)."""
        with self._lock:
            out = list(self._notices)
            self._notices.clear()
        return out

    def metrics(self) -> dict[str, int]:
        """``moved_aside[.PART]``, ``storage_errors[.PART]`` and the gauge ``storage_failing``."""
        with self._lock:
            out = {f"moved_aside.{part}": n for part, n in self.moved.items()}
            out["moved_aside"] = sum(self.moved.values())
            out.update({f"storage_errors.{part}": n for part, n in self.errors.items()})
            out["storage_errors"] = sum(self.errors.values())
            out["storage_failing"] = len(self._failing)
            out["notices_dropped"] = self.notices_dropped
        return out

    def status(self) -> dict[str, Any]:
        """The status file's ``state`` section."""
        with self._lock:
            return {
                "moved_aside": {p: n for p, n in self.moved.items() if n},
                "recovered": [asdict(r) for r in self._recent],
                "storage_errors": {p: n for p, n in self.errors.items() if n},
                "storage_errors_total": sum(self.errors.values()),
                "storage_failing": sorted(self._failing),
                "last_storage_error": self.last_error,
            }

    def _notice(self, notice: Recovery | StorageNotice) -> None:
        """Queue a notice (the caller holds the lock); bounded, the oldest goes first."""
        if len(self._notices) >= _MAX_NOTICES:
            self._notices.popleft()
            self.notices_dropped += 1
        self._notices.append(notice)
