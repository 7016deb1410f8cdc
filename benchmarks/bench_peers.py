"""edge-agent against pymdp 0.0.7.1 and 1.0.4 (JAX) on the same closed loops.

The peers are installed on demand into their own venvs, made with the interpreter this venv was
made from, under ``${EDGE_AGENT_BENCH_CACHE:-.cache}/peers/``:

* ``pymdp-0.0.7.1``: ``inferactively-pymdp==0.0.7.1 numpy<2`` (numpy, no batching);
* ``pymdp-1.0.4``: ``inferactively-pymdp==1.0.4 jax[cpu]`` (JAX, CPU, a batch dimension).

Each peer runs in a worker process (``benchmarks/peers/worker.py`` under the peer's python,
JSON lines over stdin/stdout); edge-agent runs in this process. Every implementation gets the
same workload file (the built-in model's A, B, C, D as float64, and the world's episode rule),
builds ``N`` agents and drives the same seeded world (:mod:`peers.world`) with its own actions:
the world samples observations from ``A`` given the true state, moves the state by ``B`` given
the action, and starts episodes as ``edge_agent.sim`` does (grid10: respawn after the goal;
T-maze: trials of 3 steps; grid2f, the two-factor grid of ``edge_agent.sim.grid2f``: trials of 5
steps), resetting the agents' beliefs to ``D``. Settings: pymdp 0.0.7.1's
``Agent`` defaults everywhere (gamma 16, utility and state information gain, no parameter
information gain, deterministic actions from the action marginals, fixed-point inference with at
most 10 iterations; pymdp 1.0.4 with ``inference_algo="fpi"``, ``num_iter=10``,
``sampling_mode="marginal"``, float32 as JAX defaults to). pymdp 0.0.7.1 steps ``N`` ``Agent``
objects in a Python loop (it has no batch dimension); pymdp 1.0.4 one ``Agent`` with
``batch_size=N`` whose whole step is one ``equinox.filter_jit`` call, measured after the
compilation (its first step, reported as ``compile_s``).

Timing: after the first step and ``--warmup`` steps, ``--repeats`` timed runs per
implementation, interleaved (A B C A B C ...) so that load on the shared machine hits all alike;
each run steps for at least ``--seconds`` (at least one step). Only the agents' step is timed (for
pymdp 1.0.4 including the copy of the observations in and of the actions out), not the world's.
``steps_per_s`` is the median of the runs (``steps_per_s_best`` the best), in agent-steps per
second of wall time; ``cpu_steps_per_s`` the same over the process's CPU time. Every process
uses one thread (``OPENBLAS_NUM_THREADS=1``; XLA without its thread pool); ``--threads all``
lets the workers use their libraries' default threads. pymdp 0.0.7.1 is not run where one row
would take longer than ``--max-row-seconds`` (estimated from its first step on up to 100
agents, or from its rate at a smaller N of the same workload if that is slower): its rate is
then extrapolated from the largest ``N`` measured on the same workload (its cost is linear in
``N``) and marked so.

Correctness, loosely: the first step's action of every implementation is compared with each
peer's posterior over policies at that step (all agents see the same first observation): it
agrees when, for every controllable factor, its action marginal under the peer's ``q_pi`` is
within ``--tol`` of the best one (a tie is not a disagreement). ``same_actions`` is the fraction of
agents whose first ``warmup + repeats`` actions equal those of the reference peer (0.0.7.1 where
it ran, else 1.0.4); trajectories part at the first tie broken differently, so this is not a
correctness measure, and ``digest`` hashes those actions.

Output: one JSON object per line (``bench: "peers"``), then two markdown tables.

    python benchmarks/bench_peers.py [--quick] [--cases grid10:1:1,tmaze:2:1000,grid2f:1:10]
        [--impls "edge-agent int8,edge-agent float64,pymdp 0.0.7.1,pymdp 1.0.4"]
        [--repeats 5] [--seconds 1.0] [--threads 1|all] [--no-install] [--count-ops TICKS]

``--count-ops TICKS``: after the timed runs of a row, each edge-agent implementation steps
``TICKS`` more times with its numpy calls counted (:mod:`peers.opcount`: every ufunc, array
function and array method it calls; exact, machine-independent) and ``TICKS`` more with its
Python function calls counted; the records get ``numpy_calls_per_step`` and
``python_calls_per_step`` and the 12 most frequent of each (``numpy_calls_top``,
``python_calls_top``). A tick of a small model is mostly the fixed cost of its numpy calls and
of the Python around them.

``--smoke``: the two edge-agent implementations only (no peer venv is made or used), grid10 and
grid2f at N = 10, one 0.05 s run each: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing. The peers' worker
processes are not run: their venvs take minutes to make (``--quick`` runs them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread in this process (edge-agent's target is one core), set before numpy loads;
# an OPENBLAS_NUM_THREADS already in the environment wins. ``--threads`` is for the workers.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from peers.loop import ClosedLoop  # noqa: E402

WORKER = REPO / "benchmarks" / "peers" / "worker.py"

#: (workload, policy_len, N) of a full run and of ``--quick``.
FULL_CASES: tuple[tuple[str, int, int], ...] = (
    ("grid10", 1, 1), ("grid10", 1, 10), ("grid10", 1, 100), ("grid10", 1, 1000),
    ("grid10", 2, 1), ("grid10", 2, 1000),
    ("tmaze", 1, 1), ("tmaze", 1, 10), ("tmaze", 1, 1000),
    ("tmaze", 2, 1000),
    ("grid2f", 1, 1), ("grid2f", 1, 10), ("grid2f", 1, 1000),
    ("grid2f", 2, 1000),
)
QUICK_CASES: tuple[tuple[str, int, int], ...] = (
    ("grid10", 1, 1), ("grid10", 1, 100), ("tmaze", 1, 1000), ("grid2f", 1, 10),
)

EDGE_IMPLS = ("edge-agent int8", "edge-agent float64")
#: Peer name -> (venv directory, pip requirements, the pymdp version the venv must have).
PEERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "pymdp 0.0.7.1": ("pymdp-0.0.7.1", ("inferactively-pymdp==0.0.7.1", "numpy<2"), "0.0.7.1"),
    "pymdp 1.0.4": ("pymdp-1.0.4", ("inferactively-pymdp==1.0.4", "jax[cpu]"), "1.0.4"),
}
PYMDP_007 = "pymdp 0.0.7.1"
PYMDP_104 = "pymdp 1.0.4"
#: At most this many pymdp 0.0.7.1 agents take the first step where the row itself is skipped.
PROBE_AGENTS = 100
SEED = 1


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def log(msg: str) -> None:
    print(f"[bench_peers] {msg}", file=sys.stderr, flush=True)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# -- the peers' venvs and workers ---------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", str(REPO / ".cache"))) / "peers"


def installed_pymdp(python: Path) -> str | None:
    res = subprocess.run(
        [str(python), "-c",
         "import importlib.metadata as m; print(m.version('inferactively-pymdp'))"],
        capture_output=True, text=True, check=False,
    )
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_venv(peer: str, install: bool) -> Path:
    """The peer venv's python; created and installed into if missing (and ``install``)."""
    dirname, requirements, version = PEERS[peer]
    venv = cache_dir() / dirname
    python = venv / "bin" / "python"
    if python.exists() and installed_pymdp(python) == version:
        return python
    if not install:
        raise RuntimeError(f"{venv} has no inferactively-pymdp=={version} (and --no-install)")
    base = getattr(sys, "_base_executable", None) or sys.executable
    log(f"creating {venv} with {base} and installing {' '.join(requirements)}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, stdout=sys.stderr)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *requirements],
        check=True, stdout=sys.stderr,
    )
    found = installed_pymdp(python)
    if found != version:
        raise RuntimeError(f"{venv}: expected inferactively-pymdp=={version}, found {found}")
    return python


