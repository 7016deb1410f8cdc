"""FleetLink: one node's link to the fleet, tying the transport, the outbox and the protocol.

The daemon loop owns it and calls, each tick, :meth:`FleetLink.pump` (non-blocking: handles
connection events and PUBACKs, answers rebirth requests, sends from the outbox), publishes with
:meth:`FleetLink.publish` and friends, drains :meth:`FleetLink.receive` between ticks, and ends
the tick with :meth:`FleetLink.flush` (what was published is durable once it returns).

Presence (see ``docs/protocol.md``): before every connection attempt the link increments
``bdseq``, persists it in ``state_dir`` (``fleet_link.json``; when the storage refuses the write
the number lives on in memory, the attempt goes ahead and the write is retried every
``save_retry_s``; a damaged file is moved aside and the count restarts) and registers the will --
the retained
``NodeState(online=False)`` with that ``bdseq`` on the node's state topic. On CONNECTED it
publishes the retained ``NodeState(online=True)`` and the retained :class:`Birth`, both with the
same ``bdseq``, before anything from the outbox. A clean :meth:`FleetLink.stop` publishes a
:class:`Death` and disconnects asking the broker to publish the will, so a crash and a stop leave
the same retained state.

Incoming messages are decoded and validated on the transport's thread; malformed ones are
counted by reason and dropped, never raised into the daemon. This module imports nothing of the
agents or the runtime: the daemon hands it plain mappings or protocol models.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError, ProtocolError
from edge_agent.fleet.comms.base import (
    BoundedQueue,
    Incoming,
    PublishHandle,
    Transport,
    TransportEventKind,
    Will,
)
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.outbox import PUBACK_QUOTA_EXCEEDED, Outbox
from edge_agent.fleet.protocol import (
    DECODE_REASONS,
    DEFAULT_MAX_BYTES,
    ActionBatch,
    Birth,
    Body,
    CommandResult,
    Death,
    DeathReason,
    DecodeError,
    Envelope,
    Event,
    EventKind,
    NodeState,
    OutboxCounters,
    RebirthRequest,
    SeqResult,
    SeqTracker,
    Severity,
    Telemetry,
    body_model,
    clock_synced,
    decode,
    encode,
    validate,
)
from edge_agent.fleet.topics import Route, Topics, check_name
from edge_agent.fsutil import is_storage_error, not_a_file, write_atomic
from edge_agent.state_faults import StateFaults

logger = logging.getLogger(__name__)

STATE_FILE: Final = "fleet_link.json"
PART: Final = "sequence"
MALFORMED_REASONS: Final = (*DECODE_REASONS, "topic", "type_mismatch", "node_mismatch")


@dataclass(frozen=True, slots=True)
class Received:
    """One valid incoming message, as the daemon sees it."""

    topic: str
    route: Route
    envelope: Envelope
    retained: bool
    seq: SeqResult | None
    """Gap verdict for messages on topics owned by a peer; None for messages addressed to us."""


class FleetLink:
    """One node's link to the fleet. See the module docstring for the tick protocol."""

    def __init__(
        self,
        transport: Transport,
        outbox: Outbox,
        node_id: str,
        fleet: str,
        state_dir: str | Path,
        *,
        birth: Birth | Mapping[str, Any] | None = None,
        subscriptions: Iterable[tuple[str, int]] = (),
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
        max_inbox: int = 1000,
        max_peers: int = 4096,
        rebirth_min_interval_s: float = 5.0,
        rebirth_request_interval_s: float = 30.0,
        request_rebirth_on_gap: bool = True,
        clock_check_every_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        clock_sync_check: Callable[[], bool] = clock_synced,
        faults: StateFaults | None = None,
        save_retry_s: float = 60.0,
    ) -> None:
        self.node_id = check_name(node_id, "node")
        self.topics = Topics(fleet)
        self.fleet = fleet
        self.transport = transport
        self.outbox = outbox
        self.state_dir = Path(state_dir)
        self.max_payload_bytes = max_payload_bytes
        self.max_peers = max_peers
        self.rebirth_min_interval_s = rebirth_min_interval_s
        self.rebirth_request_interval_s = rebirth_request_interval_s
        self.request_rebirth_on_gap = request_rebirth_on_gap
        self.clock_check_every_s = clock_check_every_s
        self._wall = wall_clock
        self._mono = monotonic
        self._clock_sync_check = clock_sync_check
        self.faults = faults if faults is not None else StateFaults()
        self.save_retry_s = save_retry_s
        self._unsaved = False
        self._save_retry_at = 0.0
        self._lock = threading.RLock()
        self._inbox: BoundedQueue[Received] = BoundedQueue(max_inbox)
        self._birth = self._to_birth(birth)
        self._extra_subs = list(subscriptions)
        self._seq = 0
        self._bdseq: int | None = self._newest_bdseq()
        self._session_bdseq: tuple[int, int] | None = None
        self._online_session: int | None = None
        self._synced = False
        self._next_clock_check = -1e18
        self._rebirth_pending = False
        self._last_birth = -1e18
        self._rebirth_wanted: set[str] = set()
        self._rebirth_asked: OrderedDict[str, float] = OrderedDict()
        self._trackers: OrderedDict[str, SeqTracker] = OrderedDict()
        self._started = False
        self._claims: tuple[Callable[[Incoming], bool], ...] = ()
        #: Called on the transport thread with every valid envelope before it is queued; False
        #: drops it (the screen counts it). The daemon refuses forged commands here, so a flood
        #: of them never crowds the inbox (see daemon/uplink.py).
        self.screen: Callable[[Envelope], bool] | None = None
        #: Called by :meth:`pump` with ``("subscribe", filter, code)`` for a SUBACK that refused
        #: a filter and ``("publish", topic, code)`` for a PUBACK that refused a message (code
        #: >= 0x80, MQTT 5). The daemon tells the group whose I/O topic it is (daemon/uplink.py).
        self.on_refused: Callable[[str, str, int], None] | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "received",
                "births_sent",
                "connects",
                "disconnects",
                "rebirths_received",
                "rebirth_requests_sent",
                "seq_gaps",
                "seq_no_birth",
                "qos0_dropped",
                "outbox_refused",
            ),
            0,
        )
        for reason in MALFORMED_REASONS:
            self.counters[f"malformed.{reason}"] = 0

    # Life -----------------------------------------------------------------------------------
    @property
    def bdseq(self) -> int | None:
        """The bdseq of the current (or last) connection attempt; None before the first."""
        with self._lock:
            return self._bdseq

    @property
    def online(self) -> bool:
        """True between processing CONNECTED and DISCONNECTED in :meth:`pump`."""
        return self._online_session is not None

    def start(self) -> None:
        """Subscribe to the node's inbox and start connecting (returns at once)."""
        if self._started:
            return
        self._started = True
        self.transport.on_message = self._on_message
        for pattern in self.topics.node_inbox(self.node_id):
            self.transport.subscribe(pattern, 1)
        for pattern, qos in self._extra_subs:
            self.transport.subscribe(pattern, qos)
        self.transport.connect(self._make_will)

    def stop(
        self, *, reason: DeathReason = DeathReason.SHUTDOWN, drain_timeout_s: float = 1.0
    ) -> None:
        """Publish a Death, try to drain the outbox for ``drain_timeout_s``, then disconnect.

        The broker publishes the will (offline state) on the way out. The outbox stays open (its
        owner closes it); whatever was not acknowledged is sent after the next start.
        """
        if not self._started:
            return
        self.pump()
        if self.online:
            self._publish_direct(Death.TYPE, Death(reason=reason), self.topics.death(self.node_id))
            deadline = self._mono() + drain_timeout_s
            while self._mono() < deadline and self.online and self.outbox.depth_rows:
                self.pump()
                time.sleep(0.01)
        with self._lock:
            if self._unsaved and self._bdseq is not None:
                self._save_bdseq(self._bdseq)  # the storage may have recovered since the retry
        self.outbox.flush()
        self.transport.disconnect(publish_will=True)
        self.pump()
        self._online_session = None
        self.outbox.on_connection_lost()
        self._started = False

    def claim(self, handler: Callable[[Incoming], bool]) -> None:
        """Offer every incoming message to ``handler`` first (on the transport thread); a
        message it returns True for is its own and goes no further. The daemon registers its
        MQTT sources' observation routes here (they are not fleet-protocol topics)."""
        self._claims = (*self._claims, handler)

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        """Subscribe to more topics (e.g. ``topics.all_nodes("beliefs")``), now and on reconnect."""
        self.transport.subscribe(pattern, qos)

    def unsubscribe(self, pattern: str) -> None:
        """Stop receiving ``pattern`` (one :meth:`subscribe` d earlier), now and on reconnect."""
        self.transport.unsubscribe(pattern)

    def set_birth(self, birth: Birth | Mapping[str, Any]) -> None:
        """Replace what the birth says; published again at once when online (a rebirth)."""
        new = self._to_birth(birth)
        with self._lock:
            self._birth = new
            self._rebirth_pending = True
            self._last_birth = -1e18

    # Tick -----------------------------------------------------------------------------------
    def pump(self) -> int:
        """Handle transport events, rebirths and send from the outbox. Never blocks.

        Returns how many outbox messages went on the wire.
        """
        refused = self.on_refused
        for event in self.transport.events.drain():
            if event.kind is TransportEventKind.ACK:
                if event.handle is not None:
                    topic = self.outbox.topic_in_flight(event.handle)
                    code = event.reason_code
                    dropped = code >= 0x80 and code != PUBACK_QUOTA_EXCEEDED  # that one waits
                    if self.outbox.on_ack(event.handle, code) and dropped and topic and refused:
                        refused("publish", topic, code)
            elif event.kind is TransportEventKind.SUBSCRIPTION_REFUSED:
                if refused is not None:
                    refused("subscribe", event.detail, event.reason_code)
            elif event.kind is TransportEventKind.CONNECTED:
                self._on_connected(event.session)
            elif (
                event.kind is TransportEventKind.DISCONNECTED
                and event.session == self._online_session
            ):
                self._online_session = None
                self.outbox.on_connection_lost()
                self._count("disconnects")
                logger.info("fleet link offline: %s", event.detail)
        if self._unsaved and self._mono() >= self._save_retry_at:
            with self._lock:
                if self._unsaved and self._bdseq is not None:
                    self._save_bdseq(self._bdseq)
        if not self.online:
            return 0
        now = self._mono()
        with self._lock:
            rebirth = (
                self._rebirth_pending and now - self._last_birth >= self.rebirth_min_interval_s
            )
            wanted = sorted(self._rebirth_wanted)
            self._rebirth_wanted.clear()
        if rebirth:
            self._publish_birth()
        for node in wanted:
            self.request_rebirth(node, "sequence gap")
        return self.outbox.pump(self._send_stored)

    def send_now(self) -> int:
        """Send what is stored now (a durable message committed first, as :meth:`pump` does),
        without the transport's events or rebirths, which stay :meth:`pump`'s: a part of the
        tick that just published what peers wait for sends it before the rest of the tick.
        Returns how many messages went on the wire."""
        if not self.online:
            return 0
        return self.outbox.pump(self._send_stored)

    def flush(self) -> None:
        """Make the durable messages published so far durable (the outbox commits when one is
        waiting, or when its relaxed interval has passed: ``edge_agent/fleet/outbox.py``)."""
        self.outbox.commit_due()

    def receive(self, max_messages: int | None = None) -> list[Received]:
        """Valid incoming messages, oldest first (the inbox drops the newest when full)."""
        return self._inbox.drain(max_messages)

    # Publishing -----------------------------------------------------------------------------
    def publish(
        self,
        msg_type: str,
        body: Body | Mapping[str, Any],
        cls: str = "event",
        *,
        topic: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> int:
        """Publish one message; returns its ``seq``.

        QoS 1 goes through the outbox under class ``cls`` (may raise
        :class:`~edge_agent.fleet.outbox.OutboxFullError`); QoS 0 is sent at once if online and
        otherwise dropped (counted ``qos0_dropped``). ``topic`` defaults to the sender's topic
        for ``msg_type``.
        """
        model = body_model(msg_type)
        if not isinstance(body, model):
            fields = msgspec.structs.asdict(body) if isinstance(body, Body) else body
            try:
                body = validate(model, fields)
            except (TypeError, ValueError) as err:  # msgspec's ValidationError is a ValueError
                raise ProtocolError(f"bad {msg_type} body: {err}") from err
        if topic is None:
            topic = self._default_topic(msg_type, body)
        env = self._envelope(msg_type, body)
        payload = encode(env, self.max_payload_bytes)
        if qos == 0:
            if self.transport.publish(topic, payload, 0, retain) is None:
                self._count("qos0_dropped")
            return env.seq
        if qos != 1:
            raise ProtocolError(f"qos {qos} is not supported, use 0 or 1")
        try:
            self.outbox.put(topic, payload, cls, retain=retain)
        except EdgeAgentError:
            self._count("outbox_refused")
            raise
        return env.seq

    def publish_telemetry(self, telemetry: Telemetry | Mapping[str, Any], *, qos: int = 1) -> int:
        """Publish telemetry; fills in the outbox counters and the link's counters."""
        if isinstance(telemetry, Telemetry):
            data = msgspec.structs.asdict(telemetry)
        else:
            data = dict(telemetry)
        if data.get("outbox") is None:
            stats = self.outbox.stats()
            data["outbox"] = validate(
                OutboxCounters,
                {k: v for k, v in stats.items() if k in OutboxCounters.__struct_fields__},
            )
        counters = {f"link.{k}": v for k, v in self.counters.items() if v}
        counters.update(data.get("counters") or {})
        data["counters"] = counters
        return self.publish(Telemetry.TYPE, data, "telemetry", qos=qos)

    def publish_event(
        self,
        kind: EventKind | str,
        detail: str = "",
        *,
        severity: Severity | str = Severity.INFO,
        group: str | None = None,
        data: Mapping[str, Any] | None = None,
        qos: int = 1,
    ) -> int:
        body: dict[str, Any] = {
            "kind": kind,
            "severity": severity,
            "detail": detail,
            "group": group,
            "data": dict(data or {}),
        }
        return self.publish(Event.TYPE, body, "event", qos=qos)

    def publish_result(self, result: CommandResult | Mapping[str, Any]) -> int:
        return self.publish(CommandResult.TYPE, result, "result")

    def request_rebirth(self, node: str, reason: str = "") -> bool:
        """Ask ``node`` to publish its birth again (at most once per interval per node)."""
        check_name(node, "node")
        now = self._mono()
        with self._lock:
            last = self._rebirth_asked.get(node)
            if last is not None and now - last < self.rebirth_request_interval_s:
                return False
        sent = self._publish_direct(
            RebirthRequest.TYPE, RebirthRequest(reason=reason[:256]), self.topics.rebirth(node)
        )
        if sent:
            with self._lock:
                self._rebirth_asked[node] = now
                self._rebirth_asked.move_to_end(node)
                while len(self._rebirth_asked) > self.max_peers:
                    self._rebirth_asked.popitem(last=False)
            self._count("rebirth_requests_sent")
        return sent

    def stats(self) -> dict[str, int | float | bool]:
        """Counters of the link, its inbox, the transport and the outbox (``outbox.*``)."""
        with self._lock:
            out: dict[str, int | float | bool] = dict(self.counters)
            out["peers_tracked"] = len(self._trackers)
            out["bdseq"] = -1 if self._bdseq is None else self._bdseq
        out["online"] = self.online
        out["inbox_depth"] = len(self._inbox)
        out["inbox_dropped"] = self._inbox.dropped
        out["transport_incoming_dropped"] = self.transport.incoming.dropped
        out["transport_events_dropped"] = self.transport.events.dropped
        out["transport_handler_errors"] = self.transport.handler_errors
        for key, value in self.outbox.stats().items():
            out[f"outbox.{key}"] = value
        return out

    # Internals ------------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    @staticmethod
    def _to_birth(birth: Birth | Mapping[str, Any] | None) -> Birth:
        if isinstance(birth, Birth):
            return birth
        if birth is None:
            return Birth(software_version=__version__, profile="unknown", budget_bytes=0)
        try:
            return validate(Birth, birth)
        except msgspec.ValidationError as err:
            raise ProtocolError(f"bad birth: {err}") from err

    def _default_topic(self, msg_type: str, body: Body) -> str:
        node = self.node_id
        simple: dict[str, Callable[[str], str]] = {
            "state": self.topics.node_state,
            "birth": self.topics.birth,
            "death": self.topics.death,
            "telemetry": self.topics.telemetry,
            "health": self.topics.health,
            "learning": self.topics.learning,
            "event": self.topics.event,
            "result": self.topics.command_result,
            "beliefs": self.topics.beliefs,
        }
        if msg_type in simple:
            return simple[msg_type](node)
        if isinstance(body, ActionBatch):
            return self.topics.action(node, body.group)
        raise ProtocolError(f"{msg_type} messages have no default topic; pass topic=")

    def _clock_is_synced(self) -> bool:
        now = self._mono()
        if now >= self._next_clock_check:
            self._next_clock_check = now + self.clock_check_every_s
            self._synced = bool(self._clock_sync_check())
        return self._synced

    def _envelope(self, msg_type: str, body: Body, bdseq: int | None = None) -> Envelope:
        with self._lock:
            seq = self._seq
            self._seq = (seq + 1) % UINT32
            use_bdseq = bdseq if bdseq is not None else (self._bdseq or 0)
            synced = self._clock_is_synced()
        return Envelope(
            type=msg_type,
            node=self.node_id,
            seq=seq,
            bdseq=use_bdseq,
            ts=max(0.0, self._wall()),
            clock_synced=synced,
            body=body,
        )

    def _send_stored(self, topic: str, payload: bytes, retain: bool) -> PublishHandle | None:
        return self.transport.publish(topic, payload, 1, retain)

    def _publish_direct(self, msg_type: str, body: Body, topic: str, retain: bool = False) -> bool:
        """Presence and control messages: sent now or not at all (the next connect redoes them)."""
        payload = encode(self._envelope(msg_type, body), self.max_payload_bytes)
        return self.transport.publish(topic, payload, 1, retain) is not None

    def _publish_birth(self) -> None:
        with self._lock:
            birth = self._birth
            self._rebirth_pending = False
            self._last_birth = self._mono()
        if self._publish_direct(Birth.TYPE, birth, self.topics.birth(self.node_id), retain=True):
            self._count("births_sent")

    def _on_connected(self, session: int) -> None:
        with self._lock:
            current = self._session_bdseq
        if session != self.transport.session or current is None or current[0] != session:
            return  # a stale session: its DISCONNECTED follows
        self._online_session = session
        self.outbox.on_connection_lost()  # a fresh window; unacked rows go again, oldest first
        self._count("connects")
        logger.info("fleet link online (session %d, bdseq %d)", session, current[1])
        self._publish_direct(
            NodeState.TYPE,
            NodeState(online=True),
            self.topics.node_state(self.node_id),
            retain=True,
        )
        self._publish_birth()

    def _make_will(self, session: int) -> Will:
        """Called by the transport before each connection attempt (on its thread)."""
        with self._lock:
            bdseq = 0 if self._bdseq is None else (self._bdseq + 1) % UINT32
            self._save_bdseq(bdseq)
            self._bdseq = bdseq
            self._session_bdseq = (session, bdseq)
        env = self._envelope(NodeState.TYPE, NodeState(online=False), bdseq)
        return Will(self.topics.node_state(self.node_id), encode(env), qos=1, retain=True)

    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _newest_bdseq(self) -> int | None:
        """The newest session number anywhere on disk: the saved one, or one that a message
        still in the outbox carries (sessions whose number could not be saved, e.g. while the
        disk was full, may have left messages there). The next session starts above it."""
        newest = self._load_bdseq()
        for payload in self.outbox.payloads():
            try:
                env = msgspec.msgpack.decode(payload)
            except ValueError:  # msgspec.DecodeError
                continue
            value = env.get("bdseq") if isinstance(env, dict) else None
            if type(value) is int and 0 <= value < UINT32 and (newest is None or value > newest):
                newest = value
        return newest

    def _load_bdseq(self) -> int | None:
        """The persisted bdseq; None (the count restarts) when there is none. A damaged file is
        moved aside; one the storage will not read is left alone."""
        path = self._state_path()
        if not_a_file(path):
            self.faults.move_aside(PART, path, "not a regular file")
            return None
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            self.faults.storage_error(PART, err, f"read {path}")
            return None
        try:
            data = json.loads(text)
        except ValueError as err:
            problem = f"not JSON: {err}"
        else:
            value = data.get("bdseq") if isinstance(data, dict) else None
            if type(value) is int and 0 <= value < UINT32:
                return value
            problem = "no valid bdseq"
        self.faults.move_aside(PART, path, f"{problem}; bdseq restarts")
        return None

    def _save_bdseq(self, bdseq: int) -> None:
        """Write temp, fsync, rename, fsync the directory: the new bdseq survives a crash.

        Never raises: when the storage refuses, the number lives on in memory (the caller
        holds the lock) and :meth:`pump` tries again every ``save_retry_s``."""
        data = json.dumps({"bdseq": bdseq, "node": self.node_id, "fleet": self.fleet}).encode()
        # One length for every number: a full disk can then still take it over the old file.
        data = data.ljust(len(data) + _BDSEQ_DIGITS - len(str(bdseq))) + b"\n"
        path = self._state_path()
        for _ in range(2):
            try:
                write_atomic(path, data, mkdir=True)
            except OSError as err:
                if (
                    not is_storage_error(err)
                    and not_a_file(path)
                    and self.faults.move_aside(PART, path, "not a regular file") is not None
                ):
                    continue  # a directory was in its place: moved aside, write again
                # A full disk refuses the atomic write's new file, not the blocks of the old
                # one: the number is written over it, so the next start is above it anyway.
                # The atomic write is tried again every save_retry_s.
                in_place = is_storage_error(err) and _overwrite_in_place(path, data)
                self._unsaved = True
                self._save_retry_at = self._mono() + self.save_retry_s
                done = " (written over the old file in place)" if in_place else ""
                self.faults.storage_error(PART, err, f"save bdseq {bdseq} to {path}{done}")
                return
            if self._unsaved:
                self._unsaved = False
                self.faults.storage_ok(PART)
            return

    def _on_message(self, msg: Incoming) -> None:
        """Transport thread: decode, validate, route, enqueue. Never raises for bad input."""
        for claim in self._claims:
            if claim(msg):
                return
        try:
            env = decode(msg.payload, self.max_payload_bytes)
        except DecodeError as err:
            self._malformed(err.reason, msg.topic, str(err))
            return
        route = self.topics.parse(msg.topic)
        if route is None:
            self._malformed("topic", msg.topic, "not a topic of this fleet's protocol")
            return
        expected = route.expected_type
        if expected is not None and env.type != expected:
            self._malformed("type_mismatch", msg.topic, f"{env.type} on a {route.kind} topic")
            return
        if route.node_owned and env.node != route.node:
            self._malformed("node_mismatch", msg.topic, f"sent by {env.node}")
            return
        if route.kind == "rebirth":
            if route.node == self.node_id:
                with self._lock:
                    self._rebirth_pending = True
                self._count("rebirths_received")
            return
        verdict: SeqResult | None = None
        if route.node_owned and env.node != self.node_id:
            verdict = self._track(env)
        screen = self.screen
        if screen is not None and not screen(env):
            return
        self._count("received")
        self._inbox.put(Received(msg.topic, route, env, msg.retain, verdict))

    def _track(self, env: Envelope) -> SeqResult:
        with self._lock:
            tracker = self._trackers.get(env.node)
            if tracker is None:
                tracker = self._trackers[env.node] = SeqTracker()
                while len(self._trackers) > self.max_peers:
                    self._trackers.popitem(last=False)
            else:
                self._trackers.move_to_end(env.node)
            result = tracker.observe(env.type, env.bdseq, env.seq)
            if result.verdict == "gap":
                self.counters["seq_gaps"] += 1
            elif result.verdict == "no_birth":
                self.counters["seq_no_birth"] += 1
            if result.needs_rebirth and self.request_rebirth_on_gap:
                self._rebirth_wanted.add(env.node)
        return result

    def _malformed(self, reason: str, topic: str, detail: str) -> None:
        self._count(f"malformed.{reason}")
        logger.debug("dropped malformed message on %s: %s", topic, detail)


_BDSEQ_DIGITS: Final = len(str(UINT32 - 1))
"""The saved JSON is padded with spaces as if its bdseq had this many digits."""


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Write ``data`` over the existing file ``path`` without allocating (a full disk refuses
    the atomic write's new file, not the blocks the old one holds): padded with spaces to the
    old length, which JSON ignores, and synced. False when that fails too."""
    try:
        with path.open("r+b") as fh:
            old = len(fh.read())
            if len(data) > old:
                return False
            fh.seek(0)
            fh.write(data + b" " * (old - len(data)))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        return False
    return True
