"""What handling a command came to: the result codes of the protocol and an outcome to report.

Kept apart from :mod:`edge_agent.fleet.protocol` and :mod:`edge_agent.fleet.commands` (and free of
msgspec) so that the deployment manager and the A/B switch above it, which every daemon holds, do
not import the wire models of a fleet stack the node may not enable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Outcome", "ResultCode"]


class ResultCode(StrEnum):
    OK = "ok"
    ACCEPTED = "accepted"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    BUSY = "busy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling a command came to: the result code and what to tell the hub."""

    code: ResultCode
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
