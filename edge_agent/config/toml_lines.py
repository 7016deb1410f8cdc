"""TOML with line numbers: the config files' reader.

:mod:`tomllib` parses TOML but forgets where each value came from. :class:`TomlPositions` scans the
same text once more and records the line of every key, table header, array-of-tables entry and
array element under its *location*: the tuple of keys and indices that pydantic reports in a
validation error, e.g. ``("groups", 1, "count")`` for ``count`` in the second ``[[groups]]`` table.

:func:`validate_toml` ties the two together: it validates a parsed :class:`TomlDocument` as a
:class:`~edge_agent.records.Record` (or a pydantic model) and turns every problem into one
``path:line: field: problem`` line of a :class:`~edge_agent.errors.ConfigError`. TOML syntax
errors get the same shape. A problem without a line of its own (a missing key) points at the
header of the table that lacks it; a problem about the whole document points at line 1.

Cross-field checks inside a record report precise locations with :func:`raise_problems`.

pydantic, the validator, is imported by :func:`validate_toml` only: a daemon that got its config
from a validating process (:mod:`edge_agent.config.isolated`) reads documents' lines with this
module and never loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from edge_agent.errors import ConfigError
from edge_agent.records import (
    BARE_KEY_CHARS,
    Loc,
    Problem,
    RecordError,
    WrongTypeError,
    format_loc,
    mark_given,
    raise_problems,
)

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

__all__ = [
    "Loc",
    "Problem",
    "TomlDocument",
    "TomlPositions",
    "format_loc",
    "normalize_loc",
    "raise_problems",
    "validate_toml",
]

M = TypeVar("M")

_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = frozenset(",]}#\r\n")


# ------------------------------------------------------------------------------------ positions
class _ScanError(Exception):
    """The scanner met text it does not understand (only possible for text tomllib rejects)."""


class _Scanner:
    """Walks a TOML document that tomllib accepted and notes the line of every location."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.explicit: dict[Loc, int] = {}
        self.implicit: dict[Loc, int] = {}
        self.array_tables: dict[Loc, int] = {}  # array-of-tables location -> last index

    # -- characters
    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def advance(self, n: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def expect(self, token: str) -> None:
        if self.peek(len(token)) != token:
            raise _ScanError(f"expected {token!r} at line {self.line}")
        self.advance(len(token))

    def skip_blank(self) -> None:
        while self.peek() in (" ", "\t") and self.pos < len(self.text):
            self.pos += 1

    def skip_comment(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] not in "\r\n":
            self.pos += 1

    def skip_space(self) -> None:
        """Blanks, newlines and comments, as allowed between array elements."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r\n":
                self.advance()
            elif char == "#":
                self.skip_comment()
            else:
                return

    # -- bookkeeping
    def mark(self, loc: Loc, line: int, *, explicit: bool) -> None:
        (self.explicit if explicit else self.implicit).setdefault(loc, line)

    def resolve(self, keys: Sequence[str]) -> Loc:
        """Concrete location of a header path: an array of tables means its last entry."""
        out: list[str | int] = []
        for key in keys:
            out.append(key)
            last = self.array_tables.get(tuple(out))
            if last is not None:
                out.append(last)
        return tuple(out)

    # -- document
    def run(self) -> None:
        table: Loc = ()
        while self.pos < len(self.text):
            self.skip_blank()
            char = self.peek()
            if char in ("\r", "\n"):
                self.advance()
            elif char == "#":
                self.skip_comment()
            elif char == "":
                return
            elif self.peek(2) == "[[":
                table = self.array_table_header()
            elif char == "[":
                table = self.table_header()
            else:
                self.key_value(table)

    def table_header(self) -> Loc:
        line = self.line
        self.expect("[")
        self.skip_blank()
        keys = self.key()
        self.skip_blank()
        self.expect("]")
        for n in range(1, len(keys)):
            self.mark(self.resolve(keys[:n]), line, explicit=False)
        loc = self.resolve(keys)
        self.mark(loc, line, explicit=True)
        return loc

    def array_table_header(self) -> Loc:
        line = self.line
        self.expect("[[")
        self.skip_blank()
        keys = self.key()
        self.skip_blank()
        self.expect("]]")
        for n in range(1, len(keys)):
            self.mark(self.resolve(keys[:n]), line, explicit=False)
        array = (*self.resolve(keys[:-1]), keys[-1])
        index = self.array_tables.get(array, -1) + 1
        self.array_tables[array] = index
        self.mark(array, line, explicit=True)
        self.mark((*array, index), line, explicit=True)
        return (*array, index)

    def key_value(self, table: Loc) -> None:
        line = self.line
        keys = self.key()
        for n in range(1, len(keys)):
            self.mark((*table, *keys[:n]), line, explicit=False)
        loc = (*table, *keys)
        self.mark(loc, line, explicit=True)
        self.skip_blank()
        self.expect("=")
        self.skip_blank()
        self.value(loc)

    # -- keys
    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_blank()
            char = self.peek()
            if char == '"':
                parts.append(self.basic_string())
            elif char == "'":
                parts.append(self.literal_string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] in BARE_KEY_CHARS:
                    self.pos += 1
                if self.pos == start:
                    raise _ScanError(f"expected a key at line {self.line}")
                parts.append(self.text[start : self.pos])
            self.skip_blank()
            if self.peek() != ".":
                return parts
            self.advance()

    def basic_string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while True:
            char = self.peek()
            if char in ("", "\n"):
                raise _ScanError(f"unterminated string at line {self.line}")
            if char == '"':
                self.advance()
                return "".join(out)
            if char == "\\":
                code = self.peek(2)[1:]
                if code in _ESCAPES:
                    out.append(_ESCAPES[code])
                    self.advance(2)
                elif code in ("u", "U"):
                    width = 4 if code == "u" else 8
                    digits = self.text[self.pos + 2 : self.pos + 2 + width]
                    out.append(chr(int(digits, 16)))
                    self.advance(2 + width)
                else:
                    raise _ScanError(f"bad escape at line {self.line}")
            else:
                out.append(char)
                self.advance()

    def literal_string(self) -> str:
        self.expect("'")
        end = self.text.find("'", self.pos)
        if end < 0:
            raise _ScanError(f"unterminated string at line {self.line}")
        value = self.text[self.pos : end]
        self.advance(end + 1 - self.pos)
        return value

    # -- values
    def value(self, loc: Loc) -> None:
        char = self.peek()
        if char == "{":
            self.inline_table(loc)
        elif char == "[":
            self.array(loc)
        elif self.peek(3) in ('"""', "'''"):
            self.multiline_string(self.peek(3))
        elif char == '"':
            self.basic_string()
        elif char == "'":
            self.literal_string()
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if self.pos == start:
                raise _ScanError(f"expected a value at line {self.line}")

    def multiline_string(self, quotes: str) -> None:
        self.advance(3)
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quotes[0]:
                run = 0
                while self.peek(run + 1)[-1:] == char and self.pos + run < len(self.text):
                    run += 1
                self.advance(run)
                if run >= 3:
                    return
            elif char == "\\" and quotes == '"""':
                self.advance(2)
            else:
                self.advance()
        raise _ScanError("unterminated multi-line string")

    def inline_table(self, loc: Loc) -> None:
        self.expect("{")
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.advance()
                return
            self.key_value(loc)
            self.skip_space()
            if self.peek() == ",":
                self.advance()
            elif self.peek() == "}":
                self.advance()
                return
            else:
                raise _ScanError(f"expected ',' or '}}' at line {self.line}")

    def array(self, loc: Loc) -> None:
        self.expect("[")
        index = 0
        while True:
            self.skip_space()
            if self.peek() == "]":
                self.advance()
                return
            self.mark((*loc, index), self.line, explicit=True)
            self.value((*loc, index))
            self.skip_space()
            if self.peek() == ",":
                self.advance()
                index += 1
            elif self.peek() == "]":
                self.advance()
                return
            else:
                raise _ScanError(f"expected ',' or ']' at line {self.line}")


class TomlPositions:
    """The line (1-based) of every location in a TOML document.

    A key's location is its full dotted path from the root, with the index of each
    array-of-tables entry and array element: in ::

        [[groups]]
        name = "a"
        [[groups]]
        name = "b"
        model = { type = "bundle", path = "b.tar" }

    ``("groups", 1, "model", "path")`` is on line 5 and ``("groups", 1)`` on line 3. Tables that
    exist only as a prefix (``a`` in ``[a.b]`` or ``a.b = 1``) get the line where they first appear
    unless they are also defined explicitly. Text that tomllib rejects is scanned as far as it can
    be; locations past the first unreadable spot are unknown.
    """

    def __init__(self, text: str) -> None:
        scanner = _Scanner(text)
        # Only invalid TOML stops the scan early: keep what was found before the bad spot.
        with contextlib.suppress(_ScanError, ValueError, IndexError):
            scanner.run()
        self._lines: dict[Loc, int] = {**scanner.implicit, **scanner.explicit}
        self._last_line = text.count("\n") + (0 if text.endswith("\n") else 1)

    def exact(self, loc: Sequence[str | int]) -> int | None:
        """The line of exactly this location, or None if the document does not contain it."""
        return self._lines.get(tuple(loc))

    def line_of(self, loc: Sequence[str | int]) -> int:
        """The line of ``loc`` or, if absent, of its nearest enclosing table; 1 for the root."""
        key = tuple(loc)
        for n in range(len(key), 0, -1):
            line = self._lines.get(key[:n])
            if line is not None:
                return line
        return 1

    @property
    def last_line(self) -> int:
        """The number of the document's last line (at least 1)."""
        return max(self._last_line, 1)

    def locations(self) -> dict[Loc, int]:
        """A copy of every location found and its line."""
        return dict(self._lines)


# ------------------------------------------------------------------------------------ locations
def normalize_loc(data: object, loc: Sequence[str | int]) -> Loc:
    """Turn a pydantic error location into a location in the document ``data``.

    pydantic inserts the tag of a discriminated union (``("model", "bundle", "path")``) and the
    names of validator functions; they are not keys of the document and are dropped. A key that
    the document lacks is kept (it is what a "missing" error is about).
    """
    out: list[str | int] = []
    node: object = data
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            in_range = isinstance(node, list | tuple) and 0 <= part < len(node)
            node = node[part] if in_range else None  # type: ignore[index]
            continue
        if isinstance(node, Mapping):
            if part in node:
                out.append(part)
                node = node[part]
                continue
            if node.get("type") == part:
                continue  # the tag of a union keyed on `type`
        if not re.fullmatch(r"[A-Za-z0-9_-]+", part):
            continue  # a validator's name, e.g. "function-after[...]"
        out.append(part)
        node = None
    return tuple(out)


# ------------------------------------------------------------------------------------ documents
_SYNTAX_AT = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_SYNTAX_END = re.compile(r"^(?P<msg>.*?)\s*\(at end of document\)$")


@dataclass(frozen=True)
class TomlDocument:
    """A TOML text that parsed, with where it came from and the line of every key."""

    path: str
    text: str
    data: dict[str, Any]
    positions: TomlPositions

    @classmethod
    def parse(cls, text: str, path: str = "<string>") -> TomlDocument:
        """Parse ``text``; a syntax error raises ConfigError ``path:line: syntax: problem``."""
        import tomllib  # noqa: PLC0415 - only where documents are parsed

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise _syntax_error(str(err), text, path) from err
        return cls(path=path, text=text, data=data, positions=TomlPositions(text))

    @classmethod
    def read(cls, path: str | Path) -> TomlDocument:
        """Read and parse a UTF-8 file; unreadable files raise ConfigError too."""
        name = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            problem = f"{name}:1: <file>: cannot read: {err.strerror or err}"
            raise ConfigError(problem, path=name, problems=[problem]) from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            problem = f"{name}:{line}: syntax: not UTF-8 text (byte {err.start})"
            raise ConfigError(problem, path=name, problems=[problem]) from err
        return cls.parse(text, name)

    def line_of(self, loc: Sequence[str | int]) -> int:
        """The line of a (normalized) location, or of its nearest enclosing table."""
        return self.positions.line_of(loc)

    def problem(self, loc: Sequence[str | int], message: str) -> str:
        """One report line: ``path:line: field: problem``."""
        return f"{self.path}:{self.line_of(loc)}: {format_loc(loc)}: {message}"

    def error(self, problems: Sequence[Problem]) -> ConfigError:
        """A ConfigError with one line per problem, sorted by line."""
        ordered = sorted(problems, key=lambda p: self.line_of(p[0]))
        lines = [self.problem(loc, message) for loc, message in ordered]
        return ConfigError("\n".join(lines), path=self.path, problems=lines)


def _syntax_error(message: str, text: str, path: str) -> ConfigError:
    match = _SYNTAX_AT.match(message)
    if match is not None:
        line = int(match["line"])
        detail = f"{match['msg']} (column {match['col']})"
    else:
        end = _SYNTAX_END.match(message)
        line = max(text.count("\n") + (0 if text.endswith("\n") else 1), 1)
        detail = f"{end['msg']} (at end of document)" if end is not None else message
    problem = f"{path}:{line}: syntax: {detail}"
    return ConfigError(problem, path=path, problems=[problem])


# ------------------------------------------------------------------------------------ validation
def validate_toml(
    model: type[M],
    document: TomlDocument,
    *,
    context: Mapping[str, Any] | None = None,
    at: Loc = (),
) -> M:
    """Validate ``document`` as ``model`` (a :class:`~edge_agent.records.Record` or a pydantic
    model) in strict mode; every problem gets its file line.

    ``context`` is passed to the fields' checks (e.g. the directory that relative paths are
    resolved against). ``at``: validate only the part of the document at that location (a table
    the document's model left to another record), its problems at their places in the document.
    Raises ConfigError with one ``path:line: field: problem`` line per problem.
    """
    from pydantic import ValidationError  # noqa: PLC0415 - only where documents are validated

    data = _part(document.data, at)
    dates = list(_dates(data, at))
    if dates:
        raise document.error(dates)
    try:
        # Strict mode takes a record's fields from a JSON object (from a dict it wants an
        # instance); TOML's values other than dates, refused above, are JSON's.
        result: M = _adapter(model).validate_json(
            json.dumps(data), strict=True, context=dict(context or {})
        )
    except ValidationError as err:
        errors = _without_echoes(err.errors())
        problems = [
            ((*at, *loc), message)
            for e in errors
            for loc, message in _describe_error(model, data, e)
        ]
        raise document.error(problems) from err
    mark_given(result, data)
    return result


def _part(data: object, at: Loc) -> Any:
    """The value at location ``at`` of a document's ``data`` (KeyError, IndexError: none)."""
    for part in at:
        data = data[part]  # type: ignore[index]
    return data


_ADAPTERS: dict[type, Any] = {}


def _adapter(model: type) -> Any:
    """pydantic's validator of ``model``, built once (building it is most of the cost)."""
    from pydantic import TypeAdapter  # noqa: PLC0415 - only where documents are validated

    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _dates(value: object, loc: Loc) -> typing.Iterator[Problem]:
    """TOML dates and times: no config key takes one."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _dates(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _dates(item, (*loc, index))
    elif isinstance(value, datetime.date | datetime.time):
        yield loc, f"a date or time is not allowed here, got {value.isoformat()}"


def _without_echoes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop "too short" errors of arrays that are short only because their items failed."""
    failed_inside = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    return [
        e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in failed_inside)
    ]


