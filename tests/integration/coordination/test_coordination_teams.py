"""Team tasks end to end, as docs/coordination.md recommends running them: daemons on the broker
``edge-agent-host broker init`` configures (TLS client certificates, the per-identity ACL), the
hub announcing with ``edge-agent-host tasks announce --team-sizes``.

* three daemons of 30 agents form eight teams of 2-4 agents in up to two roles: every daemon
  holds the same award, every team whole, each member pursuing its role's goal and holding its
  slot; ``tasks list`` shows each team's members and vacant slots, ``edge-agent status`` the
  teams formed;
* the daemon with the most members is SIGKILLed: on the two others every team keeps its other
  members and round, and the vacant slots are filled again (repairs counted) from the bids held;
* the network splits (two brokers bridged through a proxy that stops forwarding, as the one-agent
  partition test in test_coordination_daemons.py), the same team tasks are announced on both
  sides, each side forms every team among its own agents, and after the heal one team per task is
  left, the same on every daemon, its members (and no other agent) pursuing it.

Every daemon is a real process; what they hold comes from their status files. A machine without
mosquitto fails these tests with the way to install it; they never skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent_host.fleetctl.tasks import announce, random_team_specs
from edge_agent_host.keys import generate_keypair
from tests.integration.coordination.test_coordination_daemons import (
    GRID_GROUP,
    auction,
    bridged_brokers,
    hub,
    start_all,
)
from tests.integration.coordination.test_coordination_relays import daemons  # noqa: F401
from tests.integration.fleet.test_broker_acl import (
    broker_init,
    coord,
    host_tool,
    hub_args,
    metric,
    secure_node,
    start_broker,
)
from tests.integration.fleet.test_fleet_daemon import Node, status_view, wait_until
from tests.support.broker import free_port

pytestmark = pytest.mark.integration

NODES = ("pi-a", "pi-b", "pi-c")


def teams(node: Node) -> dict[str, Any]:
    found: dict[str, Any] = coord(node).get("teams", {})
    return found


def where(nodes: list[Node]) -> str:
    """Each daemon's teams and its team counters, for a failure message."""
    parts = []
    for node in nodes:
        view = coord(node)
        m = {k: v for k, v in view.get("metrics", {}).items() if "team" in k or "malformed" in k}
        parts.append(f"{node.name}: teams {view.get('teams')}; holding "
                     f"{view.get('team_holding')}; {m}")  # fmt: skip
    return "\n".join(parts)


def wait_agreed(nodes: list[Node], count: int, what: str) -> None:
    try:
        wait_until(lambda: agreed(nodes, count), what, 90)
    except pytest.fail.Exception as failed:
        raise AssertionError(f"{failed}\n{where(nodes)}") from None


def agreed(nodes: list[Node], count: int) -> bool:
    """Every daemon holds the same award of ``count`` teams, every slot filled and held, and each
    member (and no other agent) pursues its team's task on its own daemon."""
    views = [teams(n) for n in nodes]
    if len(views[0]) != count or any(v != views[0] for v in views[1:]):
        return False
    if any(t["vacant"] or not all(m[4] for m in t["members"]) for t in views[0].values()):
        return False
    members = sorted(
        (node.name, m[0], m[1], t, m[3])
        for node in nodes
        for t, ms in coord(node).get("team_holding", {}).items()
        for m in ms
    )
    awarded = sorted(
        (m[0], m[1], m[2], t, m[3]) for t, team in views[0].items() for m in team["members"]
    )
    return members == awarded


