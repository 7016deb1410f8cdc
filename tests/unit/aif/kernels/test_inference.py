"""The one numpy free energy (edge_agent/aif/kernels/inference.py's ``free_energy``, which the
general path, the per-agent kernels, the fast path's and the joint path's fixed points and the
health measures call) is the float64 oracle's (aif/reference.py, pymdp's ``calc_free_energy``)
agent by agent, in either layout (agent-major along axis 1, the fast path's state-major along
axis 0), with or without the likelihood term, into the caller's buffers or not, its complexity
alone where asked."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.constants import EPS
from edge_agent.aif.kernels.inference import free_energy, joint_rows
from edge_agent.aif.reference import free_energy as oracle


@pytest.mark.parametrize("num_states", [(5,), (3, 4), (2, 3, 4, 2)])
def test_the_free_energy_is_the_oracle_s_in_either_layout(num_states: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(num_states))
    n = 7
    qs = [rng.dirichlet(np.ones(s), size=n) for s in num_states]
    qs[0][0] = np.eye(num_states[0])[0]  # a belief of exact zeros: 0 ln(0 + eps) adds 0
    log_prior = [np.log(rng.dirichlet(np.ones(s), size=n) + EPS) for s in num_states]
    log_lik = np.log(rng.random((n, int(np.prod(num_states)))) + EPS)
    q, lp = np.concatenate(qs, axis=1), np.concatenate(log_prior, axis=1)
    joint = joint_rows(qs)
    expected = np.array([oracle([f[i] for f in qs], [f[i] for f in log_prior],
                                log_lik[i].reshape(num_states)) for i in range(n)])
    complexity = np.array([oracle([f[i] for f in qs], [f[i] for f in log_prior], None)
                           for i in range(n)])

    np.testing.assert_allclose(free_energy(q, lp, joint, log_lik, axis=1), expected,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(free_energy(q, lp, axis=1), complexity, rtol=0, atol=1e-12)
    # state-major, into buffers, the complexity kept apart and joint * lnL left in weighted
    out, kl, work = np.empty(n), np.empty(n), np.empty_like(q.T)
    weighted, accuracy = np.empty_like(joint.T), np.empty(n)
    got = free_energy(q.T.copy(), lp.T.copy(), joint.T.copy(), log_lik.T.copy(), axis=0,
                      out=out, complexity=kl, work=work, weighted=weighted, accuracy=accuracy)
    assert got is out
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kl, complexity, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted, (joint * log_lik).T, rtol=0, atol=0)
    # the complexity and the accuracy summed in one buffer: the result there
    into = np.empty(n)
    assert free_energy(q, lp, joint, log_lik, axis=1, out=into) is into
    np.testing.assert_allclose(into, expected, rtol=0, atol=1e-12)
