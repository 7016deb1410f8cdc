"""Dataclasses with shared methods (edge_agent.lean_dataclass): they behave as the classes
``dataclasses`` generates, and no dataclass of the device package carries generated methods
other than its ``__init__``."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

import edge_agent
from edge_agent.lean_dataclass import dataclass

OPTIONS = [
    {},
    {"frozen": True},
    {"frozen": True, "slots": True},
    {"frozen": True, "kw_only": True},
    {"eq": False},
    {"frozen": True, "eq": False},
    {"slots": True},
    {"repr": False},
]


def _pair(options: dict[str, bool], body: dict[str, Any] | None = None) -> tuple[type, type]:
    """The same class made twice: by ``dataclasses`` and by the shared decorator."""

    def make(decorate: Any) -> type:
        namespace: dict[str, Any] = {
            "__annotations__": {"x": "int", "y": "tuple[int, ...]", "note": "str", "key": "str"},
            "__module__": __name__,
            "y": (),
            "note": dataclasses.field(default="", compare=False),
            "key": dataclasses.field(default="", repr=False),
            **(body or {}),
        }
        # one name for both (their reprs compared), under which pickle finds the shared one
        cls = type(f"_Pickled{len(_MADE)}", (), namespace)
        return decorate(**options)(cls)  # type: ignore[no-any-return]

    generated = make(dataclasses.dataclass)
    shared = make(dataclass)
    globals()[shared.__qualname__] = shared
    _MADE.append(shared)
    return generated, shared


_MADE: list[type] = []

VALUES = [
    ({"x": 1, "y": (2,)}, {"x": 1, "y": (2,)}),
    ({"x": 1, "note": "a"}, {"x": 1, "note": "b"}),  # not compared
    ({"x": 1, "key": "a"}, {"x": 1, "key": "b"}),  # compared, not shown
    ({"x": 1}, {"x": 2}),
    ({"x": 1, "y": (2, 3)}, {"x": 1, "y": (3, 2)}),
]


def _outcome(fn: Any) -> object:
    """What calling ``fn`` gives, or the class of what it raised."""
    try:
        return fn()
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize(("a", "b"), VALUES)
def test_the_shared_methods_do_what_the_generated_ones_do(
    options: dict[str, bool], a: dict[str, Any], b: dict[str, Any]
) -> None:
    generated, shared = _pair(options)
    theirs, mine = (generated(**a), generated(**b)), (shared(**a), shared(**b))
    assert (mine[0] == mine[1]) == (theirs[0] == theirs[1])
    assert (mine[0] != mine[1]) == (theirs[0] != theirs[1])
    assert mine[0] == mine[0]
    assert (mine[0] == "other") == (theirs[0] == "other")
    assert (generated.__hash__ is None) == (shared.__hash__ is None)
    if shared.__hash__ is not None and options.get("eq", True):
        assert (hash(mine[0]) == hash(mine[1])) == (hash(theirs[0]) == hash(theirs[1]))
    elif shared.__hash__ is not None:  # eq=False: identity, as generated
        assert hash(mine[0]) == object.__hash__(mine[0])
    if options.get("repr", True):
        assert repr(mine[0]) == repr(theirs[0])
    else:
        assert "__repr__" not in vars(shared)
        assert "__repr__" not in vars(generated)
    assert _outcome(lambda: setattr(mine[0], "x", 5)) == _outcome(
        lambda: setattr(theirs[0], "x", 5)
    )
    assert _outcome(lambda: delattr(mine[1], "x")) == _outcome(lambda: delattr(theirs[1], "x"))
    assert mine[0].x == theirs[0].x
    described = [(f.name, f.compare, f.repr, f.hash, f.kw_only) for f in dataclasses.fields(shared)]
    assert described == [
        (f.name, f.compare, f.repr, f.hash, f.kw_only) for f in dataclasses.fields(generated)
    ]
    assert ("__slots__" in shared.__dict__) == ("__slots__" in generated.__dict__)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_copies_pickles_and_replace_keep_the_value(options: dict[str, bool]) -> None:
    _generated, shared = _pair(options)
    point = shared(x=1, y=(2, 3), note="n", key="k")
    again = dataclasses.replace(point, x=1)
    for other in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point)), again):
        assert dataclasses.astuple(other) == dataclasses.astuple(point)
        if options.get("eq", True):
            assert other == point


def test_a_frozen_class_refuses_assignment_and_deletion_with_the_field_named() -> None:
    _generated, shared = _pair({"frozen": True})
    point = shared(x=1)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        point.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'y'"):
        del point.y
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'other'"):
        point.other = 3  # the class itself: no new attributes either, as generated


def test_a_plain_subclass_of_a_frozen_class_may_add_attributes_but_not_set_fields() -> None:
    """As with the generated ``__setattr__``: only the dataclass itself is closed."""
    generated, shared = _pair({"frozen": True})
    for base in (generated, shared):
        child = type("Child", (base,), {})(x=1)
        child.extra = 2
        assert child.extra == 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            child.x = 3


def test_methods_a_class_defines_are_kept() -> None:
    def own_repr(self: object) -> str:
        return "mine"

    def own_eq(self: object, other: object) -> bool:
        return True

    def own_hash(self: object) -> int:
        return 7

    for body in (
        {"__repr__": own_repr},
        {"__eq__": own_eq},
        {"__eq__": own_eq, "__hash__": own_hash},
    ):
        for options in ({}, {"frozen": True}):
            generated, shared = _pair(options, body)
            mine, theirs = shared(x=1), generated(x=1)
            assert repr(mine) == repr(theirs)
            assert (mine == shared(x=2)) == (theirs == generated(x=2))
            assert (shared.__hash__ is None) == (generated.__hash__ is None)
            if shared.__hash__ is not None:
                assert (hash(mine) == 7) == (hash(theirs) == 7)


def test_a_frozen_dataclass_subclass_gets_the_shared_methods_too() -> None:
    @dataclass(frozen=True)
    class Base:
        x: int

    @dataclass(frozen=True)
    class Child(Base):
        y: int = 0

    assert repr(Child(x=1, y=2)).endswith(".<locals>.Child(x=1, y=2)")
    assert Child(x=1) == Child(x=1)
    assert Child(x=1) != Base(x=1)
    assert hash(Child(x=1)) == hash(Child(x=1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Child(x=1).y = 3  # type: ignore[misc]


def _package_dataclasses() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(edge_agent.__path__, "edge_agent."):
        if info.name.endswith("__main__"):  # runs the command line
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and value.__module__ == info.name
                and dataclasses.is_dataclass(value)
            ):
                found.append(value)
    return found


def test_no_dataclass_of_the_device_package_carries_generated_methods_but_its_init() -> None:
    """``dataclasses`` compiles the methods it writes from a string (``co_filename`` is
    ``<string>``): about 7 kB a frozen class that the daemon holds for its lifetime. Every
    dataclass of ``edge_agent`` is made with :func:`edge_agent.lean_dataclass.dataclass` (or is a
    record, which is), so only ``__init__`` is generated."""
    classes = _package_dataclasses()
    assert len(classes) > 50, len(classes)
    generated = [
        f"{cls.__module__}.{cls.__qualname__}.{name}"
        for cls in classes
        for name, value in vars(cls).items()
        if name != "__init__"
        and inspect.isfunction(value)
        and value.__code__.co_filename == "<string>"
    ]
    assert not generated, generated
