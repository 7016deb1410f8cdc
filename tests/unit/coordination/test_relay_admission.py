"""What a node takes of what a peer says about a task
(``edge_agent/coordination/relay_admission.py``): a bid, an abandoned round or a tombstone says no
more than the task's announcer signed, a bid's cost is one some model could compute, and a task id
is its announcer's, so a node with a valid identity cannot speak for the others. One engine on a
FakeLink; ``tests/integration/coordination/test_coordination_relays.py`` runs the attacks on real
daemons and the ``broker init`` broker."""

from __future__ import annotations

import numpy as np
import pytest
from msgspec.structs import replace

from edge_agent.coordination import TaskSpec
from edge_agent.coordination.ledger import MAX_SESSION, Bid, bid_columns
from edge_agent.coordination.messages import (
    Release,
    ReleaseStatus,
    Role,
    TaskBids,
    TaskRelease,
    TaskSync,
)
from edge_agent.coordination.relay_admission import MAX_ROUNDS
from edge_agent.coordination.signing import TaskSigner, release_bytes, sign_specs
from edge_agent.coordination.utility import MIN_BID_COST
from edge_agent.errors import InputError
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import Body, Death, DeathReason
from edge_agent.fleet.topics import TopicKind
from tests.unit.coordination.test_engine import (
    PEER_KEY,
    WINDOW_TICKS,
    Ticker,
    announce_msg,
    birth,
    task_msg,
)

FOREVER = UINT32 - 2
"""The largest epoch a task could be closed at for good (no announcement can go higher)."""


def bids(task: str, epoch: int, agent: int, cost: float, bseq: int = 1) -> TaskBids:
    return TaskBids.from_arrays(
        "grid", bseq, [task], epochs=[epoch], task_index=[0], agents=[agent], costs=[cost]
    )


def release(
    task: str, epoch: int, status: ReleaseStatus, *, agent: int = 1, bseq: int = 9, bdseq: int = 0
) -> TaskRelease:
    """The peer's own release of its agent, signed with its task key."""
    rel = Release(
        task=task, epoch=epoch, node="peer", group="grid", agent=agent, bdseq=bdseq, bseq=bseq,
        status=status,
    )  # fmt: skip
    return TaskRelease(items=[rel], sigs=PEER_KEY.sign(release_bytes("coord", rel)))


def peer_task(t: Ticker, task: str = "a", epoch: int = 0) -> TaskSpec:
    """``peer`` (born, its key known) announces ``task``; the engine has taken it."""
    spec = TaskSpec(task=task, epoch=epoch, capability="grid", goal_state=5, announced_by="peer")
    t.engine.handle(announce_msg([spec]))
    t.tick()
    assert t.engine.board.specs[task] == spec
    return spec


@pytest.fixture
def ticker() -> Ticker:
    t = Ticker()
    t.know_peer()
    t.engine.handle(birth("peer", 0))
    t.tick(2)
    return t


def test_a_future_epoch_bid_and_an_own_done_release_cannot_close_a_task_for_good(
    ticker: Ticker,
) -> None:
    """The audit's attack: a born node bids on a task at the end of the uint32 range with the
    cheapest cost, which used to raise the task's epoch there and win that round; its own
    ``done`` release then closed the task where no announcement can reopen it. The bid and
    the release are refused and counted, and the task is awarded as before."""
    t = ticker
    peer_task(t)
    t.engine.handle(task_msg(bids("a", FOREVER, 1, MIN_BID_COST)))
    t.tick()
    board = t.engine.board
    assert board.epoch("a") == 0
    assert t.engine.counters["bids_refused"] == 1
    t.engine.handle(task_msg(release("a", FOREVER, ReleaseStatus.DONE)))
    t.tick()
    assert board.is_open("a")
    assert board.closed == {}
    assert t.engine.counters["relays_refused"] == 1
    t.tick(WINDOW_TICKS + 1)
    assert t.engine.assignment()["a"][0] == "solo"  # allocated, in the announced round
    assert board.epoch("a") == 0
    assert {task for task, _ in t.engine.groups["grid"].prefs.held.values()} == {"a"}


