"""A node with a valid certificate cannot steal or freeze the fleet's task allocation through
the facts its ``task_sync`` relays about other nodes (issue 29, item 1).

Real daemons, a real mosquitto running the configuration ``edge-agent-host broker init`` wrote
(TLS client certificates and the per-identity ACL). pi-b and pi-c coordinate; an attacker holds
pi-a's valid certificate and publishes, on pi-a's own ``tasks`` topic (which the ACL lets it
write), the three relays that used to stop all task work until pi-a was revoked and every daemon
restarted at once:

* bids of a node that does not exist (``ghost``, cost -1e30) for every task;
* ``DeadSession(pi-b, 2**32 - 1)``: every session of pi-b, present and future, dead;
* tombstones with a future epoch for every task -- bare, as signed releases of pi-b's agents
  with a signature that is not pi-b's, and as releases in pi-a's own name (signed with the key
  pi-a published) beyond the epoch of the round and at the round's epoch for agents that do not
  hold the tasks;
* the hub's task specs relayed at a higher epoch (a new round) and with another goal under the
  hub's genuine signature, and at a higher epoch signed with pi-a's own key.

Each daemon refuses them (``relays_refused``), the award stays with the agents that won (in the
round the hub announced), the fleet keeps allocating new tasks the hub announces (signed), and
pi-b's next session is alive to its peer.

A machine without mosquitto fails these tests with the way to install it; they never skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from edge_agent.coordination.ledger import Bid, bid_columns
from edge_agent.coordination.messages import (
    DeadSession,
    Release,
    ReleaseStatus,
    TaskKey,
    TaskRelease,
    TaskSync,
    Tombstone,
)
from edge_agent.coordination.signing import TaskSigner, release_bytes, sign_specs
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import Body, Envelope, encode
from edge_agent_host.keys import generate_keypair, load_signing_key
from edge_agent_host.tasks import random_specs
from tests.integration.fleet.test_broker_acl import (
    Client,
    broker_init,
    coord,
    host_tool,
    hub_args,
    metric,
    secure_node,
    start_broker,
)
from tests.integration.fleet.test_fleet_daemon import FLEET, TOPICS, Node, wait_until
from tests.support.broker import MosquittoBroker, free_port

pytestmark = pytest.mark.integration

FOREVER = UINT32 - 1


def forged(body: Body, seq: int, bdseq: int = 1) -> bytes:
    """An envelope of pi-a's (the node of the topic it goes to)."""
    return encode(
        Envelope(
            type=body.TYPE, node="pi-a", seq=seq, bdseq=bdseq, ts=1.0, clock_synced=False,
            body=body,
        )
    )  # fmt: skip


def announce(hub: list[str], key: Path, prefix: str, count: int) -> dict[str, Any]:
    """Announce ``count`` tasks from the hub (signed with ``key``) and wait until each has a
    holder."""
    out = host_tool(
        "tasks", *hub, "announce", "--key", str(key), "--capability", "grid",
        "--count", str(count),
        "--goal-states", "100", "--prefix", prefix, "--wait", "30", "--json",
    )  # fmt: skip
    held: dict[str, Any] = json.loads(out)["tasks"]
    return held


def assignment(node: Node) -> dict[str, list[Any]]:
    award: dict[str, list[Any]] = coord(node).get("assignment", {})
    return award


@pytest.fixture
def daemons() -> Any:
    started: list[Any] = []
    yield started
    for thing in started:
        if isinstance(thing, (Node, Client)):
            thing.close()
        else:
            thing.kill()


