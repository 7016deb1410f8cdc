"""``edge-agent-hub``: the fleet's hub as a long-running service.

It hears the fleet over MQTT 5 (every replica hears presence and births; replicas that share a
``[mqtt] share_group`` split telemetry, events, results, deaths and commands through a shared
subscription), holds what it hears in a bounded queue, and writes it to one database, SQLite or
PostgreSQL, through one data layer: the fleet registry (nodes, presence, births, groups and
bundles), the telemetry history (raw for an hour, then downsampled, bounded per node), events,
and the journal of commands and their results. ``docs/hub.md`` is the guide.

One job a module: ``config`` (the TOML file), ``listener`` (subscriptions; decode, validate,
count, enqueue), ``queue`` (the bounded queue in front of the database), ``schema`` (versioned
migrations), ``engines`` (SQLite and PostgreSQL), ``store`` (the data layer:
:class:`HubDatabase`), ``downsample`` (the telemetry downsampling plan), ``service`` (the
supervised loop: :class:`HubService`) and ``cli`` (``edge-agent-hub``).
"""

from __future__ import annotations

from edge_agent_host.hub.config import HubConfig, load_hub_config, parse_hub_config
from edge_agent_host.hub.queue import Heard, HeldMessages
from edge_agent_host.hub.store import HubDatabase

__all__ = [
    "Heard",
    "HeldMessages",
    "HubConfig",
    "HubDatabase",
    "load_hub_config",
    "parse_hub_config",
]
