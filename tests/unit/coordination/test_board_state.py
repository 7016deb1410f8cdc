"""The ledger's state: what is computed from its facts the same on every node."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.coordination.board_state import holder_hashes, stable_hash64


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


def test_tables_hashed_together_hash_as_each_alone() -> None:
    """The digest hashes every changed task's bids in one pass (issue 55: a formation changes
    every task's table each tick): each table's hash is the one it has hashed alone, a table
    emptied by a dead session's bids dropped included."""
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
    board.add_dead("n3", 1)  # c's only bid goes
    board.digest()
    tables = list(board.bids.items())
    together = [per.digest for _, per in tables]
    for task, per in tables:
        per.digest = None
        board._bids_hashes([(task, per)])
    assert [per.digest for _, per in tables] == together
    assert board.bids["c"].digest == 0
    assert len(set(together)) == len(together)
