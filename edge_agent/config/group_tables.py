"""A group's tables that belong to one kind of agent group: ``[groups.learning]``, ``perception``.

Every ``[[groups]]`` table has the keys every group has (:class:`~edge_agent.config.daemon.
GroupConfig`'s fields). A kind that needs a table of its own declares it in :data:`GROUP_TABLES`:
one line, the key and the record that reads it, written beside the kind's maths (the record
is a :class:`~edge_agent.records.Record`, so it imports nothing of the config) and imported only
when a config is validated or names the table. The config's reader validates each table a group
has with its record, at its lines, and the group holds it (``GroupConfig.table``,
``GroupConfig.table_of``); nothing else of the config knows what a table means.

A kind outside the package (``model = { type = "kind", module = "pkg.kind" }``) needs no line
here: its module lists its tables, ``TABLES = (TallyTable,)``, each a record that names its key
(``KEY: ClassVar[str] = "tally"``). The config's reader imports the module of a group that has
keys beyond every group's and reads those keys with the records the module lists
(:func:`kind_tables`), at their lines like any other table.

A table's record may have these hooks (each optional; :func:`hook` calls them):

=====================================  ===========================================================
``group_problems(group)``              problems of the group it is in (cross-key checks), at the
                                       group's keys
``processes(group)``, ``history(group)``  the processes and history it runs the group with (None:
                                       the group's own)
``tick_problems(tick_hz)``             problems of it at the node's tick rate, at the group's keys
``kind_for(model_kind)``               the kind a group of this model kind runs with the table
``refusal(kind, kind_name)``           why a group of ``kind`` cannot take it (None: it can)
``problem_keys(message)``              where a problem of the group's model is reported, when
                                       the table is at fault
``summary_model()``, ``summary_tail()``  what ``check-config`` adds to the group's model and line
                                       (None: nothing)
``status()``                           what the status file adds to the group's entry
``fleet_keys()``                       its keys set to use the fleet link (refused without
                                       ``[mqtt] enabled``)
=====================================  ===========================================================
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Final

from edge_agent.records import Record

__all__ = ["GROUP_TABLES", "hook", "is_known", "kind_tables", "table_type", "table_types"]

GROUP_TABLES: Final[dict[str, str]] = {
    "history_beliefs": "edge_agent.aif.settings:BeliefHistory",
    "settings": "edge_agent.aif.settings:AifSettings",
    "planning": "edge_agent.aif.planning:PlanningPolicy",
    "learning": "edge_agent.aif.learning_table:LearningTable",
    "perception": "edge_agent.neural.perception_table:PerceptionTable",
    "policy": "edge_agent.neural.policy_table:NeuralPolicy",
    "health": "edge_agent.core.health_table:HealthTable",
}
"""Key in ``[[groups]]`` -> ``module:Record`` of the table (the kind that owns it:
``history_beliefs``, ``settings``, ``planning`` the Active Inference kinds', ``aif`` and
``perception``; ``learning`` the ``aif`` kind's; ``perception`` the ``perception`` kind's;
``policy`` the ``neural`` kind's; ``health`` every kind's that measures health). A group holds
its tables in this order, which is the order their hooks run in."""


@functools.cache
def table_type(key: str) -> type[Record]:
    """The record of the table ``key`` (of :data:`GROUP_TABLES`), imported now."""
    module_name, _, name = GROUP_TABLES[key].partition(":")
    found = getattr(importlib.import_module(module_name), name)
    if not (isinstance(found, type) and issubclass(found, Record)):
        raise TypeError(f"group table {key!r}: {GROUP_TABLES[key]} is not a Record")
    return found


def table_types() -> dict[str, type[Record]]:
    """Every table's record, by key (imports them all: what validating a document needs)."""
    return {key: table_type(key) for key in GROUP_TABLES}


def kind_tables(module_name: str) -> dict[str, type[Record]]:
    """The tables the kind module ``module_name`` lists (its ``TABLES``), by their ``KEY``;
    imports the module (ImportError: it cannot be). ValueError: ``TABLES`` holds something that
    is not a record with a key of its own."""
    module = importlib.import_module(module_name)
    out: dict[str, type[Record]] = {}
    for record in getattr(module, "TABLES", ()):
        key = getattr(record, "KEY", None)
        if not (isinstance(record, type) and issubclass(record, Record) and isinstance(key, str)):
            raise ValueError(f"TABLES holds {record!r}, not a Record with a KEY")
        if key in GROUP_TABLES or key in out:
            raise ValueError(f"TABLES names the key {key!r} twice or a table's of the package")
        out[key] = record
    return out


def is_known(key: str, table: Record) -> bool:
    """Whether ``table`` may stand under ``key`` in a group: a key of :data:`GROUP_TABLES`, or
    the key its record names (a kind outside the package, :func:`kind_tables`)."""
    return key in GROUP_TABLES or getattr(type(table), "KEY", None) == key


def hook(table: Record, name: str) -> Callable[..., Any] | None:
    """The table's hook ``name`` (see the module's docstring), or None when it has none."""
    found = getattr(table, name, None)
    return found if callable(found) else None
