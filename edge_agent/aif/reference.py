"""A readable float64 Active Inference agent, one agent at a time: the tests' oracle.

This follows pymdp 0.0.7.1's numpy ``Agent`` step by step (``infer_states`` with the VANILLA
fixed-point iteration, ``infer_policies``, ``sample_action`` with marginal action selection), with
its constants: ``EPS = 1e-16`` inside every log, the ``exp(-16)`` state threshold and outcome
epsilon in the information gain. It is written for clarity, not speed; the batched kernels in
:mod:`edge_agent.aif.kernels` must agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.constants import EPS, EXP_M16
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies, controllable_factors, validate_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.errors import InputError

__all__ = ["EPS", "EXP_M16", "ReferenceAgent", "free_energy", "joint_of", "log_stable", "softmax"]


def log_stable(x: np.ndarray) -> np.ndarray:
    """``ln(x + 1e-16)``: pymdp's ``spm_log_single``."""
    return np.log(x + EPS)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 0."""
    e: np.ndarray = np.exp(x - x.max(axis=0))
    out: np.ndarray = e / e.sum(axis=0)
    return out


class ReferenceAgent:
    """One agent in float64 with pymdp semantics; attributes hold the latest results."""

    def __init__(
        self,
        model: GenerativeModel,
        settings: AifSettings | None = None,
        policies: np.ndarray | None = None,
        control_fac_idx: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or AifSettings()
        fac_idx = control_fac_idx if control_fac_idx is not None else self.settings.control_fac_idx
        self.control_factors = controllable_factors(model.num_controls, fac_idx)
        if policies is None:
            self.policies = construct_policies(
                model.num_controls, self.settings.policy_len, fac_idx
            )
        else:
            self.policies = validate_policies(policies, model.num_controls)
        # C as log-preferences: ln softmax(C) (pymdp's calc_expected_utility).
        self.lnC = [log_stable(softmax(c)) for c in model.C]
        n_pol = len(self.policies)
        E = model.E if model.E is not None else np.full(n_pol, 1.0 / n_pol)
        if E.shape != (n_pol,):
            raise InputError(f"E has {E.shape[0]} entries but there are {n_pol} policies")
        self.lnE = log_stable(E)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Back to the start of a trial: the next prior is ``D``."""
        self.qs: list[np.ndarray] = [d.copy() for d in self.model.D]
        self.action: NDArray[np.int64] | None = None
        self.q_pi: np.ndarray | None = None
        self.G: np.ndarray | None = None

    # -- state inference ---------------------------------------------------------------------
    def prior(self) -> list[np.ndarray]:
        """``D`` at the start, else ``B[f][:, :, a_f] @ qs[f]`` for the last action."""
        if self.action is None:
            return [d.copy() for d in self.model.D]
        return [
            self.model.B[f][:, :, int(self.action[f])] @ self.qs[f]
            for f in range(self.model.num_factors)
        ]

    def infer_states(self, obs: Sequence[int]) -> list[np.ndarray]:
        """Posterior over each factor after observing one outcome per modality."""
        model = self.model
        if len(obs) != model.num_modalities:
            raise InputError(f"obs has {len(obs)} entries, expected {model.num_modalities}")
        for m, o in enumerate(obs):
            if not 0 <= int(o) < model.num_obs[m]:
                raise InputError(f"obs[{m}] = {o} is out of range [0, {model.num_obs[m]})")
        likelihood = np.ones(model.num_states)
        for m, o in enumerate(obs):
            likelihood = likelihood * model.A[m][int(o)]
        log_likelihood = log_stable(likelihood)
        log_prior = [log_stable(p) for p in self.prior()]
        if model.num_factors == 1:
            self.qs = [softmax(log_likelihood + log_prior[0])]
        else:
            self.qs = self._fixed_point(log_likelihood, log_prior)
        return [q.copy() for q in self.qs]

    def _fixed_point(
        self, log_likelihood: np.ndarray, log_prior: list[np.ndarray]
    ) -> list[np.ndarray]:
        """pymdp's ``run_vanilla_fpi``: simultaneous mean-field updates until dF < dF_tol."""
        n_factors = self.model.num_factors
        qs = [np.full(s, 1.0 / s) for s in self.model.num_states]
        prev_vfe = free_energy(qs, log_prior, None)
        dF = 1.0
        for _ in range(self.settings.num_iter):
            if dF < self.settings.dF_tol:
                break
            q_joint = joint_of(qs)
            weighted = log_likelihood * q_joint
            new_qs = []
            for f in range(n_factors):
                others = tuple(i for i in range(n_factors) if i != f)
                qL = weighted.sum(axis=others) / qs[f]
                new_qs.append(softmax(qL + log_prior[f]))
            qs = new_qs
            vfe = free_energy(qs, log_prior, log_likelihood)
            dF = abs(prev_vfe - vfe)
            prev_vfe = vfe
        return qs

    # -- planning ----------------------------------------------------------------------------
    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi = softmax(gamma * G + ln E)`` with ``G`` = utility + state information gain."""
        G = np.zeros(len(self.policies))
        for p, policy in enumerate(self.policies):
            qs_pi = self.expected_states(policy)
            if self.settings.use_utility:
                for qs_t in qs_pi:
                    for m, lnC in enumerate(self.lnC):
                        G[p] += self.expected_obs(qs_t, m) @ lnC
            if self.settings.use_states_info_gain:
                for qs_t in qs_pi:
                    G[p] += self.info_gain(qs_t)
            G[p] += self.param_info_gain(policy, qs_pi)
        self.G = G
        self.q_pi = softmax(G * self.settings.gamma + self.lnE)
        return self.q_pi.copy(), G.copy()

    def param_info_gain(self, policy: np.ndarray, qs_pi: list[list[np.ndarray]]) -> float:
        """The parameter information gain a policy promises (0: this agent does not learn)."""
        return 0.0

    def expected_states(self, policy: np.ndarray) -> list[list[np.ndarray]]:
        """Predicted ``qs`` after each step of ``policy`` (``L`` lists of ``F`` vectors)."""
        out = []
        qs = self.qs
        for t in range(policy.shape[0]):
            qs = [self.model.B[f][:, :, int(policy[t, f])] @ qs[f] for f in range(len(qs))]
            out.append(qs)
        return out

    def expected_obs(self, qs: list[np.ndarray], m: int) -> np.ndarray:
        """``sum_s A[m][:, s] q(s)`` under the factorised ``qs``."""
        return np.tensordot(self.model.A[m], joint_of(qs), axes=self.model.num_factors)

    def info_gain(self, qs: list[np.ndarray]) -> float:
        """pymdp's ``spm_MDP_G``: mutual information between joint outcomes and states."""
        q_joint = joint_of(qs)
        G = 0.0
        qo: np.ndarray | float = 0.0
        for idx in np.argwhere(q_joint > EXP_M16):
            po = np.ones(1)
            for A_m in self.model.A:
                po = np.outer(po, A_m[(slice(None), *idx)]).ravel()
            q_s = q_joint[tuple(idx)]
            qo = qo + q_s * po
            G += q_s * float(po @ np.log(po + EXP_M16))
        qo_arr = np.asarray(qo).ravel()
        return float(G - qo_arr @ log_stable(qo_arr))

    # -- acting ------------------------------------------------------------------------------
    def action_marginals(self) -> list[np.ndarray]:
        """Posterior over each factor's next action, summed over policies."""
        if self.q_pi is None:
            raise InputError("infer_policies must run before sample_action")
        marginals = [np.zeros(u) for u in self.model.num_controls]
        for p, policy in enumerate(self.policies):
            for f, a in enumerate(policy[0]):
                marginals[f][int(a)] += self.q_pi[p]
        return [m / m.sum() for m in marginals]

    def sample_action(self) -> NDArray[np.int64]:
        """Next action per factor; it also drives the next :meth:`prior`."""
        if self.q_pi is None:
            raise InputError("infer_policies must run before sample_action")
        settings = self.settings
        if settings.sampling_mode == "full":
            if settings.action_selection == "deterministic":
                p = _first_max(self.q_pi)
            else:
                p_pol = softmax(log_stable(self.q_pi) * settings.alpha)
                p = int(self.rng.choice(len(p_pol), p=p_pol))
            action = self.policies[p, 0].astype(np.int64)
        else:
            chosen = []
            for marginal in self.action_marginals():
                if settings.action_selection == "deterministic":
                    chosen.append(_first_max(marginal))
                else:
                    p_act = softmax(log_stable(marginal) * settings.alpha)
                    chosen.append(int(self.rng.choice(len(p_act), p=p_act)))
            action = np.array(chosen, dtype=np.int64)
        self.action = action
        return np.array(action, dtype=np.int64)

    def step(self, obs: Sequence[int]) -> NDArray[np.int64]:
        """Infer states, plan, act: one full agent step."""
        self.infer_states(obs)
        self.infer_policies()
        return self.sample_action()


def _first_max(x: np.ndarray) -> int:
    """Index of the maximum, the first one on exact ties (pymdp 0.0.7.1's ``np.argmax``)."""
    return int(np.argmax(x))


def joint_of(qs: list[np.ndarray]) -> np.ndarray:
    """The joint of independent factor beliefs: their outer product, last factor fastest."""
    joint = qs[0]
    for q in qs[1:]:
        joint = joint[..., None] * q
    return joint


def free_energy(
    qs: list[np.ndarray], log_prior: list[np.ndarray], log_likelihood: np.ndarray | None
) -> float:
    """pymdp's ``calc_free_energy`` of one agent, the oracle's: -H[q] - E_q[ln prior] -
    E_q[ln likelihood] (the numpy implementation every group runs is
    :func:`edge_agent.aif.kernels.inference.free_energy`)."""
    vfe = 0.0
    for q, lp in zip(qs, log_prior, strict=True):
        vfe += float(q @ np.log(q + EPS)) - float(q @ lp)
    if log_likelihood is not None:
        vfe -= float((joint_of(qs) * log_likelihood).sum())
    return vfe
