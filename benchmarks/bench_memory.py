"""Memory of the running daemon: RSS in the device's venv and in one with every extra, MQTT on/off.

Runs the real daemon (``python -m edge_agent run --config ...``) on 1,000 grid10 int8 agents
with 64-step histories at 10 Hz (profile ``x86-dev``), with ``[mqtt]`` off and on (connected to
a mosquitto this script starts on a loopback port, publishing telemetry), and reads after
``--seconds`` (20 by default):

- ``rss_mb``: VmRSS from ``/proc/PID/status`` (what the targets are: <= 45 MB with MQTT, <= 40 MB
  without, :data:`TARGETS_MB`), and its parts ``anon_mb`` (RssAnon) and ``file_mb`` (RssFile:
  the pages of the interpreter's and the libraries' files);
- ``by_mapping``: resident MB per mapping from ``/proc/PID/smaps`` (heap, anonymous memory,
  libpython, numpy's libraries, ...), the largest first;
- ``pydantic_mapped``, ``libcrypto_mapped``: whether pydantic's compiled core, OpenSSL are mapped.

**The venvs** (``--venvs``, both by default), each made once with this interpreter's base Python
under ``${EDGE_AGENT_BENCH_CACHE:-.cache}/memory/`` and made again when ``pyproject.toml``'s
requirements change:

- ``device``: the project's runtime dependencies, what ``scripts/demo`` installs (no extra);
- ``extras``: those and every extra's (``onnx``, ``tflite``, ``host``, ``camera``, ``hub``,
  ``dev``; not ``tf-convert``, whose TensorFlow has a venv of its own, ``scripts/test-tf``);
- ``this``: this interpreter's venv as it is (no venv made; ``--smoke`` uses it).

The daemon's code is the tree's, on ``PYTHONPATH``, byte-compiled first (as pip and the ``.deb``
install it: a module compiled from source at every start leaves the compiler's garbage in the
heap). **Before each run the venv's and the tree's shared libraries are dropped from the page
cache** (``posix_fadvise(DONTNEED)``, ``evict_libraries``), so that every daemon maps them as one
started after boot does: the pages of a library a process maps depend on what the page cache
already holds of it (the kernel maps the cached pages around each fault), so the same numpy
library was 5.0 MB resident in a daemon that read it itself and 7.1 MB after a test run had
read all of it, and two venvs of the same packages measured 3-4 MB apart (docs/memory.md).

``--parts`` also runs the daemon built in one process (what ``edge-agent run`` does), in the
first venv, and prints its RSS after each phase (``memory_parts``: the interpreter, numpy, the
daemon's modules, the config, the groups built, running ``--seconds``) and what the group's own
accounting says it holds (state, kernel scratch, model tables): the parts docs/memory.md lists.

``--baseline DIR`` runs another checkout (e.g. ``git worktree add /tmp/base HEAD~3``) in the same
rounds, interleaved, and prints each round's difference: absolute RSS on a shared machine drifts
between runs far apart, differences measured side by side do not. ``--edge-agentd`` starts the
daemon as the systemd unit does (``edge_agent.cli:daemon_main``) instead of ``python -m
edge_agent run``.

    python benchmarks/bench_memory.py [--seconds 20] [--rounds 2] [--venvs device,extras]
                                      [--baseline DIR] [--no-mqtt] [--parts] [--edge-agentd]

``--smoke``: 50 agents, one 3 s round with MQTT off and on in this interpreter's venv (no venv is
made), ``--parts`` included: the code path, for CI (tests/integration/benchmarks/test_smoke.py);
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
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
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The issue's targets for the row this script measures (docs/memory.md), by ``[mqtt]``.
TARGETS_MB = {"off": 40.0, "on": 45.0}

#: The extras of the ``extras`` venv: every one of pyproject.toml's but TensorFlow's.
EXTRAS_LEFT_OUT = ("tf-convert",)

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


def log(msg: str) -> None:
    print(f"[bench_memory] {msg}", file=sys.stderr, flush=True)


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


# -- the venvs ---------------------------------------------------------------------------------


def requirements(kind: str, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """What venv ``kind`` (``device`` or ``extras``) installs, from ``pyproject``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"])
    if kind == "extras":
        for extra, reqs in sorted(project["optional-dependencies"].items()):
            if extra not in EXTRAS_LEFT_OUT:
                wanted += reqs
    elif kind != "device":
        raise ValueError(f"unknown venv {kind!r}: device, extras or this")
    return sorted(set(wanted))


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", str(REPO / ".cache"))) / "memory"


