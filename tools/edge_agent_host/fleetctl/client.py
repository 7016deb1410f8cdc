"""The operator's MQTT client of the fleet: the broker link, the registry of what every node
said, signed commands.

:class:`FleetClient` hears the whole fleet, keeps a
:class:`~edge_agent_host.fleetctl.views.NodeView` per node (asking a node for a rebirth on a
sequence gap), signs and sends commands and waits for their results; :meth:`FleetClient.deploy`
hands a bundle to the driver in :mod:`edge_agent_host.fleet.transfer`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.signing import key_id
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.comms.base import PublishHandle, Transport, TransportEventKind, reason_text
from edge_agent.fleet.comms.tls_probe import TlsOptions
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import (
    Birth,
    BundleChunk,
    Command,
    CommandResult,
    Death,
    DecodeError,
    Envelope,
    Event,
    NodeState,
    RebirthRequest,
    Telemetry,
    clock_synced,
    decode,
    encode,
)
from edge_agent.fleet.topics import TopicKind, Topics
from edge_agent_host.fleet.commands import new_command
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.transfer import (
    DEFAULT_CHUNK_BYTES,
    BroadcastStats,
    DeployPlan,
    broadcast_bundle,
    deploy_bundle,
)
from edge_agent_host.fleetctl.store import FleetStore
from edge_agent_host.fleetctl.views import FleetMessage, NodeView

__all__ = ["DUPLICATE_GRACE_S", "LIBRARY_TLS_OPTIONS", "FleetClient"]

#: How long a result marked a duplicate waits for the command's own answer (wait_result).
DUPLICATE_GRACE_S = 2.0
_MAX_AWAITING_ACK = 100_000
LIBRARY_TLS_OPTIONS = TlsOptions("ca_file", "cert_file", "key_file")
"""The TLS arguments by :class:`FleetClient`'s own names (the command line gives its options')."""
CLOSE_ACK_TIMEOUT_S = 5.0
"""How long :meth:`FleetClient.close` waits for the broker's acknowledgements of what was sent."""

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- client
class FleetClient:
    """An MQTT client that sees the whole fleet, signs commands and deploys bundles."""

    def __init__(
        self,
        *,
        fleet: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        hub_id: str = "hub",
        key: Ed25519PrivateKey | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        store: FleetStore | None = None,
        rebirth_interval_s: float = 10.0,
        transport: Transport | None = None,
        tls_options: TlsOptions = LIBRARY_TLS_OPTIONS,
    ) -> None:
        """TLS when ``ca_file`` or ``cert_file`` is given (``ca_file`` None: the system's CAs);
        ``cert_file`` and ``key_file`` (PEM) are the hub's client certificate for mutual TLS,
        read here (:class:`FleetError` naming one that cannot be). ``tls_options``: the names
        the caller's user gives those by, for :meth:`connect`'s error when the broker wants TLS
        and none was given."""
        if (cert_file is None) != (key_file is None):
            raise FleetError("a client certificate needs both cert_file and key_file")
        self.topics = Topics(fleet)
        self.broker = f"{host}:{port}"
        self.tls_options = tls_options
        self.fleet = fleet
        self.hub_id = hub_id
        self.key = key
        self.key_id = key_id(key.public_key()) if key is not None else ""
        self.store = store
        self.rebirth_interval_s = rebirth_interval_s
        self.nodes: dict[str, NodeView] = {}
        self.results: dict[bytes, list[CommandResult]] = {}
        self.malformed = 0
        self.bytes_published = 0  # payload bytes the hub handed to the broker
        self.messages_published = 0
        self._seq = 0
        self._sent: set[bytes] = set()
        self._awaiting_ack: OrderedDict[PublishHandle, str] = OrderedDict()
        self._rebirth_asked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._body_handlers: dict[type, Callable[[Envelope, Any, bool], None]] = {
            NodeState: self._on_state,
            Birth: self._on_birth,
            Death: self._on_death,
            Telemetry: self._on_telemetry,
            Event: self._on_event,
            CommandResult: self._on_result,
        }
        if transport is None:
            # paho is imported only when a hub actually connects.
            from edge_agent.fleet.comms.base import Backoff  # noqa: PLC0415
            from edge_agent.fleet.comms.mqtt import (  # noqa: PLC0415
                MqttSettings,
                MqttTransport,
                TlsSettings,
                tls_context,
            )

            tls = (
                TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
                if ca_file or cert_file
                else None
            )
            if tls is not None:  # a file that cannot be read is one error now, not at each try
                try:
                    tls_context(tls)
                except EdgeAgentError as err:
                    raise FleetError(str(err)) from err
            settings = MqttSettings(
                client_id=f"ea-hub-{fleet}-{os.urandom(4).hex()}",
                host=host,
                port=port,
                username=username,
                password=password,
                tls=tls,
                connect_timeout_s=5.0,
            )
            transport = MqttTransport(
                settings,
                backoff=Backoff(initial_s=0.1, max_s=2.0, stable_after_s=2.0),
                max_incoming=100_000,
                tls_options=None,  # connect() raises it as one error instead
                log_failures=False,  # ... and each attempt's failure (a warning every 0.1-2 s)
            )
        self.transport = transport
        self.transport.subscribe(self.topics.fleet_all(), 1)

    # Connection -------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and wait until the broker accepted us; :class:`FleetError` if it does not, in
        one line: at once when nothing listens on the broker's port (the host and port to
        check) or the broker wants TLS and this client has none (what to give, by the names of
        ``tls_options``); else after ``timeout_s``, with the broker's refusal or the last
        attempt's error."""
        self.transport.connect()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.transport.is_connected:
                return
            wanted = self.transport.tls_wanted
            if wanted:
                self.transport.disconnect()
                raise FleetError(
                    f"broker {self.broker} wants {wanted}: {self.tls_options.advice(wanted)}"
                )
            if isinstance(self.transport.connect_error, ConnectionRefusedError):
                self.transport.disconnect()
                raise FleetError(
                    f"nothing listens on {self.broker} (connection refused): is the broker "
                    "running on that host, and listening on that port?"
                )
            time.sleep(0.02)
        refusal = self.transport.last_refusal
        error = self.transport.connect_error
        self.transport.disconnect()
        because = (
            f": the broker refused it: {refusal}"
            if refusal
            else f": {error.strerror or error}" if error is not None else ""
        )
        raise FleetError(
            f"no connection to the broker {self.broker} within {timeout_s:g} s{because}"
        )

    def close(self, ack_timeout_s: float = CLOSE_ACK_TIMEOUT_S) -> None:
        """Disconnect, once the broker acknowledged what this client published (waiting up to
        ``ack_timeout_s``): a client that hangs up right after a QoS 1 publish can lose it and
        the messages after it, because mosquitto drops a connection whose PUBACK it cannot send
        together with the packets it has not read yet."""
        try:
            if self.transport.is_connected and not self.wait_acknowledged(ack_timeout_s):
                logger.warning(
                    "closing with %d message(s) the broker has not acknowledged in %g s",
                    len(self._awaiting_ack),
                    ack_timeout_s,
                )
        except FleetError as err:  # a refusal the caller did not poll for: said, not raised
            logger.warning("%s", err)
        finally:
            self.transport.disconnect()
            if self.store is not None:
                self.store.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Receiving --------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[FleetMessage]:
        """Process what arrived (waiting up to ``timeout_s`` for something); returns it.

        :class:`FleetError` when the broker refused a command or bundle chunk this client
        published (its reason by name, e.g. ``0x87 not authorized``: an identity without the
        hub role); other refusals are logged."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._take_acks()
            batch = self.transport.incoming.drain()
            if batch or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        out = []
        for msg in batch:
            handled = self._handle(msg.topic, msg.payload, msg.retain)
            if handled is not None:
                out.append(handled)
        return out

    @property
    def unacknowledged(self) -> int:
        """Messages this client published that the broker has not acknowledged yet (as far as
        the last :meth:`poll` knows)."""
        return len(self._awaiting_ack)

    def wait_acknowledged(self, timeout_s: float) -> bool:
        """Poll until the broker acknowledged every message this client published (a CLI that
        exits right after publishing would otherwise drop what paho has not sent yet); False
        when ``timeout_s`` passed first. What arrives meanwhile is processed and dropped."""
        deadline = time.monotonic() + timeout_s
        while self._awaiting_ack:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.05))
        return True

    def _take_acks(self) -> None:
        refused: list[str] = []
        for event in self.transport.events.drain():
            if event.kind is not TransportEventKind.ACK or event.handle is None:
                continue
            topic = self._awaiting_ack.pop(event.handle, None)
            if topic is None or event.reason_code < 0x80:
                continue
            why = f"the broker refused {topic}: {reason_text(event.reason_code)}"
            route = self.topics.parse(topic)
            if route is not None and route.kind in (TopicKind.COMMAND, TopicKind.BUNDLE):
                refused.append(why)
            else:
                logger.warning("%s", why)
        if refused:
            raise FleetError(
                f"{refused[0]} (the hub's broker identity may not write there: sending commands "
                "needs the hub role, edge-agent-host broker init --hub NAME; docs/security.md)"
            )

    def listen(self, seconds: float) -> list[FleetMessage]:
        """Everything heard during ``seconds``."""
        out: list[FleetMessage] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            out.extend(self.poll(min(left, 0.1)))
        return out

    def _view(self, node: str) -> NodeView:
        view = self.nodes.get(node)
        if view is None:
            view = self.nodes[node] = NodeView(node)
        return view

    def _handle(self, topic: str, payload: bytes, retained: bool) -> FleetMessage | None:
        try:
            env = decode(payload)
        except DecodeError:
            self.malformed += 1
            return None
        route = self.topics.parse(topic)
        if route is None or (route.expected_type is not None and env.type != route.expected_type):
            self.malformed += 1
            return None
        if route.node_owned and env.node != route.node:
            self.malformed += 1
            return None
        gap = 0
        if route.node_owned and route.node is not None:
            gap = self._track(route.node, env, retained)
        if route.node_owned:  # every message of a node, live or retained: presence.py
            now = time.time()
            if not retained:
                self._view(env.node).last_seen = now
            if self.store is not None:
                self.store.heard(env.node, live=not retained, now=now)
        handler = self._body_handlers.get(type(env.body))
        if handler is not None:
            handler(env, env.body, retained)
        return FleetMessage(topic, route, env, retained, gap)

    # -- what each kind of message does to the registry (one method per body type) -------------
    def _on_state(self, env: Envelope, body: NodeState, retained: bool) -> None:
        view = self._view(env.node)
        # A will from an older session than the birth we hold is stale (see the protocol).
        if body.online or view.bdseq is None or env.bdseq >= view.bdseq:
            view.online = body.online
            view.bdseq = env.bdseq
            if self.store is not None:
                self.store.node(env.node, online=body.online, bdseq=env.bdseq)

    def _on_birth(self, env: Envelope, body: Birth, retained: bool) -> None:
        # Presence is the state topic's: a retained birth may outlive its node.
        view = self._view(env.node)
        view.birth, view.bdseq = body, env.bdseq
        if not retained:
            view.online = True
        if self.store is not None:
            self.store.node(
                env.node,
                birth=body,
                bdseq=env.bdseq,
                online=None if retained else True,
            )

    def _on_death(self, env: Envelope, body: Death, retained: bool) -> None:
        del body, retained
        self._view(env.node).deaths += 1
        if self.store is not None:
            self.store.node(env.node, death=True)

    def _on_telemetry(self, env: Envelope, body: Telemetry, retained: bool) -> None:
        del retained
        view = self._view(env.node)
        view.telemetry, view.telemetry_ts = body, env.ts
        if self.store is not None:
            self.store.telemetry(env.node, env.ts, body)

    def _on_event(self, env: Envelope, body: Event, retained: bool) -> None:
        del retained
        if self.store is not None:
            self.store.event(env.node, env.ts, body)

    def _on_result(self, env: Envelope, body: CommandResult, retained: bool) -> None:
        del retained
        with self._lock:  # only answers to what this client sent: bounded by its own use
            if body.nonce in self._sent:
                self.results.setdefault(body.nonce, []).append(body)
        if self.store is not None:
            self.store.command_result(body)

    def _track(self, node: str, env: Envelope, retained: bool) -> int:
        view = self._view(node)
        tracker = view.tracker
        if env.type == Birth.TYPE:
            view.resync = retained
        elif retained:
            # An old message (a node's retained task key): it says nothing of where the node's
            # sequence is now. Taken as the first live one, it made the next live message a gap
            # and every node was asked for a rebirth whenever a client connected (issue 55:
            # each `tasks announce` set off twenty births and their task_state at once).
            return 0
        elif view.resync and env.type not in ("state", "death") and env.bdseq == tracker.bdseq:
            # The first live message after a retained birth sets where the sequence is.
            view.resync = False
            tracker.last_seq = env.seq
            return 0
        verdict = tracker.observe(env.type, env.bdseq, env.seq)
        if not verdict.needs_rebirth:
            return 0
        view.gaps += 1
        now = time.monotonic()
        if now - self._rebirth_asked.get(node, -1e18) >= self.rebirth_interval_s:
            self._rebirth_asked[node] = now
            reason = f"sequence gap of {verdict.missing}" if verdict.missing else "no birth seen"
            self.publish(self.topics.rebirth(node), RebirthRequest(reason=reason))
            view.rebirths_requested += 1
        return max(verdict.missing, 1)

    # Sending ----------------------------------------------------------------------------------
    def publish(self, topic: str, body: Any, *, retain: bool = False) -> None:
        """Send one message body from the hub, with the hub's node id and next sequence number."""
        env = Envelope(
            type=body.TYPE,
            node=self.hub_id,
            seq=self._seq,
            bdseq=0,
            ts=time.time(),
            clock_synced=clock_synced(),
            body=body,
        )
        self._seq = (self._seq + 1) % (1 << 32)
        payload = encode(env)
        handle = self.transport.publish(topic, payload, 1, retain)
        if handle is None:
            raise FleetError("not connected to the broker")
        self._awaiting_ack[handle] = topic
        while len(self._awaiting_ack) > _MAX_AWAITING_ACK:
            self._awaiting_ack.popitem(last=False)
        self.bytes_published += len(payload)
        self.messages_published += 1

    def make_command(
        self,
        node: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        sign: bool = True,
    ) -> Command:
        """A command for ``node``, signed with the hub key (``sign=False``: deploy chunks)."""
        if sign and self.key is None:
            raise FleetError("signing a command needs a hub key (--key)")
        key = self.key if sign else None
        return new_command(
            node, name, args, fleet=self.fleet, key=key, key_id=self.key_id, ttl_s=ttl_s
        )

    def send(self, cmd: Command, *, to: str | None = None) -> bytes:
        """Publish ``cmd`` on its target's command topic (``to``: another node's, which must
        refuse it); returns its nonce."""
        node = to or cmd.target
        with self._lock:
            self._sent.add(cmd.nonce)
        self.publish(self.topics.command(node), cmd)
        if self.store is not None:
            self.store.command_sent(cmd.nonce, node, cmd.name)
        return cmd.nonce

    def send_command(
        self, node: str, name: str, args: Mapping[str, Any] | None = None, *, ttl_s: float = 60.0
    ) -> bytes:
        return self.send(self.make_command(node, name, args, ttl_s=ttl_s))

    def send_chunk(self, node: str, sha256: str, index: int, data: bytes) -> bytes:
        """One ``deploy_chunk`` (unsigned: the node checks it against the signed hash list)."""
        args = {"sha256": sha256, "index": index, "data": data}
        return self.send(self.make_command(node, "deploy_chunk", args, sign=False))

    def broadcast_chunk(self, sha256: str, index: int, data: bytes) -> None:
        """One chunk of bundle ``sha256`` on the fleet's bundle topic, once for every node
        receiving it (unsigned: each node checks it against its signed hash list)."""
        self.publish(self.topics.bundle(sha256), BundleChunk(sha256=sha256, index=index, data=data))

    def take_results(self, nonce: bytes) -> list[CommandResult]:
        with self._lock:
            return self.results.pop(nonce, [])

    def wait_result(
        self,
        nonce: bytes,
        timeout_s: float = 30.0,
        accept: Callable[[CommandResult], bool] = lambda _r: True,
        *,
        duplicate_grace_s: float = DUPLICATE_GRACE_S,
    ) -> CommandResult:
        """The first result to ``nonce`` that ``accept`` takes; :class:`FleetError` on timeout.

        A result the node marks a duplicate (``replayed`` with ``data.duplicate``: the command
        had already run, e.g. before a restart) is kept back for ``duplicate_grace_s`` in case
        the command's own answer still arrives (from the node's outbox after the restart); that
        one wins, else the duplicate is returned."""
        deadline = time.monotonic() + timeout_s
        duplicate: CommandResult | None = None
        duplicate_until = deadline
        while True:
            for result in self.take_results(nonce):
                if not accept(result):
                    continue
                if result.code is ResultCode.REPLAYED and result.data.get("duplicate"):
                    if duplicate is None:
                        duplicate = result
                        duplicate_until = min(deadline, time.monotonic() + duplicate_grace_s)
                    continue
                return result
            now = time.monotonic()
            if duplicate is not None and now >= duplicate_until:
                return duplicate
            left = (duplicate_until if duplicate is not None else deadline) - now
            if left <= 0:
                raise FleetError(f"no result to command {nonce.hex()[:8]} within {timeout_s:g} s")
            self.poll(min(left, 0.05))

    def command(
        self,
        node: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        timeout_s: float = 30.0,
    ) -> CommandResult:
        """Send one signed command and wait for its first result."""
        return self.wait_result(self.send_command(node, name, args, ttl_s=ttl_s), timeout_s)

    # Deploying --------------------------------------------------------------------------------
    def deploy(
        self,
        bundle: str | Path | DeployPlan,
        group: str,
        nodes: Sequence[str],
        *,
        transfer: str = "broadcast",
        chunk_size: int = DEFAULT_CHUNK_BYTES,
        window: int = 8,
        chunk_timeout_s: float = 10.0,
        rate_chunks_s: float = 32.0,
        timeout_s: float = 300.0,
        watch_ticks: int = 50,
        watch_timeout_s: float = 120.0,
        health_steps: int = 20,
        progress: Callable[[str, int, int, str], None] | None = None,
        stats: BroadcastStats | None = None,
    ) -> dict[str, CommandResult]:
        """Deploy a signed bundle (directory or tar, or its plan) to ``group`` on every node of
        ``nodes``.

        ``transfer``: ``broadcast`` (each chunk published once for all nodes, the default) or
        ``unicast`` (chunks as commands to each node, acknowledged one by one). Returns each
        node's final result (``ok``: switched and watched; anything else: failed).
        """
        if transfer == "broadcast":
            return broadcast_bundle(
                self,
                bundle,
                group,
                nodes,
                chunk_size=chunk_size,
                rate_chunks_s=rate_chunks_s,
                timeout_s=timeout_s,
                watch_ticks=watch_ticks,
                watch_timeout_s=watch_timeout_s,
                health_steps=health_steps,
                progress=progress,
                stats=stats,
            )
        if transfer != "unicast":
            raise FleetError(f"transfer must be 'broadcast' or 'unicast', not {transfer!r}")
        return deploy_bundle(
            self,
            bundle,
            group,
            nodes,
            chunk_size=chunk_size,
            window=window,
            chunk_timeout_s=chunk_timeout_s,
            timeout_s=timeout_s,
            watch_ticks=watch_ticks,
            watch_timeout_s=watch_timeout_s,
            health_steps=health_steps,
            progress=progress,
        )
