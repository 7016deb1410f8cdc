"""Run a benchmark and store the JSON lines it prints, each naming its machine, CPU and commit.

    python benchmarks/record.py [--machine NAME] bench_core.py -- --quick
    python benchmarks/record.py --machine pi4-lab bench_planning.py -- \
        --daemon grid10:1 --workers 4 --profile pi4-4gb

The benchmark runs as ``python benchmarks/<script> ARGS`` from the repository's root, with this
interpreter; what it prints goes to this terminal as it comes. When it exits 0, every line it
printed that is a JSON object is appended to ``benchmarks/results/<YYYY-MM-DD>-<machine>.jsonl``
with the machine, CPU, versions, commit, date and command (``benchmarks/result_store.py`` lists
the fields); other lines (a benchmark's markdown table after its JSON) are not stored. A run
that fails stores nothing. ``--smoke`` runs are refused: their numbers mean nothing.

Then ``python benchmarks/render.py`` writes ``docs/performance.md`` from every stored line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from result_store import MEASURED_CODE, REPO, STORE, append, file_for


def cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s ``model name``, else ``lscpu``'s (an arm64
    kernel names the core there: ``Cortex-A72``), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False, env={"LC_ALL": "C"}
        ).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def device_model() -> str | None:
    """The board's model from the device tree (``Raspberry Pi 4 Model B Rev 1.4``), if any."""
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"record.py: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(machine: str, script: str, command: str) -> dict[str, Any]:
    """What a stored line says besides the benchmark's own record."""
    started = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {
        "machine": machine,
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": package_version("numpy"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", *MEASURED_CODE)),
        "date": started,
        "run": started,
        "load1": round(os.getloadavg()[0], 2),
        "benchmark": script,
        "command": command,
    }
    device = device_model()
    if device:
        out["device"] = device
    return out


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` (lines starting with ``{``)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="python benchmarks/record.py [--machine NAME] SCRIPT [-- ARGS...]",
    )
    parser.add_argument(
        "--machine", default=None,
        help="a stable name for this machine (default: $EDGE_AGENT_BENCH_MACHINE or the hostname)",
    )
    parser.add_argument(
        "--store", type=Path, default=STORE, help="where the .jsonl files go (benchmarks/results)"
    )
    parser.add_argument("script", help="a benchmark: bench_core.py or benchmarks/bench_core.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    args = parser.parse_args(argv)
    bench_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    script = Path(args.script).name
    path = REPO / "benchmarks" / script
    if not (script.startswith("bench_") and script.endswith(".py") and path.is_file()):
        parser.error(f"{args.script}: no benchmark of that name in benchmarks/ (bench_*.py)")
    if "--smoke" in bench_args:
        parser.error("a --smoke run's numbers mean nothing: it is not stored")
    machine = args.machine or os.environ.get("EDGE_AGENT_BENCH_MACHINE") or socket.gethostname()
    if not machine or "/" in machine or machine.startswith("."):
        parser.error(f"--machine {machine!r}: give a plain name (letters, digits, '-')")
    command = shlex.join(["python", f"benchmarks/{script}", *bench_args])
    meta = provenance(machine, script, command)
    t0 = time.monotonic()
    with subprocess.Popen(
        [sys.executable, str(path), *bench_args], cwd=REPO, stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:  # shown as it comes: a long run shows its progress
            sys.stdout.write(line)
            sys.stdout.flush()
            printed.append(line)
    if proc.returncode != 0:
        print(f"record.py: {command} exited {proc.returncode}: nothing stored", file=sys.stderr)
        return proc.returncode or 1
    records = json_objects("".join(printed))
    if not records:
        print(f"record.py: {command} printed no JSON line: nothing stored", file=sys.stderr)
        return 1
    meta["seconds"] = round(time.monotonic() - t0, 1)
    target = file_for(meta["date"][:10], machine, args.store)
    count = append(target, ({**meta, "result": record} for record in records))
    shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
    print(f"record.py: {count} lines appended to {shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
