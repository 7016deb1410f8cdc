"""Coordination benchmarks: task allocation, belief-sharing bandwidth and benefit, and
coordination efficiency. Prints one JSON object per line.

Every node is a real FleetLink (SQLite outbox) on the in-memory broker, in one process, ticked
on a simulated clock (``tick_s`` per tick) -- the harness of ``tests/unit/coordination/``.
Times (``*_ms``, ``*_steps_per_s``) are CPU time of this process (``time.process_time``), which
other load on a shared machine disturbs far less than wall time; ``*_s`` figures of agreement and
healing are simulated time.

    python benchmarks/bench_coordination.py [--quick] [--repeats 3]

``--smoke`` runs each benchmark once at small sizes: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.coordination import (  # noqa: E402
    AuctionSettings,
    CoordinationSettings,
    SharingSettings,
    TaskSpec,
)
from edge_agent.core.agents import AifAgentGroup  # noqa: E402
from edge_agent.sim import BatchEnv  # noqa: E402
from edge_agent.sim.gridworld import gridworld_model  # noqa: E402
from tests.support.coordination_harness import (  # noqa: E402
    TICK_S,
    GroupSpec,
    SharedTruthWorld,
    SimFleet,
    held_by_node,
    static_world_model,
)

GRID = gridworld_model(10, 10, noise=0.1, preference_scale=0.0)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def grid_tasks(n: int, seed: int, by: str, prefix: str = "t") -> list[TaskSpec]:
    goals = np.random.default_rng(seed).integers(0, 100, n)
    return [
        TaskSpec(
            task=f"{prefix}{i:04d}", epoch=0, capability="grid", goal_state=int(g), announced_by=by
        )
        for i, g in enumerate(goals)
    ]


def topic_bytes(fleet: SimFleet, start: int, kind: str) -> tuple[int, int]:
    """(messages, payload bytes) the broker accepted since index ``start`` on ``kind`` topics."""
    msgs = [p for t, p, _, _ in fleet.broker.published[start:] if t.rsplit("/", 1)[-1] == kind]
    return len(msgs), sum(len(p) for p in msgs)


def bench_allocation(
    root: Path, *, nodes: int, agents: int, tasks: int, window_s: float, seed: int
) -> dict[str, Any]:
    settings = CoordinationSettings(
        auction=AuctionSettings(window_s=window_s, done_belief=None), tick_period_s=TICK_S
    )
    fleet = SimFleet(
        root, nodes, {"grid": GroupSpec(GRID, agents, capabilities=("grid",))}, settings
    )
    try:
        fleet.tick(3)
        start = len(fleet.broker.published)
        fleet.nodes[0].engine.announce(grid_tasks(tasks, seed, "node0"))
        window_ticks = round(window_s / TICK_S)
        agreed_tick = None
        cpu = 0.0
        for tick in range(1, window_ticks + 40):
            t0 = time.process_time()
            fleet.tick()
            cpu += time.process_time() - t0
            awards = fleet.assignments()
            same = all(a == awards[0] for a in awards) and len(awards[0]) == tasks
            holders = held_by_node(fleet)
            if same and len(holders) == tasks and all(len(h) == 1 for h in holders.values()):
                agreed_tick = tick
                break
        msgs, size = topic_bytes(fleet, start, "tasks")
        m = [n.engine.metrics() for n in fleet.nodes]
        return {
            "bench": "allocation",
            "nodes": nodes,
            "agents": nodes * agents,
            "tasks": tasks,
            "window_s": window_s,
            "tick_s": TICK_S,
            "agreed_after_announce_s": None if agreed_tick is None else agreed_tick * TICK_S,
            "agreed_after_window_s": None
            if agreed_tick is None
            else max(0.0, agreed_tick * TICK_S - window_s - TICK_S),
            "messages": msgs,
            "messages_per_task": msgs / tasks,
            "bytes": size,
            "bytes_per_task": size / tasks,
            "bids": int(sum(x["bids_sent"] for x in m)),
            "reawards": int(sum(x["reawards"] for x in m)),
            "conflicts_detected": int(sum(x["conflicts_detected"] for x in m)),
            "converge_s_max": max(x["converge_s_max"] for x in m),
            "cpu_ms_fleet_until_agreed": cpu * 1e3,
        }
    finally:
        fleet.close()


def bench_partition(root: Path, *, seed: int) -> dict[str, Any]:
    settings = CoordinationSettings(
        auction=AuctionSettings(window_s=0.5, done_belief=None), tick_period_s=TICK_S
    )
    fleet = SimFleet(root, 5, {"grid": GroupSpec(GRID, 100, capabilities=("grid",))}, settings)
    try:
        fleet.tick(3)
        fleet.nodes[0].engine.announce(grid_tasks(60, seed, "node0"))
        fleet.nodes[0].link.pump()
        fleet.partition([{"node0", "node1"}, {"node2", "node3", "node4"}])
        fleet.tick(7)
        duplicates = sum(1 for h in held_by_node(fleet).values() if len(h) > 1)
        start = len(fleet.broker.published)
        fleet.heal()
        healed = None
        for tick in range(1, 100):
            fleet.tick()
            awards = fleet.assignments()
            holders = held_by_node(fleet)
            if all(a == awards[0] for a in awards) and all(len(h) == 1 for h in holders.values()):
                healed = tick
                break
        fleet.tick(20)
        msgs, size = topic_bytes(fleet, start, "tasks")
        m = [n.engine.metrics() for n in fleet.nodes]
        return {
            "bench": "partition_heal",
            "nodes": 5,
            "tasks": 60,
            "duplicates_during_partition": duplicates,
            "resolved_after_heal_s": None if healed is None else healed * TICK_S,
            "conflicts_detected": int(sum(x["conflicts_detected"] for x in m)),
            "conflicts_resolved": int(sum(x["conflicts_resolved"] for x in m)),
            "resolve_s_mean": statistics.mean(x["resolve_s_mean"] for x in m),
            "syncs_sent": int(sum(x["syncs_sent"] for x in m)),
            "messages_after_heal": msgs,
            "bytes_after_heal": size,
        }
    finally:
        fleet.close()


def bench_beliefs(
    root: Path, *, nodes: int, agents: int, ticks: int, budget: float, trust: float, seed: int
) -> dict[str, Any]:
    S = 8
    model = static_world_model(S, 0.3)
    truth = np.random.default_rng(seed).integers(0, S, agents)
    share = None
    if nodes > 1:
        share = SharingSettings(
            factors=(0,),
            trust=trust,
            min_evidence_nats=0.1,
            bound_nats=8.0,
            bytes_per_agent_s=budget,
        )
    fleet = SimFleet(
        root,
        nodes,
        {"w": GroupSpec(model, agents, sharing=share)},
        CoordinationSettings(tick_period_s=TICK_S),
        env_factory=lambda m, n, s: SharedTruthWorld(m, truth, s + seed),
    )
    try:
        start = len(fleet.broker.published)
        reached = np.full(agents, -1)
        for t in range(ticks):
            fleet.tick()
            q = fleet.nodes[0].groups["w"].qs[0][np.arange(agents), truth]
            reached = np.where((q >= 0.95) & (reached < 0), t + 1, reached)
        msgs, size = topic_bytes(fleet, start, "beliefs")
        elapsed = ticks * TICK_S
        out: dict[str, Any] = {
            "bench": "belief_sharing",
            "nodes": nodes,
            "peers": nodes - 1,
            "agents_per_node": agents,
            "states": S,
            "sensor_accuracy": 0.3,
            "trust": trust if nodes > 1 else None,
            "steps_to_95_median": float(np.median(np.where(reached < 0, ticks, reached))),
            "never_reached_in_window": int((reached < 0).sum()),
            "ticks": ticks,
        }
        if nodes > 1:
            stats = fleet.nodes[0].engine.metrics()
            out.update(
                budget_bytes_per_agent_s=budget,
                wire_bytes_per_agent_s=size / (nodes * agents) / elapsed,
                reported_bytes_per_agent_s=stats["beliefs.w.bytes_per_agent_s"],
                messages_per_node_s=msgs / nodes / elapsed,
                rows_deferred_budget=int(stats["beliefs.w.rows_deferred_budget"]),
            )
        return out
    finally:
        fleet.close()


class _CoordinatedNode:
    """Two nodes with ``agents`` grid agents each; node0 is measured, node1 announces tasks.

    ``busy``: tasks are finished as soon as a holder believes it reached the goal and replaced
    at once, keeping ``min(agents // 2, 100)`` open (an auction every tick or two). Otherwise:
    as many tasks are announced once and never finish (``done_belief=None``): holders walk with
    their preferences replaced, and the only coordination traffic is task_state once a second.
    """

    def __init__(self, root: Path, agents: int, *, busy: bool, seed: int) -> None:
        settings = CoordinationSettings(
            auction=AuctionSettings(window_s=0.3, done_belief=0.9 if busy else None),
            tick_period_s=TICK_S,
        )
        self.fleet = SimFleet(
            root, 2, {"grid": GroupSpec(GRID, agents, capabilities=("grid",))}, settings
        )
        self.node, self.other = self.fleet.nodes
        self.busy = busy
        self.target = min(agents // 2, 100)
        self.seed = seed
        self.serial = 0
        self.ticks = 0
        self.total_s = 0.0  # CPU of the measured node's ticks, and of it:
        self.link_s = 0.0  # the fleet link's pump, receive and flush
        self.engine_s = 0.0  # the engine's before_step and after_step
        self.fleet.tick(3)
        self._top_up()
        self.fleet.tick(5)

    def _top_up(self) -> None:
        missing = self.target - len(self.node.engine.board.open_epochs())
        if missing > 0:
            self.other.engine.announce(
                grid_tasks(missing, self.seed + self.serial, "node1", prefix=f"s{self.serial}-")
            )
            self.serial += 1

    def step(self) -> float:
        """One tick of both nodes; returns the CPU seconds of the measured node's tick.

        The measured node's tick is :meth:`SimNode.tick` with its phases timed: the link's
        work (pump, receive, flush: any daemon with ``[mqtt]`` pays it), the engine's
        ``before_step``/``after_step`` and the group's step through ``engine.step`` (which
        includes the holders' re-decision) with its world's step.
        """
        if self.busy:
            self._top_up()
        node, clock = self.node, time.process_time
        t0 = clock()
        node.receive()
        t1 = clock()
        node.engine.before_step()
        t2 = clock()
        for name, env in node.envs.items():
            env.step(node.engine.step(name, env.obs))
        t3 = clock()
        node.engine.after_step()
        t4 = clock()
        node.link.pump()
        node.link.flush()
        t5 = clock()
        spent = t5 - t0
        self.total_s += spent
        self.link_s += (t1 - t0) + (t5 - t4)
        self.engine_s += (t2 - t1) + (t4 - t3)
        self.ticks += 1
        self.other.tick()
        self.fleet.clock.now += TICK_S
        return spent


def bench_efficiency(root: Path, *, agents: int, seconds: float, seed: int) -> dict[str, Any]:
    """``agents`` agents as one batch with coordination vs ``agents`` x one agent alone.

    ``efficiency = X(N) / (N * X(1))`` with ``X`` the agent-steps per second of CPU: ``X(1)`` of
    one agent stepped alone, ``X(N)`` of ``N`` agents stepped as one batch (plain, or a node's
    whole coordinated tick). Since ``X(N) = N / T(N)`` for a tick of ``T(N)``, the efficiency is
    ``T(1) / T(N)``: above 1 only if a tick of ``N`` agents took less than a tick of one. The
    batching gain ``X(N) / X(1) = N * efficiency`` is how much faster the ``N`` agents go than
    the same ``N`` stepped one at a time. A coordinated tick is also split into the fleet link's
    share (pump, receive, flush: any daemon with ``[mqtt]`` pays it), the engine's
    ``before_step``/``after_step``, and the step (``engine.step``: the group's step and the
    holders' re-decision, with the world's step).

    The four workloads run interleaved, in rounds of about 50 ms each, and are timed with the
    process's CPU clock, so that other load on the machine hits them alike.
    """
    single = AifAgentGroup(GRID, 1, seed=seed)
    env1 = BatchEnv(GRID, 1, seed=seed)
    plain = AifAgentGroup(GRID, agents, seed=seed)
    envp = BatchEnv(GRID, agents, seed=seed)
    steady = _CoordinatedNode(root / "steady", agents, busy=False, seed=seed)
    busy = _CoordinatedNode(root / "busy", agents, busy=True, seed=seed)
    try:

        def timed(fn: Any) -> Any:
            def run() -> float:
                t0 = time.process_time()
                fn()
                return time.process_time() - t0

            return run

        work: dict[str, tuple[Any, int]] = {
            "single": (timed(lambda: env1.step(single.step(env1.obs))), 1),
            "plain": (timed(lambda: envp.step(plain.step(envp.obs))), agents),
            "steady": (steady.step, agents),
            "busy": (busy.step, agents),
        }
        spent = dict.fromkeys(work, 0.0)
        steps = dict.fromkeys(work, 0)
        per_round: dict[str, int] = {}
        for name, (step, _) in work.items():  # warm up; size the rounds to ~50 ms
            n, used = 0, 0.0
            while used < 0.05:
                used += step()
                n += 1
            per_round[name] = n
        t_end = time.perf_counter() + seconds * len(work)
        while time.perf_counter() < t_end:
            for name, (step, _) in work.items():
                for _ in range(per_round[name]):
                    spent[name] += step()
                steps[name] += per_round[name]
        rate = {name: steps[name] * work[name][1] / spent[name] for name in work}
        tick_ms = {name: spent[name] / steps[name] * 1e3 for name in work}
        out: dict[str, Any] = {
            "bench": "coordination_efficiency",
            "agents": agents,
            "single_agent_steps_per_s": rate["single"],
            "single_tick_ms": tick_ms["single"],
            "batch_steps_per_s_no_coordination": rate["plain"],
            "plain_tick_ms": tick_ms["plain"],
            "efficiency_no_coordination": rate["plain"] / (agents * rate["single"]),
            "batching_gain_no_coordination": rate["plain"] / rate["single"],
        }
        for name, run in (("steady", steady), ("busy", busy)):
            m = run.node.engine.metrics()
            link = tick_ms[name] * run.link_s / run.total_s
            engine = tick_ms[name] * run.engine_s / run.total_s
            out[f"{name}_steps_per_s"] = rate[name]
            out[f"{name}_efficiency"] = rate[name] / (agents * rate["single"])
            out[f"{name}_batching_gain"] = rate[name] / rate["single"]
            out[f"{name}_tick_ms"] = tick_ms[name]
            out[f"{name}_link_ms"] = link
            out[f"{name}_engine_ms"] = engine
            out[f"{name}_step_ms"] = tick_ms[name] - link - engine
            out[f"{name}_efficiency_without_link"] = tick_ms["single"] / (tick_ms[name] - link)
            out[f"{name}_agents_holding"] = int(m["tasks_held"])
            out[f"{name}_tasks_done_per_s"] = m["tasks_done"] / (run.ticks * TICK_S)
        return out
    finally:
        steady.fleet.close()
        busy.fleet.close()


def smoke() -> None:
    """Each benchmark once at small sizes (the code path; the numbers mean nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        emit(
            bench_allocation(root / "alloc", nodes=3, agents=20, tasks=20, window_s=0.5, seed=0)
            | {"repeat": 0}
        )
        emit(bench_partition(root / "partition", seed=0))
        emit(bench_beliefs(root / "beliefs", nodes=2, agents=20, ticks=20, budget=64.0, trust=0.5,
                           seed=1))
        emit(bench_efficiency(root / "eff", agents=20, seconds=0.2, seed=0) | {"repeat": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="each benchmark once, small: for CI")
    args = parser.parse_args()
    if args.smoke:
        smoke()
        return
    repeats = 1 if args.quick else args.repeats
    seconds = 1.0 if args.quick else 3.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(repeats):
            emit(
                bench_allocation(
                    root / f"alloc{r}", nodes=5, agents=100, tasks=100, window_s=0.5, seed=r
                )
                | {"repeat": r}
            )
        emit(bench_partition(root / "partition", seed=0))
        for nodes, trust in ((1, 0.5), (2, 0.5), (3, 0.5), (5, 0.5), (5, 1.0)):
            emit(
                bench_beliefs(
                    root / f"beliefs{nodes}-{trust}",
                    nodes=nodes,
                    agents=100,
                    ticks=80,
                    budget=64.0,
                    trust=trust,
                    seed=1,
                )
            )
        for budget in (16.0, 64.0):  # long runs: the burst no longer counts
            emit(
                bench_beliefs(
                    root / f"bandwidth{budget}",
                    nodes=3,
                    agents=100,
                    ticks=100 if args.quick else 600,
                    budget=budget,
                    trust=0.5,
                    seed=2,
                )
                | {"run": "bandwidth"}
            )
        for r in range(repeats):
            emit(
                bench_efficiency(root / f"eff{r}", agents=50, seconds=seconds, seed=r)
                | {"repeat": r}
            )
        emit(bench_efficiency(root / "eff-1000", agents=1000, seconds=seconds, seed=0))


if __name__ == "__main__":
    main()
