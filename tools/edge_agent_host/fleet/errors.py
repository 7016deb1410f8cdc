"""The error of a fleet operation, the operator's client's and the hub service's alike.

Shared by the operator's client (:mod:`edge_agent_host.fleetctl`) and the hub service
(:mod:`edge_agent_host.hub`), which never imports the client."""

from __future__ import annotations

from edge_agent.errors import EdgeAgentError

__all__ = ["FleetError"]


class FleetError(EdgeAgentError):
    """A fleet operation could not be done: no broker, no answer, a refusal (the client), or a
    database, configuration or rollout the hub service cannot use."""
