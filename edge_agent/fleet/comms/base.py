"""The publish/subscribe interface the rest of the daemon talks to.

A :class:`Transport` connects by itself (and reconnects, with :class:`Backoff`) once
:meth:`Transport.connect` was called, re-applies every subscription on every connect, and reports
what happens through two bounded, thread-safe queues that the daemon drains between ticks:

- ``events``: :class:`TransportEvent` -- CONNECTED, DISCONNECTED, ACK (PUBACK of a QoS 1
  publish, with its reason code) and SUBSCRIPTION_REFUSED (a SUBACK that refuses a filter, with
  the filter and the broker's reason code: a broker whose ACL denies reading it; mosquitto 2.0
  grants such a subscription and delivers nothing instead);
- ``incoming``: :class:`Incoming` messages, unless an ``on_message`` handler is set, in which case
  that handler is called on the transport's thread instead. A handler must only decode, validate
  and enqueue; an exception from it is logged and counted, never raised into the transport.

Neither queue blocks: when one is full the newest item is dropped and counted.
Implementations: :mod:`edge_agent.fleet.comms.mqtt` (paho, the only module importing it) and
:mod:`edge_agent.fleet.comms.memory` (an in-memory twin for unit tests).
"""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Generic, TypeVar

from edge_agent.errors import ProtocolError

logger = logging.getLogger(__name__)

MAX_TOPIC_BYTES: Final = 1024


T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """A thread-safe FIFO that never blocks: ``put`` on a full queue drops the new item."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize is {maxsize}, expected >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        """Items refused because the queue was full."""

    def put(self, item: T) -> bool:
        """Append ``item``; False (and ``dropped`` + 1) when full."""
        with self._lock:
            if len(self._items) >= self.maxsize:
                self.dropped += 1
                return False
            self._items.append(item)
            return True

    def get(self) -> T | None:
        """The oldest item, or None when empty."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def drain(self, max_items: int | None = None) -> list[T]:
        """Remove and return up to ``max_items`` (all when None), oldest first."""
        with self._lock:
            n = len(self._items) if max_items is None else min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class TransportEventKind(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ACK = "ack"
    SUBSCRIPTION_REFUSED = "subscription_refused"


@dataclass(frozen=True, slots=True)
class PublishHandle:
    """Identifies one QoS 1 publish until its ACK: MQTT message ids repeat across sessions."""

    session: int
    mid: int


REASON_NAMES: Final = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}
"""MQTT 5 reason codes (the standard's table, section 2.4) by number, as logs name them."""


def reason_text(code: int) -> str:
    """``0x87 not authorized``: a broker's reason code, by number and name, for a log line."""
    return f"0x{code:02x} {REASON_NAMES.get(code, 'unknown reason')}"


@dataclass(frozen=True, slots=True)
class TransportEvent:
    kind: TransportEventKind
    session: int
    handle: PublishHandle | None = None
    reason_code: int = 0
    """For ACK: the PUBACK reason code (0 success, 0x10 no subscribers, >= 0x80 refused); for
    SUBSCRIPTION_REFUSED the SUBACK's (>= 0x80)."""
    detail: str = ""
    """For DISCONNECTED: why; for SUBSCRIPTION_REFUSED: the topic filter refused."""


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    session: int


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the connection dies without a clean DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


WillFactory = Callable[[int], Will]
"""Called with the session number before every connection attempt; returns that session's will."""


@dataclass(frozen=True, slots=True)
class Subscription:
    pattern: str
    qos: int = 1
    no_local: bool = True
    """MQTT v5 No Local: do not receive our own publications on this pattern."""


def check_topic(topic: str, *, pattern: bool) -> str:
    """Validate an MQTT topic name (``pattern=False``) or filter; :class:`ProtocolError` if bad."""
    if not topic or len(topic.encode()) > MAX_TOPIC_BYTES or "\x00" in topic:
        raise ProtocolError(f"topic {topic!r} is empty, too long or contains NUL")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if not pattern and ("+" in level or "#" in level):
            raise ProtocolError(f"topic name {topic!r} may not contain wildcards")
        if pattern and "#" in level and (level != "#" or i != len(levels) - 1):
            raise ProtocolError(f"in {topic!r}, '#' must be a whole last level")
        if pattern and "+" in level and level != "+":
            raise ProtocolError(f"in {topic!r}, '+' must be a whole level")
    return topic


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching, including the rule that wildcards do not match ``$`` topics."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p not in ("+", t_levels[i]):
            return False
    return len(p_levels) == len(t_levels)


