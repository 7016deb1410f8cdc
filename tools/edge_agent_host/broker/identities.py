"""Who a broker knows: the identities (:class:`Identity`, each with a :class:`Role`), how the
broker was set up (:class:`BrokerState`, ``DIR/broker.json``) and the checks of an identity's name
and of an I/O topic filter.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.errors import InputError
from edge_agent.fleet.names import NAME_PATTERN

IDENTITY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""A broker identity: one topic level (``%u``) and a valid ``[mqtt] node_id`` (no dots)."""
_IDENTITY_RE: Final = re.compile(IDENTITY_PATTERN)


class Role(StrEnum):
    """What an identity may do (besides the node rights of its own name)."""

    NODE = "node"
    HUB = "hub"
    OBSERVER = "observer"
    SENSOR = "sensor"


class Auth(StrEnum):
    CERT = "cert"
    PASSWORD = "password"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    serial: str = Field("", description="hex serial of the current certificate (cert auth)")
    issued_at: str = Field(description="UTC, ISO 8601")
    revoked: bool = False


class BrokerState(BaseModel):
    """``DIR/broker.json``: how the broker was set up and whom it knows."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    fleet: str = Field(pattern=NAME_PATTERN)
    port: int = Field(ge=1, le=65535)
    bind: str
    host: str
    sans: list[str] = Field(default_factory=list)
    auth: Auth
    validity_days: int = Field(ge=1, le=36500)
    io_topics: list[str] = Field(default_factory=list)
    io_reads: list[str] = Field(default_factory=list)
    device_dir: str | None = None
    run_as: str
    identities: dict[str, Identity] = Field(default_factory=dict)
    revoked_serials: dict[str, str] = Field(
        default_factory=dict, description="hex serial -> revocation time (UTC, ISO 8601)"
    )

    def names(self, role: Role) -> list[str]:
        return [n for n, i in self.identities.items() if i.role is role and not i.revoked]


def check_fleet(name: str) -> str:
    """``name`` if it is a fleet's name (one topic level: 1-64 of A-Z a-z 0-9 _ . -), else an
    :class:`InputError` saying so."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise InputError(f"fleet {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
    return name


def check_identity(name: str) -> str:
    if _IDENTITY_RE.fullmatch(name) is None:
        raise InputError(
            f"identity {name!r}: use 1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit"
        )
    return name


def check_io_filter(text: str, *, writable: bool) -> str:
    """An MQTT topic filter for the ACL: ``%u`` only as a whole level; a writable one must stay
    out of the fleet tree (``ea/...``), where it would let a node write others' topics."""
    levels = text.split("/")
    if not text or any(c.isspace() for c in text) or len(text.encode()) > 1024:
        raise InputError(f"topic filter {text!r}: 1-1024 bytes without spaces")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise InputError(f"topic filter {text!r}: a wildcard must be a whole level")
        if level == "#" and i != len(levels) - 1:
            raise InputError(f"topic filter {text!r}: '#' must be the last level")
        if "%" in level and level not in ("%u", "%c"):
            raise InputError(f"topic filter {text!r}: %u must be a whole level")
    if writable and levels[0] in ("ea", "+", "#"):
        raise InputError(
            f"--io-topic {text!r} reaches into the fleet tree ea/...: give read access with "
            "--io-read; what nodes write there is fixed by the protocol"
        )
    return text
