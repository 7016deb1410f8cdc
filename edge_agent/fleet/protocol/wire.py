"""The wire's base: what every message model is (:class:`WireModel`, :class:`Body`), how a model
is checked where it is made as where it is received, the field types the bodies share, and a
command's arguments (:func:`check_args`). The protocol's version is here, which a command's
signed bytes carry."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Final, TypeVar

import msgspec
import numpy as np
from msgspec import Meta

from edge_agent.fleet.names import NAME_PATTERN, UINT32

PROTOCOL_VERSION: Final = 1

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
        adopt(self, convert(type(self), fields))

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


@contextmanager
def already_validated() -> Iterator[None]:
    """While msgspec builds models from values it has just validated (a payload decoded):
    their ``__post_init__`` runs only the rules across fields (:meth:`WireModel._check`)."""
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


def convert(model: type[M], data: Any) -> M:
    """``data`` (a mapping of plain values, or models standing in for nested ones) as a
    ``model``, checked strictly as a received message is."""
    prepare(model)
    token = _VALIDATED.set(True)
    try:
        # builtin_types: a str is not base64-decoded into a bytes field, it is refused
        return msgspec.convert(_plain(data), model, strict=True, builtin_types=_BYTES_TYPES)
    finally:
        _VALIDATED.reset(token)


def adopt(model: WireModel, checked: WireModel) -> None:
    """Give ``model`` the values of the fields of ``checked`` (all of them, or an envelope's
    header)."""
    for name in checked.__struct_fields__:
        msgspec.structs.force_setattr(model, name, getattr(checked, name))


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` as a ``model``, checked as strictly as a received message (models may stand in
    for nested ones). Raises :class:`msgspec.ValidationError`, whose message ends with the path
    of the bad field (`` - at `$.groups` ``)."""
    return convert(model, dict(data))


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
