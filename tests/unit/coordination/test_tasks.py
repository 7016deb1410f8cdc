"""Task allocation pieces: utilities and EFE costs, task preferences, the award rule, the ledger."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace as dc_replace

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from edge_agent.aif import kernels
from edge_agent.aif.kernels.compiled import MAX_JOINT_TABLE
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import MAX_POLICY_LEN, AifSettings
from edge_agent.coordination import preferences as preferences_module
from edge_agent.coordination.ledger import MAX_SESSION, Bid, TaskBoard, abandon, award
from edge_agent.coordination.messages import (
    Release,
    ReleaseStatus,
    TaskBids,
    TaskRelease,
    TaskSpec,
    TaskState,
    TaskSync,
)
from edge_agent.coordination.preferences import TaskPreferences
from edge_agent.coordination.utility import (
    MIN_BID_COST,
    goal_distances,
    policy_backward,
    policy_utility_rows,
    select_bids,
    steps_to_goal,
    task_costs,
    task_utilities,
    task_utility,
    transition_support,
)
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import DEFAULT_MAX_BYTES, DecodeError, Envelope, decode, encode
from edge_agent.sim import BatchEnv
from edge_agent.sim.gridworld import gridworld_model, manhattan_to


def bid(
    task: str,
    node: str,
    agent: int,
    cost: float,
    *,
    epoch: int = 0,
    group: str = "g",
    bdseq: int = 0,
    bseq: int = 1,
) -> Bid:
    return Bid(task, epoch, node, group, agent, cost, bdseq, bseq)


def spec(task: str, goal: int = 0, epoch: int = 0, by: str = "hub") -> TaskSpec:
    return TaskSpec(task=task, epoch=epoch, capability="grid", goal_state=goal, announced_by=by)


# --------------------------------------------------------------------------------------------
# the award rule


def test_lowest_cost_wins_and_ties_go_to_the_smallest_ids() -> None:
    open_epochs = {"a": 0, "b": 0, "c": 0}
    bids = [
        bid("a", "n2", 0, 1.0),
        bid("a", "n1", 5, 1.0),  # same cost: n1 < n2
        bid("b", "n1", 7, 2.0, group="h"),
        bid("b", "n1", 7, 2.0, group="g"),  # same node: group g < h
        bid("c", "n3", 9, 3.0),
        bid("c", "n3", 8, 3.0),  # same node and group: agent 8 < 9
    ]
    result = award(open_epochs, bids)
    assert {t: b.holder for t, b in result.items()} == {
        "a": ("n1", "g", 5),
        "b": ("n1", "g", 7),
        "c": ("n3", "g", 8),
    }


def test_one_task_per_agent_globally_cheapest_first() -> None:
    bids = [
        bid("a", "n1", 0, 1.0),
        bid("b", "n1", 0, 0.5),  # agent 0 is cheapest for both: b first (0.5)
        bid("a", "n2", 3, 4.0),
    ]
    result = award({"a": 0, "b": 0}, bids)
    assert result["b"].holder == ("n1", "g", 0)
    assert result["a"].holder == ("n2", "g", 3)


def test_stale_epochs_and_replaced_bids_do_not_count() -> None:
    bids = [
        bid("a", "n1", 0, 0.1, epoch=0),  # the task is at epoch 1 now
        bid("a", "n2", 1, 5.0, epoch=1, bseq=1),
        bid("a", "n2", 1, 9.0, epoch=1, bseq=2),  # the re-bid replaces the first
        bid("a", "n3", 2, 8.0, epoch=1),
        bid("x", "n1", 4, 0.0),  # not an open task
    ]
    result = award({"a": 1}, bids)
    assert result["a"].holder == ("n3", "g", 2)
    assert list(result) == ["a"]


NODES = ["n0", "n1", "n10", "n2"]
bids_strategy = st.lists(
    st.builds(
        Bid,
        task=st.sampled_from(["t0", "t1", "t2", "t3"]),
        epoch=st.sampled_from([0, 1]),
        node=st.sampled_from(NODES),
        group=st.sampled_from(["g", "h"]),
        agent=st.integers(0, 4),
        cost=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]),  # few values: many exact ties
        bdseq=st.integers(0, 2),
        bseq=st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(bids=bids_strategy, seed=st.integers(0, 1 << 30), dup=st.integers(0, 3))
def test_award_ignores_arrival_order_and_duplicates(bids: list[Bid], seed: int, dup: int) -> None:
    open_epochs = {"t0": 0, "t1": 1, "t2": 0, "t3": 1}
    reference = award(open_epochs, bids)
    shuffled = bids * (1 + dup)
    random.Random(seed).shuffle(shuffled)
    assert award(open_epochs, shuffled) == reference
    holders = [b.holder for b in reference.values()]
    assert len(holders) == len(set(holders))  # one task per agent


releases_strategy = st.lists(
    st.builds(
        Release,
        task=st.sampled_from(["t0", "t1", "t2", "t3"]),
        epoch=st.sampled_from([0, 1]),
        node=st.sampled_from(NODES),
        group=st.sampled_from(["g", "h"]),
        agent=st.integers(0, 4),
        bdseq=st.integers(0, 2),
        bseq=st.integers(0, 3),
        status=st.sampled_from(list(ReleaseStatus)),
    ),
    max_size=4,
)
deaths_strategy = st.lists(st.tuples(st.sampled_from(NODES), st.integers(0, 1)), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    bids=bids_strategy,
    releases=releases_strategy,
    deaths=deaths_strategy,
    seed=st.integers(0, 1 << 30),
)
def test_board_is_a_pure_function_of_its_facts(
    bids: list[Bid], releases: list[Release], deaths: list[tuple[str, int]], seed: int
) -> None:
    """Any order of the same facts (with duplicates) gives the same board: award and digest;
    and the board's vectorised award is the reference award rule over the bids that count."""
    facts: list[object] = [spec(t, epoch=e) for t, e in (("t0", 0), ("t1", 1), ("t2", 0))]
    facts += bids + bids[: len(bids) // 2] + releases + deaths

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

    a = build(facts)
    shuffled = list(facts)
    random.Random(seed).shuffle(shuffled)
    b = build(shuffled)
    assert a.award() == b.award()
    assert a.digest() == b.digest()
    assert a.open_epochs() == b.open_epochs()
    dead: dict[str, int] = {}
    for node, bdseq in deaths:
        dead[node] = max(dead.get(node, -1), bdseq)
    consumed: dict[tuple[str, str, int], tuple[int, int]] = {}
    for r in releases:
        key = (r.node, r.group, r.agent)
        consumed[key] = max(consumed.get(key, (-1, -1)), (r.bdseq, r.bseq))

    def counts(x: Bid) -> bool:
        return x.bdseq > dead.get(x.node, -1) and (x.bdseq, x.bseq) > consumed.get(
            x.holder, (-1, -1)
        )

    assert a.award() == award(a.open_epochs(), [x for x in bids if counts(x)])


def test_board_facts_release_death_and_reopen() -> None:
    board = TaskBoard()
    board.add_spec(spec("a", epoch=0))
    board.add_spec(spec("b", epoch=0))
    assert board.add_bid(bid("a", "n1", 0, 1.0, bdseq=3, bseq=1))
    assert board.add_bid(bid("b", "n1", 0, 2.0, bdseq=3, bseq=1))
    assert board.add_bid(bid("b", "n2", 5, 3.0, bdseq=0, bseq=1))
    assert board.award()["a"].holder == ("n1", "g", 0)
    assert board.award()["b"].holder == ("n2", "g", 5)
    # Agent n1/0 finishes "a": the task closes and its other bids (up to bseq 2) are used up.
    board.add_release(
        Release(
            task="a",
            epoch=0,
            node="n1",
            group="g",
            agent=0,
            bdseq=3,
            bseq=2,
            status=ReleaseStatus.DONE,
        )
    )
    assert not board.is_open("a")
    assert board.award() == {"b": bid("b", "n2", 5, 3.0, bdseq=0, bseq=1)}
    assert not board.add_bid(bid("a", "n3", 1, 0.0))  # closed
    # A later bid of the same agent counts again.
    assert board.add_bid(bid("b", "n1", 0, 0.5, bdseq=3, bseq=7))
    assert board.award()["b"].holder == ("n1", "g", 0)
    # Its session dies: its bids stop counting; the engine abandons what it held, so the task
    # moves to epoch 1, where nobody has bid yet.
    held = board.add_dead("n1", 3)
    assert held == [bid("b", "n1", 0, 0.5, bdseq=3, bseq=7)]
    assert board.award()["b"].holder == ("n2", "g", 5)
    assert board.add_release(abandon(held[0]))
    assert board.epoch("b") == 1
    assert board.award() == {}
    assert not board.add_bid(bid("b", "n2", 5, 3.0, epoch=0, bseq=2))  # old epoch
    assert not board.add_bid(bid("b", "n1", 0, 0.1, epoch=1, bdseq=3, bseq=9))  # dead session
    assert board.add_bid(bid("b", "n1", 0, 0.1, epoch=1, bdseq=4, bseq=1))  # its new session
    assert board.award()["b"].holder == ("n1", "g", 0)
    # Abandoned: the next epoch; a re-announcement with a larger epoch reopens a closed task.
    board.add_release(
        Release(
            task="b",
            epoch=1,
            node="n1",
            group="g",
            agent=0,
            bdseq=4,
            bseq=2,
            status=ReleaseStatus.ABANDONED,
        )
    )
    assert board.epoch("b") == 2
    assert board.is_open("b")
    assert not board.add_spec(spec("a", epoch=0))
    assert board.add_spec(spec("a", epoch=1))
    assert board.is_open("a")


def test_bids_for_an_unknown_task_count_once_it_is_announced() -> None:
    board = TaskBoard()
    assert board.add_bid(bid("a", "n1", 0, 1.0, epoch=2))
    assert board.award() == {}
    board.add_spec(spec("a", epoch=0))  # an older announcement arrives late
    assert board.epoch("a") == 2
    assert board.award()["a"].epoch == 2


def test_sync_merges_two_ledgers_into_one() -> None:
    left, right = TaskBoard(), TaskBoard()
    for board in (left, right):
        board.add_spec(spec("a"))
        board.add_spec(spec("b", goal=3))
    left.add_bid(bid("a", "n1", 0, 1.0))
    left.add_bid(bid("b", "n1", 0, 2.0))
    right.add_bid(bid("a", "n2", 0, 1.5))
    right.add_bid(bid("b", "n2", 0, 0.5))
    right.add_dead("n9", 4)
    assert left.award() != right.award()
    for part in left.sync_parts():
        right.merge_sync(part)
    for part in right.sync_parts():
        left.merge_sync(part)
    assert left.digest() == right.digest()
    assert left.award() == right.award()
    assert {t: b.holder for t, b in left.award().items()} == {
        "a": ("n1", "g", 0),
        "b": ("n2", "g", 0),
    }


def test_sync_parts_fit_the_message_limit() -> None:
    board = TaskBoard()
    for t in range(300):
        # (a sync relays only signed specs; the board keeps the signature, its caller checks it)
        board.add_spec(spec(f"task-{t:04d}", goal=t % 100), bytes(range(64)))
    for n in range(5):
        for t in range(300):
            board.add_bids(
                f"node-{n}",
                "grid",
                1,
                1,
                [f"task-{t:04d}"],
                epochs=[0],
                task_index=list(range(1)) * 20,
                agents=list(range(20)),
                costs=[float(a) for a in range(20)],
            )
    assert board.n_bids == 5 * 300 * 20
    parts = board.sync_parts()
    assert len(parts) == 2 + 4  # 300 signed specs, 192 per part; 30,000 bids, 8,192 per part
    other = TaskBoard()
    for part in parts:
        payload = encode(
            Envelope(
                type="task_sync",
                node="node-0",
                seq=1,
                bdseq=1,
                ts=1.0,
                clock_synced=False,
                body=part,
            )
        )
        assert len(payload) <= DEFAULT_MAX_BYTES
        merged = decode(payload).body
        assert isinstance(merged, TaskSync)
        other.merge_sync(merged)
    assert other.digest() == board.digest()


def test_a_sync_part_of_the_longest_facts_fits_the_message_limit() -> None:
    """Every name 64 characters, every number its largest: a part of specs, closers (each with
    its task's spec), consumed agents and dead sessions stays under the message limit, and a
    board that merges the parts ends with the same digest."""
    long = "x" * 60
    board = TaskBoard(max_tasks=4096)
    specs = [
        TaskSpec(
            task=f"{i:04d}{long}", epoch=UINT32 - 2, capability="c" * 64, goal_factor=63,
            goal_state=(1 << 20) - 1, deadline=1.7e9 + 0.123, announced_by="h" * 64,
        )
        for i in range(1000)
    ]  # fmt: skip
    for s in specs:
        board.add_spec(s, bytes(64))
    for s in specs[500:]:
        board.add_release(
            Release(
                task=s.task, epoch=UINT32 - 2, node=f"{s.task[:4]}{long}", group="g" * 64,
                agent=UINT32 - 1, bdseq=MAX_SESSION, bseq=UINT32 - 1, status=ReleaseStatus.DONE,
            ),
            bytes(64),
        )  # fmt: skip
    for i in range(500):
        board.add_dead(f"{i:04d}{long}", UINT32 - 1)
    parts = board.sync_parts()
    assert [len(p.closers) for p in parts] == [192, 192, 116]
    other = TaskBoard(max_tasks=4096)
    for part in parts:
        env = Envelope(
            type="task_sync", node="n" * 64, seq=UINT32 - 1, bdseq=UINT32 - 1, ts=1.7e9,
            clock_synced=False, body=part,
        )  # fmt: skip
        payload = encode(env)
        assert len(payload) <= DEFAULT_MAX_BYTES
        merged = decode(payload).body
        assert isinstance(merged, TaskSync)
        other.merge_sync(merged)
    assert other.digest() == board.digest()
    assert other.closed == board.closed


def test_board_bounds_are_counted() -> None:
    board = TaskBoard(max_bids=3, max_tasks=2)
    board.add_spec(spec("a"))
    board.add_spec(spec("b"))
    assert not board.add_spec(spec("c"))
    for agent in range(5):
        board.add_bid(bid("a", "n1", agent, float(agent)))
    assert board.n_bids == 3
    assert board.overflow == 3


def hub_board() -> TaskBoard:
    """A board whose fleet authority is ``hub`` (its task key is one of the node's hub keys)."""
    return TaskBoard(authority=lambda announcer: announcer == "hub")


def done(task: str, epoch: int, node: str = "n1", agent: int = 0, bseq: int = 9) -> Release:
    return Release(
        task=task, epoch=epoch, node=node, group="g", agent=agent, bdseq=0, bseq=bseq,
        status=ReleaseStatus.DONE,
    )  # fmt: skip


def test_a_task_id_is_its_first_ranked_announcer_s() -> None:
    """A task id belongs to one announcer: the hub before every node, then the first by name.
    Another announcer's spec changes nothing, at any epoch; one of an announcer that ranks
    first takes the task over."""
    board = hub_board()
    assert board.add_spec(spec("a", goal=1, by="n2"))
    assert board.add_bid(bid("a", "n1", 0, 1.0))
    # n3 ranks after n2: its spec of "a", at the end of the epoch range, changes nothing.
    assert not board.add_spec(spec("a", goal=2, epoch=UINT32 - 2, by="n3"))
    assert board.outranked(spec("a", by="n3"))
    assert (board.owner("a"), board.specs["a"].goal_state, board.epoch("a")) == ("n2", 1, 0)
    # n2 re-announces its own task: a new round, as before.
    assert board.add_spec(spec("a", goal=3, epoch=1, by="n2"))
    assert (board.specs["a"].goal_state, board.epoch("a")) == (3, 1)
    # n1 ranks before n2 and takes "a" over: its spec's round (round 1 came from n2's spec only).
    assert board.add_spec(spec("a", goal=4, by="n1"))
    assert board.owner("a") == "n1"
    assert (board.specs["a"], board.epoch("a")) == (spec("a", 4, by="n1"), 0)
    assert board.outranked(spec("a", epoch=9, by="n2"))
    # The hub ranks before every node ("a1" < "hub" by name); after it, no node's spec counts.
    assert board.add_spec(spec("a", goal=5, by="hub"))
    assert board.owner("a") == "hub"
    for node in ("a1", "n1", "n2"):
        assert not board.add_spec(spec("a", goal=6, epoch=UINT32 - 2, by=node))
    assert (board.specs["a"].goal_state, board.epoch("a")) == (5, 0)
    assert board.is_open("a")
    # Without an authority the hub is a node like the others.
    plain = TaskBoard()
    assert plain.add_spec(spec("b", by="hub"))
    assert plain.add_spec(spec("b", goal=7, by="a1"))
    assert plain.owner("b") == "a1"


def test_a_take_over_keeps_what_the_new_owner_s_spec_allows() -> None:
    """A node announced the hub's id first, at the end of the epoch range, won it and closed
    it there. The hub's spec, when it comes, takes the id over: the tombstone and the floor
    beyond MAX_ROUNDS past the hub's spec go, and the task is open in the hub's round. What
    is within that limit stays, as a board that had the hub's spec first would have taken it."""
    forever = UINT32 - 2
    board = hub_board()
    board.add_spec(spec("a", goal=1, epoch=forever, by="n1"))
    board.add_bid(bid("a", "n1", 0, MIN_BID_COST, epoch=forever))
    board.add_release(done("a", forever), b"s" * 64)
    assert not board.is_open("a")
    assert board.closed["a"] == forever
    assert board.add_spec(spec("a", goal=5, by="hub"), b"h" * 64)
    assert (board.closed, board.closers, board.closed_specs) == ({}, {}, {})
    assert (board.epoch("a"), board.is_open("a"), board.owner("a")) == (0, True, "hub")
    assert board.award() == {}  # n1's bid was of a round the hub's spec does not allow
    # Within the limit: n2 announced "b" at 3 and an agent bid in round 4; n2 announced "c"
    # at 2 and an agent closed it. The same board whether the hub's specs came first or last.
    first, late = hub_board(), hub_board()
    facts: list[object] = [
        spec("b", goal=1, epoch=3, by="n2"),
        bid("b", "n3", 0, 1.0, epoch=4),
        spec("c", goal=1, epoch=2, by="n2"),
        bid("c", "n3", 1, 1.0, epoch=2),
        done("c", 2, node="n3", agent=1),
    ]
    hub_specs = [spec("b", goal=2, by="hub"), spec("c", goal=2, by="hub")]
    for board, order in ((first, hub_specs + facts), (late, facts + hub_specs)):
        for f in order:
            if isinstance(f, TaskSpec):
                board.add_spec(f)
            elif isinstance(f, Bid):
                board.add_bid(f)
            else:
                assert isinstance(f, Release)
                board.add_release(f)
    for board in (first, late):
        assert {t: board.owner(t) for t in ("b", "c")} == {"b": "hub", "c": "hub"}
        assert board.epoch("b") == 4
        assert board.award()["b"].holder == ("n3", "g", 0)
        assert board.closed == {"c": 2}
    assert first.digest() == late.digest()
    assert first.specs == late.specs


announcers = st.sampled_from(["hub", "n1", "n2", "n3"])


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.sampled_from(["t0", "t1", "t2"]), announcers, st.integers(0, 3)),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 1 << 30),
)
def test_every_order_of_announcements_binds_the_same_owner(
    specs: list[tuple[str, str, int]], seed: int
) -> None:
    """Announcers of one id reaching nodes in different orders: every node binds the id to the
    same announcer and holds the same spec, floor and digest."""
    facts = [spec(t, goal=i, epoch=e, by=a) for i, (t, a, e) in enumerate(specs)]

    def build(order: list[TaskSpec]) -> TaskBoard:
        board = hub_board()
        for f in order:
            board.add_spec(f)
        return board

    a = build(facts)
    shuffled = list(facts)
    random.Random(seed).shuffle(shuffled)
    b = build(shuffled)
    assert a.owners == b.owners
    assert a.specs == b.specs
    assert a.open_epochs() == b.open_epochs()
    assert a.digest() == b.digest()
    for task in a.specs:
        first = min(({"hub": 0}.get(x, 1), x) for t, x, _ in specs if t == task)
        assert a.owner(task) == first[1]
        assert a.epoch(task) == max(e for t, x, e in specs if t == task and x == first[1])


