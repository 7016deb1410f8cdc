"""CoordinationEngine on several nodes in one process: real FleetLinks on the in-memory broker."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from msgspec.structs import replace
from scipy.optimize import linear_sum_assignment

from edge_agent.aif import agreement
from edge_agent.aif.settings import AifSettings
from edge_agent.coordination import (
    AuctionSettings,
    CoordinatedGroup,
    CoordinationEngine,
    CoordinationSettings,
    ReleaseStatus,
    SharingSettings,
    TaskAnnounce,
    TaskBoard,
    TaskPreferences,
    TaskSpec,
    TaskState,
    task_utility,
)
from edge_agent.coordination.engine import HOLD_WAIT_STATES
from edge_agent.coordination.engine_io import MOVING_SYNC_PERIODS
from edge_agent.coordination.ledger import Bid, Team, bid_columns
from edge_agent.coordination.messages import (
    DeadSession,
    Role,
    TaskBids,
    TaskKey,
    TaskSync,
    Tombstone,
)
from edge_agent.coordination.signing import TaskSigner, sign_specs, spec_bytes
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import Birth, Body, Envelope, Telemetry
from edge_agent.fleet.topics import Route, TopicKind, Topics
from edge_agent.sim import BatchEnv
from edge_agent.sim.gridworld import gridworld_model
from edge_agent_host.fleetctl.tasks import random_team_specs
from tests.support.coordination_harness import (
    TICK_S,
    GroupSpec,
    SharedTruthWorld,
    SimFleet,
    SimNode,
    held_by_node,
    static_world_model,
)

GRID = gridworld_model(10, 10, noise=0.1, preference_scale=0.0)
WINDOW_S = 0.5
WINDOW_TICKS = round(WINDOW_S / TICK_S)


def settings(**auction: object) -> CoordinationSettings:
    base: dict[str, object] = {"window_s": WINDOW_S, "done_belief": None}
    return CoordinationSettings(
        auction=AuctionSettings(**{**base, **auction}),  # type: ignore[arg-type]
        tick_period_s=TICK_S,
    )


def grid_tasks(
    n: int, *, seed: int = 0, prefix: str = "t", by: str = "node0", epoch: int = 0
) -> list[TaskSpec]:
    goals = np.random.default_rng(seed).integers(0, 100, n)
    return [
        TaskSpec(
            task=f"{prefix}{i:03d}",
            epoch=epoch,
            capability="grid",
            goal_state=int(g),
            announced_by=by,
        )
        for i, g in enumerate(goals)
    ]


@pytest.fixture
def grid_fleet(tmp_path: Path) -> Iterator[SimFleet]:
    fleet = SimFleet(
        tmp_path, 5, {"grid": GroupSpec(GRID, 100, capabilities=("grid",))}, settings()
    )
    fleet.tick(3)  # agents localise themselves before they bid
    yield fleet
    fleet.close()


def assert_one_holder_per_task(fleet: SimFleet, tasks: int) -> dict[str, tuple[str, str, int]]:
    """Every live node computes the same award, of every task, with distinct agents, and each
    awarded agent -- and no other -- pursues its task on its own node."""
    awards = fleet.assignments()
    first = awards[0]
    assert all(a == first for a in awards[1:])
    assert len(first) == tasks
    assert len(set(first.values())) == tasks
    held = held_by_node(fleet)
    assert {t: h[0] for t, h in held.items()} == first
    assert all(len(h) == 1 for h in held.values())
    return first


def oracle(fleet: SimFleet) -> dict[str, tuple[str, str, int]]:
    """The award over the union of every live node's bids."""
    board = TaskBoard()
    for node in fleet.live:
        for part in node.engine.board.sync_parts():
            board.merge_sync(part)
    return {t: b.holder for t, b in board.award().items()}