def test_a_bid_may_open_rounds_up_to_max_rounds_past_the_signed_spec(ticker: Ticker) -> None:
    """Bids carry a re-auctioned round to a node whose own award did not see it end, so a bid
    may still raise a task's epoch -- up to ``MAX_ROUNDS`` past the newest signed spec, which
    the announcer can always go beyond by announcing again."""
    t = ticker
    peer_task(t, epoch=5)
    board = t.engine.board
    t.engine.handle(task_msg(bids("a", 5 + MAX_ROUNDS + 1, 1, 1.0)))
    t.engine.handle(task_msg(bids("a", 7, 2, 1.0, bseq=2)))  # a round this node missed
    t.tick()
    assert board.epoch("a") == 7
    assert {b.agent for b in board.valid_bids("a") if b.node == "peer"} == {2}
    assert t.engine.counters["bids_refused"] == 1
    t.engine.handle(task_msg(bids("a", 5 + MAX_ROUNDS, 3, 1.0, bseq=3)))
    t.tick()
    assert board.epoch("a") == 5 + MAX_ROUNDS  # the last round
    # The announcer announces again: the limit moves with its signed spec.
    spec = peer_task(t, epoch=6 + MAX_ROUNDS)
    assert board.epoch("a") == spec.epoch
    t.engine.handle(task_msg(bids("a", spec.epoch + 1, 4, 1.0, bseq=4)))
    t.tick()
    assert board.epoch("a") == spec.epoch + 1
    assert t.engine.counters["bids_refused"] == 1


def test_nothing_is_taken_for_a_task_without_a_signed_spec(ticker: Ticker) -> None:
    """A node could otherwise squat a task id before it is announced: raise its epoch with a
    bid, or close it at the end of the range with a ``done`` release of its own."""
    t = ticker
    t.engine.handle(task_msg(bids("x", FOREVER, 1, 1.0)))
    t.engine.handle(task_msg(release("x", FOREVER, ReleaseStatus.DONE)))
    t.engine.handle(task_msg(release("y", FOREVER, ReleaseStatus.EXPIRED, bseq=10)))
    t.tick()
    board = t.engine.board
    assert board.epoch("x") is None
    assert board.closed == {}
    assert t.engine.counters["bids_refused"] == 1
    assert t.engine.counters["relays_refused"] == 2
    peer_task(t, "x")
    t.tick(WINDOW_TICKS + 1)
    assert t.engine.assignment()["x"][:1] == ("solo",)


def test_abandoned_releases_stop_at_the_last_round(ticker: Ticker) -> None:
    """An ``abandoned`` release opens the next round: it may name a round up to the limit; of
    the last round it only uses up the agent's bids (there is no next round); beyond it, and
    among a sync's tombstones, it is refused."""
    t = ticker
    peer_task(t)
    board = t.engine.board
    t.engine.handle(task_msg(release("a", FOREVER, ReleaseStatus.ABANDONED)))
    t.tick()
    assert board.epoch("a") == 0
    assert t.engine.counters["relays_refused"] == 1
    assert board.consumed[("peer", "grid", 1)] == 9  # its own agent's bids are used up
    rel = Release(
        task="a", epoch=FOREVER, node="peer", group="grid", agent=1, bdseq=0, bseq=10,
        status=ReleaseStatus.ABANDONED,
    )  # fmt: skip
    sync = TaskSync(closers=[rel], closer_sigs=PEER_KEY.sign(release_bytes("coord", rel)))
    t.engine.handle(task_msg(sync))
    t.tick()
    assert board.epoch("a") == 0
    assert t.engine.counters["relays_refused"] == 2
    t.engine.handle(task_msg(release("a", 3, ReleaseStatus.ABANDONED, bseq=11)))
    t.tick()
    assert board.epoch("a") == 4
    t.engine.handle(task_msg(bids("a", MAX_ROUNDS, 2, 1.0, bseq=12)))
    t.tick()
    t.engine.handle(task_msg(release("a", MAX_ROUNDS, ReleaseStatus.ABANDONED, bseq=13)))
    t.tick()
    assert board.epoch("a") == MAX_ROUNDS
    assert board.consumed[("peer", "grid", 1)] == 13
    assert t.engine.counters["relays_refused"] == 2


