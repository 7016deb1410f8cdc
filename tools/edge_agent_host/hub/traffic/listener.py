"""What the hub hears: subscriptions, and the checks every message passes before it is held.

Subscriptions (``ea/v1/{fleet}/node/+/...``):

* ``state`` and ``birth`` with a plain subscription, on every replica: they are retained (a
  replica that starts learns the fleet's presence and births at once; MQTT 5 sends no retained
  messages to shared subscriptions), few, and written idempotently;
* ``telemetry``, ``health``, ``event``, ``result``, ``death``, ``cmd`` and ``learning``
  through the shared subscription ``$share/{group}/...`` when ``[mqtt] share_group`` is set: the
  broker hands each message to one replica of the group. Without a group the hub subscribes to
  them plainly.

:meth:`FleetListener.on_message` runs on the transport's thread and only decodes, validates,
counts and enqueues (:class:`~.queue.HeldMessages`). A message is dropped and
counted when it is

* malformed (``malformed.*``): the decoder's reasons (``oversized``, ``not_msgpack``,
  ``not_a_map``, ``version``, ``unknown_type``, ``schema``), ``topic`` (not a topic of this
  fleet's protocol) or ``type_mismatch`` (a type that does not belong on that topic);
* forged (``forged.*``): ``node_mismatch`` (a node-owned topic written in another node's name),
  ``target`` (a command whose signed target is not the node of its topic) and, with ``[mqtt]
  hub_keys_dir``, ``unknown_key`` and ``signature`` (a command no trusted hub key signed).

``deploy_chunk`` commands (unsigned by design, thousands per deployment) are counted
(``ignored.deploy_chunk``) and not journaled.

A message that passes is held with the message as heard (topic, payload), which the queue spools
before this callback returns, i.e. before paho acknowledges it to the broker;
:meth:`FleetListener.replay` hears again what a previous process spooled and did not store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import SignatureError
from edge_agent.fleet.comms.base import Incoming, Transport
from edge_agent.fleet.protocol import Command, DecodeError, decode
from edge_agent.fleet.topics import TopicKind, Topics
from edge_agent_host.hub.traffic.queue import Heard, HeldMessages
from edge_agent_host.hub.traffic.spool import SpoolRecord

__all__ = ["PRESENCE_KINDS", "SHARED_KINDS", "FleetListener"]

#: Heard by every replica (retained, idempotent).
PRESENCE_KINDS: Final = (TopicKind.STATE, TopicKind.BIRTH)
#: Split between the replicas of a share group.
SHARED_KINDS: Final = (
    TopicKind.TELEMETRY,
    TopicKind.HEALTH,
    TopicKind.EVENT,
    TopicKind.RESULT,
    TopicKind.DEATH,
    TopicKind.COMMAND,
    TopicKind.LEARNING,
)
_UNSIGNED_COMMANDS: Final = frozenset({"deploy_chunk"})
_DATA_KINDS: Final = frozenset({"telemetry", "health", "event", "result"})


class FleetListener:
    """Subscribes ``transport`` to the fleet and feeds valid messages to ``queue``."""

    def __init__(
        self,
        transport: Transport,
        topics: Topics,
        queue: HeldMessages,
        *,
        share_group: str = "",
        hub_keys: TrustedKeys | None = None,
        max_nodes: int = 100_000,
        birth_grace_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.topics = topics
        self.queue = queue
        self.share_group = share_group
        self.hub_keys = hub_keys
        self.max_nodes = max_nodes
        self.birth_grace_s = birth_grace_s
        self._clock = clock
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._births: OrderedDict[str, None] = OrderedDict()
        self._no_birth: OrderedDict[str, None] = OrderedDict()
        transport.on_message = self.on_message
        for pattern, shared in self.patterns():
            transport.subscribe(pattern, 1, no_local=not shared)

    def patterns(self) -> list[tuple[str, bool]]:
        """``(pattern, shared)`` of every subscription (No Local is not allowed on shared ones)."""
        out = [(self.topics.all_nodes(kind), False) for kind in PRESENCE_KINDS]
        prefix = f"$share/{self.share_group}/" if self.share_group else ""
        out += [(prefix + self.topics.all_nodes(kind), bool(prefix)) for kind in SHARED_KINDS]
        return out

    # the transport's thread ---------------------------------------------------------------
    def on_message(self, msg: Incoming) -> None:
        """Decode, validate, count and enqueue one message (never raises for bad input)."""
        heard = self._check(msg, self._clock())
        if heard is None:
            return
        self._hold(heard, SpoolRecord(msg.topic, msg.payload, msg.retain, heard.received))

    def replay(self, records: list[tuple[int, SpoolRecord]]) -> int:
        """Hold again what a previous process spooled (``(segment, record)``, oldest first)
        and did not store; how many were held. Each is checked as when it was heard."""
        held = 0
        for segment, record in records:
            heard = self._check(
                Incoming(record.topic, record.payload, 1, record.retain, 0), record.received
            )
            if heard is None:
                self.queue.forget([segment])
                continue
            self._hold(replace(heard, segment=segment), None)
            held += 1
        return held

    def _hold(self, heard: Heard, record: SpoolRecord | None) -> None:
        self._count(f"received.{heard.kind}")
        if heard.kind == "birth":
            self._remember(self._births, heard.node)
            with self._lock:
                self._no_birth.pop(heard.node, None)
        elif heard.kind in _DATA_KINDS and not heard.retained:
            self._note_missing_birth(heard.node)
        if not self.queue.put(heard, record):
            self._count("queue_full")

    def _check(self, msg: Incoming, received: float) -> Heard | None:
        route = self.topics.parse(msg.topic)
        if route is None or route.node is None:
            return self._refuse("malformed.topic")
        try:
            env = decode(msg.payload)
        except DecodeError as err:
            return self._refuse(f"malformed.{err.reason}")
        if route.expected_type is not None and env.type != route.expected_type:
            return self._refuse("malformed.type_mismatch")
        if route.node_owned and env.node != route.node:
            return self._refuse("forged.node_mismatch")
        body = env.body
        verified = False
        if isinstance(body, Command):
            if body.target != route.node:
                return self._refuse("forged.target")
            if body.name in _UNSIGNED_COMMANDS:
                return self._refuse("ignored.deploy_chunk")
            problem = self._signature_problem(body)
            if problem is not None:
                return self._refuse(f"forged.{problem}")
            verified = self.hub_keys is not None
        return Heard(
            kind=env.type,
            node=route.node,
            envelope=env,
            retained=msg.retain,
            received=received,
            size=len(msg.payload),
            verified=verified,
        )

    def _signature_problem(self, cmd: Command) -> str | None:
        keys = self.hub_keys
        if keys is None:
            return None
        if cmd.key_id not in keys:
            return "unknown_key"
        try:
            keys.verify(cmd.key_id, cmd.signing_bytes(self.topics.fleet), cmd.signature)
        except SignatureError:
            return "signature"
        return None

    def _refuse(self, reason: str) -> Heard | None:
        """Count a dropped message; None, for ``return self._refuse(...)``."""
        self._count(reason)
        return None

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _remember(self, table: OrderedDict[str, None], node: str) -> None:
        with self._lock:
            table[node] = None
            table.move_to_end(node)
            while len(table) > self.max_nodes:
                table.popitem(last=False)

    def _note_missing_birth(self, node: str) -> None:
        if time.monotonic() - self._started < self.birth_grace_s:
            return  # the retained births are still arriving
        with self._lock:
            if node in self._births:
                return
        self._remember(self._no_birth, node)

    # the service's loop -------------------------------------------------------------------
    def nodes_without_birth(self) -> list[str]:
        """Nodes that sent data while the hub knows no birth of theirs (oldest first)."""
        with self._lock:
            return list(self._no_birth)

    def counts(self) -> dict[str, int]:
        """``received.{type}``, ``malformed.*``, ``forged.*``, ``ignored.*``, ``queue_full``."""
        with self._lock:
            return dict(self._counts)

    def dropped(self) -> int:
        """Malformed and forged messages dropped so far."""
        with self._lock:
            return sum(
                n for k, n in self._counts.items() if k.startswith(("malformed.", "forged."))
            )
