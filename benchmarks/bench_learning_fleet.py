"""Fleet learning at scale, through the real parts: simulated nodes' learning deltas through
mosquitto to the hub service on PostgreSQL, and the service's rounds.

A benchmark of its own (not a mode of ``bench_learning_merge.py``, which merges in one process
from deltas written straight to SQLite): this one runs services and processes, measures the path
a fleet's deltas take (broker, the hub's listener, queue and writes to PostgreSQL, the service's
policy building the round), and needs a fleet to be up before it measures anything.

Starts a PostgreSQL (tests/support/postgres.py) holding the line's bundle (grid10 with ``pB0``,
converted and signed by the host converter: ``bench_learning_merge.line_bundle``), a loopback
mosquitto (``sys_interval 1`` for its byte counters), ``edge-agent-hub run`` on that database
with ``[learning]`` (``min_experience = 1``: a round is due as soon as experience waits; the
gate's defaults) and ``--nodes`` simulated nodes (:mod:`edge_agent_host.fleetsim` with
``--learn-bundle``: the real fleet link, outbox and protocol; each report is 10 agents x 10
ticks of walks on grid10's true transitions, encoded by the daemon's own
``learning_deltas``: ~70 columns of ``B0``, sparse within columns). Then, for each size of
``--sizes`` (ascending), a round:

1. the benchmark takes the line's lease (``LearningStore.take_lease``, as a replica does), so the
   service's policy skips the line while the deltas arrive;
2. the first ``size`` nodes each send one report at the same wall time (the fleet's worst
   case: every report at once);
3. once the database holds them all: ``ingest_s`` (from the burst's time to the last one stored,
   polled every 0.1 s) and ``deltas_per_s``; ``heard_first_s`` and ``heard_last_s``: when the
   hub's listener heard the first and the last (their ``received``, from the burst's time: the
   simulators' and the broker's part of ``ingest_s``); the broker's ``$SYS/broker/bytes``
   counters over the burst (``broker_bytes_received``: what the nodes sent, MQTT framing and
   keep-alives included; ``broker_bytes_sent``: what went on to the hub), per delta too;
4. ``read_s`` and ``merge_s``: the round's read (``LearningStore.pending`` from PostgreSQL,
   ``learning.round.per_node``) and merge (``merge_sparse``) of exactly those deltas, timed in
   this process while it holds the lease;
5. the lease given up, the service's policy builds the round (read, merge, the int8 gate's
   conversion, signing, storing): ``round_s`` from the lease's release to the round's
   ``created`` (so it includes up to one ``check_interval_s``, 0.2 s, of waiting);
   ``hub_rss_mb`` and ``hub_rss_peak_mb`` (VmRSS, VmHWM of the service, as
   bench_hub_scale.py measures it); ``db_bytes_added`` (``pg_database_size`` after the round
   minus before the burst).

Each size runs ``--repeats`` rounds (3), each printed as ``round_run``; the ``round`` record
of a size has each time's and byte count's least over its runs (the machine is shared: the
least is the closest to what the work itself costs), ``hub_rss_peak_mb``'s largest (the
service's peak so far) and ``db_bytes_added``'s mean (a round's growth is lumpy). Then
``extrapolated`` records for ``--extrapolate`` (10,000 and 100,000 nodes) from the
least-squares line through the sizes measured, marked ``measured: false``. One line, one
replica: a round is built by the one replica holding its line's lease, so replicas shard by
model line (docs/fleet-learning.md "Several replicas"), and a line's round is what is measured
here.

    python benchmarks/bench_learning_fleet.py [--nodes 1000] [--sizes 250,500,1000]
        [--procs N] [--repeats 3] [--extrapolate 10000,100000]

``--smoke``: 6 nodes in one process, sizes 3 and 6 once each, the gate at its smallest: the
code path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import paho.mqtt.client as paho  # noqa: E402
from bench_hub_scale import (  # noqa: E402
    FLEET,
    launch_simulators,
    start_hub,
    stop_hub,
    vm_hwm_mb,
)
from bench_learning_merge import LINE, line_bundle  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_agent_host.hub.learning.merge import MergeSettings, merge_sparse  # noqa: E402
from edge_agent_host.hub.learning.model import line_model  # noqa: E402
from edge_agent_host.hub.learning.round import per_node  # noqa: E402
from edge_agent_host.hub.learning.store import LearningStore  # noqa: E402
from edge_agent_host.hub.rollouts.store import RolloutStore  # noqa: E402
from edge_agent_host.hub.storage.database import HubDatabase  # noqa: E402
from edge_agent_host.hub.storage.engines import PostgresEngine  # noqa: E402
from edge_agent_host.keys import generate_keypair  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

OWNER = "bench"
AGENTS, TICKS = 10, 10  # a report: 100 agent-ticks, as bench_learning_merge's default


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class SysBytes:
    """The broker's byte counters (``$SYS/broker/bytes/#``, published every second when they
    change): :meth:`snapshot` waits for an update later than its call (3 s at most: none
    comes while they do not change)."""

    def __init__(self, port: int) -> None:
        self.values: dict[str, int] = {}
        self.updates = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sys")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("$SYS/broker/bytes/#")
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.values[msg.topic.rsplit("/", 1)[-1]] = int(msg.payload)
        self.updates += 1

    def snapshot(self) -> dict[str, int]:
        seen = self.updates
        deadline = time.monotonic() + 3.0
        while self.updates == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)  # its sibling counter
        return dict(self.values)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Hub:
    """``edge-agent-hub run`` on the PostgreSQL database, with ``[learning]``."""

    def __init__(
        self, root: Path, port: int, keys: tuple[Path, Path], database: str, gate: str
    ) -> None:
        key, learning_key = keys  # the command key ([rollouts]), the rounds' ([learning])
        self.dir = root / "hub"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "hub.toml"
        self.config.write_text(
            f"""
