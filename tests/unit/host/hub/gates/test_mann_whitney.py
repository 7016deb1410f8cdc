"""The Mann-Whitney U test against scipy's numbers (scipy 1.17.1 ``scipy.stats.mannwhitneyu``,
computed once outside the project, which does not depend on scipy) and the textbook properties."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent_host.hub.gates.mann_whitney import EXACT_MAX, mann_whitney_u, rank

# fmt: off
X60 = [
    2.14, -2.46, 0.52, -0.47, -0.35, -0.12, -1.92, -0.13, -0.77, 3.42, 0.33, -0.25, -0.18, -0.57,
    -0.96, -0.29, 0.58, -0.14, 1.06, -0.1, 0.12, 1.65, 0.65, -0.41, -0.08, 0.64, 2.04, -0.17,
    -0.14, 1.1, -0.79, -0.19, 0.98, 0.68, 0.19, 0.77, -2.73, 1.12, -0.86, -1.57, 0.38, 0.8, -0.34,
    -0.98, 0.13, 0.05, 1.51, 0.85, 0.29, 1.21, -0.11, -0.83, 0.68, 0.68, -0.11, -0.68, 0.33,
    -2.39, 0.79, 0.59
]
Y70 = [
    -1.64, 0.06, -0.96, 0.76, -2.03, -0.91, 0.71, 1.16, -2.16, -0.5, 0.33, -0.61, 1.59, -1.19,
    0.35, -1.05, 1.41, -0.02, -0.37, -1.72, 1.68, 0.75, 0.75, 1.14, 0.35, -0.64, -0.8, -0.8, 1.37,
    -1.46, -0.6, -0.32, 0.22, 0.58, -1.25, -1.73, -0.0, 1.21, 0.76, 0.22, -0.32, 0.29, -0.24,
    0.82, -0.79, 0.13, -0.11, 0.54, 0.22, 2.55, 1.5, 1.5, -2.04, -0.34, -0.61, 0.53, -2.28, 1.17,
    1.07, -1.3, -0.98, -0.8, 0.04, 0.64, 2.05, -0.2, 0.77, 0.16, 1.76, 0.74
]
# fmt: on
SMALL = ([1.1, 2.3, 3.7, 4.2, 5.9], [0.5, 1.7, 2.2, 3.1])
TIED = ([1, 2, 2, 3, 3, 3, 4, 5], [1, 1, 2, 3, 4, 4])


@pytest.mark.parametrize(
    ("x", "y", "alternative", "expected"),
    [
        # no ties, small: the exact distribution
        (*SMALL, "greater", (16.0, 0.09523809523809523, "exact")),
        (*SMALL, "less", (16.0, 0.9444444444444444, "exact")),
        # ties: the normal approximation with the tie correction
        (*TIED, "greater", (27.5, 0.34567804322558104, "normal")),
        (*TIED, "less", (27.5, 0.7017200139174621, "normal")),
        # larger than EXACT_MAX (with a few ties of rounded values)
        (X60, Y70, "greater", (2165.0, 0.3816159168389225, "normal")),
        (X60, Y70, "less", (2165.0, 0.6201633873798837, "normal")),
    ],
)  # fmt: skip
def test_u_and_p_are_scipys(
    x: list[float], y: list[float], alternative: str, expected: tuple[float, float, str]
) -> None:
    u, p, method = expected
    out = mann_whitney_u(x, y, alternative=alternative)  # type: ignore[arg-type]
    assert out.u == pytest.approx(u)
    assert out.p == pytest.approx(p, rel=1e-9)
    assert out.method == method
    assert (out.n1, out.n2) == (len(x), len(y))


def test_ranks_share_their_mean_when_tied() -> None:
    ranks, ties = rank([3.0, 1.0, 3.0, 2.0, 3.0])
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert sorted(ties.tolist()) == [1, 1, 3]


def test_the_exact_distribution_sums_to_every_order_and_is_symmetric() -> None:
    x, y = [5.0, 6.0, 7.0], [1.0, 2.0, 3.0, 4.0]  # x beats every y: U = 12, p = 1 / C(7, 3)
    out = mann_whitney_u(x, y)
    assert (out.u, out.method) == (12.0, "exact")
    assert out.p == pytest.approx(1 / 35)
    assert mann_whitney_u(y, x, alternative="less").p == pytest.approx(1 / 35)


def test_a_shift_is_found_and_equal_samples_are_not() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 1.0, 200)
    worse = rng.normal(0.8, 1.0, 60)
    same = rng.normal(0.0, 1.0, 60)
    assert mann_whitney_u(worse, base).p < 1e-6
    assert mann_whitney_u(same, base).p > 0.01
    assert mann_whitney_u(worse, base, alternative="less").p > 0.99
    assert mann_whitney_u([1.0] * 30, [1.0] * 40).p == 1.0  # nothing tells them apart


def test_the_exact_and_the_normal_p_values_are_close_at_the_border() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.5, 1.0, EXACT_MAX), rng.normal(0.0, 1.0, EXACT_MAX)
    exact = mann_whitney_u(x, y)
    assert exact.method == "exact"
    noisy = mann_whitney_u(np.r_[x, x[:1]], y)  # one tie: the normal approximation
    assert noisy.method == "normal"
    assert abs(exact.p - noisy.p) < 0.05


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [([], [1.0], "at least one"), ([1.0, float("nan")], [1.0], "not finite")],
)
def test_bad_samples_are_refused(x: list[float], y: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mann_whitney_u(x, y)
