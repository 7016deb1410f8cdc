"""Daemon benchmarks: cold start to READY, RSS, tick latency, snapshot cost.

Runs the real daemon (`python -m edge_agent run --config ...`) as a subprocess with a test-owned
NOTIFY_SOCKET, for each configuration, and prints one JSON object per line. Cold start is also
expressed as a ratio to a baseline measured in the same run: the time for a bare
`python -c "import numpy"` (interpreter + numpy), because absolute times on a shared machine
drift from run to run.

    python benchmarks/bench_daemon.py [--seconds 30] [--agents 1000] [--quick]

``--smoke``: 20 agents, 2 s runs, one baseline start: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.

``daemon-learning`` rows: the daemon's tick of one group with a
``[groups.learning]`` table against the same group without it, in this process: both built by
the daemon's admission from a config (:func:`edge_agent.daemon.admission.admit`) and ticked as
the daemon ticks them (``GroupRuntime.tick``: the world's step and the agents'), in alternating
rounds on one thread; ``ratio`` is the median over rounds of the learning tick's time over the
plain one's (its refreshes included). ``--learning-only`` runs only these rows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def config_text(state: Path, grid: int, tmaze: int, hz: float) -> str:
    groups = []
    if grid:
        groups.append(f"""
[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {grid}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
""")
    if tmaze:
        groups.append(f"""
[[groups]]
name = "tmaze"
model = {{ type = "builtin", name = "tmaze" }}
count = {tmaze}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
""")
    return f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = {hz}
log_level = "warning"
""" + "".join(groups)


def baseline_start_s(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_daemon(grid: int, tmaze: int, hz: float, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        state = tmpdir / "state"
        cfg = tmpdir / "cfg.toml"
        cfg.write_text(config_text(state, grid, tmaze, hz))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmpdir / "notify.sock"))
        sock.settimeout(60)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmpdir / "notify.sock"),
            "EDGE_AGENT_PROFILES_DIR": str(REPO / "firmware_profiles"),
        }
        # The daemon's log goes to a file: a pipe nobody reads fills up (64 KiB) and then blocks
        # the daemon in its next log line, so that it neither ticks nor exits on SIGTERM.
        log_path = tmpdir / "daemon.log"
        t0 = time.perf_counter()
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            while True:
                msg = sock.recv(65536).decode()
                if "READY=1" in msg:
                    ready_s = time.perf_counter() - t0
                    break
            time.sleep(seconds)
            status = json.loads((state / "status.json").read_text())
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired as err:
                tail = log_path.read_text(errors="replace")[-4000:]
                msg = f"the daemon did not exit 60 s after SIGTERM; its log ends:\n{tail}"
                raise SystemExit(msg) from err
            final = json.loads((state / "status.json").read_text())
        finally:
            if proc.poll() is None:
                proc.kill()
            sock.close()
    snap = final["snapshots"]["last"] or {}
    agents = grid + tmaze
    return {
        "bench": "daemon",
        "grid10_agents": grid,
        "tmaze_agents": tmaze,
        "tick_hz": hz,
        "seconds": seconds,
        "ready_s": round(ready_s, 3),
        "rss_mb": round(status["rss_bytes"] / 2**20, 2),
        "rss_peak_mb": round(status["rss_peak_bytes"] / 2**20, 2),
        "budget_used_mb": round(status["budget"]["used_bytes"] / 2**20, 2),
        "ticks": status["tick"]["ticks"],
        "tick_p50_ms": status["tick"]["p50_ms"],
        "tick_p99_ms": status["tick"]["p99_ms"],
        "overruns": status["tick"]["overruns"],
        "snapshot_bytes": snap.get("bytes"),
        "snapshot_s": snap.get("seconds"),
        "snapshot_bytes_per_1000_agents": (
            round(snap["bytes"] * 1000 / agents) if snap.get("bytes") else None
        ),
    }


