"""A node with a valid certificate can neither steal nor freeze the fleet's task allocation through
the facts its ``task_sync`` relays about other nodes, nor close a task for good with its own bids
and releases.

Real daemons, a real mosquitto running the configuration ``edge-agent-host broker init`` wrote
(TLS client certificates and the per-identity ACL). pi-b and pi-c coordinate; an attacker holds
pi-a's valid certificate and publishes on pi-a's own ``tasks`` topic (which the ACL lets it
write).

The relays that used to stop all task work until pi-a was revoked and every daemon restarted
at once:

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

Its own messages (pi-a born, its key published): bids at the end of the epoch range at the
lowest cost any model can compute, bids below that cost, and its own ``done`` releases at that
epoch. They used to raise the tasks' epoch there, win that round and close the tasks where no
announcement could reopen them. Each daemon refuses them, and the tasks stay allocated. What is
left is shown too: within ``MAX_ROUNDS`` of the hub's spec pi-a can still win a round with the
cheapest bid and close it, and the hub reopens it by announcing it again. Bids of a session the
daemons never saw born (no birth) are refused and counted.

Its own announcements: the hub's task ids in pi-a's own name at the end of the epoch range
(the larger spec used to win whoever announced it, and pi-a could then win the task and close
it there for good). A task id is its announcer's and the hub (its key is the daemons' hub key)
ranks before every node: each daemon refuses them, announced or relayed, and the hub's tasks
stay allocated. An id pi-a announces before the hub does, wins and closes at the end of the
range is the hub's again when the hub announces it, and goes to an honest agent.

A machine without mosquitto fails these tests with the way to install it; they never skip.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from edge_agent.coordination.ledger import Bid, bid_columns
from edge_agent.coordination.messages import (
    BidColumns,
    DeadSession,
    Release,
    ReleaseStatus,
    TaskAnnounce,
    TaskBids,
    TaskKey,
    TaskRelease,
    TaskSync,
    Tombstone,
)
from edge_agent.coordination.relay_admission import MAX_ROUNDS
from edge_agent.coordination.signing import TaskSigner, release_bytes, sign_specs
from edge_agent.coordination.utility import MIN_BID_COST
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import Birth, Body, Envelope, encode
from edge_agent_host.fleetctl.tasks import make_specs, random_specs
from edge_agent_host.keys import generate_keypair, load_signing_key
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


def announce(hub: list[str], key: Path, prefix: str, count: int, epoch: int = 0) -> dict[str, Any]:
    """Announce ``count`` tasks from the hub (signed with ``key``) at ``epoch`` and wait until
    each has a holder."""
    out = host_tool(
        "tasks", *hub, "announce", "--key", str(key), "--capability", "grid",
        "--count", str(count), "--epoch", str(epoch),
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


@dataclass
class Fleet:
    """pi-b and pi-c on the ``broker init`` broker, four tasks the hub announced awarded."""

    broker: MosquittoBroker
    clients: Path
    hub: list[str]
    hub_key: Path
    nodes: list[Node]
    before: dict[str, list[Any]]
    epoch: int

    def attacker(self, daemons: list[Any]) -> Client:
        """A client with pi-a's certificate (pi-a's daemon never runs)."""
        client = Client(self.broker, self.clients / "pi-a").ready()
        daemons.append(client)
        return client

    def counters(self, key: str) -> dict[str, float]:
        return {n.name: metric(n, key) for n in self.nodes}

    def send(self, attacker: Client, bodies: list[Body], first_seq: int, bdseq: int = 1) -> None:
        """Publish ``bodies`` on pi-a's tasks topic and wait until both daemons took them in."""
        received = self.counters("task_msgs_received")
        for seq, body in enumerate(bodies, start=first_seq):
            assert attacker.publish(TOPICS.tasks("pi-a"), forged(body, seq, bdseq)) == "Success"
        wait_until(
            lambda: all(
                metric(n, "task_msgs_received") - received[n.name] >= len(bodies)
                for n in self.nodes
            ),
            "both daemons to take in pi-a's messages",
        )

    def wait_refused(self, baseline: dict[str, dict[str, float]], expected: dict[str, int]) -> None:
        """Wait until every daemon counted at least ``expected`` more of each counter than
        ``baseline`` (counter -> node -> value): ``send`` waits for task messages received,
        which the nodes' own syncs count too, so the attacker's last ones may still be ahead."""
        wait_until(
            lambda: all(
                metric(n, key) - baseline[key][n.name] >= count
                for n in self.nodes
                for key, count in expected.items()
            ),
            f"both daemons to refuse {expected}",
        )


