"""The envelope every payload is, and its codec: the registry of body types
(:func:`register_body_type`), :func:`encode`, and :func:`decode`, which refuses a payload with one
of :data:`DECODE_REASONS`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from edge_agent.errors import ProtocolError
from edge_agent.fleet.protocol.bodies import (
    ActionBatch,
    BeliefBatch,
    Birth,
    BundleChunk,
    Command,
    CommandResult,
    Death,
    Event,
    FrameBatch,
    Health,
    LearningDelta,
    NodeState,
    ObservationBatch,
    RebirthRequest,
    Telemetry,
)
from edge_agent.fleet.protocol.wire import (
    PROTOCOL_VERSION,
    U32,
    Body,
    Name,
    NonNegFloat,
    WireModel,
    adopt,
    already_validated,
    convert,
    prepare,
    prepare_all,
)

DEFAULT_MAX_BYTES: Final = 256 * 1024
"""Largest payload :func:`encode` writes and :func:`decode` accepts unless told otherwise."""


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
        adopt(self, convert(_Header, header))
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
    try:
        with already_validated():
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
