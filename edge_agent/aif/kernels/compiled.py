"""The compiled model: one model's shared, read-only compute tables, in one float dtype.

Part of :mod:`edge_agent.aif.kernels`. :func:`compile_model` decodes a float or quantized model once
(a quantized model keeps its sparse transitions sparse) and builds the general path's tables, the
policy tree, the state-major fast path's tables and, where the model suits them, those of the local
and small-block one-step planners. The maths is pymdp 0.0.7.1's (see
:mod:`edge_agent.aif.reference`): utility is linear in the joint predicted state,
``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``, and the information gain is
``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's ``exp(-16)`` state threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_agent.aif.kernels.deep_plan import DeepPlan, build_deep_plan
from edge_agent.aif.kernels.fast_tables import FastPlan, build_fast_plan
from edge_agent.aif.kernels.joint_plan import JointPlan, build_joint_plan
from edge_agent.aif.kernels.local_plan import LocalPlan, build_local_plan
from edge_agent.aif.kernels.small_plan import SmallPlan, build_small_plan
from edge_agent.aif.kernels.transitions import Transition, make_transition
from edge_agent.aif.kernels.tree import PolicyTree, build_policy_tree
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import LogU8, QuantizedModel, SparseColumns, decode_log_u8
from edge_agent.aif.reference import EPS, EXP_M16
from edge_agent.errors import ModelError

#: Joint outcome x joint state tables larger than this are refused (memory of the info gain).
MAX_JOINT_TABLE = 1 << 24


# --------------------------------------------------------------------------------------------
# the compiled model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CompiledModel:
    """Shared, read-only compute tables for one model, in one float dtype.

    Built once per model (``compile_model``); every agent group on that model shares it, and its
    ``nbytes`` is what the memory budget counts once per model.
    """

    dtype: np.dtype[np.floating]
    num_obs: tuple[int, ...]
    num_states: tuple[int, ...]
    num_controls: tuple[int, ...]
    #: ``A_rows[m][o]`` is ``A[m][o]`` flattened over the joint state: (O_m, S_joint).
    A_rows: tuple[np.ndarray, ...]
    transitions: tuple[Transition, ...]
    D: tuple[np.ndarray, ...]
    lnE: np.ndarray  # (P,)
    #: Utility per joint state: sum_m A_m^T ln softmax(C_m).  (S_joint,)
    utility: np.ndarray
    #: sum_o p(o|s) ln(p(o|s) + e^-16) over joint outcomes, per joint state.  (S_joint,)
    neg_entropy: np.ndarray
    #: Joint outcome likelihood, transposed: (S_joint, O_possible). Only the joint outcomes that
    #: some state can produce: a row of zeros adds exactly nothing to ``H[q(o)]`` (``0 * ln eps``)
    #: or to ``negH`` (T-maze: 12 of 24 joint outcomes are kept, grid2f 78 of 150).
    A_joint_T: np.ndarray
    tree: PolicyTree
    #: The state-major tables of the fast path (built from the fields above).
    fast: FastPlan
    #: The local one-step planner's tables, when the model suits it (see LocalPlan).
    local: LocalPlan | None
    #: The small-block planner's tables, when the model suits it (see SmallPlan).
    small: SmallPlan | None
    #: The joint small-block path's stacked-factor tables (multi-factor models; see JointPlan).
    joint: JointPlan | None = None
    #: The deep planner's tables (policies of 2+ steps, deterministic B; see DeepPlan).
    deep: DeepPlan | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def num_factors(self) -> int:
        return len(self.num_states)

    @property
    def num_modalities(self) -> int:
        return len(self.num_obs)

    @property
    def num_policies(self) -> int:
        return int(self.tree.policies.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of every shared table (the budget's per-model charge)."""
        arrays = [*self.A_rows, *self.D, self.lnE, self.utility, self.neg_entropy, self.A_joint_T]
        return int(
            sum(a.nbytes for a in arrays)
            + sum(t.nbytes for t in self.transitions)
            + self.tree.nbytes
            + self.fast.nbytes
            + (0 if self.local is None else self.local.nbytes)
            + (0 if self.small is None else self.small.nbytes)
            + (0 if self.joint is None else self.joint.nbytes)
            + (0 if self.deep is None else self.deep.nbytes)
        )


