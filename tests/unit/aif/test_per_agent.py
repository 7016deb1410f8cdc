"""The per-agent kernels' shortcuts: only the joint outcomes some state
can produce, shared tables applied as one product; the same numbers as the long way."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import per_agent
from edge_agent.aif.policies import construct_policies
from edge_agent.sim.registry import builtin_model


def test_possible_outcomes_give_the_same_expected_free_energy() -> None:
    """T-maze, each agent its own (perturbed) reward likelihood: the outcome table of the 12
    joint outcomes some state can produce holds exactly the non-zero rows of the 24, and ``G``
    with it equals ``G`` with the whole table (shared tables: one product; per agent: each its
    own)."""
    model = builtin_model("tmaze")
    n = 6
    rng = np.random.default_rng(2)
    S = int(np.prod(model.num_states))
    A = [a.reshape(1, a.shape[0], S) for a in model.A]
    noisy = A[1] * rng.uniform(0.5, 1.5, size=(n, *A[1].shape[1:]))
    A[1] = noisy / noisy.sum(axis=1, keepdims=True)
    possible = per_agent.possible_outcomes([np.asarray((a > 0).any(axis=0)) for a in A])
    assert possible.shape == (12, 3)
    full = per_agent.outcome_tables(A)
    kept = per_agent.outcome_tables(A, possible)
    strides = np.array([int(np.prod(model.num_obs[m + 1:])) for m in range(3)])
    rows = possible @ strides
    np.testing.assert_array_equal(kept[0], full[0][:, rows])
    dropped = np.setdiff1d(np.arange(full[0].shape[1]), rows)
    assert np.all(full[0][:, dropped] == 0)
    np.testing.assert_allclose(kept[1], full[1], rtol=1e-13, atol=1e-15)
    qs = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
    B = [b[None] for b in model.B]
    lnC = [np.log(per_agent.softmax_rows(c[None])[0] + 1e-16) for c in model.C]
    policies = construct_policies(model.num_controls, 2, None)
    G_kept = per_agent.expected_free_energy(qs, A, B, lnC, policies, outcomes=kept,
                                            use_utility=True)
    G_full = per_agent.expected_free_energy(qs, A, B, lnC, policies, outcomes=full,
                                            use_utility=True)
    np.testing.assert_allclose(G_kept, G_full, rtol=1e-12, atol=1e-12)
    # Per-agent B (each agent its own copy): the batched product, the same G.
    B_own = [np.repeat(b, n, axis=0) for b in B]
    G_own = per_agent.expected_free_energy(qs, A, B_own, lnC, policies, outcomes=kept,
                                           use_utility=True)
    np.testing.assert_allclose(G_own, G_full, rtol=1e-12, atol=1e-12)