def worker_env(threads: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    if threads == "1":
        env.update(one_thread_env())
    return env


def one_thread_env() -> dict[str, str]:
    return {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    }


class Worker:
    """A peer's worker process; ``request`` sends one JSON line and reads the answer."""

    def __init__(self, impl: str, python: Path, threads: str) -> None:
        self.impl = impl
        self.proc = subprocess.Popen(
            [str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=worker_env(threads), cwd=str(REPO),
        )

    def request(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "impl": self.impl, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited (code {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"{self.impl} worker failed on {op}:\n{answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class Local:
    """edge-agent in this process, behind the same requests as a :class:`Worker`."""

    def __init__(self, impl: str) -> None:
        self.impl = impl
        self.loop: ClosedLoop | None = None

    def request(self, op: str, **kw: Any) -> dict[str, Any]:
        if op == "setup":
            self.loop = ClosedLoop(
                self.impl, kw["workload"], kw["n"], kw["policy_len"], seed=kw["seed"],
                warmup=kw["warmup"], record_steps=kw["record_steps"], agents=kw.get("agents"),
            )
            return self.loop.summary()
        assert self.loop is not None
        if op == "run":
            return self.loop.run(kw["min_steps"], kw["min_seconds"], kw["max_steps"])
        if op == "count":
            return self.loop.count_calls(kw["ticks"])
        if op == "finish":
            np.savez(kw["out"], **self.loop.arrays())  # type: ignore[arg-type]
            summary = self.loop.summary()
            self.loop = None
            return summary
        raise ValueError(op)

    def close(self) -> None:
        self.loop = None


# -- workloads ------------------------------------------------------------------------------


def write_workload(name: str, path: Path) -> None:
    """The built-in model of ``name`` and its world's episode rule, as every runner reads it."""
    from edge_agent.sim.registry import make_env

    np.savez(path, **workload_arrays(make_env(name, 1, seed=0)))  # type: ignore[arg-type]


def workload_arrays(env: Any) -> dict[str, np.ndarray]:
    """An ``edge_agent.sim`` world's model (float64) and episode rule, as :mod:`peers.world`
    reads them (its module docstring names the arrays)."""
    from edge_agent.sim.grid2f import TwoFactorGridEnv
    from edge_agent.sim.gridworld import GridWorldEnv
    from edge_agent.sim.tmaze import TMazeEnv

    model = env.model
    arrays: dict[str, np.ndarray] = {}
    for m, a in enumerate(model.A):
        arrays[f"A{m}"] = np.asarray(a, dtype=np.float64)
        arrays[f"C{m}"] = np.asarray(model.C[m], dtype=np.float64)
    for f, b in enumerate(model.B):
        arrays[f"B{f}"] = np.asarray(b, dtype=np.float64)
        arrays[f"D{f}"] = np.asarray(model.D[f], dtype=np.float64)
    for f, d in enumerate(env._spawn_distributions()):  # the built-in world's own rule
        arrays[f"spawn{f}"] = np.asarray(d, dtype=np.float64)
    if isinstance(env, GridWorldEnv):
        arrays["rule"] = np.array("goal")
        arrays["goal_state"] = np.array(env.goal[0] * env.width + env.goal[1])
        arrays["trial_len"] = np.array(0)
    elif isinstance(env, (TMazeEnv, TwoFactorGridEnv)):
        arrays["rule"] = np.array("trial")
        arrays["goal_state"] = np.array(-1)
        arrays["trial_len"] = np.array(env.trial_len)
    else:
        raise ValueError(f"no episode rule for world {type(env).__name__}")
    return arrays


# -- checks ---------------------------------------------------------------------------------


def first_action_agreement(
    actions: np.ndarray, q_pi: np.ndarray, policies: np.ndarray, num_controls: list[int],
    tol: float,
) -> float:
    """Fraction of agents whose first action is optimal, within ``tol``, under ``q_pi``.

    ``actions`` ``(n, F)`` of one implementation; ``q_pi`` ``(k, P)`` a peer's posterior over its
    own ``policies`` ``(P, L, F)``; the first ``min(n, k)`` agents are compared. Per controllable
    factor, the action marginal (pymdp's ``sample_action``) of the chosen action must be within
    ``tol`` of the largest one.
    """
    k = min(q_pi.shape[0], actions.shape[0])  # a probe stepped fewer agents
    q_pi = q_pi[:k]
    good = np.ones(k, dtype=bool)
    for f, u_f in enumerate(num_controls):
        if u_f < 2:
            continue
        marginal = np.stack([q_pi[:, policies[:, 0, f] == u].sum(axis=1) for u in range(u_f)], 1)
        marginal /= marginal.sum(axis=1, keepdims=True)
        chosen = marginal[np.arange(k), actions[:k, f]]
        good &= chosen >= marginal.max(axis=1) - tol
    return float(good.mean())


def same_actions(mine: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of agents whose recorded action sequences ``(T, n, F)`` are equal."""
    steps = min(mine.shape[0], ref.shape[0])
    equal = (mine[:steps] == ref[:steps]).all(axis=(0, 2))
    return float(equal.mean())


# -- one case -------------------------------------------------------------------------------


@dataclass
class Context:
    """What every case shares: the options, a scratch directory, and pymdp 0.0.7.1's rates so
    far, per (workload, policy_len): (the largest N measured, its agent-steps/s)."""

    args: argparse.Namespace
    tmp: Path
    runners: dict[str, Any]
    history: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)


def set_up(
    case: tuple[str, int, int], workload: Path, ctx: Context
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Build every implementation's loop (first step, warm-up). pymdp 0.0.7.1 first steps a
    probe of at most ``PROBE_AGENTS`` agents when N is larger; if the whole row would then take
    longer than ``--max-row-seconds`` it stays a probe. Returns (setups, probes)."""
    name, policy_len, n = case
    args = ctx.args
    common = {"workload": str(workload), "n": n, "policy_len": policy_len, "seed": SEED,
              "warmup": args.warmup, "record_steps": args.warmup + args.repeats}
    setups: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, Any]] = {}
    for impl, runner in ctx.runners.items():
        probe_n = min(n, PROBE_AGENTS)
        if impl == PYMDP_007 and n > probe_n:
            probe = runner.request("setup", **common, agents=probe_n)
            # Per agent-step: the probe's first step, or the rate measured at a smaller N on
            # this workload if slower (a first step can be cheaper than the ones after it).
            per_agent = probe["first_step_s"] / probe_n
            measured = ctx.history.get((name, policy_len))
            if measured is not None:
                per_agent = max(per_agent, 1.0 / measured[1])
            estimate = per_agent * n * (args.warmup + args.repeats)
            log(f"{name} L={policy_len} N={n}: pymdp 0.0.7.1 row estimated at {estimate:.0f} s")
            if estimate > args.max_row_seconds:
                probes[impl] = {**probe, "probe_agents": probe_n, "estimate_s": estimate,
                                "per_agent_s": per_agent}
                continue
            runner.request("finish", out=str(ctx.tmp / "discard.npz"))
        log(f"{name} L={policy_len} N={n}: setting up {impl}")
        setups[impl] = runner.request("setup", **common)
    return setups, probes


def measured_record(
    case: tuple[str, int, int], impl: str, runs: list[dict[str, Any]], summary: dict[str, Any]
) -> dict[str, Any]:
    name, policy_len, n = case
    rates = [r["steps_per_s"] for r in runs]
    cpu = [r["cpu_steps_per_s"] for r in runs if r["cpu_steps_per_s"]]
    rec: dict[str, Any] = {
        "bench": "peers", "workload": name, "policy_len": policy_len, "n": n, "impl": impl,
        "steps_per_s": round(statistics.median(rates), 1),
        "steps_per_s_best": round(max(rates), 1),
        "cpu_steps_per_s": round(statistics.median(cpu), 1) if cpu else None,
        "timed_steps": sum(r["steps"] for r in runs),
        "repeats": len(rates),
        "first_step_s": round(summary["first_step_s"], 4),
        "build_s": round(summary["build_s"], 3),
        "digest": summary["digest"],
        "extrapolated": False,
    }
    if impl == PYMDP_104 and summary["warmup_step_s"] is not None:
        rec["compile_s"] = round(summary["first_step_s"] - summary["warmup_step_s"], 3)
    return rec


def extrapolated_record(
    case: tuple[str, int, int], impl: str, probe: dict[str, Any], ctx: Context
) -> dict[str, Any]:
    """pymdp 0.0.7.1 not run: the rate of the largest N measured on this workload (its cost is
    linear in N), else the rate of the probe's first step."""
    name, policy_len, n = case
    measured_n, rate = ctx.history.get((name, policy_len), (0, 1.0 / probe["per_agent_s"]))
    source = (f"N={measured_n} (measured above)" if measured_n
              else f"first step of {probe['probe_agents']} agents")
    return {
        "bench": "peers", "workload": name, "policy_len": policy_len, "n": n, "impl": impl,
        "steps_per_s": round(rate, 1), "steps_per_s_best": None, "cpu_steps_per_s": None,
        "timed_steps": 0, "repeats": 0, "first_step_s": round(probe["first_step_s"], 4),
        "build_s": round(probe["build_s"], 3), "digest": None, "extrapolated": True,
        "extrapolated_from": source,
        "skipped_because_estimated_s": round(probe["estimate_s"]),
    }


def add_checks(
    rec: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]], ref: str | None,
    num_controls: list[int], tol: float,
) -> None:
    """First-action agreement with each peer's q_pi; same actions as the reference peer."""
    mine = arrays[rec["impl"]]
    for peer in PEERS:
        if peer in arrays:
            theirs = arrays[peer]
            key = "first_action_optimal_under_" + peer.split()[1]
            rec[key] = round(first_action_agreement(
                mine["first_actions"], theirs["first_q_pi"], theirs["policies"],
                num_controls, tol), 4)
            rec[key + "_agents"] = int(min(theirs["first_q_pi"].shape[0],
                                           mine["first_actions"].shape[0]))
    if ref is not None and not rec["extrapolated"] and rec["impl"] != ref:
        rec["same_actions_as"] = ref
        rec["same_actions"] = round(same_actions(mine["actions"], arrays[ref]["actions"]), 4)
        rec["same_actions_steps"] = int(min(mine["actions"].shape[0],
                                            arrays[ref]["actions"].shape[0]))


def run_case(case: tuple[str, int, int], workload: Path, ctx: Context) -> list[dict[str, Any]]:
    """Set up every implementation, time them interleaved, check them; one record each."""
    args = ctx.args
    setups, probes = set_up(case, workload, ctx)
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in setups}
    for _ in range(args.repeats):
        for impl in setups:
            runs[impl].append(ctx.runners[impl].request(
                "run", min_steps=1, min_seconds=args.seconds, max_steps=args.max_steps))

    counts = {impl: ctx.runners[impl].request("count", ticks=args.count_ops)
              for impl in setups if impl in EDGE_IMPLS and args.count_ops}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    records: list[dict[str, Any]] = []
    for impl in [*setups, *probes]:
        out = ctx.tmp / f"{impl.replace(' ', '_')}.npz"
        summary = ctx.runners[impl].request("finish", out=str(out))
        with np.load(out) as data:
            arrays[impl] = {key: data[key] for key in data.files}
        if impl in setups:
            records.append(measured_record(case, impl, runs[impl], summary))
            records[-1].update(counts.get(impl, {}))
        else:
            records.append(extrapolated_record(case, impl, probes[impl], ctx))
    if PYMDP_007 in setups:
        rate = next(r["steps_per_s"] for r in records if r["impl"] == PYMDP_007)
        ctx.history[(case[0], case[1])] = (case[2], rate)

    with np.load(workload) as w:
        num_controls = [int(w[k].shape[2]) for k in sorted(w.files) if k[0] == "B"]
    ref = PYMDP_007 if PYMDP_007 in setups else PYMDP_104 if PYMDP_104 in setups else None
    peer_rates = {r["impl"]: r["steps_per_s"] for r in records if r["impl"] in PEERS}
    best_peer = max(peer_rates, key=lambda k: peer_rates[k]) if peer_rates else None
    for rec in records:
        rec["best_peer"] = best_peer
        rec["ratio_vs_best_peer"] = (
            float(f"{rec['steps_per_s'] / peer_rates[best_peer]:.3g}") if best_peer else None)
        add_checks(rec, arrays, ref, num_controls, args.tol)
        rec["load_avg_1m"] = load_avg()
    return records


# -- tables ---------------------------------------------------------------------------------


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.2g}x"


