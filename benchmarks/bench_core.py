"""Runtime-core benchmark: batched Active Inference agents on one core.

For every workload and agent count, an :class:`~edge_agent.core.agents.AifAgentGroup` (int8 by
default) steps through its own built-in world (:mod:`edge_agent.sim`), so beliefs are those of
agents that act and observe, not of random observations; only ``group.step(obs)`` is timed (the
world's step and episode resets are not). One JSON object per line:

* ``agent_steps_per_s``: agents x timed steps / wall time of those steps; ``cpu_agent_steps_per_s``
  the same over the process CPU time (less sensitive to other load on a shared machine);
* ``step_ms_p50`` / ``step_ms_p99``: latency of one ``step`` of the whole group;
* ``bytes_per_agent``: ``per_agent_nbytes(history_capacity=64)``; ``shared_bytes``: the model's
  shared tables (``shared_nbytes``); ``scratch_bytes``: the group's preallocated kernel scratch;
* ``rss_mb``: this process's resident set after the measurement;
* ``ratio_vs_reference``: batched throughput over that of the float64
  :class:`~edge_agent.aif.reference.ReferenceAgent` stepping agents one by one in this process.
  The reference is measured on a few agents (``reference_agents`` x ``reference_steps``) in the
  same world and extrapolated per agent: its cost is linear in the number of agents;
* a last line ``workload: "import"`` with the RSS of a fresh interpreter after ``import
  edge_agent`` (and after ``import edge_agent.core.agents``, which loads numpy and pydantic).

The process runs one thread (``OPENBLAS_NUM_THREADS=1``; numpy does not thread otherwise), so it
uses one core at a time, as the targets say; ``--cpu N`` also pins it to CPU ``N`` (on a shared
machine that makes it wait for that CPU when the other one is free). Lines with a target carry
``target`` and ``met``.

``--profile grid10:1:10000`` instead runs cProfile over the steps of one case and prints where
the time goes, per kernel (the stages of :mod:`edge_agent.aif.kernels`; numpy calls are counted
in the kernel that makes them).

    python benchmarks/bench_core.py [--quick] [--workloads grid10,tmaze,explorer]
        [--agents 1,10,100,1000,10000] [--precision int8] [--history 0] [--cpu 0]
        [--profile WORKLOAD:POLICY_LEN:N]
    python benchmarks/bench_core.py --table run1.jsonl [run2.jsonl ...] [--before old1.jsonl ...]

``--smoke`` steps every case with 10 agents for 0.05 s: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: (workload, policy_len) pairs; explorer is run at policy lengths 1 to 3.
CASES = (
    ("grid10", 1), ("grid10", 2), ("tmaze", 1), ("explorer", 1), ("explorer", 2), ("explorer", 3),
)
#: Targets on this machine class, one core: (workload, policy_len, N) -> rule
#: (benchmarks/notes/core-and-pymdp.md and planning.md measure them).
TARGETS: dict[tuple[str, int, int], dict[str, Any]] = {
    ("grid10", 1, 10_000): {"agent_steps_per_s": 500_000},
    ("grid10", 1, 1): {"agent_steps_per_s": 20_000},
    ("tmaze", 1, 10_000): {"agent_steps_per_s": 1_000_000},
    ("explorer", 3, 1): {"step_ms_p50_max": 1.0},
    # Deeper planning.
    ("grid10", 2, 1_000): {"agent_steps_per_s": 200_000},
    ("explorer", 3, 10_000): {"agent_steps_per_s": 100_000},
}
BYTES_TARGET = ("grid10", 8 * 1024)  # per_agent_nbytes(history_capacity=64)
RSS_IMPORT_TARGET_MB = 40.0


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def rss_mb() -> float:
    """Resident set of this process from /proc (no extra import)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def import_rss() -> dict[str, Any]:
    """RSS of a fresh interpreter after importing the package, measured in a subprocess."""
    probe = (
        "import {mod}\n"
        "with open('/proc/self/status') as fh:\n"
        "    print([l.split()[1] for l in fh if l.startswith('VmRSS:')][0])\n"
    )
    out: dict[str, Any] = {"workload": "import"}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key, mod in (("edge_agent", "edge_agent"), ("edge_agent_agents", "edge_agent.core.agents")):
        res = subprocess.run(
            [sys.executable, "-c", probe.format(mod=mod)],
            capture_output=True, text=True, check=True, env=env,
        )
        out[f"rss_mb_import_{key}"] = round(int(res.stdout.strip()) / 1024.0, 1)
    res = subprocess.run(
        [sys.executable, "-c", probe.format(mod="sys")],
        capture_output=True, text=True, check=True, env=env,
    )
    out["rss_mb_bare_interpreter"] = round(int(res.stdout.strip()) / 1024.0, 1)
    out["target"] = {"rss_mb_import_edge_agent_max": RSS_IMPORT_TARGET_MB}
    out["met"] = out["rss_mb_import_edge_agent"] <= RSS_IMPORT_TARGET_MB
    return out


