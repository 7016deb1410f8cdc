"""An in-memory broker and transport: the MQTT behaviour unit tests rely on, without sockets.

:class:`MemoryBroker` keeps subscriptions (with MQTT wildcard matching and No Local), retained
messages and wills, and can be stopped and started (a broker outage: clients drop without their
wills being published, retained messages are lost as with persistence off), can kick a client (its
will is published, as after a keepalive timeout), and can hold PUBACKs back (``hold_acks``) to
simulate acknowledgements lost with the connection. Delivery is synchronous on the caller's thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edge_agent.errors import ProtocolError
from edge_agent.fleet.comms.base import (
    Incoming,
    PublishHandle,
    Subscription,
    Transport,
    TransportEvent,
    TransportEventKind,
    Will,
    WillFactory,
    check_topic,
    topic_matches,
)

PUBACK_SUCCESS = 0
PUBACK_NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass(frozen=True, slots=True)
class _Retained:
    payload: bytes
    qos: int


class MemoryBroker:
    """A single-process MQTT broker twin shared by :class:`MemoryTransport` clients."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._clients: dict[str, MemoryTransport] = {}
        self._retained: dict[str, _Retained] = {}
        self._held: list[tuple[MemoryTransport, TransportEvent]] = []
        self._known: list[MemoryTransport] = []
        self.running = True
        self.hold_acks = False
        self.published: list[tuple[str, bytes, int, bool]] = []
        """Every message the broker accepted, in order (for assertions)."""
        self.ack_reason_code = PUBACK_SUCCESS
        """Reason code the next PUBACKs carry (e.g. 0x87 to simulate an ACL refusal)."""
        self.refused: dict[str, int] = {}
        """An ACL: topic filter -> the reason code (0x87) a SUBSCRIBE of that very filter and a
        QoS 1 publish on a topic it matches are answered with; neither goes through."""

    # Broker life ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Crash the broker: every client is dropped, no will is published, state is lost."""
        with self._lock:
            self.running = False
            clients = list(self._clients.values())
            self._clients.clear()
            self._retained.clear()
            self._held.clear()
        for client in clients:
            client._lost("broker stopped")

    def start(self) -> None:
        """Start again; clients that want a connection reconnect at once."""
        with self._lock:
            self.running = True
            waiting = [c for c in self._known if c._wants_connection]
        for client in waiting:
            client._try_connect()

    def kick(self, client_id: str, *, publish_will: bool = True) -> None:
        """Drop one client as after a keepalive timeout; its will is published."""
        with self._lock:
            client = self._clients.pop(client_id, None)
            self._held = [(c, e) for c, e in self._held if c is not client]
        if client is None:
            return
        will = client._will
        client._lost("kicked by broker")
        if publish_will and will is not None:
            self._route(None, will.topic, will.payload, will.qos, will.retain)

    def release_acks(self) -> None:
        """Deliver the PUBACKs held back while ``hold_acks`` was set."""
        with self._lock:
            held, self._held = self._held, []
        for client, event in held:
            if client._session_alive(event.session):
                client._emit(event)

    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            item = self._retained.get(topic)
            return None if item is None else item.payload

    def connected_clients(self) -> list[str]:
        with self._lock:
            return sorted(self._clients)

    # For MemoryTransport --------------------------------------------------------------------
    def _register(self, client: MemoryTransport) -> None:
        with self._lock:
            self._known.append(client)

    def _attach(self, client: MemoryTransport) -> bool:
        with self._lock:
            if not self.running:
                return False
            old = self._clients.get(client.client_id)
            self._clients[client.client_id] = client
        if old is not None and old is not client:
            # Session takeover: the old connection dies and its will is published.
            will = old._will
            old._lost("session taken over")
            if will is not None:
                self._route(None, will.topic, will.payload, will.qos, will.retain)
        return True

    def _detach(self, client: MemoryTransport, *, publish_will: bool) -> None:
        with self._lock:
            if self._clients.get(client.client_id) is not client:
                return
            del self._clients[client.client_id]
            self._held = [(c, e) for c, e in self._held if c is not client]
        will = client._will
        if publish_will and will is not None:
            self._route(None, will.topic, will.payload, will.qos, will.retain)

    def _publish(
        self, sender: MemoryTransport, topic: str, payload: bytes, qos: int, retain: bool
    ) -> int:
        with self._lock:
            refused = [code for f, code in self.refused.items() if topic_matches(f, topic)]
        if refused:
            return refused[0]
        matched = self._route(sender, topic, payload, qos, retain)
        if self.ack_reason_code != PUBACK_SUCCESS:
            return self.ack_reason_code
        return PUBACK_SUCCESS if matched else PUBACK_NO_MATCHING_SUBSCRIBERS

    def _route(
        self, sender: MemoryTransport | None, topic: str, payload: bytes, qos: int, retain: bool
    ) -> bool:
        with self._lock:
            if not self.running:
                return False
            self.published.append((topic, payload, qos, retain))
            if retain:
                if payload:
                    self._retained[topic] = _Retained(payload, qos)
                else:
                    self._retained.pop(topic, None)
            targets: list[tuple[MemoryTransport, int]] = []
            for client in self._clients.values():
                for sub in client.subscriptions():
                    if topic_matches(sub.pattern, topic) and not (
                        sub.no_local and client is sender
                    ):
                        targets.append((client, min(qos, sub.qos)))
                        break
        for client, granted in targets:
            client._deliver(Incoming(topic, payload, granted, False, client.session))
        return bool(targets)

    def _subscribe(self, client: MemoryTransport, sub: Subscription) -> None:
        """A SUBSCRIBE: refused by :attr:`refused` (the client hears why), else the retained
        messages it matches are delivered."""
        with self._lock:
            code = self.refused.get(sub.pattern)
        if code is not None:
            client._emit(
                TransportEvent(
                    TransportEventKind.SUBSCRIPTION_REFUSED,
                    client.session,
                    reason_code=code,
                    detail=sub.pattern,
                )
            )
            return
        self._send_retained(client, sub)

    def _send_retained(self, client: MemoryTransport, sub: Subscription) -> None:
        with self._lock:
            matches = [
                (topic, item)
                for topic, item in self._retained.items()
                if topic_matches(sub.pattern, topic)
            ]
        for topic, item in matches:
            client._deliver(Incoming(topic, item.payload, min(item.qos, sub.qos), True, 0))

    def _ack(self, client: MemoryTransport, event: TransportEvent) -> None:
        with self._lock:
            if self.hold_acks:
                self._held.append((client, event))
                return
        client._emit(event)


