"""The words of a ``--criterion``, whatever its kind: ``HEAD:KEY=VALUE:...[:dry_run]``.

Each kind of criterion (:mod:`.health`, :mod:`.shadow`) reads its head and its keys with these,
so that every kind says a malformed part, a key given twice, a number that is not one, and a
value out of its model's bounds in the same one line (:class:`CriterionError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edge_agent_host.fleet.errors import FleetError

__all__ = ["CriterionError", "criterion_fields", "criterion_model", "criterion_number"]

M = TypeVar("M", bound=BaseModel)


class CriterionError(FleetError):
    """A criterion ``rollout start`` cannot take (one line: what and why)."""


def criterion_fields(
    where: str, parts: Iterable[str], keys: frozenset[str], refused: Mapping[str, str] | None = None
) -> tuple[dict[str, str], bool]:
    """The ``KEY=VALUE`` parts after a criterion's head (``-`` in a key read as ``_``), and
    whether ``dry_run`` is one of them. :class:`CriterionError` for a part that is not one of
    ``keys`` (``refused``: a key with its own reason), or a key given twice; ``where`` starts the
    line."""
    fields: dict[str, str] = {}
    dry_run = False
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key == "dry_run" and not sep:
            dry_run = True
            continue
        if refused and key in refused:
            raise CriterionError(f"{where}: {refused[key]}")
        if not sep or key not in keys:
            raise CriterionError(
                f"{where}: {part!r} is not KEY=VALUE with KEY one of {', '.join(sorted(keys))}"
                " (or dry_run)"
            )
        if key in fields:
            raise CriterionError(f"{where}: {key} given twice")
        fields[key] = value.strip()
    return fields, dry_run


def criterion_number(where: str, key: str, text: str, kind: type[float] | type[int]) -> Any:
    """``text``, the value of ``key``, as a number of ``kind`` (:class:`CriterionError`: not
    one)."""
    try:
        return kind(text)
    except ValueError:
        raise CriterionError(f"{where}: {key}={text!r} is not {kind.__name__} number") from None


def criterion_model(where: str, model: type[M], values: Mapping[str, Any]) -> M:
    """The criterion's model of ``values``; its bounds' first problem as a
    :class:`CriterionError`."""
    try:
        return model(**values)
    except ValidationError as err:
        problem = err.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise CriterionError(f"{where}: {field}: {problem['msg']}") from None
