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
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError, SignatureError
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
from edge_agent.fsutil import SQLITE_SIDECARS, not_a_file, sqlite_damaged
from edge_agent.state_faults import StateFaults

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

NONCE_DB: Final = "command_nonces.sqlite3"
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


class _DamagedError(Exception):
    """The database opened but is not a nonce store this build can use."""


_PART: Final = "nonces"


class NonceStore:
    """Nonces of obeyed commands until they expire: bounded, durable (SQLite, synchronous=FULL).

    A nonce is kept until its command's expiry; after that the command itself is refused as
    expired, so forgetting the nonce cannot open a replay. When ``max_entries`` unexpired nonces
    are held, :meth:`record` refuses (the daemon answers ``busy``) rather than forget one early.

    Damage and loss (reported to ``faults``, part ``nonces``). A damaged database (not a database,
    corrupt, another schema, a directory in its place) is moved aside and a fresh one started, at
    open or when SQLite reports corruption later. The nonces it held are lost, so the fresh store
    sets a **replay floor**: ``now + lost_floor_s`` (the daemon passes ``command_max_ttl_s``).
    A command accepted before the loss expired at most ``max_ttl_s`` after it arrived, that is
    before the floor; every command that expires before the floor is therefore refused
    (:attr:`replay_floor`, checked by :class:`CommandVerifier`), and one that expires after it
    cannot have been seen before. The floor is kept in the new database, so a restart keeps it.
    ``missing_is_lost`` treats a database that does not exist at all the same way (the daemon
    sets it when its state directory shows that the node ran before).

    When the storage refuses the database (a full disk, read-only), nothing can be recorded
    durably, so every signed command is refused (:class:`NonceStoreUnavailableError`, ``busy``)
    until it opens again (tried again every ``retry_interval_s``): fail closed, never open.
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
    ) -> None:
        if max_entries < 1:
            raise EdgeAgentError(f"nonce store max_entries is {max_entries}, need >= 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self._clock = clock
        self.faults = faults if faults is not None else StateFaults()
        self.lost_floor_s = lost_floor_s
        self.retry_interval_s = retry_interval_s
        self.replay_floor = 0.0
        """Commands that expire before this wall-clock time are refused (0: no floor)."""
        self.lost = ""
        """Why the nonces were lost, when they were; empty otherwise."""
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        self._retry_at = 0.0
        missing = not os.path.lexists(self.path)
        self._open(lost="missing: the node ran before" if missing and missing_is_lost else "")

    @property
    def available(self) -> bool:
        return self._conn is not None

    def _open(self, lost: str = "") -> bool:
        """Open (or create) the database; True when it is usable. Moves a damaged one aside."""
        self._retry_at = time.monotonic() + self.retry_interval_s
        for _ in range(2):
            reason = "not a regular file" if not_a_file(self.path) else ""
            if not reason:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    conn = self._connect()
                except _DamagedError as err:
                    reason = str(err)
                except (sqlite3.DatabaseError, OSError) as err:
                    if isinstance(err, OSError) or not sqlite_damaged(err, opening=True):
                        self.faults.storage_error(_PART, err, f"open {self.path}")
                        return False
                    reason = f"{type(err).__name__}: {err}"
                else:
                    return self._opened(conn, lost)
            moved = self.faults.move_aside(_PART, self.path, reason, sidecars=SQLITE_SIDECARS)
            if moved is None:
                return False
            lost = f"damaged ({reason}); moved aside to {moved.name}"
        return False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise _DamagedError(f"quick_check: {check}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires)")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL)")
            columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(nonces)"))
            if columns != ("nonce", "expires"):
                raise _DamagedError(f"a nonces table with columns {columns}, not this store's")
        except BaseException:
            conn.close()
            raise
        return conn

    def _opened(self, conn: sqlite3.Connection, lost: str) -> bool:
        """Adopt ``conn``: the floor it keeps, a new one if the nonces were ``lost``."""
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'replay_floor'").fetchone()
            self.replay_floor = max(self.replay_floor, float(row[0]) if row else 0.0)
            if lost:
                self.lost = lost
                self.replay_floor = max(self.replay_floor, self._clock() + self.lost_floor_s)
                logger.warning(
                    "command nonces lost (%s): commands that expire before %s are refused "
                    "(commands accepted before the loss cannot be told from replays)",
                    lost,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.replay_floor)),
                )
            if self.replay_floor > 0:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('replay_floor', ?)",
                    (self.replay_floor,),
                )
            count: int = conn.execute("SELECT count(*) FROM nonces").fetchone()[0]
        except sqlite3.DatabaseError as err:
            conn.close()
            self.faults.storage_error(_PART, err, f"write {self.path}")
            return False
        self._conn = conn
        self._count = count
        self.faults.storage_ok(_PART)
        return True

    def _db(self) -> sqlite3.Connection:
        """The open database; tries to open it again when due. Raises when unavailable."""
        if self._conn is None and time.monotonic() >= self._retry_at:
            self._open()
        if self._conn is None:
            raise NonceStoreUnavailableError(
                f"the nonce store {self.path} cannot be written (see the storage errors); "
                "refusing commands until it can"
            )
        return self._conn

    def _failed(self, err: sqlite3.DatabaseError, action: str) -> None:
        """A statement failed: a damaged database is moved aside and a fresh one started (with
        a replay floor); a storage error is counted. Raises when nothing can be recorded."""
        if not sqlite_damaged(err, opening=False):
            self.faults.storage_error(_PART, err, action)
            raise NonceStoreUnavailableError(f"nonce store {self.path}: {err}") from err
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        reason = f"{type(err).__name__}: {err} (while trying to {action})"
        moved = self.faults.move_aside(_PART, self.path, reason, sidecars=SQLITE_SIDECARS)
        if moved is None or not self._open(lost=f"damaged ({reason}); moved aside"):
            raise NonceStoreUnavailableError(f"nonce store {self.path}: {err}") from err

    def __len__(self) -> int:
        return self._count

    def seen(self, nonce: bytes) -> bool:
        """True when ``nonce`` was recorded. Raises :class:`NonceStoreUnavailableError`."""
        try:
            row = self._db().execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone()
        except sqlite3.DatabaseError as err:
            self._failed(err, "read nonces")
            return False  # a fresh store: the replay floor stands in for what it held
        return row is not None

    def prune(self, now: float | None = None) -> int:
        """Forget nonces whose commands have expired; returns how many."""
        now = self._clock() if now is None else now
        try:
            cur = self._db().execute("DELETE FROM nonces WHERE expires < ?", (now,))
        except NonceStoreUnavailableError:
            return 0
        except sqlite3.DatabaseError as err:
            with contextlib.suppress(NonceStoreUnavailableError):
                self._failed(err, "forget expired nonces")
            return 0
        removed = max(cur.rowcount, 0)
        self._count -= removed
        return removed

    def record(self, nonce: bytes, expires: float) -> bool:
        """Remember ``nonce`` until ``expires``; False if it was already there (a replay).

        Durable once it returns. Raises :class:`NonceStoreFullError` when full of live nonces,
        :class:`NonceStoreUnavailableError` when the storage refuses the write.
        """
        if self.seen(nonce):
            return False
        if self._count >= self.max_entries:
            self.prune()
            if self._count >= self.max_entries:
                raise NonceStoreFullError(
                    f"{self._count} unexpired command nonces are held (the bound); "
                    "refusing new commands until some expire"
                )
        insert = "INSERT INTO nonces (nonce, expires) VALUES (?, ?)"
        try:
            self._db().execute(insert, (nonce, expires))
        except sqlite3.DatabaseError as err:
            self._failed(err, "record a nonce")  # raises unless a fresh store was opened
            try:
                self._db().execute(insert, (nonce, expires))
            except sqlite3.DatabaseError as again:
                self.faults.storage_error(_PART, again, "record a nonce")
                raise NonceStoreUnavailableError(f"nonce store {self.path}: {again}") from again
        self._count += 1
        self.faults.storage_ok(_PART)
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
