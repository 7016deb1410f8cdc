"""The base of the hub's own config and rollout models: unknown keys are errors, instances are
frozen.

The hub validates with pydantic models in its own process; the device's records
(:mod:`edge_agent.records`) are plain dataclasses instead, because the daemon cannot afford
pydantic in its memory budget. The hub's documents are read by the same reader
(:func:`edge_agent.config.toml_lines.validate_toml`), which accepts both.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base of every hub config and rollout model: unknown keys are errors, instances are frozen.

    Documents are validated in pydantic's strict mode, so ``"10"`` is not an integer and
    ``true`` is not ``1``; models built in Python code use the usual lax mode.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
