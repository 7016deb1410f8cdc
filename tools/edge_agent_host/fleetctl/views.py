"""The operator's client's records: what it knows of a node (:class:`NodeView`) and one message
it heard (:class:`FleetMessage`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.fleet.protocol import Birth, Envelope, SeqTracker, Telemetry
from edge_agent.fleet.topics import Route

__all__ = ["FleetMessage", "NodeView"]


@dataclass
class NodeView:
    """What the client knows of one node."""

    node: str
    online: bool | None = None
    bdseq: int | None = None
    birth: Birth | None = None
    telemetry: Telemetry | None = None
    telemetry_ts: float | None = None
    deaths: int = 0
    gaps: int = 0
    rebirths_requested: int = 0
    last_seen: float = 0.0
    tracker: SeqTracker = field(default_factory=SeqTracker, repr=False)
    resync: bool = False
    """Set by a retained birth: it says who the node is, not where its sequence is now."""


@dataclass(frozen=True, slots=True)
class FleetMessage:
    """One valid message the client heard (``gap``: messages missed before it, 0 if none)."""

    topic: str
    route: Route
    envelope: Envelope
    retained: bool
    gap: int = 0
