"""A group's [groups.health] table (edge_agent.core.health_table): read from a file at its
lines, its bad values one clear line each, refused by a kind that measures no health, and the
settings it gives the group's drift alarm and neural confidence."""

from __future__ import annotations

import pytest

from edge_agent.config.daemon import parse_config
from edge_agent.core.drift import DriftSettings
from edge_agent.core.health_table import HealthTable
from edge_agent.errors import ConfigError
from edge_agent.kinds import get_kind

CONFIG = """[daemon]
profile = "x86-dev"

[[groups]]
name = "g"
model = { type = "builtin", name = "tmaze" }
count = 3
source = { type = "sim" }
sink = { type = "sim" }

[groups.health]
drift_threshold = THRESHOLD
low_confidence = 0.3
"""


def test_the_table_sets_the_drift_alarm_and_the_low_confidence_threshold() -> None:
    (g,) = parse_config(CONFIG.replace("THRESHOLD", "20"), "c.toml").groups
    table = g.table_of(HealthTable)
    assert table is not None
    assert table.drift() == DriftSettings(threshold=20.0)  # the others: the defaults
    assert table.low_confidence == 0.3
    # a group without the table runs with the defaults docs/health.md measured
    assert HealthTable().drift() == DriftSettings()


@pytest.mark.parametrize(
    ("value", "problem"), [("-1", "drift_threshold"), ('"high"', "drift_threshold")]
)
def test_a_bad_value_is_one_line_at_its_place(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(CONFIG.replace("THRESHOLD", value), "c.toml")
    message = str(err.value)
    assert message.startswith("c.toml:12: "), message
    assert f"health.{problem}" in message, message
    assert "Traceback" not in message


def test_only_kinds_that_measure_health_take_it() -> None:
    table = HealthTable()
    for name in ("aif", "neural", "perception"):
        assert table.refusal(get_kind(name), name) is None
    refused = table.refusal(object(), "tally")
    assert refused == (
        "[groups.health] is for groups that measure their health; a tally group does not"
    )
