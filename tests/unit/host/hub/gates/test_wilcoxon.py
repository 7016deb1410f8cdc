"""The Wilcoxon signed-rank test against scipy's numbers (scipy 1.17.1, ``scipy.stats.wilcoxon(d,
zero_method="pratt", alternative=..., method="approx", correction=False)``, computed once in the
project's TensorFlow venv ``/var/cache/edge-agent-tf/venv``; the project does not depend on
scipy) and the textbook properties."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent_host.hub.gates.wilcoxon import wilcoxon_signed_rank

TIES_AND_ZEROS = [0.5, -0.2, 0.0, 1.1, 0.5, 0.3, -0.4, 0.0, 0.9, 0.5, 0.2, 0.7]
NO_TIES = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30, -0.12, -0.61, 0.32]
MOSTLY_NEGATIVE = [-0.3, -0.25, 0.1, -0.5, -0.05, 0.0, -0.4, -0.2, 0.15, -0.35]


@pytest.mark.parametrize(
    ("d", "alternative", "t_plus", "p", "z"),
    [
        (TIES_AND_ZEROS, "greater", 65.5, 0.013577461948370874, 2.2092835608269206),
        (TIES_AND_ZEROS, "less", 65.5, 0.9864225380516292, 2.2092835608269206),
        (NO_TIES, "greater", 73.0, 0.00382454102764696, 2.667179437879303),
        (NO_TIES, "less", 73.0, 0.996175458972353, 2.667179437879303),
        (MOSTLY_NEGATIVE, "greater", 7.0, 0.9793865833314181, -2.041241452319315),
        (MOSTLY_NEGATIVE, "less", 7.0, 0.020613416668581838, -2.041241452319315),
    ],
)
def test_scipy_numbers(
    d: list[float], alternative: str, t_plus: float, p: float, z: float
) -> None:
    test = wilcoxon_signed_rank(d, alternative=alternative)  # type: ignore[arg-type]
    assert test.t_plus == pytest.approx(t_plus)
    assert test.z == pytest.approx(z, rel=1e-12)
    assert test.p == pytest.approx(p, rel=1e-10)
    assert test.n == len(d)


def test_all_zero_differences_tell_nothing_apart() -> None:
    test = wilcoxon_signed_rank(np.zeros(40))
    assert (test.p, test.zeros, test.t_plus) == (1.0, 40, 0.0)


def test_the_tails_add_up_and_a_shift_moves_the_p_value() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, 200)
    up = wilcoxon_signed_rank(d, alternative="greater")
    down = wilcoxon_signed_rank(d, alternative="less")
    assert up.p + down.p == pytest.approx(1.0)
    assert up.p < 0.01
    assert wilcoxon_signed_rank(d - 0.6).p > 0.99


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_bad_samples_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="differences"):
        wilcoxon_signed_rank(bad)
