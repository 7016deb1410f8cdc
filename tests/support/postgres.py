"""Run a real PostgreSQL for tests: a fresh cluster in a temporary directory, on a free loopback
port, password authentication, no fsync (a killed server keeps every commit; a machine crash
would not).

``PostgresServer.start()`` runs ``initdb`` once, then ``pg_ctl start`` and waits until the server
accepts connections; ``stop()`` is a fast shutdown, ``kill()`` an immediate one (a crash: no
checkpoint), ``restart()`` starts it again on the same port with the same data. The server log is
``root/postgres.log``; its tail is in start-up errors. ``create_database()`` makes an empty
database for one test.

The server binaries come from the Debian package ``postgresql`` (``/usr/lib/postgresql/*/bin``)
or from ``PATH``; a machine without them fails the tests that need them (they do not skip):
install it with ``apt-get install postgresql`` (``scripts/test`` does).

PostgreSQL refuses to run as root. As root the cluster belongs to the ``postgres`` user the
Debian package creates, every server command runs through ``runuser -u postgres``, and the
cluster lives in a directory of its own under the system's temporary directory (pytest's
``tmp_path`` sits below a 0700 directory that user cannot enter). As anyone else the commands run
as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.broker import free_port

INSTALL_HINT = "install it: apt-get install postgresql (scripts/test does this)"
SERVER_USER = "postgres"


class PostgresMissingError(RuntimeError):
    pass


def find_pg_bindir(search: str = "/usr/lib/postgresql/*/bin") -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: the newest Debian version, else ``PATH``."""
    found = sorted(
        Path("/").glob(search.lstrip("/")),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
    )
    for bindir in reversed(found):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent
    raise PostgresMissingError(
        f"the PostgreSQL server (initdb, pg_ctl) was not found in {search} or on PATH; "
        f"{INSTALL_HINT}"
    )


class PostgresServer:
    """One throw-away PostgreSQL cluster (see the module docstring)."""

    def __init__(
        self,
        *,
        user: str = "edge",
        password: str = "edge-test-password",
        bindir: Path | None = None,
    ) -> None:
        self.bindir = bindir or find_pg_bindir()
        self.user = user
        self.password = password
        self.host = "127.0.0.1"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.prefix: list[str] = []
        if self.as_root:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError as err:
                raise PostgresMissingError(
                    f"running as root, the test server needs the unprivileged user "
                    f"{SERVER_USER!r} that the Debian package creates; {INSTALL_HINT}"
                ) from err
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self.prefix = [runuser, "-u", SERVER_USER, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="edge-agent-pg-"))
        if self.as_root:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o700)
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.initialised = False

    # server life ------------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
        )

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, SERVER_USER)
        out = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        self.initialised = True

    def start(self, timeout_s: float = 60.0) -> None:
        if not self.initialised:
            self._initdb()
        options = " ".join(
            [
                f"-c listen_addresses={self.host}",
                f"-p {self.port}",
                f"-k {self.root}",  # the Unix socket: here, not /var/run/postgresql
                # No fsync (the machine does not crash under a test), but a commit is still
                # written before it returns: kill() must not lose what was committed.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
            ]
        )
        out = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout_s)),
            "start",
            timeout=timeout_s + 10,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{self.log()}"
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not listen on {self.port}:\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: disconnect clients, shut down cleanly; ``immediate``: like a crash."""
        if not (self.data / "postmaster.pid").exists():
            return
        out = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60
        )
        if out.returncode != 0 and (self.data / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed:\n{out.stdout}\n{out.stderr}")

    def kill(self) -> None:
        self.stop("immediate")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def cleanup(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # clients ----------------------------------------------------------------------------------
    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def config_table(self, dbname: str, password_file: Path) -> str:
        """A hub config's ``[database]`` table for database ``dbname`` (writes the password)."""
        password_file.write_text(self.password + "\n")
        return (
            "[database]\n"
            'type = "postgresql"\n'
            f'host = "{self.host}"\n'
            f"port = {self.port}\n"
            f'dbname = "{dbname}"\n'
            f'user = "{self.user}"\n'
            f'password_file = "{password_file}"\n'
            'sslmode = "disable"\n'
            "connect_timeout_s = 2\n"
            "statement_timeout_s = 5.0\n"
            "reconnect_initial_s = 0.1\n"
            "reconnect_max_s = 0.5\n"
        )
