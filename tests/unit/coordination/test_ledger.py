"""The ledger's team tasks: formation, holds, repair, finished parts, syncs, order independence.

(The one-agent ledger's tests are ``test_tasks.py``.)"""

from __future__ import annotations

import random

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.coordination.ledger import (
    TEAM_FACTS_PER_PART,
    Bid,
    TaskBoard,
    Team,
    abandon,
    bid_columns,
)
from edge_agent.coordination.messages import (
    MAX_ROLES,
    Release,
    ReleaseStatus,
    Role,
    TaskSpec,
    TaskSync,
)
from edge_agent.fleet.protocol import DEFAULT_MAX_BYTES, Envelope, encode


def team(task: str, size: int = 2, *, roles: list[Role] | None = None, epoch: int = 0) -> TaskSpec:
    return TaskSpec(
        task=task,
        epoch=epoch,
        capability="grid",
        goal_state=1,
        announced_by="hub",
        team=size,
        roles=roles if roles is not None else msgspec.UNSET,
    )


def single(task: str) -> TaskSpec:
    return TaskSpec(task=task, epoch=0, capability="grid", goal_state=1, announced_by="hub")


def bid(task: str, node: str, agent: int, cost: float, *, role: int = 0, held: bool = False,
        bdseq: int = 0, bseq: int = 1, epoch: int = 0) -> Bid:  # fmt: skip
    return Bid(task, epoch, node, "g", agent, cost, bdseq, bseq, role, held)


def roster(t: Team) -> list[tuple[str, int, int]]:
    return [(m.node, m.agent, m.role) for m in t.members]


def release(b: Bid, status: ReleaseStatus, bseq: int) -> Release:
    return Release(
        task=b.task, epoch=b.epoch, node=b.node, group=b.group, agent=b.agent,
        bdseq=b.bdseq, bseq=bseq, status=status, role=b.role,
    )  # fmt: skip


def test_a_team_forms_at_least_cost_and_whole() -> None:
    board = TaskBoard()
    board.add_spec(team("T", roles=[Role(capability="grid", count=1, goal_state=9)]))
    for b in (
        bid("T", "n1", 0, 1.0), bid("T", "n1", 1, 2.0), bid("T", "n2", 0, 1.5),
        bid("T", "n1", 0, 0.5, role=1),  # n1/0 is the cheapest of both roles
        bid("T", "n2", 1, 3.0, role=1),
    ):  # fmt: skip
        board.add_bid(b)
    t = board.teams()["T"]
    # Optimum: n1/0 to role 1 (0.5) and n1/1 + n2/0 to role 0 (2.0 + 1.5) = 4.0, not the greedy
    # n1/0 + n2/0 to role 0 (2.5) and n2/1 to role 1 (3.0) = 5.5.
    assert roster(t) == [("n1", 1, 0), ("n2", 0, 0), ("n1", 0, 1)]
    assert t.vacant == 0
    assert not t.formed
    board2 = TaskBoard()
    board2.add_spec(team("T", 3))
    board2.add_bid(bid("T", "n1", 0, 1.0))
    board2.add_bid(bid("T", "n1", 1, 1.0))
    assert board2.teams()["T"].members == ()  # two agents cannot form a team of three
    assert board2.teams()["T"].vacant == 3


def test_held_members_stay_and_a_vacancy_is_filled_from_the_bids_held() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 2))
    for b in (bid("T", "n1", 0, 1.0), bid("T", "n2", 0, 2.0), bid("T", "n3", 0, 5.0)):
        board.add_bid(b)
    assert roster(board.teams()["T"]) == [("n1", 0, 0), ("n2", 0, 0)]
    # Both members take their slots; a cheaper bidder arrives later: nobody moves.
    board.add_bid(bid("T", "n1", 0, 1.0, held=True, bseq=2))
    board.add_bid(bid("T", "n2", 0, 2.0, held=True, bseq=2))
    board.add_bid(bid("T", "n4", 0, 0.1))
    t = board.teams()["T"]
    assert roster(t) == [("n1", 0, 0), ("n2", 0, 0)]
    assert t.formed
    # n2's session ends: its slot goes to the cheapest bid held (n4), n1 stays, same round.
    assert board.add_dead("n2", 0) == []  # nothing to re-auction: the round goes on
    t = board.teams()["T"]
    assert roster(t) == [("n1", 0, 0), ("n4", 0, 0)]
    assert t.epoch == 0
    assert board.epoch("T") == 0
    assert [m.held for m in t.members] == [True, False]
    # n1's member gives its slot up: n3 fills it; still the same round.
    board.add_release(abandon(board.teams()["T"].members[0], team=True))
    assert roster(board.teams()["T"]) == [("n3", 0, 0), ("n4", 0, 0)]
    assert board.epoch("T") == 0


