"""The fleet model of a model line from what its nodes learned: pure numpy, no database.

A round merges the nodes' Dirichlet count increments (``docs/fleet-learning.md`` "On the hub")::

    counts = base + forgetting * (current - base) + sum over accepted nodes of capped(delta_n)

``base`` is the line's first prior (never forgotten), ``current`` the counts the previous round
merged (the prior of the bundle the line started from, before any round). Increments are
**summed**, never averaged: Dirichlet counts are additive, so ten nodes that each saw a hundred
transitions weigh what one node that saw a thousand does.

Two safeguards bound what one node can move, in this order:

1. **Cap per column.** Node ``n``'s mass in column ``c`` of a table (every axis but the first,
   flattened) may be at most ``r = s / (1 - s)`` times the other nodes' mass in that column,
   ``s = max(max_share, 1 / k_c)`` where ``k_c`` is how many nodes put mass there, plus
   ``prior_share`` of the column's prior mass (what the round starts from): its share of the
   column's increment is then at most ``s`` of the uncapped total, or it moves the column by at
   most about ``prior_share`` of the mass the column already had. A node over it is scaled down
   in that column and counted as capped. A column only one node visited is not capped (there
   is nothing to compare it with): the score below is what catches that node. The allowance on
   the prior keeps the experience of few honest nodes that each walk a corner of the world (a
   column's few visitors have little mass to compare with, so the share alone scaled honest
   nodes down in most columns) while a node still moves an established column by a bounded
   part per round.
2. **Leave-one-out score.** Node ``n``'s (capped) increments are scored under the fleet model
   built without it: per column, ``prior`` (``base`` and the forgotten ``current``) plus the
   other nodes' mass there, spread as the element-wise median of the normalised columns of the
   nodes that visited it (a plain sum of the others would let nodes that send the same poison
   vouch for each other; the median is taken over every visitor once, not once per node, so it
   moves by one rank at most for node ``n``; a column nobody visited is never scored). The
   score is the expected log likelihood per unit of mass, ``sum(d_n * log p_-n) / sum(d_n)``,
   over every learned table. With at least ``min_scored`` nodes, a node whose score is below
   ``median - mad_k * MAD`` (MAD scaled by 1.4826 to a standard deviation, and at least
   ``mad_floor``) is refused for the round. The rule holds while the bad nodes are fewer than
   the good ones (the medians then come from good nodes): tests/unit/host/hub/
   test_learning_merge.py measures it with 10 good nodes and 1 to 9 poisoned ones, and shows it
   break at 10.

**Bounded by what the nodes sent.** A node sends only the columns it visited
(:class:`~edge_agent.fleet.protocol.CountsDelta`), and the merge keeps them so: a table's
increments are a :class:`SparseTable`, one row of ``(rows,)`` values per (node, visited column)
pair, ordered by column. Every step is batched numpy over those pairs (the sums and caps per
column by ``bincount``, the medians per column by one sort of each block of columns), in blocks
of whole columns of at most :data:`BLOCK_VALUES` values, so a round needs the pairs themselves
plus one model and a block: time and memory linear in what was sent, not in nodes x counts.
:func:`merge_round` takes dense ``(nodes, *shape)`` deltas for callers that have them; the
dense computation of the same rule is :mod:`.learning_merge_dense`, the reference it is tested
and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK_VALUES",
    "LOG_FLOOR",
    "MergeResult",
    "MergeSettings",
    "SparseTable",
    "columns_of",
    "merge_round",
    "merge_sparse",
    "outliers",
    "round_prior",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: Probabilities below this are scored as it (a structural zero of the model: the node claims a
#: transition the fleet's model says cannot happen).
LOG_FLOOR: Final = 1e-9
#: The values (pairs x rows) one block of columns holds at most while the score works on it
#: (float64: 8 MiB; about ten arrays of that size at once): bounds the merge's scratch memory.
BLOCK_VALUES: Final = 1 << 20
_MAD_TO_SD: Final = 1.4826


@dataclass(frozen=True)
class MergeSettings:
    """``forgetting``: the factor on what earlier rounds merged (1: keep all, 0: start from
    ``base`` each round); ``max_share``: a node's largest share of a column's increment;
    ``prior_share``: the part of a column's prior mass a node may add beyond that share;
    ``mad_k``: how many MADs below the median a score may be (``inf``: no refusal);
    ``mad_floor``: the smallest MAD used; ``min_scored``: fewer nodes than this are not judged
    by their score."""

    forgetting: float = 1.0
    max_share: float = 0.25
    prior_share: float = 0.05
    mad_k: float = 5.0
    mad_floor: float = 0.05
    min_scored: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.forgetting <= 1.0:
            raise ValueError(f"forgetting {self.forgetting} must be in [0, 1]")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"max_share {self.max_share} must be in (0, 1]")
        if not 0.0 <= self.prior_share <= 1.0:
            raise ValueError(f"prior_share {self.prior_share} must be in [0, 1]")
        if not self.mad_k > 0 or not self.mad_floor > 0 or self.min_scored < 2:
            raise ValueError("mad_k and mad_floor must be > 0, min_scored >= 2")


@dataclass(frozen=True)
class MergeResult:
    """``counts``: the merged tables (each its original shape); per node (in the order given):
    ``capped`` (a column of it was scaled down), ``scores`` (NaN when not scored), ``refused``
    (by its score), ``mass`` (its capped mass over every table, 0 when refused)."""

    counts: dict[str, F64]
    capped: npt.NDArray[np.bool_]
    scores: F64
    refused: npt.NDArray[np.bool_]
    mass: F64


@dataclass(frozen=True)
class SparseTable:
    """One table's increments of every node of a round, as the nodes sent them: pair ``i`` is
    node ``node[i]``'s column ``column[i]`` (of ``columns``), its values ``values[i]: (rows,)``
    (float32 as sent, or float64). Pairs are ordered by (column, node), each once, and carry
    mass (their values sum above 0). Build one with :meth:`of_parts` or :meth:`of_dense`."""

    rows: int
    columns: int
    node: I64
    column: I64
    values: npt.NDArray[np.floating]

    @classmethod
    def of_parts(
        cls,
        rows: int,
        columns: int,
        parts: Sequence[tuple[int, npt.ArrayLike, npt.ArrayLike]],
    ) -> SparseTable:
        """From ``(node, columns: (k,), values: (k, rows))`` parts (a node may send several;
        their values in a column it sent twice are summed, in float64)."""
        sizes = [int(np.shape(cols)[0]) for _, cols, _ in parts]
        for (n, _, v), k in zip(parts, sizes, strict=True):
            if np.shape(v) != (k, rows):
                raise ValueError(f"node {n}: values have shape {np.shape(v)}, expected {(k, rows)}")
        node = np.repeat(np.array([p[0] for p in parts], dtype=np.int64), sizes)
        column = np.concatenate([np.asarray(c, dtype=np.int64) for _, c, _ in parts] or
                                [np.zeros(0, dtype=np.int64)])  # fmt: skip
        values = np.concatenate([np.asarray(v) for _, _, v in parts] or [np.zeros((0, rows))])
        if column.size and (column.min() < 0 or column.max() >= columns):
            raise ValueError(f"a column is outside [0, {columns})")
        order = np.lexsort((node, column))
        node, column, values = node[order], column[order], values[order]
        first = np.ones(node.shape, dtype=bool)
        first[1:] = (node[1:] != node[:-1]) | (column[1:] != column[:-1])
        if not first.all():  # a node sent a column twice: one pair, the sum
            starts = np.flatnonzero(first)
            values = np.add.reduceat(values.astype(np.float64), starts, axis=0)
            node, column = node[starts], column[starts]
        has_mass = values.sum(axis=1, dtype=np.float64) > 0
        if not has_mass.all():
            node, column, values = node[has_mass], column[has_mass], values[has_mass]
        return cls(rows=rows, columns=columns, node=node, column=column, values=values)

    @classmethod
    def of_dense(cls, deltas: npt.ArrayLike) -> SparseTable:
        """From dense ``(nodes, rows, columns)`` increments (the columns a node put mass in)."""
        d = np.asarray(deltas, dtype=np.float64)
        node, column = np.nonzero(d.sum(axis=1) > 0)
        order = np.lexsort((node, column))
        node, column = node[order].astype(np.int64), column[order].astype(np.int64)
        return cls(rows=d.shape[1], columns=d.shape[2], node=node, column=column,
                   values=d[node, :, column])  # fmt: skip

    def blocks(self) -> Iterator[slice]:
        """Slices of the pairs, each whole columns of at most :data:`BLOCK_VALUES` values (or
        one column when it alone holds more)."""
        pairs = self.node.shape[0]
        if pairs == 0:
            return
        ends = np.append(np.flatnonzero(np.diff(self.column)) + 1, pairs)  # each column's end
        per_block = max(BLOCK_VALUES // max(self.rows, 1), 1)
        start = 0
        while start < pairs:
            # the last column's end within the budget, or the next column's when it alone is over
            fit = int(np.searchsorted(ends, start + per_block, side="right")) - 1
            end = int(ends[fit])
            if end <= start:
                end = int(ends[np.searchsorted(ends, start, side="right")])
            yield slice(start, end)
            start = end


def columns_of(table: npt.ArrayLike) -> F64:
    """``table`` as ``(rows, columns)`` float64 (a column: every axis but the first)."""
    a = np.asarray(table, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def round_prior(
    base: Mapping[str, npt.ArrayLike], current: Mapping[str, npt.ArrayLike],
    settings: MergeSettings,
) -> dict[str, F64]:
    """``base + forgetting * (current - base)`` per table, ``(rows, columns)``: what the round
    starts from. Raises ValueError when the tables or their shapes differ."""
    if set(base) != set(current):
        raise ValueError(f"tables differ: base {sorted(base)}, current {sorted(current)}")
    prior: dict[str, F64] = {}
    for t in base:
        shape = np.shape(base[t])
        if np.shape(current[t]) != shape:
            raise ValueError(f"{t}: current has shape {np.shape(current[t])}, base {shape}")
        b = columns_of(base[t])
        prior[t] = b + settings.forgetting * (columns_of(current[t]) - b)
    return prior


def _pair_mass(table: SparseTable, part: slice = slice(None)) -> F64:
    mass: F64 = table.values[part].sum(axis=1, dtype=np.float64)
    return mass


def _cap_scale(table: SparseTable, prior: F64, settings: MergeSettings) -> tuple[F64, F64]:
    """Per pair, the factor the cap scales it by, and its mass after it; per column the rule
    of the module docstring (``bincount`` over the pairs' columns; ``prior: (rows, columns)``)."""
    mass = _pair_mass(table)
    total = np.bincount(table.column, weights=mass, minlength=table.columns)
    visitors = np.bincount(table.column, minlength=table.columns)
    share = np.maximum(settings.max_share, 1.0 / np.maximum(visitors, 1))
    ratio = share / np.maximum(1.0 - share, 1e-12)
    allowance = settings.prior_share * prior.sum(axis=0)
    bounded = ((share < 1.0) & (visitors > 1))[table.column]
    col = table.column
    limit = np.where(bounded, ratio[col] * (total[col] - mass) + allowance[col], np.inf)
    over = mass > limit * (1.0 + 1e-9)  # an even split is not over its share
    scale = np.where(over, limit / np.where(mass > 0, mass, 1.0), 1.0)
    return scale, mass * scale


def _typical(shares: F64, group: I64, groups: int) -> F64:
    """The element-wise median of ``shares: (pairs, rows)`` over the pairs of each group
    (``group: (pairs,)`` sorted, ``0..groups-1``), normalised per group: ``(groups, rows)``."""
    order = np.lexsort((shares.T, np.broadcast_to(group, shares.T.shape)), axis=-1)
    ordered = np.take_along_axis(shares.T, order, axis=1)  # (rows, pairs), by group then value
    count = np.bincount(group, minlength=groups)
    start = np.cumsum(count) - count
    lo = ordered[:, start + (count - 1) // 2]
    hi = ordered[:, start + count // 2]
    typical = ((lo + hi) / 2.0).T
    norm = typical.sum(axis=1, keepdims=True)
    return typical / np.where(norm > 0, norm, 1.0)


def _loglik(table: SparseTable, prior: F64, scale: F64, capped_mass: F64, nodes: int) -> F64:
    """Per node, ``sum(d_n * log p_-n)`` over its pairs (module docstring, 2.), block by
    block of whole columns."""
    total = np.bincount(table.column, weights=capped_mass, minlength=table.columns)
    out = np.zeros(nodes)
    for part in table.blocks():
        values = table.values[part].astype(np.float64)
        column = table.column[part]
        mass = capped_mass[part]
        # a pair's share of its column does not change under the cap's scaling
        shares = values / _pair_mass(table, part)[:, None]
        first = np.ones(column.shape, dtype=bool)
        first[1:] = column[1:] != column[:-1]
        group = np.cumsum(first) - 1
        typical = _typical(shares, group, int(group[-1]) + 1)[group]  # (pairs, rows)
        model = prior[:, column].T + (total[column] - mass)[:, None] * typical
        norm = model.sum(axis=1, keepdims=True)
        logp = np.log(np.maximum(model / np.where(norm > 0, norm, 1.0), LOG_FLOOR))
        pair = scale[part] * (values * logp).sum(axis=1)
        out += np.bincount(table.node[part], weights=pair, minlength=nodes)
    return out


def _kept_sum(table: SparseTable, weight: F64) -> F64:
    """``sum over pairs of weight * values`` into ``(rows, columns)``, block by block."""
    out = np.zeros((table.rows, table.columns))
    for part in table.blocks():
        column = table.column[part]
        first = np.ones(column.shape, dtype=bool)
        first[1:] = column[1:] != column[:-1]
        starts = np.flatnonzero(first)
        weighted = table.values[part] * weight[part, None]
        out[:, column[starts]] += np.add.reduceat(weighted, starts, axis=0).T
    return out


def outliers(scores: F64, settings: MergeSettings) -> npt.NDArray[np.bool_]:
    """Nodes whose score is below ``median - mad_k * max(1.4826 * MAD, mad_floor)`` (none when
    fewer than ``min_scored`` nodes have a score)."""
    scored = np.isfinite(scores)
    if int(scored.sum()) < settings.min_scored:
        return np.zeros(scores.shape, dtype=bool)
    values = scores[scored]
    median = float(np.median(values))
    mad = max(_MAD_TO_SD * float(np.median(np.abs(values - median))), settings.mad_floor)
    return scored & (scores < median - settings.mad_k * mad)


def merge_sparse(
    base: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    deltas: Mapping[str, SparseTable],
    nodes: int,
    settings: MergeSettings,
) -> MergeResult:
    """One round (module docstring) of ``nodes`` nodes' increments ``deltas`` (node ``i`` of
    every table is the same node; a table no node learned may be left out). ``base[t]`` and
    ``current[t]``: a table's counts, its own shape. Raises ValueError on tables or shapes
    that differ."""
    prior = round_prior(base, current, settings)
    if not set(deltas) <= set(prior):
        raise ValueError(f"tables differ: base {sorted(base)}, deltas {sorted(deltas)}")
    for t, table in deltas.items():
        if (table.rows, table.columns) != prior[t].shape:
            raise ValueError(
                f"{t}: deltas have shape {(table.rows, table.columns)} (rows, columns), "
                f"the table {prior[t].shape}"
            )
        if table.node.size and int(table.node.max()) >= nodes:
            raise ValueError(f"{t}: a node index is outside [0, {nodes})")
    capped = np.zeros(nodes, dtype=bool)
    loglik = np.zeros(nodes)
    node_mass = np.zeros(nodes)
    scales: dict[str, F64] = {}
    for t, table in deltas.items():
        scale, mass = _cap_scale(table, prior[t], settings)
        scales[t] = scale
        capped[table.node[scale < 1.0]] = True
        loglik += _loglik(table, prior[t], scale, mass, nodes)
        node_mass += np.bincount(table.node, weights=mass, minlength=nodes)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(node_mass > 0, loglik / np.where(node_mass > 0, node_mass, 1.0), np.nan)
    refused = outliers(scores, settings)
    keep = (~refused).astype(np.float64)
    counts: dict[str, F64] = {}
    for t, p in prior.items():
        merged = p.copy()
        if t in deltas:
            merged += _kept_sum(deltas[t], scales[t] * keep[deltas[t].node])
        counts[t] = merged.reshape(np.shape(base[t]))
    return MergeResult(counts=counts, capped=capped, scores=scores, refused=refused,
                       mass=keep * node_mass)  # fmt: skip


def merge_round(
    base: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    deltas: Mapping[str, npt.ArrayLike],
    settings: MergeSettings,
) -> MergeResult:
    """:func:`merge_sparse` of dense ``deltas[t]: (nodes, *shape)``, the nodes in the same order
    in every table (a node that did not learn a table has zeros there). Raises ValueError on
    shapes that differ."""
    if set(base) != set(current) or not set(deltas) <= set(base):
        raise ValueError(
            f"tables differ: base {sorted(base)}, current {sorted(current)}, "
            f"deltas {sorted(deltas)}"
        )
    counts = {np.shape(d)[0] for d in deltas.values()}
    if len(counts) > 1:
        raise ValueError(f"deltas have different node counts: {sorted(counts)}")
    n = counts.pop() if counts else 0
    sparse: dict[str, SparseTable] = {}
    for t, d in deltas.items():
        shape = np.shape(base[t])
        if np.shape(d)[1:] != shape:
            raise ValueError(f"{t}: deltas have shape {np.shape(d)[1:]}, the table {shape}")
        sparse[t] = SparseTable.of_dense(np.reshape(d, (n, shape[0], -1)))
    return merge_sparse(base, current, sparse, n, settings)
