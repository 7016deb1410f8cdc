"""A rollout's criterion on the canaries' shadow (``tools/edge_agent_host/hub/gates/shadow.py``)
judged on the paired differences of real shadows (``tests/unit/daemon/test_shadow.py``): the same
model shadowing itself passes, the T-maze with its reward arms swapped fails, too few pairs are
inconclusive; the differences are read from the canaries' final deploy results."""

from __future__ import annotations

import pytest

from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.hub.gates.health import Outcome, WaveWindow
from edge_agent_host.hub.gates.shadow import ShadowResults, parse_shadow_criterion
from tests.unit.daemon.test_shadow import shadowed

CRITERION = "shadow:excess_surprise:max_increase=0.1:min_pairs=10"


def result(diffs: list[float]) -> CommandResult:
    return CommandResult(
        nonce=b"n" * 16,
        name="deploy",
        code=ResultCode.OK,
        data={"shadow_pairs": len(diffs), "shadow_diffs": diffs},
    )


@pytest.mark.parametrize(
    ("reward_probs", "outcome"), [((0.98, 0.02), Outcome.PASS), ((0.02, 0.98), Outcome.FAIL)]
)
def test_a_shadow_of_the_same_model_passes_and_of_the_swapped_arms_fails(
    reward_probs: tuple[float, float], outcome: Outcome
) -> None:
    paired, _ = shadowed(tmaze_model(reward_probs=reward_probs))
    results = {"pi-a": result(list(paired.diffs)), "pi-b": result(list(paired.diffs))}
    window = WaveWindow("tmaze", ["pi-a", "pi-b"], [], 0.0, 1.0)
    v = parse_shadow_criterion(CRITERION).evaluate(window, ShadowResults(results))
    assert v.outcome is outcome, v.detail
    assert (v.wave_samples, v.control_samples) == (2 * len(paired.diffs), 2)
    assert v.value == pytest.approx(sum(paired.diffs) / len(paired.diffs))
    assert v.detail.startswith(f"{outcome.value}: shadow excess_surprise candidate - live mean ")
    assert "Wilcoxon signed-rank one-sided" in v.test
    assert v.p is not None
    assert (v.p < 0.05) is (outcome is Outcome.FAIL)


def test_too_few_pairs_or_no_shadow_result_is_inconclusive() -> None:
    criterion = parse_shadow_criterion(CRITERION)
    results = {"pi-a": result([0.5] * 5), "pi-b": CommandResult(
        nonce=b"n" * 16, name="deploy", code=ResultCode.OK, detail="already runs it")}  # fmt: skip
    v = criterion.evaluate(WaveWindow("g", ["pi-a", "pi-b"], [], 0.0, 1.0), ShadowResults(results))
    assert v.outcome is Outcome.INCONCLUSIVE
    assert "5 pairs from 1 canary, fewer than 10" in v.detail
    assert v.test == "none"


def test_a_dry_run_is_said_and_the_text_spells_every_field() -> None:
    c = parse_shadow_criterion("shadow:excess_surprise:max-increase=0.2:alpha=0.01:dry_run")
    assert c.text() == "shadow:excess_surprise:max_increase=0.2:min_pairs=20:alpha=0.01:dry_run"
    v = c.judge([1.0] * 30, 1)
    assert v.outcome is Outcome.FAIL
    assert v.detail.startswith("fail (dry run): ")
