"""Each agent's transitions on their support: the same tables, products and
refreshes as the dense ones."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import sparse_transitions as sparse
from edge_agent.aif.learning_kernels import normalise

S, U, N = 40, 3, 5


def sparse_mask(rng: np.random.Generator) -> np.ndarray:
    """1 to 3 targets per column (``(S, S, U)``)."""
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        for s in range(S):
            mask[rng.choice(S, size=1 + (s + u) % 3, replace=False), s, u] = True
    return mask


def test_sparse_tables_apply_and_refresh_as_the_dense_ones() -> None:
    """Normalised from per-agent counts, in full and then only the (agent, action) tables
    whose counts moved: the tables in full are the counts' expectation, and applying them to
    beliefs (one action for all, each agent's own, every action) gives the dense products."""
    rng = np.random.default_rng(5)
    mask = sparse_mask(rng)
    st = sparse.sparse_transitions(mask, N)
    assert st is not None
    counts = rng.uniform(0.5, 3.0, size=(N, S, S, U)) * mask
    agents, actions = np.nonzero(np.ones((N, U), dtype=bool))
    sparse.normalise_touched(st, counts, agents, actions)
    np.testing.assert_allclose(sparse.dense(st), normalise(counts, axis=1), rtol=1e-15,
                               atol=0)
    # Agent 2's action 1 and agent 4's action 0 learn: only those tables are normalised again.
    counts[2, :, :, 1] += rng.uniform(0, 1, size=(S, S)) * mask[:, :, 1]
    counts[4, :, :, 0] += rng.uniform(0, 1, size=(S, S)) * mask[:, :, 0]
    sparse.normalise_touched(st, counts, np.array([2, 4]), np.array([1, 0]))
    B = normalise(counts, axis=1)
    np.testing.assert_allclose(sparse.dense(st), B, rtol=1e-15, atol=0)
    q = rng.dirichlet(np.ones(S), size=N)
    every = np.einsum("nsju,nj->nus", B, q)
    np.testing.assert_allclose(sparse.apply_all(st, q), every, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sparse.apply_action(st, q, 2), every[:, 2], rtol=1e-13,
                               atol=1e-15)
    own = np.array([0, 2, 1, 1, 0])
    np.testing.assert_allclose(sparse.apply_each(st, q, own), every[np.arange(N), own],
                               rtol=1e-13, atol=1e-15)
    # One table for every agent (the model's, before the first refresh).
    sparse.fill_from_table(st, B[3])
    np.testing.assert_array_equal(sparse.dense(st), np.broadcast_to(B[3], (N, S, S, U)))


def test_a_dense_support_is_kept_in_full() -> None:
    assert sparse.sparse_transitions(np.ones((S, S, U), dtype=bool), N) is None