def test_a_formed_team_keeps_its_members_with_a_slot_left_vacant() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 3))
    for a in range(3):
        board.add_bid(bid("T", "n1", a, 1.0 + a))
        board.add_bid(bid("T", "n1", a, 1.0 + a, held=True, bseq=2))
    board.add_release(release(bid("T", "n1", 2, 3.0), ReleaseStatus.ABANDONED, 3))
    t = board.teams()["T"]
    assert roster(t) == [("n1", 0, 0), ("n1", 1, 0)]  # no bid left to fill it: vacant
    assert t.vacant == 1
    assert t.formed
    board.add_bid(bid("T", "n5", 0, 9.0))  # a rebid fills it
    assert roster(board.teams()["T"])[-1] == ("n5", 0, 0)


def test_holds_beyond_a_role_s_slots_count_cheapest_first() -> None:
    """After a partition healed, both sides' members hold the one slot: the cheaper stays."""
    board = TaskBoard()
    board.add_spec(team("T", 1))
    board.add_bid(bid("T", "a", 0, 2.0, held=True))
    board.add_bid(bid("T", "b", 0, 1.0, held=True))
    assert roster(board.teams()["T"]) == [("b", 0, 0)]
    board.add_dead("b", 0)
    assert roster(board.teams()["T"]) == [("a", 0, 0)]  # the other hold takes the slot back


def test_a_team_member_is_nobody_else_s() -> None:
    """An agent holding a team's slot wins no one-agent task, and no other team's slot; its
    newest hold is the one that counts."""
    board = TaskBoard()
    board.add_spec(team("T", 1))
    board.add_spec(team("U", 1))
    board.add_spec(single("s"))
    board.add_bid(bid("T", "n", 0, 5.0, held=True, bseq=3))
    board.add_bid(bid("U", "n", 0, 5.0, held=True, bseq=2))
    board.add_bid(bid("s", "n", 0, 0.0))
    board.add_bid(bid("s", "n", 1, 9.0))
    board.add_bid(bid("U", "n", 2, 7.0))
    assert roster(board.teams()["T"]) == [("n", 0, 0)]
    assert roster(board.teams()["U"]) == [("n", 2, 0)]
    assert board.award()["s"].agent == 1


def test_finished_parts_close_the_team_when_every_slot_is_done() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 1, roles=[Role(capability="grid", count=1, goal_state=7)]))
    first, second = bid("T", "n1", 0, 1.0, held=True), bid("T", "n2", 0, 1.0, role=1, held=True)
    board.add_bid(first)
    board.add_bid(second)
    board.add_bid(bid("T", "n3", 0, 0.5))  # could fill role 0, which is finished, not vacant
    assert board.add_release(release(first, ReleaseStatus.DONE, 5), b"s" * 64)
    t = board.teams()["T"]
    assert roster(t) == [("n2", 0, 1)]
    assert len(t.done) == 1
    assert t.vacant == 0
    assert board.is_open("T")
    assert board.add_release(release(second, ReleaseStatus.DONE, 5), b"t" * 64)
    assert not board.is_open("T")
    assert board.closed["T"] == 0
    assert [r.node for r, _ in board.team_closers["T"]] == ["n1", "n2"]


def test_an_expired_member_closes_the_team() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 2))
    member = bid("T", "n1", 0, 1.0, held=True)
    board.add_bid(member)
    board.add_release(release(member, ReleaseStatus.EXPIRED, 5), b"s" * 64)
    assert not board.is_open("T")


