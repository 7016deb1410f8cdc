"""The compiled model: one model's shared, read-only compute tables, in one float dtype.

Part of :mod:`edge_agent.aif.kernels`. :func:`compile_model` decodes a float or quantized model once
(a quantized model keeps its sparse transitions sparse) and builds the general path's tables, the
policy tree, the state-major fast path's tables and, where the model suits them, those of the local
and small-block one-step planners. A learning group's refreshes bring what moved into compiled
tables without a compile: :func:`refresh_likelihood` a likelihood's touched columns,
:func:`refresh_transitions` a factor's new transitions of the same structure. The maths is
pymdp 0.0.7.1's (see :mod:`edge_agent.aif.reference`): utility is linear in the joint predicted
state, ``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``, and the information gain is
``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's ``exp(-16)`` state threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.kernels.fast_tables import (
    FastPlan,
    build_fast_plan,
    likelihood_fields,
    likelihood_table,
    refreshed_propagation,
)
from edge_agent.aif.kernels.local_plan import (
    LocalPlan,
    build_local_plan,
    local_values,
    refreshed_local,
)
from edge_agent.aif.kernels.small_plan import (
    SmallPlan,
    build_small_plan,
    refreshed_small_rows,
    refreshed_small_values,
    small_values,
)
from edge_agent.aif.kernels.transitions import (
    SparseTransition,
    Transition,
    make_transition,
    same_structure,
)
from edge_agent.aif.kernels.tree import PolicyTree, build_policy_tree
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import LogU8, QuantizedModel, SparseColumns, decode_log_u8
from edge_agent.errors import ModelError

if TYPE_CHECKING:  # the joint and deep planners' modules load only for models that have them
    from edge_agent.aif.kernels.deep_plan import DeepPlan
    from edge_agent.aif.kernels.joint_plan import JointPlan

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
    #: ``ln softmax(C_m)`` per modality and the joint outcomes ``A_joint_T`` keeps (indices into
    #: every joint outcome, C order): what :func:`refresh_likelihood` needs besides ``A``.
    lnC: tuple[np.ndarray, ...] = ()
    joint_outcomes: np.ndarray | None = None

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
    lnC = tuple(np.log(_softmax_vec(c_m) + EPS) for c_m in C)
    utility = _utility(lnC, A_flat)
    A_joint = _joint_likelihood(A_flat)
    joint_outcomes = np.flatnonzero((A_joint != 0).any(axis=1))
    A_joint = A_joint[joint_outcomes]  # outcomes no state produces add nothing
    neg_entropy = _neg_entropy(A_joint)

    def c(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=dtype)
        out.setflags(write=False)
        return out

    A_rows = tuple(c(a) for a in A_flat)
    transitions = tuple(make_transition(b, dtype) for b in B)
    tree = build_policy_tree(policies, num_controls, dtype)
    A_joint_T = c(A_joint.T)
    # The joint and deep planners' modules are imported only for a model that has them (a
    # daemon of one-factor, one-step models never loads their code: docs/memory.md).
    joint: JointPlan | None = None
    deep: DeepPlan | None = None
    if len(transitions) > 1:  # several factors: the joint small-block path
        from edge_agent.aif.kernels.joint_plan import build_joint_plan  # noqa: PLC0415

        joint = build_joint_plan(
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
        )
    elif len(tree.depths) > 1:  # one factor, policies of two or more steps: maybe deep
        from edge_agent.aif.kernels.deep_plan import build_deep_plan  # noqa: PLC0415

        deep = build_deep_plan(
            A_rows=A_rows,
            transitions=transitions,
            tree=tree,
            utility=c(utility),
            neg_entropy=c(neg_entropy),
            dtype=np.dtype(dtype),
        )
    return CompiledModel(
        lnC=lnC,
        joint_outcomes=joint_outcomes,
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
        joint=joint,
        deep=deep,
    )


def _utility(lnC: Sequence[np.ndarray], A_flat: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_m ln softmax(C_m) @ A_m`` per joint state (float64)."""
    utility = np.zeros(A_flat[0].shape[1])
    for lnC_m, a in zip(lnC, A_flat, strict=True):
        utility += lnC_m @ a
    return utility


def _joint_likelihood(A_flat: Sequence[np.ndarray]) -> np.ndarray:
    """``(O_joint, S)``: every joint outcome's likelihood, last modality fastest (pymdp's
    ``spm_cross`` order)."""
    S = A_flat[0].shape[1]
    A_joint = np.ones((1, S))
    for a in A_flat:
        A_joint = (A_joint[:, None, :] * a[None, :, :]).reshape(-1, S)
    return A_joint


def _neg_entropy(A_joint: np.ndarray) -> np.ndarray:
    out: np.ndarray = (A_joint * np.log(A_joint + EXP_M16)).sum(axis=0)
    return out


