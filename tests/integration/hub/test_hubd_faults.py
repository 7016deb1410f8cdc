"""The hub service under faults of its own parts, with real parts:

* PostgreSQL **hung** (the postmaster and every backend SIGSTOPped: the kernel still acknowledges
  TCP, nothing answers) and, for comparison, **stopped** (an immediate shutdown: connections
  refused), on the broker the docs recommend (``edge-agent-host broker init``: TLS, one identity
  per client, the ACL; the hub and the daemons configured from its snippets): the loop, the
  watchdog and the status go on, the hub goes degraded within its operation deadline and holds;
  it is then SIGKILLed (what systemd's watchdog did before) and restarted, and when the database
  is back every message the nodes published is stored, once;
* SQLite on a full disk (a 16 MiB tmpfs): one outage, one warning, until the first commit;
* a thousand idle HTTP clients: no thread each, the descriptors bounded, ``/healthz`` answered,
  the broker reconnected after a restart while they are held, rows still written; the same at a
  soft descriptor limit of 128 on the ``broker init`` broker, never ``Too many open files``;
  clients that hang up early are not logged as tracebacks; a foreign ``Host`` gets 421;
* ``/metrics`` passes ``promtool check metrics``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO, NotifySocket
from tests.integration.fleet.test_broker_acl import broker_init, secure_node, start_broker
from tests.integration.fleet.test_fleet_daemon import Node, wait_until
from tests.integration.hub.test_hubd import (
    Hub,
    db_rows,
    hubs,  # noqa: F401 - fixture
    new_database,
    nodes,  # noqa: F401 - fixture
    postgres,  # noqa: F401 - fixture
    sqlite_table,
    start_nodes,
    wait_recorded,
)
from tests.support.broker import MosquittoBroker, free_port
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

DEADLINE_S = 2.0
HUB = "hub-a"


class TimedNotify(NotifySocket):
    """A NOTIFY_SOCKET that also keeps when each datagram arrived (the watchdog's rhythm)."""

    def __init__(self, path: Path) -> None:
        self.stamped: list[tuple[float, str]] = []
        super().__init__(path)

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data)
                self.stamped.append((time.monotonic(), data))

    def pings_since(self, since: float) -> int:
        """WATCHDOG=1 pings that came after ``since``."""
        with self._lock:
            return sum("WATCHDOG=1" in m and t >= since for t, m in self.stamped)

    def watchdog_gaps(self, since: float) -> list[float]:
        """Seconds between consecutive WATCHDOG=1 pings after ``since`` (and up to now)."""
        with self._lock:
            times = [t for t, m in self.stamped if "WATCHDOG=1" in m and t >= since]
        times = [since, *times, time.monotonic()]
        return [b - a for a, b in itertools.pairwise(times)]


# Lowers the soft descriptor limit, then becomes the command after it (same pid, no preexec_fn).
_LIMITED = (
    "import os, resource, sys; _, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class TimedHub(Hub):
    """A :class:`Hub` whose notify socket keeps times (a fresh one per start); with ``nofile``
    set, the service runs with that soft ``RLIMIT_NOFILE``."""

    nofile: int | None = None

    def start(self) -> None:
        self.notify = TimedNotify(self.dir / f"notify-{time.monotonic_ns()}.sock")
        run = [sys.executable, "-m", "edge_agent_host.hub", "run", "--config", str(self.config)]
        if self.nofile is not None:
            run = [sys.executable, "-c", _LIMITED, str(self.nofile), *run]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                run,
                env={**self.env(), "NOTIFY_SOCKET": str(self.notify.path)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            self.notify.wait_for("READY=1", 60)
        except AssertionError:
            pytest.fail(f"{self.name} did not start:\n{self.log()}")

    @property
    def timed(self) -> TimedNotify:
        assert isinstance(self.notify, TimedNotify)
        return self.notify


# ------------------------------------------------------------- the broker the docs recommend
@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path]]:
    """mosquitto on the configuration ``edge-agent-host broker init`` wrote (TLS client
    certificates, the per-identity ACL, persistence) for nodes ``f1``, ``f2``, ``n1``, ``n2``,
    ``load`` and the hub ``hub-a``; yields the broker and its ``clients/`` directory."""
    port = free_port()
    names = ("f1", "f2", "n1", "n2", "load")
    out = broker_init(
        tmp_path / "pki", port, *(a for n in names for a in ("--node", n)), "--hub", HUB
    )
    broker = start_broker(tmp_path / "mosq", out / "mosquitto.conf", port)
    try:
        yield broker, out / "clients"
    finally:
        broker.kill()


