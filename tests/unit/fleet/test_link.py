"""FleetLink over the in-memory broker twin, and the transport building blocks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from edge_agent.errors import ProtocolError
from edge_agent.fleet.comms.base import (
    Backoff,
    BoundedQueue,
    Incoming,
    TransportEventKind,
    check_topic,
    topic_matches,
)
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.link import FleetLink
from edge_agent.fleet.outbox import Outbox, OutboxFullError
from edge_agent.fleet.protocol import (
    ActionBatch,
    Birth,
    Command,
    Envelope,
    Event,
    NodeState,
    RebirthRequest,
    SeqVerdict,
    Telemetry,
    decode,
    encode,
)
from edge_agent.fleet.topics import Topics

FLEET = "plant"
TOPICS = Topics(FLEET)


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One FleetLink on the memory broker, with its own state dir and outbox."""

    def __init__(self, broker: MemoryBroker, root: Path, node_id: str, **kw: Any) -> None:
        self.root = root / node_id
        self.broker = broker
        self.node_id = node_id
        self.mono = Mono()
        self.kw = kw
        self.outbox = Outbox(self.root / "outbox.log", max_inflight=8)
        self.transport = MemoryTransport(broker, f"ea-{node_id}")
        self.link = FleetLink(
            self.transport,
            self.outbox,
            node_id,
            FLEET,
            self.root,
            monotonic=self.mono,
            clock_sync_check=lambda: True,
            **kw,
        )

    def restart(self) -> None:
        """A new process: new transport, new link, same state dir and outbox file."""
        self.outbox.close()
        self.__init__(self.broker, self.root.parent, self.node_id, **self.kw)  # type: ignore[misc]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def node(broker: MemoryBroker, tmp_path: Path) -> Iterator[Node]:
    n = Node(broker, tmp_path, "pi-01")
    yield n
    n.outbox.close()


class Listener:
    """A plain client of the memory broker that records what it receives."""

    def __init__(self, broker: MemoryBroker, pattern: str = TOPICS.fleet_all()) -> None:
        self.transport = MemoryTransport(broker, "listener")
        self.transport.subscribe(pattern, 1)
        self.transport.connect()

    def messages(self) -> list[tuple[str, Envelope, bool]]:
        return [(m.topic, decode(m.payload), m.retain) for m in self.transport.incoming.drain()]

    def send(self, topic: str, payload: bytes) -> None:
        assert self.transport.publish(topic, payload, 1) is not None


def envelope(body: Any, node: str = "hub", seq: int = 0, bdseq: int = 0) -> Envelope:
    return Envelope(
        type=body.TYPE, node=node, seq=seq, bdseq=bdseq, ts=1.0, clock_synced=True, body=body
    )


def events_of(received: list[tuple[str, Envelope, bool]]) -> list[int]:
    out = []
    for _, env, _ in received:
        if isinstance(env.body, Event):
            n = env.body.data["n"]
            assert isinstance(n, int)
            out.append(n)
    return out


# Presence -----------------------------------------------------------------------------------


def test_birth_state_and_will(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker)
    node.link.start()
    node.link.pump()
    got = listener.messages()
    assert [(t, e.type, r) for t, e, r in got] == [
        (TOPICS.node_state("pi-01"), "state", False),
        (TOPICS.birth("pi-01"), "birth", False),
    ]
    state, birth = got[0][1], got[1][1]
    assert state.body == NodeState(online=True)
    assert state.bdseq == birth.bdseq == 0
    assert birth.seq == state.seq + 1
    # Late joiners find the retained online state and birth.
    retained_state = broker.retained(TOPICS.node_state("pi-01"))
    assert retained_state is not None
    assert decode(retained_state).body == NodeState(online=True)
    assert broker.retained(TOPICS.birth("pi-01")) is not None
    # The connection dies: the broker publishes the will, the same bdseq, offline, retained.
    broker.kick("ea-pi-01")
    (topic, will, _), *_ = listener.messages()
    assert topic == TOPICS.node_state("pi-01")
    assert (will.body, will.bdseq) == (NodeState(online=False), 0)
    retained_state = broker.retained(TOPICS.node_state("pi-01"))
    assert retained_state is not None
    assert decode(retained_state).body == NodeState(online=False)


