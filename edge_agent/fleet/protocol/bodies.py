"""The bodies of the fleet's messages, one model per message type: a node's presence, birth,
death, telemetry, health and events; a signed command and its result; a rebirth request; the
agents' observation, frame, action and belief batches; a bundle's chunk; a group's learning
delta. :mod:`.envelope` registers each under its ``TYPE``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from edge_agent.fleet.health_measures import MeasureName
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol.wire import (
    MAX_BUNDLE_KEYS,
    PROTOCOL_VERSION,
    U32,
    Args,
    Body,
    Count,
    Detail,
    Finite,
    KeyIdHex,
    Name,
    NonNegFloat,
    Sha256Hex,
    ShortText,
    WireModel,
    check_args,
    prepare_all,
)

MAX_CHUNK_BYTES: Final = 192 * 1024
"""Largest deploy chunk: with the envelope it stays under the 256 KiB payload limit."""
MAX_CHUNKS: Final = 8192


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


prepare_all()  # msgspec's type info of every body now, not on two threads at once
