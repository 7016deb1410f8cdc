"""The operator's client's memory between runs: a small SQLite file of nodes, telemetry, events
and commands (the hub service keeps its own database, :mod:`edge_agent_host.hub.storage.database`).

A node's presence is :func:`edge_agent_host.fleet.presence.presence`'s, fed as the hub service
feeds it: every message from a node registers it (``first_seen``, once) and every live one, not
retained, of whatever kind (state, birth, death, telemetry, event, result) is when it was last
``last_seen`` (:meth:`FleetStore.heard`)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from edge_agent.fleet.protocol import Birth, CommandResult, Event, Telemetry, as_builtins
from edge_agent_host.fleet.errors import FleetError

__all__ = ["FleetStore"]


# -------------------------------------------------------------------------------------- storage
def json_text(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys), bytes as hex: how the store keeps payloads."""

    def default(obj: object) -> object:
        if isinstance(obj, bytes | bytearray):
            return obj.hex()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.dumps(value, default=default, sort_keys=True)


class FleetStore:
    """The client's memory between runs (SQLite): nodes, last telemetry, recent events, commands."""

    MAX_EVENTS: Final = 10_000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # sqlite3 says only "unable to open database file": opening it first names the file and
        # the reason (an OSError, one line at the command line).
        with self.path.open("ab"):
            pass
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as err:
            raise FleetError(f"{self.path}: cannot use it as the client's database: {err}") from err
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self._create()
        except sqlite3.Error as err:
            self.conn.close()  # not left to the collector (Python 3.13 warns of it there)
            raise FleetError(f"{self.path}: cannot use it as the client's database: {err}") from err

    def _create(self) -> None:
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS nodes (
                node TEXT PRIMARY KEY, online INTEGER, bdseq INTEGER, birth TEXT,
                last_seen REAL, deaths INTEGER NOT NULL DEFAULT 0, first_seen REAL);
            CREATE TABLE IF NOT EXISTS telemetry (node TEXT PRIMARY KEY, ts REAL, body TEXT);
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT, ts REAL, body TEXT);
            CREATE TABLE IF NOT EXISTS commands (
                nonce TEXT PRIMARY KEY, node TEXT, name TEXT, sent REAL, code TEXT,
                detail TEXT, answered REAL);
            """
        )
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(nodes)")}
        if "first_seen" not in columns:  # a file written before first_seen was kept
            self.conn.execute("ALTER TABLE nodes ADD COLUMN first_seen REAL")

    def heard(self, node: str, *, live: bool, now: float | None = None) -> None:
        """A message from ``node`` arrived: registered if new (``first_seen``), and seen now
        when ``live`` (not a retained message, which may be older than the node's end)."""
        now = time.time() if now is None else now
        self.conn.execute(
            "INSERT INTO nodes (node, first_seen) VALUES (?, ?) ON CONFLICT (node) DO UPDATE "
            "SET first_seen = COALESCE(first_seen, excluded.first_seen)",
            (node, now),
        )
        if live:
            self.conn.execute(
                "UPDATE nodes SET last_seen = ? WHERE node = ? "
                "AND (last_seen IS NULL OR last_seen < ?)",
                (now, node, now),
            )

    def node(
        self,
        node: str,
        *,
        online: bool | None = None,
        bdseq: int | None = None,
        birth: Birth | None = None,
        death: bool = False,
    ) -> None:
        """Record what a state, birth or death said of ``node`` (registered by :meth:`heard`)."""
        self.conn.execute("INSERT OR IGNORE INTO nodes (node) VALUES (?)", (node,))
        if online is not None:
            self.conn.execute(
                "UPDATE nodes SET online = ?, bdseq = ? WHERE node = ?", (int(online), bdseq, node)
            )
        if birth is not None:
            self.conn.execute(
                "UPDATE nodes SET birth = ? WHERE node = ?", (json_text(as_builtins(birth)), node)
            )
        if death:
            self.conn.execute("UPDATE nodes SET deaths = deaths + 1 WHERE node = ?", (node,))

    def telemetry(self, node: str, ts: float, body: Telemetry) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO telemetry (node, ts, body) VALUES (?, ?, ?)",
            (node, ts, json_text(as_builtins(body))),
        )

    def event(self, node: str, ts: float, body: Event) -> None:
        cur = self.conn.execute(
            "INSERT INTO events (node, ts, body) VALUES (?, ?, ?)",
            (node, ts, json_text(as_builtins(body))),
        )
        if cur.lastrowid is not None and cur.lastrowid % 1000 == 0:
            self.conn.execute(
                "DELETE FROM events WHERE id <= ?", (cur.lastrowid - self.MAX_EVENTS,)
            )

    def command_sent(self, nonce: bytes, node: str, name: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO commands (nonce, node, name, sent) VALUES (?, ?, ?, ?)",
            (nonce.hex(), node, name, time.time()),
        )

    def command_result(self, result: CommandResult) -> None:
        self.conn.execute(
            "UPDATE commands SET code = ?, detail = ?, answered = ? WHERE nonce = ?",
            (result.code.value, result.detail, time.time(), result.nonce.hex()),
        )

    def nodes(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT n.node, n.online, n.bdseq, n.birth, n.last_seen, n.deaths, t.ts, t.body, "
            "n.first_seen FROM nodes n LEFT JOIN telemetry t ON t.node = n.node ORDER BY n.node"
        ).fetchall()
        out = []
        for node, online, bdseq, birth, seen, deaths, tts, tbody, first in rows:
            out.append(
                {
                    "node": node,
                    "online": None if online is None else bool(online),
                    "bdseq": bdseq,
                    "birth": json.loads(birth) if birth else None,
                    "last_seen": seen,
                    "first_seen": first,
                    "deaths": deaths,
                    "telemetry_ts": tts,
                    "telemetry": json.loads(tbody) if tbody else None,
                }
            )
        return out

    def close(self) -> None:
        self.conn.close()
