"""Outbox: store-before-send, delete on PUBACK, bounds and class policy, TTL, durability."""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

from edge_agent.errors import EdgeAgentError, ProtocolError
from edge_agent.fleet.outbox import MAGIC, ClassPolicy, Outbox, OutboxFullError
from edge_agent.fleet.outbox_records import Reader
from edge_agent.fleet.record_log import RecordLog
from tests.support.old_stores import old_outbox

REPO = Path(__file__).resolve().parents[3]


class FakeWire:
    """A ``send`` that records what went out and hands back sequential handles."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, bytes, bool]] = []
        self.up = True
        self._next = 0

    def __call__(self, topic: str, payload: bytes, retain: bool) -> Hashable | None:
        if not self.up:
            return None
        self._next += 1
        self.sent.append((self._next, topic, payload, retain))
        return self._next

    def payloads(self) -> list[bytes]:
        return [p for _, _, p, _ in self.sent]

    def handles(self) -> list[int]:
        return [h for h, _, _, _ in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.log", max_inflight=4, clock=clock)
    yield box
    box.close()


def committed(path: Path) -> int:
    """How many messages the outbox's file holds (what a crash would leave)."""
    reader = Reader()  # the file's records read into an index of their own, as at open
    log, _ = RecordLog.open_with(path, MAGIC, reader)
    log.close()
    return reader.index.live


def msg(i: int, size: int = 10) -> bytes:
    return f"{i:06d}".encode().ljust(size, b".")


def test_put_pump_ack_delete(outbox: Outbox) -> None:
    wire = FakeWire()
    for i in range(3):
        outbox.put("t/a", msg(i), "event", retain=i == 2)
    assert outbox.stats()["depth_rows"] == 3
    assert outbox.pump(wire) == 3
    assert wire.payloads() == [msg(0), msg(1), msg(2)]
    assert [r for *_, r in wire.sent] == [False, False, True]
    assert outbox.pump(wire) == 0  # nothing new, nothing re-sent within a session
    assert outbox.on_ack(wire.handles()[1])
    assert not outbox.on_ack(wire.handles()[1])  # a second PUBACK for it is not ours
    assert not outbox.on_ack("unknown")
    stats = outbox.stats()
    assert (stats["stored"], stats["sent"], stats["acked"]) == (3, 3, 1)
    assert (stats["depth_rows"], stats["inflight"]) == (2, 2)
    assert stats["depth_bytes"] == 2 * (10 + 3)


def test_inflight_window(outbox: Outbox) -> None:
    wire = FakeWire()
    for i in range(10):
        outbox.put("t", msg(i), "event")
    assert outbox.pump(wire) == 4
    assert outbox.inflight == 4
    assert outbox.pump(wire) == 0
    outbox.on_ack(wire.handles()[0])
    outbox.on_ack(wire.handles()[2])
    assert outbox.pump(wire) == 2
    assert wire.payloads() == [msg(i) for i in range(6)]


def test_unacked_are_resent_in_order_after_reconnect(outbox: Outbox) -> None:
    wire = FakeWire()
    for i in range(6):
        outbox.put("t", msg(i), "event")
    outbox.pump(wire)  # 0..3 in flight
    outbox.on_ack(wire.handles()[1])  # 1 acked
    outbox.on_connection_lost()
    wire.sent.clear()
    outbox.pump(wire)
    assert wire.payloads() == [msg(0), msg(2), msg(3), msg(4)]
    # A late PUBACK of the old session does not delete anything any more.
    assert not outbox.on_ack(1)
    for h in wire.handles():
        outbox.on_ack(h)
    outbox.pump(wire)
    assert wire.payloads()[-1] == msg(5)


def test_send_failure_keeps_the_row_for_the_next_pump(outbox: Outbox) -> None:
    wire = FakeWire()
    outbox.put("t", msg(0), "event")
    outbox.put("t", msg(1), "event")
    wire.up = False
    assert outbox.pump(wire) == 0
    wire.up = True
    assert outbox.pump(wire) == 2
    assert wire.payloads() == [msg(0), msg(1)]


