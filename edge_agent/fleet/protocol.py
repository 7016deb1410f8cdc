"""The fleet wire protocol: message schemas, encoding and sequence numbers (the topic names
are :mod:`edge_agent.fleet.topics`).

Every payload is one msgpack map, the :class:`Envelope`, whose ``body`` is decoded and validated
by msgspec as the model (a frozen :class:`msgspec.Struct`, see :class:`WireModel`) registered
for its ``type``. All models forbid unknown keys and are strict (no "1" -> 1 coercion, no NaN),
so a message either matches the versioned schema exactly or :func:`decode` raises
:class:`DecodeError` (a :class:`~edge_agent.errors.ProtocolError`) naming the reason. msgspec,
not pydantic: the daemon holds these models in its memory budget
(``benchmarks/notes/memory.md``, "pydantic against msgspec").

Sequence numbers (see ``docs/protocol.md`` for the full rules):

- ``seq``: per-node message counter, uint32, wraps to 0, one increment per message the node
  encodes, whatever its topic. Receivers track it per node with :class:`SeqTracker`.
- ``bdseq``: birth/death sequence, uint32, persisted by the node across restarts, incremented for
  every connection attempt. The birth of a session and the will registered for that session carry
  the same ``bdseq``, so a receiver can tell a stale death from the current one.
"""

from __future__ import annotations

import ctypes
import logging
import math
import re
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from edge_agent.errors import ProtocolError
from edge_agent.fleet.health_measures import MeasureName
from edge_agent.fleet.names import NAME_PATTERN, UINT32
from edge_agent.fleet.outcomes import ResultCode

logger = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_BYTES: Final = 256 * 1024
"""Largest payload :func:`encode` writes and :func:`decode` accepts unless told otherwise."""

_HALF: Final = 1 << 31

MAX_CHUNK_BYTES: Final = 192 * 1024
"""Largest deploy chunk: with the envelope it stays under the 256 KiB payload limit."""
MAX_CHUNKS: Final = 8192


# --------------------------------------------------------------------------------------------
# Schemas

_VALIDATED: Final[ContextVar[bool]] = ContextVar("edge_agent_wire_validated", default=False)
"""True while msgspec builds models from values it has just validated (decoding, converting):
their ``__post_init__`` then runs only the rules across fields."""

_FLOAT_MAX: Final = sys.float_info.max


def _anchored(pattern: str) -> str:
    """``pattern`` with a final ``$`` made ``\\Z``: msgspec matches with Python's ``re``, whose
    ``$`` also matches before a trailing newline (pydantic's regex engine did not)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


class WireModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every wire model: frozen, unknown keys refused, fields keyword-only.

    msgspec checks the types and ``msgspec.Meta`` constraints of what it decodes or converts,
    strictly: no "1" -> 1, a bool is not an int, bytes only where bytes are declared, no NaN or
    infinity in a float field (every float is bounded); a string becomes the enum member it
    names, an int in a float field a float. A model built in code is checked the same way:
    ``__post_init__`` converts its values (as :func:`validate` does) and keeps the converted
    ones, so a bad value raises :class:`msgspec.ValidationError` (a ValueError) where the model
    is made, not only where it is received. Rules across fields go in :meth:`_check`, which runs
    in both cases.

    msgspec applies ``kw_only`` only to the fields of the class that sets it, and mypy takes a
    subclass without ``frozen=True`` for a mutable one: every subclass passes both again.
    """

    def __post_init__(self) -> None:
        if _VALIDATED.get():
            self._check()
        else:
            self._validate()

    def _validate(self) -> None:
        """Check the model as msgspec checks a decoded one (then :meth:`_check`), keep the
        values the check made. A field left :data:`msgspec.UNSET` stays unset (it is not
        encoded: a field added later that way keeps the bytes of the messages without it)."""
        fields = {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not msgspec.UNSET
        }
        _adopt(self, _convert(type(self), fields))

    def _check(self) -> None:
        """The model's rules across fields; ValueError when one fails."""


M = TypeVar("M", bound=WireModel)

_BUILTINS: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _plain(value: Any) -> Any:
    """``value`` with what pydantic took as a builtin made that builtin, in dicts and lists too:
    subclasses of str, int and float (str enums, numpy floats) and numpy scalars. Models stay
    (each was checked when it was made)."""
    kind = type(value)
    if kind in _BUILTINS or isinstance(value, msgspec.Struct):
        return value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


_BYTES_TYPES: Final = (bytes, bytearray, memoryview)

_PREPARED: set[type[WireModel]] = set()
_PREPARING: Final = threading.Lock()


def prepare(model: type[WireModel]) -> None:
    """Build msgspec's type info of ``model`` (and of the models in its fields) now, once.

    msgspec (0.22, GIL build) caches a Struct type's info on the class the first time the type
    is decoded or converted, and publishes it before its fields are converted: a second thread
    using the type in that window reads the half-built info and the process dies (a segfault;
    reproduced with threads converting a new Struct type at once). The daemon makes messages on
    its tick thread and its transport thread (the will), the hub on several threads: every wire
    model is prepared when its module is imported (:func:`prepare_all`), and whatever is
    converted is prepared first, under a lock."""
    if model in _PREPARED:
        return
    with _PREPARING:
        if model not in _PREPARED:
            msgspec.msgpack.Decoder(model)
            _PREPARED.add(model)


