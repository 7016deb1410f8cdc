"""A periodic history kept the telemetry way: the one rule of the ``telemetry`` and ``health``
tables (docs/hub.md "Telemetry history and retention").

A series is rows that arrive every period per key -- a node's telemetry, a node's group's health
window -- each with its envelope's ``ts`` and two columns the rule keeps, ``coarse`` and
``samples``. Raw rows older than ``[retention] telemetry_raw_s`` become one point per key and
``telemetry_step_s`` (:mod:`.downsample`: the newest row of its bucket stays and counts the raw
rows it stands for); each key keeps at most ``telemetry_max_rows_per_node`` rows, the oldest go
first; and nothing older than ``telemetry_keep_s`` stays. :data:`TELEMETRY` and :data:`HEALTH`
are the two series; :mod:`.retention` applies them, at most ``maintenance_batch`` rows a table
and pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.downsample import DownsamplePlan, downsample_cut, plan_downsample
from edge_agent_host.hub.storage.statements import Statements

__all__ = ["HEALTH", "MAX_KEYS_PER_PASS", "TELEMETRY", "Series"]

#: Keys (nodes, or nodes' groups) over their bound handled per maintenance pass at most.
MAX_KEYS_PER_PASS: Final = 1000


@dataclass(frozen=True)
class Series:
    """One periodic history: its ``table`` and the columns its rows are kept per (``key``)."""

    table: str
    key: tuple[str, ...]

    def downsample(self, db: Statements, retention: RetentionSection, now: float) -> DownsamplePlan:
        """One pass of downsampling: at most ``maintenance_batch`` raw rows before the cut
        reduced to their buckets' points; the plan it applied."""
        step = retention.telemetry_step_s
        cut = downsample_cut(now, retention.telemetry_raw_s, step)
        limit = retention.maintenance_batch
        keys = ", ".join(self.key)
        rows = db.rows(
            f"SELECT id, {keys}, ts, samples FROM {self.table} WHERE coarse = 0 AND ts < :cut "
            f"ORDER BY {keys}, ts, id LIMIT :n",
            {"cut": cut, "n": limit},
        )
        width = len(self.key)
        plan = plan_downsample(
            # node and group names have no '/' (they are topic levels): one key of them all
            [
                (int(r[0]), "/".join(str(k) for k in r[1 : 1 + width]), float(r[1 + width]),
                 int(r[2 + width]))
                for r in rows
            ],
            step,
            complete=len(rows) < limit,
        )  # fmt: skip
        db.execute_many(
            f"UPDATE {self.table} SET coarse = 1, samples = :samples WHERE id = :id",
            [{"id": i, "samples": n} for i, n in plan.keep.items()],
        )
        db.execute_many(f"DELETE FROM {self.table} WHERE id = :id", [{"id": i} for i in plan.drop])
        return plan

    def bound(self, db: Statements, retention: RetentionSection) -> int:
        """At most ``telemetry_max_rows_per_node`` rows per key (the oldest go, at most
        ``maintenance_batch`` per key and :data:`MAX_KEYS_PER_PASS` keys a pass); the rows
        deleted."""
        bound = retention.telemetry_max_rows_per_node
        keys = ", ".join(self.key)
        over = db.rows(
            f"SELECT {keys}, COUNT(*) FROM {self.table} GROUP BY {keys} "
            f"HAVING COUNT(*) > :bound ORDER BY {keys} LIMIT :n",
            {"bound": bound, "n": MAX_KEYS_PER_PASS},
        )
        match = " AND ".join(f"{k} = :{k}" for k in self.key)
        deleted = 0
        for row in over:
            params: dict[str, Any] = dict(zip(self.key, row[:-1], strict=True))
            params["n"] = min(int(row[-1]) - bound, retention.maintenance_batch)
            deleted += db.execute(
                f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} "
                f"WHERE {match} ORDER BY ts, id LIMIT :n)",
                params,
            )
        return deleted

    def maintain(self, db: Statements, retention: RetentionSection, now: float) -> dict[str, int]:
        """Downsample, then bound per key: what it did, by name (``{table}_downsampled``, the
        rows deleted into points; ``{table}_points_kept``; ``{table}_over_node_bound``)."""
        plan = self.downsample(db, retention, now)
        return {
            f"{self.table}_downsampled": len(plan.drop),
            f"{self.table}_points_kept": len(plan.keep),
            f"{self.table}_over_node_bound": self.bound(db, retention),
        }


#: Each node's telemetry.
TELEMETRY: Final = Series("telemetry", ("node",))
#: Each node's groups' health windows (docs/health.md), per node and group.
HEALTH: Final = Series("health", ("node", "grp"))