def test_a_dead_holder_s_task_in_its_last_round_goes_to_the_next_bidder(ticker: Ticker) -> None:
    """Each node re-auctions a dead session's tasks at the next epoch; in a task's last round
    there is none, so the round goes on without the dead session's bids."""
    t = ticker
    peer_task(t)
    t.engine.handle(task_msg(bids("a", MAX_ROUNDS, 1, MIN_BID_COST)))
    t.tick(WINDOW_TICKS + 1)
    board = t.engine.board
    assert board.epoch("a") == MAX_ROUNDS
    assert t.engine.assignment()["a"][0] == "peer"
    death = task_msg(Death(reason=DeathReason.SHUTDOWN), "peer", kind=TopicKind.DEATH)
    t.engine.handle(death)
    t.tick(2 * WINDOW_TICKS + 2)  # the round has no winner: this node bids again
    assert t.engine.counters["death_reauctions"] == 1
    assert board.epoch("a") == MAX_ROUNDS
    assert t.engine.assignment()["a"][0] == "solo"
    assert ("a", MAX_ROUNDS) in t.engine.groups["grid"].prefs.held.values()


def test_a_bid_below_the_lowest_possible_cost_is_refused(ticker: Ticker) -> None:
    t = ticker
    peer_task(t)
    t.engine.handle(task_msg(bids("a", 0, 1, -1e30)))
    t.engine.handle(task_msg(bids("a", 0, 2, MIN_BID_COST, bseq=2)))
    t.tick()
    board = t.engine.board
    assert {b.agent for b in board.valid_bids("a") if b.node == "peer"} == {2}
    assert t.engine.counters["bids_refused"] == 1
    # In a sync, too (the sender's own bids, of its born session).
    low = Bid("a", 0, "peer", "grid", 3, -1e30, 0, 3)
    ok = Bid("a", 0, "peer", "grid", 4, MIN_BID_COST + 1.0, 0, 3)
    t.engine.handle(task_msg(TaskSync(bids=bid_columns([low, ok]))))
    t.tick()
    assert {b.agent for b in board.valid_bids("a") if b.node == "peer"} == {2, 4}
    assert t.engine.counters["relays_refused"] == 1
    # A cost that is not a number never gets that far: the message does not decode.
    for cost in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="costs must be finite"):
            bids("a", 0, 5, cost)


def test_session_numbers_beyond_the_ledger_s_range_are_refused_not_a_crash() -> None:
    """A node may be born with any ``bdseq`` of the uint32 range; ``(bdseq, bseq)`` is kept as
    one int64, so a session past 2**31 - 1 overflowed the ledger and every award raised. Its
    bids and releases are now refused."""
    t = Ticker()
    t.know_peer()
    t.engine.handle(birth("peer", UINT32 - 1))
    t.tick(2)
    peer_task(t)
    t.engine.handle(task_msg(bids("a", 0, 1, 1.0), bdseq=UINT32 - 1))
    big = release("a", 0, ReleaseStatus.ABANDONED, bdseq=MAX_SESSION + 1)
    t.engine.handle(task_msg(big, bdseq=UINT32 - 1))
    late = Bid("a", 0, "peer", "grid", 2, 1.0, MAX_SESSION + 1, 1)
    t.engine.handle(task_msg(TaskSync(bids=bid_columns([late])), bdseq=UINT32 - 1))
    t.tick(WINDOW_TICKS + 1)
    board = t.engine.board
    assert {b.node for b in board.valid_bids("a")} == {"solo"}
    assert board.epoch("a") == 0
    assert t.engine.counters["bids_refused"] == 1
    assert t.engine.counters["relays_refused"] == 2
    assert t.engine.assignment()["a"][0] == "solo"


