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
   open a replay window.

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

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError, SignatureError
from edge_agent.fleet.protocol import NAME_PATTERN, Command, CommandResult, ResultCode

logger = logging.getLogger(__name__)

__all__ = [
    "ARG_MODELS",
    "UNSIGNED_COMMANDS",
    "ChunkArgs",
    "CommandProcessor",
    "CommandVerifier",
    "DeployArgs",
    "GroupArgs",
    "Handler",
    "NoArgs",
    "NonceStore",
    "Outcome",
    "ResizeArgs",
    "TickRateArgs",
    "parse_args",
]

NONCE_DB: Final = "command_nonces.sqlite3"
UNSIGNED_COMMANDS: Final = frozenset({"deploy_chunk"})
"""Commands authenticated by something else than their own signature (see the module docstring)."""

MAX_CHUNK_BYTES: Final = 192 * 1024
"""Largest deploy chunk: with the envelope it stays under the 256 KiB payload limit."""
MIN_CHUNK_BYTES: Final = 1024
MAX_CHUNKS: Final = 8192
MAX_BUNDLE_FILE_BYTES: Final = 66 * 1024 * 1024
"""Largest bundle file a deployment accepts (the loader's 64 MiB payload limit + tar overhead)."""

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
GroupName = Annotated[str, Field(pattern=NAME_PATTERN)]


# ------------------------------------------------------------------------------------- arguments
class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoArgs(_Args):
    """``ping``, ``snapshot``, ``rebirth``."""


class GroupArgs(_Args):
    """``start_group``, ``stop_group``."""

    group: GroupName


class ResizeArgs(_Args):
    """``resize_group``: the group's new number of agents."""

    group: GroupName
    agents: int = Field(ge=1, le=1_000_000)


class TickRateArgs(_Args):
    """``set_tick_rate``: the new base tick rate (the thermal governor still scales it)."""

    hz: float = Field(gt=0, le=1000)


class DeployArgs(_Args):
    """``deploy``: start (or resume) sending one bundle file for one group.

    ``sha256`` is the bundle's identity (sha256 of its canonical manifest, what ``edge-agent-host
    verify`` prints); ``file_sha256`` the sha256 of the bundle file sent; ``chunk_hashes`` the
    sha256 of every chunk, concatenated (32 bytes each), in order.
    """

    group: GroupName
    sha256: Sha256Hex
    file_sha256: Sha256Hex
    size: int = Field(ge=1, le=MAX_BUNDLE_FILE_BYTES)
    chunk_size: int = Field(ge=MIN_CHUNK_BYTES, le=MAX_CHUNK_BYTES)
    chunk_hashes: bytes = Field(min_length=32, max_length=32 * MAX_CHUNKS)
    watch_ticks: int = Field(50, ge=1, le=100_000)
    health_steps: int = Field(20, ge=1, le=10_000)
    health_timeout_s: float = Field(30.0, gt=0, le=3600)
    transfer_timeout_s: float = Field(600.0, gt=0, le=7 * 86400)
    watch_timeout_s: float = Field(120.0, gt=0, le=86400)

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_hash(self, index: int) -> bytes:
        return self.chunk_hashes[32 * index : 32 * index + 32]

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    @model_validator(mode="after")
    def _hash_per_chunk(self) -> Self:
        if len(self.chunk_hashes) != 32 * self.chunks:
            raise ValueError(
                f"chunk_hashes has {len(self.chunk_hashes)} bytes; {self.size} bytes in chunks of "
                f"{self.chunk_size} need {self.chunks} hashes of 32 bytes"
            )
        return self


class ChunkArgs(_Args):
    """``deploy_chunk``: bytes ``[index * chunk_size, ...)`` of the bundle file ``sha256``."""

    sha256: Sha256Hex
    index: int = Field(ge=0, lt=MAX_CHUNKS)
    data: bytes = Field(min_length=1, max_length=MAX_CHUNK_BYTES)


ARG_MODELS: Final[Mapping[str, type[_Args]]] = {
    "ping": NoArgs,
    "snapshot": NoArgs,
    "rebirth": NoArgs,
    "start_group": GroupArgs,
    "stop_group": GroupArgs,
    "resize_group": ResizeArgs,
    "set_tick_rate": TickRateArgs,
    "deploy": DeployArgs,
    "deploy_chunk": ChunkArgs,
}


