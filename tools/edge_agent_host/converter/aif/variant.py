"""A deliberately changed copy of an Active Inference model: ``edge-agent-host variant``.

A rollout's behaviour gate and a shadow evaluation (docs/health.md) are tried with a model known
to be worse than the one the fleet runs. Two changes make one from any model file, each a swap
of two indices of one table (so every table stays a valid distribution):

* **outcomes** ``M:I,J``: in ``A[M]`` the rows of outcomes ``I`` and ``J`` swap: the model
  expects ``J`` wherever the world gives ``I``, and the reverse (the T-maze's reward modality
  ``1:1,2`` is its reward arms swapped: the cued arm now loses with probability 0.98). ``C[M]``
  stays: the agents still prefer the same outcomes, and now go the wrong way for them.
* **actions** ``F:U,V``: in ``B[F]`` the transitions of actions ``U`` and ``V`` swap: the model
  believes ``U`` does what ``V`` does (the grid's moves mirrored).

The model's Dirichlet counts (``pA``, ``pB``) swap with their tables. :func:`make_variant` is the
pure part; :func:`write_variant` writes the ``.npz`` ``convert aif`` reads, with ``meta_source``
and ``meta_variant`` saying what it was made from and how (the source's own ``meta_*`` keys, which
describe the source, are not carried).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from edge_agent.aif.model import Counts, GenerativeModel
from edge_agent.errors import ModelError

__all__ = ["Swap", "make_variant", "parse_swap", "write_variant"]

_SWAP: Final = re.compile(r"^(\d+):(\d+),(\d+)$")

#: What a swap of each table exchanges, and of what (for messages and the description).
_WHAT: Final = {"A": ("outcomes", "modality", "modalities"), "B": ("actions", "factor", "factors")}


@dataclass(frozen=True, slots=True)
class Swap:
    """Exchange indices ``first`` and ``second`` of table ``table`` number ``index``: the
    outcomes (rows) of ``A[index]``, or the actions (last axis) of ``B[index]``."""

    table: Literal["A", "B"]
    index: int
    first: int
    second: int

    def describe(self) -> str:
        """``A[1] outcomes 1 and 2 swapped``."""
        what = _WHAT[self.table][0]
        return f"{self.table}[{self.index}] {what} {self.first} and {self.second} swapped"

    def option(self) -> str:
        """The command line's words for it: ``--swap-outcomes 1:1,2``."""
        return f"--swap-{_WHAT[self.table][0]} {self.index}:{self.first},{self.second}"


def parse_swap(text: str, table: Literal["A", "B"]) -> Swap:
    """``M:I,J`` (``table`` A: modality and outcomes) or ``F:U,V`` (B: factor and actions);
    ValueError naming the form for anything else."""
    match = _SWAP.fullmatch(text.strip())
    if match is None:
        what, of, _ = _WHAT[table]
        raise ValueError(f"{text!r}: write {of.upper()[0]}:I,J (the {of}, then the two {what})")
    index, first, second = (int(g) for g in match.groups())
    if first == second:
        raise ValueError(f"{text!r}: swap two different {_WHAT[table][0]}")
    return Swap(table, index, first, second)


def make_variant(
    model: GenerativeModel, counts: Counts, swaps: Sequence[Swap]
) -> tuple[GenerativeModel, Counts]:
    """The model (and its counts) with every swap of ``swaps`` made, in order; ModelError in one
    line for a modality, factor, outcome or action the model does not have."""
    tables = {"A": [a.copy() for a in model.A], "B": [b.copy() for b in model.B]}
    changed = {kind: {i: c.copy() for i, c in by.items()} for kind, by in counts.items()}
    for swap in swaps:
        what, of, ofs = _WHAT[swap.table]
        arrays = tables[swap.table]
        if swap.index >= len(arrays):
            raise ModelError(
                f"{swap.option()}: the model has {len(arrays)} {ofs} (0-{len(arrays) - 1})"
            )
        axis = 0 if swap.table == "A" else -1
        size = arrays[swap.index].shape[axis]
        if max(swap.first, swap.second) >= size:
            raise ModelError(
                f"{swap.option()}: {of} {swap.index} has {size} {what} (0-{size - 1})"
            )
        order = np.arange(size)
        order[[swap.first, swap.second]] = order[[swap.second, swap.first]]
        arrays[swap.index] = np.take(arrays[swap.index], order, axis=axis)
        own = changed.get(swap.table, {}).get(swap.index)
        if own is not None:
            changed[swap.table][swap.index] = np.take(own, order, axis=axis)
    variant = GenerativeModel.from_arrays(
        tables["A"], tables["B"], list(model.C), list(model.D), model.E
    )
    return variant, changed


def write_variant(
    path: Path, model: GenerativeModel, counts: Counts, *, source: str, swaps: Sequence[Swap]
) -> None:
    """The variant as a ``.npz`` (pymdp's keys, its counts ``pA0``.., ``meta_source`` and
    ``meta_variant``); ModelError for another suffix."""
    if path.suffix.lower() != ".npz":
        raise ModelError(f"{path}: a variant is written as .npz (what convert aif reads)")
    arrays = dict(model.to_npz_dict())
    for kind, by_index in counts.items():
        for i, c in by_index.items():
            arrays[f"p{kind}{i}"] = c
    arrays["meta_source"] = np.array(source)
    arrays["meta_variant"] = np.array("; ".join(s.describe() for s in swaps))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