def prepare_all() -> None:
    """:func:`prepare` every :class:`WireModel` subclass defined so far (each module that
    defines wire models calls it at its end, while it is imported)."""
    todo: list[type[WireModel]] = [WireModel]
    while todo:
        model = todo.pop()
        prepare(model)
        todo.extend(model.__subclasses__())


def _convert(model: type[M], data: Any) -> M:
    prepare(model)
    token = _VALIDATED.set(True)
    try:
        # builtin_types: a str is not base64-decoded into a bytes field, it is refused
        return msgspec.convert(_plain(data), model, strict=True, builtin_types=_BYTES_TYPES)
    finally:
        _VALIDATED.reset(token)


def _adopt(model: WireModel, checked: WireModel) -> None:
    """Give ``model`` the values of the fields of ``checked`` (all of them, or an envelope's
    header)."""
    for name in checked.__struct_fields__:
        msgspec.structs.force_setattr(model, name, getattr(checked, name))


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` as a ``model``, checked as strictly as a received message (models may stand in
    for nested ones). Raises :class:`msgspec.ValidationError`, whose message ends with the path
    of the bad field (`` - at `$.groups` ``)."""
    return _convert(model, dict(data))


def as_builtins(model: WireModel) -> dict[str, Any]:
    """The fields of ``model`` as plain values, in field order: nested models as dicts, enums as
    their values, bytes kept (what JSON writers of messages take; pydantic's ``model_dump``)."""
    out: dict[str, Any] = msgspec.to_builtins(model, builtin_types=_BYTES_TYPES)
    return out


class Body(WireModel, frozen=True, kw_only=True):
    """Base of every message body; subclasses set ``TYPE`` and are listed in the registry."""

    TYPE: ClassVar[str] = ""


NAME_RULE: Final = _anchored(NAME_PATTERN)
""":data:`NAME_PATTERN` as the wire models match it."""

Name = Annotated[str, Meta(pattern=NAME_RULE)]
U32 = Annotated[int, Meta(ge=0, lt=UINT32)]
Count = Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]
Finite = Annotated[float, Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
NonNegFloat = Annotated[float, Meta(ge=0.0, le=_FLOAT_MAX)]
ShortText = Annotated[str, Meta(max_length=256)]
Detail = Annotated[str, Meta(max_length=1024)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
KeyIdHex = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")]
"""A signing key's id: the first 16 hex digits of the sha256 of its raw public key."""
MAX_BUNDLE_KEYS: Final = 256

MAX_ARGS: Final = 64
MAX_ARG_KEY: Final = 64
MAX_ARG_TEXT: Final = 4096
MAX_ARG_LIST: Final = 256
Scalar = bool | int | float | str | bytes | None
"""An argument value: a finite float, a str of at most :data:`MAX_ARG_TEXT` characters."""
ArgValue = Scalar | list[Scalar]
"""A scalar or a list of at most :data:`MAX_ARG_LIST` scalars."""
Args = Annotated[dict[Annotated[str, Meta(max_length=MAX_ARG_KEY)], Any], Meta(max_length=MAX_ARGS)]
"""Command arguments, result and event data: at most :data:`MAX_ARGS` keys of at most
:data:`MAX_ARG_KEY` characters, each an :data:`ArgValue`. msgspec decodes no union with both
``str`` and ``bytes``, so the values are decoded as they come and checked by :func:`check_args`
in the model's :meth:`~WireModel._check`."""


def _arg_scalar(where: str, value: Any) -> None:
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is bytes:
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
    elif kind is str:
        if len(value) > MAX_ARG_TEXT:
            raise ValueError(f"{where}: text of {len(value)} characters, at most {MAX_ARG_TEXT}")
    elif kind is dict:
        raise ValueError(f"{where}: a map, not an argument value (no nested maps)")
    else:
        raise ValueError(
            f"{where}: a {kind.__name__}, not one of bool, int, float, str, bytes, None"
        )


def check_args(field: str, args: Mapping[str, Any]) -> None:
    """ValueError unless every value of ``args`` is an :data:`ArgValue` (what pydantic's
    strict union of them took); ``field`` names the mapping in the message."""
    for key, value in args.items():
        where = f"{field}[{key!r}]"
        if type(value) is list:
            if len(value) > MAX_ARG_LIST:
                raise ValueError(f"{where}: a list of {len(value)} items, at most {MAX_ARG_LIST}")
            for i, item in enumerate(value):
                if type(item) is list:
                    raise ValueError(f"{where}[{i}]: a list, not a scalar (no nested lists)")
                _arg_scalar(f"{where}[{i}]", item)
        else:
            _arg_scalar(where, value)


class NodeState(Body, frozen=True, kw_only=True):
    """Retained presence. ``online=True`` after connect; the will says ``online=False``."""

    TYPE: ClassVar[str] = "state"
    online: bool


class GroupInfo(WireModel, frozen=True, kw_only=True):
    agents: Annotated[Count, Meta(description="agents in the group")]
    bundle: Annotated[ShortText, Meta(description="bundle name the group runs")] | None = None
    bundle_sha256: Annotated[Sha256Hex, Meta(description="sha256 of the manifest")] | None = None


class Birth(Body, frozen=True, kw_only=True, omit_defaults=True):
    """Who the node is, sent on every connect and on request. Resets receivers' seq tracking.

    ``bundle_keys`` and ``tick_hz`` came later: absent (not encoded at all), the node is of an
    earlier version and says neither; a hub of an earlier version refuses a birth that carries
    them (unknown fields): update the hub before the nodes."""

    TYPE: ClassVar[str] = "birth"
    software_version: ShortText
    profile: ShortText
    budget_bytes: Annotated[Count, Meta(description="memory budget of the profile")]
    groups: Annotated[dict[Name, GroupInfo], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )
    capabilities: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)] = (
        msgspec.field(default_factory=list)
    )
    labels: Annotated[
        dict[Name, ShortText],
        Meta(max_length=32, description="the node's [mqtt] labels: what rollouts select by"),
    ] = msgspec.field(default_factory=dict)
    bundle_keys: (
        Annotated[
            list[KeyIdHex],
            Meta(
                max_length=MAX_BUNDLE_KEYS,
                description="the ids of the keys bundles are verified with ([daemon] "
                "trusted_keys_dir; empty: none): a bundle signed by another key is refused",
            ),
        ]
        | None
    ) = None
    tick_hz: (
        Annotated[float, Meta(gt=0.0, le=1000.0, description="the node's base tick rate (Hz)")]
        | None
    ) = None


class DeathReason(StrEnum):
    SHUTDOWN = "shutdown"
    RESTART = "restart"
    UPGRADE = "upgrade"
    ERROR = "error"


class Death(Body, frozen=True, kw_only=True):
    """Published by a node that stops on purpose, before its retained state goes offline."""

    TYPE: ClassVar[str] = "death"
    reason: DeathReason


class OutboxCounters(WireModel, frozen=True, kw_only=True):
    stored: Count
    sent: Count
    acked: Count
    rejected: Count
    expired: Count
    dropped: Count
    refused: Count
    depth_rows: Count
    depth_bytes: Count
    full: bool


class Telemetry(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "telemetry"
    uptime_s: NonNegFloat
    rss_bytes: Count
    budget_used_bytes: Count
    budget_total_bytes: Count
    ticks: Count
    tick_p50_ms: NonNegFloat
    tick_p99_ms: NonNegFloat
    overruns: Count
    groups: Annotated[dict[Name, Count], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )
    cpu_temp_c: Finite | None = None
    outbox: OutboxCounters | None = None
    counters: Annotated[
        dict[Annotated[str, Meta(max_length=64)], int | Finite], Meta(max_length=256)
    ] = msgspec.field(default_factory=dict)


class MeasureSummary(WireModel, frozen=True, kw_only=True):
    """One health measure over a window: its mean and 95th percentile over ``n`` values (agent-
    steps, or the agents sampled: ``docs/health.md`` says which per measure)."""

    mean: Finite
    p95: Finite
    n: Annotated[int, Meta(ge=1, le=(1 << 63) - 1)]


class DriftState(WireModel, frozen=True, kw_only=True):
    """A group's change detector on its excess surprise (Page-Hinkley): whether it is in alarm,
    its statistic and the threshold the alarm fires at, and since when (wall clock) it alarms."""

    alarm: bool
    statistic: Finite
    threshold: NonNegFloat
    since: Finite | None = None


class GroupHealth(WireModel, frozen=True, kw_only=True):
    """What one group's health measures were over the window (``docs/health.md``): per measure a
    :class:`MeasureSummary` (a measure with no value in the window is left out), the agent-steps
    the window held, the model the group runs (``name@version``, or the built-in world's name),
    and its drift detector."""

    model: Annotated[str, Meta(min_length=1, max_length=160)]
    agent_steps: Count
    measures: Annotated[dict[MeasureName, MeasureSummary], Meta(max_length=32)] = msgspec.field(
        default_factory=dict
    )
    drift: DriftState | None = None


class Health(Body, frozen=True, kw_only=True):
    """Node -> hub, on the node's ``health`` topic at the telemetry cadence: each group's health
    over the last ``window_s`` seconds. Its own topic and type, so that a hub or broker of an
    earlier version never sees it inside a message it knows."""

    TYPE: ClassVar[str] = "health"
    window_s: NonNegFloat
    groups: Annotated[dict[Name, GroupHealth], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )


class EventKind(StrEnum):
    ALARM = "alarm"
    BUDGET = "budget"
    THERMAL = "thermal"
    OVERRUN = "overrun"
    ROLLBACK = "rollback"
    DEPLOY = "deploy"
    REJECTED_INPUT = "rejected_input"
    OUTBOX = "outbox"
    CONNECTIVITY = "connectivity"
    CLOCK = "clock"
    CONFIG = "config"
    OTHER = "other"


class Severity(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Event(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "event"
    kind: EventKind
    severity: Severity = Severity.INFO
    detail: Detail = ""
    group: Name | None = None
    data: Args = msgspec.field(default_factory=dict)

    def _check(self) -> None:
        check_args("data", self.data)


Nonce = Annotated[bytes, Meta(min_length=8, max_length=64)]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return [[k, _canonical(value[k])] for k in sorted(value)]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


class Command(Body, frozen=True, kw_only=True):
    """Hub -> node command. The signature is made and checked elsewhere; see ``signing_bytes``."""

    TYPE: ClassVar[str] = "command"
    target: Annotated[Name, Meta(description="node the command is for; covered by the signature")]
    nonce: Annotated[Nonce, Meta(description="random, never reused; the node refuses replays")]
    expires: Annotated[
        NonNegFloat, Meta(description="wall-clock seconds after which it is refused")
    ]
    key_id: Annotated[str, Meta(max_length=64)]
    signature: Annotated[bytes, Meta(max_length=128)] = b""
    name: Name
    args: Args = msgspec.field(default_factory=dict)

    def _check(self) -> None:
        check_args("args", self.args)

    def signing_bytes(self, fleet: str) -> bytes:
        """The exact bytes the signature covers: everything but the signature, canonical order."""
        fields = [
            PROTOCOL_VERSION,
            fleet,
            self.target,
            self.nonce,
            self.expires,
            self.key_id,
            self.name,
            _canonical(self.args),
        ]
        packed: bytes = msgspec.msgpack.encode(fields)
        return packed


class CommandResult(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "result"
    nonce: Annotated[Nonce, Meta(description="the nonce of the command this answers")]
    name: Name
    code: ResultCode
    detail: Detail = ""
    data: Args = msgspec.field(default_factory=dict)

    def _check(self) -> None:
        check_args("data", self.data)


class RebirthRequest(Body, frozen=True, kw_only=True):
    """Ask a node to publish its birth again (e.g. after a sequence gap)."""

    TYPE: ClassVar[str] = "rebirth"
    reason: ShortText = ""


ARRAY_DTYPES: Final[Mapping[str, str]] = {
    "int8": "<i1",
    "uint8": "<u1",
    "int16": "<i2",
    "int32": "<i4",
    "float32": "<f4",
}
ArrayDtype = Literal["int8", "uint8", "int16", "int32", "float32"]
MAX_BATCH_AGENTS: Final = 1 << 16


class _ArrayBatch(Body, frozen=True, kw_only=True):
    """One value row per agent, packed as little-endian bytes (msgpack bin)."""

    group: Name
    tick: Annotated[Count, Meta(description="sender's tick number")]
    agent_ids: Annotated[bytes, Meta(description="little-endian uint32, one per agent")]
    dtype: ArrayDtype
    width: Annotated[int, Meta(ge=1, le=4096, description="values per agent")]
    values: Annotated[bytes, Meta(description="(n_agents, width) row-major, little-endian dtype")]

    def _check(self) -> None:
        if len(self.agent_ids) % 4:
            raise ValueError(f"agent_ids has {len(self.agent_ids)} bytes, not a multiple of 4")
        n = len(self.agent_ids) // 4
        if n > MAX_BATCH_AGENTS:
            raise ValueError(f"{n} agents in one batch, at most {MAX_BATCH_AGENTS}")
        itemsize = np.dtype(ARRAY_DTYPES[self.dtype]).itemsize
        if len(self.values) != n * self.width * itemsize:
            raise ValueError(
                f"values has {len(self.values)} bytes, expected {n} agents x {self.width} x "
                f"{itemsize} = {n * self.width * itemsize}"
            )

    @property
    def n_agents(self) -> int:
        return len(self.agent_ids) // 4

    @classmethod
    def from_arrays(
        cls, group: str, tick: int, agent_ids: npt.ArrayLike, values: npt.ArrayLike
    ) -> Self:
        """Pack ``agent_ids: (n,)`` and ``values: (n, width)`` (a supported dtype)."""
        ids = np.asarray(agent_ids)
        vals = np.asarray(values)
        if ids.ndim != 1:
            raise ValueError(f"agent_ids has shape {ids.shape}, expected (n,)")
        if vals.ndim != 2 or vals.shape[0] != ids.shape[0]:
            raise ValueError(f"values has shape {vals.shape}, expected ({ids.shape[0]}, width)")
        if ids.size and (ids.min() < 0 or ids.max() >= UINT32):
            raise ValueError("agent_ids must be in [0, 2**32)")
        names = {np.dtype(v).name: k for k, v in ARRAY_DTYPES.items()}
        dtype = names.get(vals.dtype.name)
        if dtype is None:
            raise ValueError(f"values dtype {vals.dtype} is not one of {sorted(ARRAY_DTYPES)}")
        return cls(
            group=group,
            tick=tick,
            agent_ids=ids.astype("<u4").tobytes(),
            dtype=dtype,  # type: ignore[arg-type]  # checked against ARRAY_DTYPES above
            width=vals.shape[1],
            values=vals.astype(ARRAY_DTYPES[dtype]).tobytes(),
        )

    def arrays(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[Any]]:
        """``(agent_ids: (n,) uint32, values: (n, width))``, read-only views of the payload."""
        ids = np.frombuffer(self.agent_ids, dtype="<u4").astype(np.uint32, copy=False)
        vals = np.frombuffer(self.values, dtype=ARRAY_DTYPES[self.dtype])
        return ids, vals.reshape(self.n_agents, self.width)


class ObservationBatch(_ArrayBatch, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "obs"


#: Values in one frame at most (a 1024 x 1024 RGB frame is 3 Mi).
MAX_FRAME_VALUES: Final = 1 << 22


class FrameBatch(Body, frozen=True, kw_only=True):
    """One camera frame for one agent of a neural or perception group (type ``frame``).

    ``encoding`` ``raw``: ``data`` is the frame's values, row-major little-endian ``dtype``, of
    ``shape`` (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``); ``jpeg``: ``data`` is a JPEG file
    (``shape`` and ``dtype`` are then what the device decodes it to, ``(H, W)`` or
    ``(H, W, 3)`` uint8, and only checked against the model).
    """

    TYPE: ClassVar[str] = "frame"
    group: Name
    tick: Annotated[Count, Meta(description="sender's tick number")]
    agent_id: Annotated[U32, Meta(description="the agent's index in its group")]
    encoding: Literal["raw", "jpeg"]
    dtype: Literal["uint8", "float32"] = "uint8"
    shape: Annotated[list[Annotated[int, Meta(ge=1, le=4096)]], Meta(min_length=2, max_length=3)]
    data: bytes

    def _check(self) -> None:
        values = math.prod(self.shape)
        if values > MAX_FRAME_VALUES:
            raise ValueError(
                f"a frame of shape {list(self.shape)} has more than {MAX_FRAME_VALUES} values"
            )
        if self.encoding == "raw":
            expected = values * np.dtype(ARRAY_DTYPES[self.dtype]).itemsize
            if len(self.data) != expected:
                raise ValueError(
                    f"data has {len(self.data)} bytes, a raw {self.dtype} frame of shape "
                    f"{list(self.shape)} has {expected}"
                )


class ActionBatch(_ArrayBatch, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "action"


class BeliefBatch(_ArrayBatch, frozen=True, kw_only=True):
    """Shared posterior beliefs (``qs``), one row per agent, for peers."""

    TYPE: ClassVar[str] = "beliefs"


class BundleChunk(Body, frozen=True, kw_only=True):
    """Bytes ``[index * chunk_size, ...)`` of the bundle file of bundle ``sha256``, broadcast on
    :meth:`~edge_agent.fleet.topics.Topics.bundle`. Unsigned: a node takes it only while a signed
    ``deploy`` command for that bundle is receiving, and only when it matches that command's hash
    for the chunk."""

    TYPE: ClassVar[str] = "chunk"
    sha256: Sha256Hex
    index: Annotated[int, Meta(ge=0, lt=MAX_CHUNKS)]
    data: Annotated[bytes, Meta(min_length=1, max_length=MAX_CHUNK_BYTES)]


#: The values one learning delta may carry (one table's increments: columns x rows), 2**18
#: float32 (1 MiB): a larger delta is sent as several, each with its own ``seq``.
MAX_DELTA_VALUES: Final = 1 << 18
TableDim = Annotated[int, Meta(ge=1, le=1 << 20)]


class CountsDelta(WireModel, frozen=True, kw_only=True, omit_defaults=True):
    """One learned table's Dirichlet count increments since the node's last report, sparse by
    column (``docs/fleet-learning.md``).

    ``table``: ``A{m}``, ``B{f}`` or ``D{f}``; ``shape``: the table's (``A[m]`` ``(O, S_0, ...)``,
    ``B[f]`` ``(S, S, U)``, ``D[f]`` ``(S,)``); a column is every axis but the first, flattened in
    C order; ``columns``: little-endian uint32, the columns that moved (ascending, distinct);
    ``values``: little-endian float32 ``(len(columns), shape[0])`` row-major, each column's
    increments (summed before any forgetting on the node, over every agent of the group);
    ``experience``: the agent-ticks they stand for; ``lr``: the learning rate, so that the hub can
    hold each increment to the mass the experience allows (``experience * lr`` per table).

    Sparse within columns: with ``index`` (little-endian uint32, ascending, distinct), ``values``
    holds only the values at those places of the dense ``(len(columns), shape[0])`` block
    (``i * shape[0] + row`` for the ``i``-th column's ``row``), every other value being 0; the
    sender chooses it per table part when it is smaller (:func:`sparse_counts_delta`). Absent
    (the default, not encoded), ``values`` is the dense block: a message without it is the same
    bytes as before ``index`` existed. :meth:`arrays` gives the dense block either way."""

    table: Annotated[str, Meta(pattern=r"^[ABD][0-9]{1,3}\Z")]
    shape: Annotated[tuple[TableDim, ...], Meta(min_length=1, max_length=16)]
    columns: bytes
    values: bytes
    experience: Count
    lr: NonNegFloat
    index: bytes | None = None

    def _check(self) -> None:
        if len(self.columns) % 4:
            raise ValueError(f"columns has {len(self.columns)} bytes, not a multiple of 4")
        n = len(self.columns) // 4
        rows = self.shape[0]
        if n * rows > MAX_DELTA_VALUES:
            raise ValueError(f"{n} columns of {rows} values, at most {MAX_DELTA_VALUES} values")
        if self.index is None:
            if len(self.values) != 4 * n * rows:
                raise ValueError(
                    f"values has {len(self.values)} bytes, expected {n} columns x {rows} x 4"
                )
            return
        if len(self.index) % 4:
            raise ValueError(f"index has {len(self.index)} bytes, not a multiple of 4")
        if len(self.values) != len(self.index):
            raise ValueError(
                f"values has {len(self.values)} bytes, expected 4 per index entry "
                f"({len(self.index)} bytes)"
            )
        index = np.frombuffer(self.index, dtype="<u4")
        if index.size and (np.any(np.diff(index.astype(np.int64)) <= 0) or index[-1] >= n * rows):
            raise ValueError(
                f"index must be ascending, distinct and below {n} columns x {rows} values"
            )

    def arrays(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
        """``(columns: (k,) uint32, values: (k, shape[0]) float32)``, read-only views (dense:
        a sparse table part is made dense here, a new array)."""
        cols = np.frombuffer(self.columns, dtype="<u4").astype(np.uint32, copy=False)
        vals = np.frombuffer(self.values, dtype="<f4").astype(np.float32, copy=False)
        if self.index is not None:
            dense = np.zeros(cols.shape[0] * self.shape[0], dtype=np.float32)
            dense[np.frombuffer(self.index, dtype="<u4")] = vals
            dense.flags.writeable = False
            vals = dense
        return cols, vals.reshape(cols.shape[0], self.shape[0])

    def entries(
        self,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The values not 0 and their places, never dense: ``(columns: (v,), rows: (v,),
        values: (v,))`` (a sparse table part as sent; a dense one's values not 0)."""
        cols = np.frombuffer(self.columns, dtype="<u4").astype(np.uint32, copy=False)
        vals = np.frombuffer(self.values, dtype="<f4").astype(np.float32, copy=False)
        if self.index is None:
            places = np.flatnonzero(vals)
            vals = vals[places]
        else:
            places = np.frombuffer(self.index, dtype="<u4").astype(np.int64)
            sent = vals != 0
            if not sent.all():
                places, vals = places[sent], vals[sent]
        rows = self.shape[0]
        return cols[places // rows], places % rows, vals


def sparse_counts_delta(
    table: str,
    shape: tuple[int, ...],
    columns: npt.NDArray[np.uint32],
    values: npt.NDArray[np.float32],
    *,
    experience: int,
    lr: float,
) -> CountsDelta:
    """The :class:`CountsDelta` of ``columns`` and their dense ``values`` ``(k, shape[0])``,
    in the smaller of its two encodings: dense (``4 k shape[0]`` bytes of values) or sparse
    (``8`` bytes per value not 0: its place in ``index``, its value); dense on a tie."""
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    places = np.flatnonzero(flat)
    sparse = 2 * places.size < flat.size
    return CountsDelta(
        table=table,
        shape=shape,
        columns=np.ascontiguousarray(columns, dtype="<u4").tobytes(),
        values=(flat[places] if sparse else flat).tobytes(),
        experience=experience,
        lr=lr,
        index=places.astype("<u4").tobytes() if sparse else None,
    )


class LearningDelta(Body, frozen=True, kw_only=True):
    """Node -> hub, on the node's ``learning`` topic through the outbox: what a learning group's
    agents learned since its last report (``docs/fleet-learning.md``). ``model``: the model line
    and version the counts were learned against (``name@version``); ``model_sha256``: that
    bundle's identity; ``seq``: per node and group, from 1, never reused (a restart goes on
    from the last one sent): the hub counts a ``(node, group, seq)`` once."""

    TYPE: ClassVar[str] = "learning"
    group: Name
    model: Annotated[str, Meta(min_length=1, max_length=160)]
    model_sha256: Sha256Hex
    seq: Annotated[int, Meta(ge=1, le=(1 << 63) - 1)]
    tables: Annotated[list[CountsDelta], Meta(min_length=1, max_length=64)]


_BODY_TYPES: dict[str, type[Body]] = {}
_BODY_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {}


def register_body_type(model: type[Body]) -> None:
    """Add a message type (e.g. the coordination layer's task messages on ``tasks``)."""
    name = model.TYPE
    if re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) is None:
        raise ProtocolError(f"message type {name!r} must match [a-z][a-z0-9_]{{0,31}}")
    if name in _BODY_TYPES and _BODY_TYPES[name] is not model:
        raise ProtocolError(f"message type {name!r} is already registered")
    _BODY_TYPES[name] = model
    prepare(model)
    _BODY_DECODERS[name] = msgspec.msgpack.Decoder(model)


for _model in (
    NodeState,
    Birth,
    Death,
    Telemetry,
    Health,
    Event,
    Command,
    CommandResult,
    RebirthRequest,
    ObservationBatch,
    FrameBatch,
    ActionBatch,
    BeliefBatch,
    BundleChunk,
    LearningDelta,
):
    register_body_type(_model)


def body_model(msg_type: str) -> type[Body]:
    """The body model of ``msg_type``; :class:`ProtocolError` if unknown."""
    try:
        return _BODY_TYPES[msg_type]
    except KeyError:
        raise ProtocolError(f"unknown message type {msg_type!r}") from None


class _Header(WireModel, frozen=True, kw_only=True):
    """The envelope without its body: what :func:`decode` checks before the body's model."""

    v: Literal[1]
    type: str
    node: Annotated[Name, Meta(description="sender")]
    seq: Annotated[U32, Meta(description="sender's message sequence, wraps at 2**32")]
    bdseq: Annotated[U32, Meta(description="sender's birth/death sequence")]
    ts: Annotated[NonNegFloat, Meta(description="sender's wall clock, seconds since the epoch")]
    clock_synced: Annotated[
        bool, Meta(description="whether the sender's clock was NTP-synchronised")
    ]


class _Incoming(_Header, frozen=True, kw_only=True):
    body: msgspec.Raw
    """Left as msgpack until the model registered for ``type`` decodes it."""


_INCOMING: Final = msgspec.msgpack.Decoder(_Incoming)


class Envelope(_Header, frozen=True, kw_only=True):
    """What every payload is. ``body`` is the model registered for ``type``."""

    v: Literal[1] = PROTOCOL_VERSION
    body: Body

    def _validate(self) -> None:
        # msgspec converts a Body field only from a mapping: the body checked itself when it
        # was made, so only the header is converted here.
        header = {name: getattr(self, name) for name in _Header.__struct_fields__}
        _adopt(self, _convert(_Header, header))
        self._check()

    def _check(self) -> None:
        model = _BODY_TYPES.get(self.type)
        if model is None:
            raise ValueError(f"unknown message type {self.type!r}")
        if type(self.body) is not model:
            raise ValueError(f"type {self.type!r} needs a {model.__name__} body")


prepare_all()  # msgspec's type info of every model above now, not on two threads at once


class DecodeError(ProtocolError):
    """A payload was refused; ``reason`` is one of :data:`DECODE_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