def test_a_late_joiner_checks_a_closer_against_the_spec_relayed_with_it() -> None:
    """A sync relays each closer with its task's signed spec: a node that never knew the task
    takes the tombstone up to ``MAX_ROUNDS`` past that spec, and none without it."""
    hub = TaskSigner.generate()
    t = Ticker()
    t.know_peer()
    t.know_peer("hub", hub)
    t.tick(2)

    def closed_at(task: str, epoch: int, *, with_spec: bool) -> TaskSync:
        spec = TaskSpec(task=task, epoch=2, capability="grid", goal_state=3, announced_by="hub")
        rel = Release(
            task=task, epoch=epoch, node="peer", group="grid", agent=0, bdseq=0, bseq=1,
            status=ReleaseStatus.DONE,
        )  # fmt: skip
        closer = PEER_KEY.sign(release_bytes("coord", rel))
        if not with_spec:
            return TaskSync(closers=[rel], closer_sigs=closer)
        sig = sign_specs(hub.sign, "coord", [spec])
        return TaskSync(tasks=[spec], task_sigs=sig, closers=[rel], closer_sigs=closer)

    t.engine.handle(task_msg(closed_at("g", 2 + MAX_ROUNDS, with_spec=False)))
    t.engine.handle(task_msg(closed_at("h", 3 + MAX_ROUNDS, with_spec=True)))
    t.engine.handle(task_msg(closed_at("g", 2 + MAX_ROUNDS, with_spec=True)))
    t.tick()
    board = t.engine.board
    assert board.closed == {"g": 2 + MAX_ROUNDS}
    assert board.closed_specs["g"][0].epoch == 2
    assert board.epoch("h") == 2  # its spec is taken, not the tombstone beyond the limit
    assert board.is_open("h")
    assert t.engine.counters["relays_refused"] == 2


HUB_KEY = TaskSigner.generate()
"""The hub's signing key: its public half is one of the node's hub keys (``authorities``)."""
A1_KEY = TaskSigner.generate()
"""The task key of ``a1``, a node whose name comes before the hub's."""


def hub_fleet_member(*, hub_keys: bool = True) -> Ticker:
    """A node that knows the hub's key and ``a1``'s (born), and, with ``hub_keys``, holds the
    hub's key among its hub keys."""
    t = Ticker(authorities=frozenset({HUB_KEY.public}) if hub_keys else frozenset())
    t.know_peer("hub", HUB_KEY)
    t.know_peer("a1", A1_KEY)
    t.engine.handle(birth("a1", 0))
    t.tick(2)
    return t


def a1_says(t: Ticker, *bodies: Body) -> None:
    for body in bodies:
        t.engine.handle(task_msg(body, node="a1"))
    t.tick()


def a1_bids(task: str, epoch: int, bseq: int) -> TaskBids:
    return TaskBids.from_arrays(
        "grid", bseq, [task], epochs=[epoch], task_index=[0], agents=[0], costs=[MIN_BID_COST]
    )


def a1_done(task: str, epoch: int, bseq: int) -> TaskRelease:
    rel = Release(
        task=task, epoch=epoch, node="a1", group="grid", agent=0, bdseq=0, bseq=bseq,
        status=ReleaseStatus.DONE,
    )  # fmt: skip
    return TaskRelease(items=[rel], sigs=A1_KEY.sign(release_bytes("coord", rel)))


HUB_SPEC = TaskSpec(task="a", epoch=0, capability="grid", goal_state=5, announced_by="hub")


def test_a_node_cannot_take_the_hub_s_task_over() -> None:
    """The audit's last hole: a node announced the hub's task id in its own name at the end of
    the epoch range (the larger spec won, whoever announced it), then won it with its cheapest
    bid and closed it there, for good. A task id is its announcer's, and the hub ranks before
    every node: the node's spec is refused, announced or relayed, and with it its bids and its
    release at that epoch; the hub's task stays in its round, allocated."""
    t = hub_fleet_member()
    t.engine.handle(announce_msg([HUB_SPEC], node="hub", signer=HUB_KEY))
    t.tick(WINDOW_TICKS + 1)
    assert t.engine.assignment()["a"][0] == "solo"
    mine = replace(HUB_SPEC, epoch=FOREVER, goal_state=6, announced_by="a1")
    sig = sign_specs(A1_KEY.sign, "coord", [mine])
    t.engine.handle(announce_msg([mine], node="a1", signer=A1_KEY))
    a1_says(t, TaskSync(tasks=[mine], task_sigs=sig), a1_bids("a", FOREVER, 1))
    a1_says(t, a1_done("a", FOREVER, 2))
    board = t.engine.board
    assert (board.owner("a"), board.specs["a"], board.epoch("a")) == ("hub", HUB_SPEC, 0)
    assert board.is_open("a")
    assert t.engine.assignment()["a"][0] == "solo"
    counters = t.engine.counters
    assert (counters["specs_refused"], counters["bids_refused"]) == (1, 1)
    assert counters["relays_refused"] == 1 + 1  # the relayed spec; the done release
    # This node may not announce it either: the error says whose it is.
    with pytest.raises(InputError, match="task 'a' is 'hub''s"):
        t.engine.announce([replace(HUB_SPEC, epoch=3, announced_by="solo")])
    # Without the hub's key among its hub keys a node ranks the hub as a node, by name: a1
    # comes first and takes the id over (docs/security.md: configure hub_keys_dir).
    plain = hub_fleet_member(hub_keys=False)
    plain.engine.handle(announce_msg([HUB_SPEC], node="hub", signer=HUB_KEY))
    plain.engine.handle(announce_msg([mine], node="a1", signer=A1_KEY))
    plain.tick()
    assert plain.engine.board.specs["a"] == mine