def test_bdseq_increments_per_session_and_across_restarts(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker, TOPICS.all_nodes("birth"))
    node.link.start()
    node.link.pump()
    broker.stop()
    broker.start()
    node.link.pump()
    node.restart()
    node.link.start()
    node.link.pump()
    births = [e for _, e, _ in listener.messages() if e.type == "birth"]
    assert [b.bdseq for b in births] == [0, 1, 2]
    assert node.link.bdseq == 2
    assert (node.root / "fleet_link.json").exists()


def test_corrupt_state_file_restarts_bdseq(broker: MemoryBroker, node: Node) -> None:
    node.root.mkdir(parents=True, exist_ok=True)
    (node.root / "fleet_link.json").write_text("{not json")
    node.restart()
    assert node.link.bdseq is None
    node.link.start()
    assert node.link.bdseq == 0


def test_stop_publishes_death_and_offline(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker)
    node.link.start()
    node.link.pump()
    node.link.publish_event("other", data={"n": 1})
    node.link.stop()
    got = listener.messages()
    types = [e.type for _, e, _ in got]
    assert types == ["state", "birth", "event", "death", "state"]
    assert got[-1][1].body == NodeState(online=False)
    assert node.outbox.depth_rows == 0
    assert not node.link.online


# Store and forward ------------------------------------------------------------------------------


def test_events_published_offline_arrive_in_order_after_birth(
    broker: MemoryBroker, node: Node
) -> None:
    broker.stop()
    node.link.start()
    for i in range(20):
        node.link.publish_event("other", data={"n": i})
        node.link.flush()
        node.link.pump()
    assert node.outbox.depth_rows == 20
    listener = Listener(broker)
    broker.start()
    listener.transport.connect()
    for _ in range(5):
        node.link.pump()
    got = listener.messages()
    assert [e.type for _, e, _ in got[:2]] == ["state", "birth"]  # birth first
    assert events_of(got) == list(range(20))
    assert node.outbox.depth_rows == 0
    seqs = [e.seq for _, e, _ in got if e.type == "event"]
    assert seqs == sorted(seqs)


def test_send_now_sends_what_is_stored_and_leaves_the_events_to_pump(
    broker: MemoryBroker, node: Node
) -> None:
    """``send_now``: the stored messages go on the wire (committed first: a durable class),
    and the transport's events wait for :meth:`FleetLink.pump`; offline it sends nothing."""
    listener = Listener(broker, TOPICS.all_nodes("event"))
    node.link.start()
    assert node.link.send_now() == 0  # connected, but its CONNECTED event is pump's to take
    node.link.pump()
    for i in range(3):
        node.link.publish_event("other", data={"n": i})
    assert events_of(listener.messages()) == []
    connects = node.link.stats()["connects"]
    assert node.link.send_now() == 3
    assert events_of(listener.messages()) == [0, 1, 2]
    assert node.outbox.inflight == 3  # acknowledged, but the acks are pump's
    assert node.link.stats()["connects"] == connects
    node.link.pump()
    assert node.outbox.depth_rows == 0
    broker.stop()
    node.link.pump()
    node.link.publish_event("other", data={"n": 3})
    assert node.link.send_now() == 0
    assert node.outbox.depth_rows == 1


def test_lost_acks_mean_resend_not_loss(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker, TOPICS.all_nodes("event"))
    node.link.start()
    node.link.pump()
    broker.hold_acks = True
    for i in range(12):
        node.link.publish_event("other", data={"n": i})
    node.link.pump()  # 8 in flight, acks held
    assert node.outbox.inflight == 8
    broker.stop()  # acks lost with the broker
    broker.hold_acks = False
    broker.start()
    listener.transport.connect()
    for _ in range(4):
        node.link.pump()
    got = events_of(listener.messages())
    assert sorted(set(got)) == list(range(12))  # nothing lost
    assert node.outbox.depth_rows == 0
    assert node.link.stats()["connects"] == 2
    assert node.link.stats()["disconnects"] == 1


def test_qos0_is_dropped_when_offline(broker: MemoryBroker, node: Node) -> None:
    broker.stop()
    node.link.start()
    batch = ActionBatch.from_arrays("g", 1, [0, 1], np.zeros((2, 1), np.int8))
    node.link.publish("action", batch, "action", qos=0)
    assert node.link.stats()["qos0_dropped"] == 1
    assert node.outbox.depth_rows == 0


