"""Transports: the publish/subscribe interface and its implementations.

``edge_agent.fleet.comms.mqtt`` (paho) is imported only by whoever selects it, so importing this
package never imports paho.
"""

from __future__ import annotations

from edge_agent.fleet.comms.base import (
    REASON_NAMES,
    Backoff,
    BoundedQueue,
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
    topic_matches,
)

__all__ = [
    "REASON_NAMES",
    "Backoff",
    "BoundedQueue",
    "Incoming",
    "PublishHandle",
    "Subscription",
    "Transport",
    "TransportEvent",
    "TransportEventKind",
    "Will",
    "WillFactory",
    "check_topic",
    "reason_text",
    "topic_matches",
]