_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (dict, "table"),
    (list, "array"),
    (tuple, "array"),
)

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dataclass_type": "a table",
    "dataclass_args_type": "a table",
    "dict_type": "a table",
    "tuple_type": "an array",
    "list_type": "an array",
}

_BOUNDS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
}


def _toml_type(value: object) -> str:
    for kind, name in _TOML_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str | int | float) else _toml_type(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_error(root: type, data: object, error: ErrorDetails) -> list[Problem]:
    kind = error["type"]
    raw_loc = tuple(error["loc"])
    loc = normalize_loc(data, raw_loc)
    ctx = error.get("ctx") or {}
    value = error.get("input")
    cause = ctx.get("error")
    if isinstance(cause, RecordError):
        return [(normalize_loc(data, (*raw_loc, *inner)), text) for inner, text in cause.problems]
    if isinstance(cause, WrongTypeError):
        return [(loc, f"expected {cause.expected}, got {_toml_type(value)} {_show(value)}")]
    if kind in ("missing", "missing_argument"):
        return [(loc, "required key is missing")]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return [(loc, _unknown_key(root, raw_loc, loc))]
    if kind == "union_tag_invalid":
        expected = ctx.get("expected_tags")
        return [((*loc, "type"), f"unknown type {ctx.get('tag')!r}; expected one of {expected}")]
    if kind == "union_tag_not_found":
        tags = ", ".join(repr(t) for t in _union_tags(root, raw_loc))
        return [(loc, f"required key 'type' is missing (one of {tags})")]
    if kind in _EXPECTED:
        return [(loc, f"expected {_EXPECTED[kind]}, got {_toml_type(value)} {_show(value)}")]
    if kind in ("too_short", "too_long"):
        return [(loc, f"{_BOUNDS[kind].format(**ctx)}, got {ctx.get('actual_length')}")]
    if kind in _BOUNDS:
        return [(loc, f"{_BOUNDS[kind].format(**ctx)}, got {_show(value)}")]
    if kind == "literal_error":
        return [(loc, f"must be {ctx.get('expected')}, got {_show(value)}")]
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return [(loc, message)]


# ------------------------------------------------------------------------- walking model types
def _unwrap(annotation: object) -> object:
    """Strip ``Annotated`` and ``X | None`` down to what holds the keys."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: object) -> typing.TypeGuard[type]:
    """A record (dataclass) or a pydantic model: something with named fields."""
    return isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or hasattr(annotation, "model_fields")
    )


@functools.cache
def _fields(model: type) -> dict[str, object]:
    """The annotation of each field of a record or pydantic model, by name (of the record a
    document is read as, when the model says: ``__document__``)."""
    document = getattr(model, "__document__", None)
    if document is not None:
        model = document()
    if dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model, include_extras=True)
        return {f.name: hints[f.name] for f in dataclasses.fields(model) if f.init}
    return {name: f.annotation for name, f in model.model_fields.items()}  # type: ignore[attr-defined]


def _union_members(annotation: object) -> list[type]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for m in (_unwrap(a) for a in typing.get_args(annotation)) if _is_model(m)]
    return []


def _tag_of(member: type) -> object:
    annotation = _unwrap(_fields(member).get("type"))
    if typing.get_origin(annotation) is not Literal:
        return None
    return typing.get_args(annotation)[0]


def _type_at(root: type, loc: Sequence[str | int]) -> object:
    """The annotation at a raw pydantic location (tags included), or None if it cannot be told."""
    current: object = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            if typing.get_origin(current) in (tuple, list) and args:
                current = args[0]
                continue
            return None
        if _is_model(current):
            if part not in _fields(current):
                return None
            current = _fields(current)[part]
            continue
        chosen = [m for m in _union_members(current) if _tag_of(m) == part]
        if not chosen:
            return None
        current = chosen[0]
    return _unwrap(current)


def _union_tags(root: type, loc: Sequence[str | int]) -> list[object]:
    return [_tag_of(m) for m in _union_members(_type_at(root, loc))]


def _unknown_key(root: type, raw_loc: Sequence[str | int], loc: Loc) -> str:
    """What to say of the key at ``loc`` (pydantic's ``raw_loc``), unknown in its table: the
    table's key it differs from only in case; else where the key belongs when another table of
    the document (or a document the root names in ``__elsewhere__``) has it; else the table's
    closest key; else its keys."""
    key = str(raw_loc[-1]) if raw_loc else ""
    parent = _type_at(root, raw_loc[:-1])
    if not _is_model(parent):
        return "unknown key"
    allowed = list(_fields(parent))
    same = [name for name in allowed if name.lower() == key.lower()]
    if same:
        return f"unknown key; did you mean {same[0]!r}? (keys are case-sensitive)"
    table = loc[:-1]
    here = _table_name(
        [p for p in table if isinstance(p, str)], in_list=bool(table) and isinstance(table[-1], int)
    )
    places = [p for p in _places_of(root, key) if p != here]
    if places:
        return f"unknown key; {key} belongs in {' or '.join(places)}, not {here}"
    import difflib  # noqa: PLC0415 - only for a document with an unknown key

    folded = {name.lower(): name for name in allowed}
    close = difflib.get_close_matches(key.lower(), list(folded), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {folded[close[0]]!r}?"
    return f"unknown key (allowed: {', '.join(allowed)})"


def _table_name(path: Sequence[str], *, in_list: bool) -> str:
    """``[daemon]``, ``[[groups]]``, ``[groups.learning]``; the document's top level."""
    if not path:
        return "the top level"
    name = ".".join(path)
    return f"[[{name}]]" if in_list else f"[{name}]"


def _places_of(root: type, key: str) -> list[str]:
    """The tables of ``root``'s documents that have a key ``key`` (any case), as
    :func:`_table_name` names them; then the places ``root.__elsewhere__()`` names, each a
    ``(record, where)`` pair: another document whose keys are put here by mistake (the daemon's
    config names the firmware profile)."""
    found: list[str] = []
    seen: set[type] = set()
    todo: list[tuple[type, tuple[str, ...], bool]] = [(root, (), False)]
    while todo:
        model, path, in_list = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        fields = _fields(model)
        if any(name.lower() == key.lower() for name in fields):
            found.append(_table_name(path, in_list=in_list))
        for name, annotation in fields.items():
            inner, listed = _unwrap(annotation), False
            if typing.get_origin(inner) in (tuple, list) and typing.get_args(inner):
                inner, listed = _unwrap(typing.get_args(inner)[0]), True
            members = [inner] if _is_model(inner) else _union_members(inner)
            todo.extend((m, (*path, name), listed) for m in members)
    elsewhere = getattr(root, "__elsewhere__", None)
    if elsewhere is not None:
        found.extend(where for record, where in elsewhere() if key in _fields(record))
    return list(dict.fromkeys(found))
