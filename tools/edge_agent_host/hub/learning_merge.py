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
   ``s = max(max_share, 1 / k_c)`` where ``k_c`` is how many nodes put mass there: its share of
   the column's increment is then at most ``s`` of the uncapped total. A node over it is scaled
   down in that column and counted as capped. A column only one node visited is not capped
   (there is nothing to compare it with): the score below is what catches that node.
2. **Leave-one-out score.** Node ``n``'s (capped) increments are scored under the fleet model
   built without it: per column, ``prior`` (``base`` and the forgotten ``current``) plus the
   other nodes' mass there, spread as the element-wise median of the nodes' normalised columns
   (:func:`leave_one_out_scores`; a plain sum of the others would let nodes that send the same
   poison vouch for each other). The score is the expected log likelihood per unit of mass,
   ``sum(d_n * log p_-n) / sum(d_n)``, over every learned table. With at least ``min_scored``
   nodes, a node whose score is below ``median - mad_k * MAD`` (MAD scaled by 1.4826 to a
   standard deviation, and at least ``mad_floor``) is refused for the round. The rule holds
   while the bad nodes are fewer than the good ones (the medians then come from good nodes):
   tests/unit/host/hub/test_learning_merge.py measures it with 10 good nodes and 1 to 9
   poisoned ones, and shows it break at 10.

Shapes: a table's counts are kept 2-D, ``(rows, columns)`` = ``(shape[0], prod(shape[1:]))``;
the nodes' increments of one table are stacked ``(nodes, rows, columns)`` float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "LOG_FLOOR",
    "MergeResult",
    "MergeSettings",
    "cap_shares",
    "columns_of",
    "leave_one_out_scores",
    "merge_round",
    "nanmedian_first_axis",
    "outliers",
]

F64 = npt.NDArray[np.float64]
#: Probabilities below this are scored as it (a structural zero of the model: the node claims a
#: transition the fleet's model says cannot happen).
LOG_FLOOR: Final = 1e-9
_MAD_TO_SD: Final = 1.4826


@dataclass(frozen=True)
class MergeSettings:
    """``forgetting``: the factor on what earlier rounds merged (1: keep all, 0: start from
    ``base`` each round); ``max_share``: a node's largest share of a column's increment;
    ``mad_k``: how many MADs below the median a score may be (``inf``: no refusal);
    ``mad_floor``: the smallest MAD used; ``min_scored``: fewer nodes than this are not judged
    by their score."""

    forgetting: float = 1.0
    max_share: float = 0.25
    mad_k: float = 5.0
    mad_floor: float = 0.05
    min_scored: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.forgetting <= 1.0:
            raise ValueError(f"forgetting {self.forgetting} must be in [0, 1]")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"max_share {self.max_share} must be in (0, 1]")
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


def columns_of(table: npt.ArrayLike) -> F64:
    """``table`` as ``(rows, columns)`` float64 (a column: every axis but the first)."""
    a = np.asarray(table, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def cap_shares(deltas: F64, max_share: float) -> tuple[F64, npt.NDArray[np.bool_]]:
    """``deltas: (nodes, rows, columns)`` -> ``(capped deltas, capped: (nodes,) bool)``
    (the rule of the module docstring)."""
    mass = deltas.sum(axis=1)  # (nodes, columns)
    total = mass.sum(axis=0)  # (columns,)
    visitors = (mass > 0).sum(axis=0)
    share = np.maximum(max_share, 1.0 / np.maximum(visitors, 1))
    bounded = np.broadcast_to((share < 1.0) & (visitors > 1), mass.shape)
    ratio = share / np.maximum(1.0 - share, 1e-12)
    limit = np.full(mass.shape, np.inf)  # (nodes, columns): a node's mass at most
    np.multiply(ratio[None, :], total[None, :] - mass, out=limit, where=bounded)
    over = mass > limit * (1.0 + 1e-9)  # an even split is not over its share
    scale = np.where(over, limit / np.where(mass > 0, mass, 1.0), 1.0)
    return deltas * scale[:, None, :], over.any(axis=1)


def leave_one_out_scores(prior: Mapping[str, F64], deltas: Mapping[str, F64]) -> F64:
    """Each node's expected log likelihood per unit mass under the fleet model without it.

    ``prior[t]: (rows, columns)`` (what the round starts from), ``deltas[t]: (nodes, rows,
    columns)``; returns ``(nodes,)``, NaN for a node with no mass. The model without node ``n``
    is, per column, ``prior`` plus the other nodes' mass in that column spread as the
    element-wise median of the nodes' normalised columns (of the nodes that visited it): a sum
    would let nodes that send the same poison vouch for each other; a median moves by one rank
    at most for node ``n`` (it is taken over every node once, not once per node)."""
    nodes = next(iter(deltas.values())).shape[0]
    loglik = np.zeros(nodes)
    mass = np.zeros(nodes)
    for name, d in deltas.items():
        col_mass = d.sum(axis=1)  # (nodes, columns)
        visited = col_mass > 0
        shares = np.where(
            visited[:, None, :], d / np.where(visited, col_mass, 1.0)[:, None, :], np.nan
        )
        typical = np.nan_to_num(nanmedian_first_axis(shares), nan=0.0)  # (rows, columns)
        norm = typical.sum(axis=0, keepdims=True)
        typical = typical / np.where(norm > 0, norm, 1.0)
        others = col_mass.sum(axis=0)[None, :] - col_mass  # (nodes, columns)
        # Only the (node, column) pairs a node visited score: (pairs, rows) from here on.
        node, col = np.nonzero(visited)
        model = prior[name][:, col].T + others[node, col][:, None] * typical[:, col].T
        total = model.sum(axis=1, keepdims=True)
        logp = np.log(np.maximum(model / np.where(total > 0, total, 1.0), LOG_FLOOR))
        pair = (d[node, :, col] * logp).sum(axis=1)
        loglik += np.bincount(node, weights=pair, minlength=nodes)
        mass += col_mass.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, loglik / np.where(mass > 0, mass, 1.0), np.nan)