def time_group(
    workload: str, policy_len: int, n: int, *, precision: str, history: int, seconds: float,
    min_steps: int, max_steps: int,
) -> dict[str, Any]:
    import numpy as np

    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env = make_env(workload, n, seed=1)
    group = AifAgentGroup(
        env.model, n, settings=AifSettings(policy_len=policy_len),
        precision=precision,  # type: ignore[arg-type]
        history_capacity=history,
    )
    obs = env.reset()
    warmup = 3
    times: list[float] = []
    cpu = 0.0
    start_all = time.perf_counter()
    step = 0
    while True:
        if env.episode_start.any():
            group.reset(env.episode_start)
        c0 = time.process_time()
        t0 = time.perf_counter()
        actions = group.step(obs, now=float(step))
        t1 = time.perf_counter()
        c1 = time.process_time()
        obs = env.step(actions)
        step += 1
        if step > warmup:
            times.append(t1 - t0)
            cpu += c1 - c0
        done = time.perf_counter() - start_all >= seconds and len(times) >= min_steps
        if done or len(times) >= max_steps:
            break
    arr = np.array(times)
    planner = "tree"  # getattr: the script also measures the code before the fast paths
    if getattr(group.cm, "small", None) is not None and min(n, group.block_size) <= 16:
        planner = "small"
    elif getattr(group.cm, "deep", None) is not None:
        planner = "deep"
    elif getattr(group.cm, "local", None) is not None:
        planner = "local"
    scratch = getattr(group, "scratch_nbytes", None)
    return {
        "agent_steps_per_s": round(n * len(arr) / arr.sum()),
        "cpu_agent_steps_per_s": round(n * len(arr) / cpu) if cpu > 0 else None,
        "step_ms_p50": round(float(np.percentile(arr, 50)) * 1e3, 4),
        "step_ms_p99": round(float(np.percentile(arr, 99)) * 1e3, 4),
        "timed_steps": len(arr),
        "bytes_per_agent": group.per_agent_nbytes(64),
        "shared_bytes": group.shared_nbytes,
        "scratch_bytes": None if scratch is None else scratch(n),
        "block_size": group.block_size,
        "planner": planner,
        "rss_mb": round(rss_mb(), 1),
    }


def profile(case: str, precision: str, history: int, seconds: float) -> None:
    """cProfile one case's steps; print the kernels' share of the step time (JSON lines)."""
    import cProfile
    import pstats

    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    workload, policy_len, n = case.split(":")
    env = make_env(workload, int(n), seed=1)
    group = AifAgentGroup(
        env.model, int(n), settings=AifSettings(policy_len=int(policy_len)),
        precision=precision,  # type: ignore[arg-type]
        history_capacity=history,
    )
    obs = env.reset()
    for _ in range(3):
        obs = env.step(group.step(obs))
    prof = cProfile.Profile()
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 5:
        if env.episode_start.any():
            group.reset(env.episode_start)
        prof.enable()
        actions = group.step(obs)
        prof.disable()
        obs = env.step(actions)
        steps += 1
    stats = pstats.Stats(prof)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[3] for k, v in entries.items() if k[2] == "step" and "agents.py" in k[0])
    rows = []
    for (path, _line, func), (_, ncalls, tottime, cumtime, _) in entries.items():
        if "edge_agent" not in path:
            continue
        rows.append({
            "function": f"{Path(path).name}:{func}", "calls_per_step": round(ncalls / steps, 2),
            "self_share": round(tottime / total, 4), "cum_share": round(cumtime / total, 4),
        })
    rows.sort(key=lambda r: -r["self_share"])
    emit({"workload": "profile", "case": case, "steps": steps,
          "step_ms_under_profiler": round(total / steps * 1e3, 4)})
    for row in rows[:15]:
        emit({"workload": "profile", "case": case, **row})


