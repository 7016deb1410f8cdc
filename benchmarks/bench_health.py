"""Health benchmark: what a group's health measures cost its tick, and how the drift
alarm behaves on worlds that do and do not change (docs/health.md).

One JSON object per line:

* ``bench = "health-cost"``, per world and agent count: two int8 groups of the same model step
  the same observations (a walk of the world recorded once) in alternating rounds, each round
  from the same beliefs: one built with ``health=False``, one with its health part
  (``edge_agent/core/health.py``: every 4th tick, a sample of at most 64 agents).
  ``plain_ms``, ``health_ms``: the median over rounds of a tick's mean time; ``ratio``: the
  median over rounds of health time / plain time (the same work but the health measures: the
  issue asks for no measurable cost at N = 10,000);
* ``bench = "drift-false-alarms"``, per world: agents stepped in the very world their model
  describes (which does not change), ``seeds`` runs of ``ticks`` ticks each; ``alarms``: drift
  alarms raised over all of them (each is a false alarm), ``updates``: the detector's updates
  (one per measured tick), ``alarms_per_100k_updates`` and, when there were none,
  ``upper95_per_100k_updates`` (the rule of three: 3 / updates);
* ``bench = "drift-delay"``: the frozen T-maze model of ``tmaze-reversal`` in its world, whose
  rewarded arm swaps after ``reverse_every`` trials: ``delays_ticks``, per seed, the ticks from
  the first reversal to the alarm (None: no alarm within the run), their median, and
  ``alarms_before`` (alarms before the reversal, false ones).

The process runs one thread (``OPENBLAS_NUM_THREADS=1`` is set before numpy is imported).

    python benchmarks/bench_health.py [--smoke] [--agents 100,10000] [--rounds 5]
        [--parts cost,drift] [--drift-ticks 20000] [--seeds 4]

``--smoke`` runs the code path at tiny sizes, for CI (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: The worlds whose tick cost is measured, and whose model is the world (no false alarm due).
WORLDS = ("tmaze", "grid10")


def cost(world: str, n: int, ticks: int, rounds: int) -> dict[str, Any]:
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.core.health import HEALTH_EVERY, health_agents
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=0)
    walker = AifAgentGroup(env.model, n, precision="int8", health=False)
    obs_seq, starts = [], []
    obs = env.reset()
    for _ in range(ticks):
        starts.append(env.episode_start.copy() if env.episode_start.any() else None)
        obs_seq.append(obs.copy())
        obs = env.step(walker.step(obs))
    groups = {
        "plain": AifAgentGroup(env.model, n, precision="int8", health=False),
        "health": AifAgentGroup(env.model, n, precision="int8"),
    }
    initial = {k: v.copy() for k, v in groups["plain"].state_dict().items()}
    for g in groups.values():
        g.step(obs_seq[0])  # one-off costs outside the timing
    times: dict[str, list[float]] = {"plain": [], "health": []}
    for _ in range(rounds):
        for name, g in groups.items():
            g.load_state_dict(initial)
            start = time.perf_counter()
            for o, s in zip(obs_seq, starts, strict=True):
                if s is not None:
                    g.reset(s)
                g.step(o)
            times[name].append((time.perf_counter() - start) / ticks)
    ratios = [h / p for h, p in zip(times["health"], times["plain"], strict=True)]
    cm = groups["health"].cm
    return {
        "bench": "health-cost",
        "world": world,
        "n": n,
        "ticks": ticks,
        "rounds": rounds,
        "plain_ms": round(1e3 * statistics.median(times["plain"]), 4),
        "health_ms": round(1e3 * statistics.median(times["health"]), 4),
        "ratio": round(statistics.median(ratios), 4),
        "measured_agents": min(n, health_agents(cm.num_states, cm.num_obs)),
        "every_ticks": HEALTH_EVERY,
    }


def run_alarms(
    env: Any, model: Any, n: int, ticks: int
) -> tuple[list[int], int]:
    """Step ``n`` agents of ``model`` in ``env`` for ``ticks`` ticks: the ticks at which the
    drift alarm fired, and the detector's updates."""
    from edge_agent.core.agents import AifAgentGroup

    group = AifAgentGroup(model, n, precision="int8")
    assert group.health is not None
    detector = group.health.detector
    fired: list[int] = []
    obs = env.reset()
    alarms = 0
    for t in range(ticks):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
        if detector.alarms > alarms:
            alarms = detector.alarms
            fired.append(t)
    return fired, detector.updates


