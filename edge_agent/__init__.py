"""edge-agent: batched int8 Active Inference and neural agents for small ARM devices."""

from __future__ import annotations

from edge_agent.errors import (
    BudgetError,
    BundleError,
    ConfigError,
    EdgeAgentError,
    InputError,
    ModelError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "BundleError",
    "ConfigError",
    "EdgeAgentError",
    "InputError",
    "ModelError",
    "__version__",
]
