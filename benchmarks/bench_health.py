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
* ``bench = "health-cost-small"`` (the ``small`` part), per world and learning (``frozen``: an
  int8 group; ``pA``: a float64 group each of whose agents learns its own ``pA`` of every
  modality, its tables following every tick; ``pB``, grid10 only: its own ``pB``), a group of
  ``n`` = 1 agent (``--small-agents``) stepping a recorded walk in alternating rounds from the
  same beliefs (and counts), three groups: ``plain`` (``health=False``), ``held`` (its health
  part as it is: a small sample's measured ticks held and measured
  :data:`~edge_agent.core.health.HELD_TICKS` at once) and ``each`` (its health part with
  ``holds = False``: each measured tick measured when it happens, as before the holding), on
  the same path (``stepping``: each group's, made again up to 5 times where its measured
  choice differs from the plain group's). ``plain_us``, ``held_us``, ``each_us``: the median
  over rounds of a tick's mean time (microseconds); ``held_ratio``, ``each_ratio``: the
  medians of held / plain and each / plain; ``held_vs_each``: the median of held / each;
* ``bench = "drift-false-alarms"``, per world: agents stepped in the very world their model
  describes (which does not change), ``seeds`` runs of ``ticks`` ticks each; ``alarms``: drift
  alarms raised over all of them (each is a false alarm), ``updates``: the detector's updates
  (one per measured tick), ``alarms_per_100k_updates`` and, when there were none,
  ``upper95_per_100k_updates`` (the rule of three: 3 / updates);
* ``bench = "drift-delay"``: the frozen T-maze model of ``tmaze-reversal`` in its world, whose
  rewarded arm swaps after ``reverse_every`` trials: ``delays_ticks``, per seed, the ticks from
  the first reversal to the alarm (None: no alarm within the run), their median, and
  ``alarms_before`` (alarms before the reversal, false ones);
* ``bench = "shadow-cost"``, per world and agent count (the ``shadow`` part, docs/health.md
  "Shadow evaluation"): two live groups of the world's model step the same recorded walk in
  alternating rounds from the same beliefs, one alone, one with a shadow of a candidate
  (``candidate``: ``worse`` or ``close``, below) beside it
  (:class:`~edge_agent.daemon.shadow.ShadowRun`, as the daemon steps it: the same observations
  and episode starts, the live actions committed). ``live_ms``,
  ``shadow_ms``: the median over rounds of a tick's mean time; ``ratio``: the median of shadow /
  live. What the candidate reserves in a memory budget beside the live group:
  ``shadow_bytes_per_agent`` (its ``agents`` reservation / N, as the budget counts it; the live
  group's is ``live_bytes_per_agent``) and ``shadow_model_bytes`` (its tables: 0 for a candidate
  of the live model, whose tables the budget counts once);
* ``bench = "shadow-power"``, per world, agent count (``--power-agents``: at most 64 agents are
  measured, so N changes little), candidate and test: how often the verdict
  is the right one after ``K`` windows of 16 ticks, ``K`` in ``windows``, over ``seeds`` runs
  (``correct``: ``{K: share}``; each run's first ``K`` windows, so the ``K`` of one run are
  nested). Candidates: ``worse`` (the T-maze with its reward arms swapped; grid10 with its moves
  mirrored in ``B``, up for down and left for right) should fail, ``same`` (the live model) and
  ``close`` (the T-maze rewarding 0.95 instead of 0.98, grid10 seeing its cell with noise 0.15
  instead of 0.1: fits about as well) should pass. Tests: ``paired`` is the shadow (candidate
  beside the live group, the hub's :class:`~edge_agent_host.hub.gates.shadow.ShadowCriterion`,
  one-sided Wilcoxon on the windows' differences); ``unpaired`` is the live gate
  (:class:`~edge_agent_host.hub.gates.health.HealthCriterion`, one-sided Mann-Whitney) on ``K``
  health windows of 16 ticks of a group running the candidate in its own world against ``K`` of
  a group running the live model in another (another seed). Both with ``max_increase``
  ``threshold`` (0.3 nats, the docs' example) at ``alpha`` 0.05 and ``min_pairs`` /
  ``min_samples`` 3 (the defaults, 20 and 50, would call the smaller ``K`` inconclusive).
  ``mean_diff``: the median over runs of the mean difference (paired) or median shift
  (unpaired) over the longest ``K``.

The process runs one thread (``OPENBLAS_NUM_THREADS=1`` is set before numpy is imported).

    python benchmarks/bench_health.py [--smoke] [--agents 100,10000] [--rounds 5]
        [--parts cost,drift,shadow,small] [--small-agents 1] [--drift-ticks 20000] [--seeds 4]
        [--windows 5,10,20,40] [--power-seeds 10] [--power-agents 100]

``--smoke`` runs every part at tiny sizes, for CI (its numbers mean nothing; the shadow's power
on the T-maze only).
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
#: Ticks per window of the shadow's paired differences (PAIR_BLOCK measured ticks, every 4th),
#: and of the unpaired health windows it is compared with.
WINDOW_TICKS = 16
#: The tolerated increase of the power runs (nats): the docs' example criterion's.
THRESHOLD = 0.3
#: Candidates of the power runs, and the verdict each should get.
CANDIDATES = {"worse": "fail", "same": "pass", "close": "pass"}


def _walk(env: Any, n: int, ticks: int) -> tuple[list[Any], list[Any]]:
    """``ticks`` outcomes of ``env`` (and each tick's episode starts, None where none) driven by
    a plain int8 group of ``n`` agents: every timed group steps these same outcomes."""
    from edge_agent.core.agents import AifAgentGroup

    walker = AifAgentGroup(env.model, n, precision="int8", health=False)
    obs_seq, starts = [], []
    obs = env.reset()
    for _ in range(ticks):
        starts.append(env.episode_start.copy() if env.episode_start.any() else None)
        obs_seq.append(obs.copy())
        obs = env.step(walker.step(obs))
    return obs_seq, starts


def _time_rounds(
    groups: dict[str, Any], obs_seq: list[Any], starts: list[Any], rounds: int,
    *, close: bool = False,
) -> dict[str, list[float]]:
    """Seconds a tick of each of ``groups`` over the walk, ``rounds`` times in turn, each from
    the first group's start state after one untimed step; ``close``: each group's health
    window closed after its round (not timed)."""
    initial = {k: v.copy() for k, v in next(iter(groups.values())).state_dict().items()}
    for g in groups.values():
        g.step(obs_seq[0])  # one-off costs outside the timing
    times: dict[str, list[float]] = {name: [] for name in groups}
    for _ in range(rounds):
        for name, g in groups.items():
            g.load_state_dict(initial)
            start = time.perf_counter()
            for o, s in zip(obs_seq, starts, strict=True):
                if s is not None:
                    g.reset(s)
                g.step(o)
            times[name].append((time.perf_counter() - start) / len(obs_seq))
            if close:
                g.health_summary()  # (the window's close, and a held tick's flush)
    return times


def cost(world: str, n: int, ticks: int, rounds: int) -> dict[str, Any]:
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.core.health import HEALTH_EVERY, health_agents
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=0)
    obs_seq, starts = _walk(env, n, ticks)
    groups = {
        "plain": AifAgentGroup(env.model, n, precision="int8", health=False),
        "health": AifAgentGroup(env.model, n, precision="int8"),
    }
    times = _time_rounds(groups, obs_seq, starts, rounds)
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


def small_cost(world: str, learning: str, n: int, ticks: int, rounds: int) -> dict[str, Any]:
    """The ``health-cost-small`` row of ``world``'s group of ``n`` agents (see the module
    docstring)."""
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.core.health import HELD_TICKS
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=0)
    model = env.model
    spec = None
    precision = "int8"
    if learning == "pA":
        precision = "float64"
        spec = LearningSpec(
            pA={m: a * 2.0 + 0.5 * (a > 0) for m, a in enumerate(model.A)},
            settings=LearningSettings(scope="per_agent"),
        )
    elif learning == "pB":
        precision = "float64"
        spec = LearningSpec(pB={0: 10.0 * model.B[0] + 0.05},
                            settings=LearningSettings(scope="per_agent"))
    obs_seq, starts = _walk(env, n, ticks)

    def group(health: bool) -> AifAgentGroup:
        return AifAgentGroup(model, n, precision=precision, health=health,  # type: ignore[arg-type]
                             learning=spec)

    def path(g: AifAgentGroup) -> str:
        return g.stepping.split(":")[0]  # native or numpy (each group measures its choice)

    groups = {"plain": group(False), "held": group(True), "each": group(True)}
    for name in ("held", "each"):  # the same path on every side (a loaded machine may differ)
        for _ in range(5):
            if path(groups[name]) == path(groups["plain"]):
                break
            groups[name] = group(True)
    assert groups["each"].health is not None
    groups["each"].health.holds = False
    times = _time_rounds(groups, obs_seq, starts, rounds, close=True)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(times[a], times[b], strict=True)), 4)

    return {
        "bench": "health-cost-small",
        "world": world,
        "learning": learning,
        "n": n,
        "ticks": ticks,
        "rounds": rounds,
        "plain_us": round(1e6 * statistics.median(times["plain"]), 2),
        "held_us": round(1e6 * statistics.median(times["held"]), 2),
        "each_us": round(1e6 * statistics.median(times["each"]), 2),
        "held_ratio": ratio("held", "plain"),
        "each_ratio": ratio("each", "plain"),
        "held_vs_each": ratio("held", "each"),
        "held_ticks": HELD_TICKS,
        "stepping": {name: path(g) for name, g in groups.items()},
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


def candidate_model(world: str, kind: str, model: Any) -> Any:
    """The candidate ``kind`` (:data:`CANDIDATES`, module docstring) of ``world``'s ``model``."""
    import numpy as np

    from edge_agent.aif.model import GenerativeModel
    from edge_agent.sim.gridworld import gridworld_model
    from edge_agent.sim.tmaze import tmaze_model

    if kind == "same":
        return model
    if world == "tmaze":
        return tmaze_model(reward_probs=(0.02, 0.98) if kind == "worse" else (0.95, 0.05))
    if kind == "close":
        return gridworld_model(10, 10, goal=(9, 9), noise=0.15)
    mirrored = np.asarray(model.B[0])[:, :, [0, 2, 1, 4, 3]]  # stay, down, up, right, left
    return GenerativeModel.from_arrays(list(model.A), [mirrored], list(model.C), list(model.D))


def shadow_cost(world: str, n: int, kind: str, ticks: int, rounds: int) -> dict[str, Any]:
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.core.budget import MemoryBudget
    from edge_agent.daemon.shadow import ShadowRun
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=0)
    model = candidate_model(world, kind, env.model)
    alone = AifAgentGroup(env.model, n, precision="int8")
    initial = {k: v.copy() for k, v in alone.state_dict().items()}
    obs_seq, starts = [], []
    obs = env.reset()
    for _ in range(ticks):  # the walk both sides step, recorded once
        starts.append(env.episode_start.copy() if env.episode_start.any() else None)
        obs_seq.append(obs.copy())
        obs = env.step(alone.step(obs))
    budget = MemoryBudget(1 << 40)
    live = AifAgentGroup(env.model, n, precision="int8", budget=budget, name="live")
    before = budget.by_kind()
    candidate = AifAgentGroup(model, n, precision="int8", budget=budget, name="live")
    after = budget.by_kind()
    run = ShadowRun(live, candidate, group="live", duration_s=1e9)
    shadow_initial = {k: v.copy() for k, v in candidate.state_dict().items()}

    def tick_alone(o: Any, s: Any) -> None:
        if s is not None:
            alone.reset(s)
        alone.step(o)

    def tick_shadowed(o: Any, s: Any) -> None:
        if s is not None:
            live.reset(s)
        run.step(o, None, None, s, live.step(o))

    ticks_of = {"live": tick_alone, "shadow": tick_shadowed}
    for tick in ticks_of.values():
        tick(obs_seq[0], None)  # one-off costs outside the timing
    times: dict[str, list[float]] = {"live": [], "shadow": []}
    for _ in range(rounds):
        for name, tick in ticks_of.items():
            alone.load_state_dict(initial)
            live.load_state_dict(initial)
            candidate.load_state_dict(shadow_initial)
            start = time.perf_counter()
            for o, s in zip(obs_seq, starts, strict=True):
                tick(o, s)
            times[name].append((time.perf_counter() - start) / ticks)
    run.finish()
    ratios = [s / p for s, p in zip(times["shadow"], times["live"], strict=True)]
    return {
        "bench": "shadow-cost",
        "world": world,
        "n": n,
        "ticks": ticks,
        "rounds": rounds,
        "candidate": kind,
        "live_ms": round(1e3 * statistics.median(times["live"]), 4),
        "shadow_ms": round(1e3 * statistics.median(times["shadow"]), 4),
        "ratio": round(statistics.median(ratios), 4),
        "live_bytes_per_agent": round(before["agents"] / n),
        "shadow_bytes_per_agent": round((after["agents"] - before["agents"]) / n),
        "shadow_model_bytes": after["model"] - before["model"],
    }