def test_outbox_full_is_raised_and_counted(broker: MemoryBroker, tmp_path: Path) -> None:
    n = Node(broker, tmp_path, "pi-02")
    n.outbox.close()
    n.outbox = Outbox(tmp_path / "small.db", max_bytes=1024)
    n.link = FleetLink(n.transport, n.outbox, "pi-02", FLEET, n.root)
    try:
        n.link.publish_event("other", "x" * 100, data={"n": 0})
        fits = 1024 // n.outbox.depth_bytes
        for i in range(1, fits):
            n.link.publish_event("other", "x" * 100, data={"n": i})
        with pytest.raises(OutboxFullError):
            n.link.publish_event("other", "x" * 100, data={"n": 7})
        assert n.link.stats()["outbox_refused"] == 1
    finally:
        n.outbox.close()


def test_publish_validates_bodies(node: Node) -> None:
    with pytest.raises(ProtocolError, match="bad event body"):
        node.link.publish("event", {"kind": "meteor"})
    with pytest.raises(ProtocolError, match="unknown message type"):
        node.link.publish("nope", {})
    with pytest.raises(ProtocolError, match="no default topic"):
        node.link.publish(
            "command",
            {"target": "x", "nonce": b"n" * 8, "expires": 1.0, "key_id": "k", "name": "x"},
            "event",
        )


def test_telemetry_carries_outbox_and_link_counters(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker, TOPICS.all_nodes("telemetry"))  # not the event
    node.link.start()
    node.link.pump()
    node.link.publish_event("other")
    node.link.publish_telemetry(
        {
            "uptime_s": 1.0,
            "rss_bytes": 1 << 20,
            "budget_used_bytes": 10,
            "budget_total_bytes": 100,
            "ticks": 5,
            "tick_p50_ms": 1.0,
            "tick_p99_ms": 2.0,
            "overruns": 0,
            "counters": {"custom": 7},
        }
    )
    node.link.pump()
    ((_, env, _),) = listener.messages()
    assert isinstance(env.body, Telemetry)
    assert env.body.outbox is not None
    assert env.body.outbox.stored == 1
    assert env.body.counters["custom"] == 7
    assert env.body.counters["link.connects"] == 1


# Incoming -----------------------------------------------------------------------------------


def test_malformed_messages_are_counted_and_dropped(broker: MemoryBroker, node: Node) -> None:
    node.link.start()
    node.link.pump()
    hub = Listener(broker, "unused/#")
    cmd_topic = TOPICS.command("pi-01")
    command = Command(
        target="pi-01", nonce=b"n" * 16, expires=2e9, key_id="k", name="ping", args={}
    )
    good = encode(envelope(command))
    raw = msgspec.msgpack.decode(good)
    bad_payloads = {
        "not_msgpack": b"\xc1\xc1",
        "not_a_map": msgspec.msgpack.encode([1, 2]),
        "version": msgspec.msgpack.encode({**raw, "v": 9}),
        "unknown_type": msgspec.msgpack.encode({**raw, "type": "teleport"}),
        "schema": msgspec.msgpack.encode({**raw, "seq": -5}),
        "oversized": good + b"\x00" * (300 * 1024),
        "type_mismatch": encode(envelope(Event(kind="other"))),
    }
    for payload in bad_payloads.values():
        hub.send(cmd_topic, payload)
    hub.send(cmd_topic, good)
    # A node-owned topic written by someone else, and a topic outside the protocol.
    hub.send(TOPICS.obs("pi-01", "g") + "/1/2", good)
    node.link.pump()
    stats = node.link.stats()
    for reason in bad_payloads:
        assert stats[f"malformed.{reason}"] == 1, reason
    assert stats["malformed.topic"] == 1
    (received,) = node.link.receive()
    assert received.envelope.body == command
    assert received.seq is None  # addressed to us: not sequence-tracked
    assert node.link.online


def test_node_owned_topics_must_match_sender(broker: MemoryBroker, node: Node) -> None:
    node.link.subscribe(TOPICS.all_nodes("event"))
    node.link.start()
    node.link.pump()
    peer = Listener(broker, "unused/#")
    peer.send(TOPICS.event("pi-07"), encode(envelope(Event(kind="other"), node="pi-08")))
    assert node.link.stats()["malformed.node_mismatch"] == 1
    assert node.link.receive() == []


