"""What the fleet page reads: each node's bundles and deployment from the registry and the
rollouts, and /api/fleet.json filtered, sorted and paged on the hub (fleet_view.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from edge_agent_host.hub.web.fleet_view import (
    MAX_FAILURES_SHOWN,
    FleetQuery,
    bundles_of,
    deployments_by_node,
    fleet_counts,
    fleet_page,
    rollout_failures,
)
from edge_agent_host.hub.web.server import WebServer
from edge_agent_host.hub.web.snapshot import FleetSnapshot

NOW = 1_800_000_000.0
MIB = 2**20


def summary(rollout_id: str, state: str, nodes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": rollout_id,
        "state": state,
        "group": "grid",
        "bundle": "grid10 2.0.0",
        "bundle_sha256": "ab" * 32,
        "nodes": {
            n: {"wave": 1, "state": s, "detail": d, "updated": NOW} for n, (s, d) in nodes.items()
        },
    }


def test_a_nodes_bundles_come_from_its_birth_in_group_order() -> None:
    birth = {
        "groups": {
            "z": {"agents": 1},
            "grid": {"agents": 9, "bundle": "grid10@2.0.0", "bundle_sha256": "cd" * 32},
        }
    }
    assert bundles_of(birth) == [
        {"group": "grid", "bundle": "grid10@2.0.0", "bundle_sha256": "cd" * 32},
        {"group": "z", "bundle": None, "bundle_sha256": None},
    ]
    assert bundles_of({}) == []


def test_a_nodes_deployment_is_its_row_in_the_newest_rollout_naming_it() -> None:
    newest = summary("r-new", "halted", {"a": ("failed", "health_check_failed: boom")})
    older = summary("r-old", "done", {"a": ("ok", ""), "b": ("ok", "")})
    found = deployments_by_node([newest, older])
    assert found["a"]["rollout"] == "r-new"
    assert found["a"]["rollout_state"] == "halted"
    assert found["a"]["state"] == "failed"
    assert found["a"]["detail"] == "health_check_failed: boom"
    assert found["b"]["rollout"] == "r-old"
    assert found["b"]["state"] == "ok"
    assert "c" not in found


def test_a_rollouts_failed_nodes_are_listed_with_their_reasons_and_bounded() -> None:
    nodes = {f"n{i:02d}": ("failed", f"reason {i}") for i in range(9)}
    nodes |= {
        "ok1": ("ok", ""),
        "rv": ("revert_failed", "timeout: no answer"),
        "p": ("pending", ""),
    }
    failures = rollout_failures(summary("r", "rolled_back", nodes))
    assert len(failures) == MAX_FAILURES_SHOWN
    assert failures[0] == {"node": "n00", "state": "failed", "detail": "reason 0"}
    assert {f["state"] for f in failures} == {"failed"}
    assert rollout_failures(summary("r", "halted", {"rv": nodes["rv"], "ok1": ("ok", "")})) == [
        {"node": "rv", "state": "revert_failed", "detail": "timeout: no answer"}
    ]


def fleet(count: int = 12) -> list[dict[str, Any]]:
    """Nodes n00..: every 4th red, every 5th failed in rollout r1, n03 without telemetry."""
    out = []
    width = 2 if count <= 100 else 4
    for i in range(count):
        node: dict[str, Any] = {
            "node": f"n{i:0{width}d}",
            "online": i % 4 != 0,
            "health": "red" if i % 4 == 0 else ("amber" if i == 7 else "green"),
            "last_seen": NOW - i,
            "software_version": "1.0" if i < 6 else "1.1",
            "profile": "pi4",
            "rss_bytes": None if i == 3 else (20 + i) * MIB,
            "budget_bytes": 48 * MIB,
            "tick_p50_ms": None if i == 3 else 1.0 + (i % 3),
            "tick_p99_ms": None,
            "cpu_temp_c": None if i == 3 else 40.0 + i,
            "outbox_depth": 0,
            "bundles": [{"group": "grid", "bundle": f"grid10@{i % 2}.0", "bundle_sha256": None}],
            "deployment": None
            if i >= 10
            else {
                "rollout": "r1",
                "state": "failed" if i % 5 == 0 else "ok",
                "detail": "health_check_failed: simulated" if i % 5 == 0 else "",
            },
        }
        out.append(node)
    return out


def names(rows: list[Any]) -> list[str]:
    return [r["node"] for r in rows]


def test_filters_by_health_deployment_and_text() -> None:
    nodes = fleet()
    assert names(FleetQuery(health="red").select(nodes)[1]) == ["n00", "n04", "n08"]
    assert names(FleetQuery(deploy="failed").select(nodes)[1]) == ["n00", "n05"]
    assert names(FleetQuery(deploy="none").select(nodes)[1]) == ["n10", "n11"]
    assert names(FleetQuery(text="N1").select(nodes)[1]) == ["n10", "n11"]
    assert names(FleetQuery(text="SIMULATED").select(nodes)[1]) == ["n00", "n05"]  # the reason
    assert names(FleetQuery(text="grid10@1.0").select(nodes)[1]) == ["n01", "n03", "n05", "n07",
                                                                     "n09", "n11"]  # fmt: skip
    matched, rows = FleetQuery(health="red", deploy="failed").select(nodes)
    assert (matched, names(rows)) == (1, ["n00"])


def test_sorts_with_unknown_values_last_either_way_and_ties_by_name() -> None:
    nodes = fleet()
    up = names(FleetQuery(sort="cpu").select(nodes)[1])
    down = names(FleetQuery(sort="cpu", order="desc").select(nodes)[1])
    assert up[-1] == down[-1] == "n03"  # no telemetry: last both ways
    assert up[:-1] == list(reversed(down[:-1]))
    # tick p50 takes three values: ties keep name order in both directions
    assert names(FleetQuery(sort="tick_p50").select(nodes)[1])[:4] == ["n00", "n06", "n09", "n01"]
    assert names(FleetQuery(sort="tick_p50", order="desc").select(nodes)[1])[:4] == [
        "n02", "n05", "n08", "n11"
    ]  # fmt: skip
    worst = names(FleetQuery(sort="health").select(nodes)[1])
    assert worst[:4] == ["n00", "n04", "n08", "n07"]  # red, then amber
    by_deploy = names(FleetQuery(sort="deploy").select(nodes)[1])
    assert by_deploy[:2] == ["n00", "n05"]  # failed first, nodes in no rollout last
    assert by_deploy[-2:] == ["n10", "n11"]
    memory = names(FleetQuery(sort="memory", order="desc").select(nodes)[1])
    assert memory[0] == "n11"
    assert memory[-1] == "n03"


def test_pages_and_counts_the_whole_fleet_whatever_the_filter() -> None:
    nodes = fleet(1000)
    snap = FleetSnapshot(taken=NOW, hub={"id": "h"}, nodes=nodes, rollouts=[]).as_json()
    page = fleet_page(snap, FleetQuery(offset=50, limit=50))
    assert names(page["nodes"]) == [f"n{i:04d}" for i in range(50, 100)]
    assert page["matched"] == 1000
    assert (page["offset"], page["limit"]) == (50, 50)
    assert page["counts"] == fleet_counts(nodes)
    assert page["counts"]["total"] == 1000
    assert page["counts"]["health"]["red"] == 250
    assert page["counts"]["deploy"] == {
        "revert_failed": 0, "failed": 2, "pending": 0, "reverted": 0, "ok": 8, "none": 990
    }  # fmt: skip
    red = fleet_page(snap, FleetQuery(health="red", offset=240, limit=50))
    assert red["matched"] == 250
    assert len(red["nodes"]) == 10
    assert red["counts"]["total"] == 1000
    assert fleet_page(snap, FleetQuery(offset=2000, limit=5))["nodes"] == []
    everything = fleet_page(snap, FleetQuery())  # no limit: every node (scripts)
    assert len(everything["nodes"]) == 1000
    # a page of 50 is a small answer; the whole fleet is not
    assert len(json.dumps(page)) * 10 < len(json.dumps(everything))


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=abc", "limit: 'abc' is not a whole number"),
        ("limit=0", "limit: 0 is not within 1 .. 1000"),
        ("limit=1001", "limit: 1001 is not within 1 .. 1000"),
        ("offset=-1", "offset: -1 is below 0"),
        ("health=purple", "health: 'purple' is not one of green, amber, red"),
        ("deploy=gone", "deploy: 'gone' is not one of revert_failed, failed, pending, reverted, "
                        "ok, none"),
        ("sort=colour", "sort: 'colour' is not one of node, health"),
        ("order=up", "order: 'up' is not asc or desc"),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_one_line_naming_it(query: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^[a-z]+: ") as err:
        FleetQuery.parse(query)
    assert str(err.value).startswith(error)


def test_parse_reads_every_parameter() -> None:
    q = FleetQuery.parse("q=%20Sim-00%20&health=red&deploy=failed&sort=cpu&order=desc&offset=50"
                         "&limit=25&unknown=1")  # fmt: skip
    assert (q.text, q.health, q.deploy, q.sort, q.order, q.offset, q.limit) == (
        "sim-00", "red", "failed", "cpu", "desc", 50, 25
    )  # fmt: skip
    empty = FleetQuery.parse("q=&health=&deploy=&limit=")
    assert (empty.text, empty.health, empty.deploy, empty.limit) == ("", None, None, None)


def test_the_server_answers_a_page_and_refuses_a_bad_query() -> None:
    server = WebServer("127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/fleet.json"
        server.snapshot = FleetSnapshot(taken=NOW, hub={"id": "h"}, nodes=fleet(), rollouts=[])
        with urllib.request.urlopen(f"{url}?deploy=failed&sort=node&order=desc", timeout=10) as a:
            data = json.loads(a.read())
        assert names(data["nodes"]) == ["n05", "n00"]
        assert data["matched"] == 2
        assert data["counts"]["total"] == 12
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}?limit=x", timeout=10)
        with err.value:
            assert err.value.code == 400
            assert err.value.read() == b"limit: 'x' is not a whole number\n"
    finally:
        server.stop()
