"""A rollout's ``--criterion`` options read by one parser (tools/edge_agent_host/hub/gates/
criteria.py): each by its kind, ``--shadow-s`` checked against them, and the same line wherever
they are given (``rollout start``, ``learn publish``, ``[learning] rollout``)."""

from __future__ import annotations

import pytest

from edge_agent_host.hub.config.rollout_options import parse_start_options
from edge_agent_host.hub.gates.criteria import parse_criteria
from edge_agent_host.hub.gates.criterion_text import CriterionError

SHADOW = "shadow:excess_surprise:max_increase=0.1:min_pairs=10"


def test_each_criterion_is_read_by_its_kind_in_order() -> None:
    texts = ["surprise:max_increase=0.5", SHADOW, " score:max_decrease=0:dry_run"]
    health, shadow = parse_criteria(texts, 60.0)
    assert [(c.measure, c.direction, c.threshold, c.dry_run) for c in health] == [
        ("surprise", "increase", 0.5, False),
        ("score", "decrease", 0.0, True),
    ]
    assert [(c.measure, c.threshold, c.min_pairs) for c in shadow] == [("excess_surprise", 0.1, 10)]
    assert parse_criteria([], 0.0) == ([], [])


@pytest.mark.parametrize(
    ("texts", "shadow_s", "line"),
    [
        ([SHADOW], 0.0, "judges the canaries' shadow; give it a time with --shadow-s S"),
        ([], 90000.0, "--shadow-s 90000: seconds from 0 to 86400"),
        (["surprize:max_increase=1"], 0.0, "--criterion 'surprize:max_increase=1': unknown health"),
        (["shadow:excess_surprise:max_decrease=1"], 60.0,
         "--criterion 'shadow:excess_surprise:max_decrease=1': excess_surprise is worse higher"),
        (["surprise:max_increase=1:alpha=x"], 0.0,
         "--criterion 'surprise:max_increase=1:alpha=x': alpha='x' is not float number"),
        (["shadow:excess_surprise:max_increase=0.1:min_pairs=1.5"], 60.0,
         "--criterion 'shadow:excess_surprise:max_increase=0.1:min_pairs=1.5': min_pairs='1.5' "
         "is not int number"),
        (["surprise:max_increase=1:group=a:group=b"], 0.0,
         "--criterion 'surprise:max_increase=1:group=a:group=b': group given twice"),
    ],
)  # fmt: skip
def test_a_wrong_criterion_is_one_line_wherever_it_is_given(
    texts: list[str], shadow_s: float, line: str
) -> None:
    with pytest.raises(CriterionError) as caught:
        parse_criteria(texts, shadow_s)
    assert line in str(caught.value), caught.value
    words = ["--group", "g", "--shadow-s", f"{shadow_s:g}"]
    for text in texts:
        words += ["--criterion", text]
    with pytest.raises(ValueError, match=r"^--") as said:  # [learning] rollout's check
        parse_start_options(words)
    assert str(said.value) == str(caught.value)