@settings(max_examples=150, deadline=None)
@given(
    owners=st.lists(announcers, min_size=1, max_size=6),
    bids=bids_strategy,
    releases=releases_strategy,
    deaths=deaths_strategy,
    seed=st.integers(0, 1 << 30),
)
def test_a_board_with_rival_announcers_is_a_function_of_its_facts(
    owners: list[str],
    bids: list[Bid],
    releases: list[Release],
    deaths: list[tuple[str, int]],
    seed: int,
) -> None:
    """Several announcers of the same ids (at the same epoch, as a task is first announced),
    bids, releases and deaths in any order: the same board."""
    facts: list[object] = [
        spec(t, goal=i, by=a) for i, a in enumerate(owners) for t in ("t0", "t1", "t2")
    ]
    facts += bids + releases + deaths

    def build(order: list[object]) -> TaskBoard:
        board = hub_board()
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

    a = build(facts)
    shuffled = list(facts)
    random.Random(seed).shuffle(shuffled)
    b = build(shuffled)
    assert a.specs == b.specs
    assert a.award() == b.award()
    assert a.open_epochs() == b.open_epochs()
    assert a.digest() == b.digest()


# --------------------------------------------------------------------------------------------
# messages


def test_task_messages_round_trip_and_refuse_bad_columns() -> None:
    body = TaskBids.from_arrays(
        "grid",
        3,
        ["a", "b"],
        epochs=[0, 2],
        task_index=[0, 1, 1],
        agents=[4, 5, 6],
        costs=[1.0, 2.5, -1.0],
    )
    env = Envelope(type=body.TYPE, node="n1", seq=1, bdseq=0, ts=1.0, clock_synced=False, body=body)
    raw = msgspec.msgpack.decode(encode(env))
    back = decode(encode(env)).body
    assert isinstance(back, TaskBids)
    epochs, index, agents, costs = back.arrays()
    assert epochs.tolist() == [0, 2]
    assert index.tolist() == [0, 1, 1]
    assert agents.tolist() == [4, 5, 6]
    assert costs.tolist() == [1.0, 2.5, -1.0]
    for other in (
        TaskRelease(
            items=[
                Release(
                    task="a",
                    epoch=0,
                    node="n1",
                    group="g",
                    agent=1,
                    bdseq=0,
                    bseq=1,
                    status=ReleaseStatus.DONE,
                )
            ]
        ),
        TaskState(digest=bytes(16), open_tasks=3),
    ):
        env = Envelope(
            type=other.TYPE, node="n1", seq=2, bdseq=0, ts=1.0, clock_synced=False, body=other
        )
        assert decode(encode(env)).body == other
    for field, value, problem in (
        ("task_index", np.array([0, 2, 1], "<u2").tobytes(), "task_index points past"),
        ("costs", np.array([1.0, np.nan, 2.0], "<f4").tobytes(), "costs must be finite"),
        ("agents", np.array([1, 2], "<u4").tobytes(), "agents has 8 bytes"),
    ):
        bad = {**raw, "body": {**raw["body"], field: value}}
        with pytest.raises(DecodeError, match=f"schema: task_bids: {problem}"):
            decode(msgspec.msgpack.encode(bad))
        with pytest.raises(ValueError, match=problem):  # nor can such a body be made
            replace(body, **{field: value})


