"""The per-agent kernels' shortcuts: only the joint outcomes some state
can produce, shared tables applied as one product; the same numbers as the long way."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import joint_outcomes, kernels, per_agent
from edge_agent.aif import sparse_transitions as sparse
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
    possible = joint_outcomes.possible_outcomes([np.asarray((a > 0).any(axis=0)) for a in A])
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
    lnC = [np.log(kernels.softmax_rows(c[None])[0] + 1e-16) for c in model.C]
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


def test_one_step_policies_are_evaluated_at_once_as_one_by_one() -> None:
    """T-maze, each agent its own reward likelihood and location transitions (dense, and on
    their support): ``G`` of the one-step policies, all evaluated at once, equals the sum of
    each policy's terms computed one policy at a time."""
    model = builtin_model("tmaze")
    n = 4
    rng = np.random.default_rng(9)
    S = int(np.prod(model.num_states))
    A = [a.reshape(1, a.shape[0], S) for a in model.A]
    noisy = A[1] * rng.uniform(0.5, 1.5, size=(n, *A[1].shape[1:]))
    A[1] = noisy / noisy.sum(axis=1, keepdims=True)
    B_own = np.repeat(model.B[0][None], n, axis=0) * rng.uniform(0.5, 1.5, (n, *model.B[0].shape))
    B_own /= B_own.sum(axis=1, keepdims=True)
    kept = per_agent.outcome_tables(A)
    lnC = [np.log(kernels.softmax_rows(c[None])[0] + 1e-16) for c in model.C]
    policies = construct_policies(model.num_controls, 1, None)
    qs = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
    utility = sum(np.einsum("nos,o->ns", a, c) for a, c in zip(A, lnC, strict=True))
    want = np.zeros((n, len(policies)))
    for p, policy in enumerate(policies):
        q = [np.einsum("nij,nj->ni", B_own[:, :, :, policy[0, 0]], qs[0]),
             qs[1] @ model.B[1][:, :, policy[0, 1]].T]
        q_joint = kernels.joint_rows(q)
        kept_q = np.where(q_joint > np.exp(-16), q_joint, 0.0)
        qo = np.einsum("nos,ns->no", kept[0], kept_q)
        want[:, p] = ((q_joint * utility).sum(axis=1) + (kept_q * kept[1]).sum(axis=1)
                      - (qo * np.log(qo + 1e-16)).sum(axis=1))
    B = [B_own, model.B[1][None]]
    got = per_agent.expected_free_energy(qs, A, B, lnC, policies, outcomes=kept,
                                         use_utility=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # A grid's moves (one target per column), each agent's table on its support: the same G
    # as the dense table shared.
    grid = builtin_model("grid", height=4, width=4)
    st = sparse.sparse_transitions(grid.B[0] > 0, n)
    assert st is not None
    sparse.fill_from_table(st, grid.B[0])
    A_grid = [grid.A[0][None]]
    lnC_grid = [np.log(kernels.softmax_rows(grid.C[0][None])[0] + 1e-16)]
    moves = construct_policies(grid.num_controls, 1, None)
    q_grid = [rng.dirichlet(np.ones(16), size=n)]
    outcomes = per_agent.outcome_tables(A_grid)
    on_support = per_agent.expected_free_energy(q_grid, A_grid, [st], lnC_grid, moves,
                                                outcomes=outcomes, use_utility=True)
    dense = per_agent.expected_free_energy(q_grid, A_grid, [grid.B[0][None]], lnC_grid, moves,
                                           outcomes=outcomes, use_utility=True)
    np.testing.assert_allclose(on_support, dense, rtol=1e-12, atol=1e-12)


def test_a_learned_likelihood_plans_on_the_joint_entries_that_can_be_non_zero() -> None:
    """T-maze, each agent its own reward likelihood: the joint-outcome table kept on the
    entries every modality's support allows (22 of 12 x 8, the shared modalities' product made
    once) gives the entropies and ``G`` of the whole table."""
    model = builtin_model("tmaze")
    n = 5
    rng = np.random.default_rng(3)
    S = int(np.prod(model.num_states))
    A = [a.reshape(1, a.shape[0], S) for a in model.A]
    noisy = A[1] * rng.uniform(0.5, 1.5, size=(n, *A[1].shape[1:]))
    A[1] = noisy / noisy.sum(axis=1, keepdims=True)
    supports = [np.asarray((a > 0).any(axis=0)) for a in A]
    possible = joint_outcomes.possible_outcomes(supports)
    layout = joint_outcomes.joint_layout(A, supports, possible, [1])
    assert len(layout.state_of) == 22
    compact = per_agent.compact_joint(A, layout)
    full = per_agent.outcome_tables(A, possible)
    np.testing.assert_allclose(compact.neg_entropy, full[1], rtol=1e-13, atol=1e-15)
    qs = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
    B = [b[None] for b in model.B]
    lnC = [np.log(kernels.softmax_rows(c[None])[0] + 1e-16) for c in model.C]
    policies = construct_policies(model.num_controls, 1, None)
    G = [per_agent.expected_free_energy(qs, A, B, lnC, policies, outcomes=outcomes,
                                        use_utility=True) for outcomes in (compact, full)]
    np.testing.assert_allclose(G[0], G[1], rtol=1e-12, atol=1e-12)
