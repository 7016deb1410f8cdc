"""Records: the frozen dataclasses that config files and firmware profiles are read into.

A :class:`Record` is a frozen, keyword-only dataclass whose fields carry their rules in
``Annotated`` metadata: :class:`Rule` (bounds, lengths, pattern, description, the tag of a union)
and :class:`Check` (a function run on the value). The rules serve twice:

- **Validating a document** (``edge_agent.config.toml_lines.validate_toml``): pydantic reads the
  rules through their ``__get_pydantic_core_schema__`` hooks and validates strictly, with unknown
  keys refused. pydantic is imported only there, by whoever validates: ``check-config``, the
  short-lived process the daemon reads its config in (:mod:`edge_agent.config.isolated`), tests.
- **Running**: the daemon holds the records themselves. They are plain dataclasses; importing this
  module, or any record type, imports no pydantic, which the daemon's memory budget cannot afford
  (``benchmarks/notes/memory.md``).

Records built in Python code are checked too, in ``__post_init__``: the bounds, lengths and
patterns of each field's :class:`Rule`, the field's after-:class:`Check`, and the record's own
cross-field checks. Types are not checked there (that takes a validator); documents are.

Cross-field problems are raised with :func:`raise_problems`, which names each problem's location
inside the record, so that a file's report points at the key each problem is about.

It lives at the bottom of the package so that every part (config, coordination, agents) can
define its part of the config file without importing the config package above it; paths in a
document (:data:`PATH`, :func:`expand_path`: ``~``, ``${VAR}``, relative to the file) too.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

__all__ = [
    "BARE_KEY_CHARS",
    "OPTIONAL_PATH",
    "PATH",
    "Check",
    "Loc",
    "Problem",
    "Record",
    "RecordError",
    "Rule",
    "ValueRecord",
    "WrongTypeError",
    "expand_path",
    "format_loc",
    "from_json",
    "mark_given",
    "path_from_document",
    "raise_problems",
]

#: A location inside a document: keys and array indices, outermost first.
Loc = tuple[str | int, ...]
#: One problem found: where, and what is wrong there.
Problem = tuple[Loc, str]

BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def format_loc(loc: Sequence[str | int]) -> str:
    """``("groups", 1, "model", "path")`` -> ``groups[1].model.path``; ``()`` -> ``<document>``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if part and set(part) <= BARE_KEY_CHARS else '"' + part + '"'
            text += f".{key}" if text else key
    return text or "<document>"


class RecordError(ValueError):
    """Problems of one record, each at its location relative to the record.

    A ValueError, so that pydantic reports it as the record's error while validating a document;
    the document's reader finds the problems in the error and gives each the line of its key.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(f"{format_loc(loc)}: {message}" for loc, message in problems))


class WrongTypeError(ValueError):
    """A :class:`Check` got a value of the wrong kind: reported as ``expected X, got Y``."""

    def __init__(self, expected: str) -> None:
        self.expected = expected
        super().__init__(f"expected {expected}")


def raise_problems(title: str, problems: Sequence[Problem]) -> None:
    """From a record's ``__post_init__`` (or a pydantic model validator): report each problem at
    its own location, relative to the record. ``title`` names the record in the message of a
    record built in code. Does nothing when ``problems`` is empty."""
    if problems:
        raise RecordError([(loc, message) for loc, message in problems]) from None


# ------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class Rule:
    """The constraints and description of one field, as pydantic's ``Field`` keywords.

    ``discriminator`` names the key whose literal value picks the member of a union (``type``).
    Put the Rule first in ``Annotated[...]``, right after the type.
    """

    description: str = ""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    discriminator: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic import Field  # noqa: PLC0415 - only where documents are validated

        keywords = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) not in (None, "")
        }
        return handler.generate_schema(typing.Annotated[source, Field(**keywords)])

    def problems(self, value: object) -> list[str]:
        """What about ``value`` breaks this rule (a record built in code)."""
        if value is None:
            return []
        out: list[str] = []
        if isinstance(value, int | float) and not isinstance(value, bool):
            bounds: tuple[tuple[float | None, str, Callable[[Any, Any], bool]], ...] = (
                (self.gt, ">", operator.gt),
                (self.ge, ">=", operator.ge),
                (self.lt, "<", operator.lt),
                (self.le, "<=", operator.le),
            )
            for bound, sign, holds in bounds:
                if bound is not None and not holds(value, bound):
                    out.append(f"must be {sign} {_num(bound)}, got {value!r}")
        if isinstance(value, str | tuple | list | dict | frozenset):
            what = "characters" if isinstance(value, str) else "items"
            if self.min_length is not None and len(value) < self.min_length:
                out.append(f"must have at least {self.min_length} {what}, got {len(value)}")
            if self.max_length is not None and len(value) > self.max_length:
                out.append(f"must have at most {self.max_length} {what}, got {len(value)}")
        if isinstance(value, str) and self.pattern and re.search(self.pattern, value) is None:
            out.append(f"must match {self.pattern}, got {value!r}")
        return out


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 2**63 else str(bound)


@dataclass(frozen=True)
class Check:
    """A function run on a field's value: ``fn(value, context) -> value``.

    ``before=True`` runs it on the raw value of a document (to convert it, e.g. a path relative
    to the config file's directory, with ``context["base_dir"]``); it raises ValueError (or
    :class:`WrongTypeError`) for a bad value. After-checks also run on records built in code,
    with an empty context.
    """

    fn: Callable[[Any, Mapping[str, Any]], Any]
    before: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema  # noqa: PLC0415 - only where documents are validated

        fn = self.fn

        def call(value: Any, info: Any) -> Any:
            return fn(value, info.context or {})

        if self.before:
            return core_schema.with_info_before_validator_function(call, handler(source))
        return core_schema.with_info_after_validator_function(call, handler(source))


# -------------------------------------------------------------------------------------- records
_GIVEN = "_given_fields"


def mark_given(value: object, data: object) -> None:
    """Note on every record in ``value`` which keys its part of the document ``data`` set
    (:attr:`Record.given`): how a group's settings override only what its table names."""
    if isinstance(value, Record) and isinstance(data, Mapping):
        object.__setattr__(value, _GIVEN, frozenset(data))
        for key, item in data.items():
            mark_given(value.document_part(key), item)
    elif isinstance(value, tuple) and isinstance(data, list | tuple):
        for item, part in zip(value, data, strict=False):
            mark_given(item, part)


