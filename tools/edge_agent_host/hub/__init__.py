"""``edge-agent-hub``: the fleet's hub as a long-running service.

It hears the fleet over MQTT 5 (every replica hears presence and births; replicas that share a
``[mqtt] share_group`` split telemetry, events, results, deaths and commands through a shared
subscription), holds what it hears in a bounded queue, and writes it to one database, SQLite or
PostgreSQL, through one data layer: the fleet registry (nodes, presence, births, groups and
bundles), the telemetry history (raw for an hour, then downsampled, bounded per node), events,
and the journal of commands and their results. ``docs/hub.md`` is the guide.

One sub-package a part, each importing only the parts below it (the ``hub-parts`` contract in
``pyproject.toml``), from the top: ``cli`` (``edge-agent-hub``'s command lines), ``service``
(the supervised loop: :class:`~edge_agent_host.hub.service.loop.HubService`), ``web`` (the page,
``/api/fleet.json``, ``/metrics``), ``learning`` (fleet learning: deltas, merge, rounds, the
policy, catch-up), ``rollouts`` (staged rollouts: plan, tables, runner), ``storage`` (the data
layer over SQLite and PostgreSQL: :class:`HubDatabase`), ``traffic`` (what the hub hears and
publishes through its one broker connection) beside ``config`` (``hub.toml`` and ``rollout
start``'s options), ``gates`` (a rollout's criteria on behaviour) and ``base``.
"""

from __future__ import annotations

from edge_agent_host.hub.config.hub_toml import HubConfig, load_hub_config, parse_hub_config
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.traffic.queue import Heard, HeldMessages

__all__ = [
    "Heard",
    "HeldMessages",
    "HubConfig",
    "HubDatabase",
    "load_hub_config",
    "parse_hub_config",
]
