"""Opening the hub service's database from a config file, for the commands that read it (and
the rollout commands, which also write)."""

from __future__ import annotations

from typing import Any

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.config.hub_toml import HubConfigFile
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine

__all__ = ["open_database"]


def open_database(source: HubConfigFile, *, write: bool = False) -> HubDatabase:
    """The service's database, opened for reading (nothing is created or migrated), or with
    ``write`` for the rollout commands (the schema is brought up to date first)."""
    from edge_agent_host.hub.service.loop import make_engine  # noqa: PLC0415

    config = source.config
    path = config.sqlite_path
    if path is not None:
        if not path.exists():
            raise FleetError(f"no hub database at {path}: has edge-agent-hub run with this config?")
        engine: Any = SqliteEngine(path, readonly=not write)
    else:
        engine = make_engine(source, application_name="edge-agent-hub cli")
    db = HubDatabase(engine)
    db.open(migrate=write)
    return db
