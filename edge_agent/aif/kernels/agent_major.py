"""Per-agent propagation, agent-major: ``B[:, :, a_n] @ q[n]`` for every agent of a block.

Part of :mod:`edge_agent.aif.kernels`. :func:`propagate_block` computes the next prior of a block
of agents in the fast paths (sparse ``B`` through :class:`AgentPropagation` tables, dense ``B``
through :func:`~edge_agent.aif.kernels.transitions.propagate_per_agent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels._types import IndexArray
from edge_agent.aif.kernels.transitions import SparseTransition, propagate_per_agent

if TYPE_CHECKING:
    from edge_agent.aif.kernels.compiled import CompiledModel
    from edge_agent.aif.kernels.workspace import Block


# --------------------------------------------------------------------------------------------
# per-agent propagation, agent-major
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AgentPropagation:
    """``B[:, :, a_n] @ q[n]`` for every agent of a block, for a sparse ``B``, agent-major.

    ``SparseTransition``'s layers padded per action: ``first_src (U, S)`` is each target's first
    source (0 where it has none) and ``first_w (U, S)`` its weight (0 where none; ``None`` when
    every weight is 1); each extra layer is ``(tgt, src, w)`` of shape ``(U, E)``, padded with
    weight 0 on targets the action's layer does not use (so targets never repeat in a row). Same
    additions, in the same order, as :func:`propagate`.
    """

    first_src: IndexArray
    first_w: np.ndarray | None
    extra: tuple[tuple[IndexArray, IndexArray, np.ndarray], ...]

    @property
    def max_extra(self) -> int:
        return max((t.shape[1] for t, _, _ in self.extra), default=0)

    @property
    def nbytes(self) -> int:
        total = self.first_src.nbytes + (0 if self.first_w is None else self.first_w.nbytes)
        return int(total + sum(t.nbytes + s.nbytes + w.nbytes for t, s, w in self.extra))


def agent_propagation(trans: SparseTransition, dtype: np.dtype[np.floating]) -> AgentPropagation:
    """Pad a sparse transition's per-action layers into :class:`AgentPropagation` tables."""
    S = trans.num_states
    U = len(trans.layers)
    first_src = np.zeros((U, S), dtype=np.intp)
    first_w = np.zeros((U, S), dtype=dtype)
    depth = max((len(layers) for layers in trans.layers), default=0)
    extra = []
    for u, layers in enumerate(trans.layers):
        if layers:
            tgt, src, w = layers[0]
            first_src[u, tgt] = src
            first_w[u, tgt] = 1 if w is None else w
    for ell in range(1, depth):
        E = max(len(layers[ell][0]) if len(layers) > ell else 0 for layers in trans.layers)
        tgt_tab = np.zeros((U, E), dtype=np.intp)
        src_tab = np.zeros((U, E), dtype=np.intp)
        w_tab = np.zeros((U, E), dtype=dtype)
        for u, layers in enumerate(trans.layers):
            used = layers[ell][0] if len(layers) > ell else np.zeros(0, dtype=np.intp)
            pad = np.setdiff1d(np.arange(S), used)[: E - len(used)]  # E <= S: enough targets
            tgt_tab[u] = np.concatenate([used, pad])
            if len(layers) > ell:
                _, src, w = layers[ell]
                src_tab[u, : len(src)] = src
                w_tab[u, : len(src)] = 1 if w is None else w
        extra.append((tgt_tab, src_tab, w_tab))
    for arr in (first_src, first_w, *(a for layer in extra for a in layer)):
        arr.setflags(write=False)
    all_ones = bool(np.all(first_w == 1))
    return AgentPropagation(
        first_src=first_src, first_w=None if all_ones else first_w, extra=tuple(extra)
    )


def propagate_agents(
    ap: AgentPropagation, q: np.ndarray, actions: np.ndarray, out: np.ndarray, blk: Block
) -> None:
    """``out[n] = B[:, :, actions[n]] @ q[n]`` for C-contiguous ``q`` and ``out`` ``(nb, S)``."""
    nb, S = q.shape
    flat_q = q.reshape(-1)
    starts = blk.row_start(S)[:, None]
    idx = blk.view(blk.p_idx, nb, S)
    ap.first_src.take(actions, axis=0, out=idx)
    np.add(idx, starts, out=idx)
    flat_q.take(idx, out=out)
    if ap.first_w is not None:
        w = blk.view(blk.p_val, nb, S)
        ap.first_w.take(actions, axis=0, out=w)
        np.multiply(out, w, out=out)
    flat_out = out.reshape(-1)
    for tgt, src, weight in ap.extra:
        E = tgt.shape[1]
        ti, si = blk.view(blk.p_idx, nb, E), blk.view(blk.p_idx2, nb, E)
        vals, cur = blk.view(blk.p_val, nb, E), blk.view(blk.p_val2, nb, E)
        tgt.take(actions, axis=0, out=ti)
        np.add(ti, starts, out=ti)
        src.take(actions, axis=0, out=si)
        np.add(si, starts, out=si)
        flat_q.take(si, out=vals)
        weight.take(actions, axis=0, out=cur)
        np.multiply(vals, cur, out=vals)
        flat_out.take(ti, out=cur)
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
        else:
            propagate_agents(ap, qs[f], np.ascontiguousarray(a), prior[f], blk)