def test_five_nodes_allocate_a_hundred_tasks_within_the_window(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    tasks = grid_tasks(100)
    fleet.nodes[0].engine.announce(tasks)
    fleet.tick(WINDOW_TICKS + 1)  # the announcement, then the window on every node
    at_close = assert_one_holder_per_task(fleet, 100)
    fleet.tick(10)
    assert assert_one_holder_per_task(fleet, 100) == at_close
    assert at_close == oracle(fleet)
    for node in fleet.nodes:
        m = node.engine.metrics()
        assert m["rounds"] == 100
        assert m["reawards"] == 0
        assert m["conflicts_detected"] == 0
        assert m["converge_s_max"] <= WINDOW_S
        assert m["tasks_held"] == sum(1 for h in at_close.values() if h[0] == node.node_id)
        assert m["malformed"] == 0
    # Every node's agents win some tasks; the winners are cheap: agents near the goal.
    assert {h[0] for h in at_close.values()} == {n.node_id for n in fleet.nodes}
    sent = sum(n.engine.counters["task_msgs_sent"] for n in fleet.nodes)
    assert sent <= 5 * 8  # one announcement, one bid batch per node, births' syncs, states


def test_a_dead_node_s_tasks_are_re_auctioned_to_the_others(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    fleet.nodes[0].engine.announce(grid_tasks(100))
    fleet.tick(WINDOW_TICKS + 1)
    before = assert_one_holder_per_task(fleet, 100)
    lost = {t for t, h in before.items() if h[0] == "node2"}
    assert lost
    fleet.kill("node2")
    fleet.tick(WINDOW_TICKS + 2)
    after = assert_one_holder_per_task(fleet, 100)
    assert all(h[0] != "node2" for h in after.values())
    assert {t for t in after if after[t] != before[t]} == lost  # the others keep theirs
    for node in fleet.live:
        board = node.engine.board
        assert {t for t in lost if board.epoch(t) == 1} == lost
        assert node.engine.counters["deaths_seen"] == 1
        assert node.engine.counters["death_reauctions"] == len(lost)


def test_a_healed_partition_resolves_duplicate_holders(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    fleet.nodes[0].engine.announce(grid_tasks(60))
    fleet.nodes[0].link.pump()  # every node has the announcement ...
    fleet.partition([{"node0", "node1"}, {"node2", "node3", "node4"}])  # ... not the bids
    fleet.tick(WINDOW_TICKS + 2)
    left, right = fleet.assignments()[0], fleet.assignments()[2]
    assert len(left) == len(right) == 60
    assert all(left[t][0] in {"node0", "node1"} for t in left)
    assert all(right[t][0] in {"node2", "node3", "node4"} for t in right)
    assert all(len(h) == 2 for h in held_by_node(fleet).values())  # every task held twice
    fleet.heal()
    for _ in range(80):
        fleet.tick()
        awards = fleet.assignments()
        if all(a == awards[0] for a in awards) and all(
            len(h) == 1 for h in held_by_node(fleet).values()
        ):
            break
    final = assert_one_holder_per_task(fleet, 60)
    assert final == oracle(fleet)
    fleet.tick(2 * round(1.0 / TICK_S))  # one more round of task_state messages
    detected = resolved = 0
    for node in fleet.nodes:
        m = node.engine.metrics()
        assert m["conflicts_open"] == 0
        detected += int(m["conflicts_detected"])
        resolved += int(m["conflicts_resolved"])
        assert m["syncs_received"] > 0
    assert detected == resolved >= 60


def test_late_bids_re_award_deterministically(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    fleet.nodes[0].engine.announce(grid_tasks(40))
    fleet.nodes[0].link.pump()
    fleet.partition([{"node0", "node1", "node2", "node3"}, {"node4"}])
    fleet.tick(WINDOW_TICKS + 2)  # the four decided without node4's bids
    without = fleet.assignments()[0]
    assert all(h[0] != "node4" for h in without.values())
    fleet.heal()
    for _ in range(80):
        fleet.tick()
        awards = fleet.assignments()
        if all(a == awards[0] for a in awards) and all(
            len(h) == 1 for h in held_by_node(fleet).values()
        ):
            break
    final = assert_one_holder_per_task(fleet, 40)
    assert final == oracle(fleet)
    assert any(h[0] == "node4" for h in final.values())  # node4's cheaper bids won some
    changed = sum(1 for t in final if final[t] != without[t])
    assert fleet.nodes[0].engine.metrics()["reawards"] == changed > 0


def test_a_re_announced_task_is_auctioned_again(grid_fleet: SimFleet) -> None:
    """Its announcer announces a task again with a larger epoch: a new round. Another node
    cannot: the id is its announcer's."""
    fleet = grid_fleet
    fleet.nodes[0].engine.announce(grid_tasks(5))
    fleet.tick(WINDOW_TICKS + 1)
    assert_one_holder_per_task(fleet, 5)
    moved = grid_tasks(1, seed=9, epoch=1)[0]  # t000 again, a new goal, epoch 1
    fleet.nodes[0].engine.announce([moved])
    fleet.tick(WINDOW_TICKS + 1)
    final = assert_one_holder_per_task(fleet, 5)
    for node in fleet.nodes:
        assert node.engine.board.epoch("t000") == 1
        assert node.engine.board.specs["t000"].goal_state == moved.goal_state
    assert "t000" in final
    with pytest.raises(InputError, match="'node0''s: announce it under another id"):
        fleet.nodes[3].engine.announce([replace(moved, epoch=2, announced_by="node3")])


def test_rival_announcers_of_one_id_end_with_the_same_owner_everywhere(tmp_path: Path) -> None:
    """node1 and node3 announce the same ids in the same tick (each node sees its own first,
    the other a tick later), then the hub (its task key one of the nodes' hub keys) announces
    them too: every node binds each id to node1 first, then to the hub, and ends with the same
    ledger and one holder per task, in the hub's round."""
    fleet = SimFleet(tmp_path, 4, {"grid": GroupSpec(GRID, 40, capabilities=("grid",))}, settings())
    try:
        hub = SimNode(
            fleet.broker, tmp_path, "hub", {"grid": GroupSpec(GRID, 1)}, fleet.clock,
            settings=settings(), seed=9,
        )  # fmt: skip
        fleet.nodes.append(hub)
        for node in fleet.nodes:
            node.engine.authorities = frozenset({hub.engine.signer.public})
        fleet.tick(3)
        fleet.nodes[3].engine.announce(grid_tasks(10, seed=3, epoch=2, by="node3"))
        fleet.nodes[1].engine.announce(grid_tasks(10, seed=1, by="node1"))
        fleet.tick(WINDOW_TICKS + 2)
        first = assert_one_holder_per_task(fleet, 10)
        mine = {s.task: s for s in grid_tasks(10, seed=1, by="node1")}
        for node in fleet.nodes:
            assert node.engine.board.specs == mine, node.node_id
            assert set(node.engine.board.open_epochs().values()) == {0}
        assert first == oracle(fleet)
        hub.engine.announce(grid_tasks(10, seed=5, by="hub"))
        fleet.tick(WINDOW_TICKS + 2)
        assert_one_holder_per_task(fleet, 10)
        hubs = {s.task: s for s in grid_tasks(10, seed=5, by="hub")}
        for node in fleet.nodes:
            assert node.engine.board.specs == hubs, node.node_id
            assert {node.engine.board.owner(t) for t in hubs} == {"hub"}
        assert len({n.engine.board.digest() for n in fleet.nodes}) == 1
        refused = sum(n.engine.counters["specs_refused"] for n in fleet.nodes)
        assert refused == 10 * 4  # node3's specs, at node0, node1, node2 and the hub
    finally:
        fleet.close()


def test_tasks_get_done_once_each(tmp_path: Path) -> None:
    fleet = SimFleet(
        tmp_path,
        3,
        {"grid": GroupSpec(GRID, 30, capabilities=("grid",))},
        settings(done_belief=0.9),
    )
    try:
        fleet.tick(3)
        fleet.nodes[1].engine.announce(grid_tasks(30, by="node1"))
        for _ in range(150):
            fleet.tick()
            if all(not n.engine.board.open_epochs() for n in fleet.nodes):
                break
        done = sum(n.engine.counters["tasks_done"] for n in fleet.nodes)
        assert done == 30
        assert all(not n.engine.board.open_epochs() for n in fleet.nodes)
        assert held_by_node(fleet) == {}
    finally:
        fleet.close()


def test_announcing_for_someone_else_is_refused(grid_fleet: SimFleet) -> None:
    with pytest.raises(InputError, match="announced by"):
        grid_fleet.nodes[0].engine.announce(grid_tasks(1, by="node1"))


def test_the_inbox_is_bounded(tmp_path: Path) -> None:
    small = CoordinationSettings(max_inbox=3, auction=AuctionSettings(window_s=WINDOW_S))
    fleet = SimFleet(tmp_path, 2, {"grid": GroupSpec(GRID, 5, capabilities=("grid",))}, small)
    try:
        for i in range(10):
            fleet.nodes[0].engine.announce(grid_tasks(1, prefix=f"x{i}-"))
        fleet.nodes[0].link.pump()
        fleet.nodes[1].receive()
        m = fleet.nodes[1].engine.metrics()
        assert m["inbox_depth"] == 3
        assert m["inbox_dropped"] >= 7
    finally:
        fleet.close()


# --------------------------------------------------------------------------------------------
# belief sharing over the network


def steps_to_confidence(tmp_path: Path, n_nodes: int, *, sharing: bool) -> float:
    S, n = 8, 100
    model = static_world_model(S, 0.3)
    truth = np.random.default_rng(11).integers(0, S, n)
    share = (
        SharingSettings(
            factors=(0,), trust=0.5, min_evidence_nats=0.1, bound_nats=8.0, bytes_per_agent_s=200.0
        )
        if sharing
        else None
    )
    fleet = SimFleet(
        tmp_path / f"{n_nodes}-{sharing}",
        n_nodes,
        {"w": GroupSpec(model, n, sharing=share)},
        CoordinationSettings(tick_period_s=TICK_S),
        env_factory=lambda m, k, seed: SharedTruthWorld(m, truth, seed),
    )
    try:
        reached = np.full(n, 80)
        for t in range(80):
            fleet.tick()
            q = fleet.nodes[0].groups["w"].qs[0][np.arange(n), truth]
            reached = np.where((q >= 0.95) & (reached == 80), t + 1, reached)
        if sharing:
            stats = fleet.nodes[0].engine.metrics()
            assert stats["beliefs.w.peers"] == n_nodes - 1
            assert stats["beliefs.w.bytes_per_agent_s"] <= 200.0 * (1 + 2.0 / 8.0)
        return float(np.median(reached))
    finally:
        fleet.close()


def test_peers_reach_confidence_on_a_shared_factor_sooner(tmp_path: Path) -> None:
    alone = steps_to_confidence(tmp_path, 1, sharing=False)
    shared = steps_to_confidence(tmp_path, 5, sharing=True)
    assert shared <= alone / 2
    assert alone >= 10


class FakeLink:
    """The LinkLike surface, recording what is published."""

    def __init__(self, node_id: str = "solo") -> None:
        self.node_id = node_id
        self.topics = Topics("coord")
        self.bdseq: int | None = 0
        self.published: list[tuple[str, object]] = []

    def publish(
        self,
        msg_type: str,
        body: object,
        cls: str = "event",
        *,
        topic: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> int:
        del cls, topic, qos, retain
        self.published.append((msg_type, body))
        return len(self.published)

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        del pattern, qos

    def send_now(self) -> int:
        return 0  # what is published is recorded at once


@pytest.mark.parametrize("precision", ["int8", "float64"])
def test_holders_decide_as_if_planned_with_the_task_preferences(precision: str) -> None:
    """engine.step (the fused group step, then holders decide again) equals planning the
    holders with their task preferences from the start (the unfused reference)."""
    model = gridworld_model(6, 6, noise=0.1, preference_scale=1.0)
    settings_ = AifSettings(policy_len=2)
    n = 12
    mine = AifAgentGroup(model, n, settings=settings_, precision=precision, seed=1)  # type: ignore[arg-type]
    ref = AifAgentGroup(model, n, settings=settings_, precision=precision, seed=1)  # type: ignore[arg-type]
    engine = CoordinationEngine(FakeLink(), {"g": CoordinatedGroup(group=mine)})
    prefs = engine.groups["g"].prefs
    ref_prefs = TaskPreferences(ref.cm, n, use_utility=True)
    for agent, goal in ((0, 35), (3, 0), (7, 20)):
        task = TaskSpec(
            task=f"t{agent}", epoch=0, capability="grid", goal_state=goal, announced_by="solo"
        )
        for p, g in ((prefs, mine), (ref_prefs, ref)):
            p.assign(agent, task, 0, task_utility(g.cm, 0, goal))
    env = BatchEnv(model, n, seed=2)
    for _ in range(8):
        obs = env.obs.copy()
        actions = engine.step("g", obs).copy()
        ref.infer_states(obs)
        ref.infer_policies()
        ref_prefs.adjust(ref.qs, ref.G, ref.q_pi, gamma=settings_.gamma, lnE=ref.cm.lnE)
        expected = ref.sample_action().copy()
        onehot = ref.cm.tree.first_action_onehot
        # The holders' actions come from select_actions, the reference's from the group's
        # select_block: the same marginals summed in another order, and the symmetric grid ties
        # moves exactly. Each side's actions are optimal under the other's q_pi (STYLE 19).
        tol = {"float64": 1e-9, "int8": agreement.ROUNDING_TOL}[precision]
        assert agreement.actions_agree(ref.q_pi, onehot, actions, tol=tol).all()
        assert agreement.actions_agree(mine.q_pi, onehot, expected, tol=tol).all()
        np.testing.assert_allclose(mine.q_pi, ref.q_pi, atol=1e-5)
        ref.set_action(actions)  # the reference follows through a tie: priors for one action
        np.testing.assert_allclose(mine.prior[0], ref.prior[0], atol=1e-5)
        env.step(actions)


@dataclass(frozen=True)
class Msg:
    route: Route
    envelope: Envelope


def task_msg(
    body: Body, node: str = "peer", *, bdseq: int = 0, kind: TopicKind = TopicKind.TASKS
) -> Msg:
    env = Envelope(
        type=body.TYPE, node=node, seq=1, bdseq=bdseq, ts=0.0, clock_synced=False, body=body
    )
    return Msg(Route("coord", kind, node), env)


PEER_KEY = TaskSigner.generate()
"""The task key of the test's ``peer`` (:meth:`Ticker.know_peer` makes the engine learn it)."""


def announce_msg(specs: list[TaskSpec], node: str = "peer", signer: TaskSigner = PEER_KEY) -> Msg:
    """``specs`` announced by ``node``, signed with ``signer``'s key."""
    sigs = sign_specs(signer.sign, "coord", specs)
    return task_msg(TaskAnnounce(tasks=specs, sigs=sigs), node=node)


def birth(node: str, bdseq: int) -> Msg:
    body = Birth(software_version="x", profile="x", budget_bytes=0)
    return task_msg(body, node, bdseq=bdseq, kind=TopicKind.BIRTH)


class Ticker:
    """One engine on a FakeLink with a grid group, on a test clock."""

    def __init__(self, authorities: frozenset[bytes] = frozenset(), **auction: object) -> None:
        self.now = 0.0
        self.wall = 1_000.0
        self.link = FakeLink()
        self.group = AifAgentGroup(GRID, 10, seed=0)
        self.env = BatchEnv(GRID, 10, seed=0)
        self.engine = CoordinationEngine(
            self.link,
            {"grid": CoordinatedGroup(group=self.group, capabilities=("grid",))},
            settings(**auction),
            monotonic=lambda: self.now,
            wall_clock=lambda: self.wall,
            authorities=authorities,
        )

    def know_peer(self, node: str = "peer", signer: TaskSigner = PEER_KEY) -> None:
        """``node`` publishes its task key on its own topic."""
        self.engine.handle(task_msg(TaskKey(key=signer.public), node=node))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.engine.before_step()
            self.env.step(self.engine.step("grid", self.env.obs))
            self.engine.after_step()
            self.now += TICK_S
            self.wall += TICK_S

    def sent(self, msg_type: str) -> list[object]:
        return [b for t, b in self.link.published if t == msg_type]


def test_deadlines_and_completion_release_tasks() -> None:
    t = Ticker()
    t.tick(2)
    far = TaskSpec(
        task="late",
        epoch=0,
        capability="grid",
        goal_state=99,
        deadline=t.wall + 1.0,
        announced_by="solo",
    )
    other = TaskSpec(task="told", epoch=0, capability="grid", goal_state=0, announced_by="solo")
    t.engine.announce([far, other])
    t.tick(WINDOW_TICKS + 1)
    held = {task for task, _ in t.engine.groups["grid"].prefs.held.values()}
    assert held == {"late", "told"}
    agent = next(a for a, (task, _) in t.engine.groups["grid"].prefs.held.items() if task == "told")
    t.engine.complete("grid", [agent])
    t.tick(6)  # and the deadline of "late" passes
    statuses = {i.task: i.status for r in t.sent("task_release") for i in r.items}  # type: ignore[attr-defined]
    assert statuses == {"told": ReleaseStatus.DONE, "late": ReleaseStatus.EXPIRED}
    m = t.engine.metrics()
    assert (m["tasks_done"], m["tasks_expired"], m["tasks_open"], m["tasks_held"]) == (1, 1, 0, 0)
    with pytest.raises(InputError, match="out of range"):
        t.engine.complete("grid", [10])


def test_an_unexplained_digest_triggers_a_sync_and_an_explained_one_does_not() -> None:
    t = Ticker(sync_after_s=1.0, sync_min_interval_s=0.0, state_every_s=0.5)
    t.engine.announce(
        [TaskSpec(task="a", epoch=0, capability="grid", goal_state=5, announced_by="solo")]
    )
    t.tick(3)
    syncs = len(t.sent("task_sync"))
    own = t.engine.board.digest()
    for _ in range(15):  # a peer in step with us: never a sync
        t.engine.handle(task_msg(TaskState(digest=own, open_tasks=1)))
        t.tick()
    assert len(t.sent("task_sync")) == syncs
    for _ in range(15):  # a peer that knows something we never hear about
        t.engine.handle(task_msg(TaskState(digest=bytes(16), open_tasks=1)))
        t.tick()
    assert len(t.sent("task_sync")) > syncs
    assert t.engine.metrics()["digest_mismatches"] >= 15


def test_rebirths_of_known_sessions_send_the_digest_no_faster_than_the_least_interval() -> None:
    """Issue 55: twenty peers reborn at once (a client asked them) made a node send its
    task_state once per tick in which a birth came. A new session gets the digest at the next
    tick (and a sync); a known one's rebirths, one every tick, get it every
    ``state_min_interval_s`` at most."""
    t = Ticker(state_every_s=10.0, state_min_interval_s=0.3)
    for i in range(5):
        t.engine.handle(birth(f"p{i}", 1))
    t.tick(1)
    states = len(t.sent("task_state"))
    t.tick(20)  # quiet: the next state is 10 s away
    assert len(t.sent("task_state")) == states
    t.engine.handle(birth("new", 1))
    t.tick(1)
    assert len(t.sent("task_state")) == states + 1  # a new node: our digest at once
    states += 1
    for i in range(10):  # 1 s of rebirths of known sessions, one a tick
        t.engine.handle(birth(f"p{i % 5}", 1))
        t.tick(1)
    sent = len(t.sent("task_state")) - states
    assert 1 <= sent <= math.ceil(10 * TICK_S / 0.3)


def test_a_peer_whose_ledger_is_still_moving_is_synced_only_at_the_cap() -> None:
    """Issue 55: a formation longer than ``sync_after_s`` kept each peer's digests unexplained
    (its ledger passed through states ours never had) and every node synced to all once it
    was over. A peer saying a new unexplained digest each state is still merging: synced after
    ``MOVING_SYNC_PERIODS`` ``sync_after_s``; one that keeps the same, after one."""
    t = Ticker(sync_after_s=1.0, sync_min_interval_s=0.0, state_every_s=0.5)
    t.engine.announce(
        [TaskSpec(task="a", epoch=0, capability="grid", goal_state=5, announced_by="solo")]
    )
    t.tick(3)
    syncs = len(t.sent("task_sync"))
    per_state = round(0.5 / TICK_S)
    cap = MOVING_SYNC_PERIODS * 1.0
    for i in range(round(cap / 0.5) - 1):  # a new digest, never ours, every state period
        t.engine.handle(task_msg(TaskState(digest=bytes([i + 1]) * 16, open_tasks=1)))
        t.tick(per_state)
    assert len(t.sent("task_sync")) == syncs
    t.engine.handle(task_msg(TaskState(digest=bytes([99]) * 16, open_tasks=1)))
    t.tick(per_state + 1)  # the cap since its first unexplained digest
    assert len(t.sent("task_sync")) > syncs
    syncs = len(t.sent("task_sync"))
    t.tick(round(2 * cap / TICK_S))  # nothing new heard: the sync answered it; no other
    t.engine.handle(task_msg(TaskState(digest=t.engine.board.digest(), open_tasks=1)))
    t.tick(1)
    syncs = len(t.sent("task_sync"))
    for _ in range(round(1.0 / TICK_S) + 2):  # the same unexplained digest: one sync_after_s
        t.engine.handle(task_msg(TaskState(digest=bytes(16), open_tasks=1)))
        t.tick()
    assert len(t.sent("task_sync")) > syncs


def test_an_announcement_in_another_node_s_name_is_dropped_whole() -> None:
    """A node announces only its own tasks: its topic (bound to its broker identity) names the
    sender, so a spec claiming someone else drops the message, the honest spec in it too."""
    t = Ticker()
    t.know_peer()
    t.tick(2)
    honest = TaskSpec(task="a", epoch=0, capability="grid", goal_state=5, announced_by="peer")
    forged = replace(honest, task="b", announced_by="hub")
    t.engine.handle(announce_msg([honest, forged]))
    t.tick()
    assert t.engine.counters["malformed"] == 1
    assert t.engine.metrics()["tasks_open"] == 0
    t.engine.handle(announce_msg([honest]))
    t.tick()
    assert t.engine.counters["malformed"] == 1
    assert t.engine.metrics()["tasks_open"] == 1


def test_metrics_fit_a_telemetry_message() -> None:
    t = Ticker()
    t.tick(2)
    counters = t.engine.telemetry_counters()
    assert counters["coord.live_nodes"] == 1.0
    telemetry = Telemetry(
        uptime_s=1.0,
        rss_bytes=1,
        budget_used_bytes=1,
        budget_total_bytes=1,
        ticks=1,
        tick_p50_ms=1.0,
        tick_p99_ms=1.0,
        overruns=0,
        counters=counters,
    )
    assert telemetry.counters == counters
    assert t.engine.nbytes == t.engine.groups["grid"].prefs.nbytes > 0


def test_a_late_joiner_takes_a_dead_holder_s_signed_tombstones_from_a_peer(
    tmp_path: Path,
) -> None:
    """Tombstones travel as the holder's signed releases: a node that joins after the holder
    died checks them against the key the holder published (retained) and ends with the same
    ledger as everyone, without a sync storm."""
    fleet = SimFleet(
        tmp_path,
        3,
        {"grid": GroupSpec(GRID, 20, capabilities=("grid",))},
        settings(done_belief=0.9),
    )
    try:
        fleet.tick(3)
        fleet.nodes[1].engine.announce(grid_tasks(12, by="node1"))
        for _ in range(150):
            fleet.tick()
            if all(not n.engine.board.open_epochs() for n in fleet.nodes):
                break
        assert all(not n.engine.board.open_epochs() for n in fleet.nodes)
        done_by_0 = fleet.nodes[0].engine.counters["tasks_done"]
        assert done_by_0 > 0
        fleet.kill("node0")
        fleet.tick(3)
        late = SimNode(
            fleet.broker, tmp_path, "late", {"grid": GroupSpec(GRID, 20, capabilities=("grid",))},
            fleet.clock, settings=settings(done_belief=0.9), seed=9,
        )  # fmt: skip
        fleet.nodes.append(late)
        for _ in range(40):
            fleet.tick()
            digests = {n.engine.board.digest() for n in fleet.live}
            if len(digests) == 1:
                break
        assert len({n.engine.board.digest() for n in fleet.live}) == 1
        board = late.engine.board
        assert board.closed == fleet.nodes[1].engine.board.closed
        assert len(board.closed) == 12
        assert {r.node for r, _ in board.closers.values()} >= {"node0"}
        fleet.tick(round(10.0 / TICK_S))  # syncs wanted before the agreement go out
        syncs = sum(n.engine.counters["syncs_sent"] for n in fleet.live)
        fleet.tick(round(5.0 / TICK_S))  # agreement holds: no more syncs
        assert sum(n.engine.counters["syncs_sent"] for n in fleet.live) == syncs
        assert len({n.engine.board.digest() for n in fleet.live}) == 1
    finally:
        fleet.close()


def test_relayed_facts_say_no_more_than_their_subjects_said() -> None:
    """A peer's sync carries facts about other nodes; each is taken only as far as this node
    has heard it from the node it is about (unit-level; tests/integration/
    test_coordination_relays.py runs the attacks on real daemons)."""
    t = Ticker()
    t.know_peer()
    t.tick(2)
    spec = TaskSpec(task="a", epoch=3, capability="grid", goal_state=5, announced_by="peer")
    t.engine.handle(announce_msg([spec]))
    t.engine.handle(birth("b", 5))
    t.engine.handle(birth("peer", 0))
    t.tick()
    ghost = Bid("a", 3, "ghost", "grid", 0, -1e30, 0, 1)
    own = Bid("a", 3, "peer", "grid", 1, 5.0, 0, 1)
    sync = TaskSync(
        bids=bid_columns([ghost, own]),
        dead=[DeadSession(node="b", bdseq=7), DeadSession(node="b", bdseq=UINT32 - 1)],
        closed=[Tombstone(task="a", epoch=UINT32 - 1)],
    )
    t.engine.handle(task_msg(sync, node="peer"))
    t.tick()
    board = t.engine.board
    bidders = {b.node for b in board.valid_bids("a")}
    assert bidders == {"solo", "peer"}  # this node's own, and the sender's: not the ghost
    assert board.dead == {}  # b's sessions 7 and later: b (at 5) never said there were any
    assert board.is_open("a")
    assert t.engine.counters["relays_refused"] == 1 + 2 + 1
    # b's next session (seen from b itself) makes session 7 over: now a relay may say so.
    t.engine.handle(birth("b", 8))
    t.engine.handle(task_msg(TaskSync(dead=[DeadSession(node="b", bdseq=7)]), node="peer"))
    t.tick()
    assert board.dead == {"b": 7}
    # A bid of a session its node was never seen born in (a number that would outlive the
    # node's will) is refused, sent directly or in the node's own sync.
    future = TaskBids.from_arrays(
        "grid", 2, ["a"], epochs=[3], task_index=[0], agents=[2], costs=[1.0]
    )
    t.engine.handle(task_msg(future, node="peer", bdseq=UINT32 - 1))
    late = own._replace(agent=3, bdseq=UINT32 - 1)
    t.engine.handle(task_msg(TaskSync(bids=bid_columns([late])), node="peer"))
    t.tick()
    assert {b.agent for b in board.valid_bids("a") if b.node == "peer"} == {1}
    assert t.engine.counters["bids_refused"] == 1
    assert t.engine.counters["relays_refused"] == 1 + 2 + 1 + 1


def test_a_spec_is_taken_only_with_its_announcer_s_signature() -> None:
    """Specs carry their announcer's signature, directly and in every relay: a node relaying
    a spec at a higher epoch (a new round) or with another goal, or signing another's spec
    with its own key, is refused and counted (``relays_refused``; ``specs_refused`` for an
    announcement); a genuine relay of the hub's spec is taken (unit-level;
    tests/integration/coordination/test_coordination_relays.py runs the attack on real daemons)."""
    hub, n1 = TaskSigner.generate(), TaskSigner.generate()
    t = Ticker()
    t.know_peer()
    t.know_peer("hub", hub)
    t.know_peer("n1", n1)
    t.tick(2)
    spec = TaskSpec(task="a", epoch=0, capability="grid", goal_state=5, announced_by="peer")
    t.engine.handle(announce_msg([spec]))
    t.tick()
    board = t.engine.board
    assert board.specs["a"] == spec
    sig = board.spec_sigs["a"]
    # n1 relays peer's spec as a new round and with another goal, under peer's signature, and
    # signs one with its own key.
    newer, other_goal = replace(spec, epoch=7), replace(spec, goal_state=6, deadline=1.0)
    forged = TaskSync(
        tasks=[newer, other_goal, replace(spec, epoch=8)],
        task_sigs=sig + sig + n1.sign(spec_bytes("coord", replace(spec, epoch=8))),
    )
    t.engine.handle(task_msg(forged, node="n1"))
    t.tick()
    assert board.specs["a"] == spec
    assert board.floor["a"] == 0
    assert t.engine.counters["relays_refused"] == 3
    # An announcement whose signature is not the announcer's is dropped and counted, as is
    # one of a node whose key this node does not know.
    t.engine.handle(announce_msg([replace(spec, task="b")], signer=n1))
    t.engine.handle(announce_msg([replace(spec, task="c", announced_by="x")], node="x"))
    t.tick()
    assert not {"b", "c"} & set(board.specs)
    assert t.engine.counters["specs_refused"] == 2
    assert t.engine.counters["malformed"] == 0
    # The hub's spec, relayed by n1 as the hub signed it, is taken and relayed on with it.
    task = TaskSpec(task="h", epoch=1, capability="grid", goal_state=3, announced_by="hub")
    relay = TaskSync(tasks=[task], task_sigs=sign_specs(hub.sign, "coord", [task]))
    t.engine.handle(task_msg(relay, node="n1"))
    t.tick()
    assert board.specs["h"] == task
    assert t.engine.counters["relays_refused"] == 3
    mine = {s.task: s for p in board.sync_parts() for s in p.tasks}
    assert mine == {"a": spec, "h": task}
    # An announcement without signatures is malformed (a node of an earlier version).
    with pytest.raises(ValueError, match="sigs has 0 bytes"):
        TaskAnnounce(tasks=[spec])


# --------------------------------------------------------------------------------------------
# team tasks


def tick_until_held(fleet: SimFleet, most: int = 60) -> None:
    """Tick until every live node's teams are whole and every member holds its slot, and one
    tick more (members hold once their node has every live peer's bids, or two state periods
    past their window, and pursue from the next tick; a bound, not a speed: the fleet runs on
    a simulated clock)."""
    for _ in range(most):
        fleet.tick()
        teams = [n.engine.board.teams() for n in fleet.live]
        if all(t == teams[0] for t in teams) and all(
            team.vacant == 0 and all(m.held for m in team.members) for team in teams[0].values()
        ):
            fleet.tick()  # the members' nodes give them their roles' preferences
            return


def team_tasks(n: int, *, seed: int = 0, by: str = "node0") -> list[TaskSpec]:
    """``n`` teams of 2-5 grid agents, in up to three roles with goals of their own."""
    return random_team_specs(
        n, 100, sizes=(2, 5), max_roles=3, seed=seed, capability="grid", announced_by=by
    )


def assert_teams_agree(fleet: SimFleet, specs: list[TaskSpec]) -> dict[str, Team]:
    """Every live node holds the same team award, every team whole, an agent in one slot at
    most; each member, and no other agent, pursues its role's goal on its own node."""
    teams = [n.engine.board.teams() for n in fleet.live]
    assert all(t == teams[0] for t in teams[1:])
    award = teams[0]
    assert set(award) == {s.task for s in specs}
    members = [m.holder for t in award.values() for m in t.members]
    assert len(members) == len(set(members)) == sum(s.size for s in specs)
    for spec in specs:
        team = award[spec.task]
        assert team.vacant == 0
        for role, slots in enumerate(spec.slots()):
            assert sum(m.role == role for m in team.members) == slots.agents
    pursued = held_by_node(fleet)
    assert {t: sorted(h) for t, h in pursued.items() if t in award} == {
        t: sorted(m.holder for m in team.members) for t, team in award.items()
    }
    for node in fleet.live:
        for name, gs in node.engine.groups.items():
            for agent, (task, _) in gs.prefs.held.items():
                if task not in award:
                    continue
                member = award[task].member((node.node_id, name, agent))
                assert member is not None
                goal = node.engine.board.specs[task].slots()[member.role]
                slot = gs.prefs.slot[agent]
                assert gs.prefs.goal_state[slot] == goal.goal_state  # its role's goal
    return award


def test_five_nodes_form_fifty_teams_of_mixed_roles_the_same_everywhere(
    grid_fleet: SimFleet,
) -> None:
    fleet = grid_fleet
    specs = team_tasks(50)
    assert any(len(s.slots()) > 1 for s in specs)
    fleet.nodes[0].engine.announce(specs)
    tick_until_held(fleet)  # the announcement, the windows, the ledgers agree: holds
    award = assert_teams_agree(fleet, specs)
    assert all(m.held for t in award.values() for m in t.members)  # every member took its slot
    # Most awards after the first were the last fill less the slots members took (refills):
    # what a board that takes the same facts at once computes with a fill of its own.
    assert sum(node.engine.board.refills for node in fleet.nodes) > 0
    fresh = TaskBoard()
    for part in fleet.nodes[0].engine.board.sync_parts():
        fresh.merge_sync(part)
    assert fresh.teams() == award
    assert fresh.refills == 0
    fleet.tick(10)
    assert assert_teams_agree(fleet, specs) == award
    for node in fleet.nodes:
        m = node.engine.metrics()
        assert m["teams_formed"] == 50
        assert m["team_slots_vacant"] == 0
        assert m["team_form_s_max"] <= WINDOW_S
        assert m["conflicts_open"] == 0
        assert m["malformed"] == 0
    # The award is the optimum over the bids (every team can form: the least total cost).
    board = fleet.nodes[0].engine.board
    assert team_award_cost(board, award) == pytest.approx(optimal_team_cost(board), abs=0.01)


def team_award_cost(board: TaskBoard, award: dict[str, Team]) -> float:
    return sum(m.cost for t in award.values() for m in t.members)


def optimal_team_cost(board: TaskBoard) -> float:
    """scipy's optimum over the team tasks' bids, slots expanded into a matrix."""
    slots: list[tuple[str, int]] = []
    for task, spec in sorted(board.specs.items()):
        for role, s in enumerate(spec.slots()):
            slots += [(task, role)] * s.agents
    agents = sorted({b.holder for t in board.specs for b in board.valid_bids(t)})
    col = {a: i for i, a in enumerate(agents)}
    cost = np.full((len(slots), len(agents)), 1e9)
    for i, (task, role) in enumerate(slots):
        for b in board.valid_bids(task):
            if b.role == role:
                cost[i, col[b.holder]] = b.cost
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].sum())


def test_a_dead_member_s_slot_is_repaired_and_the_others_keep_theirs(
    grid_fleet: SimFleet,
) -> None:
    fleet = grid_fleet
    specs = team_tasks(30, seed=4)
    fleet.nodes[0].engine.announce(specs)
    tick_until_held(fleet)
    before = assert_teams_agree(fleet, specs)
    lost = sum(m.node == "node3" for t in before.values() for m in t.members)
    assert lost
    fleet.kill("node3")
    tick_until_held(fleet)  # the will, the vacancies filled, the new members hold
    after = assert_teams_agree(fleet, specs)
    for task, team in after.items():
        stayed = {(*m.holder, m.role) for m in before[task].members if m.node != "node3"}
        assert stayed <= {(*m.holder, m.role) for m in team.members}  # the others unchanged
        assert team.epoch == before[task].epoch  # the same round: repaired, not re-auctioned
        assert all(m.held for m in team.members)
    for node in fleet.live:
        m = node.engine.metrics()
        assert m["team_repairs"] == lost
        assert m["death_reauctions"] == 0
        assert m["team_slots_vacant"] == 0


STATE_TICKS = round(AuctionSettings().state_every_s / TICK_S)


def syncs_sent(fleet: SimFleet) -> dict[str, int]:
    """Each live node's ``syncs_sent`` (it counts a sync's parts)."""
    return {n.node_id: n.engine.counters["syncs_sent"] for n in fleet.live}


def test_a_node_that_stalled_catches_up_without_a_sync_storm(grid_fleet: SimFleet) -> None:
    """Issue 55: a daemon starved of CPU for a few state periods merged its peers' queued
    ``task_state`` late, took every peer for one that had been cut off and synced to all;
    under load their merging stalled them in turn (repair agreed 17-20 s after a kill, 1.17 MB
    of syncs). Its peers were only late: it syncs to nobody, and after the peers' one sync each
    (it was silent by its own clock) the fleet is quiet."""
    fleet = grid_fleet
    specs = team_tasks(20, seed=5)
    fleet.nodes[0].engine.announce(specs)
    tick_until_held(fleet)
    fleet.tick(3 * STATE_TICKS)  # the births' syncs are behind
    before = syncs_sent(fleet)
    fleet.stall("node2", 4 * STATE_TICKS)
    fleet.tick(STATE_TICKS + 1)  # it merges what waited and speaks again; the peers hear it
    stalled = fleet.node("node2").engine
    assert stalled.counters["peers_returned"] == 0
    after = syncs_sent(fleet)
    assert after["node2"] == before["node2"]
    one_sync = {n.node_id: len(n.engine.board.sync_parts(own=n.node_id)) for n in fleet.live}
    assert all(after[n] - before[n] in (0, one_sync[n]) for n in after)  # one each at most
    fleet.tick(6 * STATE_TICKS)
    assert syncs_sent(fleet) == after  # no sync answers a sync
    assert_teams_agree(fleet, specs)


def team_awards(node: SimNode) -> int:
    return node.engine.auctioneer.metrics.team_awards


def rosters(teams: dict[str, Team]) -> dict[str, list[tuple[str, str, int, int]]]:
    """Each team's members and roles (whether they hold yet left out)."""
    return {t: sorted((*m.holder, m.role) for m in team.members) for t, team in teams.items()}


def test_the_team_award_waits_past_the_window_for_a_late_peer_s_bids_then_comes_once(
    grid_fleet: SimFleet,
) -> None:
    """Issue 55: on a loaded fleet the bids took longer than the window, and every node
    computed the team award again for each late peer's message (3-9 times a node at 20 x
    500). A node's window closes with node4's bids missing (it stalled): no award until they
    come, then one, the one the bids give, and the same everywhere."""
    fleet = grid_fleet
    specs = team_tasks(20, seed=7)
    fleet.nodes[0].engine.announce(specs)
    fleet.stall("node4", WINDOW_TICKS + 4)  # node0-3 bid; their windows close; node4 sleeps
    node0 = fleet.node("node0")
    assert node0.engine.auctioneer.window_closed(specs[0].task, 0, fleet.clock.now)
    assert team_awards(node0) == 0
    assert node0.engine.auctioneer.teams == {}
    fleet.tick(1)  # node4 merges the announcement and everyone's bids, bids: one award
    assert [team_awards(n) for n in fleet.nodes] == [0, 0, 0, 0, 1]
    fleet.tick(1)  # its bids reach the others: one award each, with them
    for node in fleet.nodes[:4]:  # (their own members' holds are in the board since)
        assert team_awards(node) == 1
        assert node.engine.formation["team_awards"] == 1
        assert rosters(node.engine.auctioneer.teams) == rosters(node.engine.board.teams())
    tick_until_held(fleet)
    assert_teams_agree(fleet, specs)


def test_the_last_node_s_bids_leave_before_it_computes_its_award(
    grid_fleet: SimFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 55, ninth pass: every peer waits for the last node's bids, and that node, which
    holds every other node's bids by then, computed its team award in the same tick before
    its bids went out with the tick's end. node4 stalls past the others' bids; in its next
    tick its bids are on the wire before its award is computed (and the award is the same
    everywhere once they are in)."""
    fleet = grid_fleet
    specs = team_tasks(20, seed=7)
    fleet.nodes[0].engine.announce(specs)
    fleet.stall("node4", 3)  # node0-3 bid; node4 has not seen the announcement yet
    node4 = fleet.node("node4")
    order: list[str] = []
    publish, teams = node4.transport.publish, node4.engine.board.teams

    def published(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        if topic == node4.link.topics.tasks("node4"):
            order.append("tasks message")
        return publish(topic, payload, qos, retain)

    def award() -> dict[str, Team]:
        order.append("award")
        return teams()

    monkeypatch.setattr(node4.transport, "publish", published)
    monkeypatch.setattr(node4.engine.board, "teams", award)
    fleet.tick(1)  # node4 merges the announcement and everyone's bids, bids, awards
    assert team_awards(node4) == 1
    assert "award" in order
    assert "tasks message" in order[: order.index("award")]
    monkeypatch.undo()
    tick_until_held(fleet)
    assert_teams_agree(fleet, specs)


def test_a_claim_on_a_team_this_node_has_not_awarded_yet_is_no_conflict(
    grid_fleet: SimFleet,
) -> None:
    """node3 never hears node4 (its bids) and waits for them to award the teams; the others
    award, hold and claim meanwhile. Their claims are no conflict to node3 (it has no award
    to disagree with: a conflict would sync at once, under load a storm) until it awards."""
    fleet = grid_fleet
    specs = team_tasks(10, seed=9)
    fleet.node("node3").blocked = {"node4"}
    fleet.nodes[0].engine.announce(specs)
    late = WINDOW_TICKS + HOLD_WAIT_STATES * STATE_TICKS
    fleet.tick(late - 2)
    node3 = fleet.node("node3").engine
    assert node3.auctioneer.teams == {}
    assert any(node3.auctioneer.peer_claims.get(n) for n in ("node0", "node1", "node2"))
    assert node3.metrics()["conflicts_detected"] == 0


def test_a_peer_that_never_bids_holds_the_team_award_back_no_longer_than_the_holds(
    grid_fleet: SimFleet,
) -> None:
    """node4 hears nothing (a partition it is alone in): the others compute the award once
    their windows and ``HOLD_WAIT_STATES`` state periods are past, and their members hold."""
    fleet = grid_fleet
    specs = team_tasks(10, seed=8)
    fleet.partition([{"node0", "node1", "node2", "node3"}, {"node4"}])
    fleet.nodes[0].engine.announce(specs)
    late = WINDOW_TICKS + HOLD_WAIT_STATES * STATE_TICKS
    fleet.tick(late - 2)
    assert {team_awards(n) for n in fleet.nodes[:4]} == {0}
    fleet.tick(4)
    for node in fleet.nodes[:4]:
        assert team_awards(node) >= 1
        assert rosters(node.engine.auctioneer.teams) == rosters(node.engine.board.teams())
        assert node.engine.formation["rounds_waited_out"] == len(specs)  # node4 never bid
        assert node.engine.formation["live_peers"] == 4
        assert "all_bids_at" not in node.engine.formation
    fleet.tick(3)
    teams = fleet.nodes[0].engine.board.teams()
    assert all(t.vacant == 0 and all(m.held for m in t.members) for t in teams.values())
    assert all(m.node != "node4" for t in teams.values() for m in t.members)
    # A later formation counts its own rounds, not the earlier ones node4 never bid on either.
    more = random_team_specs(3, 100, sizes=(2, 5), max_roles=3, seed=10, capability="grid",
                             announced_by="node1", prefix="later-")  # fmt: skip
    fleet.nodes[1].engine.announce(more)
    fleet.tick(late + 2)
    for node in fleet.nodes[:4]:
        assert node.engine.formation["rounds_waited_out"] == len(more)


def test_a_member_s_node_that_dies_mid_bidding_holds_no_team_back(grid_fleet: SimFleet) -> None:
    """A node killed inside the teams' bidding window (some of its bids in, its members not
    held): the survivors form every team without it within the window and a state period,
    the same everywhere, and sync no more than their births did."""
    fleet = grid_fleet
    specs = team_tasks(20, seed=6)
    fleet.nodes[0].engine.announce(specs)
    fleet.tick(2)  # the announcement and the first bids are out
    before = syncs_sent(fleet)
    fleet.kill("node3")
    formed_after = None
    for tick in range(1, WINDOW_TICKS + STATE_TICKS + 1):
        fleet.tick()
        teams = [n.engine.board.teams() for n in fleet.live]
        if all(t == teams[0] for t in teams) and all(
            t.vacant == 0 and all(m.held for m in t.members) for t in teams[0].values()
        ):
            formed_after = tick
            break
    assert formed_after is not None  # within a window and a state period of the kill
    fleet.tick()
    award = assert_teams_agree(fleet, specs)
    assert all(m.node != "node3" for t in award.values() for m in t.members)
    del before["node3"]
    assert syncs_sent(fleet) == before


def test_slots_no_bid_held_can_fill_are_bid_again(tmp_path: Path) -> None:
    """Each node bids one agent per role and round (``max_bids_per_task = 1``): a team of four
    on two nodes of three agents forms after rebids; when node1 dies its slots go to node0's
    last agent, after a rebid, and the slot left vacant stays so while the members keep
    pursuing."""
    fleet = SimFleet(
        tmp_path,
        2,
        {"grid": GroupSpec(GRID, 3, capabilities=("grid",))},
        settings(min_bids_per_task=1, max_bids_per_task=1),
    )
    try:
        fleet.tick(3)
        spec = TaskSpec(task="T", epoch=0, capability="grid", goal_state=55, announced_by="node0",
                        team=4)  # fmt: skip
        fleet.nodes[0].engine.announce([spec])
        fleet.tick(2)
        assert fleet.nodes[0].engine.board.teams()["T"].members == ()  # two bidders: nobody
        tick_until_held(fleet)  # rebids until four agents bid, then the holds
        team = fleet.nodes[0].engine.board.teams()["T"]
        assert team.vacant == 0
        mine = [m for m in team.members if m.node == "node0"]
        assert len(mine) < 3  # node0 has an agent left
        fleet.kill("node1")
        fleet.tick(2 * WINDOW_TICKS + 2)
        team = fleet.nodes[0].engine.board.teams()["T"]
        assert {m.holder for m in mine} < {m.holder for m in team.members}  # kept, and one more
        assert [m.node for m in team.members] == ["node0"] * 3
        assert team.vacant == 1
        held = fleet.nodes[0].engine.groups["grid"].prefs.held
        assert sorted(held) == sorted(m.agent for m in team.members)  # they keep pursuing
        m = fleet.nodes[0].engine.metrics()
        assert m["team_slots_vacant"] == 1
        assert m["team_repairs"] == 1
    finally:
        fleet.close()


def test_a_healed_partition_leaves_one_team_per_task(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    specs = team_tasks(20, seed=2)
    fleet.nodes[0].engine.announce(specs)
    fleet.nodes[0].link.pump()
    fleet.partition([{"node0", "node1"}, {"node2", "node3", "node4"}])
    fleet.tick(WINDOW_TICKS + 3)  # each side forms every team among its own agents
    left, right = fleet.nodes[0].engine.board.teams(), fleet.nodes[2].engine.board.teams()
    assert all(t.vacant == 0 for t in left.values())
    assert all(t.vacant == 0 for t in right.values())
    assert all(m.node in {"node0", "node1"} for t in left.values() for m in t.members)
    fleet.heal()
    for _ in range(120):
        fleet.tick()
        teams = [n.engine.board.teams() for n in fleet.live]
        pursued = held_by_node(fleet)
        if all(t == teams[0] for t in teams) and all(
            len(pursued.get(s.task, ())) == s.size for s in specs
        ):
            break
    assert_teams_agree(fleet, specs)


def test_a_team_task_closes_when_every_member_is_done(tmp_path: Path) -> None:
    fleet = SimFleet(tmp_path, 2, {"grid": GroupSpec(GRID, 20, capabilities=("grid",))}, settings())
    try:
        fleet.tick(3)
        spec = TaskSpec(task="T", epoch=0, capability="grid", goal_state=55, announced_by="node0",
                        team=2, roles=[Role(capability="grid", count=1, goal_state=9)])  # fmt: skip
        fleet.nodes[0].engine.announce([spec])
        tick_until_held(fleet)
        team = fleet.nodes[0].engine.board.teams()["T"]
        first, *rest = team.members
        fleet.node(first.node).engine.complete("grid", [first.agent])
        fleet.tick(2)
        for node in fleet.nodes:
            t = node.engine.board.teams()["T"]
            assert [d.agent for d in t.done] == [first.agent]
            assert t.vacant == 0  # a finished part is not a vacancy
        for member in rest:
            fleet.node(member.node).engine.complete("grid", [member.agent])
        fleet.tick(2)
        for node in fleet.nodes:
            assert not node.engine.board.is_open("T")
            assert node.engine.board.closed["T"] == 0
        assert sum(n.engine.counters["tasks_done"] for n in fleet.nodes) == 3
        assert held_by_node(fleet) == {}
    finally:
        fleet.close()


def test_one_agent_tasks_and_teams_share_the_agents_one_slot_each(grid_fleet: SimFleet) -> None:
    fleet = grid_fleet
    singles, teams = grid_tasks(40, seed=5), team_tasks(20, seed=6)
    fleet.nodes[0].engine.announce(singles + teams)
    tick_until_held(fleet)
    award = assert_teams_agree(fleet, teams)
    singles_award = assert_one_holder_per_task_of(fleet, {s.task for s in singles})
    members = {m.holder for t in award.values() for m in t.members}
    assert not members & set(singles_award.values())


def assert_one_holder_per_task_of(
    fleet: SimFleet, tasks: set[str]
) -> dict[str, tuple[str, str, int]]:
    awards = fleet.assignments()
    assert all(a == awards[0] for a in awards[1:])
    assert set(awards[0]) == tasks
    return awards[0]


def test_a_team_formation_leaves_numpy_ma_unimported(tmp_path: Path) -> None:
    """Issue 55, ninth pass: ``np.unique``/``np.union1d`` of plain values ask ``numpy.ma`` and
    imported it (8 ms of CPU a daemon, in the middle of its first bids: on the critical path of
    every node at once). A formation of team tasks on five nodes, in a fresh interpreter, from
    the announcement until every member holds: ``numpy.ma`` is never imported, and each node's
    formation marks its milestones with the thread's CPU time beside the wall clock."""
    code = f"""
        import sys
        from pathlib import Path
        from edge_agent.coordination import AuctionSettings, CoordinationSettings
        from edge_agent.sim.gridworld import gridworld_model
        from edge_agent_host.fleetctl.tasks import random_team_specs
        from tests.support.coordination_harness import TICK_S, GroupSpec, SimFleet
        grid = gridworld_model(10, 10, noise=0.1, preference_scale=0.0)
        fleet = SimFleet(
            Path({str(tmp_path)!r}), 5, {{"grid": GroupSpec(grid, 100, capabilities=("grid",))}},
            CoordinationSettings(
                auction=AuctionSettings(window_s={WINDOW_S}, done_belief=None),
                tick_period_s=TICK_S,
            ),
        )
        fleet.tick(3)
        assert "numpy.ma" not in sys.modules  # (the test means something)
        specs = random_team_specs(
            10, 100, sizes=(2, 5), max_roles=3, seed=3, capability="grid", announced_by="node0"
        )
        fleet.nodes[0].engine.announce(specs)
        for _ in range(60):
            fleet.tick()
            teams = [n.engine.board.teams() for n in fleet.nodes]
            if len(teams[0]) == len(specs) and all(t == teams[0] for t in teams) and all(
                t.vacant == 0 and all(m.held for m in t.members) for t in teams[0].values()
            ):
                break
        else:
            raise AssertionError("no formation")
        f = fleet.nodes[1].engine.formation
        assert f["opened_cpu"] <= f["bids_sent_cpu"] <= f["all_bids_cpu"]
        assert f["opened_at"] <= f["bids_sent_at"] <= f["all_bids_at"]
        fleet.close()
        print("numpy.ma" in sys.modules)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
