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

The package's modules, from the bottom: :mod:`.wire` (the models' base, the shared field
types, a command's arguments), :mod:`.bodies` (one model per message type), :mod:`.envelope`
(the envelope, the registry of body types, :func:`encode` and :func:`decode`), :mod:`.sequence`
(``seq`` and ``bdseq`` on the ring, :class:`SeqTracker`) and :mod:`.clock` (whether the clock
is synchronised). Every name of theirs is importable from ``edge_agent.fleet.protocol``, as are
a command result's codes (:class:`~edge_agent.fleet.outcomes.ResultCode`) and the ring's size
(:data:`~edge_agent.fleet.names.UINT32`), which the protocol's users name from here.
"""

from __future__ import annotations

from edge_agent.fleet.names import UINT32
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol.bodies import (
    ARRAY_DTYPES,
    MAX_BATCH_AGENTS,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_DELTA_VALUES,
    MAX_FRAME_VALUES,
    ActionBatch,
    ArrayDtype,
    BeliefBatch,
    Birth,
    BundleChunk,
    Command,
    CommandResult,
    CountsDelta,
    Death,
    DeathReason,
    DriftState,
    Event,
    EventKind,
    FrameBatch,
    GroupHealth,
    GroupInfo,
    Health,
    LearningDelta,
    MeasureSummary,
    NodeState,
    Nonce,
    ObservationBatch,
    OutboxCounters,
    RebirthRequest,
    Severity,
    TableDim,
    Telemetry,
    sparse_counts_delta,
)
from edge_agent.fleet.protocol.clock import (
    TIMESYNC_FLAG,
    clock_synced,
)
from edge_agent.fleet.protocol.envelope import (
    DECODE_REASONS,
    DEFAULT_MAX_BYTES,
    DecodeError,
    Envelope,
    body_model,
    decode,
    encode,
    register_body_type,
)
from edge_agent.fleet.protocol.sequence import (
    SeqResult,
    SeqTracker,
    SeqVerdict,
    seq_distance,
)
from edge_agent.fleet.protocol.wire import (
    MAX_ARG_KEY,
    MAX_ARG_LIST,
    MAX_ARG_TEXT,
    MAX_ARGS,
    MAX_BUNDLE_KEYS,
    NAME_RULE,
    PROTOCOL_VERSION,
    U32,
    Args,
    ArgValue,
    Body,
    Count,
    Detail,
    Finite,
    KeyIdHex,
    Name,
    NonNegFloat,
    Scalar,
    Sha256Hex,
    ShortText,
    WireModel,
    adopt,
    already_validated,
    as_builtins,
    check_args,
    convert,
    prepare,
    prepare_all,
    validate,
)

__all__ = [
    "ARRAY_DTYPES",
    "DECODE_REASONS",
    "DEFAULT_MAX_BYTES",
    "MAX_ARGS",
    "MAX_ARG_KEY",
    "MAX_ARG_LIST",
    "MAX_ARG_TEXT",
    "MAX_BATCH_AGENTS",
    "MAX_BUNDLE_KEYS",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_DELTA_VALUES",
    "MAX_FRAME_VALUES",
    "NAME_RULE",
    "PROTOCOL_VERSION",
    "TIMESYNC_FLAG",
    "U32",
    "UINT32",
    "ActionBatch",
    "ArgValue",
    "Args",
    "ArrayDtype",
    "BeliefBatch",
    "Birth",
    "Body",
    "BundleChunk",
    "Command",
    "CommandResult",
    "Count",
    "CountsDelta",
    "Death",
    "DeathReason",
    "DecodeError",
    "Detail",
    "DriftState",
    "Envelope",
    "Event",
    "EventKind",
    "Finite",
    "FrameBatch",
    "GroupHealth",
    "GroupInfo",
    "Health",
    "KeyIdHex",
    "LearningDelta",
    "MeasureSummary",
    "Name",
    "NodeState",
    "NonNegFloat",
    "Nonce",
    "ObservationBatch",
    "OutboxCounters",
    "RebirthRequest",
    "ResultCode",
    "Scalar",
    "SeqResult",
    "SeqTracker",
    "SeqVerdict",
    "Severity",
    "Sha256Hex",
    "ShortText",
    "TableDim",
    "Telemetry",
    "WireModel",
    "adopt",
    "already_validated",
    "as_builtins",
    "body_model",
    "check_args",
    "clock_synced",
    "convert",
    "decode",
    "encode",
    "prepare",
    "prepare_all",
    "register_body_type",
    "seq_distance",
    "sparse_counts_delta",
    "validate",
]
