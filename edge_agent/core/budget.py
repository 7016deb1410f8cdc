"""The memory budget: reserve before allocating, admit whole configs, watch RSS.

Every allocation that scales with agents or models is reserved against the firmware profile's
budget *before* it happens::

    budget = MemoryBudget(256 * MiB, base_bytes=48 * MiB, profile_name="pi-zero-2w")
    model = budget.reserve("grid", "model", table_bytes, shared_key="model:grid-v3")
    hist_bytes = HistoryRing.bytes_needed(n_agents, capacity, fields)
    with budget.reserve("grid", "history", hist_bytes, hint=hint) as hist:
        ring = HistoryRing(n_agents, capacity, fields)  # released if this raises

The accounting is ``used = base_bytes + private reservations + shared reservations counted once``.
Reservations that give the same ``shared_key`` (the int8 tables of one model used by several
groups) are reference-counted: the bytes are counted on the first reserve and freed with the last
release. A request that does not fit raises :class:`~edge_agent.errors.BudgetError` saying what was
asked, what is used and left, the budget and profile, and what to change.

:class:`RssSampler` reads the process's resident set size (``/proc``, else psutil); the daemon
compares it with the budget's soft limit and degrades (shrinks histories, then pauses
low-priority groups) instead of running out of memory. See ``docs/memory.md``.
"""

from __future__ import annotations

import operator
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, SupportsIndex

from edge_agent.errors import BudgetError, EdgeAgentError, InputError

if TYPE_CHECKING:
    import psutil

_STATM = Path("/proc/self/statm")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