def ensure_venv(kind: str) -> Path:
    """The python of venv ``kind``: this interpreter for ``this``, else a venv of
    :func:`requirements` made (once per set of requirements) under :func:`cache_dir`."""
    if kind == "this":
        return Path(sys.executable)
    reqs = requirements(kind)
    tag = hashlib.sha256("\n".join([sys.version, *reqs]).encode()).hexdigest()[:12]
    venv = cache_dir() / f"{kind}-{tag}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if done.exists():
        return python
    base = getattr(sys, "_base_executable", None) or sys.executable
    log(f"making the {kind} venv {venv}: {' '.join(reqs)}")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, stdout=sys.stderr)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *reqs], check=True, stdout=sys.stderr
    )
    done.write_text("\n".join(reqs) + "\n")
    return python


def site_root(python: Path) -> Path:
    """The venv (or installation) ``python`` belongs to: its ``lib`` directory holds the
    packages whose libraries :func:`evict_libraries` drops."""
    out = subprocess.run(
        [str(python), "-c", "import sys; print(sys.prefix)"],
        capture_output=True, text=True, check=True,
    )
    return Path(out.stdout.strip()) / "lib"


def evict_libraries(*roots: Path) -> int:
    """Drop every shared library (``*.so*``) under ``roots`` from the page cache: pages no
    process maps go, so the next daemon reads and maps them as one started after boot. Returns
    how many files were advised (a file another process maps keeps those pages)."""
    count = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if ".so" not in name:
                    continue
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    count += 1
                finally:
                    os.close(fd)
    return count


def byte_compile(python: Path, tree: Path) -> None:
    """``tree``'s package byte-compiled as pip installs it (a missing .pyc is compiled at
    every start where nothing writes bytecode: the unit's PYTHONDONTWRITEBYTECODE=1)."""
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", "edge_agent"],
        cwd=tree, check=True, stdout=subprocess.DEVNULL,
    )


