"""A node known only by what the broker retained for it: its state says ``online`` and its birth
says who it is, but nothing live ever comes (a node locked out by the broker, or whose will was
lost, looks so to every client that subscribes later).

:func:`retain_node` publishes the two retained messages as the node would (real envelopes, over
a real connection to the broker) and disconnects cleanly, so that no will follows them.
"""

from __future__ import annotations

import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.fleet.protocol import Birth, Body, Envelope, GroupInfo, NodeState, encode
from edge_agent.fleet.topics import Topics

__all__ = ["retain_node"]


def retain_node(host: str, port: int, fleet: str, node: str, *, group: str = "grid") -> None:
    """Retain ``node``'s state (online) and birth (one group) on the broker at ``host:port``."""
    topics = Topics(fleet)

    def message(seq: int, body: Body) -> bytes:
        return encode(
            Envelope(type=body.TYPE, node=node, seq=seq, bdseq=1, ts=time.time(),
                     clock_synced=True, body=body)
        )  # fmt: skip

    birth = Birth(
        software_version="0.0.0",
        profile="x86-dev",
        budget_bytes=1 << 20,
        groups={group: GroupInfo(agents=1)},
    )
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"retained-{node}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.connect(host, port)
    client.loop_start()
    try:
        sent = [
            client.publish(topics.node_state(node), message(0, NodeState(online=True)), 1, True),
            client.publish(topics.birth(node), message(1, birth), 1, True),
        ]
        for info in sent:
            info.wait_for_publish(30)
            if not info.is_published():
                raise RuntimeError(f"the broker did not take {node}'s retained messages")
    finally:
        client.disconnect()
        client.loop_stop()
