"""The hub's data layer: one interface over SQLite and PostgreSQL (:mod:`.engines`).

:class:`HubDatabase` migrates the schema (:mod:`.schema`), writes batches of heard messages in
one transaction each, applies the retention bounds (:meth:`HubDatabase.maintain`) and answers the
queries of the CLI (fleet, telemetry, events, commands, replicas, a summary). Every statement is
the same text for both engines.

Writes are idempotent, so that at-least-once delivery, outbox re-sends and replicas that hear the
same retained presence never count a message twice or let an old one win:

* telemetry, events and results are unique by ``(node, seq, ts)`` (a re-send carries the same
  envelope) and inserted with ``ON CONFLICT DO NOTHING``;
* a node's presence is ordered by ``(bdseq, offline after online)``: a will of an older session
  than the presence stored, or an ``online`` of a session whose will was already stored, changes
  nothing; an ``online`` with a smaller ``bdseq`` but a newer clock is taken (a node whose state
  directory was wiped starts counting again);
* a birth replaces the stored one when its ``bdseq`` is newer, or its clock is not older (a
  rebirth keeps the session's ``bdseq``); the node's groups follow the birth that is stored;
* a death counts once per death timestamp; a command once per nonce.

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
from typing import Any, Final

from edge_agent.fleet.protocol import (
    Birth,
    Command,
    CommandResult,
    Death,
    Event,
    Health,
    NodeState,
    Telemetry,
    as_builtins,
)
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.downsample import downsample_cut, plan_downsample
from edge_agent_host.hub.storage.engines import Engine
from edge_agent_host.hub.storage.schema import LATEST, VERSIONS_TABLE, pending
from edge_agent_host.hub.traffic.queue import Heard

logger = logging.getLogger(__name__)

HEALTH_DROPPED: Final = ("unknown_group", "over_cap")
"""Why a health window is dropped (the labels of ``edge_agent_hub_health_dropped_total``)."""

__all__ = [
    "HEALTH_DROPPED",
    "DatabaseUnavailableError",
    "HubDatabase",
    "SchemaError",
    "WriteOutcome",
    "to_json",
]

#: Nodes over their telemetry bound handled per maintenance pass at most.
_MAX_NODES_PER_PASS = 1000


class DatabaseUnavailableError(FleetError):
    """The database cannot be reached or used now."""


class SchemaError(FleetError):
    """The database's schema is newer than this software's (or is not a hub database)."""


def to_json(value: Any) -> str:
    """JSON text of a message body: bytes as hex, keys sorted, ASCII only (so NUL and every
    control character are escaped: both engines store it as plain TEXT)."""

    def default(obj: object) -> object:
        if isinstance(obj, bytes | bytearray):
            return obj.hex()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.dumps(value, default=default, sort_keys=True)


def _text(value: str | None) -> str | None:
    """A free-text field as PostgreSQL's TEXT takes it (no NUL), the same in SQLite."""
    return None if value is None else value.replace("\x00", "\ufffd")


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
        self._writers: dict[str, Callable[[Heard], None]] = {}
        self.health_groups_per_node = health_groups_per_node
        """A node's groups whose health windows are kept at most (``[retention]``)."""
        self.health_dropped = dict.fromkeys(HEALTH_DROPPED, 0)
        """Health windows dropped: of a group the node's newest birth does not declare
        (``unknown_group``), or beyond the node's first ``health_groups_per_node`` groups
        (``over_cap``); counted in this process, shown by the status and /metrics."""

    def add_writer(self, msg_type: str, write: Callable[[Heard], None]) -> None:
        """Messages of ``msg_type`` are written by ``write`` (inside the batch's transaction,
        through :meth:`execute`), e.g. the learning deltas
        (:mod:`edge_agent_host.hub.learning.store`)."""
        self._writers[msg_type] = write

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
        self._register_nodes(batch)
        for heard in batch:
            body = heard.envelope.body
            if isinstance(body, NodeState):
                self._state(heard, body)
            elif isinstance(body, Birth):
                self._birth(heard, body)
            elif isinstance(body, Death):
                self._death(heard, body)
            elif isinstance(body, Telemetry):
                self._telemetry(heard, body)
            elif isinstance(body, Health):
                self._health(heard, body)
            elif isinstance(body, Event):
                self._event(heard, body)
            elif isinstance(body, CommandResult):
                self._result(heard, body)
            elif isinstance(body, Command):
                self._command(heard, body)
            elif heard.kind in self._writers:
                self._writers[heard.kind](heard)

    def _register_nodes(self, batch: Sequence[Heard]) -> None:
        """A row for every sender, and ``last_seen`` for those heard live (not retained)."""
        first: dict[str, float] = {}
        seen: dict[str, float] = {}
        for heard in batch:
            if heard.kind == "command":
                continue  # a command names its target, which may not exist
            first.setdefault(heard.node, heard.received)
            if not heard.retained:
                seen[heard.node] = max(seen.get(heard.node, 0.0), heard.received)
        self._many(
            "INSERT INTO nodes (node, first_seen) VALUES (:node, :now) "
            "ON CONFLICT (node) DO NOTHING",
            [{"node": n, "now": t} for n, t in sorted(first.items())],
        )
        self._many(
            "UPDATE nodes SET last_seen = :now "
            "WHERE node = :node AND (last_seen IS NULL OR last_seen < :now)",
            [{"node": n, "now": t} for n, t in sorted(seen.items())],
        )

    def _state(self, heard: Heard, body: NodeState) -> None:
        env = heard.envelope
        self._run(
            "UPDATE nodes SET online = :online, state_bdseq = :bdseq, state_ts = :ts "
            "WHERE node = :node AND (state_bdseq IS NULL OR :bdseq > state_bdseq "
            "OR (:bdseq = state_bdseq AND NOT (online = 0 AND :online = 1)) "
            "OR (:online = 1 AND :bdseq < state_bdseq AND :ts > state_ts))",
            {"online": int(body.online), "bdseq": env.bdseq, "ts": env.ts, "node": heard.node},
        )

    def _birth(self, heard: Heard, body: Birth) -> None:
        env = heard.envelope
        cur = self._run(
            "UPDATE nodes SET birth = :birth, birth_bdseq = :bdseq, birth_ts = :ts, "
            "software_version = :version, profile = :profile "
            "WHERE node = :node AND (birth_bdseq IS NULL OR :bdseq > birth_bdseq "
            "OR :ts >= birth_ts)",
            {
                "birth": to_json(as_builtins(body)),
                "bdseq": env.bdseq,
                "ts": env.ts,
                "version": _text(body.software_version),
                "profile": _text(body.profile),
                "node": heard.node,
            },
        )
        if cur.rowcount != 1:
            return  # an older birth than the one stored
        self._run("DELETE FROM node_groups WHERE node = :node", {"node": heard.node})
        # The newest window of a group the node no longer has goes with it: the series of
        # /metrics and the page are the groups its newest birth declares, no more.
        self._many(
            "DELETE FROM node_health WHERE node = :node AND grp = :grp",
            [
                {"node": heard.node, "grp": str(r[0])}
                for r in self._run(
                    "SELECT grp FROM node_health WHERE node = :node", {"node": heard.node}
                ).fetchall()
                if str(r[0]) not in body.groups
            ],
        )
        self._many(
            "INSERT INTO node_groups (node, grp, agents, bundle, bundle_sha256, since, tick_hz) "
            "VALUES (:node, :grp, :agents, :bundle, :sha, :since, :hz)",
            [
                {
                    "node": heard.node,
                    "grp": name,
                    "agents": group.agents,
                    "bundle": _text(group.bundle),
                    "sha": group.bundle_sha256,
                    "since": env.ts,
                    "hz": body.tick_hz,
                }
                for name, group in sorted(body.groups.items())
            ],
        )

    def _death(self, heard: Heard, body: Death) -> None:
        self._run(
            "UPDATE nodes SET deaths = deaths + 1, death_ts = :ts, death_reason = :reason "
            "WHERE node = :node AND (death_ts IS NULL OR death_ts < :ts)",
            {"ts": heard.envelope.ts, "reason": body.reason.value, "node": heard.node},
        )

    def _telemetry(self, heard: Heard, body: Telemetry) -> None:
        env = heard.envelope
        text = to_json(as_builtins(body))
        self._run(
            "INSERT INTO telemetry (node, ts, bdseq, seq, received, uptime_s, rss_bytes, "
            "budget_used_bytes, budget_total_bytes, ticks, tick_p50_ms, tick_p99_ms, overruns, "
            "cpu_temp_c, outbox_depth, body) VALUES (:node, :ts, :bdseq, :seq, :received, "
            ":uptime, :rss, :used, :total, :ticks, :p50, :p99, :overruns, :temp, :outbox, :body) "
            "ON CONFLICT (node, seq, ts) DO NOTHING",
            {
                "node": heard.node,
                "ts": env.ts,
                "bdseq": env.bdseq,
                "seq": env.seq,
                "received": heard.received,
                "uptime": body.uptime_s,
                "rss": body.rss_bytes,
                "used": body.budget_used_bytes,
                "total": body.budget_total_bytes,
                "ticks": body.ticks,
                "p50": body.tick_p50_ms,
                "p99": body.tick_p99_ms,
                "overruns": body.overruns,
                "temp": body.cpu_temp_c,
                "outbox": body.outbox.depth_rows if body.outbox is not None else None,
                "body": text,
            },
        )
        self._run(
            "UPDATE nodes SET telemetry_ts = :ts, telemetry = :body "
            "WHERE node = :node AND (telemetry_ts IS NULL OR telemetry_ts < :ts)",
            {"ts": env.ts, "body": text, "node": heard.node},
        )

    def _health(self, heard: Heard, body: Health) -> None:
        env = heard.envelope
        rows = []
        newest = []
        declared = [
            str(r[0])
            for r in self._run(
                "SELECT grp FROM node_groups WHERE node = :node ORDER BY grp", {"node": heard.node}
            ).fetchall()
        ]
        kept = set(declared[: self.health_groups_per_node])
        for name, group in sorted(body.groups.items()):
            if name not in kept:  # bounds from the birth, not from the message (STYLE 32)
                self.health_dropped["over_cap" if name in declared else "unknown_group"] += 1
                continue
            drift = group.drift
            rows.append(
                {
                    "node": heard.node,
                    "grp": name,
                    "ts": env.ts,
                    "bdseq": env.bdseq,
                    "seq": env.seq,
                    "received": heard.received,
                    "window_s": body.window_s,
                    "model": _text(group.model),
                    "steps": group.agent_steps,
                    "alarm": None if drift is None else int(drift.alarm),
                    "statistic": None if drift is None else drift.statistic,
                    "threshold": None if drift is None else drift.threshold,
                    "measures": to_json(
                        {k: [m.mean, m.p95, m.n] for k, m in sorted(group.measures.items())}
                    ),
                }
            )
            newest.append(
                {
                    "node": heard.node,
                    "grp": name,
                    "ts": env.ts,
                    "window_s": body.window_s,
                    "model": _text(group.model),
                    "body": to_json(as_builtins(group)),
                }
            )
        self._many(
            "INSERT INTO health (node, grp, ts, bdseq, seq, received, window_s, model, "
            "agent_steps, drift_alarm, drift_statistic, drift_threshold, measures) VALUES "
            "(:node, :grp, :ts, :bdseq, :seq, :received, :window_s, :model, :steps, :alarm, "
            ":statistic, :threshold, :measures) ON CONFLICT (node, grp, seq, ts) DO NOTHING",
            rows,
        )
        self._many(
            "INSERT INTO node_health (node, grp, ts, window_s, model, body) VALUES (:node, :grp, "
            ":ts, :window_s, :model, :body) ON CONFLICT (node, grp) DO UPDATE SET "
            "ts = excluded.ts, window_s = excluded.window_s, model = excluded.model, "
            "body = excluded.body "
            "WHERE node_health.ts < excluded.ts",
            newest,
        )

    def _event(self, heard: Heard, body: Event) -> None:
        env = heard.envelope
        self._run(
            "INSERT INTO events (node, ts, bdseq, seq, received, kind, severity, grp, detail, "
            "data) VALUES (:node, :ts, :bdseq, :seq, :received, :kind, :severity, :grp, "
            ":detail, :data) ON CONFLICT (node, seq, ts) DO NOTHING",
            {
                "node": heard.node,
                "ts": env.ts,
                "bdseq": env.bdseq,
                "seq": env.seq,
                "received": heard.received,
                "kind": body.kind.value,
                "severity": body.severity.value,
                "grp": body.group,
                "detail": _text(body.detail),
                "data": to_json(body.data),
            },
        )

    def _result(self, heard: Heard, body: CommandResult) -> None:
        env = heard.envelope
        self._run(
            "INSERT INTO results (node, ts, bdseq, seq, received, nonce, name, code, detail, "
            "data) VALUES (:node, :ts, :bdseq, :seq, :received, :nonce, :name, :code, "
            ":detail, :data) ON CONFLICT (node, seq, ts) DO NOTHING",
            {
                "node": heard.node,
                "ts": env.ts,
                "bdseq": env.bdseq,
                "seq": env.seq,
                "received": heard.received,
                "nonce": body.nonce.hex(),
                "name": body.name,
                "code": body.code.value,
                "detail": _text(body.detail),
                "data": to_json(body.data),
            },
        )

    def _command(self, heard: Heard, body: Command) -> None:
        env = heard.envelope
        self._run(
            "INSERT INTO commands (nonce, target, name, key_id, verified, sender, ts, expires, "
            "received, args) VALUES (:nonce, :target, :name, :key_id, :verified, :sender, :ts, "
            ":expires, :received, :args) ON CONFLICT (nonce) DO NOTHING",
            {
                "nonce": body.nonce.hex(),
                "target": body.target,
                "name": body.name,
                "key_id": _text(body.key_id),
                "verified": int(heard.verified),
                "sender": env.node,
                "ts": env.ts,
                "expires": body.expires,
                "received": heard.received,
                "args": to_json(body.args),
            },
        )

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
        done: dict[str, int] = {}
        try:
            with self._transaction():
                if not self.engine.try_lock_maintenance(self._conn):
                    return {"skipped": 1}
                self._downsample(retention, now, done)
                self._bound_per_node(retention, done)
                self._downsample_health(retention, now, done)
                self._bound_health(retention, done)
                self._undeclared_health(retention, done)
                limit = retention.maintenance_batch
                for table, keep_s, max_rows in (
                    ("telemetry", retention.telemetry_keep_s, None),
                    ("health", retention.telemetry_keep_s, None),
                    ("node_health", retention.telemetry_keep_s, None),
                    ("events", retention.events_keep_s, retention.events_max_rows),
                    ("results", retention.commands_keep_s, retention.commands_max_rows),
                    ("commands", retention.commands_keep_s, retention.commands_max_rows),
                ):
                    done[f"{table}_expired"] = self._expire(table, now - keep_s, limit)
                    if max_rows is not None:
                        done[f"{table}_over_bound"] = self._over_bound(table, max_rows, limit)
        except Exception as err:
            if not self.engine.is_database_error(err):
                raise
            self._lost(err)
            raise DatabaseUnavailableError(f"maintenance: {self.last_error}") from err
        return done

    def _downsample(self, retention: RetentionSection, now: float, done: dict[str, int]) -> None:
        step = retention.telemetry_step_s
        cut = downsample_cut(now, retention.telemetry_raw_s, step)
        limit = retention.maintenance_batch
        rows = self._run(
            "SELECT id, node, ts, samples FROM telemetry WHERE coarse = 0 AND ts < :cut "
            "ORDER BY node, ts, id LIMIT :n",
            {"cut": cut, "n": limit},
        ).fetchall()
        plan = plan_downsample(
            [(int(r[0]), str(r[1]), float(r[2]), int(r[3])) for r in rows],
            step,
            complete=len(rows) < limit,
        )
        self._many(
            "UPDATE telemetry SET coarse = 1, samples = :samples WHERE id = :id",
            [{"id": i, "samples": n} for i, n in plan.keep.items()],
        )
        self._many("DELETE FROM telemetry WHERE id = :id", [{"id": i} for i in plan.drop])
        done["telemetry_downsampled"] = len(plan.drop)
        done["telemetry_points_kept"] = len(plan.keep)

    def _bound_per_node(self, retention: RetentionSection, done: dict[str, int]) -> None:
        bound = retention.telemetry_max_rows_per_node
        over = self._run(
            "SELECT node, COUNT(*) FROM telemetry GROUP BY node HAVING COUNT(*) > :bound "
            "ORDER BY node LIMIT :n",
            {"bound": bound, "n": _MAX_NODES_PER_PASS},
        ).fetchall()
        deleted = 0
        for node, count in over:
            cur = self._run(
                "DELETE FROM telemetry WHERE id IN (SELECT id FROM telemetry WHERE node = :node "
                "ORDER BY ts, id LIMIT :n)",
                {"node": node, "n": min(int(count) - bound, retention.maintenance_batch)},
            )
            deleted += max(cur.rowcount, 0)
        done["telemetry_over_node_bound"] = deleted

    def _downsample_health(
        self, retention: RetentionSection, now: float, done: dict[str, int]
    ) -> None:
        """Health history, downsampled as telemetry is, per node and group."""
        step = retention.telemetry_step_s
        cut = downsample_cut(now, retention.telemetry_raw_s, step)
        limit = retention.maintenance_batch
        rows = self._run(
            "SELECT id, node, grp, ts, samples FROM health WHERE coarse = 0 AND ts < :cut "
            "ORDER BY node, grp, ts, id LIMIT :n",
            {"cut": cut, "n": limit},
        ).fetchall()
        plan = plan_downsample(
            # node and group names have no '/' (they are topic levels): one key of both
            [(int(r[0]), f"{r[1]}/{r[2]}", float(r[3]), int(r[4])) for r in rows],
            step,
            complete=len(rows) < limit,
        )
        self._many(
            "UPDATE health SET coarse = 1, samples = :samples WHERE id = :id",
            [{"id": i, "samples": n} for i, n in plan.keep.items()],
        )
        self._many("DELETE FROM health WHERE id = :id", [{"id": i} for i in plan.drop])
        done["health_downsampled"] = len(plan.drop)

    def _bound_health(self, retention: RetentionSection, done: dict[str, int]) -> None:
        """At most ``telemetry_max_rows_per_node`` health rows per node and group."""
        bound = retention.telemetry_max_rows_per_node
        over = self._run(
            "SELECT node, grp, COUNT(*) FROM health GROUP BY node, grp "
            "HAVING COUNT(*) > :bound ORDER BY node, grp LIMIT :n",
            {"bound": bound, "n": _MAX_NODES_PER_PASS},
        ).fetchall()
        deleted = 0
        for node, grp, count in over:
            cur = self._run(
                "DELETE FROM health WHERE id IN (SELECT id FROM health WHERE node = :node "
                "AND grp = :grp ORDER BY ts, id LIMIT :n)",
                {
                    "node": node,
                    "grp": grp,
                    "n": min(int(count) - bound, retention.maintenance_batch),
                },
            )
            deleted += max(cur.rowcount, 0)
        done["health_over_node_bound"] = deleted

    def _undeclared_health(self, retention: RetentionSection, done: dict[str, int]) -> None:
        """The health history of groups a node's newest birth does not declare goes with them
        (at most ``maintenance_batch`` rows a pass): a node's history is of its groups alone,
        however many names it used before."""
        cur = self._run(
            "DELETE FROM health WHERE id IN (SELECT h.id FROM health h WHERE NOT EXISTS (SELECT 1 "
            "FROM node_groups g WHERE g.node = h.node AND g.grp = h.grp) ORDER BY h.id LIMIT :n)",
            {"n": retention.maintenance_batch},
        )
        done["health_undeclared"] = max(int(cur.rowcount), 0)

    def _expire(self, table: str, cut: float, limit: int) -> int:
        if table == "node_health":  # groups a node no longer reports
            cur = self._run("DELETE FROM node_health WHERE ts < :cut", {"cut": cut})
            return max(int(cur.rowcount), 0)
        key = "nonce" if table == "commands" else "id"
        cur = self._run(
            f"DELETE FROM {table} WHERE {key} IN "
            f"(SELECT {key} FROM {table} WHERE ts < :cut ORDER BY ts LIMIT :n)",
            {"cut": cut, "n": limit},
        )
        return max(int(cur.rowcount), 0)

    def _over_bound(self, table: str, max_rows: int, limit: int) -> int:
        count = int(self._run(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        if count <= max_rows:
            return 0
        key = "nonce" if table == "commands" else "id"
        cur = self._run(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY ts LIMIT :n)",
            {"n": min(count - max_rows, limit)},
        )
        return max(int(cur.rowcount), 0)

    # for the other tables' modules (rollouts) -------------------------------------------------
    def transaction(self) -> AbstractContextManager[None]:
        """One transaction (:class:`DatabaseUnavailableError` when not connected)."""
        return self._transaction()

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
