"""``edge-agent-host hub``: the reference hub of the fleet protocol.

A hub is one MQTT client subscribed to everything of a fleet (``ea/v1/{fleet}/#``). From what it
hears it keeps a view of every node (retained state and birth, deaths, the last telemetry, sequence
gaps) in memory and in a small SQLite file, and it asks a node for a rebirth when it sees a gap in
that node's sequence numbers. It sends commands signed with a hub key made by
``edge-agent-host keygen`` (the device must trust the ``.pub``: ``[mqtt] hub_keys_dir``) and
waits for their results, and it deploys bundles in chunks with a window of unacknowledged chunks,
resuming from what the device already holds.

Subcommands::

    edge-agent-host hub [--host H --port P --fleet F] fleet [--wait S] [--json]
    edge-agent-host hub ... watch [--node N] [--duration S] [--json]
    edge-agent-host hub ... command --key K (--node N ... | --all) NAME [ARG=VALUE ...]
    edge-agent-host hub ... deploy BUNDLE --key K --group G (--node N ... | --all)

``ARG=VALUE``: the value is read as JSON when it parses (``agents=500``, ``hz=2.5``,
``flag=true``), else taken as a string (``group=grid``). TLS to the broker: ``--ca-file``, and
for mutual TLS the hub's identity ``--cert-file`` and ``--key-file`` (as
``edge-agent-host broker init`` issues them; ``docs/security.md``). ``docs/fleet.md`` has the
details.

The package, one job a module: ``errors`` (:class:`HubError`), ``store`` (the SQLite memory,
:class:`HubStore`), ``views`` (what the hub knows and hears: :class:`NodeView`,
:class:`HubMessage`), ``client`` (:class:`HubClient`: the broker link, the fleet registry and
signed commands), ``deploy`` (:class:`DeployPlan` and the chunked deploy driver behind
:meth:`HubClient.deploy`) and ``cli`` (the subcommands: :func:`configure`, :func:`run`).
"""

from __future__ import annotations

import logging

from edge_agent_host.hub.cli import SUCCESS as SUCCESS
from edge_agent_host.hub.cli import configure, format_fleet, run
from edge_agent_host.hub.client import HubClient
from edge_agent_host.hub.deploy import DEFAULT_CHUNK_BYTES as DEFAULT_CHUNK_BYTES
from edge_agent_host.hub.deploy import DeployPlan
from edge_agent_host.hub.errors import HubError
from edge_agent_host.hub.store import HubStore
from edge_agent_host.hub.views import HubMessage, NodeView

logger = logging.getLogger(__name__)

__all__ = [
    "DeployPlan",
    "HubClient",
    "HubError",
    "HubMessage",
    "HubStore",
    "NodeView",
    "configure",
    "format_fleet",
    "run",
]
