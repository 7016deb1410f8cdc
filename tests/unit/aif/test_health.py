"""The health kernels (edge_agent.aif.health) against a direct float64 computation, one agent
and one joint state at a time, to rounding."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edge_agent.aif import health
from edge_agent.aif.constants import EPS

S = (3, 2)  # two factors
O = (4, 3)  # two modalities  # noqa: E741 - the outcomes' textbook name
R = 7  # agents


def _case(seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    A = []
    for o in O:  # A[m][o, s0, s1], columns normalised
        a = rng.dirichlet(np.ones(o), size=S).transpose(2, 0, 1)
        A.append(a)
    prior = [rng.dirichlet(np.ones(s), size=R) for s in S]
    qs = [rng.dirichlet(np.ones(s), size=R) for s in S]
    obs = np.stack([rng.integers(0, o, size=R) for o in O], axis=1)
    C = [rng.normal(size=o) for o in O]
    return {"A": A, "prior": prior, "qs": qs, "obs": obs, "C": C}


def _joint(qs: list[np.ndarray], r: int) -> dict[tuple[int, int], float]:
    return {
        (s0, s1): float(qs[0][r, s0] * qs[1][r, s1])
        for s0, s1 in itertools.product(range(S[0]), range(S[1]))
    }


def _p_o(A: list[np.ndarray], prior: list[np.ndarray], r: int, m: int) -> list[float]:
    joint = _joint(prior, r)
    return [sum(A[m][o, s0, s1] * p for (s0, s1), p in joint.items()) for o in range(O[m])]


def _flat(A: list[np.ndarray]) -> list[np.ndarray]:
    return [a.reshape(a.shape[0], -1) for a in A]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surprise_entropy_and_excess_match_a_direct_computation(seed: int) -> None:
    c = _case(seed)
    A, prior, obs = c["A"], c["prior"], c["obs"]
    assert isinstance(obs, np.ndarray)
    joint = health.joint_beliefs(prior)  # type: ignore[arg-type]
    p_o = health.predicted_outcomes(_flat(A), joint)  # type: ignore[arg-type]
    got_s = health.surprise(p_o, obs)
    got_h = health.outcome_entropy(p_o)
    for r in range(R):
        want_s = want_h = 0.0
        for m in range(len(O)):
            p = _p_o(A, prior, r, m)  # type: ignore[arg-type]
            assert math.isclose(sum(p), 1.0, rel_tol=1e-12)
            np.testing.assert_allclose(p_o[m][r], p, rtol=1e-12)
            want_s -= math.log(p[int(obs[r, m])] + EPS)
            want_h -= sum(x * math.log(x + EPS) for x in p)
        assert math.isclose(got_s[r], want_s, rel_tol=1e-12)
        assert math.isclose(got_h[r], want_h, rel_tol=1e-12)


def test_each_agents_own_likelihood_gives_the_same_as_a_shared_one() -> None:
    c = _case(3)
    A, prior = _flat(c["A"]), c["prior"]  # type: ignore[arg-type]
    joint = health.joint_beliefs(prior)  # type: ignore[arg-type]
    shared = health.predicted_outcomes(A, joint)
    own = health.predicted_outcomes([np.broadcast_to(a, (R, *a.shape)) for a in A], joint)
    for a, b in zip(shared, own, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    obs = c["obs"]
    assert isinstance(obs, np.ndarray)
    np.testing.assert_allclose(
        health.free_energy(c["qs"], prior, A, obs),  # type: ignore[arg-type]
        health.free_energy(
            c["qs"], prior, [np.broadcast_to(a, (R, *a.shape)) for a in A], obs  # type: ignore[arg-type]
        ),
        rtol=1e-12,
    )


@pytest.mark.parametrize("seed", [0, 4])
def test_free_energy_belief_change_and_entropy_match_a_direct_computation(seed: int) -> None:
    c = _case(seed)
    A, prior, qs, obs = c["A"], c["prior"], c["qs"], c["obs"]
    assert isinstance(obs, np.ndarray)
    got_f = health.free_energy(qs, prior, _flat(A), obs)  # type: ignore[arg-type]
    got_kl = health.belief_change(qs, prior)  # type: ignore[arg-type]
    for r in range(R):
        kl = sum(
            q * (math.log(q + EPS) - math.log(p + EPS))
            for f in range(len(S))
            for q, p in zip(qs[f][r], prior[f][r], strict=True)  # type: ignore[index]
        )
        expected_loglik = sum(
            w * sum(math.log(A[m][int(obs[r, m]), s0, s1] + EPS) for m in range(len(O)))  # type: ignore[index]
            for (s0, s1), w in _joint(qs, r).items()  # type: ignore[arg-type]
        )
        assert math.isclose(got_kl[r], kl, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(got_f[r], kl - expected_loglik, rel_tol=1e-12)
    q_pi = np.random.default_rng(seed).dirichlet(np.ones(5), size=R)
    got_h = health.entropy(q_pi)
    for r in range(R):
        assert math.isclose(got_h[r], -sum(x * math.log(x + EPS) for x in q_pi[r]), rel_tol=1e-12)


def test_the_free_energy_of_the_exact_posterior_is_the_surprise() -> None:
    """One factor: the posterior is Bayes' rule, and F = -ln p(o) (to the EPS inside the logs)."""
    rng = np.random.default_rng(5)
    A = [rng.dirichlet(np.ones(4), size=3).T]  # (O, S)
    prior = [rng.dirichlet(np.ones(3), size=R)]
    obs = rng.integers(0, 4, size=(R, 1))
    post = A[0][obs[:, 0]] * prior[0]
    post /= post.sum(axis=1, keepdims=True)
    p_o = health.predicted_outcomes(A, health.joint_beliefs(prior))
    np.testing.assert_allclose(
        health.free_energy([post], prior, A, obs), health.surprise(p_o, obs), rtol=1e-9
    )


def test_preference_is_the_log_preference_of_the_outcomes_seen() -> None:
    c = _case(6)
    obs = c["obs"]
    assert isinstance(obs, np.ndarray)
    lnC = [np.log(np.exp(x) / np.exp(x).sum()) for x in c["C"]]  # type: ignore[attr-defined]
    got = health.preference(lnC, obs)
    for r in range(R):
        assert math.isclose(got[r], sum(lnC[m][int(obs[r, m])] for m in range(len(O))))
