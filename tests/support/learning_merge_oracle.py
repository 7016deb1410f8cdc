"""The round's merge computed dense in nodes x counts: the reference the hub's merge
(:mod:`edge_agent_host.hub.learning.merge`, bounded by what the nodes sent) is tested and
benchmarked against.

The same rule (``docs/fleet-learning.md`` "On the hub", :mod:`edge_agent_host.hub.learning.merge`'s
docstring) on ``(nodes, rows, columns)`` float64 arrays, as the hub computed it before the merge
became sparse: simple to read, but its memory grows with nodes x counts (about 1.2 GiB for 1,000
nodes' deltas of a 50,000-count table), so the service does not use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from edge_agent_host.hub.learning.merge import (
    LOG_FLOOR,
    MergeResult,
    MergeSettings,
    outliers,
    round_prior,
)

__all__ = ["cap_shares", "leave_one_out_scores", "merge_round_dense", "nanmedian_first_axis"]

F64 = npt.NDArray[np.float64]


def cap_shares(
    deltas: F64, max_share: float, allowance: F64 | float = 0.0
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """``deltas: (nodes, rows, columns)`` -> ``(capped deltas, capped: (nodes,) bool)``;
    ``allowance``: per column, the mass a node may add beyond its share (``prior_share`` of the
    column's prior mass)."""
    mass = deltas.sum(axis=1)  # (nodes, columns)
    total = mass.sum(axis=0)  # (columns,)
    visitors = (mass > 0).sum(axis=0)
    share = np.maximum(max_share, 1.0 / np.maximum(visitors, 1))
    bounded = np.broadcast_to((share < 1.0) & (visitors > 1), mass.shape)
    ratio = share / np.maximum(1.0 - share, 1e-12)
    limit = np.full(mass.shape, np.inf)  # (nodes, columns): a node's mass at most
    np.add(ratio[None, :] * (total[None, :] - mass), allowance, out=limit, where=bounded)
    over = mass > limit * (1.0 + 1e-9)  # an even split is not over its share
    scale = np.where(over, limit / np.where(mass > 0, mass, 1.0), 1.0)
    return deltas * scale[:, None, :], over.any(axis=1)


def leave_one_out_scores(prior: Mapping[str, F64], deltas: Mapping[str, F64]) -> F64:
    """Each node's expected log likelihood per unit mass under the fleet model without it:
    ``prior[t]: (rows, columns)``, ``deltas[t]: (nodes, rows, columns)`` -> ``(nodes,)``, NaN
    for a node with no mass."""
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
    sort: NaNs sort last, the median is taken among the first ``k`` of each position."""
    if a.shape[0] == 0:
        return np.full(a.shape[1:], np.nan)
    ordered = np.sort(a, axis=0)
    k = (~np.isnan(a)).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum(k - 1, 0)[None] // 2, axis=0)[0]
    hi = np.take_along_axis(ordered, (k // 2)[None], axis=0)[0]
    hi = np.where(k > 0, hi, np.nan)
    return np.where(k > 0, (lo + hi) / 2.0, np.nan)


def merge_round_dense(
    base: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    deltas: Mapping[str, npt.ArrayLike],
    settings: MergeSettings,
) -> MergeResult:
    """:func:`~edge_agent_host.hub.learning.merge.merge_round` computed dense (same arguments,
    same result up to rounding)."""
    prior = round_prior(base, current, settings)
    shapes = {t: np.shape(base[t]) for t in base}
    n = int(np.shape(next(iter(deltas.values())))[0]) if deltas else 0
    stacked: dict[str, F64] = {}
    capped = np.zeros(n, dtype=bool)
    for t, d in deltas.items():
        flat = np.asarray(d, dtype=np.float64).reshape(n, shapes[t][0], -1)
        allowance = settings.prior_share * prior[t].sum(axis=0)
        stacked[t], over = cap_shares(flat, settings.max_share, allowance)
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
