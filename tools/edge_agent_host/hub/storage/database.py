"""The hub's data layer: one interface over SQLite and PostgreSQL (:mod:`.engines`).

:class:`HubDatabase` migrates the schema (:mod:`.schema`), writes batches of heard messages in
one transaction each, applies the retention bounds (:meth:`HubDatabase.maintain`) and answers the
queries of the CLI (fleet, telemetry, events, commands, replicas, a summary). Every statement is
the same text for both engines.

Each kind of message is written by its writer (:mod:`.writers`: one table, idempotent writes);
the telemetry and health histories are kept by one rule (:mod:`.series`, applied with the other
bounds by :mod:`.retention`).

:meth:`HubDatabase.write` never raises for database trouble: it returns what it wrote, what it
rejected (one message the database refused: counted and dropped) and what is left because the
database became unreachable (the caller holds those and tries again).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.engines import Engine
from edge_agent_host.hub.storage.retention import apply_retention
from edge_agent_host.hub.storage.schema import LATEST, VERSIONS_TABLE, pending
from edge_agent_host.hub.storage.writers import (
    HealthWriter,
    Writer,
    register_senders,
    to_json,
    writers,
)
from edge_agent_host.hub.traffic.queue import Heard

logger = logging.getLogger(__name__)

__all__ = [
    "DatabaseUnavailableError",
    "HubDatabase",
    "SchemaError",
    "WriteOutcome",
]


class DatabaseUnavailableError(FleetError):
    """The database cannot be reached or used now."""


class SchemaError(FleetError):
    """The database's schema is newer than this software's (or is not a hub database)."""


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class WriteOutcome:
    """What :meth:`HubDatabase.write` did with a batch."""

    written: int = 0
    rejected: int = 0
    left: list[Heard] = field(default_factory=list)
    """Messages not written because the database became unavailable (hold them)."""


class HubDatabase:
    """The hub's registry, history and journals in one database (see the module docstring)."""

    def __init__(self, engine: Engine, *, health_groups_per_node: int = 64) -> None:
        self.engine = engine
        self._conn: Any = None
        self.schema_version = 0
        self.opens = 0
        self.transactions = 0
        self.written = 0
        self.rejected = 0
        self.last_error = ""
        self._health = HealthWriter(health_groups_per_node)
        self._writers: dict[str, Writer] = writers(self._health)

    @property
    def health_groups_per_node(self) -> int:
        """A node's groups whose health windows are kept at most (``[retention]``)."""
        return self._health.groups_per_node

    @health_groups_per_node.setter
    def health_groups_per_node(self, groups: int) -> None:
        self._health.groups_per_node = groups

    @property
    def health_dropped(self) -> dict[str, int]:
        """Health windows dropped: of a group the node's newest birth does not declare
        (``unknown_group``), or beyond the node's first ``[retention] health_groups_per_node``
        groups (``over_cap``); counted in this process, shown by the status and /metrics."""
        return self._health.dropped

    def add_writer(self, msg_type: str, write: Callable[[Heard], None]) -> None:
        """Messages of ``msg_type`` are written by ``write``, a part's writer of its own tables
        (inside the batch's transaction, through this database's :meth:`rows`, :meth:`execute`
        and :meth:`execute_many`), e.g. the learning deltas
        (:mod:`edge_agent_host.hub.learning.store`)."""
        self._writers[msg_type] = lambda _db, heard: write(heard)

    # connection -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self, *, migrate: bool = True) -> None:
        """Connect (and bring the schema up to date, or with ``migrate=False`` check that it
        is). :class:`DatabaseUnavailableError` when the database cannot be reached,
        :class:`SchemaError` when its schema is newer than this software's."""
        self.close()
        try:
            self._conn = self.engine.connect()
            self.schema_version = self._migrate() if migrate else self._check_schema()
        except Exception as err:
            self.close()
            if isinstance(err, FleetError) or not self.engine.is_database_error(err):
                raise
            self.last_error = _one_line(err)
            raise DatabaseUnavailableError(f"{self.engine.describe()}: {self.last_error}") from err
        self.opens += 1
        self.last_error = ""

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do with it
                logger.debug("closing the database connection failed", exc_info=True)

    def abort(self) -> None:
        """From another thread: make the call that hangs on the connection fail (it is then
        closed by that call, as lost)."""
        conn = self._conn
        if conn is not None:
            self.engine.abort(conn)

    def _lost(self, err: BaseException) -> None:
        self.last_error = _one_line(err)
        logger.debug("database %s unavailable: %s", self.engine.describe(), self.last_error)
        self.close()

    # low level ------------------------------------------------------------------------------
    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._conn.execute(self.engine.sql(sql), params if params is not None else ())

    def _many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cur = self._conn.cursor()
        try:
            cur.executemany(self.engine.sql(sql), rows)
        finally:
            cur.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._conn is None:
            raise DatabaseUnavailableError(f"{self.engine.describe()}: not connected")
        self._conn.execute(self.engine.begin_sql)
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            try:
                self._conn.execute("ROLLBACK")
            except Exception:  # the connection is gone: the server rolled back already
                logger.debug("rollback failed", exc_info=True)
            raise
        self.transactions += 1

    # schema ---------------------------------------------------------------------------------
    def _migrate(self) -> int:
        with self._transaction():
            self.engine.lock_migrations(self._conn)
            self._conn.execute(self.engine.ddl(VERSIONS_TABLE))
            applied = {int(r[0]) for r in self._run("SELECT version FROM schema_migrations")}
            self._refuse_newer(applied)
            for migration in pending(applied):
                for statement in migration.statements:
                    self._conn.execute(self.engine.ddl(statement))
                self._run(
                    "INSERT INTO schema_migrations (version, description, applied) "
                    "VALUES (:version, :description, :applied)",
                    {
                        "version": migration.version,
                        "description": migration.description,
                        "applied": time.time(),
                    },
                )
                applied.add(migration.version)
                logger.info(
                    "database %s: schema migrated to version %d (%s)",
                    self.engine.describe(),
                    migration.version,
                    migration.description,
                )
        return max(applied)

    def _check_schema(self) -> int:
        try:
            rows = self._run("SELECT version FROM schema_migrations").fetchall()
        except Exception as err:
            if self.engine.is_database_error(err) and "schema_migrations" in str(err):
                raise SchemaError(
                    f"{self.engine.describe()} is not a hub database (no schema_migrations "
                    "table): has edge-agent-hub run against it?"
                ) from err
            raise
        applied = {int(r[0]) for r in rows}
        self._refuse_newer(applied)
        if not applied:
            raise SchemaError(f"{self.engine.describe()} has no hub schema yet")
        return max(applied)

    def _refuse_newer(self, applied: set[int]) -> None:
        newer = sorted(v for v in applied if v > LATEST)
        if newer:
            raise SchemaError(
                f"{self.engine.describe()}: schema version {newer[-1]} is newer than this "
                f"edge-agent-hub's ({LATEST}); upgrade edge-agent"
            )

    # writing ----------------------------------------------------------------------------------
    def write(self, batch: Sequence[Heard]) -> WriteOutcome:
        """Write ``batch`` in one transaction (one by one if the database refuses a message)."""
        if not batch:
            return WriteOutcome()
        if self._conn is None:
            return WriteOutcome(left=list(batch))
        try:
            with self._transaction():
                self._apply_all(batch)
        except Exception as err:
            if self._unavailable(err):
                self._lost(err)
                return WriteOutcome(left=list(batch))
        else:
            self.written += len(batch)
            return WriteOutcome(written=len(batch))
        return self._write_one_by_one(batch)

    def _unavailable(self, err: BaseException) -> bool:
        # A part's writer that read through query() met the same trouble and said so already
        # (the connection is closed): the batch waits, as for the writers' own statements.
        if isinstance(err, DatabaseUnavailableError):
            return True
        return self.engine.is_database_error(err) and self.engine.is_unavailable(err)

    def _write_one_by_one(self, batch: Sequence[Heard]) -> WriteOutcome:
        outcome = WriteOutcome()
        for index, heard in enumerate(batch):
            try:
                with self._transaction():
                    self._apply_all((heard,))
            except Exception as err:
                if self._unavailable(err):
                    self._lost(err)
                    outcome.left = list(batch[index:])
                    break
                outcome.rejected += 1
                logger.warning(
                    "dropped a %s message of node %s that the database refused: %s",
                    heard.kind,
                    heard.node,
                    _one_line(err),
                    exc_info=not self.engine.is_database_error(err),
                )
            else:
                outcome.written += 1
        self.written += outcome.written
        self.rejected += outcome.rejected
        return outcome

    def _apply_all(self, batch: Sequence[Heard]) -> None:
        register_senders(self, batch)
        for heard in batch:
            write = self._writers.get(heard.kind)
            if write is not None:
                write(self, heard)

    # replicas ---------------------------------------------------------------------------------
    def heartbeat(
        self, hub_id: str, *, host: str, pid: int, started: float, status: Mapping[str, Any]
    ) -> bool:
        """Record this replica's heartbeat and status summary; False when the database is
        unavailable (it is then closed)."""
        if self._conn is None:
            return False
        try:
            with self._transaction():
                self._run(
                    "INSERT INTO hubs (hub_id, host, pid, started, heartbeat, status) "
                    "VALUES (:hub_id, :host, :pid, :started, :now, :status) "
                    "ON CONFLICT (hub_id) DO UPDATE SET host = excluded.host, "
                    "pid = excluded.pid, started = excluded.started, "
                    "heartbeat = excluded.heartbeat, status = excluded.status",
                    {
                        "hub_id": hub_id,
                        "host": host,
                        "pid": pid,
                        "started": started,
                        "now": time.time(),
                        "status": to_json(status),
                    },
                )
        except Exception as err:
            if not self.engine.is_database_error(err):
                raise
            self._lost(err)
            return False
        return True

    # retention --------------------------------------------------------------------------------
    def maintain(self, retention: RetentionSection, now: float | None = None) -> dict[str, int]:
        """Apply the bounds of ``[retention]`` (at most ``maintenance_batch`` rows per table per
        call); returns what it did. Only one replica maintains at a time (PostgreSQL: an
        advisory lock; the others skip). Raises :class:`DatabaseUnavailableError`."""
        now = time.time() if now is None else now
        try:
            with self._transaction():
                if not self.engine.try_lock_maintenance(self._conn):
                    return {"skipped": 1}
                done = apply_retention(self, retention, now)
        except Exception as err:
            if not self.engine.is_database_error(err):
                raise
            self._lost(err)
            raise DatabaseUnavailableError(f"maintenance: {self.last_error}") from err
        return done

    # statements, for the writers, the bounds and the other parts' tables (rollouts, learning) ---
    def transaction(self) -> AbstractContextManager[None]:
        """One transaction (:class:`DatabaseUnavailableError` when not connected)."""
        return self._transaction()

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows of one query inside :meth:`transaction` (database errors reach the
        transaction's owner as they are: :meth:`query` outside one)."""
        rows: list[Any] = self._run(sql, params).fetchall()
        return rows

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """One statement inside :meth:`transaction`; returns the rows it changed."""
        return max(int(self._run(sql, params).rowcount), 0)

    def execute_many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement for each of ``rows``, inside :meth:`transaction`."""
        self._many(sql, rows)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows of one query (the connection counts as lost on database trouble)."""
        return self._query(sql, params)

    # queries ----------------------------------------------------------------------------------
    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        if self._conn is None:
            raise DatabaseUnavailableError(f"{self.engine.describe()}: not connected")
        try:
            rows: list[Any] = self._run(sql, params).fetchall()
        except Exception as err:
            if not self.engine.is_database_error(err):
                raise
            self._lost(err)
            raise DatabaseUnavailableError(f"{self.engine.describe()}: {self.last_error}") from err
        return rows

    def fleet(self) -> list[dict[str, Any]]:
        """Every node: presence, birth, deaths, newest telemetry (the rows of
        :func:`edge_agent_host.fleet.table.format_fleet`, as the operator's client's store gives
        them)."""
        rows = self._query(
            "SELECT node, online, state_bdseq, birth_bdseq, birth, last_seen, deaths, "
            "telemetry_ts, telemetry, first_seen, death_reason, software_version, profile "
            "FROM nodes ORDER BY node"
        )
        return [
            {
                "node": r[0],
                "online": None if r[1] is None else bool(r[1]),
                "bdseq": r[2] if r[2] is not None else r[3],
                "birth": _loads(r[4]),
                "last_seen": r[5],
                "deaths": r[6],
                "telemetry_ts": r[7],
                "telemetry": _loads(r[8]),
                "first_seen": r[9],
                "death_reason": r[10],
                "software_version": r[11],
                "profile": r[12],
            }
            for r in rows
        ]

    def node_names(self) -> list[str]:
        """Every node of the registry, by name (what a command line checks a node it is given
        against: :mod:`edge_agent_host.fleet.known_nodes`)."""
        return [r[0] for r in self._query("SELECT node FROM nodes ORDER BY node")]

    def groups(self) -> list[dict[str, Any]]:
        """Every node's groups: agents and the bundle each runs."""
        rows = self._query(
            "SELECT node, grp, agents, bundle, bundle_sha256, since FROM node_groups "
            "ORDER BY node, grp"
        )
        keys = ("node", "group", "agents", "bundle", "bundle_sha256", "since")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def telemetry(
        self, node: str, *, since: float = 0.0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The node's telemetry history from ``since`` (wall clock), oldest first."""
        rows = self._query(
            "SELECT ts, bdseq, seq, coarse, samples, body FROM telemetry "
            "WHERE node = :node AND ts >= :since ORDER BY ts, id LIMIT :n",
            {"node": node, "since": since, "n": limit},
        )
        return [
            {
                "ts": r[0],
                "bdseq": r[1],
                "seq": r[2],
                "coarse": bool(r[3]),
                "samples": r[4],
                "body": _loads(r[5]),
            }
            for r in rows
        ]

    def health(
        self, node: str, *, group: str | None = None, since: float = 0.0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The node's health history from ``since`` (wall clock), oldest first: one row per
        group and window, ``measures`` as ``{name: {"mean", "p95", "n"}}``."""
        which = "" if group is None else "AND grp = :grp "
        rows = self._query(
            "SELECT grp, ts, window_s, model, agent_steps, coarse, samples, drift_alarm, "
            "drift_statistic, drift_threshold, measures FROM health "
            f"WHERE node = :node {which}AND ts >= :since ORDER BY ts, id LIMIT :n",
            {"node": node, "grp": group, "since": since, "n": limit},
        )
        return [
            {
                "group": r[0],
                "ts": r[1],
                "window_s": r[2],
                "model": r[3],
                "agent_steps": r[4],
                "coarse": bool(r[5]),
                "samples": r[6],
                "drift": None
                if r[7] is None
                else {"alarm": bool(r[7]), "statistic": r[8], "threshold": r[9]},
                "measures": _summaries(r[10]),
            }
            for r in rows
        ]

    def latest_health(self) -> list[dict[str, Any]]:
        """The newest window of every node's groups: ``node``, ``group``, ``ts``,
        ``window_s`` and the group's :class:`~edge_agent.fleet.protocol.GroupHealth` fields."""
        rows = self._query(
            "SELECT node, grp, ts, window_s, body FROM node_health ORDER BY node, grp"
        )
        return [
            {"node": r[0], "group": r[1], "ts": r[2], "window_s": r[3], **json.loads(r[4])}
            for r in rows
        ]

    def health_reported(self) -> dict[str, set[str]]:
        """Which measures each group reported in its nodes' newest windows (what a rollout's
        criterion is checked against)."""
        out: dict[str, set[str]] = {}
        for row in self.latest_health():
            out.setdefault(row["group"], set()).update(row.get("measures") or {})
        return out

    def health_means(
        self, nodes: Sequence[str], group: str, measure: str, since: float, until: float
    ) -> dict[str, list[float]]:
        """Per node of ``nodes``: the mean of ``measure`` of each of its windows of ``group``
        that lie inside ``[since, until]`` (a window that began before ``since`` is left out),
        oldest first. A node without such a window is absent."""
        if not nodes:
            return {}
        rows = self._query(
            "SELECT node, measures FROM health WHERE grp = :grp AND ts - window_s >= :since "
            "AND ts <= :until ORDER BY ts, id",
            {"grp": group, "since": since, "until": until},
        )
        wanted = set(nodes)
        out: dict[str, list[float]] = {}
        for node, text in rows:
            if node not in wanted:
                continue
            summary = json.loads(text).get(measure)
            if summary is not None:
                out.setdefault(node, []).append(float(summary[0]))
        return out

    def events(
        self,
        *,
        node: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        """Events with an id above ``after_id`` (all nodes, or one), in insertion order: the
        first ``limit`` of them, or with ``newest`` the last ``limit``."""
        which = "" if node is None else "AND node = :node "
        order = "DESC" if newest else "ASC"
        rows = self._query(
            "SELECT id, node, ts, seq, kind, severity, grp, detail, data FROM events "
            f"WHERE id > :after {which}ORDER BY id {order} LIMIT :n",
            {"after": after_id, "node": node, "n": limit},
        )
        if newest:
            rows.reverse()
        return [
            {
                "id": r[0],
                "node": r[1],
                "ts": r[2],
                "seq": r[3],
                "kind": r[4],
                "severity": r[5],
                "group": r[6],
                "detail": r[7],
                "data": _loads(r[8]),
            }
            for r in rows
        ]

    def commands(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest commands with their newest result (None while unanswered)."""
        rows = self._query(
            "SELECT c.nonce, c.target, c.name, c.key_id, c.verified, c.sender, c.ts, c.expires, "
            "c.args, r.code, r.detail, r.ts FROM commands c LEFT JOIN results r ON r.id = "
            "(SELECT id FROM results WHERE nonce = c.nonce ORDER BY ts DESC, id DESC LIMIT 1) "
            "ORDER BY c.ts DESC LIMIT :n",
            {"n": limit},
        )
        keys = ["nonce", "target", "name", "key_id", "verified", "sender", "ts", "expires"]
        keys += ["args", "code", "detail", "answered"]
        out = []
        for r in rows:
            row = dict(zip(keys, r, strict=True))
            row["verified"] = bool(row["verified"])
            row["args"] = _loads(row["args"])
            out.append(row)
        return out

    def hubs(self) -> list[dict[str, Any]]:
        """Every replica that wrote a heartbeat: its host, pid, last heartbeat, status."""
        rows = self._query(
            "SELECT hub_id, host, pid, started, heartbeat, status FROM hubs ORDER BY hub_id"
        )
        keys = ("hub_id", "host", "pid", "started", "heartbeat", "status")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for row in out:
            row["status"] = _loads(row["status"])
        return out

    def summary(self) -> dict[str, int]:
        """Row counts: nodes (and online), telemetry, events, commands, results, replicas."""
        out: dict[str, int] = {"schema_version": self.schema_version}
        counts = self._query(
            "SELECT (SELECT COUNT(*) FROM nodes), "
            "(SELECT COUNT(*) FROM nodes WHERE online = 1), "
            "(SELECT COUNT(*) FROM telemetry), (SELECT COUNT(*) FROM events), "
            "(SELECT COUNT(*) FROM commands), (SELECT COUNT(*) FROM results), "
            "(SELECT COUNT(*) FROM hubs)"
        )[0]
        keys = ("nodes", "online", "telemetry_rows", "events", "commands", "results", "hubs")
        out.update({k: int(v) for k, v in zip(keys, counts, strict=True)})
        return out


def _summaries(text: str) -> dict[str, dict[str, float]]:
    """The stored ``{measure: [mean, p95, n]}`` as ``{measure: {"mean", "p95", "n"}}``."""
    return {name: {"mean": v[0], "p95": v[1], "n": v[2]} for name, v in json.loads(text).items()}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