def test_send_error_rejects_only_that_row(outbox: Outbox) -> None:
    def send(topic: str, payload: bytes, retain: bool) -> Hashable | None:
        if topic == "bad":
            raise ProtocolError("invalid topic")
        return payload

    outbox.put("bad", msg(0), "event")
    outbox.put("good", msg(1), "event")
    assert outbox.pump(send) == 1
    stats = outbox.stats()
    assert (stats["rejected"], stats["depth_rows"], stats["inflight"]) == (1, 1, 1)


def test_puback_error_codes(outbox: Outbox) -> None:
    wire = FakeWire()
    for i in range(3):
        outbox.put("t", msg(i), "event")
    outbox.pump(wire)
    h0, h1, h2 = wire.handles()
    outbox.on_ack(h0, 0x87)  # not authorised: retrying cannot help
    outbox.on_ack(h1, 0x97)  # quota exceeded: keep, send again next session
    outbox.on_ack(h2, 0x10)  # no matching subscribers: delivered as far as we care
    stats = outbox.stats()
    assert (stats["rejected"], stats["acked"], stats["depth_rows"]) == (1, 1, 1)
    outbox.on_connection_lost()
    wire.sent.clear()
    outbox.pump(wire)
    assert wire.payloads() == [msg(1)]


def test_refusals_are_logged_by_name_at_most_once_an_interval_with_a_count(
    outbox: Outbox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoked node has every message refused: the first refusal is logged at once, the
    rest of the interval's are counted into one line per reason when it ends, and a quiet
    interval lets the next refusal be logged at once again."""
    wire = FakeWire()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

    def refuse(n: int, code: int = 0x87) -> None:
        for i in range(n):
            outbox.put("t", msg(i), "event")
            outbox.pump(wire)
            outbox.on_ack(wire.handles()[-1], code)

    caplog.set_level("ERROR", logger="edge_agent.fleet.outbox")
    refuse(1)
    assert lines() == [
        "outbox: the broker refused row 1: 0x87 not authorized (the broker's ACL does not let "
        "this identity write that topic: a revoked identity, or a topic outside its rights, "
        "docs/security.md)"
    ]
    clock.now += 10.0
    refuse(200)
    refuse(3, 0x97 + 1)  # another reason in the same interval
    assert len(lines()) == 1  # counted, not logged
    assert outbox.stats()["rejected"] == 204  # every one is counted where the status shows it
    clock.now += 60.0
    outbox.pump(wire)  # the interval is over: one line per reason, with its count
    assert lines()[1:] == [
        "outbox: the broker refused 200 more rows (2..201) in the last 70 s: 0x87 not authorized"
        " (the broker's ACL does not let this identity write that topic: a revoked identity, "
        "or a topic outside its rights, docs/security.md)",
        "outbox: the broker refused 3 more rows (202..204) in the last 70 s: 0x98 "
        "administrative action",
    ]
    refuse(1)  # within the next interval: counted
    clock.now += 60.0
    outbox.pump(wire)
    assert lines()[3:] == [
        "outbox: the broker refused 1 more row (205..205) in the last 60 s: 0x87 not authorized"
        " (the broker's ACL does not let this identity write that topic: a revoked identity, "
        "or a topic outside its rights, docs/security.md)"
    ]
    clock.now += 60.0
    outbox.pump(wire)  # a quiet interval: nothing to say
    assert len(lines()) == 4
    clock.now += 1.0
    refuse(1)  # the first after a quiet interval: at once
    assert lines()[4].startswith("outbox: the broker refused row 206: 0x87 not authorized")
    assert outbox.stats()["rejected"] == 206


def test_telemetry_drops_oldest_when_full(tmp_path: Path, clock: Clock) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=1024, clock=clock) as box:
        row = 100 + len("tel")
        for i in range(20):
            assert box.put("tel", msg(i, 100), "telemetry") is not None
        assert box.depth_bytes <= 1024
        kept = 1024 // row
        assert box.depth_rows == kept
        assert box.dropped == 20 - kept
        wire = FakeWire()
        box.pump(wire)
        assert wire.payloads()[0] == msg(20 - kept, 100)  # the newest survived


def test_keep_classes_are_refused_with_alarm(tmp_path: Path, clock: Clock) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=1024, low_water=0.5, clock=clock) as box:
        row = 200 + len("ev")
        n = 1024 // row
        for i in range(n):
            box.put("ev", msg(i, 200), "event")
        assert not box.full_alarm
        with pytest.raises(EdgeAgentError, match="refused") as info:
            box.put("ev", msg(99, 200), "result")
        assert isinstance(info.value, OutboxFullError)
        assert box.full_alarm
        assert box.stats()["full"] is True
        assert box.refused == 1
        # A new telemetry message has no telemetry to evict: it is dropped, not raised.
        assert box.put("tel", msg(0, 200), "telemetry") is None
        assert box.dropped == 1
        # Acks bring the depth below the low-water mark and clear the alarm.
        wire = FakeWire()
        box.pump(wire)
        for h in wire.handles()[:3]:
            box.on_ack(h)
        assert box.depth_bytes <= 512
        assert not box.full_alarm
        box.put("ev", msg(100, 200), "event")


def test_keep_class_evicts_telemetry(tmp_path: Path, clock: Clock) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=1024, clock=clock) as box:
        for i in range(4):
            box.put("tel", msg(i, 200), "telemetry")
        box.put("ev", msg(50, 300), "event")
        assert box.dropped >= 1
        assert box.depth_bytes <= 1024
        wire = FakeWire()
        box.pump(wire)
        assert msg(50, 300) in wire.payloads()


def test_message_larger_than_the_bound(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=1024) as box:
        with pytest.raises(OutboxFullError, match="can never fit"):
            box.put("t", b"x" * 2000, "event")
        with pytest.raises(EdgeAgentError, match="unknown outbox class 'nope'"):
            box.put("t", b"x", "nope")


def test_ttl_per_class(tmp_path: Path, clock: Clock) -> None:
    policies = {
        "fast": ClassPolicy(drop_oldest=False, ttl_s=10.0),
        "slow": ClassPolicy(drop_oldest=False, ttl_s=1000.0),
    }
    with Outbox(tmp_path / "o.db", policies=policies, max_inflight=1, clock=clock) as box:
        box.put("t", b"inflight", "fast")
        wire = FakeWire()
        box.pump(wire)
        box.put("t", b"fast", "fast")
        box.put("t", b"slow", "slow")
        clock.now += 11
        assert box.expire() == 1  # the in-flight row waits for its PUBACK
        assert box.expired == 1
        box.on_ack(wire.handles()[0])
        box.pump(wire)
        assert wire.payloads() == [b"inflight", b"slow"]
        clock.now += 2000
        box.on_connection_lost()
        box.pump(wire)  # the pump meets the expired row and deletes it unsent
        assert box.expired == 2
        assert box.depth_rows == 0


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    wire = FakeWire()
    with Outbox(path, max_inflight=8) as box:
        for i in range(5):
            box.put("t", msg(i), "event")
        box.pump(wire)
        box.on_ack(wire.handles()[0])
    with Outbox(path) as box:
        assert (box.depth_rows, box.depth_bytes) == (4, 4 * 11)
        wire2 = FakeWire()
        box.pump(wire2)
        assert wire2.payloads() == [msg(i) for i in range(1, 5)]


def test_batched_commits(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, commit_every=10, commit_interval_s=3600) as box:
        for i in range(9):
            box.put("t", msg(i), "event")
        assert committed(path) == 0
        box.put("t", msg(9), "event")
        assert committed(path) == 10
        box.put("t", msg(10), "event")
        assert committed(path) == 10
        box.flush()
        assert committed(path) == 11
        box.put("t", msg(11), "event")
        box.pump(FakeWire())  # nothing goes out before it is committed
        assert committed(path) == 12


def test_unknown_schema_and_garbage_are_moved_aside(tmp_path: Path) -> None:
    # More damage (truncation, a directory in its place, corruption found later, a full disk):
    # tests/unit/test_state_faults.py.
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.close()
    box = Outbox(path)
    assert box.recovered == 1
    assert box.depth_rows == 0
    assert not box.volatile
    box.close()
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("o.db.corrupt-")]
    assert len(aside) == 1
    moved = sqlite3.connect(tmp_path / aside[0])
    assert moved.execute("PRAGMA user_version").fetchone() == (7,)
    moved.close()
    garbage = tmp_path / "g.db"
    garbage.write_bytes(b"this is not a database" * 100)
    box = Outbox(garbage)
    assert box.faults.moved["outbox"] == 1
    box.close()
    (moved,) = (p for p in tmp_path.iterdir() if p.name.startswith("g.db.corrupt-"))
    assert moved.read_bytes() == b"this is not a database" * 100


WRITER = textwrap.dedent(
    """
    import sys, time
    from edge_agent.fleet.outbox import Outbox
    box = Outbox(sys.argv[1], commit_every=10**6, commit_interval_s=3600.0)
    n = int(sys.argv[2])
    for i in range(n):
        box.put("ea/v1/f/node/n/event", b"flushed-%06d" % i, "event")
    box.flush()
    for i in range(50):
        box.put("ea/v1/f/node/n/event", b"pending-%06d" % i, "event")
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_flushed_messages_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    n = 500
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    with Outbox(path, max_inflight=1000) as box:
        assert box.depth_rows == n
        wire = FakeWire()
        box.pump(wire)
        # Every flushed message is there, in order; the unflushed batch was never committed.
        assert wire.payloads() == [b"flushed-%06d" % i for i in range(n)]


# Per-class durability: relaxed classes (telemetry, action) are sent from the open transaction and
# reach storage only at the relaxed interval, and not at all when the broker acknowledged them.
def file_bytes(path: Path) -> int:
    return path.stat().st_size


def test_relaxed_messages_go_out_before_any_commit_and_acked_ones_never_reach_storage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_inflight=4, relaxed_commit_interval_s=3600) as box:
        box.put("warm", msg(0), "event")
        box.flush()
        wire = FakeWire()
        box.pump(wire)
        box.on_ack(wire.handles()[0])
        box.flush()  # the ack's deletion is committed
        before = file_bytes(path)
        commits = box.commits
        for tick in range(1000):  # a tick: publish, pump, the broker acks, commit_due
            box.put("act", msg(tick), "action")
            box.pump(wire)
            box.on_ack(wire.handles()[-1])
            box.commit_due()  # not due: relaxed rows only
            if tick % 100 == 99:
                box.flush()  # the relaxed interval passed
        assert wire.payloads()[1:] == [msg(i) for i in range(1000)]
        assert box.depth_rows == 0
        assert box.commits == commits  # every transaction was rolled back: nothing to keep
        assert box.rollbacks == 10
        assert file_bytes(path) == before  # not one page written