__all__ = [
    "BASE_KIND",
    "BASE_OWNER",
    "DEFAULT_SOFT_LIMIT_FRACTION",
    "GiB",
    "KiB",
    "MemoryBudget",
    "MiB",
    "PlanRequest",
    "Reservation",
    "RssSampler",
    "format_bytes",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Owner and kind under which ``base_bytes`` (interpreter, libraries, daemon) is reported.
BASE_OWNER = "daemon"
BASE_KIND = "base"

#: Soft limit used when none is given, as a fraction of the total budget.
DEFAULT_SOFT_LIMIT_FRACTION = 0.9

#: One line of :meth:`MemoryBudget.plan`: ``(owner, kind, nbytes, shared_key or None)``.
PlanRequest = tuple[str, str, int, str | None]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """Human-readable binary size: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    sign = "-" if n < 0 else ""
    value = abs(float(n))
    if value < KiB:
        return f"{sign}{value:.0f} B"
    index = 0
    value /= 1024
    while round(value, 1) >= 1024 and index < len(_UNITS) - 1:
        value /= 1024
        index += 1
    return f"{sign}{value:.1f} {_UNITS[index]}"


def _as_nbytes(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise InputError(f"{what} must be an integer number of bytes, got {value!r}")
    n = operator.index(value)
    if n < 0:
        raise InputError(f"{what} must be >= 0 bytes, got {n}")
    return n


def _as_label(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _amount(n: int) -> str:
    return f"{format_bytes(n)} ({n:,} bytes)"


class Reservation:
    """A live claim on part of a :class:`MemoryBudget`, returned by :meth:`MemoryBudget.reserve`.

    Used as a context manager it is released only if the block raises, which fits the
    reserve-then-allocate pattern: the allocation either succeeds and keeps its reservation, or
    fails and gives it back.
    """

    __slots__ = ("_budget", "_nbytes", "_released", "kind", "owner", "shared_key")

    def __init__(
        self, budget: MemoryBudget, owner: str, kind: str, nbytes: int, shared_key: str | None
    ) -> None:
        self._budget = budget
        self.owner = owner
        self.kind = kind
        self.shared_key = shared_key
        self._nbytes = nbytes
        self._released = False

    @property
    def nbytes(self) -> int:
        """Bytes this reservation claims (for a shared key: the shared amount, counted once)."""
        return self._nbytes

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the bytes back (a shared key's bytes only with its last holder). Idempotent."""
        self._budget._release(self)

    def resize(self, new_nbytes: int, *, hint: str | None = None) -> None:
        """Change the claimed bytes; growth is checked against what is left (BudgetError).

        A shared reservation can only be resized while it is the key's only holder.
        """
        self._budget._resize(self, new_nbytes, hint)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.release()

    def __repr__(self) -> str:
        shared = f", shared_key={self.shared_key!r}" if self.shared_key is not None else ""
        state = ", released" if self._released else ""
        return (
            f"Reservation(owner={self.owner!r}, kind={self.kind!r}, "
            f"nbytes={self._nbytes}{shared}{state})"
        )


@dataclass
class _Shared:
    nbytes: int
    kind: str
    holders: list[Reservation] = field(default_factory=list)


class MemoryBudget:
    """Byte accounting against a fixed budget. Thread-safe.

    Parameters
    ----------
    total_bytes:
        The budget of the firmware profile.
    soft_limit_bytes:
        RSS above which the daemon starts degrading; defaults to
        ``DEFAULT_SOFT_LIMIT_FRACTION * total_bytes``. Must not exceed ``total_bytes``.
    base_bytes:
        Fixed cost of the daemon itself (interpreter, libraries), counted as used from the start.
    profile_name:
        Named in every refusal so that the operator knows which profile to change.
    """

    def __init__(
        self,
        total_bytes: int,
        *,
        soft_limit_bytes: int | None = None,
        base_bytes: int = 0,
        profile_name: str = "custom",
    ) -> None:
        total = _as_nbytes("total_bytes", total_bytes)
        if total == 0:
            raise InputError("total_bytes must be positive")
        base = _as_nbytes("base_bytes", base_bytes)
        self._profile = _as_label("profile_name", profile_name)
        if base > total:
            raise BudgetError(
                f"the daemon base of {_amount(base)} alone exceeds the {_amount(total)} budget of "
                f"profile {self._profile!r}; choose a profile with a larger budget"
            )
        if soft_limit_bytes is None:
            soft = int(total * DEFAULT_SOFT_LIMIT_FRACTION)
        else:
            soft = _as_nbytes("soft_limit_bytes", soft_limit_bytes)
            if soft == 0 or soft > total:
                raise InputError(
                    f"soft_limit_bytes must be in (0, total_bytes={total}], got {soft}"
                )
        self._total = total
        self._base = base
        self._soft = soft
        self._used = base
        self._lock = threading.RLock()
        self._private: dict[int, Reservation] = {}  # id(reservation) -> reservation
        self._shared: dict[str, _Shared] = {}

    # ----------------------------------------------------------------------------- properties
    @property
    def total(self) -> int:
        return self._total

    @property
    def used(self) -> int:
        """Bytes counted: base plus every live reservation, shared keys once."""
        return self._used

    @property
    def available(self) -> int:
        return self._total - self._used

    @property
    def soft_limit(self) -> int:
        return self._soft

    @property
    def base(self) -> int:
        return self._base

    @property
    def profile_name(self) -> str:
        return self._profile

    def fits(self, nbytes: int, *, shared_key: str | None = None) -> bool:
        """Whether reserving ``nbytes`` now would succeed (always, for a key already held)."""
        n = _as_nbytes("nbytes", nbytes)
        with self._lock:
            if shared_key is not None and shared_key in self._shared:
                return self._shared[shared_key].nbytes == n
            return n <= self.available

    # ---------------------------------------------------------------------------- reservations
    def reserve(
        self,
        owner: str,
        kind: str,
        nbytes: int,
        *,
        shared_key: str | None = None,
        hint: str | None = None,
    ) -> Reservation:
        """Claim ``nbytes`` for ``owner`` (a group name, ``"daemon"``, ...) before allocating.

        ``kind`` says what the bytes are for: ``"model"``, ``"agents"``, ``"history"``,
        ``"scratch"``. Reservations with the same ``shared_key`` are counted once; every later one
        must give the same ``nbytes`` and ``kind``. ``hint`` is what the operator should change if
        the request does not fit (e.g. ``"reduce group 'grid' count from 1000 to at most 612"``).

        Raises BudgetError when the request does not fit or contradicts its shared key.
        """
        owner = _as_label("owner", owner)
        kind = _as_label("kind", kind)
        n = _as_nbytes(f"bytes reserved for {owner!r} {kind}", nbytes)
        if shared_key is not None:
            shared_key = _as_label("shared_key", shared_key)
        with self._lock:
            if shared_key is not None and shared_key in self._shared:
                entry = self._shared[shared_key]
                if entry.nbytes != n or entry.kind != kind:
                    raise BudgetError(
                        f"shared key {shared_key!r} is reserved as {entry.kind} of "
                        f"{_amount(entry.nbytes)}; {owner!r} asked for {kind} of {_amount(n)}. "
                        "Every user of a shared model must reserve the same bytes and kind"
                    )
                reservation = Reservation(self, owner, kind, n, shared_key)
                entry.holders.append(reservation)
                return reservation
            if n > self.available:
                raise BudgetError(self._refusal(owner, kind, _amount(n), n, hint))
            reservation = Reservation(self, owner, kind, n, shared_key)
            if shared_key is None:
                self._private[id(reservation)] = reservation
            else:
                self._shared[shared_key] = _Shared(n, kind, [reservation])
            self._used += n
            return reservation

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation._released:
                return
            reservation._released = True
            key = reservation.shared_key
            if key is None:
                del self._private[id(reservation)]
                self._used -= reservation._nbytes
                return
            entry = self._shared[key]
            entry.holders.remove(reservation)
            if not entry.holders:
                del self._shared[key]
                self._used -= entry.nbytes

    def _resize(self, reservation: Reservation, new_nbytes: int, hint: str | None) -> None:
        n = _as_nbytes(f"bytes reserved for {reservation.owner!r} {reservation.kind}", new_nbytes)
        with self._lock:
            if reservation._released:
                raise BudgetError(f"cannot resize {reservation!r}: it was released")
            entry: _Shared | None = None
            if reservation.shared_key is not None:
                entry = self._shared[reservation.shared_key]
                if len(entry.holders) > 1:
                    raise BudgetError(
                        f"cannot resize shared key {reservation.shared_key!r}: it is held by "
                        f"{len(entry.holders)} reservations "
                        f"({', '.join(repr(h.owner) for h in entry.holders)})"
                    )
            old = reservation._nbytes
            growth = n - old
            if growth > self.available:
                asked = f"to grow from {format_bytes(old)} to {format_bytes(n)}, +{_amount(growth)}"
                raise BudgetError(
                    self._refusal(reservation.owner, reservation.kind, asked, growth, hint)
                )
            reservation._nbytes = n
            if entry is not None:
                entry.nbytes = n
            self._used += growth

    def _refusal(self, owner: str, kind: str, asked: str, needed: int, hint: str | None) -> str:
        left = self.available
        advice = hint or (
            f"lower the agent count or history_capacity of {owner!r}, release or remove other "
            "groups, or choose a profile with a larger budget"
        )
        return (
            f"memory budget refused {kind} for {owner!r}: asked {asked}, but only "
            f"{_amount(left)} of the {_amount(self._total)} budget of profile {self._profile!r} "
            f"is left ({format_bytes(self._used)} used; short by {format_bytes(needed - left)}). "
            f"To fit: {advice}"
        )

    # ------------------------------------------------------------------------------- admission
    def plan(
        self, requests: Sequence[PlanRequest], *, hints: Mapping[str, str] | None = None
    ) -> None:
        """Check that a whole config fits before anything is allocated; reserves nothing.

        ``requests`` are ``(owner, kind, nbytes, shared_key or None)`` in admission order; a shared
        key already reserved, or repeated in the plan, is counted once. Requests are added up in
        order and every one that takes the running total past what is left is reported, as is
        every shared key given inconsistent sizes. ``hints`` maps an owner to what the operator
        should change for it; owners without one get a generic suggestion.

        Raises BudgetError listing every offending request (numbered from 1), with
        ``err.offenders``: ``(owner, problem)`` per offending request, so that a caller that
        knows where an owner is configured can report it at that place.
        """
        hints = hints or {}
        with self._lock:
            left = self.available
            shared: dict[str, tuple[int, str]] = {
                key: (entry.nbytes, entry.kind) for key, entry in self._shared.items()
            }
            used = self._used
        running = 0
        problems: list[str] = []
        offenders: list[str] = []
        details: list[tuple[str, str]] = []
        for line, request in enumerate(requests, start=1):
            try:
                owner, kind, nbytes, key = request
            except (TypeError, ValueError) as err:
                raise InputError(
                    f"plan line {line}: expected (owner, kind, nbytes, shared_key), got {request!r}"
                ) from err
            owner = _as_label(f"plan line {line} owner", owner)
            kind = _as_label(f"plan line {line} kind", kind)
            n = _as_nbytes(f"plan line {line} ({owner!r} {kind})", nbytes)
            if key is not None:
                if key in shared:
                    known_n, known_kind = shared[key]
                    if (known_n, known_kind) != (n, kind):
                        detail = (
                            f"{kind} {format_bytes(n)} under shared key {key!r}, which is "
                            f"{known_kind} of {format_bytes(known_n)} elsewhere"
                        )
                        problems.append(f"  request {line}: {owner!r} {detail}")
                        offenders.append(owner)
                        details.append((owner, detail))
                    continue
                shared[key] = (n, kind)
            running += n
            if running > left:
                detail = (
                    f"{kind} {format_bytes(n)} brings the total to {format_bytes(running)}, over "
                    f"the {format_bytes(left)} left"
                )
                problems.append(f"  request {line}: {owner!r} {detail}")
                offenders.append(owner)
                details.append((owner, detail))
        if not problems:
            return
        advice = [hints[o] for o in dict.fromkeys(offenders) if o in hints]
        if len(advice) < len(dict.fromkeys(offenders)):
            advice.append(
                "lower agent counts or history capacities, remove groups, or choose a profile "
                "with a larger budget"
            )
        short = f"; short by {format_bytes(running - left)}" if running > left else ""
        summary = (
            f"configuration refused by the {_amount(self._total)} budget of profile "
            f"{self._profile!r}: it needs {_amount(running)} and {_amount(left)} is left "
            f"({format_bytes(used)} used{short})"
        )
        to_fit = "To fit: " + "; ".join(advice)
        raise BudgetError(
            f"{summary}. Requests that do not fit:\n" + "\n".join(problems) + "\n" + to_fit,
            offenders=details,
            summary=f"{summary}. {to_fit}",
        )

    # --------------------------------------------------------------------------------- reports
    def by_owner(self) -> dict[str, int]:
        """Bytes per owner; a shared key's bytes go to its oldest live holder. Sums to ``used``."""
        with self._lock:
            out: dict[str, int] = {BASE_OWNER: self._base} if self._base else {}
            for r in self._private.values():
                out[r.owner] = out.get(r.owner, 0) + r.nbytes
            for entry in self._shared.values():
                owner = entry.holders[0].owner
                out[owner] = out.get(owner, 0) + entry.nbytes
            return out

    def by_kind(self) -> dict[str, int]:
        """Bytes per kind (``"base"`` for the daemon base); shared keys once. Sums to ``used``."""
        with self._lock:
            out: dict[str, int] = {BASE_KIND: self._base} if self._base else {}
            for r in self._private.values():
                out[r.kind] = out.get(r.kind, 0) + r.nbytes
            for entry in self._shared.values():
                out[entry.kind] = out.get(entry.kind, 0) + entry.nbytes
            return out

    def report(self) -> dict[str, Any]:
        """A JSON-able summary for ``edge-agent status`` and telemetry (all sizes in bytes)."""
        with self._lock:
            return {
                "profile": self._profile,
                "total_bytes": self._total,
                "used_bytes": self._used,
                "available_bytes": self.available,
                "base_bytes": self._base,
                "soft_limit_bytes": self._soft,
                "reservations": len(self._private)
                + sum(len(e.holders) for e in self._shared.values()),
                "by_owner": self.by_owner(),
                "by_kind": self.by_kind(),
                "shared": {
                    key: {
                        "kind": entry.kind,
                        "nbytes": entry.nbytes,
                        "holders": [h.owner for h in entry.holders],
                    }
                    for key, entry in self._shared.items()
                },
            }

    def __repr__(self) -> str:
        return (
            f"MemoryBudget(profile={self._profile!r}, used={format_bytes(self._used)}, "
            f"total={format_bytes(self._total)})"
        )


class RssSampler:
    """Samples the resident set size of a process (default: this one).

    RSS, not USS: it is what the kernel's OOM killer and ``systemd`` ``MemoryMax`` look at, and it
    is cheap to read. ``peak`` is the largest value this sampler has seen, not the kernel's
    high-water mark. This process's RSS is read from ``/proc/self/statm`` where there is one
    (psutil, which the daemon then does not load, costs 2 MB); ``process`` (a psutil Process)
    samples another one.
    """

    def __init__(self, process: psutil.Process | None = None) -> None:
        self._process = process
        if process is None and not _STATM.is_file():
            import psutil  # noqa: PLC0415 - where there is no /proc

            self._process = psutil.Process()
        self._last: int | None = None
        self._peak = 0

    def sample(self) -> int:
        """Read the RSS now, in bytes, and update ``last`` and ``peak``."""
        rss = self._own_rss() if self._process is None else self._process_rss(self._process)
        self._last = rss
        self._peak = max(self._peak, rss)
        return rss

    @staticmethod
    def _own_rss() -> int:
        try:
            resident_pages = int(_STATM.read_bytes().split()[1])
        except (OSError, IndexError, ValueError) as err:
            raise EdgeAgentError(
                f"cannot read the RSS of this process from {_STATM}: {err}"
            ) from err
        return resident_pages * _PAGE_SIZE

    @staticmethod
    def _process_rss(process: psutil.Process) -> int:
        import psutil  # noqa: PLC0415 - another process: psutil

        try:
            return int(process.memory_info().rss)
        except psutil.Error as err:
            raise EdgeAgentError(f"cannot read the RSS of pid {process.pid}: {err}") from err

    @property
    def last(self) -> int | None:
        """The most recent sample, or None before the first."""
        return self._last

    @property
    def peak(self) -> int:
        """The largest sample so far (0 before the first)."""
        return self._peak

    def over_soft_limit(self, budget: MemoryBudget) -> bool:
        """Whether the last sample (taken now if there is none) exceeds ``budget.soft_limit``."""
        rss = self._last if self._last is not None else self.sample()
        return rss > budget.soft_limit