def start_fleet(tmp_path: Path, daemons: list[Any], hub_id: str = "hub") -> Fleet:
    port = free_port()
    out = broker_init(
        tmp_path / "pki", port, "--node", "pi-a", "--node", "pi-b", "--node", "pi-c",
        "--hub", hub_id,
    )  # fmt: skip
    broker: MosquittoBroker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    daemons.append(broker)
    clients = out / "clients"
    trusted = tmp_path / "trusted"
    hub_key = generate_keypair(trusted, "hub").private_path  # signs the hub's task specs
    nodes = [secure_node(tmp_path, broker, name, clients, trusted) for name in ("pi-b", "pi-c")]
    daemons.extend(nodes)
    for node in nodes:
        node.start(wait_ready=False)
    for node in nodes:
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)
    wait_until(lambda: all(metric(n, "live_nodes") == 2 for n in nodes), "the daemons to meet")
    wait_until(lambda: all(metric(n, "keys_learned") >= 1 for n in nodes), "the task keys")
    hub = hub_args(clients, broker, hub_id)
    held = announce(hub, hub_key, "before-", 4)
    assert sorted(held) == [f"before-{i:04d}" for i in range(4)]
    # Each daemon awards as the bids reach it: under load one may award a task before the other's
    # bids for it arrived, and both settle on the same award once they hold the same bids.
    wait_until(
        lambda: all(len(assignment(n)) == 4 for n in nodes)
        and assignment(nodes[0]) == assignment(nodes[1]),
        "both daemons to agree on the award of 4 tasks",
    )
    before = assignment(nodes[0])
    epoch = int(before["before-0000"][3])
    return Fleet(broker, clients, hub, hub_key, nodes, before, epoch)