class ArgsError(EdgeAgentError):
    """A command's arguments do not match its schema."""


def parse_args(name: str, args: Mapping[str, Any]) -> _Args:
    """Validate ``args`` against the schema of command ``name``; :class:`ArgsError` if they fail.

    ``KeyError`` when ``name`` is not a known command.
    """
    model = ARG_MODELS[name]
    try:
        return model.model_validate(dict(args))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        raise ArgsError(f"{name}: {where}: {first['msg']}") from err


# ------------------------------------------------------------------------------------ nonce store
class NonceStoreFullError(EdgeAgentError):
    """Every slot holds an unexpired nonce: a new command cannot be protected against replay."""


class NonceStore:
    """Nonces of obeyed commands until they expire: bounded, durable (SQLite, synchronous=FULL).

    A nonce is kept until its command's expiry; after that the command itself is refused as
    expired, so forgetting the nonce cannot open a replay. When ``max_entries`` unexpired nonces
    are held, :meth:`record` refuses (the daemon answers ``busy``) rather than forget one early.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise EdgeAgentError(f"nonce store max_entries is {max_entries}, need >= 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL)"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires)")
            self._count: int = self._conn.execute("SELECT count(*) FROM nonces").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise EdgeAgentError(f"nonce store {self.path} cannot be opened: {err}") from err

    def __len__(self) -> int:
        return self._count

    def seen(self, nonce: bytes) -> bool:
        row = self._conn.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def prune(self, now: float | None = None) -> int:
        """Forget nonces whose commands have expired; returns how many."""
        now = self._clock() if now is None else now
        cur = self._conn.execute("DELETE FROM nonces WHERE expires < ?", (now,))
        removed = max(cur.rowcount, 0)
        self._count -= removed
        return removed

    def record(self, nonce: bytes, expires: float) -> bool:
        """Remember ``nonce`` until ``expires``; False if it was already there (a replay).

        Durable once it returns. Raises :class:`NonceStoreFullError` when full of live nonces.
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
        self._conn.execute("INSERT INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires))
        self._count += 1
        return True

    def close(self) -> None:
        self._conn.close()


# ---------------------------------------------------------------------------------- verification
@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling a command came to: the result code and what to tell the hub."""

    code: ResultCode
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


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

    def verify(self, cmd: Command) -> Outcome | None:
        """None when ``cmd`` may be applied (its nonce is then recorded); else the refusal."""
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
        now = self._clock()
        if cmd.expires <= now:
            return Outcome(ResultCode.EXPIRED, f"expired {now - cmd.expires:.1f} s ago")
        if cmd.expires - now > self.max_ttl_s:
            return Outcome(
                ResultCode.BAD_ARGS,
                f"expires in {cmd.expires - now:.0f} s, more than the {self.max_ttl_s:.0f} s "
                "this node accepts",
            )
        try:
            fresh = self.nonces.record(cmd.nonce, cmd.expires)
        except NonceStoreFullError as err:
            return Outcome(ResultCode.BUSY, str(err))
        if not fresh:
            # Marked a duplicate: a hub that also gets the first answer (sent late from the outbox
            # after a restart, say) keeps that one (HubClient.wait_result).
            return Outcome(
                ResultCode.REPLAYED, "this nonce was used before", {"duplicate": True}
            )
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

    def _refused(self, cmd: Command, outcome: Outcome) -> None:
        self.counters["refused"] += 1
        code = outcome.code.value
        self.refused_by_code[code] = self.refused_by_code.get(code, 0) + 1
        if outcome.code is ResultCode.BAD_SIGNATURE and not cmd.signature:
            self.counters["unsigned"] += 1
        self.last_refusal = f"{cmd.name}: {code}: {outcome.detail}"[:256]
        logger.warning("refused command %s (%s): %s", cmd.name, code, outcome.detail)

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        for code, n in self.refused_by_code.items():
            out[f"refused.{code}"] = n
        out["pending"] = len(self._pending)
        out["nonces"] = len(self.verifier.nonces)
        return out
