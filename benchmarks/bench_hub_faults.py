"""The hub service under faults of its own parts (benchmarks/notes/fleet-and-hub.md).

Real mosquitto, real ``edge-agent-hub run`` processes, a real PostgreSQL (``tests/integration/
postgres.py``). One JSON object per line:

1. ``idle_http``: the hub with ``[http]`` on; its threads, descriptors and RSS (``/proc``) and
   the median time of ``/healthz`` with no idle client, then with ``--idle`` idle TCP clients
   held open (and the ratio of the two medians).
2. ``hung_db``: a publisher sends numbered telemetry (QoS 1, ``--rate`` a second); PostgreSQL is
   hung (SIGSTOP of the postmaster and every backend: TCP still acknowledged) for ``--hang``
   seconds while it publishes; then the publisher stops, the hub is SIGKILLed (what systemd's
   watchdog did when the loop froze), started again and the database resumed (SIGCONT). It
   reports the longest gap between two ``WATCHDOG=1`` pings during the hang, when the status
   said ``degraded``, what the hub held and the spool replayed, and the messages published,
   stored (distinct) and lost.

    python benchmarks/bench_hub_faults.py [--idle 1000] [--rate 200] [--hang 10] [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

import paho.mqtt.client as paho  # noqa: E402

from edge_agent.fleet.protocol import Envelope, Telemetry, encode  # noqa: E402
from edge_agent.fleet.topics import Topics  # noqa: E402
from tests.support.broker import MosquittoBroker, free_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

FLEET = "bench"
NODE = "bench-n1"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class HubProcess:
    """One ``edge-agent-hub run`` with its config, state directory and notify socket."""

    def __init__(self, root: Path, broker: MosquittoBroker, database: str, extra: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.state = root / "state"
        self.config = root / "hub.toml"
        self.config.write_text(
            f'[hub]\nid = "bench-hub"\nstate_dir = "{self.state}"\nstatus_interval_s = 0.3\n'
            f'\n[mqtt]\nport = {broker.port}\nfleet = "{FLEET}"\nkeepalive_s = 5\n'
            "reconnect_initial_s = 0.05\nreconnect_max_s = 0.5\n"
            f"\n{database}\n{extra}\n"
        )
        self.pings: list[float] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        path = self.root / f"notify-{time.monotonic_ns()}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.2)
        self._sock = sock
        ready = threading.Event()

        def drain() -> None:
            while True:
                try:
                    data = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                except OSError:
                    return
                if "READY=1" in data:
                    ready.set()
                if "WATCHDOG=1" in data:
                    self.pings.append(time.monotonic())

        threading.Thread(target=drain, daemon=True).start()
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}",
            "NOTIFY_SOCKET": str(path),
        }
        with (self.root / "hub.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent_host.hub", "run", "--config", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        if not ready.wait(60):
            raise RuntimeError("the hub did not start: " + (self.root / "hub.log").read_text())

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        if self.proc is None or data.get("pid") != self.proc.pid:
            return {}
        return data

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        if self._sock is not None:
            self._sock.close()


def proc_numbers(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kib": int(fields["VmRSS"].split()[0]),
    }


def healthz_ms(port: int, n: int = 30) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
            answer.read()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_idle_http(root: Path, broker: MosquittoBroker, idle: int) -> None:
    port = free_port()
    hub = HubProcess(
        root / "idle",
        broker,
        '[database]\ntype = "sqlite"\n',
        f'[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n',
    )
    hub.start()
    try:
        assert hub.proc is not None
        time.sleep(1.0)
        base_ms = healthz_ms(port)
        before = proc_numbers(hub.proc.pid)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(idle)]
        try:
            time.sleep(1.0)
            held = proc_numbers(hub.proc.pid)
            held_ms = healthz_ms(port)
        finally:
            for sock in clients:
                sock.close()
        counts = hub.status().get("http", {}).get("connections", {})
        emit(
            {
                "bench": "idle_http",
                "idle_clients": idle,
                "before": before,
                "with_idle": held,
                "healthz_ms_p50_alone": round(base_ms, 2),
                "healthz_ms_p50_with_idle": round(held_ms, 2),
                "ratio": round(held_ms / base_ms, 2),
                "connections": counts,
            }
        )
    finally:
        hub.stop()


def telemetry(n: int) -> bytes:
    body = Telemetry(
        uptime_s=float(n), rss_bytes=1, budget_used_bytes=1, budget_total_bytes=2, ticks=n,
        tick_p50_ms=0.5, tick_p99_ms=1.0, overruns=0, counters={"telemetry.n": n},
    )  # fmt: skip
    env = Envelope(type="telemetry", node=NODE, seq=n, bdseq=1, ts=time.time(),
                   clock_synced=True, body=body)  # fmt: skip
    return encode(env)


def publish(port: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Numbered telemetry at ``rate`` a second, QoS 1, each acknowledged by the broker. A
    connection the broker dropped (a keepalive missed on a starved machine) is made again by
    paho's loop, which sends the QoS 1 messages it kept: the next number waits for the ack."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = Topics(FLEET).telemetry(NODE)
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        wait = start + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        n += 1
        info = client.publish(topic, telemetry(n), qos=1)
        acked_by = time.monotonic() + 60
        while not info.is_published() and time.monotonic() < acked_by and not stop.is_set():
            time.sleep(0.01)
        sent[0] = n
    client.loop_stop()
    client.disconnect()


def postgres_pids(server: PostgresServer) -> list[int]:
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True, check=False
    )
    return [postmaster, *(int(p) for p in out.stdout.split())]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def stored_numbers(server: PostgresServer, dbname: str) -> set[int]:
    with server.connect(dbname) as conn:
        rows = conn.execute("SELECT body FROM telemetry WHERE node = %s", (NODE,)).fetchall()
    return {int(json.loads(r[0])["counters"]["telemetry.n"]) for r in rows}


def bench_hung_db(root: Path, broker: MosquittoBroker, rate: float, hang_s: float) -> None:
    server = PostgresServer()
    server.start()
    stopped: list[int] = []
    try:
        dbname = server.create_database("bench")
        table = server.config_table(dbname, root / "db-password")
        table += "operation_deadline_s = 3.0\n"
        hub = HubProcess(root / "hung", broker, table)
        hub.start()
        stop, sent = threading.Event(), [0]
        publisher = threading.Thread(target=publish, args=(broker.port, rate, stop, sent))
        publisher.start()
        wait_for(lambda: hub.status().get("database", {}).get("written", 0) >= rate, "writes")
        stopped = postgres_pids(server)
        hung_at = time.monotonic()
        signal_all(stopped, signal.SIGSTOP)
        wait_for(lambda: hub.status().get("state") == "degraded", "degraded")
        degraded_after_s = time.monotonic() - hung_at
        time.sleep(max(0.0, hang_s - degraded_after_s))
        stop.set()
        publisher.join(60)
        published = sent[0]
        wait_for(
            lambda: hub.status().get("heard", {}).get("received.telemetry", 0) >= published,
            "every message heard",
        )
        status = hub.status()
        times = [hung_at, *(t for t in hub.pings if t >= hung_at), time.monotonic()]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        hub.stop(signal.SIGKILL)
        killed_after_s = time.monotonic() - hung_at
        again = HubProcess(root / "hung", broker, table)
        again.start()
        wait_for(lambda: again.status().get("spool", {}).get("replayed", 0) > 0, "the replay")
        replayed = again.status()["spool"]["replayed"]
        signal_all(stopped, signal.SIGCONT)
        stopped = []
        wait_for(lambda: again.status().get("queue", {}).get("depth", 1) == 0, "written")
        stored = stored_numbers(server, dbname)
        again.stop()
        emit(
            {
                "bench": "hung_db",
                "fault": "SIGSTOP of the postmaster and its backends",
                "operation_deadline_s": 3.0,
                "rate": rate,
                "hang_s": round(killed_after_s, 1),
                "degraded_after_s": round(degraded_after_s, 2),
                "watchdog_max_gap_s": round(max(gaps), 2),
                "watchdog_pings_during_hang": len(times) - 2,
                "held_at_kill": status["queue"]["depth"],
                "exposure_at_kill": status["exposure"],
                "spool_replayed": replayed,
                "published": published,
                "stored_distinct": len(stored & set(range(1, published + 1))),
                "lost": len(set(range(1, published + 1)) - stored),
            }
        )
    finally:
        signal_all(stopped, signal.SIGCONT)
        server.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle HTTP clients")
    parser.add_argument("--rate", type=float, default=200.0, help="telemetry a second")
    parser.add_argument("--hang", type=float, default=10.0, help="seconds hung before the kill")
    parser.add_argument("--quick", action="store_true", help="200 idle clients, a 5 s hang")
    parser.add_argument("--smoke", action="store_true", help="20 idle clients, a 2 s hang, CI")
    parser.add_argument("--only", choices=("idle_http", "hung_db"), action="append")
    args = parser.parse_args()
    only = set(args.only or ("idle_http", "hung_db"))
    emit({"bench": "machine", "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "broker")
        broker.start()
        try:
            if "idle_http" in only:
                idle = 20 if args.smoke else 200 if args.quick else args.idle
                bench_idle_http(root, broker, idle)
            if "hung_db" in only:
                hang = 2.0 if args.smoke else 5.0 if args.quick else args.hang
                bench_hung_db(root, broker, args.rate, hang)
        finally:
            broker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