_FieldChecks = tuple[tuple[str, tuple[Rule, ...], tuple[Check, ...]], ...]


@dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,)
)
class Record:
    """Base of every record read from a file: a frozen, keyword-only dataclass.

    Subclasses are made dataclasses when they are defined. Unknown keys are refused when a
    document is validated (pydantic's ``extra="forbid"``). A subclass with cross-field checks
    defines ``__post_init__``, calls ``super().__post_init__()`` first, and reports with
    :func:`raise_problems`.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}
    _field_checks: ClassVar[_FieldChecks | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._field_checks = None
        dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        for name, rules, checks in self._checks():
            value = getattr(self, name)
            for rule in rules:
                problems.extend(((name,), text) for text in rule.problems(value))
            for check in checks:
                try:
                    check.fn(value, {})
                except ValueError as err:
                    problems.append(((name,), str(err)))
        raise_problems(type(self).__name__, problems)

    def document_part(self, key: str) -> object:
        """What the record holds under the document's ``key`` (its field of that name; a record
        read from a document some other way says otherwise)."""
        return getattr(self, key, None)

    @property
    def given(self) -> frozenset[str]:
        """The fields set explicitly: the keys of the document the record was read from, or,
        for a record built in code, the fields whose value differs from the default."""
        marked: frozenset[str] | None = self.__dict__.get(_GIVEN)
        if marked is not None:
            return marked
        out = set()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                out.add(f.name)
                continue
            if getattr(self, f.name) != default:
                out.add(f.name)
        return frozenset(out)

    @classmethod
    def _checks(cls) -> _FieldChecks:
        """Each field's rules and after-checks, read once per class from its annotations."""
        found = cls.__dict__.get("_field_checks")
        if found is not None:
            return found  # type: ignore[no-any-return]
        hints = typing.get_type_hints(cls, include_extras=True)
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata = getattr(hints.get(f.name), "__metadata__", ())
            rules = tuple(m for m in metadata if isinstance(m, Rule))
            checks = tuple(m for m in metadata if isinstance(m, Check) and not m.before)
            if rules or checks:
                out.append((f.name, rules, checks))
        cls._field_checks = tuple(out)
        return cls._field_checks


