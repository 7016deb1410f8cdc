"""The prior of a group that keeps none between ticks (``AifAgentGroup(keep_prior=False)``).

An agent's prior for its next observation follows from what the group keeps: its beliefs and
the action it committed (``B[:, :, a] @ qs``), or ``D`` for an agent reset since. Such a group
keeps, per agent, whether its prior is ``D`` (``reset``) and, per block, whether the tick that
committed the block's actions read its prior off the small-block planner's predictions
(``small``); each block's prior is made again at the start of the next tick, in the block's
scratch, as that tick made it: the same numbers, bit for bit.

:func:`prior_follows` says where that holds; :func:`make_block_prior` makes a block's prior;
:func:`resets_of_kept_priors` reads, a block of rows at a time, which agents of a group that kept
its priors (a snapshot from before) had ``D``; :func:`saved_small_flags` the per-block flags of a
saved group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_agent.aif import kernels
from edge_agent.core.contract import iter_rows
from edge_agent.errors import InputError

__all__ = ["make_block_prior", "prior_follows", "resets_of_kept_priors", "saved_small_flags"]


def prior_follows(
    cm: kernels.CompiledModel,
    *,
    every_tick: bool,
    block_size: int,
    dense_block_size: int,
    n_agents: int,
) -> bool:
    """Whether every block's next prior of a group of ``n_agents`` can be made again at the
    next tick, bit for bit, from the beliefs and committed actions: always under a planning
    policy (its ticks propagate every prior, :func:`kernels.propagate_block`), except on the
    joint small-block path (its planners gather priors); every tick, unless a block is planned
    by the dense tree (whose prior comes from the tree's predictions): a block of more agents
    than the small-block planner takes but within the dense capacity, of a model without a deep
    planner (with soft evidence a local planner's blocks take the tree)."""
    if cm.joint is not None:
        return False
    if not every_tick or cm.deep is not None:
        return True
    capacity = min(block_size, n_agents)
    sizes = {capacity, n_agents % capacity or capacity}
    small = min(capacity, kernels.SMALL_BLOCK) if cm.small is not None else 0
    dense = min(dense_block_size, n_agents)
    return all(nb <= small or nb > dense for nb in sizes)


def make_block_prior(
    cm: kernels.CompiledModel,
    qs: list[np.ndarray],
    actions: np.ndarray,
    prior: list[np.ndarray],
    blk: kernels.Block,
    *,
    reset: np.ndarray,
    small: bool,
) -> None:
    """The prior ``prior[f] (nb, S_f)`` of a block whose beliefs are ``qs[f] (nb, S_f)`` and
    committed actions ``actions (nb, F)``, as the tick that committed them made it: through the
    small-block planner's predictions if ``small`` (made again: the same product, the same
    numbers), else propagated; ``D`` for the agents in ``reset (nb,)``."""
    made = False
    if small and blk.small:
        kernels.small_predict(cm, qs[0], blk)
        made = kernels.small_prior_block(cm, blk, actions[:, 0], prior[0])
    if not made:
        kernels.propagate_block(cm, qs, actions, prior, blk)
    if np.count_nonzero(reset):
        # A few agents: their rows, by the mask (3 us a block of 512, where a masked copy
        # reads the whole block, 22 us, and finding their indices into scratch takes 8 us)
        for p, d in zip(prior, cm.D, strict=True):
            p[reset] = d


def resets_of_kept_priors(
    state: Mapping[str, np.ndarray],
    D: Sequence[np.ndarray],
    out: np.ndarray,
    *,
    rows: int,
    name: str,
) -> None:
    """Into ``out (N,) bool``: which agents of a saved group that kept its priors (``prior{f}``,
    every snapshot before ``keep_prior``) had the prior ``D``: theirs is ``D`` again, the others'
    follow from their beliefs and actions (the saved group made them so, if it is a group whose
    prior follows). Read ``rows`` rows at a time: no whole copy of the saved priors is made."""
    out.fill(True)
    n = out.shape[0]
    for f, d in enumerate(D):
        start = 0
        for chunk in iter_rows(state, f"prior{f}", rows):
            stop = start + len(chunk)
            if chunk.shape[1:] != d.shape or stop > n:
                raise InputError(
                    f"group {name!r} snapshot 'prior{f}' has rows of shape {chunk.shape[1:]} "
                    f"(at row {start}), expected {n} rows of {d.shape}"
                )
            np.logical_and(out[start:stop], (chunk == d).all(axis=1), out=out[start:stop])
            start = stop
        if start != n:
            raise InputError(f"group {name!r} snapshot 'prior{f}' has {start} rows, expected {n}")


def saved_small_flags(state: Mapping[str, np.ndarray], blocks: int) -> np.ndarray:
    """Per block, whether a saved group's priors come from the small-block planner's
    predictions (none where the saved blocks are not these: propagated, equal to rounding)."""
    saved = np.asarray(state["prior_small"]) if "prior_small" in state else None
    if saved is None or saved.shape != (blocks,):
        return np.zeros(blocks, dtype=np.uint8)
    return saved.astype(np.uint8)