def test_rebirth_request_publishes_a_new_birth(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker, TOPICS.all_nodes("birth"))
    node.link.start()
    node.link.pump()
    req = encode(envelope(RebirthRequest(reason="gap")))
    node.mono.now += 10
    listener.send(TOPICS.rebirth("pi-01"), req)
    node.link.pump()
    listener.send(TOPICS.rebirth("pi-01"), req)
    node.link.pump()  # rate-limited: within rebirth_min_interval_s of the last birth
    node.mono.now += 10
    node.link.pump()
    births = [e for _, e, _ in listener.messages()]
    assert len(births) == 3
    assert {b.bdseq for b in births} == {0}  # a rebirth keeps the session's bdseq
    assert node.link.stats()["rebirths_received"] == 2
    assert node.link.receive() == []  # handled by the link, not passed on


def test_set_birth_republishes(broker: MemoryBroker, node: Node) -> None:
    listener = Listener(broker, TOPICS.all_nodes("birth"))
    node.link.start()
    node.link.pump()
    node.link.set_birth({"software_version": "9", "profile": "pi5", "budget_bytes": 5})
    node.link.pump()
    births = [e.body for _, e, _ in listener.messages()]
    assert isinstance(births[-1], Birth)
    assert births[-1].profile == "pi5"


def test_sequence_gap_triggers_a_rate_limited_rebirth_request(
    broker: MemoryBroker, node: Node
) -> None:
    node.link.subscribe(TOPICS.all_nodes("event"))
    node.link.subscribe(TOPICS.all_nodes("birth"))
    node.link.start()
    node.link.pump()
    peer = Listener(broker, TOPICS.rebirth("pi-09"))

    def from_peer(body: Any, seq: int) -> bytes:
        return encode(envelope(body, node="pi-09", seq=seq, bdseq=4))

    birth = Birth(software_version="1", profile="p", budget_bytes=1)
    peer.send(TOPICS.birth("pi-09"), from_peer(birth, 10))
    peer.send(TOPICS.event("pi-09"), from_peer(Event(kind="other"), 11))
    peer.send(TOPICS.event("pi-09"), from_peer(Event(kind="other"), 14))
    node.link.pump()
    verdicts = [r.seq.verdict for r in node.link.receive() if r.seq is not None]
    assert verdicts == [SeqVerdict.BIRTH, SeqVerdict.IN_ORDER, SeqVerdict.GAP]
    ((topic, request, _),) = peer.messages()
    assert topic == TOPICS.rebirth("pi-09")
    assert request.node == "pi-01"
    peer.send(TOPICS.event("pi-09"), from_peer(Event(kind="other"), 20))
    node.link.pump()
    assert peer.messages() == []  # within rebirth_request_interval_s
    stats = node.link.stats()
    assert (stats["seq_gaps"], stats["rebirth_requests_sent"]) == (2, 1)


def test_inbox_is_bounded(broker: MemoryBroker, tmp_path: Path) -> None:
    n = Node(broker, tmp_path, "pi-03", max_inbox=3)
    try:
        n.link.start()
        n.link.pump()
        hub = Listener(broker, "unused/#")
        for i in range(5):
            cmd = Command(
                target="pi-03", nonce=bytes([i]) * 8, expires=2e9, key_id="k", name="ping"
            )
            hub.send(TOPICS.command("pi-03"), encode(envelope(cmd)))
        assert len(n.link.receive()) == 3
        assert n.link.stats()["inbox_dropped"] == 2
    finally:
        n.outbox.close()


def test_handler_exceptions_are_contained(broker: MemoryBroker) -> None:
    transport = MemoryTransport(broker, "c")
    transport.subscribe("x/#")
    transport.connect()

    def boom(_msg: Incoming) -> None:
        raise RuntimeError("bug in a handler")

    transport.on_message = boom
    other = MemoryTransport(broker, "d")
    other.connect()
    other.publish("x/1", b"p")
    assert transport.handler_errors == 1


# Transport building blocks --------------------------------------------------------------------