# --------------------------------------------------------------------------------------------
# task utilities, costs and preferences


GRID = gridworld_model(6, 6, noise=0.1, preference_scale=0.0)


def test_steps_to_goal_on_a_grid_is_the_manhattan_distance() -> None:
    cm = kernels.compile_model(GRID, construct_policies(GRID.num_controls, 1))
    reach = transition_support(cm.transitions[0], 36)
    assert np.array_equal(steps_to_goal(reach, 14), manhattan_to(6, 6, (2, 2)))


def test_steps_to_goal_marks_unreachable_states() -> None:
    reach = np.array([[True, True, False], [False, True, False], [False, False, True]])
    assert steps_to_goal(reach, 1).tolist() == [1, 0, 2]


def test_task_utility_peaks_at_the_goal_and_falls_with_distance() -> None:
    cm = kernels.compile_model(GRID, construct_policies(GRID.num_controls, 1))
    U = task_utility(cm, 0, 21, scale=1.0)
    assert U.max() == 0.0
    assert int(np.argmax(U)) == 21
    d = manhattan_to(6, 6, (3, 3))
    means = [U[d == k].mean() for k in range(int(d.max()) + 1)]
    assert all(a > b for a, b in itertools.pairwise(means))


def model_with_c(model: GenerativeModel, C: list[np.ndarray]) -> GenerativeModel:
    return GenerativeModel.from_arrays(list(model.A), list(model.B), C, list(model.D))