def paired_windows(world: str, n: int, kind: str, windows: int, seed: int) -> list[float]:
    """A shadow of candidate ``kind`` beside the live model's group in its world: the paired
    differences of its first ``windows`` windows (fewer if it gave fewer)."""
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.daemon.shadow import ShadowRun
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=seed)
    live = AifAgentGroup(env.model, n, precision="int8", seed=seed)
    candidate = AifAgentGroup(
        candidate_model(world, kind, env.model), n, precision="int8", seed=seed
    )
    run = ShadowRun(live, candidate, group="live", duration_s=1e9)
    obs = env.reset()
    for _ in range((windows + 1) * WINDOW_TICKS):
        starts = env.episode_start.copy() if env.episode_start.any() else None
        if starts is not None:
            live.reset(starts)
        actions = live.step(obs)
        run.step(obs, None, None, starts, actions)
        obs = env.step(actions)
    return list(run.finish().diffs[:windows])


def health_windows(world: str, n: int, model: Any, windows: int, seed: int) -> list[float]:
    """A group of ``model`` acting in its own world (``seed``): the mean excess surprise of
    its first ``windows`` health windows of :data:`WINDOW_TICKS` ticks."""
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import make_env

    env = make_env(world, n, seed=seed)
    group = AifAgentGroup(model, n, precision="int8", seed=seed)
    out: list[float] = []
    obs = env.reset()
    for t in range(windows * WINDOW_TICKS):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
        if (t + 1) % WINDOW_TICKS == 0:
            summary = group.health_summary()
            assert summary is not None
            out.append(summary.measures["excess_surprise"].mean)
    return out


