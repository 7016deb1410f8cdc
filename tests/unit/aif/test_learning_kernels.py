"""The pure batched Dirichlet count kernels (edge_agent/aif/learning_kernels.py): the
increments are the textbook sums over agents, and near-certain float32 posteriors learn ``B``
without subnormal products."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import learning_kernels
from edge_agent.aif.learning_kernels import (
    a_increment_shared,
    b_increment_shared,
    b_increment_support,
    joint_states,
    transition_support,
)
from tests.support.learning_random import random_qs


def test_increments_are_one_matrix_product_of_the_textbook_sums() -> None:
    rng = np.random.default_rng(2)
    n, n_obs, U = 40, 5, 3
    qs = random_qs(rng, n, (3, 4))
    obs = rng.integers(0, n_obs, size=n)
    joint = joint_states(qs)
    want = np.zeros((n_obs, 12))
    for i in range(n):
        want[obs[i]] += np.multiply.outer(qs[0][i], qs[1][i]).ravel()
    np.testing.assert_allclose(a_increment_shared(obs, joint, n_obs), want, atol=1e-13)
    prev = random_qs(rng, n, (3,))[0]
    action = rng.integers(0, U, size=n)
    want_b = np.zeros((3, 3, U))
    for i in range(n):
        want_b[:, :, action[i]] += np.outer(qs[0][i], prev[i])
    np.testing.assert_allclose(b_increment_shared(qs[0], prev, action, U), want_b, atol=1e-13)


def test_near_certain_float32_posteriors_learn_b_without_subnormal_products() -> None:
    """Near-certain float32 posteriors (off-peak entries 1e-30 to 1e-20, the peaks in the
    first 5 of 40 states) multiply into subnormal float32 numbers or underflow to 0;
    ``b_increment_support`` scales them out of that range, so that every entry of its sums
    (some about 1e-41) is the float64 sum of the products to float32 rounding, relative to
    the entry itself, not merely absolutely; so do the dense products of
    ``b_increment_shared``."""
    rng = np.random.default_rng(5)
    S, U, n = 40, 3, 500
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        mask[(np.arange(S) + u) % S, np.arange(S), u] = True  # one target per column
    support = transition_support(mask)
    assert support is not None

    def near_certain() -> np.ndarray:
        q = 10.0 ** rng.uniform(-30, -20, size=(n, S))
        q[np.arange(n), rng.integers(0, 5, n)] = 1.0
        return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)

    q, q_prev, action = near_certain(), near_certain(), rng.integers(0, U, size=n)
    scratch = learning_kernels.b_support_scratch(support, np.dtype(np.float32))
    got = b_increment_support(
        q, q_prev, action, support, local_offset=scratch["offset"],
        index_out=scratch["index"], gathered_out=scratch["gathered"],
        onehot_out=np.empty((U, n), dtype=np.float32), partial_out=scratch["partial"],
        sums_out=scratch["sums"], values_out=scratch["values"],
    )[0]
    want = np.zeros((U, S))
    for u in range(U):
        took = action == u
        target = support.targets[0, u]
        want[u] = (q[took][:, target].astype(np.float64) * q_prev[took]).sum(axis=0)
    assert np.any(want < 1e-40)  # sums in float32's subnormal range exist
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    # The dense products (a denser B) are scaled the same way.
    dense = np.zeros((S, S, U))
    for u in range(U):
        took = action == u
        dense[:, :, u] = q[took].astype(np.float64).T @ q_prev[took]
    np.testing.assert_allclose(b_increment_shared(q, q_prev, action, U), dense, rtol=1e-5,
                               atol=0)
