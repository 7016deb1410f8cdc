"""Per-agent propagation, agent-major: ``B[:, :, a_n] @ q[n]`` for every agent of a block.

Part of :mod:`edge_agent.aif.kernels`. :func:`propagate_block` computes the next prior of a block
of agents in the fast paths (sparse ``B`` through the
:class:`~edge_agent.aif.kernels.fast_tables.AgentPropagation` tables of the model's fast plan,
dense ``B`` through :func:`~edge_agent.aif.kernels.transitions.propagate_per_agent`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels.transitions import propagate_per_agent
from edge_agent.aif.kernels.workspace import CHUNK_ROWS

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.fast_tables import AgentPropagation
    from edge_agent.aif.kernels.workspace import Block, PropagationViews


# --------------------------------------------------------------------------------------------
# per-agent propagation, agent-major
# --------------------------------------------------------------------------------------------
def propagate_agents(
    ap: AgentPropagation, q: np.ndarray, actions: np.ndarray, out: np.ndarray, blk: Block
) -> None:
    """``out[n] = B[:, :, actions[n]] @ q[n]`` for C-contiguous ``q`` and ``out`` ``(nb, S)``,
    ``CHUNK_ROWS`` agents at a time."""
    nb, S = q.shape
    step = CHUNK_ROWS
    if nb <= step:
        _propagate_rows(ap, q, actions, out, blk.propagation_views(S, ap.extra_widths, nb))
        return
    for start in range(0, nb, step):
        stop = min(nb, start + step)
        views = blk.propagation_views(S, ap.extra_widths, stop - start)
        _propagate_rows(ap, q[start:stop], actions[start:stop], out[start:stop], views)


def _propagate_rows(
    ap: AgentPropagation,
    q: np.ndarray,
    actions: np.ndarray,
    out: np.ndarray,
    views: PropagationViews,
) -> None:
    """:func:`propagate_agents` of the rows of ``q`` and ``out``, in ``views`` shaped for
    them."""
    flat_q = q.reshape(-1)
    starts, idx, w, extra = views
    ap.first_src.take(actions, axis=0, out=idx, mode="clip")
    np.add(idx, starts, out=idx)
    flat_q.take(idx, out=out, mode="clip")
    if ap.first_w is not None:
        ap.first_w.take(actions, axis=0, out=w, mode="clip")
        np.multiply(out, w, out=out)
    flat_out = out.reshape(-1)
    for (tgt, src, weight), (offsets, ti, si, vals, cur) in zip(ap.extra, extra, strict=True):
        tgt.take(actions, axis=0, out=ti, mode="clip")
        np.add(ti, offsets, out=ti)
        src.take(actions, axis=0, out=si, mode="clip")
        np.add(si, offsets, out=si)
        flat_q.take(si, out=vals, mode="clip")
        weight.take(actions, axis=0, out=cur, mode="clip")
        np.multiply(vals, cur, out=vals)
        flat_out.take(ti, out=cur, mode="clip")
        np.add(cur, vals, out=cur)
        flat_out[ti] = cur


def propagate_block(
    cm: CompiledModel,
    qs: list[np.ndarray],
    actions: np.ndarray,
    prior: list[np.ndarray],
    blk: Block,
) -> None:
    """Next prior ``prior[f] (nb, S_f) = B[f][:, :, actions[:, f]] @ qs[f]`` per agent."""
    for f, ap in enumerate(cm.fast.agent_propagation):
        a = actions[:, f]
        if ap is None:
            prior[f][...] = propagate_per_agent(cm.transitions[f], qs[f], a)
        else:  # a column of (nb, 1) actions is contiguous already: no copy, no call
            propagate_agents(
                ap, qs[f], a if a.flags.c_contiguous else np.ascontiguousarray(a), prior[f], blk
            )
