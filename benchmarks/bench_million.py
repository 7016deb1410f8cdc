"""A million agents in the daemon: peak memory from start to stop, and the rate.

Runs the real daemon (``python -m edge_agent run --config ...``) on one grid10 group of
``--agents`` int8 agents with 64-step compact histories (``history_beliefs = "map"``), profile
``pi5-8gb``, ``--workers`` processes, for each planning policy of ``--policies`` in turn, until
the status file counts ``--ticks`` ticks; then SIGTERM (final snapshot) and the exit. While it
runs, the whole process tree (the daemon, its workers, its short-lived config reader) is sampled
every ``--every-s`` seconds:

* ``pss_mb``: the sum over the tree of ``Pss`` from ``/proc/PID/smaps_rollup`` (each page shared
  by k processes counts 1/k in each: the sum is the memory the tree holds; the state in shared
  memory counts once); ``rss_mb``: the sum of the tree's RSS (counts shared pages once per process
  that touched them: an upper bound, not memory held); ``daemon_rss_mb``: the daemon's own RSS.
  Each as ``*_peak`` (from start to exit, with the phase it happened in: ``start`` before READY,
  ``run``, ``stop`` after SIGTERM) and ``*_steady`` (median of the ``run`` samples).
* ``hz``: ticks over time between the first and last status read of the run; the status file's
  ``tick_p50_ms``/``tick_p99_ms``, ``overruns`` and ``capacity_hz`` (1000 / p50: how fast the
  daemon could tick); ``cpu_s_per_tick``: CPU seconds the tree spent per tick (on a loaded
  machine the wall clock is not the code's: with 2 cores to itself, 2 Hz needs at most 1.0);
  ``duty_cycle``: the last tick's share of agents planned.
* ``score``: goals reached per agent-step (bench_planning's grid score), ``score_ratio``: over
  the ``every_tick`` run's when it is in ``--policies``.
* ``bytes_per_agent``: the group's state by part (``AifAgentGroup.memory.nbytes_by_part``), the
  world's per-agent arrays and the daemon's observation buffers; ``budget_by_kind_mb``: the
  memory budget's report.

    python benchmarks/bench_million.py [--agents 1000000] [--workers 2] [--ticks 40]
        [--tick-hz 2] [--policies every_4,every_tick] [--restore-ticks 3]

``--restore-ticks N``: after each run, a second daemon on the same state directory restores its
final snapshot at start and runs N ticks (its record: ``restored``; its ``start`` peak is the
restore's).

``--smoke``: 20,000 agents, 8 ticks, one policy: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
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
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Planning policies by name: the ``[groups.planning]`` table (docs/planning.md); none: every tick.
POLICIES: dict[str, str] = {
    "every_tick": "",
    "every_2": "[groups.planning]\nevery = 2\n",
    "every_4": "[groups.planning]\nevery = 4\n",
    "every_8": "[groups.planning]\nevery = 8\n",
}

CONFIG = """\
[daemon]
profile = "pi5-8gb"
state_dir = "{state}"
tick_hz = {hz}

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {agents}
history_capacity = 64
history_beliefs = "map"
workers = {workers}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
{planning}"""


def smaps(pid: int) -> tuple[int, int]:
    """``(Rss, Pss)`` of ``pid`` in bytes, from ``/proc/PID/smaps_rollup`` (0, 0 once gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        return 0, 0
    return rss, pss


class TreeSampler:
    """Samples of the daemon's process tree: ``(phase, pss, rss, daemon_rss, processes)``."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.samples: list[tuple[str, int, int, int, int]] = []

    def sample(self, phase: str) -> None:
        try:
            pids = [self.root.pid] + [c.pid for c in self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        pss = rss = own = 0
        for pid in pids:
            r, p = smaps(pid)
            rss, pss = rss + r, pss + p
            if pid == self.root.pid:
                own = r
        if own:
            self.samples.append((phase, pss, rss, own, len(pids)))

    def cpu_s(self) -> float:
        """CPU seconds (user and system) of the tree's processes so far."""
        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return total
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def summary(self) -> dict[str, Any]:
        mb = 1 / 2**20
        out: dict[str, Any] = {"samples": len(self.samples)}
        for i, name in ((1, "pss"), (2, "rss"), (3, "daemon_rss")):
            peak = max(self.samples, key=lambda s: s[i])
            out[f"{name}_peak_mb"] = round(peak[i] * mb, 1)
            out[f"{name}_peak_phase"] = peak[0]
            run = [s[i] for s in self.samples if s[0] == "run"]
            out[f"{name}_steady_mb"] = round(statistics.median(run) * mb, 1) if run else None
            for phase in ("start", "run", "stop"):
                values = [s[i] for s in self.samples if s[0] == phase]
                out[f"{name}_peak_{phase}_mb"] = round(max(values) * mb, 1) if values else None
        out["processes_max"] = max(s[4] for s in self.samples)
        return out


def arrays_nbytes(obj: object, n: int | None, depth: int = 2) -> int:
    """Bytes of the per-agent arrays (one of their dimensions is ``n``; every array if
    ``n`` is None) ``obj`` holds, each buffer once."""
    import numpy as np

    seen: set[int] = set()
    total = 0

    def owner(a: Any) -> Any:
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a

    def visit(value: object, level: int) -> None:
        nonlocal total
        if isinstance(value, np.ndarray):
            root = owner(value)
            if (n is None or n in root.shape) and id(root) not in seen:
                seen.add(id(root))
                total += root.nbytes
        elif isinstance(value, dict | list | tuple):
            for v in value.values() if isinstance(value, dict) else value:
                visit(v, level)
        elif level > 0 and not isinstance(value, type | np.generic):
            # an object's attributes, in its __dict__ or its __slots__ (the world's generator)
            names = list(getattr(value, "__dict__", {}))
            names += [s for c in type(value).__mro__ for s in getattr(c, "__slots__", ())]
            for name in names:
                visit(getattr(value, name, None), level - 1)

    visit(obj, depth)
    return total


def bytes_per_agent(agents: int, every: int) -> dict[str, Any]:
    """The per-agent bytes of the benchmark's group, by part, from a probe built here."""
    from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env: Any = make_env("grid10", 1000, seed=1)
    world: Any = make_env("grid10", agents, seed=1)  # its scratch is per chunk of agents
    policy = EVERY_TICK if every == 1 else PlanningPolicy(every=every)
    # built as the aif kind builds a group that neither learns nor coordinates (no prior kept
    # between ticks where it follows from the beliefs and actions)
    probe = AifAgentGroup(
        env.model, 1000, history_capacity=64, history_beliefs="map", planning=policy,
        keep_prior=False,
    )
    parts: dict[str, Any] = dict(probe.memory.nbytes_by_part())
    parts["world"] = round(arrays_nbytes(world, None) / agents, 1)
    # The workers' shared copy of each tick's observations (int64 per modality,
    # edge_agent.core.workers); the runtime's observations are the world's own array (counted
    # with the world).
    parts["observations"] = 8 * env.reset().shape[1]
    parts["total"] = round(sum(v for k, v in parts.items() if k != "total"), 1)
    scratch = probe.scratch_nbytes(agents)
    return {"bytes_per_agent": parts, "scratch_mb_per_process": round(scratch / 2**20, 1)}


class Run:
    """One daemon run: its phase (``start``, ``run``, ``stop``), its samples and status reads."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, state: Path) -> None:
        self.proc, self.sock, self.state = proc, sock, state
        self.sampler = TreeSampler(proc.pid)
        self.phase = "start"
        self.t0 = time.perf_counter()
        self.ready_s: float | None = None
        self.stop_at: float | None = None
        self.first: tuple[float, int, float] | None = None  # (time, ticks, tree CPU s)
        self.last: tuple[float, int, float] | None = None
        self.status: dict[str, Any] = {}

    def poll(self, ticks: int) -> None:
        """One sample; READY moves to ``run``, ``ticks`` ticks to ``stop`` (SIGTERM)."""
        self.sampler.sample(self.phase)
        if self.phase == "start":
            try:
                if "READY=1" in self.sock.recv(65536).decode():
                    self.phase, self.ready_s = "run", time.perf_counter() - self.t0
            except BlockingIOError:
                pass
        elif self.phase == "run":
            self.status = read_status(self.state) or self.status
            done = self.status.get("tick", {}).get("ticks", 0) if self.status else 0
            if done and (self.last is None or done != self.last[1]):
                self.last = (time.perf_counter(), done, self.sampler.cpu_s())
                if self.first is None:
                    self.first = self.last
            if done >= ticks:
                self.phase, self.stop_at = "stop", time.perf_counter()
                self.proc.send_signal(signal.SIGTERM)

    def hz(self) -> float | None:
        """Ticks over the time between the first and the last status read that saw a new one."""
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        return round((self.last[1] - self.first[1]) / (self.last[0] - self.first[0]), 3)

    def cpu_s_per_tick(self) -> float | None:
        """CPU seconds the tree spent per tick (all its processes, user and system) over the
        same window as :meth:`hz`: with 2 cores to itself, a rate of 2 Hz needs at most 1.0."""
        if self.first is None or self.last is None or self.last[1] <= self.first[1]:
            return None
        return round((self.last[2] - self.first[2]) / (self.last[1] - self.first[1]), 3)


def run(args: argparse.Namespace, policy: str) -> list[dict[str, Any]]:
    """The run of ``policy``; with ``--restore-ticks``, then a second daemon on the same state
    directory, which restores the first one's final snapshot at start (``restored``)."""
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        state = tmpdir / "state"
        cfg = tmpdir / "million.toml"
        planning = POLICIES[policy]
        cfg.write_text(
            CONFIG.format(
                state=state,
                hz=args.tick_hz,
                agents=args.agents,
                workers=args.workers,
                planning=planning,
            )
        )
        every = int(planning.split("=")[1]) if planning else 1
        records.append(launch(args, policy, tmpdir, cfg, ticks=args.ticks, every=every))
        if args.restore_ticks:
            (state / "status.json").unlink()
            again = launch(args, policy, tmpdir, cfg, ticks=args.restore_ticks, every=every)
            again["restored"] = (read_status(state) or {}).get("snapshots", {}).get(
                "restored_from"
            ) is not None
            records.append(again)
    return records


def launch(
    args: argparse.Namespace, policy: str, tmpdir: Path, cfg: Path, *, ticks: int, every: int
) -> dict[str, Any]:
    """Start the daemon on ``cfg``, sample it until ``ticks`` ticks, SIGTERM, and its record."""
    state = tmpdir / "state"
    (tmpdir / "notify.sock").unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmpdir / "notify.sock"))
    sock.setblocking(False)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmpdir / "notify.sock"),
        "EDGE_AGENT_PROFILES_DIR": str(REPO / "firmware_profiles"),
    }
    log_path = tmpdir / "daemon.log"  # a file: a pipe nobody reads would block the daemon
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    watch = Run(proc, sock, state)
    limit = time.monotonic() + args.timeout_s
    try:
        while proc.poll() is None:
            if time.monotonic() > limit:
                raise SystemExit(f"{policy}: no exit in {args.timeout_s} s\n{tail(log_path)}")
            watch.poll(ticks)
            time.sleep(args.every_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    if proc.returncode != 0:
        raise SystemExit(f"{policy}: the daemon exited {proc.returncode}\n{tail(log_path)}")
    exit_s = time.perf_counter()
    final = read_status(state) or watch.status
    group, tick = final["groups"][0], final["tick"]
    agent_steps = group["agents"] * group["steps"]
    snap = final["snapshots"]["last"] or {}
    record: dict[str, Any] = {
        "bench": "million",
        "policy": policy,
        "agents": args.agents,
        "workers": group.get("workers"),
        "tick_hz": args.tick_hz,
        "ready_s": None if watch.ready_s is None else round(watch.ready_s, 2),
        "stop_s": None if watch.stop_at is None else round(exit_s - watch.stop_at, 2),
        **watch.sampler.summary(),
        "ticks": tick["ticks"],
        "hz": watch.hz(),
        "cpu_s_per_tick": watch.cpu_s_per_tick(),
        "tick_p50_ms": tick["p50_ms"],
        "tick_p99_ms": tick["p99_ms"],
        "capacity_hz": round(1000 / tick["p50_ms"], 3) if tick["p50_ms"] else None,
        "overruns": tick["overruns"],
        "duty_cycle": (group.get("planning") or {}).get("duty_cycle", 1.0),
        "score": (
            round(group.get("world", {}).get("goals_reached", 0) / agent_steps, 6)
            if agent_steps
            else None
        ),
        "budget_used_mb": round(final["budget"]["used_bytes"] / 2**20, 1),
        "budget_by_kind_mb": {
            k: round(v / 2**20, 1) for k, v in final["budget"].get("by_kind", {}).items()
        },
        "snapshot_mb": round(snap["bytes"] / 2**20, 1) if snap.get("bytes") else None,
        "snapshot_s": snap.get("seconds"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    record.update(bytes_per_agent(args.agents, every))
    return record


def read_status(state: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return None  # not written yet, or being replaced
    return data


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--tick-hz", type=float, default=2.0)
    parser.add_argument("--policies", default="every_4,every_tick")
    parser.add_argument("--every-s", type=float, default=0.2, help="sampling period")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--restore-ticks",
        type=int,
        default=0,
        help="then run a second daemon that restores the first one's final snapshot, this many "
        "ticks (its record has restored: true; its start peak is the restore's)",
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.ticks, args.policies, args.tick_hz = 20_000, 8, "every_4", 10.0
    records = []
    for policy in args.policies.split(","):
        if policy not in POLICIES:
            raise SystemExit(f"--policies: unknown {policy!r}; known: {', '.join(POLICIES)}")
        records.extend(run(args, policy))
    base = next(
        (r for r in records if r["policy"] == "every_tick" and "restored" not in r), None
    )
    for record in records:
        if base is not None and base["score"]:
            record["score_ratio"] = round(record["score"] / base["score"], 4)
        print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