def test_memory_transport_events_and_no_local(broker: MemoryBroker) -> None:
    t = MemoryTransport(broker, "a")
    t.subscribe("t/#", 1, no_local=True)
    t.connect()
    handle = t.publish("t/1", b"own", 1)
    assert handle is not None
    kinds = [e.kind for e in t.events.drain()]
    assert kinds == [TransportEventKind.CONNECTED, TransportEventKind.ACK]
    assert len(t.incoming) == 0  # no local
    broker.stop()
    assert t.publish("t/1", b"x") is None
    assert [e.kind for e in t.events.drain()] == [TransportEventKind.DISCONNECTED]
    broker.start()
    assert t.is_connected
    assert t.session == 2


def test_topic_matching() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert topic_matches("a/#", "a")
    assert topic_matches("a/#", "a/b/c")
    assert topic_matches("#", "a/b")
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("a/b", "a/b/c")
    assert not topic_matches("+/x", "$SYS/x")
    assert not topic_matches("#", "$SYS/x")
    assert topic_matches("$SYS/#", "$SYS/x")
    check_topic("a/+/#", pattern=True)
    for bad, pattern in [("a/#/b", True), ("a/b+", True), ("a/+", False), ("", False)]:
        with pytest.raises(ProtocolError):
            check_topic(bad, pattern=pattern)


def test_bounded_queue() -> None:
    q: BoundedQueue[int] = BoundedQueue(2)
    assert q.put(1)
    assert q.put(2)
    assert not q.put(3)
    assert q.dropped == 1
    assert q.drain(1) == [1]
    assert q.get() == 2
    assert q.get() is None
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue(0)


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(initial_s=1.0, max_s=8.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay() == 1.0
    j = Backoff(initial_s=1.0, max_s=100.0, jitter=0.5, rng=random.Random(1))
    delays = [j.next_delay() for _ in range(5)]
    for n, d in enumerate(delays):
        assert 0.5 * 2**n <= d <= 2**n
    assert len(set(delays)) == 5
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0.0)


def test_the_broker_s_refusals_of_a_subscription_and_a_publish_reach_on_refused(
    broker: MemoryBroker, node: Node
) -> None:
    """A SUBACK that refuses a filter and a PUBACK that refuses a message (its topic taken from
    the outbox) go to ``on_refused``; the refused row is dropped, never retried; quota exceeded
    (0x97) is not a refusal (the row waits for the next connection)."""
    heard: list[tuple[str, str, int]] = []
    node.link.on_refused = lambda what, topic, code: heard.append((what, topic, code))
    broker.refused = {"sensors/doors/+": 0x87, "actuators/#": 0x87}
    node.link.subscribe("sensors/doors/+", 1)
    node.link.subscribe("sensors/ok/+", 1)
    node.link.start()
    node.link.pump()
    batch = ActionBatch.from_arrays("doors", 1, [0, 1], np.zeros((2, 1), np.uint8))
    node.link.publish("action", batch, "action", topic="actuators/doors")
    node.link.publish("action", batch, "action", topic="elsewhere/doors")
    node.link.pump()  # sent; the memory broker acks at once
    node.link.pump()  # the acks
    assert heard == [("subscribe", "sensors/doors/+", 0x87), ("publish", "actuators/doors", 0x87)]
    assert node.outbox.rejected == 1
    assert node.outbox.depth_rows == 0  # dropped, not sent again
    heard.clear()
    broker.refused = {}
    broker.ack_reason_code = 0x97
    node.link.publish("action", batch, "action", topic="actuators/doors")
    node.link.pump()
    node.link.pump()
    assert heard == []
    assert node.outbox.depth_rows == 1  # quota: kept for later


def test_memory_transport_refuses_what_its_acl_refuses(broker: MemoryBroker) -> None:
    broker.refused = {"no/+": 0x87}
    t = MemoryTransport(broker, "a")
    t.subscribe("no/+", 1)
    t.connect()
    events = t.events.drain()
    assert [(e.kind, e.detail, e.reason_code) for e in events] == [
        (TransportEventKind.SUBSCRIPTION_REFUSED, "no/+", 0x87),
        (TransportEventKind.CONNECTED, "", 0),
    ]
    other = MemoryTransport(broker, "b")
    other.subscribe("no/#", 1)  # not the refused filter itself: granted
    other.connect()
    assert t.publish("no/1", b"x", 1) is not None
    (ack,) = [e for e in t.events.drain() if e.kind is TransportEventKind.ACK]
    assert ack.reason_code == 0x87
    assert len(other.incoming) == 0  # a refused publish goes to nobody