# -- one run -----------------------------------------------------------------------------------


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


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of ``pid`` in MB."""
    fields = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[fields[key]] = round(int(value.split()[0]) / 1024, 2)
    return out


#: ``--edge-agentd``: what the unit's ``ExecStart=edge-agentd`` runs, from the tree on PYTHONPATH.
EDGE_AGENTD = "import sys; from edge_agent.cli import daemon_main; sys.exit(daemon_main())"


def write_config(work: Path, agents: int, mqtt_port: int | None) -> Path:
    text = CONFIG.format(state=work / "state", agents=agents)
    if mqtt_port is not None:
        text += MQTT.format(port=mqtt_port)
    config = work / "config.toml"
    config.write_text(text)
    return config


def run_once(
    tree: Path,
    mqtt_port: int | None,
    agents: int,
    seconds: float,
    *,
    python: Path | None = None,
    edge_agentd: bool = False,
    evict: bool = True,
) -> dict[str, object]:
    """One daemon of ``tree`` run by ``python`` (this one by default) for ``seconds``."""
    python = Path(sys.executable) if python is None else python
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        config = write_config(Path(tmp), agents, mqtt_port)
        env = dict(os.environ, PYTHONPATH=str(tree))
        if evict:
            evict_libraries(site_root(python), tree)
        entry = ["-c", EDGE_AGENTD] if edge_agentd else ["-m", "edge_agent", "run"]
        proc = subprocess.Popen(
            [str(python), *entry, "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tree,
        )
        try:
            time.sleep(seconds)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon in {tree} exited with {proc.returncode}")
            sizes = status_mb(proc.pid)
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
        **sizes,
        "pydantic_mapped": "pydantic_core" in maps,
        "libcrypto_mapped": "libcrypto" in maps,
        "by_mapping": mapping,
    }


# -- the parts, in one process -----------------------------------------------------------------

#: What ``edge-agent run --config CONFIG`` does (edge_agent/cli/run.py), the RSS read after each
#: phase; then what the group's own accounting says it holds.
PARTS = r"""
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
CONFIG_PATH, SECONDS = sys.argv[1], float(sys.argv[2])
out = {"interpreter_mb": rss()}
from edge_agent.daemon.heap import tune_allocator
from edge_agent.daemon.footprint import keep_unused_modules_out
tune_allocator()
keep_unused_modules_out()
import numpy
out["numpy_mb"] = rss()
from edge_agent.config.isolated import read_config_isolated
from edge_agent.daemon.service import Daemon
from edge_agent.service.logs import configure_logging
out["modules_mb"] = rss()
source = read_config_isolated(CONFIG_PATH)
configure_logging("WARNING")
out["config_mb"] = rss()
daemon = Daemon.from_file(source, CONFIG_PATH)
out["groups_mb"] = rss()
before = set(sys.modules)
assert daemon.run(duration_s=SECONDS) == 0
out["running_mb"] = rss()
group = daemon.groups[0].agents
out["modules_while_running"] = len(set(sys.modules) - before)
out["group_state_bytes"] = group.n_agents * group.per_agent_nbytes()
out["scratch_bytes"] = group.scratch_nbytes(group.n_agents)
out["model_bytes"] = group.shared_nbytes
out["modules"] = len(sys.modules)
print(json.dumps(out))
"""

PHASES = ("interpreter", "numpy", "modules", "config", "groups", "running")


def run_parts(python: Path, tree: Path, mqtt_port: int | None, agents: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-memory-parts-") as tmp:
        config = write_config(Path(tmp), agents, mqtt_port)
        evict_libraries(site_root(python), tree)
        done = subprocess.run(
            [str(python), "-c", PARTS, str(config), str(seconds)],
            env=dict(os.environ, PYTHONPATH=str(tree)),
            capture_output=True, text=True, check=False, cwd=tree,
        )
    if done.returncode:
        raise SystemExit(f"the parts probe failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    last = 0.0
    for phase in PHASES:  # what each phase added
        now = row[f"{phase}_mb"]
        row[f"{phase}_added_mb"] = round(now - last, 2)
        row[f"{phase}_mb"] = round(now, 2)
        last = now
    return row


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="run time before reading")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree, venv and mode")
    parser.add_argument("--agents", type=int, default=1000, help="grid10 agents")
    parser.add_argument(
        "--venvs", default="device,extras", help="device, extras and/or this (comma-separated)"
    )
    parser.add_argument("--baseline", type=Path, help="another checkout, run in the same rounds")
    parser.add_argument("--no-mqtt", action="store_true", help="only the runs without MQTT")
    parser.add_argument("--parts", action="store_true", help="also the phases in one process")
    parser.add_argument(
        "--edge-agentd",
        action="store_true",
        help="start the daemons as the unit does (edge-agentd), not as python -m edge_agent run",
    )
    parser.add_argument("--smoke", action="store_true", help="50 agents, one 3 s round: for CI")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.seconds, args.rounds = 50, 3.0, 1
        args.venvs, args.parts = "this", True
    venvs = {name: ensure_venv(name) for name in args.venvs.split(",")}
    trees = [("this", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    for _, tree in trees:
        for python in venvs.values():
            byte_compile(python, tree)
    with tempfile.TemporaryDirectory(prefix="bench-memory-broker-") as tmp:
        broker, port = (None, None) if args.no_mqtt else start_mosquitto(Path(tmp))
        try:
            modes = [("off", None)] + ([] if port is None else [("on", port)])
            if args.parts:
                first, python = next(iter(venvs.items()))
                for mode, mqtt_port in modes:
                    row = run_parts(python, REPO, mqtt_port, args.agents, args.seconds)
                    emit({"bench": "memory_parts", "venv": first, "mqtt": mode,
                          "agents": args.agents, "seconds": args.seconds, **row})
            for mode, mqtt_port in modes:
                for venv, python in venvs.items():
                    rss: dict[str, list[float]] = {name: [] for name, _ in trees}
                    for round_ in range(args.rounds):
                        for name, tree in trees:
                            row = run_once(
                                tree, mqtt_port, args.agents, args.seconds,
                                python=python, edge_agentd=args.edge_agentd,
                            )
                            rss[name].append(float(row["rss_mb"]))  # type: ignore[arg-type]
                            emit({"bench": "memory", "venv": venv, "tree": name, "mqtt": mode,
                                  "round": round_, "agents": args.agents,
                                  "entry": "edge-agentd" if args.edge_agentd else "run",
                                  "seconds": args.seconds, **row})
                    summary: dict[str, object] = {
                        "bench": "memory_summary", "venv": venv, "mqtt": mode,
                        "agents": args.agents, "seconds": args.seconds,
                    }
                    for name, values in rss.items():
                        summary[f"{name}_rss_mb"] = round(statistics.median(values), 2)
                    summary["target_mb"] = TARGETS_MB[mode]
                    summary["met"] = summary["this_rss_mb"] <= TARGETS_MB[mode]  # type: ignore[operator]
                    if args.baseline:
                        diffs = [a - b for a, b in zip(rss["this"], rss["baseline"], strict=True)]
                        summary["this_minus_baseline_mb"] = round(statistics.median(diffs), 2)
                    emit(summary)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(10)


if __name__ == "__main__":
    main()
