"""The two database engines behind the hub's one data layer: SQLite and PostgreSQL.

An :class:`Engine` knows how to connect, how its SQL differs from the common text the data layer
writes (placeholders, two column types), and how to tell its errors apart:

* **unavailable** (:meth:`Engine.is_unavailable`): the database cannot be used now (server down,
  connection lost, a statement timed out, a locked or unwritable file). The batch waits in the
  queue and the hub reconnects with back-off;
* **bad data**: this one message cannot be stored (a number beyond 64 bits, say). It is counted
  and dropped, the rest of the batch is written.

Anything the engine cannot classify counts as unavailable: messages wait rather than vanish.

SQL is written once with ``:name`` parameters; PostgreSQL (psycopg 3) gets ``%(name)s``. Both
connections run in autocommit mode with explicit ``BEGIN``/``COMMIT``, so a transaction looks the
same on both. psycopg is imported only when PostgreSQL is selected (the ``hub`` extra).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from edge_agent_host.fleet.errors import FleetError

__all__ = ["PSYCOPG_HINT", "Engine", "PostgresEngine", "SqliteEngine"]

PSYCOPG_HINT: Final = (
    "PostgreSQL needs the Python package psycopg 3, which is not installed: "
    "pip install 'edge-agent-runtime[hub]'"
)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_MIGRATION_LOCK: Final = 0x6564_6765_0001  # "edge" + 1: pg advisory lock keys
_MAINTENANCE_LOCK: Final = 0x6564_6765_0002


class Engine(ABC):
    """One kind of database (see the module docstring)."""

    name: str
    types: Mapping[str, str]
    """What ``{id}``, ``{real}`` and ``{blob}`` in the schema become."""
    begin_sql = "BEGIN"

    @abstractmethod
    def connect(self) -> Any:
        """A new connection in autocommit mode (raises the engine's errors when it cannot)."""

    @abstractmethod
    def is_unavailable(self, err: BaseException) -> bool:
        """Whether ``err`` means "the database cannot be used now" (rather than bad data)."""

    @abstractmethod
    def is_database_error(self, err: BaseException) -> bool:
        """Whether ``err`` came from the database (either kind)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the database is, for logs and the status (no password)."""

    def sql(self, text: str) -> str:
        """``text`` with ``:name`` parameters in this engine's style."""
        return text

    def ddl(self, text: str) -> str:
        """A schema statement with ``{id}`` and ``{real}`` filled in."""
        return text.format(**self.types)

    def lock_migrations(self, conn: Any) -> None:
        """Inside the migration transaction: keep other replicas out until it commits."""
        del conn

    @abstractmethod
    def abort(self, conn: Any) -> None:
        """From another thread: make a call that hangs on ``conn`` return with an error."""

    def try_lock_maintenance(self, conn: Any) -> bool:
        """Inside a maintenance transaction: whether this replica may maintain now."""
        del conn
        return True


class SqliteEngine(Engine):
    """An embedded SQLite file (WAL: readers such as ``edge-agent-hub fleet`` never block it)."""

    name = "sqlite"
    types = {"id": "INTEGER PRIMARY KEY", "real": "REAL", "blob": "BLOB"}  # noqa: RUF012
    begin_sql = "BEGIN IMMEDIATE"

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0, readonly: bool = False) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.readonly = readonly

    def connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout_s,
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=self.busy_timeout_s,
                check_same_thread=False,  # the hub's database thread; one user at a time
            )
        try:
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def is_unavailable(self, err: BaseException) -> bool:
        bad_data = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, ValueError)
        return not isinstance(err, bad_data)

    def is_database_error(self, err: BaseException) -> bool:
        # OSError: the file's directory cannot be made (full, read-only, in the way).
        return isinstance(err, sqlite3.Error | OverflowError | OSError)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def abort(self, conn: Any) -> None:
        conn.interrupt()  # thread-safe; a statement in progress fails with "interrupted"


class PostgresEngine(Engine):
    """A PostgreSQL server through psycopg 3 (``pip install 'edge-agent-runtime[hub]'``)."""

    name = "postgresql"
    types = {  # noqa: RUF012 - a constant table
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "blob": "BYTEA",
    }

    def __init__(
        self,
        *,
        host: str,
        port: int,
        dbname: str,
        user: str,
        password: str | None = None,
        sslmode: str = "prefer",
        sslrootcert: Path | None = None,
        connect_timeout_s: int = 5,
        statement_timeout_s: float = 30.0,
        application_name: str = "edge-agent-hub",
    ) -> None:
        try:
            import psycopg  # noqa: PLC0415 - the hub extra, only with [database] postgresql
        except ModuleNotFoundError as err:
            raise FleetError(PSYCOPG_HINT) from err
        self._psycopg = psycopg
        self.host, self.port, self.dbname, self.user = host, port, dbname, user
        timeout_ms = max(1, round(statement_timeout_s * 1000))
        params: dict[str, Any] = {
            "host": host,
            "port": port,
            "dbname": dbname,
            "user": user,
            "sslmode": sslmode,
            "connect_timeout": connect_timeout_s,
            "application_name": application_name[:63],
            # A server that stops answering is noticed within about the statement timeout.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": timeout_ms,
            "options": f"-c statement_timeout={timeout_ms}",
        }
        if password is not None:
            params["password"] = password
        if sslrootcert is not None:
            params["sslrootcert"] = str(sslrootcert)
        self.conninfo = psycopg.conninfo.make_conninfo(**params)
        self._sql_cache: dict[str, str] = {}

    def connect(self) -> Any:
        return self._psycopg.connect(self.conninfo, autocommit=True)

    def sql(self, text: str) -> str:
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = self._sql_cache[text] = _NAMED.sub(r"%(\1)s", text)
        return cached

    def is_unavailable(self, err: BaseException) -> bool:
        pg = self._psycopg
        bad_data = (pg.DataError, pg.IntegrityError, OverflowError, ValueError)
        return not isinstance(err, bad_data)

    def is_database_error(self, err: BaseException) -> bool:
        return isinstance(err, self._psycopg.Error | OverflowError)

    def describe(self) -> str:
        return f"postgresql {self.user}@{self.host}:{self.port}/{self.dbname}"

    def lock_migrations(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def abort(self, conn: Any) -> None:
        # A stopped server leaves libpq waiting on a socket the kernel keeps acknowledging:
        # shutting the socket down (through a duplicate descriptor, the driver keeps its own)
        # wakes it with an error. A cancel request would go to the stopped server too.
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()

    def try_lock_maintenance(self, conn: Any) -> bool:
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_MAINTENANCE_LOCK,)).fetchone()
        return bool(row[0])