[hub]
id = "hub-a"
state_dir = "{self.dir / "state"}"
status_interval_s = 1.0
log_level = "warning"

[mqtt]
port = {port}
fleet = "{FLEET}"

{database}
[rollouts]
key_file = "{key}"

[learning]
key_file = "{learning_key}"
min_experience = 1
check_interval_s = 0.2
lines = ["{LINE}"]
{gate}
[http]
enabled = false
"""
        )
        self.proc = start_hub(self.config)

    def stop(self) -> None:
        stop_hub(self.proc)


class Fleet:
    """What the benchmark reads and writes in the hub's database (its own connection)."""

    def __init__(self, server: PostgresServer, dbname: str, schedule: Path) -> None:
        self.server, self.dbname = server, dbname
        self.schedule = schedule
        self.sends: list[list[float]] = []
        self.db = HubDatabase(PostgresEngine(
            host=server.host, port=server.port, dbname=dbname, user=server.user,
            password=server.password, sslmode="disable", statement_timeout_s=300.0,
        ))  # fmt: skip
        self.db.open()
        self.store = LearningStore(self.db)

    def send(self, at: float, nodes: int) -> None:
        """The first ``nodes`` nodes report at ``at`` (the simulators' schedule file)."""
        self.sends.append([at, nodes])
        tmp = self.schedule.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sends": self.sends}))
        tmp.replace(self.schedule)

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> int:
        return int(self.db.query(sql, params or {})[0][0] or 0)

    def registry(self) -> int:
        rows = self.db.query("SELECT COUNT(birth), SUM(online) FROM nodes")
        return min(int(rows[0][0] or 0), int(rows[0][1] or 0))

    def deltas(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM learning_deltas")

    def refused(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM learning_deltas WHERE status <> 'accepted'")

    def rounds(self) -> list[tuple[int, float, str]]:
        rows = self.db.query("SELECT id, created, state FROM learning_rounds ORDER BY id")
        return [(int(r[0]), float(r[1]), str(r[2])) for r in rows]

    def size_bytes(self) -> int:
        with self.server.connect(self.dbname) as conn:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def wait(what: str, check: Any, timeout: float, every: float = 0.1) -> float:
    """Poll ``check()`` until true; the time it became so."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return time.time()
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def one_round(
    fleet: Fleet, hub: Hub, sysbytes: SysBytes, model: Any, size: int, *, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """One round of the first ``size`` nodes' reports (the module docstring's steps)."""
    store = fleet.store
    if not store.take_lease(LINE, OWNER, now=time.time(), lease_s=3600.0):
        raise SystemExit("the line's lease is held by the service: a round is under way")
    before_rounds = len(fleet.rounds())
    before_deltas = fleet.deltas()
    before_db = fleet.size_bytes()
    before_bytes = sysbytes.snapshot()
    at = time.time() + 0.5  # the simulators read the schedule at each step (0.1 s)
    fleet.send(at, size)
    stored = wait(f"{size} deltas", lambda: fleet.deltas() >= before_deltas + size, timeout)
    ingest_s = stored - at
    heard = fleet.db.query("SELECT MIN(received), MAX(received) FROM learning_deltas "
                           "WHERE received >= :at", {"at": at - 1.0})[0]  # fmt: skip
    after_bytes = sysbytes.snapshot()
    start = time.perf_counter()
    pending = store.pending(LINE, model.sha256)
    names, sparse, _ = per_node(pending, model.shapes)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    merge_sparse(model.counts, model.counts, sparse, len(names), MergeSettings())
    merge_s = time.perf_counter() - start
    released = time.time()
    store.release_lease(LINE, OWNER)
    wait(f"the round of {size} nodes", lambda: len(fleet.rounds()) > before_rounds, timeout, 0.05)
    _, created, state = fleet.rounds()[-1]
    received = after_bytes.get("received", 0) - before_bytes.get("received", 0)
    sent = after_bytes.get("sent", 0) - before_bytes.get("sent", 0)
    return {
        "bench": "round", "nodes": size, "deltas": len(pending), "merged_nodes": len(names),
        "refused": fleet.refused(), "state": state,
        "ingest_s": round(ingest_s, 2), "deltas_per_s": round(size / max(ingest_s, 1e-9)),
        "heard_first_s": round(float(heard[0]) - at, 2),
        "heard_last_s": round(float(heard[1]) - at, 2),
        "broker_bytes_received": received, "broker_bytes_sent": sent,
        "broker_bytes_received_per_delta": round(received / size),
        "read_s": round(read_s, 4), "merge_s": round(merge_s, 4),
        "round_s": round(created - released, 2),
        "hub_rss_mb": vm_rss_mb(hub.proc.pid), "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid),
        "db_bytes_added": fleet.size_bytes() - before_db,
    }  # fmt: skip


KEYS = ("ingest_s", "broker_bytes_received", "broker_bytes_sent", "read_s", "merge_s", "round_s",
        "hub_rss_peak_mb", "db_bytes_added")  # fmt: skip


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A size's ``round`` record: each time's and byte count's least over its runs, the RSS
    peak's largest, the database's growth their mean (PostgreSQL fills pages left free before
    it adds more: one round's growth is lumpy)."""
    out = {**runs[-1], "bench": "round", "repeats": len(runs)}
    for key in (*KEYS, "heard_first_s", "heard_last_s"):
        out[key] = min(r[key] for r in runs)
    out["hub_rss_peak_mb"] = max(r["hub_rss_peak_mb"] for r in runs)
    out["db_bytes_added"] = round(sum(r["db_bytes_added"] for r in runs) / len(runs))
    out["deltas_per_s"] = round(out["nodes"] / max(out["ingest_s"], 1e-9))
    return out


def extrapolate(measured: list[dict[str, Any]], sizes: list[int]) -> None:
    """Each of :data:`KEYS` at ``sizes`` from the least-squares line through the sizes
    measured (each grows with the deltas a round holds)."""
    if len(measured) < 2:
        return
    x = np.array([r["nodes"] for r in measured], dtype=float)
    for nodes in sizes:
        out: dict[str, Any] = {"bench": "extrapolated", "nodes": nodes, "measured": False,
                               "from_nodes": [int(n) for n in x]}  # fmt: skip
        for key in KEYS:
            slope, intercept = np.polyfit(x, [r[key] for r in measured], 1)
            out[key] = round(float(intercept + slope * nodes), 2)
            out[f"{key}_per_node"] = float(f"{slope:.4g}")
        emit(out)


def sizes(text: str) -> list[int]:
    return sorted(int(x) for x in text.split(",") if x)


def arguments(argv: list[str] | None) -> tuple[argparse.Namespace, str]:
    """The options, and the hub's ``[learning]`` gate lines (smaller for ``--smoke``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes")
    parser.add_argument("--sizes", type=sizes, help="nodes reporting in each round "
                        "(default: a quarter, half and all of --nodes)")  # fmt: skip
    parser.add_argument("--procs", type=int, help="simulator processes (default: 1 per 100)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (3)")
    parser.add_argument("--extrapolate", type=sizes, default=[10_000, 100_000])
    parser.add_argument("--smoke", action="store_true", help="6 nodes: the code path, for CI")
    args = parser.parse_args(argv)
    gate = ""
    if args.smoke:
        args.nodes, args.sizes, args.procs, args.extrapolate = 6, [3, 6], 1, [100]
        args.repeats = 1
        gate = "gate_rollouts = 4\ngate_steps = 2\n"
    if args.sizes is None:
        args.sizes = sorted({max(1, args.nodes // 4), max(1, args.nodes // 2), args.nodes})
    if args.sizes[-1] > args.nodes:
        parser.error(f"--sizes {args.sizes[-1]}: more than --nodes {args.nodes}")
    if args.procs is None:
        args.procs = -(-args.nodes // 100)
    return args, gate


def main(argv: list[str] | None = None) -> int:
    args, gate = arguments(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-learning-fleet-"))
    keys = root / "keys"
    hub_key = generate_keypair(keys, "hub").private_path  # the command key (the simulators')
    learning_key = generate_keypair(keys, "learning").private_path  # signs the rounds
    bundle = root / f"{LINE}.tar"
    data = line_bundle(bundle)
    model = line_model(data)
    server = PostgresServer()
    broker = MosquittoBroker(root / "broker", extra_config="sys_interval 1\n")
    hub: Hub | None = None
    sims: list[subprocess.Popen[bytes]] = []
    sysbytes: SysBytes | None = None
    fleet: Fleet | None = None
    try:
        server.start()
        dbname = server.create_database("hub")
        fleet = Fleet(server, dbname, root / "schedule.json")
        RolloutStore(fleet.db).put_bundle(data, model.sha256, model.name, model.version)
        broker.start()
        sysbytes = SysBytes(broker.port)
        database = server.config_table(dbname, root / "db-password").replace(
            "statement_timeout_s = 5.0", "statement_timeout_s = 120.0"
        )
        emit({"bench": "setup", "nodes": args.nodes, "procs": args.procs, "sizes": args.sizes,
              "table": f"{LINE} B0", "experience": AGENTS * TICKS, "bundle_bytes": len(data),
              "database": "postgresql", "cpus": os.cpu_count(),
              "loadavg": [round(x, 2) for x in os.getloadavg()]})  # fmt: skip
        hub = Hub(root, broker.port, (hub_key, learning_key), database, gate)
        sims = launch_simulators(root, broker.port, keys, args.nodes, procs=args.procs, args=[
            "--telemetry", "3600", "--no-health", "--learn-bundle", str(bundle),
            "--learn-agents", str(AGENTS), "--learn-ticks", str(TICKS),
            "--learn-schedule", str(fleet.schedule),
        ])  # fmt: skip
        t0 = time.time()
        wait("the fleet online", lambda: fleet is not None and fleet.registry() >= args.nodes,
             600, 0.5)  # fmt: skip
        emit({"bench": "fleet_up", "nodes": args.nodes, "seconds": round(time.time() - t0, 1),
              "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid)})  # fmt: skip
        measured = []
        for size in args.sizes:
            runs = []
            for _ in range(args.repeats):
                runs.append({**one_round(fleet, hub, sysbytes, model, size, timeout=600),
                             "bench": "round_run"})  # fmt: skip
                emit(runs[-1])
            measured.append(best(runs))
            emit(measured[-1])
        extrapolate(measured, [n for n in args.extrapolate if n > args.sizes[-1]])
    finally:
        for proc in sims:
            proc.send_signal(signal.SIGTERM)
        if hub is not None:
            hub.stop()
        for proc in sims:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        if sysbytes is not None:
            sysbytes.close()
        if fleet is not None:
            fleet.db.close()
        broker.stop()
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
