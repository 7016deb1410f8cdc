"""The groups' health on the hub at fleet scale: what it costs the broker and the
hub, and what a rollout's health verdict costs.

Starts a loopback mosquitto (``sys_interval 1`` for its byte counters), ``--nodes`` simulated nodes
(:mod:`edge_agent_host.fleetsim`, telemetry every ``--telemetry`` s) in ``--procs`` processes and
``edge-agent-hub run`` (SQLite). Then, with the same hub process, the same nodes:

1. ``health_telemetry`` with ``health: false``: the simulators run with ``--no-health`` for
   ``--window`` s: the bytes the broker took in per node per hour, the hub's CPU (cores: its
   user + system time over the window) and its RSS at the end;
2. the same with ``health: true``: the simulators restarted publishing each node's group health
   at the telemetry cadence (one group, six measures and the drift detector);
3. ``health_cost``: the ratios of 2 to 1 (the same nodes, cadence and hub; only health differs)
   and the health bytes per node per hour;
4. ``gate``: one health verdict as the rollout runner computes it, on a SQLite database holding
   ``--nodes`` nodes x 30 windows: the samples of a wave of 10 % of the nodes and of the other
   90 % read from the database, and the Mann-Whitney U test on them (median of 5 runs).

    python benchmarks/bench_hub_health.py [--nodes 1000] [--window 60]

``--smoke``: 20 nodes, telemetry every 1 s, 2 s windows: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hub_scale import Hub, SysBytes, emit, launch_simulators, wait_registry  # noqa: E402

from edge_agent.fleet.protocol import (  # noqa: E402
    Envelope,
    GroupHealth,
    Health,
    MeasureSummary,
)
from edge_agent_host.hub.gates.health import WaveWindow, parse_criterion  # noqa: E402
from edge_agent_host.hub.rollouts.store import RolloutStore  # noqa: E402
from edge_agent_host.hub.storage.database import HubDatabase  # noqa: E402
from edge_agent_host.hub.storage.engines import SqliteEngine  # noqa: E402
from edge_agent_host.hub.traffic.queue import Heard  # noqa: E402
from edge_agent_host.keys import generate_keypair  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402


def start_simulators(
    root: Path, port: int, keys: Path, nodes: int, *, procs: int, telemetry: float, health: bool
) -> list[subprocess.Popen[bytes]]:
    args = ["--telemetry", str(telemetry), "--connect-rate", "200"]
    if not health:
        args.append("--no-health")
    return launch_simulators(root, port, keys, nodes, procs=procs, args=args, tag=f"-{int(health)}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_s(pid: int) -> float:
    """User + system time of ``pid`` so far (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def health_nodes(hub: Hub) -> int:
    """Nodes whose health the hub stored."""
    db = HubDatabase(SqliteEngine(hub.db_path, readonly=True))
    try:
        db.open(migrate=False)
        return int(db.query("SELECT COUNT(DISTINCT node) FROM node_health")[0][0])
    finally:
        db.close()


def measure_window(
    hub: Hub, sysbytes: SysBytes, nodes: int, window: float, *, telemetry: float, health: bool
) -> dict[str, Any]:
    before, cpu0, t0 = sysbytes.snapshot(), cpu_s(hub.proc.pid), time.monotonic()
    time.sleep(window)
    after, cpu1 = sysbytes.snapshot(), cpu_s(hub.proc.pid)
    elapsed = time.monotonic() - t0
    received = after.get("received", 0) - before.get("received", 0)
    record = {
        "bench": "health_telemetry",
        "nodes": nodes,
        "health": health,
        "telemetry_s": telemetry,
        "window_s": round(elapsed, 1),
        "broker_bytes_received": received,
        "bytes_per_node_hour": round(received / nodes / elapsed * 3600),
        "hub_cpu_cores": round((cpu1 - cpu0) / elapsed, 4),
        "hub_rss_mb": rss_mb(hub.proc.pid),
    }
    emit(record)
    return record


LEVELS = {"excess_surprise": 0.0, "surprise": 1.1, "free_energy": 1.3, "preference": -0.8}


def window_health(node: int, k: int, rng: np.random.Generator) -> Heard:
    body = Health(
        window_s=10.0,
        groups={
            "grid": GroupHealth(
                model="grid10@2.0.0",
                agent_steps=1000,
                measures={
                    name: MeasureSummary(mean=float(rng.normal(level, 0.03)), p95=2.0, n=1000)
                    for name, level in LEVELS.items()
                },
            )
        },
    )
    name = f"sim-{node:04d}"
    env = Envelope(
        type="health", node=name, seq=k, bdseq=1, ts=1000.0 + 10.0 * k, clock_synced=True,
        body=body,
    )  # fmt: skip
    return Heard(kind="health", node=name, envelope=env, retained=False, received=env.ts, size=1)


def measure_gate(root: Path, nodes: int, windows: int = 30) -> None:
    db = HubDatabase(SqliteEngine(root / "gate.sqlite3"))
    db.open()
    try:
        rng = np.random.default_rng(46)
        for k in range(windows):
            db.write([window_health(n, k, rng) for n in range(nodes)])
        names = [f"sim-{n:04d}" for n in range(nodes)]
        wave = max(1, nodes // 10)
        window = WaveWindow("grid", names[:wave], names[wave:], 1000.0, 1000.0 + 10.0 * windows)
        criterion = parse_criterion("excess_surprise:max_increase=0.1")
        store = RolloutStore(db)
        times = []
        verdict = None
        for _ in range(5):
            t0 = time.perf_counter()
            verdict = criterion.evaluate(window, store)
            times.append(time.perf_counter() - t0)
        assert verdict is not None
        emit(
            {
                "bench": "gate",
                "nodes": nodes,
                "windows": windows,
                "wave_samples": verdict.wave_samples,
                "control_samples": verdict.control_samples,
                "outcome": verdict.outcome.value,
                "verdict_ms": round(statistics.median(times) * 1e3, 2),
            }
        )
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes")
    parser.add_argument("--procs", type=int, help="simulator processes (default: 1 per 100)")
    parser.add_argument("--telemetry", type=float, default=10.0, help="the nodes' period (s)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per phase")
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 1 s, 2 s: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.procs, args.telemetry, args.window = 20, 1, 1.0, 2.0
    if args.procs is None:
        args.procs = -(-args.nodes // 100)
    root = Path(tempfile.mkdtemp(prefix="bench-hub-health-"))
    keys = root / "keys"
    hub_key = generate_keypair(keys, "hub").private_path
    emit(
        {
            "bench": "setup",
            "nodes": args.nodes,
            "procs": args.procs,
            "telemetry_s": args.telemetry,
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    )
    broker = MosquittoBroker(root / "broker", extra_config="sys_interval 1\n")
    broker.start()
    sysbytes = SysBytes(broker.port)
    hub: Hub | None = None
    sims: list[subprocess.Popen[bytes]] = []
    try:
        common = {"procs": args.procs, "telemetry": args.telemetry}
        sims = start_simulators(root, broker.port, keys, args.nodes, health=False, **common)
        hub = Hub(root, broker.port, hub_key, "hub-1")
        wait_registry(hub, args.nodes, 900)
        time.sleep(args.telemetry)  # every node's telemetry is flowing
        without = measure_window(
            hub, sysbytes, args.nodes, args.window, telemetry=args.telemetry, health=False
        )
        stop(sims)
        sims = start_simulators(root, broker.port, keys, args.nodes, health=True, **common)
        deadline = time.monotonic() + 900
        while health_nodes(hub) < args.nodes:
            if time.monotonic() > deadline:
                raise SystemExit(f"health from {health_nodes(hub)} of {args.nodes} nodes")
            time.sleep(1.0)
        wait_registry(hub, args.nodes, 900)
        with_health = measure_window(
            hub, sysbytes, args.nodes, args.window, telemetry=args.telemetry, health=True
        )
        emit(
            {
                "bench": "health_cost",
                "nodes": args.nodes,
                "telemetry_s": args.telemetry,
                "bytes_ratio": round(
                    with_health["bytes_per_node_hour"] / without["bytes_per_node_hour"], 3
                ),
                "health_bytes_per_node_hour": with_health["bytes_per_node_hour"]
                - without["bytes_per_node_hour"],
                "hub_cpu_ratio": round(
                    with_health["hub_cpu_cores"] / max(without["hub_cpu_cores"], 1e-6), 3
                ),
                "hub_rss_ratio": round(with_health["hub_rss_mb"] / without["hub_rss_mb"], 3),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
        measure_gate(root, args.nodes)
    finally:
        sysbytes.close()
        stop(sims)
        if hub is not None:
            stop([hub.proc])
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
