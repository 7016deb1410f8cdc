"""Dataclasses whose ``__eq__``, ``__hash__``, ``__repr__`` and frozen ``__setattr__`` and
``__delattr__`` are one function each, shared by every class, not generated per class.

``dataclasses`` writes those methods' source for each class and compiles it: about 7 kB of code
objects per frozen class, held for the life of the process. The daemon imports some 80
dataclasses (its config records, the compiled model's tables, the planners' plans, snapshots,
metrics): sharing them took 0.46 MB off its RSS, memory a Raspberry Pi's agents share
(``benchmarks/notes/restructure.md``). :func:`dataclass` takes the options of
:func:`dataclasses.dataclass` the package uses and gives the same classes: the generated
``__init__`` (and, with ``slots``, the slotted class), the same fields, and methods that behave
as the generated ones do:

- ``__eq__`` compares the compared fields in order, between instances of one class, and
  returns ``NotImplemented`` otherwise;
- ``__hash__`` hashes the hashed fields of a frozen class with ``eq``; a class with ``eq`` that
  is not frozen is unhashable; a class without ``eq`` keeps identity hashing; a ``__hash__``
  the class defines itself is kept, as ``dataclasses`` keeps it;
- ``__repr__`` shows the fields with ``repr=True`` as ``Name(field=value, ...)``;
- a frozen class refuses assignment and deletion with
  :class:`dataclasses.FrozenInstanceError`.

A method the class body defines itself is never replaced. ``tests/unit/test_lean_dataclass.py``
compares these classes with what ``dataclasses`` generates.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["dataclass"]

_T = TypeVar("_T", bound=type)

#: The class attribute that holds, per class, the names the shared methods read.
_NAMES = "__lean_fields__"


def _names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The fields a generated method would read (compared, hashed, shown), once per class, as
    ``dataclasses`` chooses them."""
    found = cls.__dict__.get(_NAMES)
    if found is None:
        fields = dataclasses.fields(cls)
        found = (
            tuple(f.name for f in fields if f.compare),
            tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)),
            tuple(f.name for f in fields if f.repr),
        )
        setattr(cls, _NAMES, found)
    return found


def _eq(self: object, other: object) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = _names(self.__class__)[0]
    mine: tuple[object, ...] = tuple(getattr(self, n) for n in names)
    return mine == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in _names(self.__class__)[1]))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _names(self.__class__)[2])
    return f"{self.__class__.__qualname__}({shown})"


def _closed(cls: Any, name: str) -> bool:
    """Whether a frozen dataclass refuses ``name``: every name on the dataclass itself, its
    fields on a plain subclass (as the generated methods do)."""
    return "__dataclass_fields__" in cls.__dict__ or name in cls.__dataclass_fields__


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    if _closed(self.__class__, name):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self: Any, name: str) -> None:
    if _closed(self.__class__, name):
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


@overload
def dataclass(cls: _T, /) -> _T: ...
@overload
def dataclass(
    *,
    init: bool = True,
    repr: bool = True,
    eq: bool = True,
    frozen: bool = False,
    kw_only: bool = False,
    slots: bool = False,
) -> Callable[[_T], _T]: ...


@dataclass_transform(field_specifiers=(dataclasses.field,))
def dataclass(
    cls: _T | None = None,
    /,
    *,
    init: bool = True,
    repr: bool = True,
    eq: bool = True,
    frozen: bool = False,
    kw_only: bool = False,
    slots: bool = False,
) -> _T | Callable[[_T], _T]:
    """:func:`dataclasses.dataclass` with the methods shared (see the module's docstring)."""

    def wrap(cls: _T) -> _T:
        # What ``dataclasses`` counts as the class's own ``__hash__``: not the None Python sets
        # on a class that defines ``__eq__`` without it.
        own_hash = cls.__dict__.get("__hash__", dataclasses.MISSING)
        explicit_hash = not (
            own_hash is dataclasses.MISSING or (own_hash is None and "__eq__" in cls.__dict__)
        )
        made: Any = dataclasses.dataclass(
            cls, init=init, repr=False, eq=False, frozen=frozen, kw_only=kw_only, slots=slots
        )
        own = made.__dict__
        if frozen:
            made.__setattr__ = _frozen_setattr
            made.__delattr__ = _frozen_delattr
        if repr and "__repr__" not in own:
            made.__repr__ = _repr
        if eq:
            if "__eq__" not in own:
                made.__eq__ = _eq
            if not explicit_hash:
                made.__hash__ = _hash if frozen else None
        result: _T = made
        return result

    return wrap if cls is None else wrap(cls)
