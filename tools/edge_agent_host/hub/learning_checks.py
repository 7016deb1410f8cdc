"""What a learning delta must satisfy before the hub keeps it: pure checks, no database.

:class:`Refusal` is the bounded set of reasons a delta is refused for (at ingestion, and
``outlier`` at a round's merge); each is a counter in ``edge-agent-hub learn status`` and
``/metrics``. :func:`check_tables` holds one delta's tables to the model line's (``shapes``:
the Dirichlet counts the line's bundle carries, by table name ``A1``, ``B0``, ``D0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Final

import numpy as np

from edge_agent.fleet.protocol import CountsDelta

__all__ = ["MASS_ATOL", "MASS_RTOL", "Refusal", "check_tables", "dense_increments"]

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
    OUTLIER = "outlier"
    """Refused at a round: its leave-one-out score was far below the others'."""


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
