"""Batched Active Inference kernels: pure functions on arrays of many agents.

Every function here takes all its inputs (and, on the fast path, its scratch buffers) as arguments;
no I/O, no clock, no logging, no Python loop over agents (loops run over factors, modalities,
policy-tree depths, action values and sparse-table layers, which are model constants). The maths is
pymdp 0.0.7.1's (see :mod:`edge_agent.aif.reference`), rearranged for batches:

* single-factor inference ``softmax(ln(L + eps) + ln(prior + eps))`` is computed as the
  equivalent normalised product ``(L + eps) * (prior + eps) / Z``;
* multi-factor inference runs pymdp's simultaneous fixed-point updates with a per-agent
  convergence mask, so each agent stops exactly when pymdp would;
* expected free energy is evaluated on a policy *tree*: policies sharing a prefix share the
  predicted states of that prefix, and each factor is propagated separately (mean field);
* utility is linear in the joint predicted state, ``G_util = q(s) . sum_m A_m^T ln softmax(C_m)``,
  and the information gain is ``q(s) . negH(s) - H[q(o)]`` over joint outcomes, with pymdp's
  ``exp(-16)`` state threshold.

Two implementations of the same maths live here:

* the **general path** (:func:`infer_states`, :func:`evaluate_policies`, :func:`next_prior`, ...)
  works on agent-major ``(n_agents, ...)`` arrays and allocates its results. It is short and
  readable, and the unit tests use it as the yardstick for the fast paths;
* the **fast paths** work on one block of agents at a time and write into the preallocated
  buffers of a :class:`Workspace` (nothing is allocated per tick). They compute the same sums in
  another order and layout, so they agree with the general path to rounding
  (``tests/unit/aif/kernels/test_kernels.py``). Their gathers into those buffers are ``take(...,
  out=..., mode="clip")``: with numpy's default ``mode="raise"`` a gather with ``out`` goes through
  a temporary the size of ``out`` (an allocation per call, up to a megabyte, and 2.5-3x the time
  of the gather), and every index is in range by construction (compiled tables, selected
  actions, observations checked by ``GroupInputs.obs``).
  :class:`~edge_agent.core.agents.AifAgentGroup` runs them:

  - :func:`infer_block`: state inference, one factor agent-major, several factors state-major;
    :func:`surprise_block` after it: each agent's ``-ln p(o)`` (a planning policy's trigger);
  - :func:`evaluate_block`: the policy tree in a *state-major* layout (agent index last), any
    model, any horizon; sparse tables become row gathers (:class:`RowMap`) or shifted slices
    (:class:`Diagonals`);
  - :func:`evaluate_local_block`: one-step policies of a one-factor, one-modality model whose
    likelihood rows are sparse (a grid world), evaluated only on the few states and outcomes the
    last observation leaves possible (:class:`LocalPlan`); agents it cannot serve exactly are
    reported and go to :func:`evaluate_block`;
  - :func:`evaluate_small_block`: one-step policies of a one-factor model for blocks of a few
    agents, with a few dense products (:class:`SmallPlan`): fewest numpy calls;
  - :func:`select_block`, :func:`prior_block`, :func:`small_prior_block`,
    :func:`propagate_block`: action selection and the next prior;
  - :func:`infer_joint`, :func:`evaluate_joint`, :func:`posterior_joint`, :func:`select_joint`,
    :func:`prior_joint`: a whole tick of a multi-factor model for blocks of a few agents, the
    factors stacked side by side (:class:`JointPlan`): a few calls per fixed-point iteration
    and per stage whatever the number of factors.

The code lives in one module per stage; this package re-exports what the rest of the project uses:

* :mod:`~edge_agent.aif.kernels.transitions`: one factor's ``B``, dense or column-sparse, and
  :func:`propagate` through it;
* :mod:`~edge_agent.aif.kernels.tree`: the policy tree (shared prefixes, per factor and joint);
* :mod:`~edge_agent.aif.kernels.compiled`: :class:`CompiledModel`, :func:`compile_model`,
  :func:`refresh_likelihood` (a learned likelihood's touched columns brought in, no compile) and
  :func:`refresh_transitions` (a factor's new transitions of the same structure, no compile);
* :mod:`~edge_agent.aif.kernels.inference`: state inference on the general path;
* :mod:`~edge_agent.aif.kernels.control`: expected free energy, policy posterior, action
  selection and the next prior on the general path;
* :mod:`~edge_agent.aif.kernels.fast_tables`: the state-major fast path's tables (``RowMap``,
  ``Diagonals``, ``FastPlan``) and the per-agent propagation tables (``AgentPropagation``);
* :mod:`~edge_agent.aif.kernels.local_plan`, :mod:`~edge_agent.aif.kernels.small_plan`: the
  tables of the local and small-block one-step planners (:class:`LocalPlan`, :class:`SmallPlan`),
  built at compile time;
* :mod:`~edge_agent.aif.kernels.workspace`: the fast paths' scratch buffers (:class:`Workspace`,
  :class:`Block`);
* :mod:`~edge_agent.aif.kernels.columns`: column operations the fast-path kernels share;
* :mod:`~edge_agent.aif.kernels.block`: the state-major kernels (:func:`infer_block`,
  :func:`evaluate_block`, :func:`select_block`, :func:`prior_block`);
* :mod:`~edge_agent.aif.kernels.agent_major`: per-agent propagation of a block
  (:func:`propagate_block`);
* :mod:`~edge_agent.aif.kernels.local`: the local one-step planner's kernels
  (:func:`evaluate_local_block`, :func:`policy_posterior_block`);
* :mod:`~edge_agent.aif.kernels.small`: the small-block one-step planner's kernels
  (:func:`evaluate_small_block`, :func:`small_predict`, :func:`small_prior_block`);
* :mod:`~edge_agent.aif.kernels.joint_plan`, :mod:`~edge_agent.aif.kernels.joint_scratch`,
  :mod:`~edge_agent.aif.kernels.joint_small`: the joint small-block path's tables
  (:class:`JointPlan`), its scratch views and its kernels;
* :mod:`~edge_agent.aif.kernels.deep_plan` and :mod:`~edge_agent.aif.kernels.deep`: the deep
  planner (policies of two or more steps under deterministic transitions: every distinct node
  of the policy tree evaluated once; :func:`evaluate_deep_block`, :class:`DeepScratch`).

Imports between the modules, type-only ones included, run one way (no cycle): the tables
(``transitions``, ``tree``, ``fast_tables``, ``local_plan``, ``small_plan``, ``joint_plan``,
``deep_plan``) sit below ``compiled``, which sits below ``workspace`` (and ``joint_scratch``)
and the kernels. The joint and deep planners' modules load on first use (``_BY_NEED`` below).
"""

