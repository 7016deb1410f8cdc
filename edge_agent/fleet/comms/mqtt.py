"""MQTT v5 transport on paho-mqtt 2.x: the only module of edge-agent that imports paho.

Every connection starts with a fresh paho client: message ids of old connections cannot be
confused with new ones (handles carry the connection number), and each gets the will built for it.
What the broker keeps between connections depends on :attr:`MqttSettings.session_expiry_s`:

* 0 (the nodes' choice): ``clean_start=True``, the broker forgets the session at once. A node's
  durability lives in :mod:`edge_agent.fleet.outbox`, so nothing that paho or the broker queued
  for an old session is replayed behind the outbox's back, and what is sent *to* a node while it
  is away (commands, rebirth requests) is re-sent by its sender, which waits for a result;
* > 0 (the hub service's): ``clean_start=False`` with that MQTT 5 Session Expiry Interval and a
  fixed client id, so the broker keeps the session's subscriptions and queues the QoS 1 messages
  that arrive for it while the client is away (killed, restarting, cut off), and re-sends on the
  next connection the ones it delivered without getting a PUBACK. paho sends that PUBACK when the
  message callback returns, so whatever the callback made durable is never lost in between.
  (The transport speaks MQTT 5 only; 3.1.1's ``clean_session False`` has no place here.)

One supervisor thread (``edge-agent-mqtt``) owns the connection cycle:

1. ask the will factory for this session's will, build a paho client, ``connect()`` (TCP, TLS,
   CONNECT), then ``loop_start()``: paho's own thread does all network I/O;
2. wait for CONNACK (``connect_timeout_s``); on success re-apply every subscription, mark the
   transport connected and emit CONNECTED;
3. wait until paho reports the connection lost (or :meth:`MqttTransport.disconnect`), emit
   DISCONNECTED, stop paho's thread;
4. sleep the :class:`~edge_agent.fleet.comms.base.Backoff` delay (exponential, jittered) and start
   over. The back-off is reset only after a session stayed up ``stable_after_s``, so a broker that
   kicks the client right after CONNACK is not hammered.

paho's callbacks only build a small record and enqueue it (or hand it to ``on_message``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.errors import EdgeAgentError, ProtocolError
from edge_agent.fleet.comms.base import (
    Backoff,
    Incoming,
    PublishHandle,
    Subscription,
    Transport,
    TransportEvent,
    TransportEventKind,
    Will,
    WillFactory,
    check_topic,
    reason_text,
)
from edge_agent.fleet.comms.tls_probe import CONFIG_TLS_OPTIONS, TlsOptions, tls_wanted

logger = logging.getLogger(__name__)

_DISCONNECT_NORMAL = 0x00
_DISCONNECT_WITH_WILL = 0x04
_SESSION_EXPIRY_MAX = 2**32 - 1


class _PahoNoise(logging.Filter):
    """paho 2.2 logs an ERROR when its loop runs once more after the socket closed; not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_logger = logging.getLogger(f"{__name__}.paho")