DECODE_REASONS: Final = (
    "oversized",
    "not_msgpack",
    "not_a_map",
    "version",
    "unknown_type",
    "schema",
)

_ENCODER: Final = msgspec.msgpack.Encoder()
_PATH: Final = re.compile(r" - at (`key` in )?`\$([^`]*)`\Z")


def encode(envelope: Envelope, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Pack ``envelope`` as msgpack (arrays as bin); ProtocolError when over ``max_bytes``.

    One map, the envelope's fields in order with the body's fields (all of them, defaults
    too) as a map under ``body``: the bytes the pydantic models wrote (``tests`` pin them)."""
    payload = _ENCODER.encode(envelope)
    if len(payload) > max_bytes:
        raise ProtocolError(
            f"{envelope.type} message is {len(payload)} bytes, the limit is {max_bytes}"
        )
    return payload


def decode(payload: bytes | bytearray, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Validate and unpack one payload. Raises only :class:`DecodeError`.

    msgspec reads the envelope's header, then the body with the model registered for its type.
    When either refuses, the payload is read again the way the reasons are defined (msgpack,
    a map, the version, a known type) to name the first reason it fails; ``schema`` otherwise,
    with msgspec's message and the path of the bad field (`` - at `$.body.ticks` ``).
    """
    if not isinstance(payload, bytes | bytearray):
        raise DecodeError("not_msgpack", f"payload is a {type(payload).__name__}, not bytes")
    if len(payload) > max_bytes:
        raise DecodeError("oversized", f"{len(payload)} bytes, the limit is {max_bytes}")
    in_body = False
    token = _VALIDATED.set(True)
    try:
        head = _INCOMING.decode(payload)
        decoder = _BODY_DECODERS.get(head.type)
        if decoder is None:
            raise DecodeError("unknown_type", f"message type {head.type!r}")
        in_body = True
        body = decoder.decode(head.body)
        return Envelope(
            v=head.v,
            type=head.type,
            node=head.node,
            seq=head.seq,
            bdseq=head.bdseq,
            ts=head.ts,
            clock_synced=head.clock_synced,
            body=body,
        )
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as err:
        # msgspec raises UnicodeDecodeError (a ValueError) for a str that is not UTF-8
        raise _refusal(payload, err, in_body) from err
    finally:
        _VALIDATED.reset(token)


def _has_key_not_text(obj: object) -> bool:
    """Whether a map anywhere in ``obj`` (decoded msgpack) has a key that is not a string: the
    protocol's maps are keyed by names, so such a payload is not one of its messages."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(not isinstance(k, str) for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _refusal(payload: bytes | bytearray, err: Exception, in_body: bool) -> DecodeError:
    """Why ``payload`` was refused: the first of the reasons in :data:`DECODE_REASONS` order."""
    try:
        obj = msgspec.msgpack.decode(payload)
    except Exception as bad:  # a refusal's reason is never itself an error
        return DecodeError("not_msgpack", f"{type(bad).__name__}: {bad}")
    if _has_key_not_text(obj):
        return DecodeError("not_msgpack", "a map key that is not a string")
    if not isinstance(obj, dict):
        return DecodeError("not_a_map", f"payload is a msgpack {type(obj).__name__}, not a map")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        return DecodeError("version", f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    msg_type = obj.get("type")
    if not isinstance(msg_type, str) or msg_type not in _BODY_TYPES:
        return DecodeError("unknown_type", f"message type {msg_type!r}")
    if isinstance(err, RecursionError):
        return DecodeError("schema", f"{msg_type}: nested too deeply")
    message = str(err)
    if in_body:
        where = _PATH.search(message)
        if where is None:
            message += " - at `$.body`"
        else:
            key = where.group(1) or ""
            message = f"{message[: where.start()]} - at {key}`$.body{where.group(2)}`"
    return DecodeError("schema", f"{msg_type}: {message}")


# --------------------------------------------------------------------------------------------
# Sequence numbers


def seq_distance(older: int, newer: int) -> int:
    """``(newer - older) mod 2**32``: how far ``newer`` is ahead of ``older`` on the ring."""
    return (newer - older) % UINT32


class SeqVerdict(StrEnum):
    BIRTH = "birth"
    """A birth: tracking restarts from its seq."""
    IN_ORDER = "in_order"
    GAP = "gap"
    """``missing`` messages were skipped; ask for a rebirth."""
    LATE = "late"
    """Not ahead of the last one seen: a duplicate or a re-send after reconnect."""
    STALE_SESSION = "stale_session"
    """From an older birth/death session (an outbox re-send from before the current birth)."""
    NO_BIRTH = "no_birth"
    """No birth of this session was seen; ask for a rebirth."""
    UNTRACKED = "untracked"
    """Presence and deaths are not sequenced (the will is built before the session starts)."""


@dataclass(frozen=True, slots=True)
class SeqResult:
    verdict: SeqVerdict
    missing: int = 0

    @property
    def needs_rebirth(self) -> bool:
        return self.verdict in (SeqVerdict.GAP, SeqVerdict.NO_BIRTH)


_UNSEQUENCED: Final = frozenset({"state", "death"})


class SeqTracker:
    """Gap detection for the messages of one remote node (wrap-around safe).

    A birth sets the reference ``(bdseq, seq)``. A later message of the same ``bdseq`` is in order
    when its ``seq`` is exactly one ahead, a gap when it is further ahead (by less than 2**31),
    and late (duplicate or re-send) otherwise. A message of an older ``bdseq`` is a stale-session
    re-send; one of a newer ``bdseq`` means its birth was missed.
    """

    __slots__ = ("bdseq", "gaps", "last_seq", "missing")

    def __init__(self) -> None:
        self.bdseq: int | None = None
        self.last_seq = 0
        self.gaps = 0
        self.missing = 0

    def observe(self, msg_type: str, bdseq: int, seq: int) -> SeqResult:
        if msg_type in _UNSEQUENCED:
            return SeqResult(SeqVerdict.UNTRACKED)
        if msg_type == Birth.TYPE:
            self.bdseq, self.last_seq = bdseq, seq
            return SeqResult(SeqVerdict.BIRTH)
        if self.bdseq is None:
            return SeqResult(SeqVerdict.NO_BIRTH)
        if bdseq != self.bdseq:
            if 0 < seq_distance(self.bdseq, bdseq) < _HALF:
                return SeqResult(SeqVerdict.NO_BIRTH)
            return SeqResult(SeqVerdict.STALE_SESSION)
        ahead = seq_distance(self.last_seq, seq)
        if ahead == 1:
            self.last_seq = seq
            return SeqResult(SeqVerdict.IN_ORDER)
        if ahead == 0 or ahead >= _HALF:
            return SeqResult(SeqVerdict.LATE)
        self.last_seq = seq
        self.gaps += 1
        self.missing += ahead - 1
        return SeqResult(SeqVerdict.GAP, ahead - 1)


# --------------------------------------------------------------------------------------------
# Clock


TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR: Final = 5  # adjtimex(2) return value while the kernel clock is unsynchronised
_TIMEX_BYTES: Final = 512  # struct timex is 208 bytes on LP64; ``modes`` (offset 0) = 0 reads only


def clock_synced() -> bool:
    """Whether the wall clock is synchronised to a time source.

    True when systemd-timesyncd has written ``/run/systemd/timesync/synchronized``, or when the
    kernel's NTP state (``adjtimex(2)`` read-only, which chrony, ntpd and timesyncd all maintain)
    is not ``TIME_ERROR``. False when neither says so or the call is unavailable. In a container
    the kernel answer is the host's.
    """
    if TIMESYNC_FLAG.exists():
        return True
    state = _adjtimex_state()
    return state is not None and state != _TIME_ERROR


def _adjtimex_state() -> int | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buf = ctypes.create_string_buffer(_TIMEX_BYTES)
    state = int(adjtimex(buf))
    return None if state < 0 else state