def test_forged_relays_neither_steal_nor_freeze_the_allocation(
    tmp_path: Path, daemons: list[Any]
) -> None:
    port = free_port()
    out = broker_init(
        tmp_path / "pki", port, "--node", "pi-a", "--node", "pi-b", "--node", "pi-c",
        "--hub", "hub",
    )  # fmt: skip
    broker: MosquittoBroker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    daemons.append(broker)
    clients = out / "clients"
    trusted = tmp_path / "trusted"
    hub_key = generate_keypair(trusted, "hub").private_path  # signs the hub's task specs
    nodes = [secure_node(tmp_path, broker, name, clients, trusted) for name in ("pi-b", "pi-c")]
    daemons.extend(nodes)
    b, c = nodes
    for node in nodes:
        node.start(wait_ready=False)
    for node in nodes:
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)
    wait_until(lambda: all(metric(n, "live_nodes") == 2 for n in nodes), "the daemons to meet")
    wait_until(lambda: all(metric(n, "keys_learned") >= 1 for n in nodes), "the task keys")
    hub = hub_args(clients, broker)
    held = announce(hub, hub_key, "before-", 4)
    assert sorted(held) == [f"before-{i:04d}" for i in range(4)]
    wait_until(lambda: all(len(assignment(n)) == 4 for n in nodes), "both daemons to award 4 tasks")
    before = assignment(b)
    assert assignment(c) == before
    epoch = int(before["before-0000"][3])

    # The attacker: pi-a's certificate, pi-a's own tasks topic; it publishes a key of its own.
    attacker = Client(broker, clients / "pi-a").ready()
    daemons.append(attacker)
    key = TaskSigner.generate()
    topic = TOPICS.tasks("pi-a")
    assert attacker.publish(topic, forged(TaskKey(key=key.public), 1), retain=True) == "Success"
    wait_until(lambda: all(metric(n, "keys_learned") >= 2 for n in nodes), "pi-a's key")
    refused = {n.name: metric(n, "relays_refused") for n in nodes}

    tasks = sorted(before)
    ghost_bids = [
        Bid(t, epoch, "ghost", "grid", agent, -1e30, 0, 1) for t in tasks for agent in range(4)
    ]

    def release(task: str, node: str, agent: int, at: int) -> Release:
        return Release(
            task=task, epoch=at, node=node, group="grid", agent=agent, bdseq=1, bseq=1,
            status=ReleaseStatus.DONE,
        )  # fmt: skip

    as_b = [release(t, "pi-b", int(before[t][2]), epoch) for t in tasks]
    as_a_future = [release(t, "pi-a", 0, FOREVER) for t in tasks]
    as_a_now = [release(t, "pi-a", 0, epoch) for t in tasks]  # pi-a's agent holds none of them
    own = as_a_future + as_a_now
    # The hub's specs as it announced them (what --count 4 --prefix before- made), and its
    # genuine signatures of them: pi-a relays them as a new round and with other goals.
    specs = random_specs(
        4, 100, prefix="before-", capability="grid", announced_by="hub", epoch=0, deadline=0.0
    )
    assert [s.task for s in specs] == tasks
    hub_sigs = sign_specs(load_signing_key(hub_key).sign, FLEET, specs)
    newer = [replace(s, epoch=epoch + 5) for s in specs]
    other_goal = [replace(s, goal_state=s.goal_state + 1) for s in specs]
    attack: list[Body] = [
        TaskSync(bids=bid_columns(ghost_bids)),
        TaskSync(dead=[DeadSession(node="pi-b", bdseq=FOREVER)]),
        TaskSync(closed=[Tombstone(task=t, epoch=FOREVER) for t in tasks]),
        TaskSync(closers=as_b, closer_sigs=os.urandom(64) * len(as_b)),
        TaskSync(
            closers=own,
            closer_sigs=b"".join(key.sign(release_bytes(FLEET, r)) for r in own),
        ),
        TaskRelease(items=own, sigs=b"".join(key.sign(release_bytes(FLEET, r)) for r in own)),
        TaskSync(tasks=newer, task_sigs=hub_sigs),
        TaskSync(tasks=other_goal, task_sigs=hub_sigs),
        TaskSync(tasks=newer, task_sigs=sign_specs(key.sign, FLEET, newer)),
    ]
    received = {n.name: metric(n, "task_msgs_received") for n in nodes}
    for seq, body in enumerate(attack, start=2):
        assert attacker.publish(topic, forged(body, seq)) == "Success"
    wait_until(
        lambda: all(
            metric(n, "task_msgs_received") - received[n.name] >= len(attack) for n in nodes
        ),
        "both daemons to take in the forged messages",
    )

    # Nothing moved: the same winners, every task open, pi-b alive to pi-c.
    for node in nodes:
        award = assignment(node)
        assert "ghost" not in {h[0] for h in award.values()}, (node.name, award)
        assert award == before, (node.name, award)
        assert metric(node, "tasks_open") == 4
        assert metric(node, "live_nodes") == 2
        assert metric(node, "deaths_seen") == 0
        # 16 ghost bids, 1 dead session, 4 bare tombstones, 4 forged signatures, 8 + 8 of
        # pi-a's own releases (beyond the round's epoch, or of an agent that holds nothing),
        # 4 + 4 + 4 of the hub's specs (a new round, other goals, pi-a's signature).
        assert metric(node, "relays_refused") - refused[node.name] == (
            16 + 1 + 4 + 4 + 8 + 8 + 4 + 4 + 4
        )
        assert {int(h[3]) for h in award.values()} == {epoch}  # the round the hub announced

    # The fleet keeps allocating: new tasks get holders on both daemons' agents.
    after = announce(hub, hub_key, "after-", 20)
    assert sorted(t for t in after if t.startswith("after-")) == [
        f"after-{i:04d}" for i in range(20)
    ]
    wait_until(lambda: all(len(assignment(n)) == 24 for n in nodes), "24 tasks awarded")

    # pi-b's next session is alive to its peer: its bids count again.
    bdseq = int(b.status()["fleet"]["link"]["bdseq"])
    assert b.stop() == 0
    wait_until(lambda: metric(c, "live_nodes") == 1, "pi-c to see pi-b stop")
    b.start()
    b.wait_status(lambda s: s["fleet"]["link"]["bdseq"] > bdseq, "pi-b's next session")
    wait_until(lambda: metric(c, "live_nodes") == 2, "pi-c to see pi-b's new session alive")
    again = announce(hub, hub_key, "again-", 20)
    assert sum(t.startswith("again-") for t in again) == 20
    wait_until(
        lambda: any(h[0] == "pi-b" for t, h in assignment(c).items() if t.startswith("again-")),
        "a task awarded to pi-b's new session",
    )
    for node in nodes:
        assert "Traceback" not in node.log()