def test_forged_relays_neither_steal_nor_freeze_the_allocation(
    tmp_path: Path, daemons: list[Any]
) -> None:
    fleet = start_fleet(tmp_path, daemons)
    hub, hub_key, nodes = fleet.hub, fleet.hub_key, fleet.nodes
    b, c = nodes
    before, epoch = fleet.before, fleet.epoch

    # The attacker: pi-a's certificate, pi-a's own tasks topic; it publishes a key of its own.
    attacker = fleet.attacker(daemons)
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
    fleet.send(attacker, attack, 2)
    fleet.wait_refused(
        {"relays_refused": refused}, {"relays_refused": 16 + 1 + 4 + 4 + 8 + 8 + 4 + 4 + 4}
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


def born(attacker: Client, fleet: Fleet, seq: int) -> None:
    """pi-a announces its session 1 (a birth on its own topic): the daemons take its bids."""
    birth = Birth(software_version="x", profile="x", budget_bytes=0)
    assert attacker.publish(TOPICS.birth("pi-a"), forged(birth, seq)) == "Success"
    wait_until(lambda: all(metric(n, "live_nodes") == 3 for n in fleet.nodes), "pi-a born")


def pi_a_bids(tasks: list[str], epoch: int, cost: float, bseq: int) -> TaskBids:
    """pi-a's bids on ``tasks`` at ``epoch``, agent ``i`` on task ``i``."""
    return TaskBids.from_arrays(
        "grid", bseq, tasks, epochs=[epoch] * len(tasks), task_index=list(range(len(tasks))),
        agents=list(range(len(tasks))), costs=[cost] * len(tasks),
    )  # fmt: skip


def test_a_future_epoch_bid_and_an_own_done_release_leave_the_tasks_allocatable(
    tmp_path: Path, daemons: list[Any]
) -> None:
    fleet = start_fleet(tmp_path, daemons)
    nodes, before, epoch = fleet.nodes, fleet.before, fleet.epoch
    tasks = sorted(before)
    attacker = fleet.attacker(daemons)
    key = TaskSigner.generate()
    topic = TOPICS.tasks("pi-a")
    assert attacker.publish(topic, forged(TaskKey(key=key.public), 1), retain=True) == "Success"
    wait_until(lambda: all(metric(n, "keys_learned") >= 2 for n in nodes), "pi-a's key")
    born(attacker, fleet, 2)
    bids_refused, relays_refused = fleet.counters("bids_refused"), fleet.counters("relays_refused")

    # The audit's attack: bids at the end of the epoch range at the lowest cost a model can
    # compute (which used to raise every task's epoch there and win that round), bids below
    # that cost, then pi-a's own signed done releases of that round.
    done = [
        Release(
            task=t, epoch=FOREVER, node="pi-a", group="grid", agent=i, bdseq=1, bseq=3,
            status=ReleaseStatus.DONE,
        )
        for i, t in enumerate(tasks)
    ]  # fmt: skip
    attack: list[Body] = [
        pi_a_bids(tasks, FOREVER, MIN_BID_COST, 1),
        pi_a_bids(tasks, epoch, -1e30, 2),
        TaskRelease(items=done, sigs=b"".join(key.sign(release_bytes(FLEET, r)) for r in done)),
    ]
    fleet.send(attacker, attack, 3)
    fleet.wait_refused(
        {"bids_refused": bids_refused, "relays_refused": relays_refused},
        {"bids_refused": 4 + 4, "relays_refused": 4},
    )
    for node in nodes:
        assert assignment(node) == before, node.name  # the same holders, in the same round
        assert metric(node, "tasks_open") == 4
        assert metric(node, "bids_refused") - bids_refused[node.name] == 4 + 4
        assert metric(node, "relays_refused") - relays_refused[node.name] == 4
    # Allocatable: the hub's new tasks get holders on both daemons.
    after = announce(fleet.hub, fleet.hub_key, "after-", 8)
    assert sum(t.startswith("after-") for t in after) == 8
    wait_until(lambda: all(len(assignment(n)) == 12 for n in nodes), "12 tasks awarded")

    # What is left: within MAX_ROUNDS of the hub's spec, the cheapest bid wins a round and the
    # winner's done release closes it. The hub reopens the task by announcing it again above.
    last = epoch + MAX_ROUNDS
    fleet.send(attacker, [pi_a_bids(["before-0000"], last, MIN_BID_COST, 4)], 6)
    wait_until(
        lambda: all(assignment(n)["before-0000"][::3] == ["pi-a", last] for n in nodes),
        "pi-a's cheapest bid to win the round it opened",
    )
    rel = replace(done[0], epoch=last, bseq=5)
    closing = TaskRelease(items=[rel], sigs=key.sign(release_bytes(FLEET, rel)))
    fleet.send(attacker, [closing], 7)
    wait_until(lambda: all(metric(n, "tasks_open") == 11 for n in nodes), "before-0000 closed")
    again = announce(fleet.hub, fleet.hub_key, "before-", 1, epoch=last + 1)
    claimed = {(h[0], h[3]) for h in again["before-0000"]}
    assert claimed & {("pi-b", last + 1), ("pi-c", last + 1)}, claimed
    wait_until(
        lambda: all(
            assignment(n).get("before-0000", [""])[0] in ("pi-b", "pi-c")
            and assignment(n)["before-0000"][3] == last + 1
            for n in nodes
        ),
        "before-0000 allocated again, to an honest agent",
    )
    for node in nodes:
        assert "Traceback" not in node.log()


def test_bids_of_a_session_never_seen_born_are_refused_and_counted(
    tmp_path: Path, daemons: list[Any]
) -> None:
    fleet = start_fleet(tmp_path, daemons)
    nodes, before, epoch = fleet.nodes, fleet.before, fleet.epoch
    tasks = sorted(before)
    attacker = fleet.attacker(daemons)
    refused = fleet.counters("bids_refused")
    # pi-a publishes bids (the cheapest a model can compute) and never a birth.
    fleet.send(attacker, [pi_a_bids(tasks, epoch, MIN_BID_COST, 1)], 1)
    fleet.wait_refused({"bids_refused": refused}, {"bids_refused": 4})
    for node in nodes:
        assert metric(node, "bids_refused") - refused[node.name] == 4
        assert assignment(node) == before, node.name
        assert metric(node, "live_nodes") == 2
    # Born, the same node's bids count: at the lowest cost it wins every task it bids on (what a
    # node can still do with its own bids; docs/security.md).
    born(attacker, fleet, 2)
    fleet.send(attacker, [pi_a_bids(tasks, epoch, MIN_BID_COST, 2)], 3)
    wait_until(
        lambda: all({h[0] for h in assignment(n).values()} == {"pi-a"} for n in nodes),
        "pi-a's bids to win once it is born",
    )
    for node in nodes:
        assert metric(node, "bids_refused") - refused[node.name] == 4
        assert "Traceback" not in node.log()


def test_a_node_re_announcing_the_hub_s_tasks_does_not_take_them_over(
    tmp_path: Path, daemons: list[Any]
) -> None:
    # The hub's name comes after pi-a's: only its key, the daemons' hub key, ranks it first.
    fleet = start_fleet(tmp_path, daemons, hub_id="site-hub")
    nodes, before = fleet.nodes, fleet.before
    tasks = sorted(before)
    attacker = fleet.attacker(daemons)
    key = TaskSigner.generate()
    topic = TOPICS.tasks("pi-a")
    assert attacker.publish(topic, forged(TaskKey(key=key.public), 1), retain=True) == "Success"
    wait_until(lambda: all(metric(n, "keys_learned") >= 2 for n in nodes), "pi-a's key")
    born(attacker, fleet, 2)
    counted = {k: fleet.counters(k) for k in ("specs_refused", "relays_refused", "bids_refused")}

    # The hub's tasks, announced again in pi-a's own name (signed with pi-a's key) at the end
    # of the epoch range with other goals, relayed in a sync too; then pi-a's cheapest bids of
    # that round and its done releases of it.
    hubs = random_specs(4, 100, prefix="before-", capability="grid", announced_by="site-hub")
    assert [s.task for s in hubs] == tasks
    mine = [
        replace(s, epoch=FOREVER, goal_state=(s.goal_state + 1) % 100, announced_by="pi-a")
        for s in hubs
    ]
    sigs = sign_specs(key.sign, FLEET, mine)
    done = [
        Release(
            task=t, epoch=FOREVER, node="pi-a", group="grid", agent=i, bdseq=1, bseq=3,
            status=ReleaseStatus.DONE,
        )
        for i, t in enumerate(tasks)
    ]  # fmt: skip
    attack: list[Body] = [
        TaskAnnounce(tasks=mine, sigs=sigs),
        TaskSync(tasks=mine, task_sigs=sigs),
        pi_a_bids(tasks, FOREVER, MIN_BID_COST, 1),
        TaskRelease(items=done, sigs=b"".join(key.sign(release_bytes(FLEET, r)) for r in done)),
    ]
    fleet.send(attacker, attack, 3)
    fleet.wait_refused(counted, {"specs_refused": 4, "relays_refused": 4 + 4, "bids_refused": 4})
    for node in nodes:
        assert assignment(node) == before, node.name  # the same holders, in the hub's round
        assert metric(node, "tasks_open") == 4
        refused = {k: metric(node, k) - v[node.name] for k, v in counted.items()}
        # 4 announced specs; 4 relayed specs and 4 done releases; 4 bids.
        assert refused == {"specs_refused": 4, "relays_refused": 4 + 4, "bids_refused": 4}
    after = announce(fleet.hub, fleet.hub_key, "after-", 8)
    assert sum(t.startswith("after-") for t in after) == 8
    wait_until(lambda: all(len(assignment(n)) == 12 for n in nodes), "12 tasks awarded")

    # Pre-emption: pi-a announces ids before the hub does, at the end of the range, wins them
    # with its cheapest bids and closes them there. The hub's announcement takes them back.
    early = random_specs(
        4, 100, prefix="next-", capability="grid", announced_by="pi-a", epoch=FOREVER
    )
    ids = [s.task for s in early]
    grab: list[Body] = [
        TaskAnnounce(tasks=early, sigs=sign_specs(key.sign, FLEET, early)),
        pi_a_bids(ids, FOREVER, MIN_BID_COST, 4),
    ]
    fleet.send(attacker, grab, 7)
    wait_until(
        lambda: all(
            all(assignment(n).get(t, [""])[::3] == ["pi-a", FOREVER] for t in ids) for n in nodes
        ),
        "pi-a to win the ids it announced first",
    )
    closing = [replace(r, task=t, bseq=5) for r, t in zip(done, ids, strict=True)]
    sigs = b"".join(key.sign(release_bytes(FLEET, r)) for r in closing)
    fleet.send(attacker, [TaskRelease(items=closing, sigs=sigs)], 9)
    wait_until(lambda: all(metric(n, "tasks_open") == 12 for n in nodes), "pi-a's ids closed")
    taken_back = announce(fleet.hub, fleet.hub_key, "next-", 4)
    assert sorted(t for t in taken_back if t.startswith("next-")) == ids
    wait_until(
        lambda: all(
            all(
                assignment(n).get(t, [""])[0] in ("pi-b", "pi-c") and assignment(n)[t][3] == 0
                for t in ids
            )
            for n in nodes
        ),
        "the hub's next- tasks allocated to honest agents, in the hub's round",
    )
    wait_until(lambda: all(metric(n, "tasks_open") == 16 for n in nodes), "16 tasks open")
    for node in nodes:
        assert "Traceback" not in node.log()


def team_view(node: Node) -> dict[str, Any]:
    found: dict[str, Any] = coord(node).get("teams", {})
    return found


def team_holds(tasks: list[str], node: str, rows: int, cost: float, role: int = 0) -> BidColumns:
    """Holds of ``node``'s agents ``0 ... rows - 1`` on every task's ``role``, as a sync relays
    them."""
    return bid_columns(
        [
            Bid(t, 0, node, "grid", agent, cost, 1, 1, role, True)
            for t in tasks
            for agent in range(rows)
        ]
    )


def test_team_tasks_meet_the_same_refusals(tmp_path: Path, daemons: list[Any]) -> None:
    """The probes above, on team tasks: holds of a node that does not exist or in another
    node's name relayed, holds of a session never seen born, members' releases with a forged
    signature, the hub's team spec relayed with another size, pi-a's own release of a slot its
    agent does not fill. Both daemons refuse them, and the teams keep their members; born, pi-a
    takes slots only with its own holds (what a node can still do in its own name)."""
    fleet = start_fleet(tmp_path, daemons)
    nodes = fleet.nodes
    announced = json.loads(
        host_tool(
            "tasks", *fleet.hub, "announce", "--key", str(fleet.hub_key), "--capability", "grid",
            "--team", "3", "T1=12", "T2=80", "--wait", "30", "--json",
        )
    )  # fmt: skip
    assert sorted(announced["teams"]) == ["T1", "T2"]
    wait_until(
        lambda: all(
            len(team_view(n)) == 2
            and all(
                not t["vacant"] and all(m[4] for m in t["members"]) for t in team_view(n).values()
            )
            for n in nodes
        ),
        "two whole teams, every member holding its slot",
    )
    teams = team_view(nodes[0])
    assert team_view(nodes[1]) == teams
    tasks = ["T1", "T2"]
    attacker = fleet.attacker(daemons)
    key = TaskSigner.generate()
    topic = TOPICS.tasks("pi-a")
    assert attacker.publish(topic, forged(TaskKey(key=key.public), 1), retain=True) == "Success"
    wait_until(lambda: all(metric(n, "keys_learned") >= 2 for n in nodes), "pi-a's key")
    baseline = {k: fleet.counters(k) for k in ("bids_refused", "relays_refused")}

    members = [
        Release(
            task=t,
            epoch=0,
            node=m[0],
            group="grid",
            agent=m[2],
            bdseq=1,
            bseq=9,
            status=ReleaseStatus.DONE,
            role=m[3],
        )
        for t in tasks
        for m in teams[t]["members"]
    ]
    specs = make_specs({"T1": 12, "T2": 80}, capability="grid", announced_by="hub", team=3, epoch=0)
    hub_sigs = sign_specs(load_signing_key(fleet.hub_key).sign, FLEET, specs)
    bigger = [replace(s, team=5) for s in specs]
    not_mine = [
        Release(
            task=t,
            epoch=0,
            node="pi-a",
            group="grid",
            agent=0,
            bdseq=1,
            bseq=3,
            status=ReleaseStatus.DONE,
            role=0,
        )
        for t in tasks
    ]
    signed = b"".join(key.sign(release_bytes(FLEET, r)) for r in not_mine)
    holds = TaskBids.from_arrays(
        "grid", 1, tasks, epochs=[0, 0], task_index=[0, 0, 0, 1, 1, 1], agents=[0, 1, 2, 3, 4, 5],
        costs=[MIN_BID_COST] * 6, roles=[0] * 6, holds=[1] * 6,
    )  # fmt: skip
    attack: list[Body] = [
        holds,  # pi-a never born: refused
        TaskSync(bids=team_holds(tasks, "ghost", 3, MIN_BID_COST)),
        TaskSync(bids=team_holds(tasks, "pi-b", 3, MIN_BID_COST)),
        TaskSync(closers=members, closer_sigs=os.urandom(64) * len(members)),
        TaskSync(tasks=bigger, task_sigs=hub_sigs),
        TaskRelease(items=not_mine, sigs=signed),
    ]  # fmt: skip
    fleet.send(attacker, attack, 2)
    fleet.wait_refused(baseline, {"bids_refused": 6, "relays_refused": 6 + 6 + 6 + 2 + 2})
    for node in nodes:
        assert team_view(node) == teams, node.name  # the same members, holding, same round
        assert metric(node, "team_slots_vacant") == 0
        assert metric(node, "live_nodes") == 2
    # What is left, as for one-agent tasks: born, pi-a's holds of its own agents at the lowest
    # cost take slots (the honest members whose costs are highest give them up).
    born(attacker, fleet, 8)
    fleet.send(attacker, [replace(holds, bseq=10)], 9)  # past the release refused (bseq 3)
    wait_until(
        lambda: all(
            sum(m[0] == "pi-a" for t in team_view(n).values() for m in t["members"]) == 6
            for n in nodes
        ),
        "pi-a's own holds to take the slots",
    )
    for node in nodes:
        assert "Traceback" not in node.log()
