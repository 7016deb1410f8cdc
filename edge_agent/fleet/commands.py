"""Hub commands on the device: verification, the durable nonce store, argument schemas, dispatch.

A :class:`~edge_agent.fleet.protocol.Command` is obeyed only if all of these hold, checked in this
order (the first that fails is the result code):

1. ``target`` is this node (``bad_args``: ``target`` is signed, so a command signed for another
   node is never obeyed here);
2. ``key_id`` names a trusted hub key (``unknown_key``);
3. ``signature`` is the ed25519 signature of ``Command.signing_bytes(fleet)`` by that key
   (``bad_signature``; an empty signature is also counted ``unsigned``);
4. ``expires`` lies in the future, and no further ahead than ``max_ttl_s`` (``expired`` /
   ``bad_args``): the bound is what lets the nonce store forget a nonce once it has expired;
5. the nonce was never seen before (``replayed``). It is then recorded in the
   :class:`NonceStore` -- durably, before the command is applied, so a crash right after cannot
   open a replay window. After the store was lost (damaged and moved aside), a command that
   expires before the store's *replay floor* is refused as ``expired`` instead: it may have been
   obeyed before the loss (see :class:`NonceStore`). A store the storage refuses (a full disk)
   refuses every signed command as ``busy``.

Only then is the command's name looked up (``unknown_command``) and its arguments validated
against the strict schema of that name (``bad_args``); the handler returns ``ok``, ``accepted``
(work goes on, a second result follows), ``busy`` or ``failed``.

``deploy_chunk`` is the one exception to 2 to 5: a chunk is authenticated by its sha256,
which must equal the hash listed for that index in the signed ``deploy`` command that started the
transfer (see :mod:`edge_agent.fleet.deploy`). A chunk cannot change anything the hub did not sign,
and re-sending one is harmless, so chunks need neither a signature nor a nonce.

The daemon calls :meth:`CommandProcessor.process` between ticks only, with a bound on how many
commands one call handles; the queue in front of it is bounded and counts what it drops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from msgspec import Meta

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError, SignatureError
from edge_agent.fleet.old_sqlite import read_old, remove_old
from edge_agent.fleet.outcomes import Outcome, ResultCode
from edge_agent.fleet.protocol import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    Command,
    CommandResult,
    Name,
    Sha256Hex,
    WireModel,
    prepare_all,
    validate,
)
from edge_agent.fleet.record_log import LogDamagedError, RecordLog, write_log
from edge_agent.fsutil import not_a_file
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

__all__ = [
    "ARG_MODELS",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "UNSIGNED_COMMANDS",
    "ChunkArgs",
    "CommandProcessor",
    "CommandVerifier",
    "DeployArgs",
    "GroupArgs",
    "Handler",
    "LearningArgs",
    "NoArgs",
    "NonceStore",
    "NonceStoreError",
    "NonceStoreFullError",
    "NonceStoreUnavailableError",
    "Outcome",
    "ResizeArgs",
    "TickRateArgs",
    "parse_args",
]

NONCE_DB: Final = "command_nonces.log"
LEGACY_NONCE_DB: Final = "command_nonces.sqlite3"
"""The SQLite nonce store of earlier versions: migrated once (:class:`NonceStore`)."""
UNSIGNED_COMMANDS: Final = frozenset({"deploy_chunk"})
"""Commands authenticated by something else than their own signature (see the module docstring)."""

MIN_CHUNK_BYTES: Final = 1024
MAX_BUNDLE_FILE_BYTES: Final = 66 * 1024 * 1024
"""Largest bundle file a deployment accepts (the loader's 64 MiB payload limit + tar overhead)."""

GroupName = Name


# ------------------------------------------------------------------------------------- arguments
class _Args(WireModel, frozen=True, kw_only=True):
    """A command's arguments: a wire model (strict, unknown keys refused) read from ``args``."""


class NoArgs(_Args, frozen=True, kw_only=True):
    """``ping``, ``snapshot``, ``rebirth``."""


class GroupArgs(_Args, frozen=True, kw_only=True):
    """``start_group``, ``stop_group``."""

    group: GroupName


class LearningArgs(_Args, frozen=True, kw_only=True):
    """``learning_freeze``, ``learning_resume``, ``learning_reset``: one group, or (absent)
    every group of the node that learns."""

    group: GroupName | None = None


class ResizeArgs(_Args, frozen=True, kw_only=True):
    """``resize_group``: the group's new number of agents."""

    group: GroupName
    agents: Annotated[int, Meta(ge=1, le=1_000_000)]


class TickRateArgs(_Args, frozen=True, kw_only=True):
    """``set_tick_rate``: the new base tick rate (the thermal governor still scales it)."""

    hz: Annotated[float, Meta(gt=0, le=1000)]


class DeployArgs(_Args, frozen=True, kw_only=True):
    """``deploy``: start (or resume) sending one bundle file for one group.

    ``sha256`` is the bundle's identity (sha256 of its canonical manifest, what ``edge-agent-host
    verify`` prints); ``file_sha256`` the sha256 of the bundle file sent; ``chunk_hashes`` the
    sha256 of every chunk, concatenated (32 bytes each), in order.
    """

    group: GroupName
    sha256: Sha256Hex
    file_sha256: Sha256Hex
    size: Annotated[int, Meta(ge=1, le=MAX_BUNDLE_FILE_BYTES)]
    chunk_size: Annotated[int, Meta(ge=MIN_CHUNK_BYTES, le=MAX_CHUNK_BYTES)]
    chunk_hashes: Annotated[bytes, Meta(min_length=32, max_length=32 * MAX_CHUNKS)]
    watch_ticks: Annotated[int, Meta(ge=1, le=100_000)] = 50
    health_steps: Annotated[int, Meta(ge=1, le=10_000)] = 20
    health_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    transfer_timeout_s: Annotated[float, Meta(gt=0, le=7 * 86400)] = 600.0
    watch_timeout_s: Annotated[float, Meta(gt=0, le=86400)] = 120.0
    broadcast: bool = False
    """Chunks come once for the whole wave on the fleet's bundle topic (``Topics.bundle``),
    not as ``deploy_chunk`` commands to this node."""
    shadow_s: Annotated[float, Meta(ge=0, le=86400)] = 0.0
    """Before switching, run the candidate beside the live group for this long on the same
    observations, its actions not taken, and report the paired result (docs/health.md
    "Shadow evaluation"); 0: switch as soon as the preflight passes."""

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_hash(self, index: int) -> bytes:
        return self.chunk_hashes[32 * index : 32 * index + 32]

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def _check(self) -> None:
        if len(self.chunk_hashes) != 32 * self.chunks:
            raise ValueError(
                f"chunk_hashes has {len(self.chunk_hashes)} bytes; {self.size} bytes in chunks of "
                f"{self.chunk_size} need {self.chunks} hashes of 32 bytes"
            )


class ChunkArgs(_Args, frozen=True, kw_only=True):
    """``deploy_chunk``: bytes ``[index * chunk_size, ...)`` of the bundle file ``sha256``."""

    sha256: Sha256Hex
    index: Annotated[int, Meta(ge=0, lt=MAX_CHUNKS)]
    data: Annotated[bytes, Meta(min_length=1, max_length=MAX_CHUNK_BYTES)]


ARG_MODELS: Final[Mapping[str, type[_Args]]] = {
    "ping": NoArgs,
    "snapshot": NoArgs,
    "rebirth": NoArgs,
    "start_group": GroupArgs,
    "stop_group": GroupArgs,
    "resize_group": ResizeArgs,
    "learning_freeze": LearningArgs,
    "learning_resume": LearningArgs,
    "learning_reset": LearningArgs,
    "set_tick_rate": TickRateArgs,
    "deploy": DeployArgs,
    "deploy_chunk": ChunkArgs,
}
prepare_all()  # msgspec's type info of the argument models now, not on two threads at once


class ArgsError(EdgeAgentError):
    """A command's arguments do not match its schema."""


def parse_args(name: str, args: Mapping[str, Any]) -> _Args:
    """Validate ``args`` against the schema of command ``name``; :class:`ArgsError` if they fail.

    ``KeyError`` when ``name`` is not a known command.
    """
    model = ARG_MODELS[name]
    try:
        return validate(model, args)
    except msgspec.ValidationError as err:
        # msgspec names the bad argument at the end (`` - at `$.agents` ``).
        raise ArgsError(f"{name} args: {err}") from err


# ------------------------------------------------------------------------------------ nonce store
class NonceStoreError(EdgeAgentError):
    """A new command cannot be protected against replay now; it is refused (``busy``)."""


class NonceStoreFullError(NonceStoreError):
    """Every slot holds an unexpired nonce: a new command cannot be protected against replay."""


class NonceStoreUnavailableError(NonceStoreError):
    """The storage refuses the nonce store (a full disk): no nonce can be recorded durably."""


_PART: Final = "nonces"
_MAGIC: Final = b"EANONCE1"
_NONCE: Final = b"N"  # + expires (f64 LE) + the nonce
_FLOOR: Final = b"F"  # + the replay floor (f64 LE)
_F64: Final = struct.Struct("<d")
#: Compact when the file holds more than this many records per live nonce (see ``_compact``).
_COMPACT_RATIO: Final = 4


class NonceStore:
    """Nonces of obeyed commands until they expire: bounded, durable (an append-only file of
    framed records, :mod:`edge_agent.fleet.record_log`, ``fsync``-ed before :meth:`record`
    returns: what SQLite's ``synchronous=FULL`` gave before).

    A nonce is kept until its command's expiry; after that the command itself is refused as
    expired, so forgetting the nonce cannot open a replay. When ``max_entries`` unexpired nonces
    are held, :meth:`record` refuses (the daemon answers ``busy``) rather than forget one early.
    The nonces are held in memory as well (at most ``max_entries``); the file is read once, at
    open, and rewritten with only the live nonces when it holds ``_COMPACT_RATIO`` times more
    records than that (expired nonces are simply not carried over).

    Damage and loss (reported to ``faults``, part ``nonces``). A damaged file (not a nonce store,
    a directory in its place, a record cut short or failing its CRC) is moved aside and a fresh
    one started, holding the nonces that could still be read. The nonces past the damage
    are lost, so the fresh store sets a **replay floor**: ``now + lost_floor_s`` (the daemon
    passes ``command_max_ttl_s``). A command accepted before the loss expired at most
    ``max_ttl_s`` after it arrived, that is before the floor; every command that expires before
    the floor is therefore refused (:attr:`replay_floor`, checked by :class:`CommandVerifier`),
    and one that expires after it cannot have been seen before. The floor is kept in the new
    file, so a restart keeps it. A record cut short is a loss too: a crash in the middle of
    :meth:`record` (whose command was then never obeyed) cannot be told from a file cut short
    after it, so the store fails closed, at the cost of refusing commands until the floor after
    such a crash (the record is written and ``fsync``-ed in well under a millisecond).
    ``missing_is_lost`` treats a store that does not exist at all the same way (the daemon sets
    it when its state directory shows that the node ran before).

    ``legacy``: the SQLite nonce store of earlier versions (``command_nonces.sqlite3``). When it
    exists and the file does not, its nonces and floor are read once
    (:func:`~edge_agent.fleet.old_sqlite.read_old`, the only time ``sqlite3`` is imported),
    written to the new file, and the old database is deleted. A damaged old
    database is moved aside as a loss (a replay floor).

    When the storage refuses the file (a full disk, read-only), nothing can be recorded durably,
    so every signed command is refused (:class:`NonceStoreUnavailableError`, ``busy``) until it
    opens again (tried again every ``retry_interval_s``): fail closed, never open.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
        faults: StateFaults | None = None,
        lost_floor_s: float = 3600.0,
        missing_is_lost: bool = False,
        retry_interval_s: float = 60.0,
        legacy: str | Path | None = None,
    ) -> None:
        if max_entries < 1:
            raise EdgeAgentError(f"nonce store max_entries is {max_entries}, need >= 1")
        self.path = Path(path)
        self.legacy = Path(legacy) if legacy is not None else None
        self.max_entries = max_entries
        self._clock = clock
        self.faults = faults if faults is not None else StateFaults()
        self.lost_floor_s = lost_floor_s
        self.retry_interval_s = retry_interval_s
        self.replay_floor = 0.0
        """Commands that expire before this wall-clock time are refused (0: no floor)."""
        self.lost = ""
        """Why the nonces were lost, when they were; empty otherwise."""
        self.migrated = 0
        """Nonces read from the legacy SQLite store (0: there was none)."""
        self._log: RecordLog | None = None
        self._nonces: dict[bytes, float] = {}
        self._retry_at = 0.0
        self._compact_at = 64
        old = self.legacy is not None and os.path.lexists(self.legacy)
        missing = not os.path.lexists(self.path) and not old
        self._open(lost="missing: the node ran before" if missing and missing_is_lost else "")

    @property
    def available(self) -> bool:
        return self._log is not None

    def _open(self, lost: str = "") -> bool:
        """Open (or create) the file; True when it is usable. Moves a damaged one aside."""
        self._retry_at = time.monotonic() + self.retry_interval_s
        carried: dict[bytes, float] = {}
        legacy = self.legacy
        if legacy is not None and os.path.lexists(legacy) and not os.path.lexists(self.path):
            migrated = self._read_legacy(legacy)
            if migrated is None:
                return False
            carried, lost = migrated[0], migrated[1] or lost
            if carried or self.replay_floor > 0:
                self._nonces = carried
                try:  # all of it or nothing: the old database goes only once the file is whole
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    write_log(self.path, _MAGIC, self._records())
                except OSError as err:
                    self.faults.storage_error(_PART, err, f"write {self.path}")
                    return False
                carried = {}  # read back from the file below
        for _ in range(2):
            reason = "not a regular file" if not_a_file(self.path) else ""
            if not reason:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    log, payloads = RecordLog.open(self.path, _MAGIC)
                except LogDamagedError as err:
                    reason = str(err)
                except OSError as err:
                    self.faults.storage_error(_PART, err, f"open {self.path}")
                    return False
                else:
                    carried.update(self._read(payloads))
                    if not log.dropped_bytes:
                        return self._opened(log, carried, lost)
                    reason = (
                        f"a record cut short or damaged at byte {log.size} "
                        f"({log.dropped_bytes} byte(s) unreadable)"
                    )
                    log.close()
            moved = self.faults.move_aside(_PART, self.path, reason)
            if moved is None:
                return False
            lost = f"damaged ({reason}); moved aside to {moved.name}"
        return False

    def _read(self, payloads: list[bytes]) -> dict[bytes, float]:
        """The unexpired nonces of ``payloads``; a floor among them raises :attr:`replay_floor`."""
        now = self._clock()
        nonces: dict[bytes, float] = {}
        for payload in payloads:
            kind = payload[:1]
            if len(payload) < 1 + _F64.size or kind not in (_NONCE, _FLOOR):
                continue  # a record of a later version: nothing this build can use
            (value,) = _F64.unpack_from(payload, 1)
            if kind == _FLOOR:
                self.replay_floor = max(self.replay_floor, value)
            elif value >= now:
                nonces[payload[1 + _F64.size :]] = value
        return nonces

    def _read_legacy(self, legacy: Path) -> tuple[dict[bytes, float], str] | None:
        """The nonces (and floor) of an earlier version's SQLite store, and why they were lost
        (when it is damaged: then it is moved aside). None when the storage refuses it."""
        now = self._clock()

        def read(conn: sqlite3.Connection) -> dict[bytes, float]:
            import sqlite3  # noqa: PLC0415  (imported by read_old already: for its errors)

            rows = conn.execute("SELECT nonce, expires FROM nonces WHERE expires >= ?", (now,))
            nonces = {bytes(nonce): float(expires) for nonce, expires in rows}
            with contextlib.suppress(sqlite3.OperationalError):  # no meta table
                for (floor,) in conn.execute("SELECT value FROM meta WHERE key = 'replay_floor'"):
                    self.replay_floor = max(self.replay_floor, float(floor))
            return nonces

        old = read_old(legacy, read, faults=self.faults, part=_PART)
        if old is None:
            return None
        if old.value is None:
            return {}, old.lost
        self.migrated = len(old.value)
        return old.value, ""

    def _opened(self, log: RecordLog, nonces: dict[bytes, float], lost: str) -> bool:
        """Adopt ``log`` holding ``nonces``: a new floor if they were ``lost``; a file that needs
        it is rewritten (a damaged tail, nonces migrated or carried from a damaged file)."""
        if lost:
            self.lost = lost
            self.replay_floor = max(self.replay_floor, self._clock() + self.lost_floor_s)
            logger.warning(
                "command nonces lost (%s): commands that expire before %s are refused "
                "(commands accepted before the loss cannot be told from replays)",
                lost,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.replay_floor)),
            )
        self._nonces = nonces
        try:
            fresh = log.records == 0 and (nonces or self.replay_floor > 0)
            if lost or fresh:  # else the file holds all of it already
                log.rewrite(self._records())
        except OSError as err:
            log.close()
            self.faults.storage_error(_PART, err, f"write {self.path}")
            return False
        self._log = log
        self._compact_at = log.records + max(64, (_COMPACT_RATIO - 1) * len(nonces))
        if self.legacy is not None:
            remove_old(self.legacy)
            if self.migrated:
                logger.info(
                    "%d command nonce(s) moved from %s to %s", self.migrated, self.legacy, self.path
                )
        self.faults.storage_ok(_PART)
        return True

    def _records(self) -> list[bytes]:
        """The file's records for what is held now: the floor, then the nonces."""
        out = [_FLOOR + _F64.pack(self.replay_floor)] if self.replay_floor > 0 else []
        out.extend(_NONCE + _F64.pack(expires) + nonce for nonce, expires in self._nonces.items())
        return out

    def _store(self) -> RecordLog:
        """The open file; tries to open it again when due. Raises when unavailable."""
        if self._log is None and time.monotonic() >= self._retry_at:
            self._open()
        if self._log is None:
            raise NonceStoreUnavailableError(
                f"the nonce store {self.path} cannot be written (see the storage errors); "
                "refusing commands until it can"
            )
        return self._log

    def __len__(self) -> int:
        return len(self._nonces)

    def seen(self, nonce: bytes) -> bool:
        """True when ``nonce`` was recorded. Raises :class:`NonceStoreUnavailableError`."""
        self._store()
        return nonce in self._nonces

    def prune(self, now: float | None = None) -> int:
        """Forget nonces whose commands have expired; returns how many. The file keeps them
        until it is compacted (they are skipped when it is read)."""
        now = self._clock() if now is None else now
        doomed = [nonce for nonce, expires in self._nonces.items() if expires < now]
        for nonce in doomed:
            del self._nonces[nonce]
        return len(doomed)

    def record(self, nonce: bytes, expires: float) -> bool:
        """Remember ``nonce`` until ``expires``; False if it was already there (a replay).

        Durable once it returns. Raises :class:`NonceStoreFullError` when full of live nonces,
        :class:`NonceStoreUnavailableError` when the storage refuses the write.
        """
        if self.seen(nonce):
            return False
        if len(self._nonces) >= self.max_entries:
            self.prune()
            if len(self._nonces) >= self.max_entries:
                raise NonceStoreFullError(
                    f"{len(self._nonces)} unexpired command nonces are held (the bound); "
                    "refusing new commands until some expire"
                )
        log = self._store()
        try:
            log.append([_NONCE + _F64.pack(expires) + nonce], sync=True)
        except OSError as err:
            self.faults.storage_error(_PART, err, "record a nonce")
            raise NonceStoreUnavailableError(f"nonce store {self.path}: {err}") from err
        self._nonces[nonce] = expires
        self.faults.storage_ok(_PART)
        if log.records >= self._compact_at:
            self._compact(log)
        return True

    def _compact(self, log: RecordLog) -> None:
        """Forget the expired nonces; rewrite the file with the live ones only when it holds
        ``_COMPACT_RATIO`` times more records. A failure leaves it as it was (counted). The
        file holds at most ``_COMPACT_RATIO`` x the live nonces + 64 records."""
        self.prune()
        if log.records > _COMPACT_RATIO * len(self._nonces):
            try:
                log.rewrite(self._records())
            except OSError as err:
                self.faults.storage_error(_PART, err, f"compact {self.path}")
        self._compact_at = log.records + max(64, (_COMPACT_RATIO - 1) * len(self._nonces))

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------------------- verification
class CommandVerifier:
    """Signature, target, expiry and replay checks (see the module docstring for the order)."""

    def __init__(
        self,
        keys: TrustedKeys | None,
        *,
        fleet: str,
        node_id: str,
        nonces: NonceStore,
        max_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        unsigned: frozenset[str] = UNSIGNED_COMMANDS,
    ) -> None:
        self.keys = keys
        self.fleet = fleet
        self.node_id = node_id
        self.nonces = nonces
        self.max_ttl_s = max_ttl_s
        self.unsigned = unsigned
        self._clock = clock

    def precheck(self, cmd: Command) -> Outcome | None:
        """The checks that need no clock, no storage and no lock (safe on the transport
        thread, so a flood is refused before it queues): target, key and signature."""
        if cmd.target != self.node_id:
            return Outcome(
                ResultCode.BAD_ARGS, f"addressed to node {cmd.target!r}, this is {self.node_id!r}"
            )
        if cmd.name in self.unsigned:
            return None
        if self.keys is None or cmd.key_id not in self.keys:
            known = "none configured" if self.keys is None else ", ".join(self.keys)
            return Outcome(
                ResultCode.UNKNOWN_KEY,
                f"key {cmd.key_id[:64]!r} is not a trusted hub key (trusted: {known})",
            )
        if not cmd.signature:
            return Outcome(ResultCode.BAD_SIGNATURE, "unsigned command")
        try:
            self.keys.verify(cmd.key_id, cmd.signing_bytes(self.fleet), cmd.signature)
        except SignatureError:
            return Outcome(ResultCode.BAD_SIGNATURE, f"signature does not verify with {cmd.key_id}")
        return None

    def verify(self, cmd: Command) -> Outcome | None:
        """None when ``cmd`` may be applied (its nonce is then recorded); else the refusal."""
        outcome = self.precheck(cmd)
        if outcome is not None or cmd.name in self.unsigned:
            return outcome
        now = self._clock()
        if cmd.expires <= now:
            return Outcome(ResultCode.EXPIRED, f"expired {now - cmd.expires:.1f} s ago")
        if cmd.expires - now > self.max_ttl_s:
            return Outcome(
                ResultCode.BAD_ARGS,
                f"expires in {cmd.expires - now:.0f} s, more than the {self.max_ttl_s:.0f} s "
                "this node accepts",
            )
        floor = self.nonces.replay_floor
        if cmd.expires < floor:
            # The nonce store was lost (see NonceStore): this command may have been obeyed
            # before, and nothing can tell. One that expires at or after the floor cannot have.
            return Outcome(
                ResultCode.EXPIRED,
                f"this node lost its record of used nonces; until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(floor))} UTC it accepts only "
                f"commands that expire after then (send with the longest ttl, "
                f"{self.max_ttl_s:.0f} s)",
                {"replay_floor": floor},
            )
        try:
            fresh = self.nonces.record(cmd.nonce, cmd.expires)
        except NonceStoreError as err:
            return Outcome(ResultCode.BUSY, str(err))
        if not fresh:
            # Marked a duplicate: a hub that also gets the first answer (sent late from the outbox
            # after a restart, say) keeps that one (FleetClient.wait_result).
            return Outcome(ResultCode.REPLAYED, "this nonce was used before", {"duplicate": True})
        return None


# --------------------------------------------------------------------------------------- dispatch
Handler = Callable[[Any, Command], Outcome]
"""``handler(parsed_args, command) -> Outcome``: applies one command (between ticks)."""

_COUNTERS: Final = (
    "received",
    "dropped",
    "ok",
    "accepted",
    "failed",
    "busy",
    "refused",
    "unsigned",
    "errors",
)


class CommandProcessor:
    """A bounded queue of received commands, verified and applied by :meth:`process`."""

    def __init__(
        self,
        verifier: CommandVerifier,
        handlers: Mapping[str, Handler],
        *,
        max_pending: int = 64,
    ) -> None:
        unknown = set(handlers) - set(ARG_MODELS)
        if unknown:
            raise EdgeAgentError(f"handlers for unknown commands: {sorted(unknown)}")
        self.verifier = verifier
        self.handlers = dict(handlers)
        self.max_pending = max_pending
        self._pending: deque[Command] = deque()
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.refused_by_code: dict[str, int] = {}
        self.last_refusal = ""
        # Refusals are also counted from the transport thread (refuse_early).
        self._count_lock = threading.Lock()

    @property
    def room(self) -> int:
        """How many more commands :meth:`offer` accepts now."""
        return self.max_pending - len(self._pending)

    def offer(self, cmd: Command) -> bool:
        """Queue one command; False (counted ``dropped``) when the queue is full."""
        self.counters["received"] += 1
        if len(self._pending) >= self.max_pending:
            self.counters["dropped"] += 1
            return False
        self._pending.append(cmd)
        return True

    def process(self, max_commands: int) -> list[tuple[Command, CommandResult]]:
        """Verify and apply up to ``max_commands`` queued commands, oldest first."""
        out = []
        for _ in range(min(max_commands, len(self._pending))):
            cmd = self._pending.popleft()
            out.append((cmd, self.handle(cmd)))
        return out

    def handle(self, cmd: Command) -> CommandResult:
        """Verify and apply one command now; never raises for anything the command contains."""
        outcome = self.verifier.verify(cmd)
        if outcome is not None:
            self._refused(cmd, outcome)
        else:
            outcome = self._apply(cmd)
            key = outcome.code.value if outcome.code.value in self.counters else "failed"
            self.counters[key] += 1
        return CommandResult(
            nonce=cmd.nonce,
            name=cmd.name,
            code=outcome.code,
            detail=outcome.detail[:1024],
            data=outcome.data,
        )

    def _apply(self, cmd: Command) -> Outcome:
        handler = self.handlers.get(cmd.name)
        if handler is None:
            return Outcome(
                ResultCode.UNKNOWN_COMMAND,
                f"unknown command {cmd.name!r}; known: {', '.join(sorted(self.handlers))}",
            )
        try:
            args = parse_args(cmd.name, cmd.args)
        except ArgsError as err:
            return Outcome(ResultCode.BAD_ARGS, str(err))
        try:
            return handler(args, cmd)
        except EdgeAgentError as err:
            return Outcome(ResultCode.FAILED, str(err))
        except Exception as err:  # a handler's boundary: report, never take the daemon down
            self.counters["errors"] += 1
            logger.exception("command %s failed", cmd.name)
            return Outcome(ResultCode.FAILED, f"{type(err).__name__}: {err}")

    def refuse_early(self, cmd: Command, outcome: Outcome) -> None:
        """Count a command refused before it was queued (any thread; see
        :meth:`CommandVerifier.precheck`)."""
        with self._count_lock:
            self.counters["received"] += 1
        self._refused(cmd, outcome)

    def _refused(self, cmd: Command, outcome: Outcome) -> None:
        code = outcome.code.value
        with self._count_lock:
            self.counters["refused"] += 1
            self.refused_by_code[code] = self.refused_by_code.get(code, 0) + 1
            if outcome.code is ResultCode.BAD_SIGNATURE and not cmd.signature:
                self.counters["unsigned"] += 1
            self.last_refusal = f"{cmd.name}: {code}: {outcome.detail}"[:256]
        # Not logged one by one: a flood would fill the journal. The daemon's uplink logs
        # refusals as a summary at most once a minute (and the first at once).

    def stats(self) -> dict[str, int]:
        with self._count_lock:
            out = dict(self.counters)
            refused = dict(self.refused_by_code)
        for code, n in refused.items():
            out[f"refused.{code}"] = n
        out["pending"] = len(self._pending)
        out["nonces"] = len(self.verifier.nonces)
        return out
