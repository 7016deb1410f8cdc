"""The hub at fleet scale: simulated nodes, real mosquitto, the real hub.

Starts a loopback mosquitto (``sys_interval 1`` for its byte counters), ``--nodes`` simulated nodes
(:mod:`edge_agent_host.fleetsim`: the real fleet link, protocol, command verification and
deployment transfer, no agents) in ``--procs`` processes, and ``edge-agent-hub run`` (SQLite, a
``[rollouts]`` key). One JSON object per line:

1. ``registry``: the hub on a fresh database until every node is in its registry with a birth and
   online (from the retained births and presence), then again after a restart of the hub on a
   new fresh database (``after_restart``); the hub's peak RSS (VmHWM).
2. ``rollout``: ``edge-agent-hub rollout start`` of a ~1 MB signed bundle (``--bundle-mb``) to
   every node, waves ``1,10%,50%,100%``, no soak: wall time from start to ``done``, bytes into and
   out of the broker (``$SYS/broker/bytes/received``/``sent``, deltas), the bundle's size, and
   what node-to-broker traffic unicast would have needed (nodes x bundle, for comparison).
3. ``halt``: a second bundle that the ``--fail-fraction`` (5 %) of nodes fail the health check on
   (the simulator's ``--fail-version``), waves ``10%,50%,100%``: where it stopped, how many
   nodes it reached, that no node beyond the first wave was sent it, and the rollback.

    python benchmarks/bench_hub_scale.py [--nodes 1000] [--procs N] [--quick]

``--smoke``: 20 nodes in one process, a 0.1 MiB bundle, 10 % failing bundle 2: the code path, for
CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
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
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from edge_agent.aif.quant import SCHEME, quantize_model  # noqa: E402
from edge_agent.aif.settings import AifSettings, settings_to_json  # noqa: E402
from edge_agent.bundle.signing import load_private_key  # noqa: E402
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle  # noqa: E402
from edge_agent.sim.registry import builtin_model  # noqa: E402
from edge_agent_host.hub.rollouts.store import RolloutStore  # noqa: E402
from edge_agent_host.hub.storage.database import HubDatabase  # noqa: E402
from edge_agent_host.hub.storage.engines import SqliteEngine  # noqa: E402
from edge_agent_host.keys import generate_keypair  # noqa: E402
from tests.support.broker import MosquittoBroker, free_port  # noqa: E402

FLEET = "scale"
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def padded_bundle(out: Path, key: Path, version: str, pad_bytes: int, seed: int) -> Path:
    """A signed grid10 bundle with ``pad_bytes`` of incompressible extra payload."""
    q = quantize_model(builtin_model("grid10"))
    arrays: dict[str, Any] = {f"aif/{k}.npy": v for k, v in q.to_arrays().items()}
    rng = np.random.default_rng(seed)
    arrays["extra/pad.npy"] = rng.integers(0, 255, size=pad_bytes, dtype=np.uint8)
    write_bundle(
        out,
        name="grid10",
        version=version,
        kind="aif",
        arrays=arrays,
        aif={
            "num_obs": q.num_obs,
            "num_states": q.num_states,
            "num_controls": q.num_controls,
            "quant_scheme": SCHEME,
            "settings": settings_to_json(AifSettings(policy_len=1)),
            "arrays": {k: f"aif/{k}.npy" for k in q.to_arrays()},
        },
    )
    sign_bundle(out, load_private_key(key))
    tar = out.with_suffix(".tar")
    pack_tar(out, tar)
    return tar


class SysBytes:
    """The broker's own byte counters ($SYS, every second)."""

    def __init__(self, port: int) -> None:
        self.values: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-sys")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("$SYS/broker/bytes/#")
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.values[msg.topic.rsplit("/", 1)[-1]] = int(msg.payload)

    def snapshot(self) -> dict[str, int]:
        time.sleep(1.5)  # the next $SYS update
        with self.lock:
            return dict(self.values)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start_hub(config: Path) -> subprocess.Popen[bytes]:
    """``edge-agent-hub run`` on ``config``, its log in ``hub.log`` beside it."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent_host.hub", "run", "--config", str(config)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=open(config.parent / "hub.log", "wb"),
    )


def stop_hub(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait for the hub's clean exit."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)


class Hub:
    def __init__(self, root: Path, port: int, key: Path, name: str) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "hub.toml"
        self.config.write_text(
            f"""
[hub]
id = "{name}"
state_dir = "{self.dir / "state"}"
status_interval_s = 1.0
log_level = "warning"

[mqtt]
port = {port}
fleet = "{FLEET}"

[database]
type = "sqlite"

[rollouts]
key_file = "{key}"
poll_interval_s = 0.2