def secure_hub(tmp: Path, broker: MosquittoBroker, clients: Path, database: str) -> TimedHub:
    """The hub service configured from ``clients/hub-a/hub.toml`` as ``broker init`` wrote it
    (TLS, its identity, its persistent session), plus test pacing and ``database``."""
    hub = TimedHub(tmp, HUB, broker, database)  # a fresh notify socket at each start
    snippet = (clients / HUB / "hub.toml").read_text()
    head = f'[hub]\nid = "{HUB}"\n'
    assert head in snippet, snippet
    assert "tls = { enabled = true" in snippet, snippet
    own = f'state_dir = "{hub.state}"\nstatus_interval_s = 0.3\nlog_level = "info"\n'
    hub.config.write_text(
        snippet.replace(head, head + own)
        + "keepalive_s = 5\nreconnect_initial_s = 0.05\nreconnect_max_s = 0.5\n\n"
        + "[queue]\nreport_interval_s = 1.0\n\n"
        + database
    )
    return hub


def start_secure_nodes(
    tmp: Path, broker: MosquittoBroker, clients: Path, names: Sequence[str], into: list[Node]
) -> list[Node]:
    """Daemons configured from their ``clients/NAME/mqtt.toml`` snippets, started, READY."""
    keys = tmp / "trusted"
    if not keys.exists():
        generate_keypair(keys, "hub")
    made = [secure_node(tmp, broker, name, clients, keys) for name in names]
    into.extend(made)
    for node in made:
        node.start(wait_ready=False)
    for node in made:
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)
    return made


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and every process it started (the backends, the checkpointer ...)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [postmaster, *(int(p) for p in children)]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def heard_everything(hub: Hub, fleet: list[Node]) -> None:
    """Wait until the hub heard every telemetry and event message the (stopped) nodes sent."""
    tel = sum(n.status()["fleet"]["telemetry_published"] for n in fleet)
    ev = sum(n.status()["fleet"]["events_published"] for n in fleet)
    hub.wait_status(
        lambda s: (
            s["heard"].get("received.telemetry", 0) >= tel
            and s["heard"].get("received.event", 0) >= ev
        ),
        f"{tel} telemetry and {ev} event messages heard",
    )


