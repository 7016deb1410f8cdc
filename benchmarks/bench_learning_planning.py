"""Learning under a planning policy, side by side in one run.

For each learning world (``tmaze-reversal``: the reward arm the agents do not know swaps every
few trials; ``grid-slippery``: moves slip, walls the model does not know) and each planning
policy, an int8 :class:`~edge_agent.core.agents.AifAgentGroup` that learns shared counts
(``learning=``) steps ``--steps`` ticks through its own world from the same seed (the T-maze
learns ``pA1`` with forgetting, the grid ``pB0`` with a floor under its prior); only
``group.step(obs)`` is timed
(learning and refreshes included; ``end_trial`` at the world's episode starts is not). One JSON
object per line:

* ``agent_steps_per_s`` (wall) and ``cpu_agent_steps_per_s`` (process CPU time); ``speedup``:
  ``cpu_agent_steps_per_s`` over the every-tick policy's of the same world in this run;
* ``duty_cycle``: the share of the agents planned per tick;
* ``score``: the world's own measure (T-maze: rewards per trial; grid: goals reached per
  agent-step) and ``score_ratio`` over the every-tick policy's (1.0: no loss);
* ``updates``: count updates, the same whatever the policy (every agent learns every tick).

The process runs one thread (``OPENBLAS_NUM_THREADS=1``).

    python benchmarks/bench_learning_planning.py [--agents 1000] [--steps 200]

``--workers 2`` instead steps the slippery grid (``pB0`` learned, every tick planning) on one
process and on 2 (the caller and a forked worker), with the tables refreshed every tick and every
20 ticks: ``agent_steps_per_s`` of each, and ``refork_ms``, what forking the worker again after a
refresh took (once, timed after the run).

``--smoke`` runs it with 20 agents for 8 steps (the code path; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

WORLDS = ("tmaze-reversal", "grid-slippery")
#: name -> PlanningPolicy fields.
POLICIES: dict[str, dict[str, Any]] = {
    "every_tick": {},
    "every_4": {"every": 4},
    "change_0.1_every_4": {"every": 4, "belief_change": 0.1},
}


def learning_spec(world: str, model: Any) -> Any:
    from edge_agent.aif.learning import LearningSettings, LearningSpec

    if world == "tmaze-reversal":
        return LearningSpec(
            pA={1: 2.0 * model.A[1] + 0.5 * (model.A[1] > 0)},
            settings=LearningSettings(lr_pA=0.05, forgetting=0.02), refresh_every=5,
        )
    return LearningSpec(
        pB={0: 10.0 * model.B[0] + 0.05}, settings=LearningSettings(lr_pB=0.1), refresh_every=20,
    )


def run(world: str, n: int, steps: int, name: str) -> dict[str, Any]:
    from edge_agent.aif.planning import PlanningPolicy
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=1)
    group = AifAgentGroup(
        env.model, n, learning=learning_spec(world, env.model), precision="int8",
        planning=PlanningPolicy(**POLICIES[name]),
    )
    obs = env.reset()
    wall = cpu = 0.0
    planned = 0
    for _ in range(steps):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
        c0, t0 = time.process_time(), time.perf_counter()
        actions = group.step(obs)
        t1, c1 = time.perf_counter(), time.process_time()
        wall, cpu = wall + t1 - t0, cpu + c1 - c0
        planned += int(group.planning_stats()["planned"])
        obs = env.step(actions)
    summary = env.summary()
    if world.startswith("grid"):
        score_name, score = "goals_per_agent_step", summary["goals_reached"] / (n * steps)
    else:
        score_name, score = "rewards_per_trial", float(summary["rewards_per_trial"])
    return {
        "bench": "learning_planning", "world": world, "N": n, "policy": name, "steps": steps,
        "agent_steps_per_s": round(n * steps / wall),
        "cpu_agent_steps_per_s": round(n * steps / cpu) if cpu > 0 else None,
        "duty_cycle": round(planned / (n * steps), 4),
        "score_name": score_name, "score": round(score, 5),
        "updates": sum(c.version for c in group.learning.learner.counts),
        "refreshes": group.learning.refreshes,
    }


def run_workers(n: int, steps: int, workers: int, refresh_every: int) -> dict[str, Any]:
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env = make_env("grid-slippery", n, seed=1)
    spec = LearningSpec(
        pB={0: 10.0 * env.model.B[0] + 0.05}, settings=LearningSettings(lr_pB=0.1),
        refresh_every=refresh_every,
    )
    group = AifAgentGroup(env.model, n, learning=spec, precision="int8",
                               shared_state=workers > 1)
    used = group.start_workers(workers)
    obs = env.reset()
    wall = refork = 0.0
    try:
        for _ in range(steps):
            if env.episode_start.any():
                group.end_trial(env.episode_start)
            t0 = time.perf_counter()
            actions = group.step(obs)
            wall += time.perf_counter() - t0
            obs = env.step(actions)
        if group.cores.running is not None:
            t0 = time.perf_counter()
            group.cores.refork()
            refork = time.perf_counter() - t0
    finally:
        group.stop_workers()
    return {
        "bench": "learning_workers", "world": "grid-slippery", "N": n, "steps": steps,
        "workers": used, "refresh_every": refresh_every,
        "agent_steps_per_s": round(n * steps / wall), "refork_ms": round(1e3 * refork, 1),
        "refreshes": group.learning.refreshes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0, help="processes (see above)")
    parser.add_argument("--smoke", action="store_true", help="20 agents, 8 steps (CI)")
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported (lazily, above)
    os.environ["OMP_NUM_THREADS"] = "1"
    n, steps = (20, 8) if args.smoke else (args.agents, args.steps)
    if args.workers:
        for refresh_every in (1, 20):
            for workers in (1, args.workers):
                print(json.dumps(run_workers(n, steps, workers, refresh_every), sort_keys=True),
                      flush=True)
        return
    for world in WORLDS:
        base: dict[str, Any] | None = None
        for name in POLICIES:
            rec = run(world, n, steps, name)
            if base is None:
                base = rec
            rec["speedup"] = round(
                (rec["cpu_agent_steps_per_s"] or 0) / (base["cpu_agent_steps_per_s"] or 1), 3
            )
            rec["score_ratio"] = round(rec["score"] / base["score"], 4) if base["score"] else None
            print(json.dumps(rec, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
