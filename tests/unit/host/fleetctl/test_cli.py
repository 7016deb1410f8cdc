"""The hub's fleet table (``tools/edge_agent_host/fleetctl/cli.py``): a node is ``silent`` when its
retained state says online but nothing live came from it for ``--silent-after`` seconds (what a
node the broker locked out looks like: its open session kept, its will refused)."""

from __future__ import annotations

import time

import pytest

from edge_agent_host.fleetctl.cli import SILENT_AFTER_S, format_fleet, presence


@pytest.mark.parametrize(
    ("online", "age_s", "expected"),
    [
        (True, 1.0, "online"),
        (True, SILENT_AFTER_S + 5.0, "silent"),
        (True, None, "online"),  # never heard live by this store: no grounds to doubt it
        (False, SILENT_AFTER_S + 5.0, "offline"),
        (None, None, "?"),
    ],
)
def test_presence(online: bool | None, age_s: float | None, expected: str) -> None:
    seen = None if age_s is None else time.time() - age_s
    assert presence({"online": online, "last_seen": seen}) == expected


def test_the_table_uses_the_operator_s_silence_limit() -> None:
    row = {"node": "pi-0418", "online": True, "bdseq": 1, "last_seen": time.time() - 10.0}
    assert " online " in format_fleet([row]).splitlines()[1]
    assert " silent " in format_fleet([row], silent_after_s=3.0).splitlines()[1]
