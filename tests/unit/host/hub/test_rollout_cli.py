"""``edge-agent-hub rollout ... --follow`` (``tools/edge_agent_host/hub/rollout_cli.py``): the
line for each move of a rollout and the exit status of how it ended. The whole command against
the real hub service: ``tests/integration/hub/test_rollouts.py``."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent_host.hub.rollout_cli import FOLLOW_EXIT, follow_line
from edge_agent_host.hub.rollout_plan import RolloutState


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r-1", "state": "running", "wave": 1, "waves": 2, "phase": "deploying",
        "request": None, "detail": "", "nodes_total": 3, "nodes_done": 0, "nodes_failed": 0,
        "wave_table": [
            {"wave": 1, "cumulative": 1, "nodes": 1, "states": {"pending": 1}},
            {"wave": 2, "cumulative": 3, "nodes": 2, "states": {"pending": 2}},
        ],
    }  # fmt: skip
    return {**base, **changes}


def test_a_running_wave_with_its_nodes_by_state() -> None:
    assert follow_line(summary()) == "r-1 wave 1/2 deploying: 1 node(s): pending 1"
    table = summary()["wave_table"]
    table[1] = {**table[1], "states": {"ok": 1, "pending": 1}}
    line = follow_line(summary(wave=2, phase="soaking", wave_table=table, request="pause"))
    assert line == "r-1 wave 2/2 soaking: 2 node(s): ok 1, pending 1 (pause requested)"


def test_a_pause_a_halt_and_a_rollout_nobody_carries() -> None:
    assert follow_line(summary(state="paused", phase="soaking")) == "r-1 paused at wave 1/2 soaking"
    assert follow_line(summary(state="halting", detail="wave 1: 1 failed")) == (
        "r-1 halting at wave 1/2 deploying; wave 1: 1 failed"
    )
    assert follow_line(summary(state="pending", phase="")) == (
        "r-1 pending: the replica with [rollouts] key_file has not taken it yet"
    )


@pytest.mark.parametrize(
    ("state", "status"), [("done", 0), ("halted", 4), ("rolled_back", 5)]
)
def test_the_end_and_its_exit_status(state: str, status: int) -> None:
    line = follow_line(summary(state=state, nodes_done=1, nodes_failed=1, detail="why"))
    assert line == f"r-1 {state}: 1 of 3 node(s) ok, 1 failed; why"
    assert FOLLOW_EXIT[state] == status


def test_every_end_has_a_status_and_nothing_else_does() -> None:
    ends = {RolloutState.DONE, RolloutState.HALTED, RolloutState.ROLLED_BACK}
    assert set(FOLLOW_EXIT) == {s.value for s in ends}
    assert sorted(FOLLOW_EXIT.values()) == [0, 4, 5]  # 1, 2 and 3 are edge-agent-hub's own
