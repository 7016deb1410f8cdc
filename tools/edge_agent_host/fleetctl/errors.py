"""The error of a fleet operation, the operator's client's and the hub service's alike."""

from __future__ import annotations

from edge_agent.errors import EdgeAgentError

__all__ = ["FleetError"]


class FleetError(EdgeAgentError):
    """A fleet operation could not be done: no broker, no answer, a refusal (the client), or a
    database, configuration or rollout the hub service cannot use."""
