"""How far the kernels are from this machine's limits.

For each workload (grid10 and T-maze, policy_len 1, N = 10,000 by default) it prints, one JSON
object per line:

* ``machine``: the CPU, one core's measured **memory bandwidth** (numpy copy and add on arrays of
  256 MiB, far beyond the caches: bytes read + written per second, best of 5) and **arithmetic
  rate**: float32 elementwise (multiply, add on 8 KiB arrays that stay in L1, the kind of call
  the kernels make) and float32 matrix product (BLAS ``sgemm`` 512 x 512, the best dense case),
  with the process pinned to one CPU;
* ``arithmetic``: what one exact agent step needs, counted from the model's matrices with
  pymdp's semantics (posterior over states, the next prior, and for every policy the predicted
  states, expected outcomes, utility and state information gain). ``dense_flop`` counts every
  matrix entry; ``sparse_flop`` only the nonzero ones (what an implementation that skips zeros
  must still do); ``state_bytes`` the agent's own state the step reads and writes once (beliefs,
  prior, policy values, action, observation: the model is shared and stays in cache);
* ``bound``: agent-steps/s if the step were limited only by arithmetic (sparse flop at the
  elementwise rate; dense flop at the sgemm rate) or only by memory traffic (``state_bytes`` at the
  copy bandwidth); ``measured``: the int8 group's agent-steps/s stepping its own world (the same
  loop as ``bench_core.py``), and ``of_bound`` = measured / the tightest bound.

Single-core numbers on a shared machine drift; the ratios in one run are what to compare.

    python benchmarks/bench_limits.py [--agents 10000] [--seconds 5] [--workloads grid10,tmaze]

``--smoke``: 8 MiB arrays (in the caches: not the bandwidth), 100 agents for 0.2 s, not pinned:
the code path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def _best(fn: Any, repeats: int = 5) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine(mib: int = 256) -> dict[str, Any]:
    """One core's memory bandwidth and arithmetic rates (see the module docstring)."""
    n = mib * 256 * 1024  # 256 MiB of float32 per array by default
    big = [np.ones(n, dtype=np.float32), np.ones(n, dtype=np.float32), np.empty(n, np.float32)]
    copy_s = _best(lambda: np.copyto(big[2], big[0]))
    add_s = _best(lambda: np.add(big[0], big[1], out=big[2]))
    big.clear()
    width = 32 * 1024  # 128 KiB per array: in L2, long enough to hide numpy's call overhead
    small = np.ones(width, dtype=np.float32)
    other = np.ones(width, dtype=np.float32)
    out = np.empty(width, dtype=np.float32)
    calls = 2_000 if mib >= 256 else 200

    def elementwise() -> None:
        for _ in range(calls):
            np.multiply(small, other, out=out)
            np.add(out, other, out=out)

    elem_s = _best(elementwise, 3)
    m = np.ones((512, 512), dtype=np.float32)
    mm_s = _best(lambda: m @ m, 5)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "bench": "machine",
        "cpu": cpu,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "numpy": np.__version__,
        "copy_gb_s": round(2 * 4 * n / copy_s / 1e9, 2),
        "add_gb_s": round(3 * 4 * n / add_s / 1e9, 2),
        "elementwise_gflop_s": round(2 * width * calls / elem_s / 1e9, 2),
        "numpy_call_us": round(_call_overhead_s() * 1e6, 3),
        "sgemm_gflop_s": round(2 * 512**3 / mm_s / 1e9, 2),
    }


def _call_overhead_s() -> float:
    """One numpy ufunc call on 16 elements: the fixed cost every kernel call pays."""
    x = np.ones(16, dtype=np.float32)
    y = np.empty(16, dtype=np.float32)
    calls = 50_000

    def run() -> None:
        for _ in range(calls):
            np.add(x, x, out=y)

    return _best(run, 3) / calls


