"""A large group on every core: ``start_workers(k)`` against one process.

For each workload, two groups of ``N`` agents on the same model in one process: one stepped by
the caller alone (``workers = 1``), one by the caller and ``k - 1`` forked workers
(:mod:`edge_agent.core.workers`). Each has its own copy of the built-in world, seeded alike. Timed
runs alternate between them (``--repeats`` rounds, each run at least ``--seconds`` of steps, only
the group's ``step`` timed, not the world's), so that load on the shared machine hits both alike.

* ``ratio``: the median rate with workers over the median without; ``ratio_per_round_median``:
  the median of the rounds' ratios (a round's runs are next to each other in time: the steadier
  figure on a machine whose speed drifts);
* ``independent_ratio`` (and per round): the machine's own ceiling, measured in the same rounds:
  ``k`` unrelated processes each stepping ``N / k`` agents of their own at the same time (no
  shared state, no barrier per tick), their summed rate over the one-process rate;
* ``tick_p50_ratio``: the median time of one tick without workers over the median with them
  (all rounds' ticks); ``independent_tick_p50_ratio`` the same for the unrelated processes (the
  one-process tick over their ticks of ``N / k`` agents). Medians leave out the ticks a
  preemption of either process stretched, which the rates above include: the code's parallel
  efficiency on this machine, next to what the machine delivered;
* ``same_results``: on a third pair stepped on identical observations, the posteriors over
  policies are equal (the same kernels on the same blocks);
* ``workers_uss_mb``: what the workers hold that the caller does not (their private resident
  pages, after the runs); ``scratch_mb``: the budget's reservation per worker.

    python benchmarks/bench_workers.py [--workers 2] [--agents 10000] [--workloads grid10,tmaze]
        [--repeats 5] [--seconds 1.0]

``--smoke``: 5,000 agents (3-4 blocks of at most 2,048: the workers start), one round of 0.1 s
runs: the code path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# One BLAS thread per process, set before numpy loads: the point is processes, not BLAS threads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.core.agents import AifAgentGroup  # noqa: E402
from edge_agent.sim.registry import make_env  # noqa: E402


class Loop:
    """A group and its own world; ``run`` steps both and times the group."""

    def __init__(self, workload: str, n: int, workers: int) -> None:
        env: Any = make_env(workload, n, seed=1)
        self.env = env
        self.group = AifAgentGroup(env.model, n, precision="int8")
        self.workers = self.group.start_workers(workers) if workers > 1 else 1
        self.obs = self.env.reset()
        for _ in range(3):
            self.obs = self.env.step(self.group.step(self.obs))
        self.n = n

        self.tick_s: list[float] = []  # every timed tick, all rounds

    def run(self, seconds: float) -> float:
        busy = 0.0
        steps = 0
        while steps < 2 or busy < seconds:
            t0 = time.perf_counter()
            actions = self.group.step(self.obs)
            took = time.perf_counter() - t0
            busy += took
            self.tick_s.append(took)
            steps += 1
            self.obs = self.env.step(actions)
        return self.n * steps / busy


def _independent(workload: str, n: int, seconds: float, barrier: Any, out: Any) -> None:
    loop = Loop(workload, n, 1)
    barrier.wait()
    rate = loop.run(seconds)
    out.put((rate, loop.tick_s))


def independent_rate(workload: str, n: int, k: int, seconds: float, ticks: list[float]) -> float:
    """The machine's own ceiling: ``k`` unrelated processes, each stepping its own group of
    ``n / k`` agents at the same time, no sharing and no barrier per tick; their summed rate.
    Their tick times are appended to ``ticks``."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [
        ctx.Process(target=_independent, args=(workload, n // k, seconds, barrier, out))
        for _ in range(k)
    ]
    for p in procs:
        p.start()
    answers = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    for _, tick_s in answers:
        ticks.extend(tick_s)
    return float(sum(rate for rate, _ in answers))


def same_results(workload: str, n: int, workers: int, steps: int = 5) -> bool:
    env: Any = make_env(workload, n, seed=2)
    one = AifAgentGroup(env.model, n, precision="int8")
    many = AifAgentGroup(env.model, n, precision="int8")
    many.start_workers(workers)
    obs = env.reset()
    ok = True
    for _ in range(steps):
        actions = one.step(obs).copy()
        many.step(obs)
        ok = ok and np.array_equal(one.q_pi, many.q_pi)
        obs = env.step(actions)
    many.stop_workers()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--workloads", default="grid10,tmaze")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help="5,000 agents, one 0.1 s round: CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.agents, args.repeats, args.seconds = 5000, 1, 0.1
    print(
        json.dumps(
            {
                "bench": "workers",
                "machine": True,
                "cpus": os.cpu_count(),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )
    for workload in args.workloads.split(","):
        loops = {
            1: Loop(workload, args.agents, 1),
            args.workers: Loop(workload, args.agents, args.workers),
        }
        rates: dict[int, list[float]] = {k: [] for k in loops}
        ceiling: list[float] = []
        ceiling_ticks: list[float] = []
        for _ in range(args.repeats):
            for k, loop in loops.items():
                rates[k].append(loop.run(args.seconds))
            ceiling.append(
                independent_rate(workload, args.agents, args.workers, args.seconds, ceiling_ticks)
            )
        many = loops[args.workers]
        workers_obj = many.group.cores.running
        uss = workers_obj.rss_bytes() if workers_obj is not None else 0
        one_rate = statistics.median(rates[1])
        many_rate = statistics.median(rates[args.workers])
        one_tick = statistics.median(loops[1].tick_s)
        many_tick = statistics.median(many.tick_s)
        print(
            json.dumps(
                {
                    "bench": "workers",
                    "workload": workload,
                    "n": args.agents,
                    "workers": many.workers,
                    "steps_per_s_1": round(one_rate),
                    "steps_per_s_k": round(many_rate),
                    "ratio": round(many_rate / one_rate, 3),
                    "ratio_per_round_median": round(
                        statistics.median(
                            m / o for m, o in zip(rates[args.workers], rates[1], strict=True)
                        ),
                        3,
                    ),
                    "independent_ratio_per_round_median": round(
                        statistics.median(c / o for c, o in zip(ceiling, rates[1], strict=True)), 3
                    ),
                    "ratio_best": round(max(rates[args.workers]) / max(rates[1]), 3),
                    "independent_steps_per_s": round(statistics.median(ceiling)),
                    "independent_ratio": round(statistics.median(ceiling) / one_rate, 3),
                    "tick_p50_ms_1": round(one_tick * 1e3, 3),
                    "tick_p50_ms_k": round(many_tick * 1e3, 3),
                    "tick_p50_ratio": round(one_tick / many_tick, 3),
                    "independent_tick_p50_ratio": round(
                        one_tick / statistics.median(ceiling_ticks), 3
                    ),
                    "same_results": same_results(workload, min(args.agents, 4096), args.workers),
                    "workers_uss_mb": round(uss / 2**20, 1),
                    "scratch_mb": round(many.group.scratch_nbytes(args.agents) / 2**20, 2),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )
        many.group.stop_workers()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