def facts_of(board: TaskBoard) -> TaskBoard:
    """A board that took only ``board``'s sync parts."""
    other = TaskBoard()
    for part in board.sync_parts():
        other.merge_sync(part)
    return other


def test_a_sync_carries_teams_holds_and_finished_parts_in_parts_of_their_own() -> None:
    board = TaskBoard()
    board.add_spec(single("s"), b"x" * 64)
    board.add_spec(team("T", 2, roles=[Role(capability="grid", count=1, goal_state=3)]), b"y" * 64)
    board.add_bid(bid("s", "n1", 5, 1.0))
    for a, role in ((0, 0), (1, 0), (2, 1)):
        board.add_bid(bid("T", "n1", a, 1.0, role=role, held=True))
    board.add_release(release(bid("T", "n1", 0, 1.0, held=True), ReleaseStatus.DONE, 4), b"z" * 64)
    parts = board.sync_parts()
    team_parts = [
        p for p in parts if any(s.is_team for s in p.tasks) or p.bids.role is not msgspec.UNSET
    ]
    assert team_parts
    assert all(not any(not s.is_team for s in p.tasks) for p in team_parts)
    one_agent = [p for p in parts if p not in team_parts]
    assert all(p.bids.role is msgspec.UNSET and p.bids.held is msgspec.UNSET for p in one_agent)
    other = facts_of(board)
    assert other.teams() == board.teams()
    assert other.award() == board.award()
    assert other.digest() == board.digest()
    # and once every part is done, a late joiner closes it from the relayed releases
    board.add_release(release(bid("T", "n1", 1, 1.0, held=True), ReleaseStatus.DONE, 4), b"a" * 64)
    last = bid("T", "n1", 2, 1.0, role=1, held=True)
    board.add_release(release(last, ReleaseStatus.DONE, 4), b"b" * 64)
    assert not board.is_open("T")
    late = facts_of(board)
    assert late.closed == board.closed
    assert late.digest() == board.digest()


def test_a_team_sync_part_of_the_largest_facts_fits_a_message() -> None:
    name = "n" * 64
    roles = [Role(capability="c" * 64, count=1, goal_factor=63, goal_state=(1 << 20) - 1)] * (
        MAX_ROLES - 1
    )
    board = TaskBoard(max_tasks=1 << 12)
    for i in range(TEAM_FACTS_PER_PART):
        task = f"{i:x}".rjust(64, "t")
        spec = TaskSpec(
            task=task, epoch=(1 << 32) - 2, capability="c" * 64, goal_factor=63,
            goal_state=(1 << 20) - 1, deadline=1e300, announced_by=name, team=49, roles=roles,
        )  # fmt: skip
        board.add_spec(spec, b"s" * 64)
    parts = board.team_sync_parts()
    for part in parts:
        env = Envelope(type="task_sync", node=name, seq=1, bdseq=1, ts=1.0, clock_synced=False,
                       body=part)  # fmt: skip
        assert len(encode(env, max_bytes=1 << 30)) < DEFAULT_MAX_BYTES


NODES = ["a", "b", "c"]


def bids_of(
    epoch: st.SearchStrategy[int], group: st.SearchStrategy[str], most: int
) -> st.SearchStrategy[list[Bid]]:
    """Lists of up to ``most`` bids on T, U (teams) and s (one agent) by NODES."""
    return st.lists(
        st.builds(
            Bid,
            task=st.sampled_from(["T", "U", "s"]),
            epoch=epoch,
            node=st.sampled_from(NODES),
            group=group,
            agent=st.integers(0, 3),
            cost=st.sampled_from([0.0, 1.0, 2.0]),
            bdseq=st.integers(0, 1),
            bseq=st.integers(0, 3),
            role=st.integers(0, 1),
            held=st.booleans(),
        ),
        max_size=most,
    )


team_bids = bids_of(st.just(0), st.just("g"), 30)


