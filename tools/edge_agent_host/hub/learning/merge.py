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

**Bounded by what the nodes sent.** A node sends only the columns it visited, and in them only
the values not 0 with their places (:class:`~edge_agent.fleet.protocol.CountsDelta`'s sparse
encoding); the merge keeps them so: a table's increments are a :class:`SparseTable`, the values
and their rows grouped by (node, visited column) pair, ordered by column. Every step is batched
numpy over those values, never a dense column: the sums and caps per column by ``bincount``,
each place's median over its column's visitors by one sort of the values sent there (a visitor
that sent none there counts as 0: the zeros come first), the model's column sums from the
prior's and the medians', and the merged counts by ``bincount`` into one model. The scores and
the sum go in blocks of whole columns of at most :data:`BLOCK_VALUES` values, so a round needs
the values sent plus one model and a block: time and memory linear in what was sent, not in
nodes x counts nor in visited columns x rows.
:func:`merge_round` takes dense ``(nodes, *shape)`` deltas for callers that have them; the
dense computation of the same rule is :mod:`tests.support.learning_merge_oracle`, the reference it
is tested and benchmarked against.
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
I32 = npt.NDArray[np.int32]
#: Probabilities below this are scored as it (a structural zero of the model: the node claims a
#: transition the fleet's model says cannot happen).
LOG_FLOOR: Final = 1e-9
#: The values one block of columns holds at most while the score works on it (float64: 8 MiB;
#: about ten arrays of that size at once): bounds the merge's scratch memory.
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
    """One table's increments of every node of a round in the nodes' own sparse form: the values
    not 0 and their places. The values are grouped by (node, visited column) pair: pair ``i`` is
    node ``node[i]``'s column ``column[i]`` (of ``columns``), its values
    ``values[start[i]:start[i + 1]]`` (float32 as sent, or float64; each above 0) in rows
    ``row[start[i]:start[i + 1]]`` (ascending), every other row of the column 0. Pairs are
    ordered by (column, node), each once. Build one with :meth:`of_entries` (what a node sent),
    :meth:`of_parts` or :meth:`of_dense`."""

    rows: int
    columns: int
    node: I32
    column: I32
    start: I64
    row: I32
    values: npt.NDArray[np.floating]

    @classmethod
    def of_entries(
        cls,
        rows: int,
        columns: int,
        parts: Sequence[tuple[int, npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]],
    ) -> SparseTable:
        """From ``(node, columns: (v,), rows: (v,), values: (v,))`` parts, one place and value
        each (``CountsDelta.entries``; a node may send several: its values at one place are
        summed, in float64; values of 0 are dropped)."""
        sizes = [int(np.shape(v)[0]) for _, _, _, v in parts]
        for (n, c, r, v), k in zip(parts, sizes, strict=True):
            if np.shape(c) != (k,) or np.shape(r) != (k,) or np.ndim(v) != 1:
                raise ValueError(
                    f"node {n}: columns {np.shape(c)}, rows {np.shape(r)} and values "
                    f"{np.shape(v)} must be the same length"
                )
        node = np.repeat(np.array([p[0] for p in parts], dtype=np.int32), sizes)
        column = _joined([p[1] for p in parts], np.int64)
        row = _joined([p[2] for p in parts], np.int64)
        values = np.concatenate([np.asarray(p[3]) for p in parts] or [np.zeros(0)])
        return cls.of_arrays(rows, columns, node=node, column=column, row=row, values=values)

    @classmethod
    def of_arrays(
        cls,
        rows: int,
        columns: int,
        *,
        node: npt.ArrayLike,
        column: npt.ArrayLike,
        row: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> SparseTable:
        """From one place and value per entry, in any order (as :meth:`of_entries`)."""
        return cls._sorted(
            rows, columns, np.asarray(node, dtype=np.int32), np.asarray(column, dtype=np.int64),
            np.asarray(row, dtype=np.int64), np.asarray(values),
        )  # fmt: skip

    @classmethod
    def _sorted(  # noqa: PLR0917
        cls,
        rows: int,
        columns: int,
        node: I32,
        column: I64,
        row: I64,
        values: npt.NDArray[np.floating],
    ) -> SparseTable:
        if column.size and (column.min() < 0 or column.max() >= columns):
            raise ValueError(f"a column is outside [0, {columns})")
        if row.size and (row.min() < 0 or row.max() >= rows):
            raise ValueError(f"a row is outside [0, {rows})")
        keep = values != 0
        if not keep.all():
            node, column, row, values = node[keep], column[keep], row[keep], values[keep]
        order = np.lexsort((row, node, column))
        node, column, row, values = node[order], column[order], row[order], values[order]
        new = np.ones(node.shape, dtype=bool)  # a new place: (column, node, row)
        new[1:] = (column[1:] != column[:-1]) | (node[1:] != node[:-1]) | (row[1:] != row[:-1])
        if not new.all():  # a node sent a place twice: one value, the sum
            firsts = np.flatnonzero(new)
            values = np.add.reduceat(values.astype(np.float64), firsts)
            node, column, row = node[firsts], column[firsts], row[firsts]
        pair = np.ones(node.shape, dtype=bool)  # a new pair: (column, node)
        pair[1:] = (column[1:] != column[:-1]) | (node[1:] != node[:-1])
        firsts = np.flatnonzero(pair)
        return cls(rows=rows, columns=columns, node=node[firsts],
                   column=column[firsts].astype(np.int32),
                   start=np.append(firsts, node.shape[0]).astype(np.int64),
                   row=row.astype(np.int32), values=values)  # fmt: skip

    @classmethod
    def of_parts(
        cls,
        rows: int,
        columns: int,
        parts: Sequence[tuple[int, npt.ArrayLike, npt.ArrayLike]],
    ) -> SparseTable:
        """From ``(node, columns: (k,), values: (k, rows))`` parts, each column's values dense
        (as :meth:`of_entries`)."""
        entries = []
        for n, cols, vals in parts:
            k = int(np.shape(cols)[0])
            if np.shape(vals) != (k, rows):
                raise ValueError(f"node {n}: values have shape {np.shape(vals)}, "
                                 f"expected {(k, rows)}")  # fmt: skip
            v = np.asarray(vals)
            i, r = np.nonzero(v)
            entries.append((n, np.asarray(cols, dtype=np.int64)[i], r, v[i, r]))
        return cls.of_entries(rows, columns, entries)

    @classmethod
    def of_dense(cls, deltas: npt.ArrayLike) -> SparseTable:
        """From dense ``(nodes, rows, columns)`` increments."""
        d = np.asarray(deltas, dtype=np.float64)
        node, row, column = np.nonzero(d)
        return cls.of_arrays(d.shape[1], d.shape[2], node=node, column=column, row=row,
                             values=d[node, row, column])  # fmt: skip

    @property
    def pairs(self) -> int:
        """How many (node, visited column) pairs."""
        return int(self.node.shape[0])

    @property
    def nbytes(self) -> int:
        """The bytes the table holds."""
        return sum(int(a.nbytes) for a in (self.node, self.column, self.start, self.row,
                                           self.values))  # fmt: skip

    def dense_values(self, part: slice = slice(None)) -> F64:
        """The pairs ``part``'s columns made dense, ``(pairs, rows)`` float64 (for a block, or
        a test: the merge itself never needs them)."""
        first, last, _ = part.indices(self.pairs)
        lo, hi = int(self.start[first]), int(self.start[max(last, first)])
        out = np.zeros((max(last - first, 0), self.rows))
        pair = np.repeat(np.arange(out.shape[0]), np.diff(self.start[first : max(last, first) + 1]))
        out[pair, self.row[lo:hi]] = self.values[lo:hi]
        return out

    def blocks(self) -> Iterator[slice]:
        """Slices of the pairs, each whole columns of at most :data:`BLOCK_VALUES` values (or
        one column when it alone holds more)."""
        pairs = self.pairs
        if pairs == 0:
            return
        ends = np.append(np.flatnonzero(np.diff(self.column)) + 1, pairs)  # each column's end
        value_ends = self.start[ends]  # the values up to each column's end
        first = 0
        while first < pairs:
            budget = int(self.start[first]) + BLOCK_VALUES
            # the last column's end within the budget, or the next column's when it alone is over
            fit = int(np.searchsorted(value_ends, budget, side="right")) - 1
            end = int(ends[fit]) if fit >= 0 else first
            if end <= first:
                end = int(ends[np.searchsorted(ends, first, side="right")])
            yield slice(first, end)
            first = end


def _joined(arrays: Sequence[npt.ArrayLike], dtype: type[np.int64]) -> I64:
    return np.concatenate([np.asarray(a, dtype=dtype) for a in arrays] or [np.zeros(0, dtype)])


def columns_of(table: npt.ArrayLike) -> F64:
    """``table`` as ``(rows, columns)`` float64 (a column: every axis but the first)."""
    a = np.asarray(table, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def round_prior(
    base: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
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


def _pair_mass(table: SparseTable) -> F64:
    """Per pair, the sum of its values (float64)."""
    if table.pairs == 0:
        return np.zeros(0)
    mass: F64 = np.add.reduceat(table.values, table.start[:-1], dtype=np.float64)
    return mass


def _entries(table: SparseTable, part: slice) -> tuple[slice, I64]:
    """The values of the pairs ``part`` (a slice of them), and each one's pair."""
    first, last = int(part.start), int(part.stop)
    values = slice(int(table.start[first]), int(table.start[last]))
    pair = np.repeat(np.arange(first, last, dtype=np.int64), np.diff(table.start[first : last + 1]))
    return values, pair


def _cap_scale(
    table: SparseTable, mass: F64, prior: F64, settings: MergeSettings
) -> tuple[F64, F64, I64]:
    """Per pair, the factor the cap scales it by, and its mass after it; per column the rule
    of the module docstring (``bincount`` over the pairs' columns; ``prior: (rows, columns)``),
    and how many nodes visited each column."""
    col = table.column
    total = np.bincount(col, weights=mass, minlength=table.columns)
    visitors = np.bincount(col, minlength=table.columns)
    share = np.maximum(settings.max_share, 1.0 / np.maximum(visitors, 1))
    ratio = share / np.maximum(1.0 - share, 1e-12)
    allowance = settings.prior_share * prior.sum(axis=0)
    # per pair, in place (a few arrays of the pairs at once): the mass it may have at most
    limit: F64 = np.asarray(total[col], dtype=np.float64)
    limit -= mass
    limit *= ratio[col]
    limit += allowance[col]
    limit[~((share < 1.0) & (visitors > 1))[col]] = np.inf
    over = mass > limit * (1.0 + 1e-9)  # an even split is not over its share
    scale = np.ones(mass.shape)
    np.divide(limit, mass, out=scale, where=over)
    return scale, mass * scale, visitors


def _typical(
    table: SparseTable, row: I32, column: I32, shares: F64, visitors: I64
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """For each value of a block of whole columns (its ``row``, ``column`` and ``shares``: its
    pair's column normalised), the element-wise median of its place over the column's
    ``visitors`` (those that sent no value there count as 0), normalised per column; and per
    column whether its medians sum above 0. Sparse: the values of each place sorted once, the
    zeros before them."""
    n = shares.shape[0]
    key = column.astype(np.int64) * table.rows + row
    order = np.lexsort((shares, key))
    ordered, place = shares[order], key[order]
    new = np.ones(n, dtype=bool)
    new[1:] = place[1:] != place[:-1]
    firsts = np.flatnonzero(new)
    sent = np.diff(np.append(firsts, n))  # the values at each place
    col = place[firsts] // table.rows
    k = visitors[col]
    zeros = k - sent

    def at(rank: I64) -> F64:
        """The place's ``rank``-th smallest value of its ``k`` (its zeros first)."""
        i = np.clip(firsts + rank - zeros, 0, n - 1)
        return np.where(rank >= zeros, ordered[i], 0.0)

    median = (at((k - 1) // 2) + at(k // 2)) / 2.0
    new_col = np.ones(col.shape, dtype=bool)
    new_col[1:] = col[1:] != col[:-1]
    col_firsts = np.flatnonzero(new_col)
    norm = np.add.reduceat(median, col_firsts) if col_firsts.size else np.zeros(0)
    per_place = np.repeat(norm, np.diff(np.append(col_firsts, col.shape[0])))
    typical = median / np.where(per_place > 0, per_place, 1.0)
    out = np.empty(n)
    out[order] = typical[np.cumsum(new) - 1]
    spread = np.zeros(table.columns, dtype=bool)
    spread[col[col_firsts]] = norm > 0
    return out, spread


def _loglik(  # noqa: PLR0917
    table: SparseTable,
    prior: F64,
    mass: F64,
    scale: F64,
    capped_mass: F64,
    visitors: I64,
    nodes: int,
) -> F64:
    """Per node, ``sum(d_n * log p_-n)`` over its values (module docstring, 2.), block by
    block of whole columns; ``mass``: each pair's before the cap."""
    total = np.bincount(table.column, weights=capped_mass, minlength=table.columns)
    prior_mass = prior.sum(axis=0)
    out = np.zeros(nodes)
    for part in table.blocks():
        values_at, pair = _entries(table, part)
        values = table.values[values_at].astype(np.float64)
        row = table.row[values_at]
        column = table.column[pair]
        # a pair's share of its column does not change under the cap's scaling
        typical, spread = _typical(table, row, column, values / mass[pair], visitors)
        pairs = table.column[part]
        others = total[pairs] - capped_mass[part]  # the others' mass in the pair's column
        norm = prior_mass[pairs] + others * spread[pairs]  # the model's column sum
        local = pair - part.start
        model = prior[row, column] + others[local] * typical
        logp = np.log(np.maximum(model / np.where(norm > 0, norm, 1.0)[local], LOG_FLOOR))
        per_pair = np.bincount(local, weights=values * logp, minlength=pairs.shape[0])
        out += np.bincount(table.node[part], weights=scale[part] * per_pair, minlength=nodes)
    return out


def _kept_sum(table: SparseTable, weight: F64) -> F64:
    """``sum over pairs of weight * values`` into ``(rows, columns)``, block by block."""
    out = np.zeros(table.rows * table.columns)
    for part in table.blocks():
        values_at, pair = _entries(table, part)
        place = table.row[values_at].astype(np.int64) * table.columns + table.column[pair]
        out += np.bincount(place, weights=table.values[values_at] * weight[pair],
                           minlength=out.shape[0])  # fmt: skip
    return out.reshape(table.rows, table.columns)


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
        sent = _pair_mass(table)
        scale, mass, visitors = _cap_scale(table, sent, prior[t], settings)
        scales[t] = scale
        capped[table.node[scale < 1.0]] = True
        loglik += _loglik(table, prior[t], sent, scale, mass, visitors, nodes)
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
