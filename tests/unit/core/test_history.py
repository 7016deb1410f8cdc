"""HistoryRing: ordering, views, allocation, validation, sizes and snapshots."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.core.history import TOTAL_APPENDED_KEY, HistoryRing
from edge_agent.errors import InputError

FIELDS: dict[str, tuple[tuple[int, ...], Any]] = {
    "obs": ((2,), np.int16),
    "action": ((1,), np.uint8),
    "qs": ((5,), np.uint8),
    "t": ((), np.float64),
}


def make_row(n_agents: int, k: int) -> dict[str, np.ndarray]:
    """A row whose every value encodes its append number ``k`` and the agent index."""
    agents = np.arange(n_agents)
    return {
        "obs": np.stack([agents * 3 + k, -agents - k], axis=1).astype(np.int16),
        "action": ((agents + k) % 251).astype(np.uint8)[:, None],
        "qs": ((agents[:, None] * 5 + np.arange(5) + k) % 256).astype(np.uint8),
        "t": (k + agents / 1000.0).astype(np.float64),
    }


class ListModel:
    """The obvious, allocating reference: a Python list of rows, trimmed to capacity."""

    def __init__(self, n_agents: int, capacity: int) -> None:
        self.n_agents = n_agents
        self.capacity = capacity
        self.rows: list[dict[str, np.ndarray]] = []
        self.total = 0

    def append(self, row: dict[str, np.ndarray]) -> None:
        self.rows.append({k: v.copy() for k, v in row.items()})
        self.rows = self.rows[-self.capacity :]
        self.total += 1

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = self.rows[-capacity:]

    def resize_agents(self, n_agents: int) -> None:
        keep = min(n_agents, self.n_agents)
        for row in self.rows:
            for name, value in row.items():
                grown = np.zeros((n_agents, *value.shape[1:]), dtype=value.dtype)
                grown[:keep] = value[:keep]
                row[name] = grown
        self.n_agents = n_agents

    def window(self, name: str, length: int) -> np.ndarray:
        shape = (length, self.n_agents, *FIELDS[name][0])
        if length == 0:
            return np.zeros(shape, dtype=FIELDS[name][1])
        return np.stack([row[name] for row in self.rows[len(self.rows) - length :]])


def assert_matches(ring: HistoryRing, model: ListModel, length: int) -> None:
    assert len(ring) == len(model.rows)
    assert ring.total_appended == model.total
    assert ring.capacity == model.capacity
    assert ring.n_agents == model.n_agents
    for name in FIELDS:
        np.testing.assert_array_equal(ring.window(name), model.window(name, len(model.rows)))
        got = ring.window(name, length)
        assert got.shape == (length, model.n_agents, *FIELDS[name][0])
        np.testing.assert_array_equal(got, model.window(name, length))
        if model.rows:
            np.testing.assert_array_equal(ring.latest(name), model.rows[-1][name])
            if model.n_agents:
                agent = model.n_agents - 1
                np.testing.assert_array_equal(
                    ring.agent_window(name, agent, length), model.window(name, length)[:, agent]
                )


operation = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 9)),
    st.tuples(st.just("resize"), st.integers(1, 9)),
    st.tuples(st.just("resize_agents"), st.integers(0, 5)),
    st.tuples(st.just("clear"), st.just(0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_agents=st.integers(0, 4),
    capacity=st.integers(1, 7),
    ops=st.lists(operation, max_size=30),
    fraction=st.floats(0.0, 1.0),
)
def test_windows_match_a_list_model_across_appends_resizes_and_wraps(
    n_agents: int, capacity: int, ops: list[tuple[str, int]], fraction: float
) -> None:
    ring = HistoryRing(n_agents, capacity, FIELDS)
    model = ListModel(n_agents, capacity)
    k = 0
    for op, arg in ops:
        if op == "append":
            for _ in range(arg):  # several appends per op, so that rings wrap many times
                row = make_row(model.n_agents, k)
                ring.append(**row)
                model.append(row)
                k += 1
        elif op == "resize":
            ring.resize(arg)
            model.resize(arg)
        elif op == "resize_agents":
            ring.resize_agents(arg)
            model.resize_agents(arg)
        else:
            ring.clear()
            model.rows.clear()
        assert_matches(ring, model, int(fraction * len(model.rows)))
        assert ring.nbytes == HistoryRing.bytes_needed(model.n_agents, model.capacity, FIELDS)


def test_every_window_length_after_many_wraps() -> None:
    ring = HistoryRing(3, 5, FIELDS)
    model = ListModel(3, 5)
    for k in range(23):
        row = make_row(3, k)
        ring.append(**row)
        model.append(row)
        for length in range(len(model.rows) + 1):
            assert_matches(ring, model, length)
    assert ring.total_appended == 23
    assert len(ring) == 5
    # the newest row is append number 22: obs[:, 0] == agent * 3 + 22
    np.testing.assert_array_equal(ring.window("obs")[-1, :, 0], [22, 25, 28])


def test_window_is_a_read_only_view_when_it_does_not_wrap() -> None:
    ring = HistoryRing(4, 8, FIELDS)
    for k in range(5):
        ring.append(**make_row(4, k))
    window = ring.window("obs", 3)
    assert np.shares_memory(window, ring.latest("obs"))
    assert not window.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        window[0, 0, 0] = 1
    # The view sees the arena: after the ring wraps onto those rows, the old view shows new data.
    old_row = window[0].copy()
    for k in range(5, 12):
        ring.append(**make_row(4, k))
    assert not np.array_equal(window[0], old_row)


def test_wrapped_window_is_copied_into_per_field_scratch() -> None:
    ring = HistoryRing(2, 4, FIELDS)
    for k in range(6):  # rows 2..5 kept, physically [4, 5, 2, 3]
        ring.append(**make_row(2, k))
    first = ring.window("obs")
    assert not np.shares_memory(first, ring.latest("obs"))
    np.testing.assert_array_equal(first[:, 0, 0], [2, 3, 4, 5])
    assert not first.flags.writeable
    # Same field: the same scratch buffer is reused. Another field has its own scratch.
    second = ring.window("obs", 3)
    assert np.shares_memory(first, second)
    assert not np.shares_memory(first, ring.window("qs"))
    # A window that happens not to wrap (the newest two rows, physically [4, 5]) is a view.
    assert np.shares_memory(ring.window("obs", 2), ring.latest("obs"))


def test_appending_allocates_nothing_per_row() -> None:
    n_agents = 4096
    ring = HistoryRing(n_agents, 64, FIELDS)
    rows = make_row(n_agents, 1)
    row_bytes = sum(v.nbytes for v in rows.values())
    gc.collect()
    tracemalloc.start()
    try:
        # Warm up under tracing: the interpreter's free lists fill once, then stay put.
        for _ in range(200):
            ring.append(**rows)
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(10_000):
            ring.append(**rows)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024, f"appends kept {after - before} bytes"
    # A temporary copy of even one field's row would show in the peak.
    assert peak - before < min(v.nbytes for v in rows.values()) < row_bytes
    assert ring.total_appended == 10_200


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("obs", np.zeros((3, 3), np.int16), r"obs has shape \(3, 3\), expected \(3, 2\)"),
        ("obs", np.zeros((2, 2), np.int16), r"obs has shape \(2, 2\), expected \(3, 2\)"),
        ("t", np.zeros((3, 1)), r"t has shape \(3, 1\), expected \(3,\)"),
        ("qs", np.zeros(15, np.uint8), r"qs has shape \(15,\), expected \(3, 5\)"),
        ("action", np.full((3, 1), 1.0), r"action has dtype float64, expected uint8"),
        ("action", np.full((3, 1), 256), r"action has values in \[256, 256\].*uint8"),
        ("action", np.full((3, 1), -1), r"action has values in \[-1, -1\].*uint8"),
        ("obs", np.full((3, 2), 40_000), r"obs has values in \[40000, 40000\].*int16"),
    ],
)
def test_bad_rows_are_refused_and_leave_the_ring_unchanged(
    field: str, value: np.ndarray, message: str
) -> None:
    ring = HistoryRing(3, 4, FIELDS)
    good = make_row(3, 7)
    ring.append(**good)
    bad = {**make_row(3, 8), field: value}
    with pytest.raises(InputError, match=message):
        ring.append(**bad)
    assert len(ring) == 1
    assert ring.total_appended == 1
    for name in FIELDS:
        np.testing.assert_array_equal(ring.latest(name), good[name])


def test_lossless_casts_are_accepted() -> None:
    ring = HistoryRing(2, 3, FIELDS)
    row = make_row(2, 1)
    ring.append(
        obs=row["obs"].astype(np.int64),  # range-checked, fits
        action=[[3], [4]],  # a nested list becomes an array
        qs=row["qs"].astype(np.int32),
        t=np.array([1.5, 2.5], dtype=np.float32),  # float32 -> float64 is safe
    )
    np.testing.assert_array_equal(ring.latest("obs"), row["obs"])
    np.testing.assert_array_equal(ring.latest("action")[:, 0], [3, 4])
    np.testing.assert_array_equal(ring.latest("t"), [1.5, 2.5])
    assert ring.latest("obs").dtype == np.int16


def test_all_fields_are_required_every_append() -> None:
    ring = HistoryRing(2, 3, FIELDS)
    row = make_row(2, 0)
    del row["t"]
    with pytest.raises(InputError, match=r"missing \['t'\], unexpected \[\]"):
        ring.append(**row)
    with pytest.raises(InputError, match=r"missing \[\], unexpected \['reward'\]"):
        ring.append(**make_row(2, 0), reward=np.zeros(2))
    assert len(ring) == 0


def test_reading_errors_name_the_problem() -> None:
    ring = HistoryRing(2, 3, FIELDS)
    with pytest.raises(InputError, match="history is empty"):
        ring.latest("obs")
    ring.append(**make_row(2, 0))
    with pytest.raises(InputError, match=r"no field 'reward'; fields are \['action', 'obs'"):
        ring.window("reward")
    with pytest.raises(InputError, match="window length 2 exceeds the 1 valid rows"):
        ring.window("obs", 2)
    with pytest.raises(InputError, match="window length must be at least 0"):
        ring.window("obs", -1)
    with pytest.raises(InputError, match="agent 2 is out of range for a group of 2"):
        ring.agent_window("obs", 2)
    assert ring.window("obs", 0).shape == (0, 2, 2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "at least one field"),
        ({"_x": ((1,), np.uint8)}, "identifier not starting with '_'"),
        ({"obs": ((0,), np.uint8)}, "has a dimension below 1"),
        ({"obs": (2, np.uint8)}, "is not a tuple of ints"),
        ({"obs": ((2,), "not-a-dtype")}, "is not a dtype"),
        ({"obs": ((2,), object)}, "not a bool, integer or float dtype"),
        ({"obs": ((2,),)}, r"expected \(shape, dtype\)"),
    ],
)
def test_bad_field_declarations_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        HistoryRing(2, 3, fields)
    with pytest.raises(InputError, match=message):
        HistoryRing.bytes_needed(2, 3, fields)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(InputError, match="capacity must be at least 1, got 0"):
        HistoryRing(2, 0, FIELDS)
    with pytest.raises(InputError, match="n_agents must be an integer"):
        HistoryRing(2.0, 3, FIELDS)  # type: ignore[arg-type]
    ring = HistoryRing(2, 3, FIELDS)
    with pytest.raises(InputError, match="capacity must be at least 1"):
        ring.resize(0)
    with pytest.raises(InputError, match="n_agents must be at least 0"):
        ring.resize_agents(-1)


def test_bytes_needed_is_the_exact_footprint() -> None:
    # per agent and row: obs 2*2 + action 1 + qs 5 + t 8 = 18 bytes; arena plus scratch = 2x
    assert HistoryRing.bytes_needed(1000, 64, FIELDS) == 2 * 64 * 1000 * 18
    ring = HistoryRing(1000, 64, FIELDS)
    assert ring.nbytes == HistoryRing.bytes_needed(1000, 64, FIELDS) == 2_304_000
    ring.resize(16)
    assert ring.nbytes == HistoryRing.bytes_needed(1000, 16, FIELDS)
    ring.resize_agents(10)
    assert ring.nbytes == HistoryRing.bytes_needed(10, 16, FIELDS) == 2 * 16 * 10 * 18


def test_resize_keeps_the_newest_rows_and_counters() -> None:
    ring = HistoryRing(2, 6, FIELDS)
    for k in range(9):
        ring.append(**make_row(2, k))
    ring.resize(4)
    assert (len(ring), ring.capacity, ring.total_appended) == (4, 4, 9)
    np.testing.assert_array_equal(ring.window("obs")[:, 0, 0], [5, 6, 7, 8])
    ring.resize(10)
    assert len(ring) == 4
    ring.append(**make_row(2, 9))
    np.testing.assert_array_equal(ring.window("obs")[:, 0, 0], [5, 6, 7, 8, 9])


def test_failed_resize_leaves_the_ring_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = HistoryRing(2, 4, FIELDS)
    for k in range(6):  # wrapped: windows need the scratch buffers
        ring.append(**make_row(2, k))
    real_allocate = HistoryRing._allocate

    def allocate(self: HistoryRing, capacity: int, n_agents: int) -> dict[str, np.ndarray]:
        if capacity == 64:
            raise MemoryError("no room for 64 rows")
        return real_allocate(self, capacity, n_agents)

    monkeypatch.setattr(HistoryRing, "_allocate", allocate)
    with pytest.raises(MemoryError):
        ring.resize(64)
    assert (ring.capacity, len(ring)) == (4, 4)
    assert ring.nbytes == HistoryRing.bytes_needed(2, 4, FIELDS)
    np.testing.assert_array_equal(ring.window("obs")[:, 1, 0], [5, 6, 7, 8])
    ring.resize(3)
    np.testing.assert_array_equal(ring.window("obs")[:, 1, 0], [6, 7, 8])


def test_resize_agents_keeps_existing_agents_and_zero_fills_new_ones() -> None:
    ring = HistoryRing(3, 4, FIELDS)
    for k in range(6):
        ring.append(**make_row(3, k))
    before = ring.window("qs").copy()
    ring.resize_agents(5)
    after = ring.window("qs")
    np.testing.assert_array_equal(after[:, :3], before)
    assert not after[:, 3:].any()
    ring.resize_agents(2)
    np.testing.assert_array_equal(ring.window("qs"), before[:, :2])
    assert (len(ring), ring.total_appended) == (4, 6)


def test_clear_forgets_rows_but_keeps_the_lifetime_counter() -> None:
    ring = HistoryRing(2, 3, FIELDS)
    for k in range(5):
        ring.append(**make_row(2, k))
    ring.clear()
    assert len(ring) == 0
    assert ring.total_appended == 5
    assert ring.window("obs").shape == (0, 2, 2)
    ring.append(**make_row(2, 42))
    np.testing.assert_array_equal(ring.window("obs")[:, 0, 0], [42])


def test_state_round_trip_restores_rows_in_order() -> None:
    ring = HistoryRing(3, 5, FIELDS)
    for k in range(13):
        ring.append(**make_row(3, k))
    state = ring.state_dict()
    assert set(state) == {*FIELDS, TOTAL_APPENDED_KEY}
    assert state["obs"].shape == (5, 3, 2)
    assert int(state[TOTAL_APPENDED_KEY]) == 13
    # The snapshot is a copy: later appends do not change it.
    ring.append(**make_row(3, 99))
    assert int(state["obs"][-1, 0, 0]) == 12

    restored = HistoryRing(3, 5, FIELDS)
    restored.load_state_dict(state)
    assert (len(restored), restored.total_appended) == (5, 13)
    for name in FIELDS:
        np.testing.assert_array_equal(restored.window(name), state[name])
    restored.append(**make_row(3, 13))
    np.testing.assert_array_equal(restored.window("obs")[:, 0, 0], [9, 10, 11, 12, 13])

    smaller = HistoryRing(3, 2, FIELDS)
    smaller.load_state_dict(state)  # more rows than capacity: the newest are kept
    np.testing.assert_array_equal(smaller.window("obs")[:, 0, 0], [11, 12])

    empty = HistoryRing(3, 5, FIELDS)
    empty.load_state_dict(HistoryRing(3, 5, FIELDS).state_dict())
    assert (len(empty), empty.total_appended) == (0, 0)


@pytest.mark.parametrize("appended", [0, 3, 5, 7, 13])
def test_state_views_equal_the_state_and_the_ring_goes_on(appended: int) -> None:
    """state_views rotates the arenas in place (no copy) and gives the rows state_dict gives;
    the ring's contents, its windows and its next appends are those of a ring never rotated."""
    ring, twin = HistoryRing(3, 5, FIELDS), HistoryRing(3, 5, FIELDS)
    for k in range(appended):
        ring.append(**make_row(3, k))
        twin.append(**make_row(3, k))
    expected = twin.state_dict()
    views = ring.state_views()
    assert set(views) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(views[name], value)
        assert views[name].dtype == value.dtype
    for name in FIELDS:
        assert views[name].base is not None  # a view
        assert not views[name].flags.writeable
    for k in range(appended, appended + 4):
        ring.append(**make_row(3, k))
        twin.append(**make_row(3, k))
        for name in FIELDS:
            np.testing.assert_array_equal(ring.window(name), twin.window(name))
    restored = HistoryRing(3, 5, FIELDS)
    restored.load_state_dict(ring.state_views())
    np.testing.assert_array_equal(restored.window("obs"), twin.window("obs"))