@pytest.mark.parametrize("fault", ["hung", "stopped"])
def test_a_hung_or_stopped_postgresql_neither_freezes_the_hub_nor_loses_what_it_holds(
    fault: str,
    *,
    secure_broker: tuple[MosquittoBroker, Path],
    postgres: PostgresServer,  # noqa: F811 - fixture
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    broker, clients = secure_broker
    table = postgres.config_table(new_database(postgres), tmp_path / "db-password")
    table += f"operation_deadline_s = {DEADLINE_S}\n"
    hub = secure_hub(tmp_path, broker, clients, table)
    hubs.append(hub)
    hub.start()
    fleet = start_secure_nodes(tmp_path, broker, clients, ["f1", "f2"], nodes)
    hub.wait_status(lambda s: s["database"]["written"] >= 20, "writes")

    stopped: list[int] = []
    try:
        t_fault = time.monotonic()
        if fault == "hung":
            stopped = postgres_pids(postgres)
            signal_all(stopped, signal.SIGSTOP)
        else:
            postgres.kill()
        down = hub.wait_status(
            lambda s: s["state"] == "degraded" and s["queue"]["depth"] >= 20, "degraded, holding"
        )
        assert not down["database"]["up"]
        if fault == "hung":
            assert down["database"]["overdue"] >= 1, down["database"]
        # The status keeps being written during the outage (it froze before).
        hub.wait_status(lambda s: s["updated_at"] > down["updated_at"] + 1.0, "a fresh status")
        for node in fleet:
            assert node.stop() == 0
        heard_everything(hub, fleet)
        # The loop kept pinging all through the outage, and still does: a ping after all of
        # the above, the database still down (a loop waiting on it would never ping again).
        # The gaps are checked against what would make systemd kill the service (the unit's
        # WatchdogSec=60), not against the 2 s rhythm: a slow machine stretches that rhythm,
        # and only a loop stuck on the database comes near a minute.
        checked = time.monotonic()
        wait_until(
            lambda: hub.timed.pings_since(checked) >= 1,
            "a watchdog ping with the database still down",
        )
        gaps = hub.timed.watchdog_gaps(t_fault)
        assert max(gaps) < 60.0, gaps
        held = hub.status()
        assert held["exposure"]["held"] == held["queue"]["depth"] > 0
        assert held["exposure"]["lost_if_killed"] == 0
        assert held["spool"]["pending"] >= held["queue"]["depth"]
        out = hub.cli("status")  # the database part times out (connect_timeout_s), the rest shows
        assert out.returncode == 1, out.stdout + out.stderr
        assert "a kill would lose 0," in out.stdout, out.stdout

        assert hub.proc is not None
        hub.proc.kill()  # what systemd did when the watchdog starved: nothing is lost now
        hub.proc.wait(10)
        assert any((hub.state / "spool").glob("*.spool"))

        again = secure_hub(tmp_path, broker, clients, table)
        hubs.append(again)
        again.start()
        replayed = again.wait_status(lambda s: s["spool"]["replayed"] > 0, "the spool heard again")
        assert replayed["state"] in ("degraded", "starting")
        assert "held again to be written" in again.log()
    finally:
        if fault == "hung":
            signal_all(stopped, signal.SIGCONT)
        elif not postgres.running:
            postgres.start()

    for node in fleet:
        wait_recorded(again.database, node)
    final = again.wait_status(
        lambda s: s["queue"]["depth"] == 0 and s["spool"]["pending"] == 0, "nothing held"
    )
    assert final["state"] == "running"
    assert final["queue"]["dropped"] == 0
    assert again.stop() == 0
    for h in (hub, again):
        assert "Traceback" not in h.log(), h.log()[-3000:]


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk refuses (raises that OSError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_a_full_sqlite_disk_is_one_outage_until_the_first_commit(
    mosquitto: MosquittoBroker,
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    disk = tmp_path / "small"
    disk.mkdir()
    out = subprocess.run(
        # Room, once the filler is gone, for thousands of held messages: on a slow machine the
        # backlog of the outage outgrew a 1 MiB disk (a second, genuine, outage).
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        pytest.fail(f"this test mounts a 16 MiB tmpfs and needs root: {out.stderr.strip()}")
    try:
        table = (
            f'[database]\ntype = "sqlite"\npath = "{disk / "hub.sqlite3"}"\n'
            "reconnect_initial_s = 0.05\nreconnect_max_s = 0.5\n"
        )
        hub = Hub(tmp_path, "hub-full", mosquitto, table)
        hubs.append(hub)
        hub.start()
        start_nodes(tmp_path, mosquitto, nodes, ["d1", "d2"])
        hub.wait_status(lambda s: s["database"]["written"] >= 20, "writes")
        filler = disk / "filler"
        with pytest.raises(OSError, match="No space left on device"):
            fill(filler)  # take the rest of the disk
        down = hub.wait_status(lambda s: s["state"] == "degraded", "the full disk noticed")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:  # attempts every 0.5 s at most: about ten of them
            time.sleep(0.1)
        during = hub.status()
        assert during["database"]["outages"] == 1, during["database"]
        assert during["state"] == "degraded"
        assert during["database"]["down_s"] >= down["database"]["down_s"] + 3
        log = hub.log()
        assert log.count("database unreachable:") == 1, log[-3000:]
        assert "is back after" not in log
        filler.unlink()
        back = hub.wait_status(
            lambda s: s["state"] == "running" and s["queue"]["depth"] == 0, "the outage over"
        )
        assert back["database"]["outages"] == 1
        assert hub.log().count("is back after") == 1
        assert hub.stop() == 0
    finally:
        for h in hubs:
            h.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ----------------------------------------------------------------------------------------- HTTP
def proc_numbers(pid: int) -> dict[str, int]:
    """Threads, open descriptors and RSS (bytes) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss": int(fields["VmRSS"].split()[0]) * 1024,
    }


def http_get(url: str, host: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), err.read()


IDLE_CLIENTS = 1000


@pytest.fixture
def web_hub(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
) -> tuple[Hub, int, list[Node]]:
    port = free_port()
    hub = Hub(tmp_path, "hub-web", mosquitto, sqlite_table())
    hub.config.write_text(
        hub.config.read_text()
        + f'\n[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
        + "max_connections = 64\ntimeout_s = 3\n"
    )
    hubs.append(hub)
    hub.start()
    fleet = start_nodes(tmp_path, mosquitto, nodes, ["w1"])
    hub.wait_status(lambda s: s["database"]["written"] >= 5, "writes")
    return hub, port, fleet


def test_idle_http_clients_cost_no_thread_and_do_not_starve_the_broker_or_the_database(
    web_hub: tuple[Hub, int, list[Node]], mosquitto: MosquittoBroker
) -> None:
    hub, port, _fleet = web_hub
    assert hub.proc is not None
    pid = hub.proc.pid
    before = proc_numbers(pid)
    idle = []
    try:
        for _ in range(IDLE_CLIENTS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_until(
            lambda: (
                hub.status().get("http", {}).get("connections", {}).get("evicted", 0)
                >= IDLE_CLIENTS - 64
            ),
            "the oldest idle connections closed for the newer ones",
            30,
        )
        held = proc_numbers(pid)
        assert held["threads"] <= before["threads"] + 1, (before, held)
        assert held["fds"] <= before["fds"] + 64 + 8, (before, held)
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
        # The broker goes away and comes back while the idle clients are held: the hub has the
        # descriptors to reconnect, and goes on writing.
        written = hub.status()["database"]["written"]
        mosquitto.restart()
        hub.wait_status(
            lambda s: s["mqtt"]["connected"] and s["database"]["written"] > written + 5,
            "reconnected and writing",
        )
        # Every idle client is closed: evicted at once, or timed out after timeout_s.
        for sock in idle:
            sock.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    after = hub.wait_status(
        lambda s: (
            s["http"]["connections"]["evicted"] + s["http"]["connections"]["timed_out"]
            >= IDLE_CLIENTS
        ),
        "every idle client counted as evicted or timed out",
    )
    assert after["http"]["connections"]["timed_out"] >= 1


SOFT_NOFILE = 128


def open_files_limit(pid: int) -> int:
    """The soft ``Max open files`` of a process, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    pytest.fail(f"no 'Max open files' in /proc/{pid}/limits")


def test_at_a_low_descriptor_limit_idle_clients_cannot_cut_the_hub_off_its_broker(
    secure_broker: tuple[MosquittoBroker, Path],
    nodes: list[Node],  # noqa: F811 - fixture
    hubs: list[Hub],  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    """The original failure: with one descriptor per idle client, a hub at its descriptor limit
    could not reconnect after a broker restart (``Too many open files``), ``/healthz`` timed out
    and no rows were written. Here the service runs with a soft limit of 128 descriptors and
    holds three times as many idle clients as that through a restart of the ``broker init``
    broker."""
    broker, clients = secure_broker
    port = free_port()
    http = f'\n[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\ntimeout_s = 120\n'
    hub = secure_hub(tmp_path, broker, clients, sqlite_table() + http)
    hub.nofile = SOFT_NOFILE
    hubs.append(hub)
    hub.start()
    assert hub.proc is not None
    pid = hub.proc.pid
    assert open_files_limit(pid) == SOFT_NOFILE
    start_secure_nodes(tmp_path, broker, clients, ["n1"], nodes)
    hub.wait_status(lambda s: s["database"]["written"] >= 5, "writes")
    cap = hub.status()["http"]["max_connections"]
    assert cap == SOFT_NOFILE // 4  # a quarter of the limit, below the configured 64
    count = 3 * SOFT_NOFILE
    idle = []
    try:
        for _ in range(count):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        wait_until(
            lambda: hub.status()["http"]["connections"]["evicted"] >= count - cap,
            "the oldest idle connections closed for the newer ones",
            60,
        )
        assert proc_numbers(pid)["fds"] < SOFT_NOFILE
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
        # The broker restarts while the idle clients are held (timeout_s is 120 s): the hub
        # finds a descriptor for its new connection, and goes on writing.
        written = hub.status()["database"]["written"]
        rows = db_rows(hub, lambda db: db.summary()["telemetry_rows"])
        broker.restart()
        hub.wait_status(
            lambda s: s["mqtt"]["connected"] and s["database"]["written"] > written + 5,
            "reconnected and writing",
        )
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
        # What the hub writes first after reconnecting can be the retained messages its new
        # subscription brings back; the node's new telemetry follows once the node has
        # reconnected too (its own back-off), so the rows are waited for, not read at once.
        wait_until(
            lambda: db_rows(hub, lambda db: db.summary()["telemetry_rows"]) > rows,
            "the node's telemetry written again after the restart",
            60,
        )
        assert hub.status()["http"]["connections"]["timed_out"] == 0  # held all along
    finally:
        for sock in idle:
            sock.close()
    assert hub.stop() == 0
    log = hub.log()
    assert "Too many open files" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_early_hang_ups_are_quiet_and_a_foreign_host_is_refused(
    web_hub: tuple[Hub, int, list[Node]],
) -> None:
    hub, port, _fleet = web_hub
    before = sum(hub.status()["http"]["connections"].values())
    for _ in range(200):  # ask for /metrics and hang up at once (RST): no traceback each
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.close()
    hub.wait_status(  # every one of them ended (answered, hung up or closed), none left open
        lambda s: sum(s["http"]["connections"].values()) >= before + 200, "the burst handled"
    )
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
    # A slow client (a byte now and then, never a whole request head) is closed by timeout_s.
    timed_out = hub.status()["http"]["connections"]["timed_out"]
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"y" * 200:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.5)
        assert closed, "a client that never finished its request was kept for 100 s"
    finally:
        slow.close()
    hub.wait_status(
        lambda s: s["http"]["connections"]["timed_out"] > timed_out, "the slow client timed out"
    )
    assert http_get(f"http://127.0.0.1:{port}/", host="evil.example")[0] == 421
    assert http_get(f"http://127.0.0.1:{port}/", host="localhost")[0] == 200
    log = hub.log()
    assert "Traceback" not in log, log[-3000:]
    assert "BrokenPipe" not in log, log[-3000:]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "this test checks /metrics with promtool: apt-get install prometheus "
            "(the Debian package that ships promtool)"
        )
    return found


def test_the_metrics_pass_promtool_and_name_the_hubs_own_numbers(
    web_hub: tuple[Hub, int, list[Node]],
) -> None:
    hub, port, _fleet = web_hub
    hub.wait_status(lambda s: s["heard"].get("received.telemetry", 0) >= 3, "telemetry")
    time.sleep(1.0)  # one more status write: the HTTP side's copy of the status is fresh
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    out = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    text = body.decode()
    for name in (
        "edge_agent_hub_build_info{",
        "edge_agent_hub_start_time_seconds ",
        'edge_agent_hub_messages_received_total{type="telemetry"}',
        "edge_agent_hub_database_messages_written_total ",
        "edge_agent_hub_database_outages_total ",
        "edge_agent_hub_queue_messages ",
        "edge_agent_hub_mqtt_connected 1.0",
        'edge_agent_hub_exposure_messages{if="killed"}',
        "process_resident_memory_bytes ",
        "process_open_fds ",
        'edge_agent_hub_node_online{node="w1"} 1.0',
    ):
        assert name in text, name
    status = json.loads((hub.state / "status.json").read_text())
    assert status["exposure"]["lost_if_killed"] == 0


def test_rows_are_written_while_idle_clients_are_held(
    web_hub: tuple[Hub, int, list[Node]],
) -> None:
    hub, port, _fleet = web_hub
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    try:
        written = hub.status()["database"]["written"]
        hub.wait_status(lambda s: s["database"]["written"] > written + 5, "rows written")
        assert db_rows(hub, lambda db: db.summary()["telemetry_rows"]) > 0
    finally:
        for sock in idle:
            sock.close()