def refresh_likelihood(
    cm: CompiledModel,
    columns: np.ndarray,
    A_cols: Sequence[np.ndarray],
    *,
    moved: Sequence[bool] | None = None,
    in_place: bool = False,
) -> CompiledModel | None:
    """``cm`` with the likelihood changed only in the joint states ``columns`` (a ``(S_joint,)``
    bool mask); ``A_cols[m]`` ``(O_m, columns.sum())`` float64: modality ``m``'s new columns
    there (as :func:`compile_model` would decode them), every modality's. What the
    transitions, the policy tree and ``E`` give is kept, what ``A`` gives is updated, in the
    touched columns where a table is by joint state (``A_rows``, ``utility``, ``neg_entropy``,
    ``A_joint_T`` and the joint planner's likelihood) and gathered again where it is not (the
    outcome map, the local planner's values). Equal to ``compile_model`` of the new model up to
    rounding. ``None`` when the new ``A`` has another support in those columns (the planners'
    sparse structure follows it: compile the model again) or the model has a deep planner.

    ``moved[m]`` False: modality ``m``'s columns are those ``cm`` has (its support is not
    compared, its ``A_rows`` not written; None: every modality may have moved). ``in_place``:
    ``cm`` is the caller's own, returned by an earlier call that copied (never one another
    group may share): the tables by joint state are written in place rather than copied, and
    ``cm`` itself is returned when no planner's table had to be made anew (a refresh's cost then
    follows the columns and modalities that moved, not the model's size)."""
    cols = np.flatnonzero(columns)
    if cols.size == 0:
        return cm
    if cm.deep is not None or cm.joint_outcomes is None or not cm.lnC:
        return None
    local = cm.local
    trans = cm.transitions[0]
    if local is not None and (local.target_index is None or local.outcome_index is None
                              or not isinstance(trans, SparseTransition)):
        return None  # (before anything is written: the caller compiles in full)
    dtype = cm.dtype
    A_cols = [np.asarray(a, dtype=np.float64) for a in A_cols]
    changed = [True] * len(A_cols) if moved is None else list(moved)
    for old, new, m in zip(cm.A_rows, A_cols, changed, strict=True):
        if m and not np.array_equal(old[:, cols] != 0, new != 0):
            return None
    joint = _joint_likelihood(A_cols)
    kept = np.zeros(joint.shape[0], dtype=bool)
    kept[cm.joint_outcomes] = True
    if np.any(joint[~kept] != 0):
        return None
    joint = joint[kept]

    def updated(table: np.ndarray, values: np.ndarray, axis: int) -> np.ndarray:
        if in_place:  # the group's own table (made by an earlier copy): written where it is
            out = table
            out.setflags(write=True)
        else:
            out = np.array(table, dtype=dtype)  # the group's own copy: the old may be shared
        if axis == 1:
            out[:, cols] = values
        else:
            out[cols] = values
        out.setflags(write=False)
        return out

    A_rows = tuple(
        updated(a, new, 1) if m or not in_place else a
        for a, new, m in zip(cm.A_rows, A_cols, changed, strict=True)
    )
    if all(a is b for a, b in zip(A_rows, cm.A_rows, strict=True)):
        A_rows = cm.A_rows
    utility = updated(cm.utility, _utility(cm.lnC, A_cols), 0)
    neg_entropy = updated(cm.neg_entropy, _neg_entropy(joint), 0)
    A_joint_T = updated(cm.A_joint_T, joint.T, 0)
    fast = cm.fast
    lnL_T = fast.lnL_T
    lnL_cols = None  # the touched columns' log likelihood, made once for the fast and joint paths
    if lnL_T is not None or cm.joint is not None:
        lnL_cols = likelihood_table(tuple(a[:, cols] for a in A_rows), dtype)
    if lnL_T is not None and lnL_cols is not None:
        lnL_T = updated(lnL_T, lnL_cols.T, 0)
    if not (in_place and fast.outcome_map is None and fast.A_eps is None):
        # (written in place with no outcome map and no A_eps, the plan's other fields are
        # views of the tables above: they follow them)
        fast = replace(
            fast, lnL_T=lnL_T,
            **likelihood_fields(A_rows, A_joint_T, utility, neg_entropy, dtype, same_support=fast),
        )
    if (local is not None and local.target_index is not None
            and local.outcome_index is not None and isinstance(trans, SparseTransition)):
        local = replace(local, **local_values(
            local.target_index, local.outcome_index, local.node_action, A=A_rows[0],
            trans=trans, utility=utility.astype(np.float64),
            neg_entropy=neg_entropy.astype(np.float64), dtype=dtype,
        ))
    small = cm.small
    if small is not None:
        small = replace(small, **refreshed_small_values(
            small, tree=cm.tree, A_joint_T=A_joint_T, utility=utility.astype(np.float64),
            neg_entropy=neg_entropy.astype(np.float64), dtype=dtype,
        ))
    joint_plan = cm.joint
    if joint_plan is not None and lnL_cols is not None:
        lnL_table = updated(joint_plan.lnL_table, lnL_cols, 1)
        AT_ext = updated(joint_plan.AT_ext,
                         np.concatenate([A_joint_T[cols], neg_entropy[cols, None]], axis=1), 0)
        if not (in_place and joint_plan.utility is utility):
            joint_plan = replace(joint_plan, lnL_table=lnL_table, utility=utility, AT_ext=AT_ext)
    if in_place and all(mine is theirs for mine, theirs in (
        (A_rows, cm.A_rows), (utility, cm.utility), (neg_entropy, cm.neg_entropy),
        (A_joint_T, cm.A_joint_T), (fast, cm.fast), (local, cm.local), (small, cm.small),
        (joint_plan, cm.joint),
    )):
        return cm  # every table written where it was
    return replace(
        cm, A_rows=A_rows, utility=utility, neg_entropy=neg_entropy, A_joint_T=A_joint_T,
        fast=fast, local=local, small=small, joint=joint_plan,
    )


