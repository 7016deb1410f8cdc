"""What ``edge-agent-host hub`` prints of itself (``tools/edge_agent_host/fleetctl/cli.py``): the
age of a cached table, in its largest whole unit."""

from __future__ import annotations

import pytest

from edge_agent_host.fleetctl.cli import format_age


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-3.0, "0s"), (0.4, "0s"), (42.0, "42s"), (119.0, "119s"), (720.0, "12m"),
     (7199.0, "120m"), (3 * 3600.0, "3h"), (2 * 86400.0, "2d"), (40 * 86400.0, "40d")],
)  # fmt: skip
def test_an_age_is_shown_in_its_largest_whole_unit(seconds: float, shown: str) -> None:
    assert format_age(seconds) == shown