_paho_logger.addFilter(_PahoNoise())


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS towards the broker. ``ca_file`` None uses the system trust store."""

    ca_file: str | None = None
    cert_file: str | None = None
    """Client certificate (PEM) for certificate authentication; needs ``key_file``."""
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class MqttSettings:
    client_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    """Limit for TCP connect + TLS handshake, and again for the CONNACK."""
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    paho_max_inflight: int = 100
    """paho's own window; keep it >= the outbox's ``max_inflight``."""
    session_expiry_s: int = 0
    """0: a clean session per connection; > 0: resume the broker's session, which it keeps for
    this long after a disconnect (MQTT 5 Session Expiry Interval; module docstring)."""

    def __post_init__(self) -> None:
        if not self.client_id or len(self.client_id.encode()) > 256:
            raise EdgeAgentError("MQTT client_id must be 1-256 bytes")
        if not 0 < self.port < 65536:
            raise EdgeAgentError(f"MQTT port {self.port} is out of range")
        if not 0 <= self.session_expiry_s <= _SESSION_EXPIRY_MAX:
            raise EdgeAgentError(
                f"MQTT session_expiry_s {self.session_expiry_s} is out of range "
                f"(0-{_SESSION_EXPIRY_MAX})"
            )
        if self.keepalive_s < 1 or self.connect_timeout_s <= 0:
            raise EdgeAgentError("MQTT keepalive_s must be >= 1 and connect_timeout_s > 0")
        if self.tls and self.tls.cert_file and not self.tls.key_file:
            raise EdgeAgentError("MQTT TLS client certificate given without key_file")


@dataclass
class _Session:
    """What paho's callbacks of one session report to the supervisor."""

    number: int
    wake: threading.Event
    connack: bool = False
    accepted: bool = False
    resumed: bool = False
    """The broker still had this client's session (CONNACK Session Present)."""
    lost: bool = False
    reason: str = ""
    detail: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Guards the two maps below (paho's thread answers while another one subscribes)."""
    subscribing: dict[int, str] = field(default_factory=dict)
    """SUBSCRIBEs without their SUBACK yet: message id -> topic filter."""
    early: dict[int, list[int]] = field(default_factory=dict)
    """SUBACKs that arrived before their SUBSCRIBE's message id was known: id -> codes."""


class MqttTransport(Transport):
    """:class:`~edge_agent.fleet.comms.base.Transport` over a real MQTT v5 broker."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        backoff: Backoff | None = None,
        max_incoming: int = 1000,
        max_events: int = 10_000,
        tls_options: TlsOptions | None = CONFIG_TLS_OPTIONS,
        log_failures: bool = True,
    ) -> None:
        """``tls_options``: how this client's user gives it TLS, for the one warning logged when
        a plain connection fails and the broker's port wants TLS (:attr:`tls_wanted`); None: no
        warning, the caller reads :attr:`tls_wanted` and says it its way. ``log_failures``
        False: an attempt that fails (no TCP connection, a refused or missing CONNACK) is
        logged at DEBUG, not WARNING, for a caller that says it once its way from
        :attr:`connect_error`, :attr:`last_refusal` and :attr:`tls_wanted` (a command line's
        one error, instead of a warning per attempt)."""
        super().__init__(max_incoming=max_incoming, max_events=max_events)
        self.settings = settings
        self.tls_options = tls_options
        self._failure_level = logging.WARNING if log_failures else logging.DEBUG
        self._tls_probed = False
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._state: _Session | None = None  # the connected session's, with _client
        self._connected = False
        self._session = 0
        self._will_factory: WillFactory | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish_will_on_stop = False
        self.connect_attempts = 0
        self.sessions_up = 0
        self.sessions_resumed = 0
        """Connections on which the broker still had the session (``session_expiry_s`` > 0)."""

    # Transport API --------------------------------------------------------------------------
    def connect(self, will_factory: WillFactory | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._will_factory = will_factory
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edge-agent-mqtt", daemon=True)
        self._thread.start()

    def disconnect(self, *, publish_will: bool = False, timeout_s: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._publish_will_on_stop = publish_will
        self._stop.set()
        self._wake.set()
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("MQTT supervisor did not stop within %.1f s", timeout_s)
        else:
            self._thread = None

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle | None:
        check_topic(topic, pattern=False)
        if qos not in (0, 1):
            raise ProtocolError(f"qos {qos} is not supported, use 0 or 1")
        with self._lock:
            client = self._client if self._connected else None
            session = self._session
        if client is None:
            return None
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as err:
            raise ProtocolError(f"paho refused the publish on {topic!r}: {err}") from err
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return PublishHandle(session, info.mid)

    @property
    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def session(self) -> int:
        with self._lock:
            return self._session

    def _apply_subscription(self, sub: Subscription) -> None:
        with self._lock:  # the session's client, set before its subscriptions are sent
            client = self._client
            state = self._state
        if client is not None and state is not None:
            self._send_subscribe(client, state, sub)

    def _apply_unsubscribe(self, pattern: str) -> None:
        with self._lock:
            client = self._client
        if client is not None:
            rc, _mid = client.unsubscribe(pattern)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                logger.warning("MQTT unsubscribe from %s failed: %s", pattern, rc)

    # Supervisor -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                up_for = self._one_session()
            except EdgeAgentError as err:  # e.g. a TLS file that vanished: one line, no traceback
                logger.error("MQTT session to %s failed: %s", self._where(), err)
                up_for = 0.0
            except Exception:  # the supervisor loop's boundary: log, back off, retry
                logger.exception("MQTT session to %s failed", self._where())
                up_for = 0.0
            if self._stop.is_set():
                break
            if up_for >= self.backoff.stable_after_s:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            logger.info("MQTT reconnecting to %s in %.2f s", self._where(), delay)
            self._stop.wait(delay)

    def _one_session(self) -> float:
        """Run one connection session; return how long it was up (0 if it never was)."""
        with self._lock:
            self._session += 1
            number = self._session
        self._wake.clear()
        state = _Session(number, self._wake)
        will = self._will_factory(number) if self._will_factory is not None else None
        client = self._new_client(state, will)
        self.connect_attempts += 1
        expiry = self.settings.session_expiry_s
        properties = None
        if expiry:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = expiry
        try:
            client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=not expiry,
                properties=properties,
            )
        except (OSError, ValueError) as err:
            logger.log(self._failure_level, "MQTT connect to %s failed: %s", self._where(), err)
            if isinstance(err, OSError):
                self.connect_error = err
            if isinstance(err, ConnectionResetError):
                self._probe_tls()
            return 0.0
        self.connect_error = None  # the broker's host and port answered
        client.loop_start()
        connected_at = 0.0
        try:
            deadline = time.monotonic() + self.settings.connect_timeout_s
            while not (state.connack or state.lost or self._stop.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.log(self._failure_level, "MQTT: no CONNACK from %s in time",
                               self._where())  # fmt: skip
                    return 0.0
                self._wake.wait(remaining)
                self._wake.clear()
            if not state.accepted or state.lost or self._stop.is_set():
                if state.connack and not state.accepted:
                    self.last_refusal = state.reason
                    logger.log(self._failure_level, "MQTT broker %s refused: %s",
                               self._where(), state.reason)  # fmt: skip
                elif state.lost and not self._stop.is_set():  # closed before any CONNACK
                    self._probe_tls()
                return 0.0
            with self._lock:  # from here a subscribe() is sent at once (_apply_subscription)
                self._client = client
                self._state = state
            self.last_refusal = ""
            for sub in self.subscriptions():
                self._send_subscribe(client, state, sub)
            connected_at = time.monotonic()
            self.sessions_up += 1
            self.sessions_resumed += state.resumed
            logger.info(
                "MQTT connected to %s (session %d%s)",
                self._where(),
                number,
                ", the broker's session resumed" if state.resumed else "",
            )
            with self._lock:  # one step: whoever sees is_connected finds CONNECTED queued
                self._connected = True
                self._emit(TransportEvent(TransportEventKind.CONNECTED, number))
            while not (state.lost or self._stop.is_set()):
                self._wake.wait()
                self._wake.clear()
            return time.monotonic() - connected_at
        finally:
            self._end_session(client, state, was_up=connected_at > 0)

    def _end_session(self, client: paho.Client, state: _Session, *, was_up: bool) -> None:
        with self._lock:
            self._connected = False
            self._client = None
            self._state = None
        if not state.lost:
            if state.accepted or not state.connack:  # a refused CONNACK: paho closes by itself
                code = _DISCONNECT_WITH_WILL if self._publish_will_on_stop else _DISCONNECT_NORMAL
                client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=code))
            deadline = time.monotonic() + 2.0
            while not state.lost and time.monotonic() < deadline:
                self._wake.wait(0.05)
                self._wake.clear()
        client.loop_stop()
        if was_up:
            level = logging.WARNING if state.reason.startswith("0x") else logging.INFO
            logger.log(level, "MQTT session %d ended: %s", state.number, state.reason or "closed")
            self._emit(
                TransportEvent(
                    TransportEventKind.DISCONNECTED, state.number, detail=state.reason or "closed"
                )
            )

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _probe_tls(self) -> None:
        """Once, when a plain connection was closed before the broker answered: does the
        broker's port want TLS? (:mod:`~edge_agent.fleet.comms.tls_probe`)."""
        if self._tls_probed or self.settings.tls is not None:
            return
        self._tls_probed = True
        s = self.settings
        wanted = tls_wanted(s.host, s.port, min(3.0, s.connect_timeout_s))
        if not wanted:
            return
        self.tls_wanted = wanted
        if self.tls_options is not None:
            logger.warning(
                "MQTT broker %s wants %s, and this client has no TLS settings: %s",
                self._where(),
                wanted,
                self.tls_options.advice(wanted),
            )

    def _new_client(self, state: _Session, will: Will | None) -> paho.Client:
        s = self.settings
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = s.connect_timeout_s
        client.max_inflight_messages_set(s.paho_max_inflight)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(tls_context(s.tls))
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.enable_logger(_paho_logger)
        self._bind_callbacks(client, state)
        return client

    def _bind_callbacks(self, client: paho.Client, state: _Session) -> None:
        # Each session's callbacks close over that session's record: a late callback of an old
        # client can never touch the current session.
        def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _props: Any) -> None:
            state.connack = True
            state.accepted = not reason.is_failure
            state.resumed = state.accepted and bool(getattr(flags, "session_present", False))
            state.reason = _reason(reason)
            state.wake.set()

        def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            state.lost = True
            if not state.reason or state.accepted:
                state.reason = _reason(reason)
            state.wake.set()

        def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
            code = int(getattr(reason, "value", 0))
            handle = PublishHandle(state.number, mid)
            self._emit(TransportEvent(TransportEventKind.ACK, state.number, handle, code))

        def on_subscribe(_c: Any, _u: Any, mid: int, reasons: Any, _props: Any) -> None:
            codes = [int(getattr(r, "value", r)) for r in reasons]
            with state.lock:
                pattern = state.subscribing.pop(mid, None)
                if pattern is None:  # the SUBSCRIBE's id is not stored yet: it will be
                    state.early[mid] = codes
                    return
            self._subscribed(state, pattern, codes)

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            try:
                incoming = Incoming(
                    msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), state.number
                )
            except (UnicodeDecodeError, ValueError, TypeError):
                self.handler_errors += 1
                logger.warning("MQTT: dropped a message with an undecodable topic")
                return
            self._deliver(incoming)

        client.on_connect = on_connect
        client.on_socket_open = _no_delay
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    def _send_subscribe(self, client: paho.Client, state: _Session, sub: Subscription) -> None:
        options = SubscribeOptions(qos=sub.qos, noLocal=sub.no_local)
        rc, mid = client.subscribe(sub.pattern, options=options)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            logger.warning("MQTT subscribe to %s failed: %s", sub.pattern, rc)
            return
        with state.lock:
            codes = state.early.pop(mid, None)
            if codes is None:
                state.subscribing[mid] = sub.pattern
        if codes is not None:
            self._subscribed(state, sub.pattern, codes)

    def _subscribed(self, state: _Session, pattern: str, codes: list[int]) -> None:
        """A SUBACK for ``pattern``: a refusal (a code >= 0x80) is an event, said by name."""
        refused = [code for code in codes if code >= 0x80]
        if refused:
            logger.warning(
                "MQTT: the broker refused the subscription to %s: %s",
                pattern,
                reason_text(refused[0]),
            )
            self._emit(
                TransportEvent(
                    TransportEventKind.SUBSCRIPTION_REFUSED,
                    state.number,
                    reason_code=refused[0],
                    detail=pattern,
                )
            )


def _reason(reason: Any) -> str:
    """A CONNACK's or DISCONNECT's reason as logs give it: ``0x87 not authorized`` (a failure;
    paho says "Unspecified error" for a connection that just broke), its name otherwise."""
    value = getattr(reason, "value", None)
    if isinstance(value, int) and value >= 0x80:
        return reason_text(value)
    return str(reason)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """The client's TLS context; a file that cannot be read or loaded is an EdgeAgentError
    naming it (ssl's own errors do not)."""
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except OSError as err:
                raise EdgeAgentError(
                    f"MQTT TLS setup failed: {key} {path}: cannot read: {err.strerror or err}"
                ) from err
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise EdgeAgentError(
            f"MQTT TLS setup failed (ca_file {tls.ca_file}, cert_file {tls.cert_file}, "
            f"key_file {tls.key_file}): {err}"
        ) from err
    return ctx


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Disable Nagle's algorithm: small MQTT packets (a PUBACK, a command result) otherwise wait
    up to ~40 ms for a delayed ACK; measured round trip 88 ms -> 0.8 ms on loopback."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (e.g. a proxy or websocket wrapper)
        logger.debug("MQTT: TCP_NODELAY not applicable to %r", sock)
