"""The ledger's state: what is computed from its facts the same on every node."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.coordination.board_state import BoardState, holder_hashes, stable_hash64


@given(
    node=st.text(max_size=300),
    group=st.text(max_size=70),
    agents=st.lists(st.integers(0, (1 << 63) - 1), max_size=20),
)
def test_holder_hashes_are_the_stable_hash_of_each_holder(
    node: str, group: str, agents: list[int]
) -> None:
    """A new holder's hash, computed from its names' msgpack encoded once per message (issue
    55: a formation registers thousands of holders), is the digest's hash of ``(node, group,
    agent)`` (names of every msgpack string length, agents of every int width)."""
    assert holder_hashes(node, group, agents).tolist() == [
        stable_hash64((node, group, a)) for a in agents
    ]


def scratch_total(board: BoardState) -> int:
    """The digest's bid part made from scratch: every row hashed again, its task's salt looked
    up by name (the ledger keeps the sum as rows come and go)."""
    import numpy as np

    from edge_agent.coordination.board_state import _ODD, _SLOT_BITS

    parts = []
    for task in board.rows.slot_of:
        keys, costs, seqs, held = board.bid_arrays(task)
        salt = np.full(keys.size, board._task_salts(task)[0], dtype=np.uint64)
        parts.append(board._row_hashes(keys, costs, seqs.view(np.uint64) * _ODD[1], held, salt))
    assert all((p.size == 0) or (p.dtype == np.uint64) for p in parts)
    assert _SLOT_BITS > 0
    return int(np.concatenate([np.zeros(1, np.uint64), *parts]).sum(dtype=np.uint64))


def test_the_kept_bid_hash_is_every_row_hashed_again() -> None:
    """The digest's bid part is kept as rows come, are replaced and go (issue 55, the
    sixteenth pass: one set of bid columns a ledger): it is every row's hash made again from
    scratch, a task emptied by a dead session's bids dropped included."""
    from edge_agent.coordination.ledger import Bid, TaskBoard
    from edge_agent.coordination.messages import TaskSpec

    board = TaskBoard()
    for t in ("a", "b", "c", "d"):
        team = 2 if t != "d" else msgspec.UNSET
        spec = TaskSpec(task=t, epoch=0, capability="grid", goal_state=1, announced_by="hub")
        board.add_spec(msgspec.structs.replace(spec, team=team))
    bids = [("a", "n1"), ("a", "n2"), ("b", "n1"), ("c", "n3"), ("d", "n2")]
    for i, (t, node) in enumerate(bids):
        board.add_bid(Bid(t, 0, node, "g", i, 0.5 * i, 1, i + 1, 0, i % 2 == 0 and t != "d"))
        assert board.rows.total == scratch_total(board)
    board.add_bid(Bid("a", 0, "n1", "g", 0, 0.25, 1, 9, 0, True))  # a row replaced
    assert board.rows.total == scratch_total(board)
    board.add_dead("n3", 1)  # c's only bid goes
    board.digest()
    assert board.bid_arrays("c")[0].size == 0
    assert board.rows.total == scratch_total(board) != 0


def test_a_digest_after_new_slots_adds_their_hashes_to_the_one_before() -> None:
    """Peers' first bids are new slots: their rows are hashed as the message merges and added
    to the tables' hashes, which stay valid (issue 55, the fourteenth pass); the digest is the
    digest of a board that took the same bids with no digest asked between them, and of one
    that took them in another order -- also once rows are replaced (holds) and dropped (a dead
    session)."""
    import numpy as np

    from edge_agent.coordination.ledger import TaskBoard
    from edge_agent.coordination.messages import TaskSpec

    def spec(t: str) -> TaskSpec:
        return TaskSpec(task=t, epoch=0, capability="grid", goal_state=1, announced_by="hub",
                        team=3)  # fmt: skip

    rng = np.random.default_rng(5)
    messages = []
    for n in range(6):
        task_index = rng.integers(0, 3, 40)
        messages.append((f"n{n}", task_index, rng.permutation(200)[:40], rng.random(40),
                         rng.integers(0, 1, 40), np.zeros(40, bool)))  # fmt: skip
    holds = [(m[0], m[1][:5], m[2][:5], m[3][:5], m[4][:5], np.ones(5, bool)) for m in messages[:3]]

    def board_of(order: list[int], *, ask: bool) -> TaskBoard:
        board = TaskBoard()
        for t in ("a", "b", "c"):
            board.add_spec(spec(t))
        for i in order:
            node, ti, agents, costs, roles, held = messages[i]
            board.add_bids(node, "g", 1, 1, ["a", "b", "c"], epochs=[0, 0, 0], task_index=ti,
                           agents=agents, costs=costs, roles=roles, holds=held)  # fmt: skip
            if ask:
                added.append(board.rows.total == scratch_total(board))
                board.digest()
        return board

    added: list[int] = []
    asked, once = board_of(list(range(6)), ask=True), board_of([5, 3, 1, 0, 2, 4], ask=False)
    # every message's rows' hashes added to the kept sum (the sixteenth pass)
    assert added == [True] * 6
    assert asked.digest() == once.digest()
    for board in (asked, once):
        for node, ti, agents, costs, roles, held in holds:
            board.add_bids(node, "g", 1, 2, ["a", "b", "c"], epochs=[0, 0, 0], task_index=ti,
                           agents=agents, costs=costs, roles=roles, holds=held)  # fmt: skip
            board.digest()
    assert asked.digest() == once.digest()
    more = messages[0]
    for board in (asked, once):
        board.add_bids("n9", "g", 1, 1, ["a", "b", "c"], epochs=[0, 0, 0], task_index=more[1],
                       agents=more[2], costs=more[3], roles=more[4], holds=more[5])  # fmt: skip
    asked.add_dead("n1", 1)
    once.add_dead("n1", 1)
    assert asked.digest() == once.digest()


def test_bounds_past_a_bid_key_s_bits_are_refused() -> None:
    """A bid row's key is its task's slot and its slot key in one int64 (the sixteenth pass):
    bounds whose holders or tasks would not fit are refused when the ledger is made, not
    wrapped around; the defaults and the largest that fit are taken."""
    import pytest

    from edge_agent.coordination.bid_table import KEY_BITS
    from edge_agent.coordination.board_state import ROLE_SPAN
    from edge_agent.coordination.ledger import TaskBoard

    TaskBoard()
    most = (1 << KEY_BITS) // ROLE_SPAN - 1
    TaskBoard(max_bids=most - 1, max_consumed=1, max_tasks=(1 << (62 - KEY_BITS)) - 1)
    with pytest.raises(ValueError, match="too large"):
        TaskBoard(max_bids=most, max_consumed=1)
    with pytest.raises(ValueError, match="too large"):
        TaskBoard(max_tasks=1 << (62 - KEY_BITS))
