"""Bytes the daemon writes to storage per hour: what an SD card sees.

Runs the real daemon (`python -m edge_agent run --config ...`) with its state directory on a
real disk (not tmpfs: tmpfs writes are not storage writes) and reads the process's
``write_bytes`` from ``/proc/PID/io``: the bytes it dirtied in the page cache for a block
device, which is what writeback later sends to the card (before the file system's own journal).
Cases, all with 1,000 grid10 int8 agents with 64-step histories at the profile's 10 Hz on the
``pi4-4gb`` profile (snapshots every 1,800 s, telemetry every 15 s):

- ``quiet``: no broker (``[mqtt] enabled = false``).
- ``telemetry``: connected to a loopback mosquitto, telemetry and events only.
- ``actions_qos1``: also an MQTT action sink: one action batch per tick at 10 Hz, QoS 1.
- ``demo``: ``edge-agent run --demo`` as the quick start runs it: 2,000 agents on the
  ``x86-dev`` profile, which snapshots every 60 s because a development machine has no SD card
  (the window then holds its snapshots: the rate is measured, not added).

Each case runs ``--seconds`` after a warm-up; the hourly rate is the steady rate over that window
plus the snapshots an hour would take (the profile's interval and cap) times the size of the
final snapshot, which is the size of every periodic one. The window's own writes are split by
file (``/proc/PID/io`` cannot: the split comes from the files' sizes and the outbox's counters).

    python benchmarks/bench_writes.py [--seconds 660] [--cases quiet,telemetry,actions_qos1]

The window should hold two of the outbox's relaxed commits (``[mqtt] outbox_commit_interval_s``,
300 s): with a shorter one the MQTT cases show only the ticks between them.

``--smoke``: every case with a 2 s window after 1 s of warm-up, in a temporary directory removed
afterwards: the code path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.config.profiles import load_profile_file, shipped_profiles_dir  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402

PROFILE = "pi4-4gb"
CASES = ("quiet", "telemetry", "actions_qos1", "demo")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def config_text(state: Path, case: str, port: int) -> str:
    sink = '{ type = "sim" }'
    if case == "actions_qos1":
        sink = '{ type = "mqtt", topic = "act/grid" }'
    text = f"""
[daemon]
profile = "{PROFILE}"
state_dir = "{state}"
log_level = "warning"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 1000
history_capacity = 64
source = {{ type = "sim" }}
sink = {sink}
"""
    if case != "quiet":
        text += f"""
[mqtt]
enabled = true
port = {port}
fleet = "bench"
node_id = "writes-{case.replace("_", "-")}"
action_qos = 1
"""
    return text


def io_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def run_case(case: str, seconds: float, warmup: float, port: int, root: Path) -> dict[str, Any]:
    state = root / case / "state"
    state.mkdir(parents=True)
    cfg = root / case / "daemon.toml"
    cfg.write_text(config_text(state, case, port))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock_path = root / case / "notify.sock"
    sock.bind(str(sock_path))
    sock.settimeout(120)
    # As under systemd: the status file in RuntimeDirectory= (tmpfs), not on the card.
    runtime = Path(tempfile.mkdtemp(prefix="edge-agent-run-", dir="/dev/shm"))
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "RUNTIME_DIRECTORY": str(runtime)}
    log = open(root / case / "daemon.log", "wb")  # noqa: SIM115 - closed after the process
    command = ["--config", str(cfg)] if case != "demo" else ["--demo", "--state-dir", str(state)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", *command],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        while "READY=1" not in sock.recv(65536).decode():
            pass
        at_ready = io_write_bytes(proc.pid)
        time.sleep(warmup)
        w0, t0 = io_write_bytes(proc.pid), time.monotonic()
        time.sleep(seconds)
        w1, t1 = io_write_bytes(proc.pid), time.monotonic()
        status = json.loads((runtime / "status.json").read_text())
        proc.send_signal(signal.SIGTERM)
        # The last reading before the process is gone: the final snapshot and the outbox's close.
        last = w1
        while proc.poll() is None:
            try:
                last = io_write_bytes(proc.pid)
            except (FileNotFoundError, ProcessLookupError, RuntimeError):
                break
            time.sleep(0.02)
        proc.wait(60)
        final = json.loads((runtime / "status.json").read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        log.close()
    window_s = t1 - t0
    steady_per_h = (w1 - w0) / window_s * 3600
    snap = (final.get("snapshots") or {}).get("last") or {}
    snap_bytes = int(snap.get("bytes") or 0)
    profile = load_profile_file(shipped_profiles_dir() / f"{PROFILE}.toml")
    per_hour = min(3600 / profile.snapshot_interval_s, profile.max_snapshot_writes_per_hour)
    if case == "demo":  # its snapshots fall in the window: measured with the rest
        per_hour = 0.0
    snapshots_per_h = snap_bytes * per_hour
    files = {
        str(p.relative_to(state)): p.stat().st_size for p in sorted(state.rglob("*")) if p.is_file()
    }
    shutil.rmtree(runtime, ignore_errors=True)
    fleet = status.get("fleet") or {}
    return {
        "bench": "writes",
        "case": case,
        "profile": "x86-dev" if case == "demo" else PROFILE,
        "agents": 2000 if case == "demo" else 1000,
        "tick_hz": 10.0,
        "window_s": round(window_s, 1),
        "ticks": status["tick"]["ticks"],
        "startup_write_bytes": at_ready,
        "window_write_bytes": w1 - w0,
        "steady_mb_per_h": round(steady_per_h / 1e6, 3),
        "snapshot_bytes": snap_bytes,
        "snapshots_per_h": per_hour,
        "snapshots_mb_per_h": round(snapshots_per_h / 1e6, 3),
        "total_mb_per_h": round((steady_per_h + snapshots_per_h) / 1e6, 3),
        "stop_write_bytes": last - w1,
        "outbox": {
            k: (fleet.get("link") or {}).get(f"outbox.{k}")
            for k in ("stored", "acked", "commits", "rollbacks", "depth_rows", "lost")
        }
        if fleet
        else None,
        "files_at_end": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=660.0, help="measured window per case")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument(
        "--dir", type=Path, default=Path("/var/tmp"), help="a directory on a real disk"
    )
    parser.add_argument("--smoke", action="store_true", help="2 s windows, cleaned up: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup = 2.0, 1.0
    cases = [c for c in args.cases.split(",") if c]
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r} (choose from {', '.join(CASES)})")
    root = Path(tempfile.mkdtemp(prefix="bench-writes-", dir=args.dir))
    broker = MosquittoBroker(root / "broker")
    broker.start()
    emit({"bench": "setup", "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "dir": str(root)})
    try:
        for case in cases:
            emit(run_case(case, args.seconds, args.warmup, broker.port, root))
    finally:
        broker.stop()
        if args.smoke:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