def task_c(cm: kernels.CompiledModel, goal: int) -> list[np.ndarray]:
    """C of a goal task as docs/coordination.md defines it, computed independently."""
    d = manhattan_to(6, 6, divmod(goal, 6)).astype(float)
    A = cm.A_rows[0].astype(float)
    return [-(A @ d) / A.sum(axis=1)]


@pytest.mark.parametrize("policy_len", [1, 2])
def test_costs_are_the_best_policy_value_under_the_task_preferences(policy_len: int) -> None:
    """cost(n, t) = -max_pi G_t(n, pi) where G_t is pymdp's G with C replaced by the task's C
    (up to the constant shift of task_utility: policy_len * max U_t)."""
    pol = construct_policies(GRID.num_controls, policy_len)
    cm = kernels.compile_model(GRID, pol)
    rng = np.random.default_rng(1)
    qs = [rng.dirichlet(np.full(36, 0.3), size=12)]
    base = kernels.evaluate_policies(cm, qs, use_utility=True, use_info_gain=True).G
    goals = [0, 17, 35]
    U = np.stack([task_utility(cm, 0, g) for g in goals], axis=1)
    costs = task_costs(cm, qs, base, U, base_utility=cm.utility)
    for j, g in enumerate(goals):
        ref_cm = kernels.compile_model(model_with_c(GRID, task_c(cm, g)), pol)
        G_ref = kernels.evaluate_policies(ref_cm, qs, use_utility=True, use_info_gain=True).G
        shift = policy_len * ref_cm.utility.max()
        np.testing.assert_allclose(costs[:, j], -(G_ref.max(axis=1) - shift), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("policy_len", [1, 3])
def test_no_cost_is_below_minus_the_information_gain_bound(policy_len: int) -> None:
    """``U_task <= 0``, so a cost is at least minus the information gain of the best policy, at
    most ``ln O_joint`` a step: costs can be negative (an uncertain agent next to the goal) but
    never below ``-policy_len * ln O_joint``, and so never below ``MIN_BID_COST``, the bound
    for the longest horizon and the largest joint table any daemon compiles (receivers refuse
    bids below it)."""
    model = gridworld_model(6, 6, noise=0.3, preference_scale=0.0)
    cm = kernels.compile_model(model, construct_policies(model.num_controls, policy_len))
    S = cm.num_states[0]
    rng = np.random.default_rng(0)
    qs = [np.vstack([np.full((1, S), 1 / S), rng.dirichlet(np.full(S, 0.3), size=20), np.eye(S)])]
    G = kernels.evaluate_policies(cm, qs, use_utility=True, use_info_gain=True).G
    U = np.stack([task_utility(cm, 0, g) for g in range(S)], axis=1)
    costs = task_costs(cm, qs, G, U, base_utility=cm.utility)
    bound = -policy_len * math.log(cm.A_joint_T.shape[-1])
    assert bound <= costs.min() < 0
    assert bound >= MIN_BID_COST
    assert -math.ceil(MAX_POLICY_LEN * math.log(MAX_JOINT_TABLE)) == MIN_BID_COST


def test_costs_rank_certain_agents_by_distance() -> None:
    cm = kernels.compile_model(GRID, construct_policies(GRID.num_controls, 1))
    qs = [np.eye(36)]
    G = kernels.evaluate_policies(cm, qs, use_utility=True, use_info_gain=True).G
    goal = 14
    cost = task_costs(cm, qs, G, task_utility(cm, 0, goal)[:, None], base_utility=cm.utility)
    d = manhattan_to(6, 6, divmod(goal, 6))
    for k in range(1, int(d.max())):
        assert cost[d == k, 0].max() < cost[d == k + 1, 0].min()


def test_select_bids_takes_the_k_cheapest_per_task() -> None:
    costs = np.array([[5.0, 1.0], [1.0, 9.0], [3.0, 2.0], [4.0, 0.0]])
    ti, ap, c = select_bids(costs, 2)
    chosen = {(int(t), int(a)) for t, a in zip(ti, ap, strict=True)}
    assert chosen == {(0, 1), (0, 2), (1, 3), (1, 0)}
    assert sorted(c.tolist()) == [0.0, 1.0, 1.0, 3.0]
    ti, ap, _ = select_bids(costs, 10)
    assert len(ti) == 8


def test_task_preferences_give_exactly_the_task_models_policy_posterior() -> None:
    settings_ = AifSettings(policy_len=2)
    group = AifAgentGroup(GRID, 6, settings=settings_, precision="float64")
    rng = np.random.default_rng(2)
    obs = rng.integers(0, 36, (6, 1))
    group.infer_states(obs)
    group.infer_policies()
    untouched = group.q_pi[1:].copy()
    prefs = TaskPreferences(group.cm, 6, use_utility=True)
    task = spec("t", goal=30)
    assert prefs.assign(0, task, 0, task_utility(group.cm, 0, 30))
    prefs.adjust(group.qs, group.G, group.q_pi, gamma=settings_.gamma, lnE=group.cm.lnE)
    ref_cm = kernels.compile_model(model_with_c(GRID, task_c(group.cm, 30)), group.cm.tree.policies)
    G_ref = kernels.evaluate_policies(
        ref_cm, [group.qs[0][:1]], use_utility=True, use_info_gain=True
    ).G
    q_ref = kernels.policy_posterior(G_ref, ref_cm.lnE, settings_.gamma)
    np.testing.assert_allclose(group.q_pi[:1], q_ref, atol=1e-9)
    assert np.array_equal(group.q_pi[1:], untouched)
    assert prefs.held == {0: ("t", 0)}
    assert prefs.release(0) == ("t", 0)
    assert prefs.rows.size == 0


def test_agents_holding_tasks_walk_to_their_goals() -> None:
    n = 30
    model = gridworld_model(6, 6, noise=0.05, preference_scale=1.0)  # own C: bottom-right
    group = AifAgentGroup(model, n, seed=0)
    env = BatchEnv(model, n, seed=4)
    prefs = TaskPreferences(group.cm, n, use_utility=True)
    goals = np.random.default_rng(3).integers(0, 36, n)
    for a, g in enumerate(goals):
        prefs.assign(a, spec(f"t{a}", goal=int(g)), 0, task_utility(group.cm, 0, int(g)))
    for _ in range(25):
        group.infer_states(env.obs)
        group.infer_policies()
        prefs.adjust(group.qs, group.G, group.q_pi, gamma=group.settings.gamma, lnE=group.cm.lnE)
        env.step(group.sample_action())
    assert np.mean(env.true_states[:, 0] == goals) >= 0.9
    done = prefs.reached(group.qs, 0.9)
    assert set(done.tolist()) <= set(np.flatnonzero(env.true_states[:, 0] == goals).tolist())
    assert done.size >= 0.8 * n


def test_policy_utility_rows_matches_the_shared_form() -> None:
    cm = kernels.compile_model(GRID, construct_policies(GRID.num_controls, 2))
    rng = np.random.default_rng(7)
    qs = [rng.dirichlet(np.ones(36), size=5)]
    W = rng.normal(size=(36, 5))
    rows = policy_utility_rows(cm, qs, W.T)
    for n in range(5):
        one = kernels.evaluate_policies(
            dc_replace(cm, utility=W[:, n].astype(cm.dtype)),
            [qs[0][n : n + 1]],
            use_utility=True,
            use_info_gain=False,
        ).G
        np.testing.assert_allclose(rows[n], one[0], rtol=1e-9)


@pytest.mark.parametrize("noise", [0.0, 0.2])  # a sparse B (deterministic moves) and a dense one
@pytest.mark.parametrize("policy_len", [1, 3])
def test_precomputed_policy_utilities_equal_the_tree_walk(noise: float, policy_len: int) -> None:
    model = gridworld_model(4, 4, noise=0.1, preference_scale=0.0)
    if noise:
        B = (1 - noise) * model.B[0] + noise / 16
        model = GenerativeModel.from_arrays(list(model.A), [B], list(model.C), list(model.D))
    cm = kernels.compile_model(model, construct_policies(model.num_controls, policy_len))
    rng = np.random.default_rng(policy_len)
    qs = [rng.dirichlet(np.ones(16), size=7)]
    W = rng.normal(size=16)
    V = policy_backward(cm, W)
    np.testing.assert_allclose(
        qs[0] @ V.T, policy_utility_rows(cm, qs, np.tile(W, (7, 1))), rtol=1e-10, atol=1e-10
    )


def test_task_preferences_without_the_precomputed_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PRECOMPUTE_MAX the policy tree is walked every tick: same policy posteriors."""
    group = AifAgentGroup(GRID, 4, settings=AifSettings(policy_len=2), precision="float64")
    group.infer_states(np.array([[0], [7], [20], [35]]))
    group.infer_policies()
    G0, q0 = group.G.copy(), group.q_pi.copy()
    results = []
    for limit in (preferences_module.PRECOMPUTE_MAX, 0):
        monkeypatch.setattr(preferences_module, "PRECOMPUTE_MAX", limit)
        prefs = TaskPreferences(group.cm, 4, use_utility=True)
        assert (prefs.backward is None) == (limit == 0)
        for a, goal in enumerate((5, 5, 30, 12)):
            prefs.assign(
                a, spec(f"t{a}", goal=goal), 0, task_utility(group.cm, 0, goal), key=(0, goal)
            )
        G, q_pi = G0.copy(), q0.copy()
        prefs.adjust(group.qs, G, q_pi, gamma=16.0, lnE=group.cm.lnE)
        results.append(q_pi)
    np.testing.assert_allclose(results[0], results[1], atol=1e-12)
    assert not np.allclose(results[0], q0)


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_the_distance_table_is_every_goal_s_search_and_gives_the_same_utility(
    noise: float,
) -> None:
    """``goal_distances`` (one search from every goal, kept by a group for a formation's many
    goals) equals ``steps_to_goal`` per goal, unreachable states included, and the utility
    from it is the utility from the search."""
    model = gridworld_model(6, 5, noise=noise)
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1))
    reach = transition_support(cm.transitions[0], cm.num_states[0])
    table = goal_distances(reach)
    for goal in range(cm.num_states[0]):
        assert np.array_equal(table[:, goal], steps_to_goal(reach, goal))
        assert np.array_equal(
            task_utility(cm, 0, goal, scale=1.5, distances=table),
            task_utility(cm, 0, goal, scale=1.5),
        )
    goals = [3, 0, 17, 29, 3]
    batch = task_utilities(cm, 0, goals, scale=1.5, distances=table)  # one product per modality
    assert batch.shape == (cm.num_states[0], len(goals))
    for j, goal in enumerate(goals):
        np.testing.assert_allclose(
            batch[:, j], task_utility(cm, 0, goal, scale=1.5), rtol=1e-12, atol=1e-12
        )
    with pytest.raises(InputError):
        task_utilities(cm, 0, [0, cm.num_states[0]], scale=1.5, distances=table)
    one_way = np.zeros((4, 4), dtype=bool)  # 0 -> 1 -> 2; 3 alone: unreachable states
    one_way[0, 1] = one_way[1, 2] = True
    for goal in range(4):
        assert np.array_equal(goal_distances(one_way)[:, goal], steps_to_goal(one_way, goal))


def test_a_group_prepares_new_goals_utilities_in_one_batch() -> None:
    """The utilities a group caches for a formation's new goals, computed together, are each
    goal's own (up to rounding); a goal cached already is kept as it was."""
    from edge_agent.coordination.coordinated_group import CoordinatedGroup, GroupState

    model = gridworld_model(6, 5, noise=0.1)
    group = AifAgentGroup(model, 3, seed=0)
    gs = GroupState("g", CoordinatedGroup(group, capabilities=("grid",)), "n1", 4)
    kept = gs.utility(spec("t0", goal=7), 2.0)
    goals = [spec(f"t{g}", goal=g).slots()[0] for g in (7, 3, 11, 3, 29)]
    gs.prepare_utilities(goals, 2.0)
    assert set(gs.utilities) == {(0, 7), (0, 3), (0, 11), (0, 29)}
    assert gs.utility(spec("t0", goal=7), 2.0) is kept
    for g in (3, 11, 29):
        u = gs.utility(spec(f"t{g}", goal=g), 2.0)
        assert u.flags.c_contiguous
        np.testing.assert_allclose(
            u, task_utility(group.cm, 0, g, scale=2.0), rtol=1e-12, atol=1e-12
        )