#: (world, learning table, what it says): the demo's T-maze learning, refreshed every trial
#: and every 100 ticks; the slippery grid learning its 100 x 100 observation model.
LEARNING_CASES = (
    ("tmaze-reversal", "A = [1]\nlr_pA = 0.01\nprior_scale = 0.5\nrefresh_every = 3\n",
     "A1 refresh 3"),
    ("tmaze-reversal", "A = [1]\nlr_pA = 0.01\nprior_scale = 0.5\nrefresh_every = 100\n",
     "A1 refresh 100"),
    ("grid-slippery", "A = [0]\nlr_pA = 0.01\nprior_scale = 10.0\nrefresh_every = 100\n",
     "A0 refresh 100"),
)


def learning_rows(agents: int, ticks: int, rounds: int) -> list[dict[str, object]]:
    """One ``daemon-learning`` row per case of :data:`LEARNING_CASES` (see the module doc)."""
    from edge_agent.config.daemon import read_config
    from edge_agent.config.profiles import load_profiles
    from edge_agent.daemon.admission import admit

    profiles = load_profiles(REPO / "firmware_profiles")
    rows: list[dict[str, object]] = []
    for world, table, what in LEARNING_CASES:
        with tempfile.TemporaryDirectory() as tmp:
            groups = {}
            for name, learning in (("plain", ""), ("learning", table)):
                cfg = Path(tmp) / f"{name}.toml"
                cfg.write_text(
                    f'[daemon]\nprofile = "x86-dev"\nstate_dir = "{Path(tmp) / name}"\n\n'
                    f'[[groups]]\nname = "{name}"\n'
                    f'model = {{ type = "builtin", name = "{world}" }}\ncount = {agents}\n'
                    'source = { type = "sim" }\nsink = { type = "sim" }\n'
                    + (f"\n[groups.learning]\n{learning}" if learning else "")
                )
                groups[name] = admit(read_config(cfg, profiles=profiles))[2][0]
            now = 0.0
            for g in groups.values():  # warm: the first refresh encodes whole tables
                for _ in range(3):
                    g.tick(now)
            times: dict[str, list[float]] = {"plain": [], "learning": []}
            for _ in range(rounds):
                for name, g in groups.items():
                    t0 = time.perf_counter()
                    for _ in range(ticks):
                        now += 1.0
                        g.tick(now)
                    times[name].append(time.perf_counter() - t0)
            learner = groups["learning"].agents.metrics()
            ratios = [a / b for a, b in zip(times["learning"], times["plain"], strict=True)]
            rows.append({
                "bench": "daemon-learning",
                "world": world,
                "learning": what,
                "agents": agents,
                "ticks": ticks,
                "rounds": rounds,
                "plain_agent_steps_per_s": round(agents * ticks / statistics.median(
                    times["plain"])),
                "learning_agent_steps_per_s": round(agents * ticks / statistics.median(
                    times["learning"])),
                "ratio": round(statistics.median(ratios), 3),
                "learning_updates": learner["learning_updates"],
                "learning_surprise": learner["learning_surprise"],
            })
            for g in groups.values():
                g.agents.release()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="run time per configuration")
    parser.add_argument("--agents", type=int, default=1000, help="grid10 agents")
    parser.add_argument("--quick", action="store_true", help="5 s runs")
    parser.add_argument("--smoke", action="store_true", help="20 agents, 2 s runs: for CI")
    parser.add_argument(
        "--learning-only", action="store_true", help="only the daemon-learning rows"
    )
    parser.add_argument("--rounds", type=int, default=7, help="daemon-learning rounds (7)")
    parser.add_argument("--ticks", type=int, default=60, help="daemon-learning ticks a round")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    repeats = 3 if args.quick else 7
    if args.smoke:
        seconds, repeats, args.agents = 2.0, 1, 20
        args.rounds, args.ticks = 2, 6
    if args.learning_only:
        for row in learning_rows(args.agents, args.ticks, args.rounds):
            print(json.dumps(row), flush=True)
        return
    base = baseline_start_s(repeats)
    print(json.dumps({"bench": "baseline", "python_import_numpy_s": round(base, 3)}))
    for grid, tmaze in ((args.agents, 0), (args.agents, args.agents), (10 * args.agents, 0)):
        row = run_daemon(grid, tmaze, 10.0, seconds)
        row["ready_vs_baseline"] = round(float(row["ready_s"]) / base, 2)  # type: ignore[arg-type]
        print(json.dumps(row), flush=True)
    for row in learning_rows(args.agents, args.ticks, args.rounds):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