def refresh_transitions(
    cm: CompiledModel,
    transitions: Sequence[Transition | None],
    columns: Sequence[np.ndarray | None] | None = None,
) -> CompiledModel | None:
    """``cm`` with the transitions changed: ``transitions[f]`` factor ``f``'s new ones (as
    :func:`~edge_agent.aif.kernels.transitions.make_transition` makes them from the new table),
    None where a factor's did not change; ``columns[f]`` (``(S_f, U_f)``: source state, action;
    None: any) the columns in which they changed. What the likelihood, the policy tree and ``E``
    give is kept; what a changed factor's transitions give is made again from them: its
    propagation at every depth of the fast path and its agent-major tables, the local planner's
    prediction weights and utility by source, the small-block planner's rows of the changed
    columns' sources, the joint planner's transition tables. Equal to ``compile_model`` of the
    new model up to rounding. The tables another group may share are never written: a changed
    table is a new one.

    ``None`` when the new transitions have another structure than the old (dense against
    sparse, or other non-zeros in a sparse one: the index maps, the planners' slots and the
    scratch sizes follow it; compile the model again), when the joint planner's distinct nodes
    change with them (nodes whose action prefixes predicted alike may no longer), or when the
    model has a deep planner (deterministic transitions only)."""
    changed = [f for f, t in enumerate(transitions) if t is not None]
    if not changed:
        return cm
    if cm.deep is not None:
        return None
    new = list(cm.transitions)
    for f in changed:
        trans = transitions[f]
        assert trans is not None
        if not same_structure(cm.transitions[f], trans):
            return None
        new[f] = trans
    dtype = cm.dtype
    utility64 = cm.utility.astype(np.float64)
    negH64 = cm.neg_entropy.astype(np.float64)
    joint = old = cm.joint
    if old is not None:
        from edge_agent.aif.kernels.joint_plan import build_joint_plan  # noqa: PLC0415

        joint = build_joint_plan(
            num_states=cm.num_states, num_controls=cm.num_controls, A_rows=cm.A_rows,
            transitions=tuple(new), tree=cm.tree, A_joint_T=cm.A_joint_T, utility=utility64,
            neg_entropy=negH64, lnE=cm.lnE, dtype=dtype,
        )  # fmt: skip
        if joint is None or not _same_nodes(joint, old):
            return None
    fast = refreshed_propagation(cm.fast, cm.tree, {f: new[f] for f in changed}, dtype)
    local, small = cm.local, cm.small
    trans = new[0]
    if local is not None:
        if local.target_index is None or local.outcome_index is None:
            return None
        assert isinstance(trans, SparseTransition)  # (its structure is the old one's)
        local = refreshed_local(local, trans, A=cm.A_rows[0], utility=utility64,
                                neg_entropy=negH64, dtype=dtype)  # fmt: skip
    if small is not None:
        moved = None if columns is None else columns[0]
        if moved is None:
            small = replace(small, **small_values(
                trans=trans, tree=cm.tree, A_joint_T=cm.A_joint_T, utility=utility64,
                neg_entropy=negH64, dtype=dtype,
            ))  # fmt: skip
        else:
            small = replace(small, BT_nodes=refreshed_small_rows(
                small, tree=cm.tree, trans=trans, columns=moved, utility=utility64, dtype=dtype,
            ))  # fmt: skip
    return replace(cm, transitions=tuple(new), fast=fast, local=local, small=small, joint=joint)


def _same_nodes(new: JointPlan, old: JointPlan) -> bool:
    """Whether two joint plans evaluate the same distinct nodes (their scratch and layout)."""
    return (new.num_nodes, new.factor_nodes) == (old.num_nodes, old.factor_nodes) and all(
        np.array_equal(a, b) for a, b in zip(new.node_factor, old.node_factor, strict=True)
    )


def _softmax_vec(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out
