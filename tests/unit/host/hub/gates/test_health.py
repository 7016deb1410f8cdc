"""A rollout's criteria on health measures (``tools/edge_agent_host/hub/gates/health.py``): the
``--criterion`` syntax and its one-line refusals, and the verdicts on samples. The runner that
acts on them: ``tests/unit/host/hub/rollouts/test_runner.py`` (SQLite, PostgreSQL) and
``tests/integration/hub/test_rollout_health_gate.py`` (the hub service)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent_host.hub.gates.criterion_text import CriterionError
from edge_agent_host.hub.gates.health import (
    HealthCriterion,
    Outcome,
    Verdict,
    check_reported,
    parse_criterion,
)


def test_a_criterion_spelled_out_and_back() -> None:
    c = parse_criterion("excess_surprise:max_increase=0.2:group=doors:min_samples=30:dry_run")
    assert (c.measure, c.direction, c.threshold, c.group) == (
        "excess_surprise",
        "increase",
        0.2,
        "doors",
    )
    assert (c.min_samples, c.alpha, c.dry_run) == (30, 0.05, True)
    assert (
        c.text() == "excess_surprise:max_increase=0.2:group=doors:min_samples=30:alpha=0.05:dry_run"
    )
    assert parse_criterion(c.text()) == c
    score = parse_criterion("score:max_decrease=0:alpha=0.01")
    assert (score.direction, score.threshold, score.group, score.min_samples) == (
        "decrease",
        0.0,
        None,
        50,
    )
    # a measure without a better side takes either limit
    assert parse_criterion("policy_entropy:max_decrease=0.5").direction == "decrease"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("surprize:max_increase=0.1", "unknown health measure 'surprize'; known: surprise, "),
        ("surprise", "give one of max_increase=D or max_decrease=D"),
        ("surprise:max_increase=0.1:max_decrease=0.1", "give one of"),
        ("surprise:max_increase=-0.1", "max_increase=-0.1 must be >= 0"),
        ("surprise:max_increase=nan", "must be >= 0"),
        ("surprise:max_decrease=0.1", "surprise is better lower, so a drop is not what"),
        ("excess_surprise:max_decrease=0.1", "use max_increase=D"),
        ("score:max_increase=0.1", "score is better higher, so a rise"),
        ("surprise:max_increase=abc", "max_increase='abc' is not float"),
        ("surprise:max_increase=0.1:min_samples=2", "min_samples: Input should be greater"),
        ("surprise:max_increase=0.1:min_samples=x", "min_samples='x' is not int"),
        ("surprise:max_increase=0.1:alpha=0.7", "alpha: Input should be less than 0.5"),
        ("surprise:max_increase=0.1:colour=red", "'colour=red' is not KEY=VALUE"),
        ("surprise:max_increase=0.1:group=a b", "group: String should match"),
        ("surprise:max_increase=0.1:max_increase=0.2", "max_increase given twice"),
    ],
)
def test_bad_criteria_are_one_line(text: str, message: str) -> None:
    with pytest.raises(CriterionError) as caught:
        parse_criterion(text)
    said = str(caught.value)
    assert "\n" not in said
    assert said.startswith(f"--criterion {text!r}: ")
    assert message in said


def test_a_criterion_needs_a_group_that_reports_its_measure() -> None:
    reported = {"doors": {"surprise", "excess_surprise"}, "cam": {"confidence"}}
    check_reported([parse_criterion("surprise:max_increase=0")], "doors", reported)
    with pytest.raises(CriterionError, match=r"no node has reported health for group 'grid'"):
        check_reported([parse_criterion("surprise:max_increase=0")], "grid", reported)
    with pytest.raises(
        CriterionError, match=r"group 'cam' does not report surprise \(it reports confidence\)"
    ):
        check_reported([parse_criterion("surprise:max_increase=0:group=cam")], "doors", reported)


RNG = np.random.default_rng(46)
SAME = RNG.normal(0.0, 0.2, 300)


def judge(text: str, wave: np.ndarray, control: np.ndarray = SAME) -> Verdict:
    return parse_criterion(text).judge(wave.tolist(), control.tolist())


def test_a_worse_wave_fails_an_equal_one_passes_too_few_samples_is_inconclusive() -> None:
    worse = judge("excess_surprise:max_increase=0.1", RNG.normal(0.5, 0.2, 60))
    assert worse.outcome is Outcome.FAIL
    assert worse.value == pytest.approx(0.5, abs=0.1)
    assert (worse.wave_samples, worse.control_samples, worse.threshold) == (60, 300, 0.1)
    assert worse.p is not None
    assert worse.p < 1e-6
    assert worse.test.startswith("Mann-Whitney U one-sided (normal): U=")
    assert worse.detail.startswith("fail: excess_surprise median shift +0.")
    equal = judge("excess_surprise:max_increase=0.1", RNG.normal(0.0, 0.2, 60))
    assert equal.outcome is Outcome.PASS
    assert equal.p is not None
    assert equal.p > 0.05
    few = judge("excess_surprise:max_increase=0.1", RNG.normal(0.5, 0.2, 49))
    assert few.outcome is Outcome.INCONCLUSIVE
    assert "49 vs 300 samples, fewer than 50 a side" in few.detail
    assert few.p is None
    assert (
        judge("excess_surprise:max_increase=0.1:min_samples=40", RNG.normal(0.5, 0.2, 49)).outcome
        is Outcome.FAIL
    )


def test_the_tolerance_is_taken_off_before_the_test() -> None:
    shifted = RNG.normal(0.3, 0.2, 200)
    assert judge("surprise:max_increase=0.1", shifted).outcome is Outcome.FAIL
    assert judge("surprise:max_increase=0.5", shifted).outcome is Outcome.PASS
    # better higher: a drop is worse, a rise never fails
    assert judge("score:max_decrease=0.1", -shifted).outcome is Outcome.FAIL
    assert judge("score:max_decrease=0.1", shifted).outcome is Outcome.PASS
    assert judge("score:max_decrease=0.5", -shifted).outcome is Outcome.PASS


def test_a_dry_run_verdict_says_so_and_round_trips() -> None:
    v = judge("excess_surprise:max_increase=0.1:dry_run", RNG.normal(0.5, 0.2, 60))
    assert (v.outcome, v.dry_run) == (Outcome.FAIL, True)
    assert v.detail.startswith("fail (dry run): ")
    assert Verdict.from_dict(v.as_dict()) == v
    assert HealthCriterion.model_validate_json(parse_criterion(v.criterion).model_dump_json())
