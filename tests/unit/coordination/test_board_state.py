"""The ledger's state: what is computed from its facts the same on every node."""

from __future__ import annotations

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
