"""What the hub service publishes, through its one broker connection, and what the broker answers.

The service has one MQTT connection (one identity: with ``broker init``'s
``use_username_as_clientid`` a second connection of the same identity would take the first's
session over, again and again). Everything it sends goes through :class:`HubPublisher`: its
rebirth requests (the service's loop) and the rollout runner's signed commands and bundle chunks
(the runner's thread, :mod:`~edge_agent_host.hub.rollouts.client`).

The broker answers each QoS 1 publish with a PUBACK; a refusal (reason code >= 0x80, e.g.
``0x87 not authorized`` when the hub's identity may not write commands) is logged by name, once
per topic kind and reason a minute, counted (``refused``), and remembered for the runner
(:meth:`HubPublisher.refusals_since`): a rollout whose commands the broker refuses halts at once
with that reason instead of waiting out its deployment timeout.

A signed command the hub sends is also put into the service's queue as a heard command, so the
command journal holds it (the service's plain subscriptions are No Local: it does not hear its
own publications back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from edge_agent.fleet.comms.base import (
    PublishHandle,
    Transport,
    TransportEventKind,
    reason_text,
)
from edge_agent.fleet.protocol import Command, Envelope, clock_synced, encode
from edge_agent.fleet.topics import Topics
from edge_agent_host.hub.traffic.queue import Heard, HeldMessages

logger = logging.getLogger(__name__)

__all__ = ["HubPublisher", "Refusal"]

_MAX_TRACKED: Final = 100_000
"""Publishes awaiting their PUBACK that are remembered (oldest forgotten first)."""
_LOG_EVERY_S: Final = 60.0
_HINTS: Final = {
    0x87: "the hub's broker identity may not write there: a hub that sends commands or carries "
    "rollouts needs the hub role (broker init --hub NAME, docs/security.md)",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One publish the broker refused: its number (counting from 1), topic and reason code."""

    number: int
    topic: str
    code: int

    def describe(self) -> str:
        hint = _HINTS.get(self.code)
        return f"the broker refused {self.topic}: {reason_text(self.code)}" + (
            f" ({hint})" if hint else ""
        )


class HubPublisher:
    """Sends hub messages over the service's transport and hears the broker's answers.

    ``publish`` may be called from any thread; ``drain`` from the service's loop only.
    """

    def __init__(
        self,
        transport: Transport,
        topics: Topics,
        hub_id: str,
        queue: HeldMessages,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.topics = topics
        self.hub_id = hub_id
        self.queue = queue
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: OrderedDict[PublishHandle, str] = OrderedDict()
        self._refusals: list[Refusal] = []
        self._logged: dict[tuple[str, int], float] = {}
        self.published = 0
        self.bytes_published = 0
        self.refused = 0

    def publish(self, topic: str, body: Any) -> bool:
        """Send one body from the hub (its id, the next sequence number); False when the
        service is not connected (nothing is queued)."""
        with self._lock:
            seq = self._seq
            self._seq = (self._seq + 1) % (1 << 32)
        env = Envelope(
            type=body.TYPE,
            node=self.hub_id,
            seq=seq,
            bdseq=0,
            ts=self._clock(),
            clock_synced=clock_synced(),
            body=body,
        )
        payload = encode(env)
        handle = self.transport.publish(topic, payload, 1)
        if handle is None:
            return False
        with self._lock:
            self._pending[handle] = topic
            while len(self._pending) > _MAX_TRACKED:
                self._pending.popitem(last=False)
            self.published += 1
            self.bytes_published += len(payload)
        if isinstance(body, Command) and body.signature:
            self._journal(env, body, len(payload))
        return True

    def _journal(self, env: Envelope, cmd: Command, size: int) -> None:
        heard = Heard(
            kind=env.type,
            node=cmd.target,
            envelope=env,
            retained=False,
            received=self._clock(),
            size=size,
            verified=True,  # signed here, with the hub's own key
        )
        if not self.queue.put(heard):
            logger.warning(
                "command %s to %s not journaled: the queue is full", cmd.name, cmd.target
            )

    def drain(self) -> int:
        """Take the transport's events: match PUBACKs, log and remember refusals. Returns the
        number of refusals seen."""
        refused = 0
        for event in self.transport.events.drain():
            if event.kind is TransportEventKind.DISCONNECTED:  # its PUBACKs will never come
                with self._lock:
                    for handle in [h for h in self._pending if h.session <= event.session]:
                        del self._pending[handle]
                continue
            if event.kind is not TransportEventKind.ACK or event.handle is None:
                continue
            with self._lock:
                topic = self._pending.pop(event.handle, None)
            if topic is None or event.reason_code < 0x80:
                continue
            refused += 1
            self._refuse(topic, event.reason_code)
        return refused

    def _refuse(self, topic: str, code: int) -> None:
        with self._lock:
            self.refused += 1
            refusal = Refusal(self.refused, topic, code)
            self._refusals.append(refusal)
            del self._refusals[:-100]
        route = self.topics.parse(topic)
        kind = route.kind.value if route is not None else topic
        now = time.monotonic()
        if now - self._logged.get((kind, code), -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[(kind, code)] = now
            logger.error("%s", refusal.describe())

    def refusals_since(self, number: int) -> list[Refusal]:
        """The refusals (of the newest 100) numbered above ``number`` (0: all of them)."""
        with self._lock:
            return [r for r in self._refusals if r.number > number]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "published": self.published,
                "bytes_published": self.bytes_published,
                "refused": self.refused,
                "awaiting_ack": len(self._pending),
            }
