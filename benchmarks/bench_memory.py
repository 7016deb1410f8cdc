"""Memory of the running daemon: RSS, and where it goes, against a baseline tree.

Runs the real daemon (``python -m edge_agent run --config ...``) on 1,000 grid10 int8 agents
with 64-step histories at 10 Hz, with ``[mqtt]`` off and on (connected to a mosquitto this script
starts on a loopback port, publishing telemetry), and reads after ``--seconds``:

- ``rss_mb``: VmRSS from ``/proc/PID/status``;
- ``by_mapping``: resident MB per mapping from ``/proc/PID/smaps`` (heap, anonymous memory,
  libpython, numpy's libraries, ...), the largest first;
- ``pydantic_mapped``: whether pydantic's compiled core is mapped at all.

``--optimize`` runs this tree's daemon with ``PYTHONOPTIMIZE=2`` (docstrings and asserts dropped;
the baseline as it is): with ``--baseline .`` it measures what that setting saves.

``--edge-agentd`` starts the daemon as the systemd unit does, through ``edge-agentd``
(``edge_agent.cli:daemon_main``, which imports no other command's code), instead of
``python -m edge_agent run`` (the whole ``edge-agent`` parser).

``--baseline DIR`` runs another checkout (e.g. ``git worktree add /tmp/base HEAD~3``) in the same
rounds, interleaved, and prints each round's difference: absolute RSS on a shared machine drifts
by several MB between runs far apart, differences measured side by side do not.

    python benchmarks/bench_memory.py [--seconds 30] [--rounds 2] [--baseline DIR] [--no-mqtt]
                                      [--optimize] [--edge-agentd]

``--smoke``: 50 agents, one 3 s round with MQTT off and on: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
[daemon]
profile = "x86-dev"
state_dir = "{state}"
tick_hz = 10

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {agents}
history_capacity = 64
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""

MQTT = """
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
node_id = "bench-memory"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto is needed for the MQTT runs: apt install mosquitto")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def by_mapping(pid: int) -> dict[str, float]:
    """Resident MB per mapped file (or [heap], [anon], ...) from smaps."""
    totals: dict[str, int] = {}
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            current = Path(parts[5]).name if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            totals[current] = totals.get(current, 0) + int(parts[1])
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return {name: round(kb / 1024, 2) for name, kb in ordered if kb >= 256}


#: ``--edge-agentd``: what the unit's ``ExecStart=edge-agentd`` runs, from the tree on PYTHONPATH.
EDGE_AGENTD = "import sys; from edge_agent.cli import daemon_main; sys.exit(daemon_main())"


def run_once(
    tree: Path,
    mqtt_port: int | None,
    agents: int,
    seconds: float,
    optimize: bool = False,
    *,
    edge_agentd: bool = False,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        text = CONFIG.format(state=work / "state", agents=agents)
        if mqtt_port is not None:
            text += MQTT.format(port=mqtt_port)
        config = work / "config.toml"
        config.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(tree))
        if optimize:
            env["PYTHONOPTIMIZE"] = "2"
        entry = ["-c", EDGE_AGENTD] if edge_agentd else ["-m", "edge_agent", "run"]
        proc = subprocess.Popen(
            [sys.executable, *entry, "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tree,
        )
        try:
            time.sleep(seconds)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon in {tree} exited with {proc.returncode}")
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kb = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            mapping = by_mapping(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "rss_mb": round(rss_kb / 1024, 2),
        "pydantic_mapped": "pydantic_core" in maps,
        "libcrypto_mapped": "libcrypto" in maps,
        "by_mapping": mapping,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="run time before reading")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree and mode")
    parser.add_argument("--agents", type=int, default=1000, help="grid10 agents")
    parser.add_argument("--baseline", type=Path, help="another checkout, run in the same rounds")
    parser.add_argument("--no-mqtt", action="store_true", help="only the run without MQTT")
    parser.add_argument(
        "--optimize", action="store_true", help="this tree's daemon with PYTHONOPTIMIZE=2"
    )
    parser.add_argument(
        "--edge-agentd",
        action="store_true",
        help="start the daemons as the unit does (edge-agentd), not as python -m edge_agent run",
    )
    parser.add_argument("--smoke", action="store_true", help="50 agents, one 3 s round: for CI")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.seconds, args.rounds = 50, 3.0, 1
    trees = [("this", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory(prefix="bench-memory-broker-") as tmp:
        broker, port = (None, None) if args.no_mqtt else start_mosquitto(Path(tmp))
        try:
            modes = [("off", None)] + ([] if port is None else [("on", port)])
            for mode, mqtt_port in modes:
                rss: dict[str, list[float]] = {name: [] for name, _ in trees}
                for round_ in range(args.rounds):
                    for name, tree in trees:
                        optimize = args.optimize and name == "this"
                        row = run_once(
                            tree,
                            mqtt_port,
                            args.agents,
                            args.seconds,
                            optimize,
                            edge_agentd=args.edge_agentd,
                        )
                        rss[name].append(float(row["rss_mb"]))  # type: ignore[arg-type]
                        print(
                            json.dumps(
                                {
                                    "bench": "memory",
                                    "tree": name,
                                    "mqtt": mode,
                                    "round": round_,
                                    "optimize": optimize,
                                    "entry": "edge-agentd" if args.edge_agentd else "run",
                                    "seconds": args.seconds,
                                    **row,
                                }
                            ),
                            flush=True,
                        )
                summary: dict[str, object] = {"bench": "memory_summary", "mqtt": mode}
                for name, values in rss.items():
                    summary[f"{name}_rss_mb"] = statistics.median(values)
                if args.baseline:
                    diffs = [a - b for a, b in zip(rss["this"], rss["baseline"], strict=True)]
                    summary["this_minus_baseline_mb"] = round(statistics.median(diffs), 2)
                print(json.dumps(summary), flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(10)


if __name__ == "__main__":
    main()