def test_a_durable_message_is_committed_before_it_is_sent_with_the_relaxed_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_inflight=8, relaxed_commit_interval_s=3600) as box:
        wire = FakeWire()
        box.put("tel", msg(0), "telemetry")
        box.put("act", msg(1), "action")
        box.commit_due()
        assert committed(path) == 0  # relaxed: not due yet
        box.pump(wire)
        assert wire.payloads() == [msg(0), msg(1)]  # sent without a commit
        assert committed(path) == 0
        box.put("ev", msg(2), "event")
        box.pump(wire)  # the event is committed first, the unacked relaxed rows with it
        assert committed(path) == 3
        assert wire.payloads()[-1] == msg(2)


def test_relaxed_messages_wait_out_a_broker_outage_and_are_committed_at_the_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_inflight=4, relaxed_commit_interval_s=3600) as box:
        wire = FakeWire()
        wire.up = False
        for i in range(10):
            box.put("act", msg(i), "action")
            box.pump(wire)
        assert box.stats()["uncommitted_rows"] == 10
        box.relaxed_commit_interval_s = 0.0  # the interval has passed
        box.commit_due()
        assert box.stats()["uncommitted_rows"] == 0
        box.put("act", msg(10), "action")  # after the last commit: a crash would lose it
    with Outbox(path, max_inflight=100) as box:  # close() committed it too
        wire = FakeWire()
        box.pump(wire)
        assert wire.payloads() == [msg(i) for i in range(11)]


