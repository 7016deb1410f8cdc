"""The hub's error: what it raises when it cannot do what was asked."""

from __future__ import annotations

from edge_agent.errors import EdgeAgentError

__all__ = ["HubError"]


class HubError(EdgeAgentError):
    """The hub could not do what was asked (no broker, no answer, a refusal)."""