def false_alarms(world: str, n: int, ticks: int, seeds: int) -> dict[str, Any]:
    from edge_agent.core.drift import DriftSettings
    from edge_agent.sim.registry import make_env

    alarms = updates = 0
    for seed in range(seeds):
        env = make_env(world, n, seed=seed)
        fired, u = run_alarms(env, env.model, n, ticks)
        alarms += len(fired)
        updates += u
    s = DriftSettings()
    row: dict[str, Any] = {
        "bench": "drift-false-alarms",
        "world": world,
        "n": n,
        "ticks": ticks,
        "seeds": seeds,
        "tolerance": s.tolerance,
        "allowance": s.drift,
        "threshold": s.threshold,
        "alarms": alarms,
        "updates": updates,
        "alarms_per_100k_updates": round(1e5 * alarms / max(1, updates), 3),
    }
    if alarms == 0:
        row["upper95_per_100k_updates"] = round(1e5 * 3 / max(1, updates), 3)
    return row


def delay(n: int, reverse_every: int, ticks: int, seeds: int) -> dict[str, Any]:
    from edge_agent.sim.registry import make_env

    delays: list[int | None] = []
    before = 0
    trial_len = 3
    reversal = reverse_every * trial_len  # every agent starts its first trial at tick 0
    for seed in range(seeds):
        env = make_env("tmaze-reversal", n, seed=seed, reverse_every=reverse_every)
        fired, _ = run_alarms(env, env.model, n, ticks)
        before += sum(1 for t in fired if t < reversal)
        after = [t for t in fired if t >= reversal]
        delays.append(after[0] - reversal if after else None)
    found = [d for d in delays if d is not None]
    return {
        "bench": "drift-delay",
        "world": "tmaze-reversal",
        "n": n,
        "reverse_every": reverse_every,
        "reversal_tick": reversal,
        "ticks": ticks,
        "seeds": seeds,
        "delays_ticks": delays,
        "median_delay_ticks": statistics.median(found) if found else None,
        "detected": len(found),
        "alarms_before": before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (seconds)")
    parser.add_argument("--agents", default=None, help="comma-separated Ns of the cost (10000)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks per cost round (100)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (5)")
    parser.add_argument("--drift-ticks", type=int, default=None,
                        help="ticks per false-alarm run (20000)")
    parser.add_argument("--seeds", type=int, default=None, help="runs per drift row (4)")
    parser.add_argument("--parts", default="cost,drift",
                        help="what to measure: cost, drift or both (cost,drift)")
    args = parser.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported (lazily, above)
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(REPO))
    smoke = args.smoke
    agents = [int(a) for a in (args.agents or ("20" if smoke else "100,10000")).split(",")]
    ticks = args.ticks or (8 if smoke else 100)
    rounds = args.rounds or (1 if smoke else 5)
    seeds = args.seeds or (1 if smoke else 4)
    drift_ticks = args.drift_ticks or (40 if smoke else 20_000)
    parts = set(args.parts.split(","))
    if "cost" in parts:
        for world in WORLDS:
            for n in agents:
                print(json.dumps(cost(world, n, ticks, rounds)), flush=True)
    if "drift" in parts:
        for world in WORLDS:
            print(json.dumps(false_alarms(world, 16, drift_ticks, seeds)), flush=True)
        reverse_every = 2 if smoke else 20
        print(json.dumps(delay(16, reverse_every, 6 * reverse_every * 3, seeds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