def test_rolled_back_row_ids_are_sent_when_reused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_inflight=4, relaxed_commit_interval_s=3600) as box:
        wire = FakeWire()
        for i in range(3):
            box.put("tel", msg(i), "telemetry")
        box.pump(wire)
        for handle in wire.handles():
            box.on_ack(handle)
        box.flush()  # rolled back: the ids 1..3 are free again
        assert box.rollbacks == 1
        box.put("tel", msg(3), "telemetry")
        box.pump(wire)
        assert wire.payloads()[-1] == msg(3)


RELAXED_WRITER = textwrap.dedent(
    """
    import sys, time
    from edge_agent.fleet.outbox import Outbox
    box = Outbox(sys.argv[1], relaxed_commit_interval_s=3600.0)
    for i in range(100):  # the broker is away: nothing is acknowledged
        box.put("ea/v1/f/node/n/telemetry", b"committed-%06d" % i, "telemetry")
    box.put("ea/v1/f/node/n/event", b"event", "event")
    box.commit_due()  # a durable message: committed now, the relaxed rows with it
    for i in range(30):
        box.put("ea/v1/f/node/n/telemetry", b"uncommitted-%06d" % i, "telemetry")
    box.commit_due()  # relaxed only, interval not passed: not committed
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_sigkill_loses_only_relaxed_messages_since_the_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RELAXED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    with Outbox(path, max_inflight=1000) as box:
        wire = FakeWire()
        box.pump(wire)
        expected = [b"committed-%06d" % i for i in range(100)] + [b"event"]
        assert wire.payloads() == expected


def test_relaxed_messages_in_flight_at_the_interval_are_carried_over_not_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_inflight=4, relaxed_commit_interval_s=3600) as box:
        box.put("warm", msg(0), "event")
        box.flush()
        wire = FakeWire()
        box.pump(wire)
        box.on_ack(wire.handles()[0])
        box.flush()
        before, commits = file_bytes(path), box.commits
        # As in the daemon: a tick publishes and sends; the PUBACK is handled in the next tick,
        # so at the end of every tick one action is in flight.
        for tick in range(500):
            box.put("act", msg(tick), "action")
            box.pump(wire)
            if tick:
                box.on_ack(wire.handles()[-2])
            if tick % 50 == 49:
                box.flush()  # the relaxed interval passed, with the newest action in flight
        assert box.commits == commits
        assert box.rollbacks == 10
        assert file_bytes(path) == before
        assert box.depth_rows == 1
        # The broker goes away before acknowledging the last one: it is still here, sent again.
        box.on_connection_lost()
        again = FakeWire()
        box.pump(again)
        assert again.payloads() == [msg(499)]
        box.on_ack(again.handles()[0])
        assert box.depth_rows == 0


# Upgrades: the SQLite outbox of earlier versions is read once and deleted.
def test_an_old_sqlite_outbox_is_migrated_once_in_order(tmp_path: Path, clock: Clock) -> None:
    legacy = tmp_path / "outbox.sqlite3"
    now = clock.now
    old_outbox(
        legacy,
        [
            ("event", "t/e", b"event-0", False, now - 10, now + 3600),
            ("telemetry", "t/t", b"tel-1", False, now - 9, now + 3600),
            ("result", "t/r", b"result-2", True, now - 8, now + 3600),
            ("action", "t/a", b"stale-3", False, now - 400, now - 100),  # expired meanwhile
        ],
    )
    path = tmp_path / "outbox.log"
    with Outbox(path, legacy=legacy, clock=clock) as box:
        assert box.migrated == 4
        assert not legacy.exists()
        assert not any(p.name.startswith("outbox.sqlite3") for p in tmp_path.iterdir())
        assert box.depth_rows == 4
        assert box.depth_bytes == 7 + 3 + 5 + 3 + 8 + 3 + 7 + 3
        wire = FakeWire()
        box.pump(wire)
        assert [(t, p, r) for _, t, p, r in wire.sent] == [
            ("t/e", b"event-0", False),
            ("t/t", b"tel-1", False),
            ("t/r", b"result-2", True),
        ]
        assert box.expired == 1
    with Outbox(path, legacy=legacy, clock=clock) as again:  # read from the new file only
        assert again.migrated == 0
        assert list(again.payloads()) == [b"event-0", b"tel-1", b"result-2"]


def test_a_node_without_an_old_outbox_never_loads_sqlite(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from edge_agent.fleet.outbox import Outbox
        with Outbox({str(tmp_path / "outbox.log")!r}, legacy={str(tmp_path / "old")!r}) as box:
            box.put("t", b"x", "event")
            box.flush()
        print("sqlite3" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_the_file_is_compacted_to_what_it_holds(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_inflight=8) as box:
        keep = box.put("t/keep", b"k" * 1000, "event")  # never acknowledged: always held
        box.flush()
        wire = FakeWire()
        box.pump(wire)
        sizes = []
        for i in range(3000):  # 3 MB through a file that holds one message at the end
            box.put("t", msg(i, 1000), "event")
            box.flush()
            box.pump(wire)
            box.on_ack(wire.handles()[-1])
            box.flush()
            sizes.append(path.stat().st_size)
        assert box.compactions >= 2
        assert max(sizes) < 1024 * 1024 + 4096  # COMPACT_MIN_BYTES and one commit more
        assert box.depth_rows == 1
        assert keep is not None
    with Outbox(path) as again:
        assert list(again.payloads()) == [b"k" * 1000]


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_held_message_costs_under_64_bytes_of_memory(tmp_path: Path) -> None:
    # The index in columns (outbox_index.py): 35 bytes a slot, up to half as many again unused
    # after a growth; it was a dataclass object and a dict entry a message, about 300 bytes.
    n = 20_000
    path = tmp_path / "outbox.log"
    payload = b"p" * 230  # a 250-byte message with its topic
    tracemalloc.start()
    try:
        box = Outbox(path)
        box.put("ea/f/node/event", payload, "event")
        box.flush()
        before = traced_bytes()
        for _ in range(n - 1):
            box.put("ea/f/node/event", payload, "event")
        box.flush()
        held = (traced_bytes() - before) / n
        assert box.depth_rows == n
        box.close()
        del box
        before = traced_bytes()
        again = Outbox(path)  # a backlog read back from the file costs the same
        reopened = (traced_bytes() - before) / n
        assert again.depth_rows == n
        again.close()
    finally:
        tracemalloc.stop()
    assert held <= 64, f"{held:.1f} bytes a held message"
    assert reopened <= 64, f"{reopened:.1f} bytes a message after a reopen"


def test_order_and_sizes_after_a_reopen_of_a_compacted_index(tmp_path: Path) -> None:
    path = tmp_path / "outbox.log"
    wire = FakeWire()
    with Outbox(path, max_inflight=1000) as box:
        for i in range(1000):
            box.put(f"t/{i % 3}", msg(i, 10 + i % 5), "event", retain=i % 7 == 0)
        box.flush()
        assert box.pump(wire) == 1000
        for handle, _, payload, _ in wire.sent:
            if int(payload[:6]) % 10:  # nine in ten acknowledged: the columns compacted
                box.on_ack(handle)
        box.flush()
        assert box.depth_rows == 100
        assert box._index.compactions >= 1  # the columns lost the gone ones
    kept = [i for i in range(1000) if i % 10 == 0]
    with Outbox(path, max_inflight=200) as again:
        assert again.depth_rows == 100
        assert again.depth_bytes == sum(len(f"t/{i % 3}") + 10 + i % 5 for i in kept)
        wire2 = FakeWire()
        again.pump(wire2)
        assert wire2.payloads() == [msg(i, 10 + i % 5) for i in kept]
        assert [(t, r) for _, t, _, r in wire2.sent] == [(f"t/{i % 3}", i % 7 == 0) for i in kept]


def test_an_idle_outbox_allocates_nothing_tick_after_tick(tmp_path: Path, clock: Clock) -> None:
    wire = FakeWire()
    wire.up = False  # a broker outage: the backlog stays
    with Outbox(tmp_path / "outbox.log", clock=clock) as box:
        for i in range(1000):
            box.put("t", msg(i), "event")
        box.flush()

        def ticks(count: int) -> None:
            for _ in range(count):
                clock.now += 0.1  # the expiry sweep runs every 5 s of it
                box.pump(wire)
                box.commit_due()

        ticks(200)  # warm
        tracemalloc.start()
        try:
            before = traced_bytes()
            ticks(2000)
            grown = traced_bytes() - before
        finally:
            tracemalloc.stop()
        assert box.depth_rows == 1000
    assert grown < 4096, f"{grown} bytes more after 2,000 idle ticks"
