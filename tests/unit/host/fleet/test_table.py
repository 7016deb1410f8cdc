"""The fleet table (``tools/edge_agent_host/fleet/table.py``, both clients print it): a node is
``silent`` when its retained state says online but nothing live came from it for
``--silent-after`` seconds (what a node the broker locked out looks like: its open session kept,
its will refused); the rule itself is tests/unit/host/fleet/test_presence.py's."""

from __future__ import annotations

import time

from edge_agent_host.fleet.table import format_fleet


def test_the_table_uses_the_operator_s_silence_limit() -> None:
    row = {"node": "pi-0418", "online": True, "bdseq": 1, "last_seen": time.time() - 10.0}
    assert " online " in format_fleet([row]).splitlines()[1]
    assert " silent " in format_fleet([row], silent_after_s=3.0).splitlines()[1]


def test_a_node_without_a_state_yet_is_unknown() -> None:
    row = {"node": "pi-0419", "online": None, "bdseq": None, "last_seen": None}
    assert " unknown " in format_fleet([row]).splitlines()[1]