@settings(max_examples=150, deadline=None)
@given(
    bids=team_bids,
    deaths=st.lists(st.tuples(st.sampled_from(NODES), st.integers(0, 1)), max_size=2),
    seed=st.integers(0, 1 << 30),
)
def test_a_board_with_teams_is_a_pure_function_of_its_facts(
    bids: list[Bid], deaths: list[tuple[str, int]], seed: int
) -> None:
    specs: list[object] = [
        team("T", 2, roles=[Role(capability="grid", count=1, goal_state=4)]),
        team("U", 1),
        single("s"),
    ]
    releases = [
        release(b, ReleaseStatus.ABANDONED if b.cost else ReleaseStatus.DONE, b.bseq + 1)
        for b in bids[:3]
        if b.task != "s"
    ]
    facts = specs + bids + bids[: len(bids) // 2] + releases + deaths

    def build(order: list[object]) -> TaskBoard:
        board = TaskBoard()
        for f in order:
            if isinstance(f, TaskSpec):
                board.add_spec(f)
            elif isinstance(f, Bid):
                board.add_bid(f)
            elif isinstance(f, Release):
                board.add_release(f)
            else:
                assert isinstance(f, tuple)
                board.add_dead(*f)
        return board

    # Releases need the spec first (the engine takes none without one): specs lead.
    a = build(facts)
    rest = facts[3:]
    random.Random(seed).shuffle(rest)
    b = build(specs + rest)
    assert a.teams() == b.teams()
    assert a.award() == b.award()
    assert a.digest() == b.digest()
    members = [m.holder for t in a.teams().values() for m in t.members]
    members += [w.holder for w in a.award().values()]
    assert len(members) == len(set(members))  # one slot per agent
    for t in a.teams().values():
        assert t.formed or t.vacant in (0, t.size)  # a forming team: whole or nobody
        slots = np.bincount([m.role for m in t.members], minlength=len(t.slots))
        assert (slots <= np.array(t.slots)).all()


@settings(max_examples=150, deadline=None)
@given(
    held=team_bids,
    synced=bids_of(st.integers(0, 1), st.sampled_from(["g", "h"]), 40),
    dead=st.lists(st.tuples(st.sampled_from(NODES), st.integers(0, 1)), max_size=1),
)
def test_a_sync_s_bids_merge_in_columns_as_a_bid_at_a_time(
    held: list[Bid], synced: list[Bid], dead: list[tuple[str, int]]
) -> None:
    """A sync part's bids merge a message at a time (issue 55: a bid at a time, a peer's sync
    of 3,600 bids cost its receiver 0.2 s of CPU); the ledger is the one a bid at a time
    leaves, messages naming a task at two epochs included."""

    def board() -> TaskBoard:
        b = TaskBoard()
        b.add_spec(team("T", 2, roles=[Role(capability="grid", count=1, goal_state=4)]))
        b.add_spec(team("U", 1))
        b.add_spec(single("s"))
        for f in held:
            b.add_bid(f)
        for node, bdseq in dead:
            b.add_dead(node, bdseq)
        return b

    one_by_one, columns = board(), board()
    for f in synced:
        one_by_one.add_bid(f)
    columns.merge_sync(TaskSync(bids=bid_columns(synced)))
    assert columns.digest() == one_by_one.digest()
    assert columns.teams() == one_by_one.teams()
    assert columns.award() == one_by_one.award()
    assert columns.n_bids == one_by_one.n_bids


def test_a_one_agent_board_hashes_as_before_teams() -> None:
    """Bids of one-agent tasks hash as they did (nodes of both versions agree on them)."""
    board = TaskBoard()
    board.add_spec(single("s"))
    board.add_bid(bid("s", "n1", 3, 1.5, bdseq=2, bseq=9))
    # the digest of this board on the commit before teams (1a54e6b)
    assert board.digest().hex() == DIGEST_BEFORE_TEAMS


DIGEST_BEFORE_TEAMS = "e4bd3c3b2b53145b1c37974bc705f026"


def test_a_release_of_a_team_task_is_a_sync_s_closer_only_with_its_signature() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 1), b"y" * 64)
    member = bid("T", "n1", 0, 1.0, held=True)
    board.add_bid(member)
    board.add_release(release(member, ReleaseStatus.DONE, 2))  # unsigned: not relayed
    assert not board.is_open("T")
    parts = board.team_sync_parts()
    assert all(not p.closers for p in parts)
    assert isinstance(parts, list)
    assert all(isinstance(p, TaskSync) for p in parts)


