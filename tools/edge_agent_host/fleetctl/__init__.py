"""``edge-agent-host hub``: the operator's client of a fleet (not a hub: the hub is the service,
``edge-agent-hub``, :mod:`edge_agent_host.hub`).

The client is one MQTT client subscribed to everything of a fleet (``ea/v1/{fleet}/#``), for as
long as a command runs. It speaks with the hub's identity in the protocol (a hub key, the broker's
hub role): the node obeys commands signed with a key it trusts, whoever sends them. From what it
hears it keeps a view of every node (retained state and birth, deaths, the last telemetry, sequence
gaps) in memory and in a small SQLite file, and it asks a node for a rebirth when it sees a gap in
that node's sequence numbers. It sends commands signed with a hub key made by
``edge-agent-host keygen`` (the device must trust the ``.pub``: ``[mqtt] hub_keys_dir``) and
waits for their results, and it deploys bundles in chunks with a window of unacknowledged chunks,
resuming from what the device already holds.

Subcommands::

    edge-agent-host hub [--host H --port P --fleet F] fleet [--wait S] [--json]
    edge-agent-host hub ... watch [--node N] [--duration S] [--json]
    edge-agent-host hub ... command --key K (--node N ... | --all) [--force] NAME [ARG=VALUE ...]
    edge-agent-host hub ... deploy BUNDLE --key K --group G (--node N ... | --all) [--force]

A ``--node`` never heard (this run or, in the store, an earlier one) is one error line naming the
known nodes closest to it, unless ``--force``. A broker that wants TLS from a client given none
is one error line naming the options to give.

``ARG=VALUE``: the value is read as JSON when it parses (``agents=500``, ``hz=2.5``,
``flag=true``), else taken as a string (``group=grid``). TLS to the broker: ``--ca-file``, and
for mutual TLS the hub's identity ``--cert-file`` and ``--key-file`` (as
``edge-agent-host broker init`` issues them; ``docs/security.md``). ``docs/fleet.md`` has the
details.

The package, one job a module: ``store`` (the SQLite memory, :class:`FleetStore`), ``views``
(what the client knows and hears: :class:`NodeView`, :class:`FleetMessage`), ``client``
(:class:`FleetClient`: the broker link, the fleet registry and signed commands) and ``cli`` (the
subcommands: :func:`configure`, :func:`run`). What the hub service shares with it is in modules
of ``edge_agent_host`` by job, which the service imports instead of this package:
:mod:`~edge_agent_host.fleet.errors` (:class:`FleetError`), :mod:`~edge_agent_host.fleet.transfer`
(:class:`DeployPlan` and the chunked deploy drivers behind :meth:`FleetClient.deploy`) and
:mod:`~edge_agent_host.fleet.table` (:func:`format_fleet`).
"""

from __future__ import annotations

import logging

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.table import format_fleet
from edge_agent_host.fleet.transfer import DEFAULT_CHUNK_BYTES as DEFAULT_CHUNK_BYTES
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.fleetctl.cli import SUCCESS as SUCCESS
from edge_agent_host.fleetctl.cli import configure, run
from edge_agent_host.fleetctl.client import FleetClient
from edge_agent_host.fleetctl.store import FleetStore
from edge_agent_host.fleetctl.views import FleetMessage, NodeView

logger = logging.getLogger(__name__)

__all__ = [
    "DeployPlan",
    "FleetClient",
    "FleetError",
    "FleetMessage",
    "FleetStore",
    "NodeView",
    "configure",
    "format_fleet",
    "run",
]