def shadow_power(
    world: str, n: int, kind: str, windows: list[int], seeds: int
) -> list[dict[str, Any]]:
    from edge_agent.sim.registry import make_env
    from edge_agent_host.hub.gates.health import DEFAULT_ALPHA, HealthCriterion, Outcome
    from edge_agent_host.hub.gates.shadow import ShadowCriterion

    expected = Outcome(CANDIDATES[kind])
    paired = ShadowCriterion(threshold=THRESHOLD, min_pairs=3)
    unpaired = HealthCriterion(
        measure="excess_surprise", direction="increase", threshold=THRESHOLD, min_samples=3
    )
    model = make_env(world, 1).model
    longest = max(windows)
    right = {"paired": dict.fromkeys(windows, 0), "unpaired": dict.fromkeys(windows, 0)}
    effect: dict[str, list[float]] = {"paired": [], "unpaired": []}
    for seed in range(seeds):
        diffs = paired_windows(world, n, kind, longest, seed)
        control = health_windows(world, n, model, longest, 2 * seed)
        wave = health_windows(
            world, n, candidate_model(world, kind, model), longest, 2 * seed + 1
        )
        for k in windows:
            right["paired"][k] += paired.judge(diffs[:k], 1).outcome is expected
            right["unpaired"][k] += unpaired.judge(wave[:k], control[:k]).outcome is expected
        effect["paired"].append(statistics.fmean(diffs))
        effect["unpaired"].append(statistics.median(wave) - statistics.median(control))
    return [
        {
            "bench": "shadow-power",
            "world": world,
            "n": n,
            "candidate": kind,
            "test": test,
            "expected": expected.value,
            "threshold": THRESHOLD,
            "alpha": DEFAULT_ALPHA,
            "window_ticks": WINDOW_TICKS,
            "seeds": seeds,
            "windows": windows,
            "correct": {str(k): round(right[test][k] / seeds, 3) for k in windows},
            "mean_diff": round(statistics.median(effect[test]), 4),
        }
        for test in ("paired", "unpaired")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (seconds)")
    parser.add_argument("--agents", default=None, help="comma-separated Ns of the cost (10000)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks per cost round (100)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (5)")
    parser.add_argument("--drift-ticks", type=int, default=None,
                        help="ticks per false-alarm run (20000)")
    parser.add_argument("--seeds", type=int, default=None, help="runs per drift row (4)")
    parser.add_argument("--windows", default=None,
                        help="comma-separated windows of the shadow's power (5,10,20,40)")
    parser.add_argument("--power-seeds", type=int, default=None,
                        help="runs per shadow power row (10)")
    parser.add_argument("--power-agents", default=None,
                        help="comma-separated Ns of the shadow's power (100)")
    parser.add_argument("--parts", default=None,
                        help="what to measure, of cost, drift, shadow, small (cost,drift; "
                             "--smoke: all)")
    parser.add_argument("--small-agents", default=None,
                        help="comma-separated Ns of the small part (1)")
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
    parts = set((args.parts or ("cost,drift,shadow,small" if smoke else "cost,drift")).split(","))
    unknown = parts - {"cost", "drift", "shadow", "small"}
    if unknown:
        parser.error(f"--parts: {', '.join(sorted(unknown))}: not cost, drift, shadow or small")
    small_agents = [int(a) for a in (args.small_agents or "1").split(",")]
    windows = [int(k) for k in (args.windows or ("3" if smoke else "5,10,20,40")).split(",")]
    power_seeds = args.power_seeds or (1 if smoke else 10)
    power_agents = [int(a) for a in (args.power_agents or ("20" if smoke else "100")).split(",")]
    if "cost" in parts:
        for world in WORLDS:
            for n in agents:
                print(json.dumps(cost(world, n, ticks, rounds)), flush=True)
    if "small" in parts:
        small_ticks = args.ticks or (8 if smoke else 400)
        for world in WORLDS:
            for learning in ("frozen", "pA", "pB") if world == "grid10" else ("frozen", "pA"):
                for n in small_agents:
                    row = small_cost(world, learning, n, small_ticks, rounds)
                    print(json.dumps(row), flush=True)
    if "drift" in parts:
        for world in WORLDS:
            print(json.dumps(false_alarms(world, 16, drift_ticks, seeds)), flush=True)
        reverse_every = 2 if smoke else 20
        print(json.dumps(delay(16, reverse_every, 6 * reverse_every * 3, seeds)), flush=True)
    if "shadow" in parts:
        for world in WORLDS:
            for n in agents:
                for kind in ("worse", "close"):
                    print(json.dumps(shadow_cost(world, n, kind, ticks, rounds)), flush=True)
        for world in ("tmaze",) if smoke else WORLDS:  # grid10's candidates: in the cost
            for n in power_agents:
                for kind in CANDIDATES:
                    for row in shadow_power(world, n, kind, windows, power_seeds):
                        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