from importlib import import_module
from typing import TYPE_CHECKING

from edge_agent.aif.kernels.agent_major import propagate_block
from edge_agent.aif.kernels.block import (
    evaluate_block,
    infer_block,
    infer_block_log_likelihood,
    load_roots,
    prior_block,
    select_block,
    surprise_block,
)
from edge_agent.aif.kernels.compiled import (
    CompiledModel,
    compile_model,
    refresh_likelihood,
    refresh_transitions,
)
from edge_agent.aif.kernels.control import (
    evaluate_policies,
    next_prior,
    policy_posterior,
    select_actions,
)
from edge_agent.aif.kernels.fast_tables import (
    Diagonals,
    apply_diagonals,
    apply_row_map,
    diagonals,
    outcome_row_map,
)
from edge_agent.aif.kernels.inference import (
    free_energy,
    infer_states,
    joint_rows,
    soft_likelihood,
    softmax_rows,
)
from edge_agent.aif.kernels.local import evaluate_local_block, policy_posterior_block
from edge_agent.aif.kernels.local_plan import LocalPlan
from edge_agent.aif.kernels.small import evaluate_small_block, small_predict, small_prior_block
from edge_agent.aif.kernels.small_plan import SMALL_BLOCK, SmallPlan
from edge_agent.aif.kernels.transitions import (
    DenseTransition,
    Transition,
    dense_table,
    make_transition,
    propagate,
    propagate_per_agent,
    refreshed_transition,
    support_table,
)
from edge_agent.aif.kernels.workspace import CHUNK_ROWS, Block, Workspace

if TYPE_CHECKING:
    from edge_agent.aif.kernels.deep import (
        DeepScratch,
        deep_bytes_per_agent,
        evaluate_deep_block,
        evaluate_deep_rows,
    )
    from edge_agent.aif.kernels.deep_plan import DeepPlan
    from edge_agent.aif.kernels.joint_plan import JointPlan
    from edge_agent.aif.kernels.joint_small import (
        evaluate_joint,
        infer_joint,
        posterior_joint,
        prior_joint,
        select_joint,
    )

#: What the joint and deep planners' modules export, by module: imported on first use (PEP 562),
#: so a process whose models have neither planner never loads their code (docs/memory.md;
#: ``CompiledModel.joint`` and ``.deep`` are None for them, and ``compile_model`` and the
#: workspace import the plans' builders and scratch only when a model has one).
_BY_NEED = {
    "DeepScratch": "deep",
    "deep_bytes_per_agent": "deep",
    "evaluate_deep_block": "deep",
    "evaluate_deep_rows": "deep",
    "DeepPlan": "deep_plan",
    "JointPlan": "joint_plan",
    "evaluate_joint": "joint_small",
    "infer_joint": "joint_small",
    "posterior_joint": "joint_small",
    "prior_joint": "joint_small",
    "select_joint": "joint_small",
}

if not TYPE_CHECKING:  # the type checker sees the imports above

    def __getattr__(name: str) -> object:
        module = _BY_NEED.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # once: later lookups find it
        return value

__all__ = [
    "CHUNK_ROWS",
    "SMALL_BLOCK",
    "Block",
    "CompiledModel",
    "DeepPlan",
    "DeepScratch",
    "DenseTransition",
    "Diagonals",
    "JointPlan",
    "LocalPlan",
    "SmallPlan",
    "Transition",
    "Workspace",
    "apply_diagonals",
    "apply_row_map",
    "compile_model",
    "deep_bytes_per_agent",
    "dense_table",
    "diagonals",
    "evaluate_block",
    "evaluate_deep_block",
    "evaluate_deep_rows",
    "evaluate_joint",
    "evaluate_local_block",
    "evaluate_policies",
    "evaluate_small_block",
    "free_energy",
    "infer_block",
    "infer_block_log_likelihood",
    "infer_joint",
    "infer_states",
    "joint_rows",
    "load_roots",
    "make_transition",
    "next_prior",
    "outcome_row_map",
    "policy_posterior",
    "policy_posterior_block",
    "posterior_joint",
    "prior_block",
    "prior_joint",
    "propagate",
    "propagate_block",
    "propagate_per_agent",
    "refresh_likelihood",
    "refresh_transitions",
    "refreshed_transition",
    "select_actions",
    "select_block",
    "select_joint",
    "small_predict",
    "small_prior_block",
    "soft_likelihood",
    "softmax_rows",
    "support_table",
    "surprise_block",
]