def test_the_hub_takes_back_an_id_a_node_announced_first() -> None:
    """Pre-emption: a node announces an id the hub will use, at the end of the epoch range, wins
    it and closes it there before the hub announces it. The hub's announcement takes the id
    over: what came in rounds beyond MAX_ROUNDS past the hub's spec goes, and the task is open
    in the hub's round and allocated."""
    t = hub_fleet_member()
    early = TaskSpec(task="a", epoch=FOREVER, capability="grid", goal_state=9, announced_by="a1")
    t.engine.handle(announce_msg([early], node="a1", signer=A1_KEY))
    a1_says(t, a1_bids("a", FOREVER, 1))
    t.tick(WINDOW_TICKS + 1)
    assert t.engine.assignment()["a"][0] == "a1"
    a1_says(t, a1_done("a", FOREVER, 2))
    board = t.engine.board
    assert board.closed == {"a": FOREVER}
    assert not board.is_open("a")
    t.engine.handle(announce_msg([HUB_SPEC], node="hub", signer=HUB_KEY))
    t.tick(WINDOW_TICKS + 1)
    assert (board.owner("a"), board.specs["a"], board.epoch("a")) == ("hub", HUB_SPEC, 0)
    assert board.closed == {}
    assert board.closers == {}
    assert t.engine.assignment()["a"][0] == "solo"
    assert ("a", 0) in t.engine.groups["grid"].prefs.held.values()
    # From now on a1's specs of "a" are refused, and its bids beyond the hub's limit.
    t.engine.handle(announce_msg([replace(early, epoch=FOREVER - 1)], node="a1", signer=A1_KEY))
    a1_says(t, a1_bids("a", FOREVER, 3))
    assert board.specs["a"] == HUB_SPEC
    assert t.engine.counters["specs_refused"] == 1
    assert t.engine.counters["bids_refused"] == 1
    # What is left: a round a1 closed at the hub's own epoch (it guessed the id and the epoch)
    # is within the hub's limit and stays closed; the hub reopens the task by announcing above.
    guessed = replace(early, task="b", epoch=0)
    t.engine.handle(announce_msg([guessed], node="a1", signer=A1_KEY))
    a1_says(t, a1_bids("b", 0, 4))
    t.tick(WINDOW_TICKS + 1)
    a1_says(t, a1_done("b", 0, 5))
    hub_b = replace(HUB_SPEC, task="b")
    t.engine.handle(announce_msg([hub_b], node="hub", signer=HUB_KEY))
    t.tick()
    assert (board.owner("b"), board.closed["b"], board.is_open("b")) == ("hub", 0, False)
    t.engine.handle(announce_msg([replace(hub_b, epoch=1)], node="hub", signer=HUB_KEY))
    t.tick(WINDOW_TICKS + 1)
    assert t.engine.assignment()["b"][0] == "solo"


# --------------------------------------------------------------------------------------------
# team tasks


def peer_team(t: Ticker, task: str = "T", team: int = 2) -> TaskSpec:
    """``peer`` announces a team task of ``team`` agents at goal 5 and one at goal 9."""
    spec = TaskSpec(task=task, epoch=0, capability="grid", goal_state=5, announced_by="peer",
                    team=team, roles=[Role(capability="grid", count=1, goal_state=9)])  # fmt: skip
    t.engine.handle(announce_msg([spec]))
    t.tick()
    assert t.engine.board.specs[task] == spec
    return spec