def compile_model(
    model: GenerativeModel | QuantizedModel,
    policies: np.ndarray,
    *,
    dtype: type[np.floating] = np.float64,
    E: np.ndarray | None = None,
) -> CompiledModel:
    """Precompute the batched kernels' tables from a float or quantized model.

    A quantized model keeps its sparse transitions sparse; everything else is decoded once.
    """
    if isinstance(model, QuantizedModel):
        A = [decode_log_u8(a) for a in model.A]
        B: list[np.ndarray | LogU8 | SparseColumns] = list(model.B)
        dq = model.dequantize()
        C, D = list(dq.C), list(dq.D)
        E_model = dq.E
    else:
        A, B, C, D, E_model = list(model.A), list(model.B), list(model.C), list(model.D), model.E
    num_obs = tuple(a.shape[0] for a in A)
    num_states = tuple(d.shape[0] for d in D)
    num_controls = model.num_controls
    S_joint = int(np.prod(num_states))
    O_joint = int(np.prod(num_obs))
    if S_joint * O_joint > MAX_JOINT_TABLE:
        raise ModelError(
            f"joint outcome table {O_joint} x {S_joint} exceeds {MAX_JOINT_TABLE} entries; "
            "the information gain over joint outcomes would not fit on a small device"
        )
    P = policies.shape[0]
    E_used = E if E is not None else E_model
    if E_used is not None and E_used.shape != (P,):
        raise ModelError(f"E has {E_used.shape[0]} entries but there are {P} policies")
    lnE = np.log((E_used if E_used is not None else np.full(P, 1.0 / P)) + EPS)

    A_flat = [a.reshape(a.shape[0], S_joint) for a in A]
    utility = np.zeros(S_joint)
    for a, c_m in zip(A_flat, C, strict=True):
        lnC = np.log(_softmax_vec(c_m) + EPS)
        utility += lnC @ a
    A_joint = np.ones((1, S_joint))
    for a in A_flat:  # joint over modalities, last modality fastest (pymdp's spm_cross order)
        A_joint = (A_joint[:, None, :] * a[None, :, :]).reshape(-1, S_joint)
    A_joint = A_joint[(A_joint != 0).any(axis=1)]  # outcomes no state produces add nothing
    neg_entropy = (A_joint * np.log(A_joint + EXP_M16)).sum(axis=0)

    def c(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=dtype)
        out.setflags(write=False)
        return out

    A_rows = tuple(c(a) for a in A_flat)
    transitions = tuple(make_transition(b, dtype) for b in B)
    tree = build_policy_tree(policies, num_controls, dtype)
    A_joint_T = c(A_joint.T)
    return CompiledModel(
        dtype=np.dtype(dtype),
        num_obs=num_obs,
        num_states=num_states,
        num_controls=num_controls,
        A_rows=A_rows,
        transitions=transitions,
        D=tuple(c(d) for d in D),
        lnE=c(lnE),
        utility=c(utility),
        neg_entropy=c(neg_entropy),
        A_joint_T=A_joint_T,
        tree=tree,
        fast=build_fast_plan(
            lnE=c(lnE),
            A_rows=A_rows,
            transitions=transitions,
            tree=tree,
            A_joint_T=A_joint_T,
            utility=c(utility),
            neg_entropy=c(neg_entropy),
            dtype=np.dtype(dtype),
        ),
        local=None
        if len(A_rows) > 1 or len(transitions) > 1
        else build_local_plan(
            A=A_rows[0],
            trans=transitions[0],
            tree=tree,
            utility=utility,
            neg_entropy=neg_entropy,
            dtype=np.dtype(dtype),
        ),
        small=None
        if len(transitions) > 1
        else build_small_plan(
            trans=transitions[0],
            tree=tree,
            A_joint_T=A_joint_T,
            utility=utility,
            neg_entropy=neg_entropy,
            dtype=np.dtype(dtype),
        ),
        joint=None
        if len(transitions) < 2
        else build_joint_plan(
            num_states=num_states,
            num_controls=num_controls,
            A_rows=A_rows,
            transitions=transitions,
            tree=tree,
            A_joint_T=A_joint_T,
            utility=utility,
            neg_entropy=neg_entropy,
            lnE=c(lnE),
            dtype=np.dtype(dtype),
        ),
        deep=build_deep_plan(
            A_rows=A_rows,
            transitions=transitions,
            tree=tree,
            utility=c(utility),
            neg_entropy=c(neg_entropy),
            dtype=np.dtype(dtype),
        ),
    )


def _softmax_vec(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out
