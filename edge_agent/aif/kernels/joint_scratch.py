"""Scratch of the joint small-block path: its per-agent layout and its views for one block.

Part of :mod:`edge_agent.aif.kernels`. :func:`joint_layout` says how many elements per agent each
buffer needs; the :class:`~edge_agent.aif.kernels.workspace.Workspace` allocates them (sized for
the small blocks) and :class:`JointScratch` makes every view the kernels of
:mod:`~edge_agent.aif.kernels.joint_small` use, once per block size, so a tick reshapes nothing.
"""

from __future__ import annotations

import numpy as np

from edge_agent.aif.kernels.joint_plan import JointPlan


def joint_layout(plan: JointPlan) -> dict[str, tuple[int, np.dtype[np.generic]]]:
    """Elements *per agent* of every buffer of :class:`JointScratch`, and its dtype."""
    fdt: np.dtype[np.generic] = plan.dtype
    i64: np.dtype[np.generic] = np.dtype(np.int64)
    Sj, W, K, n_out = plan.num_joint_states, plan.width, plan.num_nodes, plan.num_outcomes
    F = plan.num_factors
    out: dict[str, tuple[int, np.dtype[np.generic]]] = {
        "oidx": (1, i64),
        "lnL": (Sj, fdt),
        "joint": (Sj, fdt),
        "joint_tmp": (Sj if F > 2 else 0, fdt),
        "W": (Sj, fdt),
        "R": (W + 1, fdt),
        "Qa": (W, fdt),
        "Qb": (W, fdt),
        "lp": (W, fdt),
        "t": (W, fdt),
        "Z": (W, fdt),
        "ent": (1, fdt),
        "prev": (1, fdt),
        "vfe": (1, fdt),
        "dF": (1, fdt),
        "d": (1, fdt),
        "active": (1, np.dtype(np.bool_)),
        "PF": (int(plan.B_nodes.shape[1]), fdt),
        "util": (K, fdt),
        "pred": (K * Sj, fdt),
        "pred_tmp": (K * Sj if F > 2 else 0, fdt),
        "mask": (K * Sj, np.dtype(np.bool_)),
        "M": (K * Sj, fdt),
        "QO": (K * (n_out + 1), fdt),
        "LQ": (K * n_out, fdt),
        "H": (K, fdt),
        "vals": (K if plan.node_policy is not None else 0, fdt),
        "col": (1, fdt),
        "marg": (F * max(plan.num_controls), fdt),
        "ibuf": (F, np.dtype(np.intp)),
        "PB": (int(plan.BS.shape[1]), fdt),
        "pidx": (W, i64),
        "prior": (W, fdt),
    }
    for f, s in enumerate(plan.num_states):
        out[f"gathered{f}"] = (K * s if plan.gathers(f) else 0, fdt)
    return {k: v for k, v in out.items() if v[0] > 0}


