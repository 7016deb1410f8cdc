"""The heard messages as rows: one table from a message kind to the writer that stores it.

Every writer runs inside the batch's transaction (:meth:`~.database.HubDatabase.write`) and is
idempotent, so that at-least-once delivery, outbox re-sends and replicas that hear the same
retained presence never count a message twice or let an old one win:

* telemetry, health windows, events and results are unique by ``(node, seq, ts)`` (a health
  window per group too: a re-send carries the same envelope) and inserted with ``ON CONFLICT DO
  NOTHING``: the kinds that are one row a message are a table of :class:`Insert`;
* a node's presence is ordered by ``(bdseq, offline after online)``: a will of an older session
  than the presence stored, or an ``online`` of a session whose will was already stored, changes
  nothing; an ``online`` with a smaller ``bdseq`` but a newer clock is taken (a node whose state
  directory was wiped starts counting again);
* a birth replaces the stored one when its ``bdseq`` is newer, or its clock is not older (a
  rebirth keeps the session's ``bdseq``); the node's groups follow the birth that is stored;
* a death counts once per death timestamp; a command once per nonce.

A part of the hub that stores a kind of its own adds its writer to the table
(:meth:`~.database.HubDatabase.add_writer`: the learning deltas).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from edge_agent.fleet.protocol import (
    Birth,
    Command,
    CommandResult,
    Death,
    Event,
    GroupHealth,
    Health,
    NodeState,
    Telemetry,
    as_builtins,
)
from edge_agent_host.hub.storage.statements import Statements
from edge_agent_host.hub.traffic.queue import Heard

__all__ = [
    "HEALTH_DROPPED",
    "HealthWriter",
    "Insert",
    "Writer",
    "register_senders",
    "text",
    "to_json",
    "writers",
]

T = TypeVar("T")

Writer = Callable[[Statements, Heard], None]
"""Stores one heard message of its kind, inside the caller's transaction."""

HEALTH_DROPPED: Final = ("unknown_group", "over_cap")
"""Why a health window is dropped (the labels of ``edge_agent_hub_health_dropped_total``)."""


def to_json(value: Any) -> str:
    """JSON text of a message body: bytes as hex, keys sorted, ASCII only (so NUL and every
    control character are escaped: both engines store it as plain TEXT)."""

    def default(obj: object) -> object:
        if isinstance(obj, bytes | bytearray):
            return obj.hex()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.dumps(value, default=default, sort_keys=True)


def text(value: str | None) -> str | None:
    """A free-text field as PostgreSQL's TEXT takes it (no NUL), the same in SQLite."""
    return None if value is None else value.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Insert:
    """A kind stored as one row a message into ``table``: the message's ``row`` (its values by
    column, every column of ``columns``); a message whose ``conflict`` columns are stored already
    is not stored again."""

    table: str
    columns: tuple[str, ...]
    conflict: str
    row: Callable[[Heard, Any], Mapping[str, Any]]
    sql: str = field(init=False)

    def __post_init__(self) -> None:
        names = ", ".join(self.columns)
        values = ", ".join(f":{c}" for c in self.columns)
        object.__setattr__(
            self,
            "sql",
            f"INSERT INTO {self.table} ({names}) VALUES ({values}) "
            f"ON CONFLICT ({self.conflict}) DO NOTHING",
        )

    def __call__(self, db: Statements, heard: Heard) -> None:
        db.execute(self.sql, self.row(heard, heard.envelope.body))

    def put(self, db: Statements, row: Mapping[str, Any]) -> None:
        """Store ``row`` (unless its conflict columns are stored already)."""
        db.execute(self.sql, row)


