"""Which nodes run an older version of a model line than the fleet's current one
(tools/edge_agent_host/hub/learning/catch_up.py): read from their births, online nodes only, minus
what the caller must not try."""

from __future__ import annotations

from typing import Any

from edge_agent_host.hub.learning.catch_up import CatchUp, behind

OLD, CURRENT, CANDIDATE = "a" * 64, "b" * 64, "c" * 64


def _row(node: str, online: bool, **groups: tuple[str | None, str | None]) -> dict[str, Any]:
    return {
        "node": node,
        "online": online,
        "birth": {"groups": {g: {"agents": 10, "bundle": b, "bundle_sha256": s}
                             for g, (b, s) in groups.items()}},
    }


def test_a_group_on_another_version_of_a_line_is_behind() -> None:
    fleet = [
        _row("pi-3", True, grid=("grid10", OLD), maze=("tmaze", CURRENT)),  # joined late
        _row("pi-1", True, grid=("grid10", CURRENT)),  # up to date
        _row("pi-2", True, nav=("grid10", OLD)),  # another group name, the same line
        _row("pi-4", False, grid=("grid10", OLD)),  # offline: asks again when it connects
        _row("pi-5", True, grid=(None, None)),  # a built-in model: no line
        _row("pi-6", True, grid=("thermo", OLD)),  # a line without a current version
        {"node": "pi-7", "online": True, "birth": None},  # no birth yet
    ]
    got = behind(fleet, {"grid10": CURRENT, "tmaze": CURRENT})
    assert got == [
        CatchUp("pi-2", "nav", "grid10", OLD, CURRENT),
        CatchUp("pi-3", "grid", "grid10", OLD, CURRENT),
    ]


def test_what_a_rollout_holds_or_a_failed_deployment_left_is_not_tried() -> None:
    fleet = [
        _row("canary", True, grid=("grid10", CANDIDATE)),  # a rollout in progress put it there
        _row("failed", True, grid=("grid10", OLD)),  # rolled back from CURRENT once
        _row("reset", True, grid=("grid10", OLD)),
    ]
    skip = {("canary", "grid", CURRENT), ("failed", "grid", CURRENT)}
    assert behind(fleet, {"grid10": CURRENT}, skip=skip) == [
        CatchUp("reset", "grid", "grid10", OLD, CURRENT)
    ]
    # A newer version is tried again on the node that failed the one before.
    assert [c.node for c in behind(fleet, {"grid10": CANDIDATE}, skip=skip)] == [
        "failed", "reset"]


def test_a_silent_node_is_not_online() -> None:
    row = _row("pi-1", True, grid=("grid10", OLD)) | {"last_seen": 1_000.0}
    assert behind([row], {"grid10": CURRENT}, silent_after_s=60, now=1_030.0) != []
    assert behind([row], {"grid10": CURRENT}, silent_after_s=60, now=1_100.0) == []


def test_a_daemons_birth_names_the_bundle_with_its_version() -> None:
    # A daemon's birth says ``name@version`` (edge_agent/kinds/aif.py: the manifest's name and
    # version); the line is the name, and a version string that holds "@" keeps its name.
    fleet = [
        _row("pi-1", True, grid=("grid10@1.0.0", OLD)),  # the shipped version
        _row("pi-2", True, grid=("grid10@1.1.0-r1", CURRENT)),  # the round's
        _row("pi-3", True, grid=("thermo@2.0.0", OLD)),  # another line
        _row("pi-4", True, grid=("team@grid10@3.0.0", OLD)),  # the line "team@grid10"
    ]
    got = behind(fleet, {"grid10": CURRENT, "team@grid10": CURRENT})
    assert got == [
        CatchUp("pi-1", "grid", "grid10", OLD, CURRENT),
        CatchUp("pi-4", "grid", "team@grid10", OLD, CURRENT),
    ]
