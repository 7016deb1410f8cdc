"""The tests' oracle with learning: :class:`LearningReferenceAgent`, pymdp 0.0.7.1's Dirichlet
learning of ``A``, ``B`` and ``D`` on the readable float64 agent of
:mod:`edge_agent.aif.reference`, one agent at a time. Apart from that agent so that the kernels,
which take their constants from it, do not import the learning maths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.aif.learning_kernels import normalise, wnorm
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference import ReferenceAgent, joint_of
from edge_agent.aif.settings import AifSettings
from edge_agent.errors import InputError

__all__ = ["LearningReferenceAgent"]


class LearningReferenceAgent(ReferenceAgent):
    """The oracle with pymdp 0.0.7.1's Dirichlet learning, one agent at a time.

    ``pA``/``pB``/``pD`` map a modality or factor to its prior counts (only those are learned);
    :meth:`update_A`, :meth:`update_B`, :meth:`update_D` are pymdp's, each followed by the table
    becoming its counts' expectation. ``forgetting`` decays the counts toward their prior before
    each update (not in pymdp; 0 is pymdp). ``use_param_info_gain`` adds the information gain
    about ``pA`` and ``pB`` to ``G`` (pymdp's ``calc_pA_info_gain`` / ``calc_pB_info_gain``, over
    the learned tables).
    """

    def __init__(
        self,
        model: GenerativeModel,
        settings: AifSettings | None = None,
        *,
        pA: dict[int, np.ndarray] | None = None,
        pB: dict[int, np.ndarray] | None = None,
        pD: dict[int, np.ndarray] | None = None,
        lr_pA: float = 1.0,
        lr_pB: float = 1.0,
        lr_pD: float = 1.0,
        forgetting: float = 0.0,
        use_param_info_gain: bool = False,
        policies: np.ndarray | None = None,
    ) -> None:
        self.pA = {m: np.array(p, dtype=np.float64) for m, p in (pA or {}).items()}
        self.pB = {f: np.array(p, dtype=np.float64) for f, p in (pB or {}).items()}
        self.pD = {f: np.array(p, dtype=np.float64) for f, p in (pD or {}).items()}
        self.prior_counts = {
            key: {i: p.copy() for i, p in counts.items()}
            for key, counts in (("A", self.pA), ("B", self.pB), ("D", self.pD))
        }
        self.lr_pA, self.lr_pB, self.lr_pD = lr_pA, lr_pB, lr_pD
        self.forgetting = forgetting
        self.use_param_info_gain = use_param_info_gain
        super().__init__(model, settings, policies)

    def _forget(self, kind: str, index: int, counts: np.ndarray) -> None:
        if self.forgetting:
            prior = self.prior_counts[kind][index]
            counts[...] = prior + (1.0 - self.forgetting) * (counts - prior)

    def _remodel(self, kind: str) -> None:
        """The tables of ``kind`` become their counts' expectation (pymdp: a table follows its
        counts from its own first update on; until then it is the table the model was given)."""
        m = self.model
        A, B, D = list(m.A), list(m.B), list(m.D)
        if kind == "A":
            A = [normalise(self.pA[i]) if i in self.pA else a for i, a in enumerate(A)]
        elif kind == "B":
            B = [normalise(self.pB[f]) if f in self.pB else b for f, b in enumerate(B)]
        else:
            D = [normalise(self.pD[f]) if f in self.pD else d for f, d in enumerate(D)]
        self.model = GenerativeModel.from_arrays(A, B, m.C, D, m.E)

    def update_A(self, obs: Sequence[int]) -> None:  # noqa: N802 - pymdp's name
        """``pA[m] += lr_pA * (A[m] > 0) * onehot(o_m) ⊗ qs`` for each learned modality."""
        joint = joint_of(self.qs)
        for m, counts in self.pA.items():
            dfda = np.zeros_like(counts)
            dfda[int(obs[m])] = joint
            self._forget("A", m, counts)
            counts[...] += self.lr_pA * dfda * (self.model.A[m] > 0)
        self._remodel("A")

    def update_B(self, qs_prev: Sequence[np.ndarray]) -> None:  # noqa: N802 - pymdp's name
        """``pB[f][:, :, a] += lr_pB * (B[f][:, :, a] > 0) * qs_f ⊗ qs_prev_f``, ``a`` the action
        taken at the previous step (the one that led from ``qs_prev`` to ``qs``)."""
        if self.action is None:
            raise InputError("update_B needs the action that led to qs: none was taken yet")
        for f, counts in self.pB.items():
            a = int(self.action[f])
            self._forget("B", f, counts)
            counts[:, :, a] += (
                self.lr_pB * np.outer(self.qs[f], qs_prev[f]) * (self.model.B[f][:, :, a] > 0)
            )
        self._remodel("B")

    def update_D(self, qs: Sequence[np.ndarray]) -> None:  # noqa: N802 - pymdp's name
        """``pD[f] += lr_pD * (pD[f] > 0) * qs_f`` with the posterior a trial is summed up by."""
        for f, counts in self.pD.items():
            self._forget("D", f, counts)
            counts[...] += self.lr_pD * (counts > 0) * qs[f]
        self._remodel("D")

    def param_info_gain(self, policy: np.ndarray, qs_pi: list[list[np.ndarray]]) -> float:
        if not self.use_param_info_gain:
            return 0.0
        gain = 0.0
        for m, counts in self.pA.items():
            wA = wnorm(counts) * (counts > 0)
            for qs_t in qs_pi:
                qo = self.expected_obs(qs_t, m)
                gain -= float(qo @ np.tensordot(wA, joint_of(qs_t), axes=self.model.num_factors))
        for f, counts in self.pB.items():
            wB = wnorm(counts) * (counts > 0)
            for t, qs_t in enumerate(qs_pi):
                previous = self.qs[f] if t == 0 else qs_pi[t - 1][f]
                gain -= float(qs_t[f] @ (wB[:, :, int(policy[t, f])] @ previous))
        return gain