def test_teams_form_agree_and_are_repaired_on_the_secured_broker(
    tmp_path: Path,
    daemons: list[Any],  # noqa: F811
) -> None:
    port = free_port()
    out = broker_init(
        tmp_path / "pki", port, *(a for n in NODES for a in ("--node", n)), "--hub", "hub"
    )
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    daemons.append(broker)
    keys = tmp_path / "trusted"
    hub_key = generate_keypair(keys, "hub").private_path
    nodes = [secure_node(tmp_path, broker, name, out / "clients", keys) for name in NODES]
    daemons.extend(nodes)
    for node in nodes:
        node.start(wait_ready=False)
    for node in nodes:
        assert node.notify is not None
        node.notify.wait_for("READY=1", 120)
    wait_until(lambda: all(metric(n, "live_nodes") == 3 for n in nodes), "the daemons to meet")
    hub = hub_args(out / "clients", broker)

    # The hub announces eight teams and waits until every member of every team claims its slot.
    announced = json.loads(
        host_tool(
            "tasks", *hub, "announce", "--key", str(hub_key), "--capability", "grid",
            "--count", "8", "--goal-states", "100", "--team-sizes", "2-4", "--max-roles", "2",
            "--prefix", "team-", "--wait", "60", "--json",
        )
    )  # fmt: skip
    assert sorted(announced["teams"]) == [f"team-{i:04d}" for i in range(8)]
    wait_agreed(nodes, 8, "three daemons to agree on eight whole teams")
    before = teams(nodes[0])
    sizes = {t: sum(team["slots"]) for t, team in before.items()}
    assert all(2 <= s <= 4 for s in sizes.values())
    assert any(len(team["slots"]) == 2 for team in before.values())  # mixed roles

    # What the operator sees: each team's members and no vacant slot; the status, the teams.
    listed = json.loads(host_tool("tasks", *hub, "list", "--wait", "3", "--json"))
    assert listed["agree"] is True
    for task, team in listed["teams"].items():
        assert (team["slots"], team["vacant"]) == (sizes[task], 0)
        assert sorted(tuple(m) for m in team["members"]) == sorted(
            (m[0], m[1], m[2], before[task]["epoch"], m[3]) for m in before[task]["members"]
        )
    text = host_tool("tasks", *hub, "list", "--wait", "3")
    assert "TEAM" in text
    assert "VACANT" in text
    assert "team-0000" in text
    assert "teams 8 open, 8 formed" in status_view(nodes[0].state)

    # The daemon with the most members dies: the others keep theirs, the slots are filled again.
    def held_by(name: str) -> int:
        return sum(m[0] == name for t in before.values() for m in t["members"])

    victim = max(nodes, key=lambda n: held_by(n.name))
    lost = held_by(victim.name)
    assert lost
    victim.kill()
    survivors = [n for n in nodes if n is not victim]
    wait_agreed(survivors, 8, "the two others to repair every team")
    after = teams(survivors[0])
    for task, team in after.items():
        stayed = {tuple(m[:4]) for m in before[task]["members"] if m[0] != victim.name}
        assert stayed <= {tuple(m[:4]) for m in team["members"]}  # the other members unchanged
        assert team["epoch"] == before[task]["epoch"]  # the same round: repaired
        assert all(m[0] != victim.name for m in team["members"])
    for node in survivors:
        assert metric(node, "team_repairs") >= lost
        assert metric(node, "death_reauctions") == 0
        assert metric(node, "team_slots_vacant") == 0
        assert "Traceback" not in node.log()


def test_a_healed_partition_leaves_one_team_per_task(tmp_path: Path, daemons: list[Any]) -> None:  # noqa: F811
    side_a, side_b, proxy = bridged_brokers(tmp_path)
    daemons += (side_b, side_a)
    try:
        # 40 agents a daemon, 80 a side: enough for every team on either side alone.
        group = GRID_GROUP.replace("count = 100", "count = 40") + auction(0.5)
        west = [Node(tmp_path, side_a, f"w{i}", groups=group, telemetry_s=1.0) for i in range(2)]
        east = [Node(tmp_path, side_b, f"e{i}", groups=group, telemetry_s=1.0) for i in range(2)]
        nodes = west + east
        daemons.extend(nodes)
        start_all(nodes)
        proxy.split()
        specs = random_team_specs(
            10, 100, sizes=(2, 4), max_roles=2, capability="grid", announced_by="hub", seed=4
        )
        for broker in (side_a, side_b):  # the same teams are announced on both sides
            with hub(broker) as client:
                announce(client, specs)
        wait_agreed(west, 10, "the west side to form every team")
        wait_agreed(east, 10, "the east side to form every team")
        for side in (west, east):  # each side formed the teams among its own agents
            names = {n.name for n in side}
            assert all(m[0] in names for t in teams(side[0]).values() for m in t["members"])

        proxy.heal()
        wait_agreed(nodes, 10, "four daemons to agree on one team per task after the heal")
        award = teams(nodes[0])
        assert {t: sum(team["slots"]) for t, team in award.items()} == {
            s.task: s.size for s in specs
        }
        members = [tuple(m[:3]) for team in award.values() for m in team["members"]]
        assert len(members) == len(set(members)) == sum(s.size for s in specs)  # one slot each
        for node in nodes:
            assert "Traceback" not in node.log()
    finally:
        proxy.close()
