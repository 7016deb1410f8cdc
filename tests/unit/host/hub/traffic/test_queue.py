"""The bounded queue in front of the hub's database: order, bounds, and the overflow policy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_agent.fleet.protocol import Envelope, Event, EventKind, NodeState, Telemetry
from edge_agent_host.hub.traffic.queue import Heard, HeldMessages
from edge_agent_host.hub.traffic.spool import Spool, SpoolRecord

TEL = Telemetry(
    uptime_s=1.0,
    rss_bytes=1,
    budget_used_bytes=1,
    budget_total_bytes=2,
    ticks=1,
    tick_p50_ms=0.1,
    tick_p99_ms=0.2,
    overruns=0,
)


def item(kind: str, n: int, size: int = 100) -> Heard:
    body = {"telemetry": TEL, "event": Event(kind=EventKind.OTHER), "state": NodeState(online=True)}
    env = Envelope(
        type=kind, node="n1", seq=n, bdseq=1, ts=float(n), clock_synced=True, body=body[kind]
    )
    return Heard(kind, "n1", env, retained=False, received=float(n), size=size)


def seqs(items: list[Heard]) -> list[int]:
    return [h.envelope.seq for h in items]


def test_take_keeps_arrival_order_across_kinds() -> None:
    q = HeldMessages(100, 1 << 20)
    for n, kind in enumerate(["telemetry", "event", "telemetry", "state", "event"]):
        assert q.put(item(kind, n))
    assert seqs(q.take(3)) == [0, 1, 2]
    assert seqs(q.take(10)) == [3, 4]
    assert len(q) == 0
    assert q.bytes == 0


def test_a_batch_given_back_comes_out_first_and_in_order() -> None:
    q = HeldMessages(100, 1 << 20)
    for n in range(6):
        q.put(item("telemetry" if n % 2 else "event", n))
    batch = q.take(4)
    q.put(item("event", 6))  # arrived while the batch was being written
    q.give_back(batch)
    assert seqs(q.take(100)) == [0, 1, 2, 3, 4, 5, 6]
    assert q.stats()["given_back"] == 4


def test_full_queue_drops_new_telemetry_and_evicts_old_telemetry_for_events() -> None:
    q = HeldMessages(4, 1 << 20)
    for n in range(3):
        assert q.put(item("telemetry", n))
    assert q.put(item("event", 3))
    assert not q.put(item("telemetry", 4))  # full: new telemetry is dropped
    assert q.put(item("event", 5))  # full: the oldest telemetry (0) makes room
    assert q.put(item("state", 6))  # and the next (1)
    assert q.put(item("event", 7))  # and the last (2)
    assert not q.put(item("event", 8))  # nothing left to evict: dropped
    assert seqs(q.take(100)) == [3, 5, 6, 7]
    stats = q.stats()
    assert stats["evicted_telemetry"] == 3
    assert stats["dropped.telemetry"] == 1
    assert stats["dropped.event"] == 1
    assert stats["dropped"] == 2
    assert stats["high_water"] == 4


def test_the_byte_bound_counts_payloads() -> None:
    q = HeldMessages(1000, 1000)
    assert q.put(item("telemetry", 0, size=600))
    assert not q.put(item("telemetry", 1, size=600))
    assert q.put(item("event", 2, size=900))  # evicts the telemetry
    assert q.bytes == 900
    assert seqs(q.take(10)) == [2]


def test_a_batch_given_back_may_exceed_the_bound_but_is_never_dropped() -> None:
    q = HeldMessages(3, 1 << 20)
    for n in range(3):
        q.put(item("event", n))
    batch = q.take(3)
    for n in range(3, 6):
        q.put(item("event", n))
    q.give_back(batch)
    assert len(q) == 6
    assert not q.put(item("event", 6))
    assert seqs(q.take(100)) == [0, 1, 2, 3, 4, 5]


def test_wait_wakes_on_put() -> None:
    q = HeldMessages(10, 1 << 20)
    assert not q.wait(0.01)
    timer = threading.Timer(0.05, lambda: q.put(item("event", 1)))
    timer.start()
    assert q.wait(5.0)
    timer.join()


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bounds"):
        HeldMessages(0, 10)


def test_with_a_spool_what_leaves_the_queue_for_good_leaves_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    q = HeldMessages(4, 1 << 20, spool)

    def put(kind: str, n: int) -> bool:
        return q.put(item(kind, n), SpoolRecord(f"t/{n}", b"x" * 10, False, float(n)))

    assert [put("telemetry", n) for n in range(6)] == [True] * 4 + [False] * 2
    assert spool.pending() == 4  # the two dropped ones are released at once
    assert put("event", 6)  # evicts the oldest telemetry: released too
    assert spool.pending() == 4
    assert q.stats()["memory_only"] == 0
    batch = q.take(3)
    q.give_back(batch[2:])  # not written: still pending
    q.done(batch[:2])
    assert spool.pending() == 2
    assert len(q) == 2
    spool.close()


def test_without_a_spool_every_held_message_is_memory_only() -> None:
    q = HeldMessages(100, 1 << 20)
    for n in range(5):
        assert q.put(item("telemetry", n))
    assert q.stats()["memory_only"] == 5
    batch = q.take(2)
    assert q.stats()["memory_only"] == 5  # taken, not yet stored: still exposed
    q.done(batch)
    assert q.stats()["memory_only"] == 3
