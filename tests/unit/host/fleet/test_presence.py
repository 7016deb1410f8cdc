"""A node's presence (``tools/edge_agent_host/fleet/presence.py``): one rule for the fleet tables,
the hub's page, ``/api/fleet.json`` and ``/metrics``. A node is ``silent`` when its retained state
says online but nothing live came from it for ``silent_after_s`` (what a node the broker locked out
looks like: its open session kept, its will refused)."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from edge_agent_host.fleet.presence import SILENT_AFTER_S, presence

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"online": True, "last_seen": NOW - 1.0}, "online"),
        ({"online": True, "last_seen": NOW - SILENT_AFTER_S - 5.0}, "silent"),
        ({"online": True, "last_seen": NOW - SILENT_AFTER_S + 5.0}, "online"),
        ({"online": True, "last_seen": None}, "online"),  # never heard live: taken at its word
        # ... unless the row says since when the node is known (the hub's registry): a node the
        # hub has heard only in retained messages for longer than the limit is silent.
        ({"online": True, "last_seen": None, "first_seen": NOW - SILENT_AFTER_S - 5.0}, "silent"),
        ({"online": True, "last_seen": None, "first_seen": NOW - 5.0}, "online"),
        # heard live recently, whatever the first sighting
        ({"online": True, "last_seen": NOW - 5.0, "first_seen": NOW - 9e5}, "online"),
        ({"online": False, "last_seen": NOW - SILENT_AFTER_S - 5.0}, "offline"),
        ({"online": False, "last_seen": NOW - 1.0}, "offline"),
        ({"online": None, "last_seen": None}, "unknown"),
    ],
)
def test_presence(row: dict[str, object], expected: str) -> None:
    assert presence(row, now=NOW) == expected


def test_the_limit_is_the_caller_s() -> None:
    row = {"online": True, "last_seen": NOW - 10.0}
    assert presence(row, 60.0, NOW) == "online"
    assert presence(row, 3.0, NOW) == "silent"


def test_the_default_outlasts_two_telemetry_periods_of_every_shipped_profile() -> None:
    """A healthy node of any firmware profile is heard at least twice within the default, so it
    never shows silent between two telemetry messages (the rule's docstring)."""
    folder = resources.files("edge_agent").joinpath("firmware_profiles")
    periods = {
        f.name: tomllib.loads(f.read_text())["telemetry_interval_s"]
        for f in folder.iterdir()
        if f.name.endswith(".toml")
    }
    assert len(periods) >= 5
    assert 2 * max(periods.values()) <= SILENT_AFTER_S, periods
