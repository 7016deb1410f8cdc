"""One node's fleet stack, assembled in one place: transport, outbox, link, nonces, verifier,
command processor, and the bundle broadcast the deployment is receiving.

Both users build it here: the device daemon (:class:`edge_agent.daemon.uplink.FleetUplink`) and
the fleet simulator (``edge_agent_host.fleetsim``), so a simulated node is the daemon's fleet
parts for real. :class:`NodeLimits` holds what the daemon's ``[mqtt]`` section sets; its
defaults are the parts' own. paho is imported when a stack is built (never by importing this
module), so only a node that uses MQTT loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.commands import (
    LEGACY_NONCE_DB,
    NONCE_DB,
    CommandProcessor,
    CommandVerifier,
    Handler,
    NonceStore,
)
from edge_agent.fleet.comms.base import Backoff
from edge_agent.fleet.link import STATE_FILE, FleetLink
from edge_agent.fleet.outbox import Outbox
from edge_agent.fleet.outcomes import Outcome
from edge_agent.fleet.protocol import Birth
from edge_agent.fleet.topics import Topics
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:
    from edge_agent.fleet.comms.mqtt import MqttSettings, MqttTransport
    from edge_agent.fleet.protocol import BundleChunk

__all__ = ["OUTBOX_DB", "BundleReceiver", "NodeLimits", "NodeStack"]

OUTBOX_DB: Final = "outbox.log"
LEGACY_OUTBOX_DB: Final = "outbox.sqlite3"
"""The SQLite outbox of earlier versions: migrated once (:class:`Outbox`)."""


class BundleReceiver(Protocol):
    """The node's deployment, as the bundle topic feeds it (broadcast transfers): the daemon's
    A/B switch, or a deployment manager of its own (the fleet simulator)."""

    @property
    def broadcast_bundle(self) -> str | None:
        """The bundle whose broadcast chunks this node takes now, else None."""
        ...

    def broadcast_chunk(self, chunk: BundleChunk) -> Outcome: ...


@dataclass(frozen=True)
class NodeLimits:
    """The bounds of a node's stack (the daemon's ``[mqtt]`` settings; defaults: the parts').

    ``outbox_max_bytes``: the outbox's size bound; ``outbox_commit_interval_s``: its relaxed
    commit interval; ``max_inbox``: the link's inbox; ``command_max_ttl_s``: the longest command
    lifetime accepted, and how far back a lost nonce store refuses commands.
    """

    outbox_max_bytes: int = 16 * 1024 * 1024
    outbox_commit_interval_s: float = 300.0
    max_inbox: int = 1000
    command_max_ttl_s: float = 3600.0


class NodeStack:
    """The fleet parts of one node, built and closed together (module docstring).

    ``handlers``: the hub-command table of the command processor. ``bundles``: the node's
    deployment, owned by the caller (the stack follows its bundle broadcast and never
    closes it). ``faults``: shared by the stores; a fresh one when not given.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        node_id: str,
        fleet: str,
        mqtt: MqttSettings,
        backoff: Backoff,
        birth: Birth,
        hub_keys: TrustedKeys | None,
        handlers: Mapping[str, Handler],
        bundles: BundleReceiver | None = None,
        limits: NodeLimits | None = None,
        faults: StateFaults | None = None,
    ) -> None:
        # paho is imported only by nodes that use MQTT.
        from edge_agent.fleet.comms.mqtt import MqttTransport  # noqa: PLC0415

        limits = limits or NodeLimits()
        faults = faults if faults is not None else StateFaults()
        self.node_id = node_id
        self.topics = Topics(fleet)
        self.bundles = bundles
        self._bundle_topic: str | None = None  # the broadcast this node is subscribed to
        # A node that ran before (it has a sequence file or an outbox) and has no nonce store
        # lost it: the store then refuses commands that may be replays (NonceStore).
        ran_before = any(
            (state_dir / name).exists() for name in (STATE_FILE, OUTBOX_DB, LEGACY_OUTBOX_DB)
        )
        self.outbox = Outbox(
            state_dir / OUTBOX_DB,
            max_bytes=limits.outbox_max_bytes,
            relaxed_commit_interval_s=limits.outbox_commit_interval_s,
            faults=faults,
            legacy=state_dir / LEGACY_OUTBOX_DB,
        )
        self.transport: MqttTransport = MqttTransport(mqtt, backoff=backoff)
        self.link = FleetLink(
            self.transport,
            self.outbox,
            node_id,
            fleet,
            state_dir,
            birth=birth,
            max_inbox=limits.max_inbox,
            faults=faults,
        )
        self.nonces = NonceStore(
            state_dir / NONCE_DB,
            faults=faults,
            lost_floor_s=limits.command_max_ttl_s,
            missing_is_lost=ran_before,
            legacy=state_dir / LEGACY_NONCE_DB,
        )
        verifier = CommandVerifier(
            hub_keys,
            fleet=fleet,
            node_id=node_id,
            nonces=self.nonces,
            max_ttl_s=limits.command_max_ttl_s,
        )
        self.commands = CommandProcessor(verifier, handlers)

    def follow_broadcast(self) -> None:
        """Subscribed to the bundle topic of the broadcast deployment being received, and to
        nothing else of the kind (call between ticks: a deployment's phase changes only then)."""
        sha = self.bundles.broadcast_bundle if self.bundles is not None else None
        topic = self.topics.bundle(sha) if sha is not None else None
        if topic == self._bundle_topic:
            return
        if self._bundle_topic is not None:
            self.link.unsubscribe(self._bundle_topic)
        if topic is not None:
            self.link.subscribe(topic, 1)
        self._bundle_topic = topic

    def close(self) -> None:
        """Close the stores (after :meth:`FleetLink.stop`)."""
        try:
            self.outbox.close()
        finally:
            self.nonces.close()