[http]
enabled = true
listen = "127.0.0.1"
port = {free_port()}
"""
        )
        self.proc = start_hub(self.config)
        self.db_path = self.dir / "state" / "hub.sqlite3"

    def registry(self) -> tuple[int, int]:
        """(nodes with a birth, nodes online) in the hub's database."""
        if not self.db_path.exists():
            return 0, 0
        db = HubDatabase(SqliteEngine(self.db_path, readonly=True))
        try:
            db.open(migrate=False)
            rows = db.query("SELECT COUNT(birth), SUM(online) FROM nodes")
        except Exception:  # the schema is being created: not yet
            return 0, 0
        finally:
            db.close()
        return int(rows[0][0] or 0), int(rows[0][1] or 0)

    def rollout_state(self, rollout_id: str) -> str:
        """The rollout's state in the hub's database, as ``rollout status`` reads it."""
        db = HubDatabase(SqliteEngine(self.db_path, readonly=True))
        try:
            db.open(migrate=False)
            return RolloutStore(db).get(rollout_id).state.value
        finally:
            db.close()

    def rollout(self, action: str, *args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent_host.hub", "rollout", action, "--config",
             str(self.config), *args],
            capture_output=True, text=True, timeout=600, check=True, env=ENV,
        )  # fmt: skip
        return json.loads(done.stdout)

    def stop(self) -> None:
        stop_hub(self.proc)

    def url(self) -> str:
        status = json.loads((self.dir / "state" / "status.json").read_text())
        return str(status["http"]["url"])


def measure_http(hub: Hub, nodes: int, repeats: int = 20) -> None:
    """/metrics and /api/fleet.json with every node in the snapshot, against /healthz (the same
    server answering a constant): the cost of the answer itself, as a ratio."""
    url = hub.url()

    def best(path: str) -> tuple[float, int]:
        times, size = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url + path, timeout=30) as answer:
                size = len(answer.read())
            times.append(time.perf_counter() - t0)
        return min(times), size

    base_s, _ = best("healthz")
    metrics_s, metrics_bytes = best("metrics")
    json_s, json_bytes = best("api/fleet.json")
    emit(
        {
            "bench": "http",
            "nodes": nodes,
            "healthz_ms": round(base_s * 1e3, 2),
            "metrics_ms": round(metrics_s * 1e3, 2),
            "metrics_bytes": metrics_bytes,
            "metrics_over_healthz": round(metrics_s / base_s, 1),
            "fleet_json_ms": round(json_s * 1e3, 2),
            "fleet_json_bytes": json_bytes,
            "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid),
        }
    )


