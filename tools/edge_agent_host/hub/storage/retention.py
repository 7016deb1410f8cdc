"""The bounds of ``[retention]``, applied: the two periodic series (:mod:`.series`), the health
history of groups no node declares any more, and the age and row bounds of the journals.

One pass touches at most ``maintenance_batch`` rows per table; the data layer runs it in one
transaction, on one replica at a time (:meth:`~.database.HubDatabase.maintain`).
"""

from __future__ import annotations

from typing import Final

from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.series import HEALTH, TELEMETRY
from edge_agent_host.hub.storage.statements import Statements

__all__ = ["apply_retention"]

#: The key column of each table a bound deletes rows of by age or by count.
_KEYS: Final = {"telemetry": "id", "health": "id", "events": "id", "results": "id",
                "commands": "nonce"}  # fmt: skip


def apply_retention(db: Statements, retention: RetentionSection, now: float) -> dict[str, int]:
    """One pass of every bound; what it did, by name (the status's ``maintenance`` counts)."""
    done = TELEMETRY.maintain(db, retention, now) | HEALTH.maintain(db, retention, now)
    done["health_undeclared"] = _undeclared_health(db, retention.maintenance_batch)
    limit = retention.maintenance_batch
    for table, keep_s, max_rows in (
        ("telemetry", retention.telemetry_keep_s, None),
        ("health", retention.telemetry_keep_s, None),
        ("node_health", retention.telemetry_keep_s, None),
        ("events", retention.events_keep_s, retention.events_max_rows),
        ("results", retention.commands_keep_s, retention.commands_max_rows),
        ("commands", retention.commands_keep_s, retention.commands_max_rows),
    ):
        done[f"{table}_expired"] = _expire(db, table, now - keep_s, limit)
        if max_rows is not None:
            done[f"{table}_over_bound"] = _over_bound(db, table, max_rows, limit)
    return done


def _undeclared_health(db: Statements, limit: int) -> int:
    """The health history of groups a node's newest birth does not declare goes with them (at
    most ``limit`` rows a pass): a node's history is of its groups alone, however many names it
    used before."""
    return db.execute(
        "DELETE FROM health WHERE id IN (SELECT h.id FROM health h WHERE NOT EXISTS (SELECT 1 "
        "FROM node_groups g WHERE g.node = h.node AND g.grp = h.grp) ORDER BY h.id LIMIT :n)",
        {"n": limit},
    )


def _expire(db: Statements, table: str, cut: float, limit: int) -> int:
    if table == "node_health":  # groups a node no longer reports
        return db.execute("DELETE FROM node_health WHERE ts < :cut", {"cut": cut})
    key = _KEYS[table]
    return db.execute(
        f"DELETE FROM {table} WHERE {key} IN "
        f"(SELECT {key} FROM {table} WHERE ts < :cut ORDER BY ts LIMIT :n)",
        {"cut": cut, "n": limit},
    )


def _over_bound(db: Statements, table: str, max_rows: int, limit: int) -> int:
    count = int(db.rows(f"SELECT COUNT(*) FROM {table}")[0][0])
    if count <= max_rows:
        return 0
    key = _KEYS[table]
    return db.execute(
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY ts LIMIT :n)",
        {"n": min(count - max_rows, limit)},
    )