def nanmedian_first_axis(a: F64) -> F64:
    """``np.nanmedian(a, axis=0)`` (NaN where every value is NaN, without a warning), by one
    sort: NaNs sort last, the median is taken among the first ``k`` of each position. numpy's
    own goes through masked arrays and took 60 % of a round's merge
    (benchmarks/bench_learning_merge.py)."""
    if a.shape[0] == 0:
        return np.full(a.shape[1:], np.nan)
    ordered = np.sort(a, axis=0)
    k = (~np.isnan(a)).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum(k - 1, 0)[None] // 2, axis=0)[0]
    hi = np.take_along_axis(ordered, (k // 2)[None], axis=0)[0]
    hi = np.where(k > 0, hi, np.nan)
    return np.where(k > 0, (lo + hi) / 2.0, np.nan)


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


def merge_round(
    base: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    deltas: Mapping[str, npt.ArrayLike],
    settings: MergeSettings,
) -> MergeResult:
    """One round (module docstring). ``base[t]`` and ``current[t]``: a table's counts, its own
    shape; ``deltas[t]``: ``(nodes, *shape)``, the nodes in the same order in every table (a
    node that did not learn a table has zeros there). Raises ValueError on shapes that differ."""
    if set(base) != set(current) or not set(deltas) <= set(base):
        raise ValueError(
            f"tables differ: base {sorted(base)}, current {sorted(current)}, "
            f"deltas {sorted(deltas)}"
        )
    shapes = {t: np.shape(base[t]) for t in base}
    nodes = {np.shape(d)[0] for d in deltas.values()}
    if len(nodes) > 1:
        raise ValueError(f"deltas have different node counts: {sorted(nodes)}")
    n = nodes.pop() if nodes else 0
    prior: dict[str, F64] = {}
    for t, shape in shapes.items():
        if np.shape(current[t]) != shape:
            raise ValueError(f"{t}: current has shape {np.shape(current[t])}, base {shape}")
        b = columns_of(base[t])
        prior[t] = b + settings.forgetting * (columns_of(current[t]) - b)
    stacked: dict[str, F64] = {}
    capped = np.zeros(n, dtype=bool)
    for t, d in deltas.items():
        arr = np.asarray(d, dtype=np.float64)
        if arr.shape[1:] != shapes[t]:
            raise ValueError(f"{t}: deltas have shape {arr.shape[1:]}, the table {shapes[t]}")
        flat = arr.reshape(n, shapes[t][0], -1)
        stacked[t], over = cap_shares(flat, settings.max_share)
        capped |= over
    scores = leave_one_out_scores(prior, stacked) if n and stacked else np.full(n, np.nan)
    refused = outliers(scores, settings)
    keep = (~refused).astype(np.float64)
    counts: dict[str, F64] = {}
    mass = np.zeros(n)
    for t, shape in shapes.items():
        merged = prior[t].copy()
        if t in stacked:
            merged += np.einsum("n,nrc->rc", keep, stacked[t])
            mass += keep * stacked[t].sum(axis=(1, 2))
        counts[t] = merged.reshape(shape)
    return MergeResult(counts=counts, capped=capped, scores=scores, refused=refused, mass=mass)
