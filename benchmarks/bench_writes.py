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
- ``learning_per_agent``: ``quiet`` with 200 grid10 agents learning their transitions, each its
  own counts (``[groups.learning] B = "all"``, ``scope = "per_agent"``, float64, the table's
  defaults: prior the model's ``B``, learning rate 1, tables refreshed every tick);
  ``learning_shared``: ``quiet`` with the 1,000 int8 agents learning ``B`` into one set of
  counts. Their records add ``learn_snapshot_bytes``, what the final snapshot's ``learn.*``
  arrays take (stored, compressed or not). Run only when ``--cases`` names them.
- ``learning_hour`` (not a daemon; run with ``--cases learning_hour``): what an hour of learning
  leaves in a snapshot, in the same number of updates: ``--hour-agents`` per-agent grid10
  learners as above (each agent's counts are its own, so their bytes scale with the agents)
  step ``--hour-ticks`` ticks (36,000: an hour at 10 Hz) in this process as fast as they can;
  at a few points their state is written as the daemon writes it (``SnapshotStore``, in
  ``--dir``), once as the daemon writes it (the counts as what moved from the prior, the
  previous posteriors only where they differ from the beliefs) and once with both whole (what
  it wrote before), and the ``learn.*`` bytes of both are printed per agent, for 200 agents,
  and per hour at the profile's snapshots, with the bound (every entry updates can reach moved,
  :func:`~edge_agent.aif.learning_storage.moved_bound`, and every previous posterior stored,
  before compression). Run it with the 200 agents of the daemon case (the default): the
  snapshot compresses arrays of 4 KiB and more only, so a few agents' bytes are raw.

Each case runs ``--seconds`` after a warm-up; the hourly rate is the steady rate over that window
plus the snapshots an hour would take (the profile's interval and cap) times the size of the
final snapshot, which is the size of every periodic one. The window's own writes are split by
file (``/proc/PID/io`` cannot: the split comes from the files' sizes and the outbox's counters).

    python benchmarks/bench_writes.py [--seconds 660] [--cases quiet,telemetry,actions_qos1]
        [--hour-agents 200] [--hour-ticks 36000]

The window should hold two of the outbox's relaxed commits (``[mqtt] outbox_commit_interval_s``,
300 s): with a shorter one the MQTT cases show only the ticks between them.

``--smoke``: every case with a 1 s window after 0.5 s of warm-up, in a temporary directory removed
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
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.config.profiles import load_profile_file, shipped_profiles_dir  # noqa: E402
from edge_agent.daemon.snapshots.format import MAGIC  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402

PROFILE = "pi4-4gb"
CASES = ("quiet", "telemetry", "actions_qos1", "demo", "learning_per_agent", "learning_shared",
         "learning_hour")
#: What runs unless ``--cases`` says otherwise (the learning daemons when named).
DEFAULT_CASES = ("quiet", "telemetry", "actions_qos1", "demo", "learning_hour")
#: Agents of the learning cases, and their ``[groups.learning]`` table.
LEARNING = {
    "learning_per_agent": (200, 'precision = "float64"\n', 'B = "all"\nscope = "per_agent"\n'),
    "learning_shared": (1000, "history_capacity = 64\n", 'B = "all"\n'),
}


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
"""
    if case in LEARNING:
        count, extra, table = LEARNING[case]
        text += f"count = {count}\n{extra}"
    else:
        count, table = 1000, ""
        text += "count = 1000\nhistory_capacity = 64\n"
    text += f"""source = {{ type = "sim" }}
sink = {sink}
"""
    if table:
        text += f"\n[groups.learning]\n{table}"
    if case not in ("quiet", *LEARNING):
        text += f"""
[mqtt]
enabled = true
port = {port}
fleet = "bench"
node_id = "writes-{case.replace("_", "-")}"
action_qos = 1
"""
    return text


def stored_bytes(path: Path, part: str) -> int:
    """The bytes a snapshot file stores for its arrays whose names hold ``part`` (format v3:
    the header's directory, ``stored`` per array)."""
    with open(path, "rb") as f:
        prefix = f.read(len(MAGIC) + 4)
        (length,) = struct.unpack("<I", prefix[len(MAGIC):])
        header = json.loads(f.read(length))
    return sum(int(a["stored"]) for a in header["arrays"] if part in a["name"])


def learning_hour(agents: int, ticks: int, root: Path) -> Iterator[dict[str, Any]]:
    """``agents`` per-agent grid10 learners (the ``learning_per_agent`` case's table) stepped
    ``ticks`` ticks; at a few points, the ``learn.*`` bytes of their state written as the daemon
    writes it, with the counts as what moved (now) and whole (before). One record per point."""
    import numpy as np

    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.aif.learning_storage import moved_bound, saved_rows
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.daemon.snapshots.store import SnapshotStore
    from edge_agent.sim.registry import builtin_model, make_env

    profile = load_profile_file(shipped_profiles_dir() / f"{PROFILE}.toml")
    per_hour = min(3600 / profile.snapshot_interval_s, profile.max_snapshot_writes_per_hour)
    env, model = make_env("grid10", agents, seed=0), builtin_model("grid10")
    B = model.B[0]
    spec = LearningSpec(pB={0: B.copy()}, refresh_every=1,
                        settings=LearningSettings(lr_pB=1.0, scope="per_agent"))
    group = AifAgentGroup(model, agents, learning=spec, precision="float64")
    store = SnapshotStore(root / "learning_hour", max_writes_per_hour=1000)
    points = sorted({t for t in (600, 6000, ticks // 2, ticks) if 0 < t <= ticks})
    obs, start = env.reset(), time.perf_counter()
    for tick in range(1, ticks + 1):
        obs = env.step(group.step(obs))
        if tick not in points:
            continue
        state = {f"group.grid.{k}": np.ascontiguousarray(v)
                 for k, v in group.state_dict().items()}
        pB = group.learning.learner.pB
        assert pB is not None
        whole = {k: v for k, v in state.items()
                 if ".learn.pB0." not in k and ".learn.qs_prev0." not in k}
        whole["group.grid.learn.pB0"] = pB.counts[0]
        whole["group.grid.learn.qs_prev0"] = np.zeros_like(state["group.grid.qs0"])
        saved_rows(state, "group.grid.learn.qs_prev0", "group.grid.qs0",
                   whole["group.grid.learn.qs_prev0"], where="learning_hour")
        sizes = {}
        for name, arrays in (("moved", state), ("whole", whole)):
            info = store.save(arrays, {}, force=True)
            assert info is not None
            sizes[name] = stored_bytes(info.path, ".learn.")
        # every reachable count moved, every agent's previous posterior stored (and its index)
        bound = (moved_bound(pB.counts[0], pB.mask[0], pB.counts[0].dtype.itemsize)
                 + int(state["group.grid.qs0"].nbytes) + 4 * agents) // agents
        yield {
            "bench": "writes", "case": "learning_hour", "agents": agents, "ticks": tick,
            "tick_hz": 10.0, "hours_at_10hz": round(tick / 36_000, 3),
            "seconds": round(time.perf_counter() - start, 1),
            "moved_entries_per_agent": round(int(state["group.grid.learn.pB0.values"].size)
                                             / agents, 1),
            "learn_bytes_per_agent": round(sizes["moved"] / agents, 1),
            "learn_bytes_per_agent_whole": round(sizes["whole"] / agents, 1),
            "bound_learn_bytes_per_agent": bound,
            "bound_learn_mb_per_h_200_agents": round(bound * 200 * per_hour / 1e6, 3),
            "snapshots_per_h": per_hour,
            "learn_mb_per_h_200_agents": round(sizes["moved"] / agents * 200 * per_hour / 1e6, 3),
            "learn_mb_per_h_200_agents_whole": round(
                sizes["whole"] / agents * 200 * per_hour / 1e6, 3),
        }


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
    learned: dict[str, Any] = {}
    if case in LEARNING:
        newest = sorted((state / "snapshots").glob("snapshot-*.eas"))[-1]
        learned["learn_snapshot_bytes"] = stored_bytes(newest, ".learn.")
    return {
        **learned,
        "bench": "writes",
        "case": case,
        "profile": "x86-dev" if case == "demo" else PROFILE,
        "agents": 2000 if case == "demo" else LEARNING.get(case, (1000,))[0],
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
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated cases ({', '.join(DEFAULT_CASES)}; also "
                             f"{', '.join(c for c in CASES if c not in DEFAULT_CASES)})")
    parser.add_argument(
        "--dir", type=Path, default=Path("/var/tmp"), help="a directory on a real disk"
    )
    parser.add_argument("--smoke", action="store_true", help="1 s windows, cleaned up: for CI")
    parser.add_argument("--hour-agents", type=int, default=200,
                        help="learning_hour: per-agent learners stepped (200: the daemon case's; "
                             "fewer store arrays below the 4 KiB the snapshot compresses)")
    parser.add_argument("--hour-ticks", type=int, default=36_000,
                        help="learning_hour: ticks (36,000: an hour at 10 Hz)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup = 1.0, 0.5
        args.hour_agents, args.hour_ticks = 2, 20
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
            if case == "learning_hour":
                for record in learning_hour(args.hour_agents, args.hour_ticks, root):
                    emit(record)
                continue
            emit(run_case(case, args.seconds, args.warmup, broker.port, root))
    finally:
        broker.stop()
        if args.smoke:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
