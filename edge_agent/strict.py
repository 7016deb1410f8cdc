"""The base of every model read from a file: unknown keys are errors, instances are frozen.

It lives at the bottom of the package so that every part (config, coordination) can define its
part of the config file without importing the config package above it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base of every config and profile model: unknown keys are errors, instances are frozen.

    Documents are validated in pydantic's strict mode
    (:func:`edge_agent.config.toml_lines.validate_toml`), so ``"10"`` is not an integer and
    ``true`` is not ``1``; models built in Python code use the usual lax mode.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