def team_bids(task: str, rows: list[tuple[int, int, float, int]], bseq: int = 1) -> TaskBids:
    """``(agent, role, cost, hold)`` rows of the peer's group ``grid``."""
    agents, roles, costs, holds = zip(*rows, strict=True)
    return TaskBids.from_arrays(
        "grid", bseq, [task], epochs=[0], task_index=[0] * len(rows), agents=agents,
        costs=costs, roles=roles, holds=holds,
    )  # fmt: skip


def test_a_bid_names_only_a_role_the_signed_spec_has_and_holds_only_a_team_s_slot(
    ticker: Ticker,
) -> None:
    t = ticker
    peer_team(t)
    peer_task(t, "s")
    t.engine.handle(task_msg(team_bids("T", [(1, 0, 1.0, 0), (2, 1, 1.0, 0), (3, 2, 0.5, 0)])))
    t.engine.handle(
        task_msg(team_bids("s", [(4, 0, 1.0, 1)], bseq=2))
    )  # a hold of a one-agent task
    t.tick()
    assert t.engine.counters["bids_refused"] == 2
    board = t.engine.board
    assert sorted((b.agent, b.role) for b in board.valid_bids("T") if b.node == "peer") == [
        (1, 0),
        (2, 1),
    ]
    assert not [b for b in board.valid_bids("s") if b.node == "peer"]


def test_a_member_s_release_is_taken_only_for_its_own_slot(ticker: Ticker) -> None:
    """The peer holds both slots of role 0; its release of an agent that is no member, or of a
    member in another role, says more than it can know; a member's of its own role is taken."""
    t = ticker
    peer_team(t, team=2)
    t.engine.handle(task_msg(team_bids("T", [(1, 0, MIN_BID_COST, 1), (2, 0, MIN_BID_COST, 1)])))
    t.tick()
    team = t.engine.board.teams()["T"]
    assert sorted(m.agent for m in team.members if m.node == "peer") == [1, 2]

    def done(agent: int, role: int, bseq: int) -> TaskRelease:
        rel = Release(task="T", epoch=0, node="peer", group="grid", agent=agent, bdseq=0,
                      bseq=bseq, status=ReleaseStatus.DONE, role=role)  # fmt: skip
        return TaskRelease(items=[rel], sigs=PEER_KEY.sign(release_bytes("coord", rel)))

    t.engine.handle(task_msg(done(7, 0, 10)))  # not a member, and role 0 is full
    t.engine.handle(task_msg(done(1, 1, 11)))  # a member, but of role 0
    t.tick()
    assert t.engine.counters["relays_refused"] == 2
    team = t.engine.board.teams()["T"]
    assert team.done == ()
    # A release refused still uses its agent's bids up (as a one-agent task's): agent 1 is out,
    # and its slot is filled again.
    assert [m.agent for m in team.members if m.node == "peer"] == [2]
    t.engine.handle(task_msg(done(2, 0, 12)))
    t.tick()
    assert [d.agent for d in t.engine.board.teams()["T"].done] == [2]
    assert t.engine.board.is_open("T")


def test_a_relayed_member_s_release_needs_its_holder_s_signature(ticker: Ticker) -> None:
    """A sync relays a team member's done release; forged, it is refused."""
    t = ticker
    spec = peer_team(t, team=1)
    t.engine.handle(task_msg(team_bids("T", [(1, 0, MIN_BID_COST, 1)])))
    t.tick()
    rel = Release(task="T", epoch=0, node="peer", group="grid", agent=1, bdseq=0, bseq=5,
                  status=ReleaseStatus.DONE, role=0)  # fmt: skip
    forged = TaskSigner.generate().sign(release_bytes("coord", rel))
    sigs = sign_specs(PEER_KEY.sign, "coord", [spec])
    part = TaskSync(tasks=[spec], task_sigs=sigs, closers=[rel], closer_sigs=forged)
    t.engine.handle(task_msg(part, node="other"))
    t.tick()
    assert t.engine.board.teams()["T"].done == ()
    assert t.engine.counters["relays_refused"] >= 1
    good = TaskSync(tasks=[spec], task_sigs=sigs, closers=[rel],
                    closer_sigs=PEER_KEY.sign(release_bytes("coord", rel)))  # fmt: skip
    t.engine.handle(task_msg(good, node="other"))
    t.tick()
    assert [d.agent for d in t.engine.board.teams()["T"].done] == [1]
