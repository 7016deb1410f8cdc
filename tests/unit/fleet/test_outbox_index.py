"""The outbox's index in columns: growth, finding, removal, compaction, interned tables."""

from __future__ import annotations

import numpy as np

from edge_agent.fleet.outbox_index import GONE, MIN_CAPACITY, RETAIN, OutboxIndex


def filled(ids: list[int], topic: str = "t") -> OutboxIndex:
    index = OutboxIndex()
    for row_id in ids:
        retain = row_id % 2 == 0
        index.append(
            row_id,
            "event",
            topic,
            expires=row_id + 0.5,
            at=8 * row_id,
            size=row_id % 7,
            retain=retain,
        )
    return index


def held_ids(index: OutboxIndex) -> list[int]:
    return [int(i) for i in index.ids[index.held()]]


def test_growth_keeps_every_field_in_order() -> None:
    index = filled(list(range(1, 1001)))
    assert (index.n, index.live) == (1000, 1000)
    capacity = MIN_CAPACITY
    while capacity < 1000:  # grown by half each time it was full
        capacity += capacity // 2
    assert index.capacity == capacity
    pos = index.find(700)
    assert pos == 699
    assert (float(index.expires[pos]), int(index.at[pos]), int(index.size[pos])) == (
        700.5,
        5600,
        700 % 7,
    )
    assert index.flags[pos] & RETAIN
    assert not index.flags[index.find(701)] & RETAIN
    assert index.classes == ["event"]
    assert index.topics == ["t"]
    assert held_ids(index) == list(range(1, 1001))
    assert index.nbytes == 35 * index.capacity


def test_find_after_and_removal() -> None:
    index = filled([2, 4, 6, 8, 10])
    assert [index.find(i) for i in (1, 3, 11)] == [-1, -1, -1]
    assert index.find_many(np.array([10, 3, 2, 99], np.int64)).tolist() == [4, -1, 0, -1]
    index.remove(np.array([1, 3], np.int64))  # 4 and 8 gone, not yet cut out (too few)
    assert (index.n, index.live) == (5, 3)
    assert (index.find(4), index.find(6)) == (-1, 2)
    assert index.flags[1] & GONE
    assert index.after(0, 10) == [2, 6, 10]
    assert index.after(2, 1) == [6]
    assert index.after(6, 5) == [10]
    assert index.after(10, 5) == []
    assert held_ids(index) == [2, 6, 10]


def test_after_walks_past_a_long_run_of_gone_messages() -> None:
    index = filled(list(range(1, 2001)))
    index.remove(np.arange(0, 1000, dtype=np.int64))  # half gone: not more gone than held
    assert index.n == 2000
    assert index.after(0, 3) == [1001, 1002, 1003]
    assert index.after(1500, 2) == [1501, 1502]


def test_columns_are_compacted_when_more_are_gone_than_held() -> None:
    index = filled(list(range(1, 4001)))
    big = index.capacity
    doomed = np.flatnonzero(np.arange(1, 4001) % 10 != 0)  # 3,600 of 4,000 gone
    index.remove(doomed)
    assert index.compactions == 1
    assert (index.n, index.live) == (400, 400)
    assert held_ids(index) == list(range(10, 4001, 10))
    assert index.capacity < big  # under a quarter used: shrunk
    pos = index.find(3000)
    assert (float(index.expires[pos]), int(index.at[pos])) == (3000.5, 24000)
    index.append(4001, "event", "t", expires=0.0, at=-1, size=1, retain=False)
    assert index.after(3990, 5) == [4000, 4001]


def test_holding_nothing_resets_the_columns() -> None:
    index = filled(list(range(1, 5001)))
    index.remove(index.held())
    assert (index.n, index.live) == (0, 0)
    assert index.capacity == MIN_CAPACITY
    assert index.after(0, 4) == []
    index.append(5001, "event", "t", expires=0.0, at=-1, size=1, retain=False)
    assert held_ids(index) == [5001]


def test_an_id_out_of_order_takes_its_place_and_replaces_its_twin() -> None:
    index = filled([1, 5, 9])
    index.append(3, "event", "u", expires=3.5, at=24, size=3, retain=False)
    assert held_ids(index) == [1, 3, 5, 9]
    index.remove(np.array([index.find(5)], np.int64))
    index.append(5, "result", "v", expires=7.0, at=99, size=4, retain=True)  # back, replaced
    assert held_ids(index) == [1, 3, 5, 9]
    pos = index.find(5)
    assert (index.classes[index.cls[pos]], index.topics[index.topic[pos]]) == ("result", "v")
    assert (int(index.at[pos]), index.live) == (99, 4)


def test_topics_of_messages_long_gone_are_forgotten_at_a_compaction() -> None:
    index = OutboxIndex()
    for row_id in range(1, 1001):  # a topic each
        index.append(row_id, "event", f"t/{row_id}", expires=0.0, at=-1, size=1, retain=False)
    index.remove(np.arange(0, 900, dtype=np.int64))
    assert index.compactions == 1
    assert len(index.topics) == 100
    assert [index.topics[i] for i in index.topic[index.held()]] == [
        f"t/{i}" for i in range(901, 1001)
    ]
    assert index.topic_index("t/950") == index.topic[index.find(950)]