class ValueRecord(Record):
    """A record written in a document as one value, not a table: ``history_beliefs = "full"``.

    A subclass has one field, ``value`` (its type, rules and default); a document's key holds the
    value itself, validated by that field's rules (so a problem reads ``history_beliefs: must
    be 'map' or 'full', got 'x'``), and becomes the record. What a table can be, such a key is
    too: a group's key that belongs to its kind (:mod:`edge_agent.config.group_tables`).
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema  # noqa: PLC0415 - only where documents are validated

        field = typing.get_type_hints(cls, include_extras=True)["value"]
        return core_schema.no_info_after_validator_function(
            lambda value: cls(value=value),  # type: ignore[call-arg]  # a subclass has it
            handler.generate_schema(field),
        )


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# ------------------------------------------------------------------------------ paths in documents
def expand_path(
    text: str, base_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Expand ``${VAR}``, ``${VAR:-default}`` and a leading ``~``, then anchor at ``base_dir``.

    ``${VAR:-default}`` takes the default when VAR is unset or empty, as in the shell; a bare
    ``${VAR}`` that is unset raises ValueError. Relative results are joined to ``base_dir`` when
    one is given.
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        value = env.get(name, "")
        if value:
            return value
        if default is None:
            raise ValueError(f"environment variable {name} is not set (write ${{{name}:-default}})")
        return default

    path = Path(_ENV_REF.sub(substitute, text)).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return path


def path_from_document(value: object, context: Mapping[str, Any], *, optional: bool) -> str | None:
    """A path field's value from a document: expanded, anchored at the file's directory (as
    text, which the field's type then takes as a Path)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise WrongTypeError("a string")
    if not value:
        if optional:
            return None
        raise ValueError("must not be empty")
    base = context.get("base_dir")
    return str(expand_path(value, Path(base) if base is not None else None))


def _path(value: object, context: Mapping[str, Any]) -> str | None:
    return path_from_document(value, context, optional=False)


def _optional_path(value: object, context: Mapping[str, Any]) -> str | None:
    return path_from_document(value, context, optional=True)


#: A path in the file: ``~`` and ``${VAR}`` expanded, relative to the file's directory.
PATH = Check(_path, before=True)
#: The same, where an empty string means "not set".
OPTIONAL_PATH = Check(_optional_path, before=True)


# ----------------------------------------------------------------------- the daemon's own files
R = TypeVar("R", bound=Record)


def from_json(cls: type[R], data: object) -> R:
    """A record from JSON values that the daemon wrote itself (its state files), checked as
    strictly as a document but without pydantic: every key known, every required key present,
    every value of its field's type (an integer is not a boolean, a string is not a number), the
    record's rules. Raises :class:`RecordError` at the first problem, with its location.

    Annotations understood: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Path``,
    ``Literal``, enums, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]``, ``Annotated`` and
    records.
    """
    return _from_json(cls, data, ())  # type: ignore[no-any-return]


def _from_json(tp: Any, value: object, loc: Loc) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _from_json(args[0], value, loc)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"from_json: unions of several types are not supported: {tp}")
        return _from_json(members[0], value, loc)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise RecordError([(loc, f"must be one of {list(args)}, got {value!r}")])
    if origin is tuple:
        if not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"from_json: only tuple[X, ...] is supported: {tp}")
        _expect(isinstance(value, list), "an array", value, loc)
        assert isinstance(value, list)
        return tuple(_from_json(args[0], v, (*loc, i)) for i, v in enumerate(value))
    if origin is dict:
        _expect(isinstance(value, dict), "a table", value, loc)
        assert isinstance(value, dict)
        for key in value:
            _expect(isinstance(key, str), "string keys", key, loc)
        return {k: _from_json(args[1], v, (*loc, k)) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return _record_from_json(tp, value, loc)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            known = [m.value for m in tp]
            raise RecordError([(loc, f"must be one of {known}, got {value!r}")]) from None
    return _scalar_from_json(tp, value, loc)


def _scalar_from_json(tp: Any, value: object, loc: Loc) -> Any:
    if tp is bool:
        _expect(isinstance(value, bool), "true or false", value, loc)
        return value
    if tp is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), "an integer", value, loc)
        return value
    if tp is float:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        _expect(is_number, "a number", value, loc)
        return float(value)  # type: ignore[arg-type]
    if tp is str or tp is Path:
        if not isinstance(value, str):
            _expect(False, "a string", value, loc)
        return Path(str(value)) if tp is Path else value
    if tp is type(None) or tp is None:
        _expect(value is None, "null", value, loc)
        return None
    if tp is Any:
        return value
    raise TypeError(f"from_json: unsupported annotation {tp!r}")


def _expect(ok: bool, what: str, value: object, loc: Loc) -> None:
    if not ok:
        raise RecordError([(loc, f"expected {what}, got {type(value).__name__} {value!r:.60}")])


def _record_from_json(cls: type[Record], value: object, loc: Loc) -> Record:
    _expect(isinstance(value, dict), "a table", value, loc)
    assert isinstance(value, dict)
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in value:
        if key not in fields:
            raise RecordError([((*loc, str(key)), "unknown key")])
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _from_json(hints[name], value[name], (*loc, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError([((*loc, name), "required key is missing")])
    try:
        return cls(**kwargs)
    except RecordError as err:
        raise RecordError([((*loc, *inner), text) for inner, text in err.problems]) from None