class JointScratch:
    """Views of the joint path's buffers for a block of ``nb`` agents (made once per size).

    ``flat[name]`` is the buffer of :func:`joint_layout`'s ``name``, for at least ``nb`` agents.
    """

    def __init__(self, plan: JointPlan, flat: dict[str, np.ndarray], nb: int) -> None:
        Sj, W = plan.num_joint_states, plan.width
        S, offs = plan.num_states, plan.offsets
        F = len(S)

        def shaped(name: str, *shape: int) -> np.ndarray:
            return flat[name][: int(np.prod(shape))].reshape(shape)

        self.nb = nb
        self.oidx = shaped("oidx", nb)
        self.lnL = shaped("lnL", nb, Sj)
        self.joint = shaped("joint", nb, Sj)
        self.W = shaped("W", nb, Sj)
        self.R = shaped("R", nb, W + 1)
        self.marg = self.R[:, :W]
        self.total = self.R[:, W]
        self.Q = (shaped("Qa", nb, W), shaped("Qb", nb, W))
        self.current = 0  # which of Q holds the posterior (set by infer_joint)
        #: Per stacked buffer: the per-factor column blocks ``(nb, S_f)``.
        self.parts = tuple(tuple(q[:, offs[f] : offs[f + 1]] for f in range(F)) for q in self.Q)
        #: Per stacked buffer: the products that make the joint (see _outer_ops), in order.
        self.outer = tuple(
            _outer_ops(parts, flat, "joint", "joint_tmp", lead=(nb,)) for parts in self.parts
        )
        self.lp = shaped("lp", nb, W)
        self.lp_parts = tuple(self.lp[:, offs[f] : offs[f + 1]] for f in range(F))
        self.t = shaped("t", nb, W)
        self.Z = shaped("Z", nb, W)
        self.ent = shaped("ent", nb)
        self.prev = shaped("prev", nb)
        self.vfe = shaped("vfe", nb)
        self.dF = shaped("dF", nb)
        self.d = shaped("d", nb)
        self.active = shaped("active", nb)
        self.active_col = self.active.reshape(nb, 1)
        self._node_views(plan, flat, nb)
        self.col = shaped("col", nb, 1)
        U_max = max(plan.num_controls)
        self.marg_pad = shaped("marg", nb, F * U_max)
        self.marg3 = self.marg_pad.reshape(nb, F, U_max)
        self.ibuf = shaped("ibuf", nb, F)
        self.PB = shaped("PB", nb, int(plan.BS.shape[1]))
        self.PB_flat = self.PB.reshape(-1)
        self.pidx = shaped("pidx", nb, W)
        #: Flat offset in ``PB`` of action 0's prediction of each stacked column, per agent.
        self.prior_base = (
            np.arange(nb, dtype=np.int64)[:, None] * self.PB.shape[1] + plan.prior_base[None, :]
        )
        self.prior = shaped("prior", nb, W)
        self.prior_parts = tuple(self.prior[:, offs[f] : offs[f + 1]] for f in range(F))

    def _node_views(self, plan: JointPlan, flat: dict[str, np.ndarray], nb: int) -> None:
        """The views of :func:`~edge_agent.aif.kernels.joint_small.evaluate_joint`."""
        Sj, K, n_out = plan.num_joint_states, plan.num_nodes, plan.num_outcomes
        S = plan.num_states
        F = len(S)

        def shaped(name: str, *shape: int) -> np.ndarray:
            return flat[name][: int(np.prod(shape))].reshape(shape)

        self.PF = shaped("PF", nb, int(plan.B_nodes.shape[1]))
        #: Per factor, its distinct nodes' predicted states ``(nb, K_f, S_f)`` (views of PF).
        starts = np.cumsum([0, *(k * s for k, s in zip(plan.factor_nodes, S, strict=True))])
        self.PF_parts = tuple(
            self.PF[:, starts[f] : starts[f + 1]].reshape(nb, plan.factor_nodes[f], S[f])
            for f in range(F)
        )
        # Each factor's predicted states of every node: the factor's own nodes as they are (one
        # per node, in order), broadcast (a single node), or gathered (``gather``: part, index,
        # out).
        sources, gather = [], []
        for f, (part, nodes) in enumerate(zip(self.PF_parts, plan.node_factor, strict=True)):
            if not plan.gathers(f):  # in node order, or one node broadcast over the nodes
                sources.append(part)
            else:
                out = shaped(f"gathered{f}", nb, K, S[f])
                gather.append((part, nodes, out))
                sources.append(out)
        self.gather = tuple(gather)
        self.pred = shaped("pred", nb, K * Sj)
        self.pred_rows = self.pred.reshape(nb * K, Sj)
        self.pred_ops = _outer_ops(tuple(sources), flat, "pred", "pred_tmp", lead=(nb, K))
        self.util = shaped("util", nb, K)
        self.util_rows = self.util.reshape(nb * K)
        self.mask = shaped("mask", nb, K * Sj)
        self.M = shaped("M", nb, K * Sj)
        self.M_rows = self.M.reshape(nb * K, Sj)
        self.QO = shaped("QO", nb * K, n_out + 1)
        self.qo = self.QO[:, :n_out]
        self.negH = self.QO[:, n_out].reshape(nb, K)
        self.LQ = shaped("LQ", nb * K, n_out)
        self.H_rows = shaped("H", nb * K)
        self.H = self.H_rows.reshape(nb, K)
        self.vals = shaped("vals", nb, K) if "vals" in flat else None


def _outer_ops(
    parts: tuple[np.ndarray, ...],
    flat: dict[str, np.ndarray],
    name: str,
    tmp: str,
    *,
    lead: tuple[int, ...],
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """The products that make the outer product of ``parts[f] (*lead, S_f)`` (or broadcastable
    to it) over the last axis into buffer ``name`` (``tmp`` holds the intermediate ones for
    F > 2): ``(a, b, out)`` each, ``out = a * b`` with ``a (..., size, 1)`` and ``b (..., 1,
    S_f)``; last factor fastest."""
    F = len(parts)
    n = int(np.prod(lead))
    ops = []
    cur = parts[0]
    size = cur.shape[-1]
    for f in range(1, F):
        s = parts[f].shape[-1]
        buf = name if (F - 1 - f) % 2 == 0 else tmp
        dst = flat[buf][: n * size * s].reshape(*lead, size, s)
        ops.append((cur[..., :, None], parts[f][..., None, :], dst))
        cur = dst.reshape(*lead, size * s)
        size *= s
    return tuple(ops)