def _state(**changes: Any) -> dict[str, Any]:
    ring = HistoryRing(3, 4, FIELDS)
    for k in range(3):
        ring.append(**make_row(3, k))
    state: dict[str, Any] = ring.state_dict()
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (_state(t=None), r"missing \['t'\], unexpected \[\]"),
        (_state(extra=np.zeros(1)), r"missing \[\], unexpected \['extra'\]"),
        (_state(obs=np.zeros((3, 3, 2), np.int32)), "'obs' has dtype int32, expected int16"),
        (_state(obs=np.zeros((3, 4, 2), np.int16)), r"shape \(3, 4, 2\), expected \(rows, 3, 2\)"),
        (_state(obs=np.zeros((3, 2), np.int16)), r"shape \(3, 2\), expected \(rows, 3, 2\)"),
        (_state(qs=np.zeros((2, 3, 5), np.uint8)), "'qs' has 2 rows, other fields have 3"),
        (_state(obs=[[0, 0]]), "'obs' is not an array"),
        (_state(_total_appended=np.array(2)), "'_total_appended' is 2, below its 3 rows"),
        (_state(_total_appended=np.array([5])), "must be a 0-d integer array"),
        (_state(_total_appended=np.array(5.0)), "must be a 0-d integer array"),
    ],
)
def test_bad_snapshots_are_refused_without_changing_the_ring(
    state: dict[str, Any], message: str
) -> None:
    ring = HistoryRing(3, 4, FIELDS)
    ring.append(**make_row(3, 50))
    with pytest.raises(InputError, match=message):
        ring.load_state_dict(state)
    assert (len(ring), ring.total_appended) == (1, 1)
    assert int(ring.latest("obs")[0, 0]) == 50