def wait_registry(hub: Hub, nodes: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        births, online = hub.registry()
        if births >= nodes and online >= nodes:
            return round(time.monotonic() - t0, 2)
        time.sleep(0.5)
    raise SystemExit(f"the registry did not converge: {hub.registry()} of {nodes}")


def wait_rollout(hub: Hub, rollout_id: str, timeout: float) -> dict[str, Any]:
    """``rollout status --json`` once the rollout has ended: its state is read from the hub's
    database every 0.2 s until then (in this process: a ``rollout status`` process per look
    took a core for a second each time, beside the hub and the nodes measured)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if hub.rollout_state(rollout_id) in ("done", "halted", "rolled_back"):
            status: dict[str, Any] = hub.rollout("status", rollout_id, "--json")
            return status
        time.sleep(0.2)
    raise SystemExit(f"rollout {rollout_id} did not end in {timeout} s")


def start_simulators(
    root: Path, port: int, keys: Path, nodes: int, *, procs: int, fail_fraction: float
) -> list[subprocess.Popen[bytes]]:
    return launch_simulators(root, port, keys, nodes, procs=procs, args=[
        "--fail-fraction", str(fail_fraction), "--fail-version", "3.0.0-bad", "--seed", "3",
        "--telemetry", "10",
    ])  # fmt: skip


def launch_simulators(
    root: Path, port: int, keys: Path, nodes: int, *, procs: int, args: list[str], tag: str = ""
) -> list[subprocess.Popen[bytes]]:
    """``nodes`` simulated nodes (``edge_agent_host.fleetsim`` with ``args``) in ``procs``
    processes, each logging to ``sim{P}{tag}.log`` under ``root``."""
    sims = []
    per = -(-nodes // procs)
    for p in range(procs):
        first, count = p * per, min(per, nodes - p * per)
        if count <= 0:
            break
        command = [
            sys.executable, "-m", "edge_agent_host.fleetsim", "--nodes", str(count),
            "--first", str(first), "--port", str(port), "--fleet", FLEET,
            "--state-dir", str(root / "nodes"), "--hub-keys", str(keys),
            "--bundle-keys", str(keys), *args,
        ]  # fmt: skip
        log = open(root / f"sim{p}{tag}.log", "wb")  # noqa: SIM115 - lives with the process
        sims.append(subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=log))
    return sims


def measure_registry(root: Path, port: int, key: Path, nodes: int, hubs: list[Hub]) -> Hub:
    t0 = time.monotonic()
    hubs.append(Hub(root, port, key, "hub-1"))
    first_s = wait_registry(hubs[-1], nodes, 600)
    hubs[-1].stop()
    t1 = time.monotonic()
    hubs.append(Hub(root, port, key, "hub-2"))
    again_s = wait_registry(hubs[-1], nodes, 600)
    emit(
        {
            "bench": "registry",
            "nodes": nodes,
            "first_s": first_s,
            "first_s_from_sim_start": round(t1 - t0, 2),
            "after_restart_s": again_s,
            "hub_rss_peak_mb": vm_hwm_mb(hubs[-1].proc.pid),
        }
    )
    return hubs[-1]


def measure_rollout(hub: Hub, sysbytes: SysBytes, good: Path, nodes: int) -> None:
    before = sysbytes.snapshot()
    t0 = time.monotonic()
    plan = hub.rollout("start", str(good), "--group", "grid", "--all", "--soak", "0",
                       "--rate", "64", "--watch-ticks", "5", "--json")  # fmt: skip
    end = wait_rollout(hub, plan["id"], 1800)
    wall = round(time.monotonic() - t0, 1)
    after = sysbytes.snapshot()
    size = good.stat().st_size
    emit(
        {
            "bench": "rollout",
            "nodes": nodes,
            "waves": plan["waves"],
            "state": end["state"],
            "ok": end["nodes_done"],
            "failed": end["nodes_failed"],
            "wall_s": wall,
            "bundle_bytes": size,
            "broker_bytes_received": after.get("received", 0) - before.get("received", 0),
            "broker_bytes_sent": after.get("sent", 0) - before.get("sent", 0),
            "unicast_hub_bytes_would_be": size * nodes,
            "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid),
        }
    )


def measure_halt(hub: Hub, bad: Path, good: Path, nodes: int) -> None:
    t0 = time.monotonic()
    plan = hub.rollout("start", str(bad), "--group", "grid", "--all", "--soak", "0",
                       "--waves", "10%,50%,100%", "--rate", "64", "--watch-ticks", "5",
                       "--rollback-bundle", str(good), "--json")  # fmt: skip
    end = wait_rollout(hub, plan["id"], 1800)
    states: dict[str, int] = {}
    beyond = 0
    for row in end["nodes"].values():
        states[row["state"]] = states.get(row["state"], 0) + 1
        if row["wave"] > 1 and row["state"] != "pending":
            beyond += 1
    emit(
        {
            "bench": "halt",
            "nodes": nodes,
            "waves": plan["waves"],
            "state": end["state"],
            "detail": end["detail"],
            "halted_in_wave": end["wave"],
            "node_states": states,
            "nodes_beyond_first_wave_touched": beyond,
            "wall_s": round(time.monotonic() - t0, 1),
            "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes")
    parser.add_argument(
        "--procs",
        type=int,
        help="simulator processes (default: one per 100 nodes, the most one "
        "process can hold: see fleetsim)",
    )
    parser.add_argument("--bundle-mb", type=float, default=1.0, help="bundle size (MiB)")
    parser.add_argument("--fail-fraction", type=float, default=0.05, help="nodes failing bundle 2")
    parser.add_argument("--quick", action="store_true", help="100 nodes, 2 processes")
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 0.1 MiB: for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.procs = 100, 2
    if args.smoke:
        args.nodes, args.procs, args.bundle_mb, args.fail_fraction = 20, 1, 0.1, 0.1
    if args.procs is None:
        args.procs = -(-args.nodes // 100)
    root = Path(tempfile.mkdtemp(prefix="bench-hub-scale-"))
    keys = root / "keys"
    hub_key = generate_keypair(keys, "hub").private_path
    ci = generate_keypair(keys, "ci").private_path
    pad = int(args.bundle_mb * 1024 * 1024) - 40_000
    good = padded_bundle(root / "good", ci, "2.0.0", pad, 1)
    bad = padded_bundle(root / "bad", ci, "3.0.0-bad", pad, 2)
    emit(
        {
            "bench": "setup",
            "nodes": args.nodes,
            "procs": args.procs,
            "bundle_bytes": good.stat().st_size,
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    )
    broker = MosquittoBroker(root / "broker", extra_config="sys_interval 1\n")
    broker.start()
    hubs: list[Hub] = []
    sysbytes = SysBytes(broker.port)
    sims = start_simulators(
        root, broker.port, keys, args.nodes, procs=args.procs, fail_fraction=args.fail_fraction
    )
    try:
        hub = measure_registry(root, broker.port, hub_key, args.nodes, hubs)
        measure_rollout(hub, sysbytes, good, args.nodes)
        measure_halt(hub, bad, good, args.nodes)
        measure_http(hub, args.nodes)
    finally:
        sysbytes.close()
        for h in hubs:
            if h.proc.poll() is None:
                h.proc.send_signal(signal.SIGTERM)
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        for proc in [*(h.proc for h in hubs), *sims]:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