@dataclass
class Backoff:
    """Exponential back-off with jitter for reconnects.

    Attempt ``n`` (0-based) waits ``min(max_s, initial_s * multiplier**n) * (1 - jitter * U)``
    with ``U`` uniform in [0, 1). ``reset()`` is called by a transport only after a connection
    stayed up for ``stable_after_s``: a broker that accepts and then drops the client at once
    (bad ACL, session takeover loop) still sees the delay grow.
    """

    initial_s: float = 0.5
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5
    stable_after_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1 or self.stable_after_s < 0:
            raise ValueError("need multiplier >= 1, 0 <= jitter <= 1, stable_after_s >= 0")

    def next_delay(self) -> float:
        exponent = min(self.attempts, 64)
        base = min(self.max_s, self.initial_s * self.multiplier**exponent)
        self.attempts += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0


class Transport(ABC):
    """Connection to the message broker (or its in-memory twin)."""

    def __init__(self, *, max_incoming: int = 1000, max_events: int = 10_000) -> None:
        self.incoming: BoundedQueue[Incoming] = BoundedQueue(max_incoming)
        self.events: BoundedQueue[TransportEvent] = BoundedQueue(max_events)
        self.on_message: Callable[[Incoming], None] | None = None
        self.handler_errors = 0
        self.last_refusal = ""
        """The broker's reason for refusing the last connection attempt (``0x87 not
        authorized``, from its CONNACK); empty before any and once one was accepted."""
        self.tls_wanted = ""
        """What the broker wants that this client, without TLS settings, does not give (``TLS``,
        ``TLS with a client certificate``: :mod:`~edge_agent.fleet.comms.tls_probe`); empty
        unless a plain connection failed and the broker's port answered TLS."""
        self.connect_error: OSError | None = None
        """Why the last connection attempt reached no broker (a ``ConnectionRefusedError``:
        nothing listens on the port; a ``socket.gaierror``: the host name does not resolve;
        ...); None before any attempt and once one reached the broker's port."""
        self._subs: dict[str, Subscription] = {}
        self._subs_lock = threading.Lock()

    # Subscriptions are remembered and re-applied on every connect.
    def subscribe(self, pattern: str, qos: int = 1, *, no_local: bool = True) -> None:
        if qos not in (0, 1):
            raise ProtocolError(f"qos {qos} is not supported, use 0 or 1")
        sub = Subscription(check_topic(pattern, pattern=True), qos, no_local)
        with self._subs_lock:
            self._subs[pattern] = sub
        self._apply_subscription(sub)

    def unsubscribe(self, pattern: str) -> None:
        """Forget a subscription: now if connected, and it is not applied on reconnect."""
        with self._subs_lock:
            known = self._subs.pop(pattern, None) is not None
        if known:
            self._apply_unsubscribe(pattern)

    def subscriptions(self) -> list[Subscription]:
        with self._subs_lock:
            return list(self._subs.values())

    @abstractmethod
    def _apply_subscription(self, sub: Subscription) -> None:
        """Send one subscription now if connected; otherwise it is applied on connect."""

    @abstractmethod
    def _apply_unsubscribe(self, pattern: str) -> None:
        """Send one unsubscription now if connected."""

    @abstractmethod
    def connect(self, will_factory: WillFactory | None = None) -> None:
        """Start connecting and stay connected (reconnecting) until :meth:`disconnect`.

        Returns at once; CONNECTED arrives on ``events``.
        """

    @abstractmethod
    def disconnect(self, *, publish_will: bool = False, timeout_s: float = 5.0) -> None:
        """Close the connection and stop reconnecting.

        With ``publish_will`` the broker publishes the will anyway (MQTT v5 reason code 0x04),
        so a clean stop and a crash leave the same retained state behind.
        """

    @abstractmethod
    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle | None:
        """Send now if connected; None when not (nothing is queued inside the transport)."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @property
    @abstractmethod
    def session(self) -> int:
        """Number of the current (or last) connection session, 0 before the first."""

    # For implementations ---------------------------------------------------------------
    def _deliver(self, message: Incoming) -> None:
        handler = self.on_message
        if handler is None:
            self.incoming.put(message)
            return
        try:
            handler(message)
        except Exception:  # the handler's loop boundary: never raise into the network thread
            self.handler_errors += 1
            logger.exception("message handler failed on %s", message.topic)

    def _emit(self, event: TransportEvent) -> None:
        if not self.events.put(event):
            logger.warning("transport event queue full, dropped %s", event.kind.value)
