"""Per-agent learning in one compiled pass per tick: :class:`NativePass`.

A group whose agents each learn their own likelihood counts (``pA``, scope ``per_agent``) steps
its learning tick (:meth:`~edge_agent.core.agents.AifAgentGroup.step`) in
:mod:`edge_agent.aif.kernels.native`'s pass when the model and settings are what the pass does
(:func:`native_pass` says which are not): every agent infers, learns its counts, its tables
follow them, it plans and acts, agent block by agent block, in the arrays the group already
holds (the agents' state; the counts, their masks and experience in the
:class:`~edge_agent.aif.learning_counts.DirichletCounts`; each agent's tables in the
:class:`~edge_agent.core.per_agent_learning.AgentTables`), with the numbers of the numpy stages
up to rounding. What the counts keep besides (versions, agent-ticks, the refresh) is kept by
:meth:`~edge_agent.core.learning.GroupLearning.learned_in_pass`. The group's verbs that step
one stage (``infer_states``, ``infer_policies``, ``sample_action``) and everything that reads
the tables go to the :class:`AgentTables` it wraps.

``EDGE_AGENT_NATIVE_TICK=0`` in the environment keeps a group on numpy (read when the group is
made; a benchmark's or a test's baseline).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif.kernels import native
from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.group_blocks import IntArray

if TYPE_CHECKING:
    from edge_agent.aif import kernels
    from edge_agent.aif.learning import Learner, LearningSpec
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.per_agent_learning import AgentTables

__all__ = ["NATIVE_ENV", "NativePass", "native_pass"]

#: The environment variable that keeps groups on numpy when it is ``0``.
NATIVE_ENV = "EDGE_AGENT_NATIVE_TICK"


class NativePass:
    """The learning tick of a per-agent group (``tables``, ``learner``) as one compiled pass
    (``kernel``); the stage verbs are ``tables``'."""

    name = "native"
    plans_by_policy = False

    def __init__(
        self, tables: AgentTables, learner: Learner, kernel: native.NativeTick, n_agents: int,
        num_modalities: int,
    ) -> None:
        assert learner.pA is not None  # native_pass checked
        self.tables = tables
        self._counts = learner.pA
        self._kernel = kernel
        #: This tick's p(o_m) under the prior and the tables before the update (the surprise's).
        self._p_obs = np.zeros((n_agents, num_modalities))

    def step_tick(
        self, state: AgentState, obs: IntArray, stepper: BlockStepper, *, learn: bool
    ) -> bool:
        """The whole tick of every agent in one pass (``obs`` ``(N, M)`` int64): the prior
        into ``state.prior``, the posteriors, each agent's counts (``learn``: not frozen) and
        tables, ``G``, ``q_pi`` and the actions."""
        del stepper  # the pass has the stepper's settings (native_pass)
        counts, own = self._counts, self.tables.tables["A"]
        # The masks are replaced at the first refresh and at a reset: bound every tick.
        self._kernel.bind_learning([own[m] for m in counts.tables], counts.counts, counts.mask,
                                   counts.experience)
        self._kernel.step(obs, state.qs, state.action, state.has_action, G=state.G,
                          q_pi=state.q_pi, prior=state.prior, p_obs=self._p_obs, learn=learn)
        return True

    def outcome_probabilities(
        self, obs: IntArray, rows: IntArray, joint: np.ndarray
    ) -> np.ndarray:
        """``(r, M)``: the agents ``rows``' ``p(o_m)`` the last pass took under their prior
        and their tables before its update (``obs`` and ``joint``: the same, already in)."""
        del obs, joint
        return self._p_obs[rows]

    # -- the stage verbs: the tables' -------------------------------------------------------------
    def infer_states(self, state: AgentState, obs: IntArray, stepper: BlockStepper) -> None:
        """:meth:`AgentTables.infer_states`."""
        self.tables.infer_states(state, obs, stepper)

    def infer_policies(self, state: AgentState, stepper: BlockStepper) -> None:
        """:meth:`AgentTables.infer_policies`."""
        self.tables.infer_policies(state, stepper)

    def sample_action(self, state: AgentState, stepper: BlockStepper) -> None:
        """:meth:`AgentTables.sample_action`."""
        self.tables.sample_action(state, stepper)

    def likelihood(self, rows: IntArray) -> list[np.ndarray]:
        """:meth:`AgentTables.likelihood`."""
        return self.tables.likelihood(rows)


def native_pass(
    tables: AgentTables, learner: Learner, spec: LearningSpec, *, cm: kernels.CompiledModel,
    settings: AifSettings, n_agents: int,
) -> NativePass | str:
    """The compiled pass of a per-agent group, or why it steps with numpy: the pass learns
    ``pA`` alone, without forgetting or novelty, in float64 counts refreshed every tick, for
    one-step policies, deterministic marginal action selection and a model within
    :data:`~edge_agent.aif.kernels.native.LIMITS`."""
    s = spec.settings
    policies = cm.tree.policies
    model = tables.model
    reasons = [
        (os.environ.get(NATIVE_ENV, "1") == "0", f"{NATIVE_ENV}=0"),
        (learner.pA is None, "pA is not learned"),
        (learner.pB is not None or learner.pD is not None,
         "pB or pD learned (the compiled tick learns pA)"),
        (spec.param_info_gain, "param_info_gain"),
        (spec.refresh_every != 1, f"refresh_every {spec.refresh_every}"),
        (s.forgetting != 0.0, "forgetting"),
        (s.counts_dtype != "float64", f"counts_dtype {s.counts_dtype}"),
        (policies.shape[1] != 1, f"policy_len {policies.shape[1]}"),
        (settings.action_selection != "deterministic", "stochastic action selection"),
        (settings.sampling_mode != "marginal", f"sampling_mode {settings.sampling_mode}"),
    ]
    for found, why in reasons:
        if found:
            return why
    too_large = native.too_large(model.num_states, model.num_controls, model.num_modalities,
                                 len(policies))
    if too_large is not None:
        return too_large
    missing = native.unavailable()
    if missing is not None:
        return missing
    pA = learner.pA
    assert pA is not None
    bound = [tables.tables["A"][m] for m in pA.tables] + pA.counts + pA.experience
    if not all(a.dtype == np.float64 and a.flags.c_contiguous for a in bound):
        return "tables or counts not C-contiguous float64"
    S = int(np.prod(model.num_states))
    supports = [(a > 0).reshape(a.shape[0], S) for a in model.A]
    for slot, m in enumerate(pA.tables):
        supports[m] = supports[m] | (pA.prior[slot].reshape(supports[m].shape) > 0)
    kernel = native.NativeTick(
        model.A, model.B, model.D, lnC=native.log_preferences(model.C),
        lnE=np.asarray(cm.lnE, dtype=np.float64), policies=policies, learned=pA.tables,
        supports=supports, n=n_agents,
        gamma=float(settings.gamma), num_iter=settings.num_iter, dF_tol=settings.dF_tol,
        lr=s.lr_pA, use_utility=settings.use_utility,
        use_info_gain=settings.use_states_info_gain, shared_counts=False,
    )
    return NativePass(tables, learner, kernel, n_agents, model.num_modalities)