class MemoryTransport(Transport):
    """A :class:`Transport` attached to a :class:`MemoryBroker`."""

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        *,
        max_incoming: int = 1000,
        max_events: int = 10_000,
    ) -> None:
        super().__init__(max_incoming=max_incoming, max_events=max_events)
        self.broker = broker
        self.client_id = client_id
        self._state_lock = threading.RLock()
        self._session = 0
        self._connected = False
        self._wants_connection = False
        self._will_factory: WillFactory | None = None
        self._will: Will | None = None
        self._mid = 0
        self.connect_attempts = 0
        broker._register(self)

    # Transport API --------------------------------------------------------------------------
    def connect(self, will_factory: WillFactory | None = None) -> None:
        with self._state_lock:
            self._will_factory = will_factory
            self._wants_connection = True
            if self._connected:
                return
        self._try_connect()

    def disconnect(self, *, publish_will: bool = False, timeout_s: float = 5.0) -> None:
        with self._state_lock:
            self._wants_connection = False
            was_connected = self._connected
            self._connected = False
            session = self._session
        if was_connected:
            self.broker._detach(self, publish_will=publish_will)
            self._emit(TransportEvent(TransportEventKind.DISCONNECTED, session, detail="closed"))

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle | None:
        check_topic(topic, pattern=False)
        if qos not in (0, 1):
            raise ProtocolError(f"qos {qos} is not supported, use 0 or 1")
        with self._state_lock:
            if not self._connected:
                return None
            self._mid = self._mid % 65535 + 1
            handle = PublishHandle(self._session, self._mid)
        reason = self.broker._publish(self, topic, bytes(payload), qos, retain)
        if qos == 1:
            self.broker._ack(
                self, TransportEvent(TransportEventKind.ACK, handle.session, handle, reason)
            )
        return handle

    @property
    def is_connected(self) -> bool:
        with self._state_lock:
            return self._connected

    @property
    def session(self) -> int:
        with self._state_lock:
            return self._session

    def _apply_subscription(self, sub: Subscription) -> None:
        if self.is_connected:
            self.broker._subscribe(self, sub)

    def _apply_unsubscribe(self, pattern: str) -> None:
        del pattern  # the broker matches against subscriptions(), which no longer has it

    # Broker side ----------------------------------------------------------------------------
    def _try_connect(self) -> None:
        with self._state_lock:
            if self._connected or not self._wants_connection:
                return
            self.connect_attempts += 1
            session = self._session + 1
            self._session = session
            self._will = self._will_factory(session) if self._will_factory else None
            if not self.broker._attach(self):
                return
            self._connected = True
            self._mid = 0
        for sub in self.subscriptions():
            self.broker._subscribe(self, sub)
        self._emit(TransportEvent(TransportEventKind.CONNECTED, session))

    def _lost(self, detail: str) -> None:
        with self._state_lock:
            if not self._connected:
                return
            self._connected = False
            session = self._session
        self._emit(TransportEvent(TransportEventKind.DISCONNECTED, session, detail=detail))

    def _session_alive(self, session: int) -> bool:
        with self._state_lock:
            return self._connected and self._session == session
