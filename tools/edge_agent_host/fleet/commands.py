"""Hub commands as the host makes them: a fresh nonce, an expiry, the hub key's signature.

One helper for both clients that command nodes: the operator's client (``edge-agent-host hub``,
:class:`edge_agent_host.fleetctl.client.FleetClient`) and the hub service's rollout runner
(:class:`edge_agent_host.hub.rollouts.client.ServiceDeployClient`). What a node checks is in
:mod:`edge_agent.fleet.commands`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.signing import sign_bytes
from edge_agent.fleet.protocol import Command


def new_command(
    node: str,
    name: str,
    args: Mapping[str, Any] | None,
    *,
    fleet: str,
    key: Ed25519PrivateKey | None,
    key_id: str,
    ttl_s: float = 60.0,
) -> Command:
    """A command for ``node`` that expires in ``ttl_s``, signed with ``key`` over the fleet's
    signing bytes; ``key=None`` leaves it unsigned (deploy chunks, whose bundle is signed)."""
    unsigned = Command(
        target=node,
        nonce=os.urandom(16),
        expires=time.time() + ttl_s,
        key_id=key_id if key is not None else "",
        name=name,
        args=dict(args or {}),
    )
    if key is None:
        return unsigned
    signature = sign_bytes(key, unsigned.signing_bytes(fleet))
    return msgspec.structs.replace(unsigned, signature=signature)