def arithmetic(workload: str) -> dict[str, Any]:
    """Flop and bytes of one exact agent step, policy_len 1, counted from the model."""
    from edge_agent.sim.registry import builtin_model

    model = builtin_model(workload)
    A = [np.asarray(a, dtype=np.float64) for a in model.A]
    B = [np.asarray(b, dtype=np.float64) for b in model.B]
    S = [b.shape[0] for b in B]
    U = [b.shape[2] for b in B]
    joint = math.prod(S)
    policies = math.prod(U)
    outcomes = [a.shape[0] for a in A]
    # Inference: each modality's likelihood row over the joint states times the prior, then a
    # normalisation and the factors' marginals.
    infer_dense = sum(joint for _ in A) * 2 + 3 * joint + joint * len(S)
    infer_sparse = sum(int(np.count_nonzero(a.reshape(a.shape[0], -1)) / a.shape[0]) for a in A)
    infer_sparse = 2 * infer_sparse + 3 * joint + joint * len(S)
    # Per policy: predicted states per factor (B_u q), expected outcomes per modality (A q'),
    # utility (q_o . C), state information gain (H[q_o] - q' . H[A]).
    pred_dense = sum(2 * s * s for s in S)
    pred_sparse = sum(2 * int(np.count_nonzero(b)) // u for b, u in zip(B, U, strict=True))
    obs_dense = sum(2 * o * joint + 2 * joint + 6 * o for o in outcomes)
    obs_sparse = sum(
        2 * int(np.count_nonzero(a)) + 2 * joint + 6 * o for a, o in zip(A, outcomes, strict=True)
    )
    dense = infer_dense + policies * (pred_dense + obs_dense) + 4 * policies
    sparse = infer_sparse + policies * (pred_sparse + obs_sparse) + 4 * policies
    # The agent's own state, read and written once per step (int8 beliefs and prior per
    # factor, float32 policy values, int64 actions and observations).
    state = 2 * (2 * sum(S)) + 2 * 4 * policies + 8 * len(S) + 8 * len(A)
    return {
        "bench": "arithmetic",
        "workload": workload,
        "states": S,
        "controls": U,
        "outcomes": outcomes,
        "policies": policies,
        "dense_flop": dense,
        "sparse_flop": sparse,
        "state_bytes": state,
    }


def measured(workload: str, n: int, seconds: float) -> dict[str, Any]:
    """Agent-steps/s of the int8 group in its own world (as ``bench_core.py``), and how many
    states the agents' beliefs actually cover (the support the fast paths exploit)."""
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env = make_env(workload, n, seed=1)
    group = AifAgentGroup(env.model, n, settings=AifSettings(policy_len=1), precision="int8")
    obs = env.reset()
    times: list[float] = []
    support: list[float] = []
    start = time.perf_counter()
    step = 0
    while time.perf_counter() - start < seconds or len(times) < 5:
        if env.episode_start.any():
            group.reset(env.episode_start)
        t0 = time.perf_counter()
        actions = group.step(obs, now=float(step))
        t1 = time.perf_counter()
        obs = env.step(actions)
        step += 1
        if step > 3:
            times.append(t1 - t0)
            support.append(float(sum(np.count_nonzero(q, axis=1).mean() for q in group.qs)))
    return {
        "agent_steps_per_s": round(n * len(times) / sum(times)),
        "belief_support": round(float(np.mean(support)), 2),
        "planner": "local" if getattr(group.cm, "local", None) is not None else "tree",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000, help="agents per group")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed stepping per workload")
    parser.add_argument("--workloads", default="grid10,tmaze", help="comma-separated")
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: no pinning)")
    parser.add_argument("--smoke", action="store_true", help="tiny arrays and runs: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.agents, args.seconds, args.cpu = 100, 0.2, -1
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    m = machine(8 if args.smoke else 256)
    emit(m)
    for workload in args.workloads.split(","):
        arith = arithmetic(workload)
        emit(arith)
        rate = measured(workload, args.agents, args.seconds)
        bounds = {
            "sparse_flop_bound": m["elementwise_gflop_s"] * 1e9 / arith["sparse_flop"],
            "dense_flop_bound": m["sgemm_gflop_s"] * 1e9 / arith["dense_flop"],
            "bandwidth_bound": m["copy_gb_s"] * 1e9 / arith["state_bytes"],
        }
        tightest = min(bounds["sparse_flop_bound"], bounds["bandwidth_bound"])
        emit(
            {
                "bench": "bound",
                "workload": workload,
                "agents": args.agents,
                **{k: round(v) for k, v in bounds.items()},
                "measured_agent_steps_per_s": rate["agent_steps_per_s"],
                "planner": rate["planner"],
                "belief_support": rate["belief_support"],
                "of_bound": round(rate["agent_steps_per_s"] / tightest, 4),
                "flop_per_agent_step_measured_rate": round(
                    m["elementwise_gflop_s"] * 1e9 / rate["agent_steps_per_s"]
                ),
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