def _sent(heard: Heard, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the columns of a row that a node's message is one of: who, when, which."""
    env = heard.envelope
    row["node"] = heard.node
    row["ts"] = env.ts
    row["bdseq"] = env.bdseq
    row["seq"] = env.seq
    row["received"] = heard.received
    return row


_SENT: Final = ("node", "ts", "bdseq", "seq", "received")


def _event_row(heard: Heard, body: Event) -> dict[str, Any]:
    return _sent(heard, {
        "kind": body.kind.value,
        "severity": body.severity.value,
        "grp": body.group,
        "detail": text(body.detail),
        "data": to_json(body.data),
    })


def _result_row(heard: Heard, body: CommandResult) -> dict[str, Any]:
    return _sent(heard, {
        "nonce": body.nonce.hex(),
        "name": body.name,
        "code": body.code.value,
        "detail": text(body.detail),
        "data": to_json(body.data),
    })


def _command_row(heard: Heard, body: Command) -> dict[str, Any]:
    env = heard.envelope
    return {
        "nonce": body.nonce.hex(),
        "target": body.target,
        "name": body.name,
        "key_id": text(body.key_id),
        "verified": int(heard.verified),
        "sender": env.node,
        "ts": env.ts,
        "expires": body.expires,
        "received": heard.received,
        "args": to_json(body.args),
    }


EVENTS: Final = Insert(
    "events", (*_SENT, "kind", "severity", "grp", "detail", "data"), "node, seq, ts", _event_row
)
RESULTS: Final = Insert(
    "results", (*_SENT, "nonce", "name", "code", "detail", "data"), "node, seq, ts", _result_row
)
COMMANDS: Final = Insert(
    "commands",
    ("nonce", "target", "name", "key_id", "verified", "sender", "ts", "expires", "received",
     "args"),
    "nonce",
    _command_row,
)  # fmt: skip
def _telemetry_row(heard: Heard, body: Telemetry) -> dict[str, Any]:
    return _sent(heard, {
        "uptime_s": body.uptime_s,
        "rss_bytes": body.rss_bytes,
        "budget_used_bytes": body.budget_used_bytes,
        "budget_total_bytes": body.budget_total_bytes,
        "ticks": body.ticks,
        "tick_p50_ms": body.tick_p50_ms,
        "tick_p99_ms": body.tick_p99_ms,
        "overruns": body.overruns,
        "cpu_temp_c": body.cpu_temp_c,
        "outbox_depth": body.outbox.depth_rows if body.outbox is not None else None,
        "body": to_json(as_builtins(body)),
    })


TELEMETRY_ROWS: Final = Insert(
    "telemetry",
    (*_SENT, "uptime_s", "rss_bytes", "budget_used_bytes", "budget_total_bytes", "ticks",
     "tick_p50_ms", "tick_p99_ms", "overruns", "cpu_temp_c", "outbox_depth", "body"),
    "node, seq, ts",
    _telemetry_row,
)  # fmt: skip


def _body(heard: Heard, kind: type[T]) -> T:
    """The heard message's body, which its kind's writer takes (TypeError: another kind's)."""
    body = heard.envelope.body
    if not isinstance(body, kind):
        raise TypeError(f"a {heard.kind} writer takes {kind.__name__}, not {type(body).__name__}")
    return body


def write_state(db: Statements, heard: Heard) -> None:
    """A node's presence (its retained ``state``), ordered as the module docstring says."""
    env, body = heard.envelope, _body(heard, NodeState)
    db.execute(
        "UPDATE nodes SET online = :online, state_bdseq = :bdseq, state_ts = :ts "
        "WHERE node = :node AND (state_bdseq IS NULL OR :bdseq > state_bdseq "
        "OR (:bdseq = state_bdseq AND NOT (online = 0 AND :online = 1)) "
        "OR (:online = 1 AND :bdseq < state_bdseq AND :ts > state_ts))",
        {"online": int(body.online), "bdseq": env.bdseq, "ts": env.ts, "node": heard.node},
    )


def write_birth(db: Statements, heard: Heard) -> None:
    """A node's birth, when it is newer than the one stored, and the groups it declares."""
    env, body = heard.envelope, _body(heard, Birth)
    changed = db.execute(
        "UPDATE nodes SET birth = :birth, birth_bdseq = :bdseq, birth_ts = :ts, "
        "software_version = :version, profile = :profile "
        "WHERE node = :node AND (birth_bdseq IS NULL OR :bdseq > birth_bdseq "
        "OR :ts >= birth_ts)",
        {
            "birth": to_json(as_builtins(body)),
            "bdseq": env.bdseq,
            "ts": env.ts,
            "version": text(body.software_version),
            "profile": text(body.profile),
            "node": heard.node,
        },
    )
    if changed != 1:
        return  # an older birth than the one stored
    db.execute("DELETE FROM node_groups WHERE node = :node", {"node": heard.node})
    # The newest window of a group the node no longer has goes with it: the series of
    # /metrics and the page are the groups its newest birth declares, no more.
    db.execute_many(
        "DELETE FROM node_health WHERE node = :node AND grp = :grp",
        [
            {"node": heard.node, "grp": str(r[0])}
            for r in db.rows("SELECT grp FROM node_health WHERE node = :node", {"node": heard.node})
            if str(r[0]) not in body.groups
        ],
    )
    db.execute_many(
        "INSERT INTO node_groups (node, grp, agents, bundle, bundle_sha256, since, tick_hz) "
        "VALUES (:node, :grp, :agents, :bundle, :sha, :since, :hz)",
        [
            {
                "node": heard.node,
                "grp": name,
                "agents": group.agents,
                "bundle": text(group.bundle),
                "sha": group.bundle_sha256,
                "since": env.ts,
                "hz": body.tick_hz,
            }
            for name, group in sorted(body.groups.items())
        ],
    )


def write_death(db: Statements, heard: Heard) -> None:
    """A node's death, counted once per death timestamp."""
    body = _body(heard, Death)
    db.execute(
        "UPDATE nodes SET deaths = deaths + 1, death_ts = :ts, death_reason = :reason "
        "WHERE node = :node AND (death_ts IS NULL OR death_ts < :ts)",
        {"ts": heard.envelope.ts, "reason": body.reason.value, "node": heard.node},
    )


def write_telemetry(db: Statements, heard: Heard) -> None:
    """A telemetry row (its main numbers as columns, the whole body as JSON), and the node's
    newest telemetry when it is the newest."""
    row = _telemetry_row(heard, _body(heard, Telemetry))
    TELEMETRY_ROWS.put(db, row)
    db.execute(
        "UPDATE nodes SET telemetry_ts = :ts, telemetry = :body "
        "WHERE node = :node AND (telemetry_ts IS NULL OR telemetry_ts < :ts)",
        {"ts": row["ts"], "body": row["body"], "node": heard.node},
    )


class HealthWriter:
    """A node's health windows: one row per group and window (the history), and the group's
    newest window (``node_health``), for the groups the node's newest birth declares, at most
    ``groups_per_node`` of them (the first by name): bounds from the birth, not from the message
    (STYLE 32). Windows of other groups are dropped and counted (:attr:`dropped`, in this
    process: the status and /metrics show them)."""

    def __init__(self, groups_per_node: int) -> None:
        self.groups_per_node = groups_per_node
        self.dropped = dict.fromkeys(HEALTH_DROPPED, 0)

    def __call__(self, db: Statements, heard: Heard) -> None:
        body = _body(heard, Health)
        declared = [
            str(r[0])
            for r in db.rows(
                "SELECT grp FROM node_groups WHERE node = :node ORDER BY grp", {"node": heard.node}
            )
        ]
        kept = set(declared[: self.groups_per_node])
        for name in body.groups:
            if name not in kept:
                self.dropped["over_cap" if name in declared else "unknown_group"] += 1
        groups = sorted((name, g) for name, g in body.groups.items() if name in kept)
        db.execute_many(
            "INSERT INTO health (node, grp, ts, bdseq, seq, received, window_s, model, "
            "agent_steps, drift_alarm, drift_statistic, drift_threshold, measures) VALUES "
            "(:node, :grp, :ts, :bdseq, :seq, :received, :window_s, :model, :steps, :alarm, "
            ":statistic, :threshold, :measures) ON CONFLICT (node, grp, seq, ts) DO NOTHING",
            [self._window(heard, body, name, group) for name, group in groups],
        )
        db.execute_many(
            "INSERT INTO node_health (node, grp, ts, window_s, model, body) VALUES (:node, :grp, "
            ":ts, :window_s, :model, :body) ON CONFLICT (node, grp) DO UPDATE SET "
            "ts = excluded.ts, window_s = excluded.window_s, model = excluded.model, "
            "body = excluded.body "
            "WHERE node_health.ts < excluded.ts",
            [
                {
                    "node": heard.node,
                    "grp": name,
                    "ts": heard.envelope.ts,
                    "window_s": body.window_s,
                    "model": text(group.model),
                    "body": to_json(as_builtins(group)),
                }
                for name, group in groups
            ],
        )

    @staticmethod
    def _window(heard: Heard, body: Health, name: str, group: GroupHealth) -> dict[str, Any]:
        """One group's window as a row of the history."""
        drift = group.drift
        return _sent(heard, {
            "grp": name,
            "window_s": body.window_s,
            "model": text(group.model),
            "steps": group.agent_steps,
            "alarm": None if drift is None else int(drift.alarm),
            "statistic": None if drift is None else drift.statistic,
            "threshold": None if drift is None else drift.threshold,
            "measures": to_json(
                {k: [m.mean, m.p95, m.n] for k, m in sorted(group.measures.items())}
            ),
        })


def register_senders(db: Statements, batch: Sequence[Heard]) -> None:
    """A row for every sender of ``batch``, and ``last_seen`` for those heard live (not
    retained)."""
    first: dict[str, float] = {}
    seen: dict[str, float] = {}
    for heard in batch:
        if heard.kind == "command":
            continue  # a command names its target, which may not exist
        first.setdefault(heard.node, heard.received)
        if not heard.retained:
            seen[heard.node] = max(seen.get(heard.node, 0.0), heard.received)
    db.execute_many(
        "INSERT INTO nodes (node, first_seen) VALUES (:node, :now) ON CONFLICT (node) DO NOTHING",
        [{"node": n, "now": t} for n, t in sorted(first.items())],
    )
    db.execute_many(
        "UPDATE nodes SET last_seen = :now "
        "WHERE node = :node AND (last_seen IS NULL OR last_seen < :now)",
        [{"node": n, "now": t} for n, t in sorted(seen.items())],
    )


def writers(health: HealthWriter) -> dict[str, Writer]:
    """The writer of each kind of message the hub stores, by kind (the envelope's ``type``)."""
    return {
        "state": write_state,
        "birth": write_birth,
        "death": write_death,
        "telemetry": write_telemetry,
        "health": health,
        "event": EVENTS,
        "result": RESULTS,
        "command": COMMANDS,
    }
