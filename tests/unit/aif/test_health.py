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


def _measures(c: dict[str, object], A: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    out = health.tick_measures(
        c["prior"], c["qs"], _flat(c["A"]) if A is None else A, c["obs"]  # type: ignore[arg-type]
    )
    assert out.shape == (len(health.TICK_MEASURES), R)
    assert out.dtype == np.float64
    return dict(zip(health.TICK_MEASURES, out, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surprise_entropy_and_excess_match_a_direct_computation(seed: int) -> None:
    c = _case(seed)
    A, prior, obs = c["A"], c["prior"], c["obs"]
    assert isinstance(obs, np.ndarray)
    got = _measures(c)
    for r in range(R):
        want_s = want_h = 0.0
        for m in range(len(O)):
            p = _p_o(A, prior, r, m)  # type: ignore[arg-type]
            assert math.isclose(sum(p), 1.0, rel_tol=1e-12)
            want_s -= math.log(p[int(obs[r, m])] + EPS)
            want_h -= sum(x * math.log(x + EPS) for x in p)
        assert math.isclose(got["surprise"][r], want_s, rel_tol=1e-12)
        assert math.isclose(got["excess_surprise"][r], want_s - want_h, rel_tol=1e-9,
                            abs_tol=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_free_energy_belief_change_and_entropy_match_a_direct_computation(seed: int) -> None:
    c = _case(seed)
    A, prior, qs, obs = c["A"], c["prior"], c["qs"], c["obs"]
    assert isinstance(obs, np.ndarray)
    got = _measures(c)
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
        assert math.isclose(got["belief_change"][r], kl, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(got["free_energy"][r], kl - expected_loglik, rel_tol=1e-12)
    q_pi = np.random.default_rng(seed).dirichlet(np.ones(5), size=R)
    got_h = health.entropy(q_pi)
    for r in range(R):
        assert math.isclose(got_h[r], -sum(x * math.log(x + EPS) for x in q_pi[r]), rel_tol=1e-12)


def test_each_agents_own_likelihood_gives_the_same_as_a_shared_one() -> None:
    c = _case(3)
    A = _flat(c["A"])  # type: ignore[arg-type]
    shared = health.tick_measures(c["prior"], c["qs"], A, c["obs"])  # type: ignore[arg-type]
    own = [np.broadcast_to(a, (R, *a.shape)) for a in A]
    for tables in (own, [A[0], own[1]], [own[0], A[1]]):  # all, or one modality, per agent
        np.testing.assert_allclose(
            health.tick_measures(c["prior"], c["qs"], tables, c["obs"]),  # type: ignore[arg-type]
            shared, rtol=1e-12, atol=1e-15,
        )


def test_modalities_measured_apart_add_up_and_a_float32_table_measures_the_same() -> None:
    """The tables side by side: each modality measured on its own (its table taken as it is)
    adds up to both measured at once; a float32 model's is summed in float32 (the beliefs cast
    to it), within float32's rounding of the float64 result."""
    c = _case(7)
    A = _flat(c["A"])  # type: ignore[arg-type]
    both = _measures(c)
    first = health.tick_measures(c["prior"], c["qs"], A[:1], c["obs"][:, :1])  # type: ignore[arg-type, index]
    second = health.tick_measures(c["prior"], c["qs"], A[1:], c["obs"][:, 1:])  # type: ignore[arg-type, index]
    # The surprise, excess and accuracy of two modalities are those of each, added.
    change = both["belief_change"]
    np.testing.assert_allclose(first[0] + second[0], both["surprise"], rtol=1e-12)
    np.testing.assert_allclose(first[1] + second[1], both["excess_surprise"], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose((first[2] - change) + (second[2] - change),
                               both["free_energy"] - change, rtol=1e-9)
    f32 = health.tick_measures(
        c["prior"], c["qs"], [a.astype(np.float32) for a in A], c["obs"]  # type: ignore[arg-type]
    )
    assert f32.dtype == np.float64
    np.testing.assert_allclose(f32, np.stack(list(both.values())), rtol=1e-5, atol=1e-6)


def test_the_free_energy_of_the_exact_posterior_is_the_surprise() -> None:
    """One factor: the posterior is Bayes' rule, and F = -ln p(o) (to the EPS inside the logs)."""
    rng = np.random.default_rng(5)
    A = [rng.dirichlet(np.ones(4), size=3).T]  # (O, S)
    prior = [rng.dirichlet(np.ones(3), size=R)]
    obs = rng.integers(0, 4, size=(R, 1))
    post = A[0][obs[:, 0]] * prior[0]
    post /= post.sum(axis=1, keepdims=True)
    surprise, _, free, _ = health.tick_measures(prior, [post], A, obs)
    np.testing.assert_allclose(free, surprise, rtol=1e-9)


def test_preference_is_the_log_preference_of_the_outcomes_seen() -> None:
    c = _case(6)
    obs = c["obs"]
    assert isinstance(obs, np.ndarray)
    lnC = [np.log(np.exp(x) / np.exp(x).sum()) for x in c["C"]]  # type: ignore[attr-defined]
    got = health.preference(lnC, obs)
    for r in range(R):
        assert math.isclose(got[r], sum(lnC[m][int(obs[r, m])] for m in range(len(O))))
