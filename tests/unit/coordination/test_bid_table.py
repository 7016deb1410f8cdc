"""One task's bids in columns: a message merged at once keeps per slot the largest bid, in any
order, within the room given."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.main15.bid_table import SMALL, BidTable


def rows_of(table: BidTable) -> dict[int, tuple[float, int, bool]]:
    keys, costs, seqs, held = table.arrays()
    assert np.all(np.diff(keys) > 0)  # sorted, one row per slot
    return {
        int(k): (float(c), int(s), bool(h))
        for k, c, s, h in zip(keys, costs, seqs, held, strict=True)
    }


def one_by_one(messages: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]) -> dict:
    """The rule bid by bid, as the ledger applied it before: a row replaces the slot's when
    ``(seq, -cost, held)`` is larger."""
    out: dict[int, tuple[float, int, bool]] = {}
    for keys, costs, seq, held in messages:
        for k, c, h in zip(keys.tolist(), costs.tolist(), held.tolist(), strict=True):
            cur = out.get(k)
            if cur is None or (cur[1], -cur[0], cur[2]) < (seq, -c, h):
                out[k] = (c, seq, h)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_a_slot_keeps_its_largest_bid_whatever_the_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    messages = []
    for _ in range(int(rng.integers(1, 8))):
        n = int(rng.integers(0, 40))
        messages.append(
            (
                rng.integers(0, 30, n).astype(np.int64),
                rng.integers(0, 4, n).astype(np.float64),  # ties of cost
                int(rng.integers(0, 4)),  # ties of sequence between messages
                rng.random(n) < 0.3,
            )
        )
    want = one_by_one(messages)
    for order in (range(len(messages)), rng.permutation(len(messages))):
        table = BidTable()
        changed = 0
        for i in order:
            keys, costs, seq, held = messages[i]
            changed += table.merge(keys, costs, seq, held, room=10**6).changed
        assert rows_of(table) == want
        assert changed >= len(want)


def test_new_slots_beyond_the_room_are_refused_first_come_first_kept() -> None:
    table = BidTable()
    m = table.merge(np.array([5, 3, 9, 3]), np.array([1.0, 2.0, 3.0, 1.0]), 7,
                    np.zeros(4, bool), room=2)  # fmt: skip
    assert (m.changed, m.added, m.refused) == (2, 2, 1)
    assert rows_of(table) == {5: (1.0, 7, False), 3: (1.0, 7, False)}  # the cheaper 3 of two
    # A slot held already is replaced without room; a new one is refused.
    m = table.merge(np.array([5, 4]), np.array([0.5, 0.5]), 8, np.array([True, False]), room=0)
    assert (m.changed, m.added, m.refused) == (1, 0, 1)
    assert rows_of(table)[5] == (0.5, 8, True)
    # An older or costlier bid changes nothing; at equal cost a hold wins over a plain bid.
    assert table.merge(np.array([5]), np.array([0.1]), 7, np.zeros(1, bool), room=9).changed == 0
    assert table.merge(np.array([3]), np.array([1.0]), 7, np.ones(1, bool), room=9).changed == 1
    assert rows_of(table)[3] == (1.0, 7, True)


def test_find_and_drop() -> None:
    table = BidTable()
    table.merge(np.arange(10, 0, -1), np.arange(10.0), 1, np.zeros(10, bool), room=99)
    assert table.find(4) >= 0
    assert table.costs[table.find(4)] == 6.0
    assert table.find(11) == -1
    assert table.find(0) == -1
    table.digest = 123
    assert table.drop(table.keys % 2 == 0) == 5
    assert table.digest is None
    assert sorted(rows_of(table)) == [1, 3, 5, 7, 9]
    assert table.drop(np.zeros(len(table), bool)) == 0


@pytest.mark.parametrize("seed", range(30))
def test_a_few_rows_merge_as_many_rows_do(seed: int) -> None:
    """The Python path for a few rows (``_merge_small``, its new slots kept aside until the
    rows are read) leaves the same table and says the same as the numpy path, ties, repeated
    slots, the room's bound and merges between reads included."""
    rng = np.random.default_rng(seed)
    small, rows = BidTable(), BidTable()
    for _ in range(12):
        n = int(rng.integers(1, min(SMALL, 40) + 1))
        keys = rng.integers(0, 60, n).astype(np.int64)
        costs = rng.integers(0, 3, n).astype(np.float64)
        held = rng.random(n) < 0.3
        seq, room = int(rng.integers(0, 3)), int(rng.integers(0, 6))
        a = small.merge(keys, costs, seq, held, room=room)
        b = rows._merge_rows(keys, costs, seq, held, room)
        assert a == b
        assert len(small) == len(rows)
        if rng.random() < 0.3:  # a read now and then: the slots kept aside go in
            assert rows_of(small) == rows_of(rows)
    assert rows_of(small) == rows_of(rows)
    assert [x.dtype for x in small.arrays()] == [x.dtype for x in rows.arrays()]


@pytest.mark.parametrize("seed", range(30))
def test_new_slots_added_without_a_look_up_leave_what_a_merge_leaves(seed: int) -> None:
    """``add_new`` (rows the ledger knows to be new slots: a node's first bids) kept aside as
    the message's arrays, between merges of slots new and old and reads: the same table, the
    same counts and the same room's bound as merging every message."""
    rng = np.random.default_rng(seed)
    fast, merged = BidTable(), BidTable()
    unused = iter(rng.permutation(np.arange(2000, 3000)).tolist())  # never merged
    for _ in range(16):
        seq, room = int(rng.integers(0, 3)), int(rng.integers(0, 12))
        n = int(rng.integers(1, 20))
        costs = rng.integers(0, 3, n).astype(np.float64)
        held = rng.random(n) < 0.3
        if rng.random() < 0.5:
            keys = np.array([next(unused) for _ in range(n)], dtype=np.int64)
            a = fast.add_new(keys, costs, seq, held, room=room)
        else:
            keys = rng.choice(np.r_[fast.keys, np.arange(1000, 1020)], n).astype(np.int64)
            a = fast.merge(keys, costs, seq, held, room=room)
        b = merged.merge(keys, costs, seq, held, room=room)
        assert a == b
        assert len(fast) == len(merged)
        if rng.random() < 0.3:
            assert rows_of(fast) == rows_of(merged)
    assert rows_of(fast) == rows_of(merged)
    assert [x.dtype for x in fast.arrays()] == [x.dtype for x in merged.arrays()]