def fmt_rate(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    text = f"{rec['steps_per_s']:,.0f}"
    return text + " *" if rec["extrapolated"] else text


def print_tables(records: list[dict[str, Any]], impls: list[str], loads: str) -> None:
    cases: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for rec in records:
        cases.setdefault((rec["workload"], rec["policy_len"], rec["n"]), {})[rec["impl"]] = rec
    print()
    print(f"Load average (1, 5, 15 min) {loads}; {os.cpu_count()} CPUs.")
    print()
    print("Agent-steps/s, wall clock, median of the runs (* extrapolated, see below):")
    print()
    cols = ["workload", "L", "N", *impls, "int8 / best peer"]
    print("| " + " | ".join(cols) + " |")
    print("|---|--:|--:|" + "--:|" * (len(cols) - 3))
    for (name, policy_len, n), by_impl in cases.items():
        cells = [name, str(policy_len), f"{n:,}"]
        cells += [fmt_rate(by_impl.get(impl)) for impl in impls]
        int8 = by_impl.get("edge-agent int8")
        ratio = int8.get("ratio_vs_best_peer") if int8 else None
        cells.append("-" if ratio is None or int8 is None
                     else f"{fmt_ratio(ratio)} ({int8['best_peer']})")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Per implementation (rates in agent-steps/s; first action optimal within the tolerance "
          "under each peer's q_pi, over the agents that peer stepped):")
    print()
    cols = ["workload", "L", "N", "impl", "wall (median / best)", "CPU time", "x best peer",
            "optimal under 0.0.7.1", "optimal under 1.0.4", "same actions as ref",
            "first step s", "note"]
    print("| " + " | ".join(cols) + " |")
    print("|---|--:|--:|---|" + "--:|" * 7 + "---|")
    for rec in records:
        best = rec["steps_per_s_best"]
        wall = fmt_rate(rec) + (f" / {best:,.0f}" if best else "")
        cpu = f"{rec['cpu_steps_per_s']:,.0f}" if rec["cpu_steps_per_s"] else "-"
        ratio = fmt_ratio(rec["ratio_vs_best_peer"])

        def agree(peer: str, rec: dict[str, Any] = rec) -> str:
            key = f"first_action_optimal_under_{peer}"
            if key not in rec:
                return "-"
            return f"{rec[key]:.3f} ({rec[key + '_agents']:,})"

        same = (f"{rec['same_actions']:.3f} ({rec['same_actions_steps']} steps)"
                if "same_actions" in rec else "-")
        notes = []
        if "compile_s" in rec:
            notes.append(f"compile {rec['compile_s']:.1f} s")
        if rec["extrapolated"]:
            notes.append(f"not run (estimated {rec['skipped_because_estimated_s']} s); "
                         f"rate of {rec['extrapolated_from']}")
        cells = [rec["workload"], str(rec["policy_len"]), f"{rec['n']:,}", rec["impl"], wall, cpu,
                 ratio, agree("0.0.7.1"), agree("1.0.4"), same,
                 f"{rec['first_step_s']:.3f}", "; ".join(notes)]
        print("| " + " | ".join(cells) + " |")


# -- main -----------------------------------------------------------------------------------


def parse_cases(text: str) -> list[tuple[str, int, int]]:
    out = []
    for item in text.split(","):
        name, policy_len, n = item.split(":")
        out.append((name, int(policy_len), int(n)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a subset, short runs (< 3 min)")
    parser.add_argument("--smoke", action="store_true",
                        help="edge-agent only, 2 tiny cases, one run each: for CI")
    parser.add_argument("--cases", default=None, help="WORKLOAD:POLICY_LEN:N,... to run")
    parser.add_argument("--impls", default=",".join([*EDGE_IMPLS, *PEERS]))
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    parser.add_argument("--seconds", type=float, default=None, help="least time of a run")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (>= 2)")
    parser.add_argument("--max-steps", type=int, default=200_000, help="most steps of a run")
    parser.add_argument("--max-row-seconds", type=float, default=60.0,
                        help="skip pymdp 0.0.7.1 where its row is estimated to take longer")
    parser.add_argument("--tol", type=float, default=1e-3, help="action-marginal tolerance")
    parser.add_argument("--threads", choices=["1", "all"], default="1")
    parser.add_argument("--no-install", action="store_true", help="never create a peer venv")
    parser.add_argument("--count-ops", type=int, default=0, metavar="TICKS",
                        help="after the timed runs, count edge-agent's numpy calls per step "
                             "over TICKS steps (peers/opcount.py; JSON fields numpy_calls_*)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.impls, args.no_install = ",".join(EDGE_IMPLS), True
        args.cases = args.cases or "grid10:1:10,grid2f:1:10"
        args.repeats = args.repeats or 1
        args.seconds = 0.05 if args.seconds is None else args.seconds
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 1.0)
    args.warmup = max(2, args.warmup)
    if args.cases:
        cases = parse_cases(args.cases)
    else:
        cases = list(QUICK_CASES if args.quick else FULL_CASES)
    impls = [s.strip() for s in args.impls.split(",") if s.strip()]

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    runners: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    for impl in impls:
        if impl in EDGE_IMPLS:
            runners[impl] = Local(impl)
            continue
        try:
            python = ensure_venv(impl, install=not args.no_install)
            worker = Worker(impl, python, args.threads)
            versions[impl] = worker.request("versions")["versions"]
            runners[impl] = worker
        except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
            emit({"bench": "peers", "impl": impl, "error": f"cannot install or start: {err}"})
    import edge_agent

    emit({
        "bench": "peers", "workload": "machine", "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
        "numpy": np.__version__, "edge_agent": getattr(edge_agent, "__version__", None),
        "peers": versions, "threads": args.threads, "repeats": args.repeats,
        "seconds": args.seconds, "warmup": args.warmup, "tol": args.tol, "seed": SEED,
    })
    records: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmpdir:
            ctx = Context(args, Path(tmpdir), runners)
            for name in sorted({c[0] for c in cases}):
                write_workload(name, ctx.tmp / f"{name}.npz")
            for case in cases:
                t0 = time.perf_counter()
                for rec in run_case(case, ctx.tmp / f"{case[0]}.npz", ctx):
                    emit(rec)
                    records.append(rec)
                log(f"{case} done in {time.perf_counter() - t0:.0f} s")
    finally:
        for runner in runners.values():
            runner.close()
    load_end = [round(x, 2) for x in os.getloadavg()]
    emit({"bench": "peers", "workload": "done", "seconds": round(time.perf_counter() - started),
          "load_avg": load_end})
    print_tables(records, [i for i in impls if i in runners],
                 f"{load_start} at the start, {load_end} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
