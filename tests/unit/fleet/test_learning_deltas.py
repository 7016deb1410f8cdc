"""A learning group's increments as LearningDelta messages (edge_agent/fleet/learning_deltas.py):
one message while they fit, split by columns into numbered messages that each fit the link's
payload when not, each part with the agent-ticks its mass needs."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning_counts import TableIncrements
from edge_agent.errors import ProtocolError
from edge_agent.fleet.learning_deltas import learning_deltas
from edge_agent.fleet.protocol import (
    DEFAULT_MAX_BYTES,
    MAX_DELTA_VALUES,
    LearningDelta,
    decode,
    encode,
)
from tests.unit.fleet.test_protocol import envelope

SHA = "ab" * 32


def table(
    name: str, rows: int, columns: int, k: int, ticks: int, *, seed: int = 0
) -> TableIncrements:
    rng = np.random.default_rng(seed)
    moved = np.sort(rng.choice(columns, size=k, replace=False)).astype(np.uint32)
    values = rng.random((k, rows)).astype(np.float32)
    if k:
        values *= ticks * 0.5 / values.sum()  # the mass lr 0.5 allows, exactly
    return TableIncrements(name, (rows, columns), moved, values, ticks, 0.5)


def wire(deltas: list[LearningDelta]) -> list[LearningDelta]:
    """The messages as a hub decodes them (each encoded within the link's payload bound)."""
    out = []
    for d in deltas:
        body = decode(encode(envelope(d), DEFAULT_MAX_BYTES)).body
        assert isinstance(body, LearningDelta)
        out.append(body)
    return out


def test_small_increments_go_as_one_message_that_round_trips() -> None:
    tables = [table("A1", 3, 12, 5, 40), table("B0", 4, 12, 0, 7)]  # B: ticks, nothing moved
    (delta,) = wire(learning_deltas("maze", "maze@2", SHA, tables, next_seq=9,
                                    max_payload_bytes=DEFAULT_MAX_BYTES))
    assert (delta.group, delta.model, delta.model_sha256, delta.seq) == ("maze", "maze@2", SHA, 9)
    for sent, t in zip(delta.tables, tables, strict=True):
        columns, values = sent.arrays()
        assert (sent.table, sent.shape, sent.experience, sent.lr) == (
            t.table, t.shape, t.agent_ticks, 0.5)
        assert columns.tolist() == t.columns.tolist()
        assert np.array_equal(values, t.values)


@pytest.mark.parametrize("budget", [DEFAULT_MAX_BYTES, 20_000])
def test_a_large_delta_is_split_into_numbered_messages_that_each_keep_the_mass_bound(
    budget: int,
) -> None:
    big = table("A0", 8, 40_000, 30_000, 1_000_000, seed=1)  # 240,000 values: ~1 MB
    small = table("A1", 3, 10, 4, 1_000, seed=2)
    deltas = wire(learning_deltas("maze", "maze@2", SHA, [big, small], next_seq=1,
                                  max_payload_bytes=budget))
    assert len(deltas) > 1
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    parts = [(p, *p.arrays()) for d in deltas for p in d.tables]
    for p, _, values in parts:
        assert values.size <= MAX_DELTA_VALUES
        assert values.sum(dtype=np.float64) <= p.experience * p.lr * (1 + 1e-6)
    for t in (big, small):
        mine = [(p, c, v) for p, c, v in parts if p.table == t.table]
        assert np.concatenate([c for _, c, _ in mine]).tolist() == t.columns.tolist()
        assert np.array_equal(np.concatenate([v for _, _, v in mine]), t.values)
        ticks = sum(p.experience for p, _, _ in mine)
        assert t.agent_ticks <= ticks < t.agent_ticks + len(mine)  # rounded up per part


def test_no_tables_no_message_and_a_column_too_large_is_one_clear_error() -> None:
    assert learning_deltas("g", "m@1", SHA, [], next_seq=1, max_payload_bytes=4096) == []
    with pytest.raises(ProtocolError, match="table A0 has columns of 4000 values; one does not"):
        learning_deltas("g", "m@1", SHA, [table("A0", 4000, 2, 1, 5)], next_seq=1,
                        max_payload_bytes=4096)