def test_append_one_is_append_for_a_one_field_ring() -> None:
    fast = HistoryRing(3, 4, {"obs": ((2,), np.dtype(np.float32))})
    slow = HistoryRing(3, 4, {"obs": ((2,), np.dtype(np.float32))})
    rng = np.random.default_rng(0)
    for step in range(6):
        row = rng.random((3, 2)).astype(np.float32)
        if step == 3:
            row64 = row.astype(np.float64)  # another dtype: the checked path, same result
            fast.append_one("obs", row64)
        else:
            fast.append_one("obs", row)
        slow.append(obs=row)
    assert len(fast) == len(slow) == 4
    np.testing.assert_array_equal(fast.window("obs"), slow.window("obs"))
    with pytest.raises(InputError, match="shape"):
        fast.append_one("obs", np.zeros((2, 2), dtype=np.float32))
    two = HistoryRing(3, 4, {"obs": ((2,), np.dtype(np.float32)), "a": ((), np.dtype(np.int64))})
    with pytest.raises(InputError, match="exactly the fields"):
        two.append_one("obs", np.zeros((3, 2), dtype=np.float32))


def test_a_claimed_row_written_in_the_arena_is_an_append() -> None:
    """What a neural group's compiled pass does: claim the next row, write it in the arena."""
    claimed = HistoryRing(3, 4, {"obs": ((2,), np.dtype(np.float32))})
    appended = HistoryRing(3, 4, {"obs": ((2,), np.dtype(np.float32))})
    rng = np.random.default_rng(1)
    for _ in range(7):  # past the capacity: the rows wrap
        row = rng.random((3, 2)).astype(np.float32)
        claimed.arena("obs")[claimed.claim_one()] = row
        appended.append_one("obs", row)
    assert (len(claimed), claimed.total_appended) == (len(appended), appended.total_appended)
    np.testing.assert_array_equal(claimed.window("obs"), appended.window("obs"))
    arena = claimed.arena("obs")
    assert arena.shape == (4, 3, 2)
    claimed.resize_agents(5)
    assert claimed.arena("obs") is not arena  # a new arena: a writer takes its address again
    with pytest.raises(InputError, match="no field 'qs'"):
        claimed.arena("qs")