def table(paths: list[str], before: list[str] | None) -> None:
    """Print a markdown summary of JSON-lines runs: ranges over the runs, medians of latencies;
    with ``before`` (runs of older code) also their CPU-time rates and the speed-up of medians."""
    import statistics

    def load(path: str) -> dict[tuple[str, int, int], dict[str, Any]]:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.startswith("{")]
        return {(r["workload"], r["policy_len"], r["N"]): r for r in rows if "N" in r}

    runs = [load(p) for p in paths]
    olds = [load(p) for p in before or []]
    cols = ["workload", "L", "N", "planner", "agent-steps/s, wall", "agent-steps/s, CPU time",
            "step p50 / p99 ms", "x reference", "bytes/agent"]
    if olds:
        cols += ["before: agent-steps/s, CPU time", "speed-up (medians, CPU)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * 3 + "---|" + "--:|" * (len(cols) - 4))
    for key, first in runs[0].items():
        rs = [run[key] for run in runs if key in run]
        wall = [r["agent_steps_per_s"] for r in rs]
        cpu = [r["cpu_agent_steps_per_s"] for r in rs]

        def span(xs: list[int]) -> str:
            return f"{min(xs):,}" if min(xs) == max(xs) else f"{min(xs):,} - {max(xs):,}"

        p50 = statistics.median(r["step_ms_p50"] for r in rs)
        p99 = statistics.median(r["step_ms_p99"] for r in rs)
        ratio = statistics.median(r["ratio_vs_reference"] for r in rs)
        cells = [first["workload"], str(first["policy_len"]), f"{first['N']:,}", first["planner"],
                 span(wall), span(cpu), f"{p50:.3f} / {p99:.3f}", f"{ratio:,.0f}",
                 f"{first['bytes_per_agent']:,}"]
        if olds:
            prev = [o[key]["cpu_agent_steps_per_s"] for o in olds if key in o]
            if not prev:
                cells += ["", ""]
            else:
                cells += [span(prev), f"{statistics.median(cpu) / statistics.median(prev):.1f}x"]
        print("| " + " | ".join(cells) + " |")


def reference_rate(workload: str, policy_len: int, agents: int, steps: int) -> dict[str, Any]:
    """Agent-steps per second of float64 ReferenceAgents stepped one by one (same world)."""
    from edge_agent.aif.reference import ReferenceAgent
    from edge_agent.aif.settings import AifSettings
    from edge_agent.sim.registry import make_env

    env = make_env(workload, agents, seed=1)
    settings = AifSettings(policy_len=policy_len)
    refs = [ReferenceAgent(env.model, settings) for _ in range(agents)]
    obs = env.reset()
    total = 0.0
    count = 0
    for _ in range(steps):
        actions = []
        for i, ref in enumerate(refs):
            if env.episode_start[i]:
                ref.reset()
            t0 = time.perf_counter()
            a = ref.step([int(o) for o in obs[i]])
            total += time.perf_counter() - t0
            count += 1
            actions.append(a)
        import numpy as np

        obs = env.step(np.array(actions))
    return {"reference_agent_steps_per_s": count / total, "reference_agents": agents,
            "reference_steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 0.3 s each)")
    parser.add_argument("--smoke", action="store_true", help="10 agents, 0.05 s runs: for CI")
    parser.add_argument("--workloads", default="grid10,tmaze,explorer")
    parser.add_argument("--agents", default="1,10,100,1000,10000", help="comma-separated Ns")
    parser.add_argument("--precision", default="int8", choices=["int8", "float64"])
    parser.add_argument("--history", type=int, default=0, help="history_capacity of the groups")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin to this CPU (default: not pinned)"
    )
    parser.add_argument("--no-import-rss", action="store_true")
    parser.add_argument("--profile", default=None, help="WORKLOAD:POLICY_LEN:N to profile")
    parser.add_argument("--table", nargs="+", default=None, help="JSON-lines runs to tabulate")
    parser.add_argument("--before", nargs="+", default=None, help="with --table: runs of old code")
    args = parser.parse_args(argv)
    if args.smoke:
        args.quick, args.agents, args.seconds = True, "10", 0.05
    if args.table:
        table(args.table, args.before)
        return 0

    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported (lazily, below)
    os.environ["OMP_NUM_THREADS"] = "1"
    cpu = args.cpu
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sys.path.insert(0, str(REPO))

    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 2.0)
    if args.profile:
        profile(args.profile, args.precision, args.history, seconds)
        return 0
    workloads = args.workloads.split(",")
    sizes = [int(x) for x in args.agents.split(",")]
    emit({
        "workload": "machine", "python": sys.version.split()[0], "cpu_pinned": cpu,
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "precision": args.precision, "history_capacity": args.history, "seconds": seconds,
    })
    for workload, policy_len in CASES:
        if workload not in workloads:
            continue
        ref_agents, ref_steps = (2, 2) if policy_len >= 3 else (4, 4 if args.quick else 10)
        ref = reference_rate(workload, policy_len, ref_agents, ref_steps)
        for n in sizes:
            rec: dict[str, Any] = {
                "workload": workload, "precision": args.precision, "N": n,
                "policy_len": policy_len, "history_capacity": args.history,
            }
            rec.update(
                time_group(
                    workload, policy_len, n, precision=args.precision, history=args.history,
                    seconds=seconds, min_steps=5, max_steps=20_000,
                )
            )
            rec.update(ref)
            rec["ratio_vs_reference"] = round(
                rec["agent_steps_per_s"] / ref["reference_agent_steps_per_s"], 1
            )
            target = TARGETS.get((workload, policy_len, n))
            if target is not None:
                rec["target"] = target
                if "agent_steps_per_s" in target:
                    rec["met"] = rec["agent_steps_per_s"] >= target["agent_steps_per_s"]
                else:
                    rec["met"] = rec["step_ms_p50"] <= target["step_ms_p50_max"]
            if workload == BYTES_TARGET[0]:
                rec["bytes_target"] = BYTES_TARGET[1]
                rec["bytes_met"] = rec["bytes_per_agent"] <= BYTES_TARGET[1]
            emit(rec)
    if not args.no_import_rss:
        emit(import_rss())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
