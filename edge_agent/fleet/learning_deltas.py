"""A learning group's increments as :class:`~edge_agent.fleet.protocol.LearningDelta` messages.

:func:`learning_deltas` turns what a group learned since its last report (one
:class:`~edge_agent.aif.learning_counts.TableIncrements` per learned table, sparse by column)
into as few messages as fit: each at most ``max_payload_bytes`` encoded and each table's part at
most :data:`~edge_agent.fleet.protocol.MAX_DELTA_VALUES` values, at most
:data:`MAX_TABLES_PER_DELTA` parts a message. A table too large for one message is split by
columns; each part carries the agent-ticks its share of the table's mass needs, rounded up
(``ceil(agent_ticks * part_mass / table_mass)``), so that every part on its own keeps the bound
a hub checks (mass <= agent-ticks x ``lr``), and the parts of one table may stand for up to one
agent-tick each more than the table did. Each part goes in the smaller of its two encodings
(dense, or sparse within its columns when fewer than half its values are not 0:
:func:`~edge_agent.fleet.protocol.sparse_counts_delta`), and parts are packed into messages by
their encoded size. Each message takes the next ``seq``. Pure: the caller
(the daemon's :mod:`~edge_agent.daemon.learning_reports`) owns the numbers and the link.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from edge_agent.errors import ProtocolError
from edge_agent.fleet.protocol import (
    MAX_DELTA_VALUES,
    CountsDelta,
    LearningDelta,
    sparse_counts_delta,
)

if TYPE_CHECKING:  # the learning maths: in a daemon only once a group learns
    from edge_agent.aif.learning_counts import TableIncrements

__all__ = ["ENVELOPE_BYTES", "MAX_TABLES_PER_DELTA", "TABLE_BYTES", "learning_deltas"]

#: What a message's envelope and its fields other than the tables take, at most (bytes).
ENVELOPE_BYTES: Final = 1024
#: What one table's part takes besides its columns and values, at most (bytes).
TABLE_BYTES: Final = 256
#: The most table parts one :class:`LearningDelta` carries (the protocol's bound).
MAX_TABLES_PER_DELTA: Final = 64


def learning_deltas(
    group: str,
    model: str,
    model_sha256: str,
    tables: Sequence[TableIncrements],
    *,
    next_seq: int,
    max_payload_bytes: int,
) -> list[LearningDelta]:
    """The messages of ``tables`` (learned against ``model`` ``name@version`` whose bundle is
    ``model_sha256``), numbered from ``next_seq``; empty for no tables. ProtocolError when one
    column of a table cannot fit in ``max_payload_bytes``."""
    budget = max_payload_bytes - ENVELOPE_BYTES
    messages: list[list[CountsDelta]] = [[]]
    used = 0
    for t in tables:
        rows = t.shape[0]
        per_column = 4 * (rows + 1)
        cap = min(MAX_DELTA_VALUES // rows, (budget - TABLE_BYTES) // per_column)
        if cap < 1:
            raise ProtocolError(
                f"group {group!r}: table {t.table} has columns of {rows} values; one does not "
                f"fit in a message of {max_payload_bytes} bytes"
            )
        for columns, values, ticks in _parts(t, cap):
            part = sparse_counts_delta(
                t.table, t.shape, columns, values, experience=ticks, lr=float(t.lr)
            )
            cost = TABLE_BYTES + len(part.columns) + len(part.values) + len(part.index or b"")
            current = messages[-1]
            if current and (used + cost > budget or len(current) >= MAX_TABLES_PER_DELTA):
                messages.append([])
                used = 0
            messages[-1].append(part)
            used += cost
    return [
        LearningDelta(
            group=group, model=model, model_sha256=model_sha256, seq=next_seq + i, tables=parts
        )
        for i, parts in enumerate(m for m in messages if m)
    ]


def _parts(
    t: TableIncrements, cap: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """``t``'s columns in parts of at most ``cap``, each with the agent-ticks its mass needs
    (the module doc); one part (maybe of no columns) when they fit."""
    k = len(t.columns)
    if k <= cap:
        return [(t.columns, t.values, t.agent_ticks)]
    total = float(t.values.sum(dtype=np.float64))
    out = []
    for start in range(0, k, cap):
        values = t.values[start : start + cap]
        mass = float(values.sum(dtype=np.float64))
        ticks = min(t.agent_ticks, math.ceil(t.agent_ticks * mass / total)) if total > 0 else 0
        out.append((t.columns[start : start + cap], values, ticks))
    return out