def test_a_node_s_first_bids_merge_as_a_bid_at_a_time() -> None:
    """A message of agents new to the ledger goes into each task's table without a look-up,
    unless a slot comes twice in it: either way the ledger is the one a bid at a time leaves,
    the bound on bids (first come, first kept) included."""
    rows = [("T", 1, 0, 2.0), ("T", 2, 0, 1.0), ("T", 1, 0, 0.5), ("U", 3, 0, 1.0),
            ("T", 3, 1, 0.25), ("U", 1, 0, 3.0), ("U", 4, 0, 0.5)]  # fmt: skip
    for max_bids in (100, 4):

        def board(max_bids: int = max_bids) -> TaskBoard:
            b = TaskBoard(max_bids=max_bids)
            b.add_spec(team("T", 2, roles=[Role(capability="grid", count=1, goal_state=4)]))
            b.add_spec(team("U", 2))
            return b

        one_by_one, message = board(), board()
        for task, agent, role, cost in rows:
            one_by_one.add_bid(bid(task, "n1", agent, cost, role=role))
        tasks = ["T", "U"]
        assert message.add_bids(
            "n1", "g", 0, 1, tasks, epochs=[0, 0],
            task_index=[tasks.index(r[0]) for r in rows], agents=[r[1] for r in rows],
            costs=[r[3] for r in rows], roles=[r[2] for r in rows],
        )  # fmt: skip
        assert message.digest() == one_by_one.digest()
        assert message.teams() == one_by_one.teams()
        assert (message.n_bids, message.overflow) == (one_by_one.n_bids, one_by_one.overflow)
        assert message.n_bids == min(6, max_bids)


def test_a_board_of_team_tasks_only_awards_no_one_agent_task_without_its_team_rows() -> None:
    """The one-agent award of a board whose one-agent tasks have no bids is empty and costs
    nothing (issue 55: a node of a team formation built the team rows for it on every
    change, a third of its award's CPU); with a one-agent task's bids, team members are left
    out of it as before."""
    board = TaskBoard()
    board.add_spec(team("T", 1))
    board.add_spec(single("s"))
    board.add_bid(bid("T", "n1", 0, 1.0, held=True))
    built: list[int] = []
    role_bids = board._role_bids

    def counting(tasks: list[str]):  # type: ignore[no-untyped-def]
        built.append(len(tasks))
        return role_bids(tasks)

    board._role_bids = counting  # type: ignore[method-assign]
    assert board.award() == {}
    assert built == []
    board.add_bid(bid("s", "n1", 0, 0.5))  # the member: not the one-agent task's winner
    assert board.award() == {}
    assert built == [1]
    board.add_bid(bid("s", "n1", 1, 0.7))
    assert board.award()["s"].agent == 1
    assert [m.agent for m in board.teams()["T"].members] == [0]


def test_bid_by_all_says_whether_every_node_named_has_a_bid_on_the_round() -> None:
    board = TaskBoard()
    board.add_spec(team("T", 2))
    board.add_spec(team("U", 2))
    board.add_bid(bid("T", "n1", 0, 1.0))
    board.add_bid(bid("T", "n2", 0, 1.0))
    board.add_bid(bid("U", "n3", 0, 1.0))
    assert board.bid_by_all("T", ["n1", "n2"])
    assert board.bid_by_all("T", [])
    assert not board.bid_by_all("T", ["n1", "n3"])  # n3 bid on U only
    assert not board.bid_by_all("T", ["n1", "n4"])  # never heard of
    assert not board.bid_by_all("V", ["n1"])


def test_bid_by_all_follows_the_round_s_bids_after_it_was_asked() -> None:
    """The answer is kept per task until its rows change: a peer's bids that come later, and
    bids that go (a dead session's), change it."""
    board = TaskBoard()
    board.add_spec(team("T", 2))
    board.add_bid(bid("T", "n1", 0, 1.0))
    assert not board.bid_by_all("T", ["n1", "n2"])
    board.add_bid(bid("T", "n2", 3, 1.0))
    assert board.bid_by_all("T", ["n1", "n2"])
    board.add_dead("n2", 0)
    assert not board.bid_by_all("T", ["n1", "n2"])
    assert board.bid_by_all("T", ["n1"])
