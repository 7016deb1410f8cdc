"""What a learning delta must satisfy before the hub keeps it: pure checks, no database.

:class:`Refusal` is the bounded set of reasons a delta is refused for (at ingestion, and
``outlier`` at a round's merge); each is a counter in ``edge-agent-hub learn status`` and
``/metrics``. :func:`check_tables` holds one delta's tables to the model line's (``shapes``:
the Dirichlet counts the line's bundle carries, by table name ``A1``, ``B0``, ``D0``);
:func:`allowance` holds its ``experience`` to what the node's birth could have lived since its
last delta (bounds from the receiver, not the sender).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np

from edge_agent.fleet.protocol import CountsDelta

__all__ = [
    "CLOCK_AHEAD_S",
    "EXPERIENCE_SLACK",
    "FASTEST_HZ",
    "LONGEST_REPORT_S",
    "MASS_ATOL",
    "MASS_RTOL",
    "Allowance",
    "Refusal",
    "allowance",
    "check_tables",
    "dense_increments",
]

#: Relative tolerance of the mass bound: a node sums float32 increments (each rounded by at most
#: 2**-24 of itself), a report of up to thousands of additions per value stays well inside it.
MASS_RTOL: Final = 1e-4
MASS_ATOL: Final = 1e-6


class Refusal(StrEnum):
    """Why a delta is not merged."""

    UNKNOWN_GROUP = "unknown_group"
    """The node has no such group (none in its newest birth)."""
    UNKNOWN_MODEL = "unknown_model"
    """The hub holds no bundle of that sha256 (or it is not the ``name@version`` it says)."""
    NO_LEARNING = "no_learning"
    """The bundle carries no Dirichlet counts: its model does not learn."""
    STALE_VERSION = "stale_version"
    """Learned against another version than the line's current one."""
    SHAPE = "shape"
    """A table the model does not learn, a wrong shape, a column out of range or repeated."""
    NON_FINITE = "non_finite"
    NEGATIVE = "negative"
    MASS = "mass"
    """More mass in a table than ``experience * lr`` allows."""
    EXPERIENCE = "experience"
    """Claims more agent-ticks than the node's birth could have lived since its last delta
    (:func:`allowance`)."""
    UNREADABLE = "unreadable"
    """Stored accepted, but its tables could not be read back at a round (a damaged row)."""
    OUTLIER = "outlier"
    """Refused at a round: its leave-one-out score was far below the others'."""


EXPERIENCE_SLACK: Final = 2.0
"""A node's allowance grows at twice what its birth's agents at its tick rate live: room for a
report's parts each rounded up, clocks that drift, a rate that rose between two births."""
LONGEST_REPORT_S: Final = 86400.0
"""The most time one delta stands for (``report_every_s`` is at most a day): the allowance of a
group the hub has not heard from yet, and the most one saves up."""
CLOCK_AHEAD_S: Final = 600.0
"""A node's clock is taken at most this far ahead of the hub's."""
FASTEST_HZ: Final = 1000.0
"""The tick rate of a node whose birth does not say its own (of an earlier version): the
fastest a daemon ticks."""


@dataclass(frozen=True)
class Allowance:
    """What a node's group may still claim (``agent_ticks``) as of ``at`` (the node's clock)."""

    agent_ticks: float
    at: float


def allowance(
    before: Allowance | None, *, agents: int, tick_hz: float | None, sent: float, received: float
) -> Allowance:
    """The agent-ticks a node's group may claim in a delta it sent at ``sent`` (its clock, taken
    at most :data:`CLOCK_AHEAD_S` past the hub's ``received``): what it had left at its last
    accepted delta (``before``; none: a full allowance) plus what ``agents`` ticking at
    ``tick_hz`` (its birth's; none: :data:`FASTEST_HZ`) live in the time since, times
    :data:`EXPERIENCE_SLACK`, at most :data:`LONGEST_REPORT_S` of it. Pure; floats, so no
    product of a node's numbers overflows."""
    rate = float(agents) * float(tick_hz or FASTEST_HZ) * EXPERIENCE_SLACK
    cap = rate * LONGEST_REPORT_S
    now = min(float(sent), float(received) + CLOCK_AHEAD_S)
    if before is None:
        return Allowance(cap, now)
    grown = before.agent_ticks + rate * max(0.0, now - before.at)
    return Allowance(min(cap, grown), max(before.at, now))


def check_tables(
    tables: Sequence[CountsDelta], shapes: Mapping[str, tuple[int, ...]]
) -> Refusal | None:
    """The first reason ``tables`` cannot be true of a model whose learned tables have
    ``shapes``; None when they can."""
    seen: set[str] = set()
    for t in tables:
        shape = shapes.get(t.table)
        if shape is None or tuple(t.shape) != shape or t.table in seen:
            return Refusal.SHAPE
        seen.add(t.table)
        columns, values = t.arrays()
        n_columns = int(np.prod(shape[1:], dtype=np.int64))
        if columns.size and (
            int(columns.max()) >= n_columns or np.any(np.diff(columns.astype(np.int64)) <= 0)
        ):
            return Refusal.SHAPE
        if not np.all(np.isfinite(values)):
            return Refusal.NON_FINITE
        if np.any(values < 0):
            return Refusal.NEGATIVE
        bound = float(t.experience) * float(t.lr)
        if float(values.sum(dtype=np.float64)) > bound * (1.0 + MASS_RTOL) + MASS_ATOL:
            return Refusal.MASS
    return None


def dense_increments(
    tables: Sequence[CountsDelta], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """``{table: (rows, columns) float64}`` of checked tables (:func:`check_tables`)."""
    out: dict[str, np.ndarray] = {}
    for t in tables:
        shape = shapes[t.table]
        dense = np.zeros((shape[0], int(np.prod(shape[1:], dtype=np.int64))))
        columns, values = t.arrays()
        dense[:, columns] = values.T
        out[t.table] = dense
    return out
