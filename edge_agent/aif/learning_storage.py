"""Dirichlet counts as a group's saved state holds them: only what moved from the prior.

A learned table's counts start as their prior and move only where updates land (the support of
the table, :mod:`edge_agent.aif.learning_counts`) and where an agent's experience reached: most
of a grid's ``pB`` (``S x S x U`` per agent, per agent ``N`` times that) stays its prior
however long the agents learn. A snapshot therefore stores, per learned table, the entries that
differ from the prior (the prior broadcast over the agents for per-agent counts), as

* ``<key>.steps``: the gaps between the flat (C-order) indices of those entries, the first the
  index itself (``uint32``; ``uint64`` for tables of 2**32 entries or more): runs of visited
  entries are runs of small gaps, which the snapshot's zlib takes to almost nothing;
* ``<key>.values``: their counts, in the counts' own dtype (``float64`` or ``float32``),
  exactly: the counts restored are the counts saved, bit for bit;
* ``<key>.shape``: the counts' shape (``int64``), so that a snapshot of another group size is
  told apart.

Stored bytes, before compression: ``moved * (4 + itemsize) + 8 * ndim``, at most every entry
updates can reach (``N * support``) times ``4 + itemsize``; :func:`moved_bound` says it. Counts
saved whole (``<key>`` itself, what snapshots written before this held) are read as they are.

The previous posteriors ``pB`` learns the next transition from are, at a snapshot, the beliefs
the state holds anyway for every agent that stepped since its last reset: they are stored only
for the agents where they differ (:func:`rows_arrays`: ``<key>.agents``, ``uint32``, and
``<key>.rows``), and read back as those beliefs elsewhere (:func:`saved_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.errors import InputError

__all__ = ["counts_arrays", "moved_bound", "rows_arrays", "saved_counts", "saved_rows"]

_SUFFIXES = (".steps", ".values", ".shape")


def counts_arrays(key: str, counts: np.ndarray, prior: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays that stand for ``counts`` (a table's shape, or ``(N, ...)`` per agent) saved
    under ``key``: the entries that differ from ``prior`` (the table's shape), their gaps and
    values (see the module doc)."""
    moved = _moved(counts, prior)
    steps = np.diff(moved, prepend=0).astype(np.uint32 if counts.size < 2**32 else np.uint64)
    return {
        f"{key}.steps": steps,
        f"{key}.values": counts.reshape(-1)[moved],
        f"{key}.shape": np.array(counts.shape, dtype=np.int64),
    }


#: Entries compared with the prior at a time (per-agent counts: a block of agents), so that a
#: snapshot of a large group holds no mask the size of its counts.
_BLOCK_ENTRIES = 1 << 20


def _moved(counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The flat indices of ``counts``' entries that differ from ``prior`` (broadcast over the
    agents), ascending, a block of agents at a time."""
    if counts.ndim == prior.ndim:
        return np.flatnonzero(counts != prior)
    per_agent = max(prior.size, 1)
    step = max(1, _BLOCK_ENTRIES // per_agent)
    blocks = [
        np.flatnonzero(counts[start : start + step] != prior) + start * per_agent
        for start in range(0, counts.shape[0], step)
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.intp)


def saved_counts(
    state: Mapping[str, np.ndarray], key: str, prior: np.ndarray, *, where: str
) -> np.ndarray | None:
    """The counts saved under ``key`` in ``state``, in the dtype they were saved in: saved whole
    (``state[key]``), or as what moved from ``prior`` (:func:`counts_arrays`); None when neither
    is there. Counts that do not fit what they claim are refused in one line naming ``where``
    (``InputError``); their shape is the caller's to check."""
    if key in state:
        return np.asarray(state[key])
    parts = [f"{key}{suffix}" for suffix in _SUFFIXES]
    if not all(part in state for part in parts):
        return None
    steps = np.asarray(state[parts[0]])
    values = np.asarray(state[parts[1]])
    shape = tuple(int(d) for d in np.asarray(state[parts[2]]).reshape(-1))
    size = int(np.prod(shape, dtype=np.int64))
    if steps.ndim != 1 or values.shape != steps.shape or values.dtype.kind != "f":
        raise InputError(f"{where}: {key}: the saved steps and values do not match")
    moved = np.cumsum(steps, dtype=np.int64)
    if moved.size and (moved[0] < 0 or moved[-1] >= size or np.any(np.diff(moved) <= 0)):
        raise InputError(f"{where}: {key}: the saved entries lie outside shape {shape}")
    if prior.shape != shape[len(shape) - prior.ndim :]:
        raise InputError(f"{where}: {key}: saved with shape {shape}, the prior's is {prior.shape}")
    counts = np.empty(shape, dtype=values.dtype)
    counts[...] = prior
    counts.reshape(-1)[moved] = values
    return counts


def moved_bound(counts: np.ndarray, mask: np.ndarray, itemsize: int) -> int:
    """Bytes :func:`counts_arrays` stores at most, before compression, for ``counts`` whose
    updates land only on ``mask`` (the table's shape): every reachable entry moved."""
    agents = counts.size // max(mask.size, 1)
    return agents * int(np.count_nonzero(mask)) * (4 + itemsize) + 8 * counts.ndim


def rows_arrays(key: str, rows: np.ndarray, like: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays that stand for ``rows`` (one per agent) saved under ``key`` next to ``like``
    (the same shape, saved anyway): the agents whose rows differ from it and their rows."""
    agents = np.flatnonzero(np.any(rows != like, axis=tuple(range(1, rows.ndim))))
    return {f"{key}.agents": agents.astype(np.uint32), f"{key}.rows": rows[agents]}


def saved_rows(
    state: Mapping[str, np.ndarray], key: str, like: str, out: np.ndarray, *, where: str
) -> bool:
    """Read the rows saved under ``key`` into ``out``: saved whole (``state[key]``), or as
    :func:`rows_arrays` saved them next to ``state[like]``; False (``out`` untouched) when
    neither is there. Rows that do not fit ``out`` are refused in one line naming ``where``."""
    if key in state:
        whole = np.asarray(state[key])
        if whole.size != out.size:
            raise InputError(f"{where}: {key}: saved with shape {whole.shape}, not {out.shape}")
        out[...] = whole.reshape(out.shape)
        return True
    if f"{key}.agents" not in state or like not in state:
        return False
    base = np.asarray(state[like])
    agents = np.asarray(state[f"{key}.agents"]).astype(np.intp).reshape(-1)
    rows = np.asarray(state[f"{key}.rows"]) if f"{key}.rows" in state else None
    if (
        base.shape != out.shape
        or rows is None
        or rows.shape != (agents.size, *out.shape[1:])
        or (agents.size and (agents.max() >= out.shape[0]))
    ):
        raise InputError(f"{where}: {key}: the saved rows do not fit shape {out.shape}")
    out[...] = base
    out[agents] = rows
    return True
