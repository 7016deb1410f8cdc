"""The SQLite stores of earlier versions (the outbox and the command nonce store, before issue
56 put them in record logs), as those versions created them: for the tests of their migration."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

#: ``fleet/outbox.py``'s schema until the record log (user_version 1).
OLD_OUTBOX_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cls TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_class ON messages (cls, id);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires);
PRAGMA user_version=1;
"""


def old_outbox(path: Path, rows: Iterable[tuple[str, str, bytes, bool, float, float]]) -> None:
    """An old outbox at ``path`` holding ``rows``: (class, topic, payload, retain, created,
    expires), oldest first; its -wal file left beside it, as a running daemon leaves it."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_OUTBOX_SCHEMA)
        conn.executemany(
            "INSERT INTO messages (cls, topic, payload, retain, created, expires, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(c, t, p, int(r), cr, ex, len(p) + len(t.encode())) for c, t, p, r, cr, ex in rows],
        )
