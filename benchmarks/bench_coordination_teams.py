"""Team tasks (coalitions): formation and repair between real daemons, the award's quality
against the optimum of the same bids, and what it achieves in a grid world. One JSON object per
line.

- ``team_formation``: ``D`` daemons of ``A`` grid10 agents each (20 Hz, ``window_s = 0.5``,
  ``state_every_s = 1``) on a loopback mosquitto; the hub announces ``T`` team tasks at once,
  teams of 2-5 agents in up to three roles with goals of their own (``tasks announce
  --team-sizes 2-5 --max-roles 3``). When every daemon holds the same complete award (every
  team whole, the same members in the same roles everywhere), after the announcement: the
  newest ``award_changed_at`` of the daemons' status files (their own wall clocks, one
  machine); and when every member had taken its slot (a hold), which waits for each daemon's
  bidding window. Messages and bytes on the ``tasks`` topics until the award was agreed (a
  client subscribed to the fleet counts them), per agent.
- ``team_repair``: then the daemon with the most members is SIGKILLed (the broker publishes its
  will): when every other daemon holds the same complete award again (the newest
  ``award_changed_at``) after the kill, whether the others' members kept their slots and round,
  and ``window_s + state_every_s`` beside it (the bound the issue sets). With ``--stall S``,
  another daemon is first stopped for ``S`` seconds (SIGSTOP, then SIGCONT) and the kill comes
  as it resumes: a daemon starved of CPU on a loaded machine, made on purpose
  (``stalled_s``; issue 55: such stalls set off a sync storm that held repair back 12-35 s).
  Each daemon's CPU from the announcement until the bench saw the award agreed, above its
  idle rate (measured over a second before): ``formation_cpu_s_mean``/``_max``; from the
  largest, ``one_core_estimate_s``, the agreement time with a core per daemon, computed (the
  CPU plus a 20 Hz tick per message of the critical path: :func:`one_core_estimate`).
- ``team_formation_slope``: where the machine could not hold the daemons (``--scale``), the
  least-squares lines of the agreement time and of the largest formation CPU over the agents
  of the sizes measured, at the sizes asked for (marked ``slope``, not measured), and the
  one-core estimate from the extrapolated CPU.
- ``team_formation_cpu``: the same formation in one process (``--cpu NODESxAGENTS``, nodes on
  the in-memory broker, a simulated clock): each node's CPU (``process_time``) from the
  announcement until every team is whole and held everywhere, above its idle ticks', against
  twice as many one-agent tasks on a fleet of the same size: the per-node CPU as a function of
  the fleet's size, which the machine's load barely moves.
- ``team_quality``: random instances in one process, bid as the daemons bid (``D`` nodes of
  grid10 agents at random cells, each bidding its ``k = ceil(slots / D)`` cheapest agents per
  role, ``task_costs``/``select_bids``): the team award's total cost against scipy's
  ``linear_sum_assignment`` on the slots over the same bids, and a greedy that fills slots in
  increasing cost (today's one-agent rule applied to slots); cost-efficiency is ``(optimum -
  bound) / (award - bound)`` with ``bound`` the sum of each slot's cheapest bid (a cost can be
  negative: the bound makes the ratio one of excess cost).
- ``single_quality``: one-agent tasks bid the same way: today's greedy award (``TaskBoard``)
  against the optimum.
- ``team_outcome``: the grid world: the same agents and bids, teams awarded by the team award
  and by the slot greedy; each member pursues its role's goal (the engine's holder step) until
  it believes it is there (``done_belief`` 0.9); steps until a team's last member got there,
  teams complete within the horizon.

    python benchmarks/bench_coordination_teams.py [--scale 5x100,5x500,10x500,20x500]
        [--skip-daemons | --skip-one-process]

``--smoke``: two daemons of 20 agents, four teams, tiny instances: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from bench_coordination_daemons import Counted, emit  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from edge_agent.coordination import (  # noqa: E402
    AuctionSettings,
    CoordinatedGroup,
    CoordinationEngine,
    CoordinationSettings,
)
from edge_agent.coordination.assignment import fixed_point  # noqa: E402
from edge_agent.coordination.ledger import Bid, TaskBoard  # noqa: E402
from edge_agent.coordination.messages import TaskSpec  # noqa: E402
from edge_agent.coordination.team_award import (  # noqa: E402
    RoleBids,
    RoleTable,
    counted_holds,
    fill,
)
from edge_agent.coordination.utility import select_bids, task_costs, task_utility  # noqa: E402
from edge_agent.core.agents import AifAgentGroup  # noqa: E402
from edge_agent.fleet.topics import Topics  # noqa: E402
from edge_agent.sim import BatchEnv  # noqa: E402
from edge_agent.sim.gridworld import gridworld_model  # noqa: E402
from edge_agent_host.fleetctl.tasks import announce, random_specs, random_team_specs  # noqa: E402
from tests.integration.coordination.test_coordination_daemons import (  # noqa: E402
    auction,
    coord,
    hub,
    start_all,
)
from tests.integration.fleet.test_fleet_daemon import FLEET, Node  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402

WINDOW_S = 0.5
STATE_EVERY_S = 1.0
GRID = gridworld_model(10, 10, noise=0.1, preference_scale=0.0)
DONE_BELIEF = 0.9


def grid_group(agents: int) -> str:
    return f"""
[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {agents}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
[groups.coordination]
capabilities = ["grid"]
"""


# ------------------------------------------------------------------------------ real daemons
def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _teams_agreed(nodes: list[Node], tasks: int) -> list[dict[str, Any]] | None:
    """The daemons' coordination sections once they hold the same complete award of ``tasks``
    teams (the same members in the same roles); else None."""
    views = [coord(n) for n in nodes]
    if not all(views):
        return None
    rosters = [
        {t: (team["epoch"], sorted(tuple(m[:4]) for m in team["members"]))
         for t, team in v.get("teams", {}).items()}
        for v in views
    ]  # fmt: skip
    first = rosters[0]
    if len(first) != tasks or any(r != first for r in rosters[1:]):
        return None
    if any(team["vacant"] for team in views[0]["teams"].values()):
        return None
    return views


def _all_held(views: list[dict[str, Any]]) -> bool:
    return all(m[4] for team in views[0]["teams"].values() for m in team["members"])


def _wait(nodes: list[Node], tasks: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = _teams_agreed(nodes, tasks)
        if views is not None:
            return views
        time.sleep(0.05)
    raise SystemExit(f"bench: {len(nodes)} daemons did not agree on {tasks} teams in {timeout} s")


def _wait_held(nodes: list[Node], tasks: int, timeout: float) -> tuple[list[dict[str, Any]], float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = _teams_agreed(nodes, tasks)
        if views is not None and _all_held(views):
            return views, time.time()
        time.sleep(0.05)
    raise SystemExit(f"bench: the members of {tasks} teams did not all hold in {timeout} s")


def bench_daemons(
    root: Path, broker: MosquittoBroker, *, daemons: int, agents: int, tasks: int, seed: int,
    repair: bool, stall_s: float = 0.0,
) -> list[dict[str, Any]]:  # fmt: skip
    nodes = [
        Node(
            root,
            broker,
            f"t{daemons}x{agents}-{i}",
            groups=grid_group(agents) + auction(WINDOW_S, state_every_s=STATE_EVERY_S),
            telemetry_s=1.0,
        )
        for i in range(daemons)
    ]
    counter = Counted(broker)
    out: list[dict[str, Any]] = []
    started = time.time()
    try:
        start_all(nodes)
        time.sleep(2.0)  # births, the syncs they cause and the first task_state are behind us
        # Each daemon's CPU while idle (ticking, telemetry) over a second, the baseline its
        # formation CPU is counted above.
        procs = [psutil.Process(n.pid) for n in nodes]
        idle_from, idle_cpu = time.time(), [_cpu(p) for p in procs]
        time.sleep(1.0)
        idle_rate = [
            (_cpu(p) - c) / (time.time() - idle_from) for p, c in zip(procs, idle_cpu, strict=True)
        ]
        specs = random_team_specs(
            tasks, 100, sizes=(2, 5), max_roles=3, seed=seed, capability="grid",
            announced_by="hub", prefix=f"s{seed}-",
        )  # fmt: skip
        slots = sum(s.size for s in specs)
        counted = ("syncs_sent", "syncs_received", "digest_mismatches", "conflicts_detected")
        before = [coord(n)["metrics"] for n in nodes]
        with hub(broker) as client:
            cpu_before = [_cpu(p) for p in procs]
            announced = time.time()
            announce(client, specs)
            views = _wait(nodes, tasks, timeout=60)
            cpu_after, cpu_at = [_cpu(p) for p in procs], time.time()
            held_views, held_seen = _wait_held(nodes, tasks, timeout=60)
        time.sleep(1.2)  # every status file written once more: each daemon's whole timeline
        timeline = _timeline([coord(n) for n in nodes], announced)
        agreed = max(v["award_changed_at"] for v in views)
        pairs = list(zip(views, before, strict=True))
        msgs = counter.between(announced - 0.01, agreed + 0.01, "tasks")
        every = daemons * agents
        # CPU each daemon spent between the announcement and the moment the bench saw the award
        # agreed (its status file is written once a second: an upper bound), above its idle rate.
        formation_cpu = [
            max(0.0, a - b - rate * (cpu_at - announced))
            for a, b, rate in zip(cpu_after, cpu_before, idle_rate, strict=True)
        ]
        out.append(
            {
                "bench": "team_formation",
                "daemons": daemons,
                "agents": every,
                "tasks": tasks,
                "slots": slots,
                "roles": sum(len(s.slots()) for s in specs),
                "window_s": WINDOW_S,
                "tick_hz": 20,
                "agreed_after_announce_s": round(agreed - announced, 4),
                "held_seen_after_announce_s": round(held_seen - announced, 4),
                "last_daemon_saw_round_after_s": round(
                    max(v["rounds_opened_at"] for v in views) - announced, 4
                ),
                "messages_until_agreed": len(msgs),
                "message_types": dict(Counter(t for t, _ in msgs)),
                "bytes_until_agreed": sum(n for _, n in msgs),
                "messages_per_agent": round(len(msgs) / every, 5),
                "bytes_per_agent": round(sum(n for _, n in msgs) / every, 2),
                "bids_per_slot": round(sum(v["metrics"]["bids_sent"] for v in views) / slots, 2),
                "teams_formed": int(min(v["metrics"]["teams_formed"] for v in views)),
                **{
                    key: int(sum(v["metrics"].get(key, 0) for v in views))
                    for key in (
                        "syncs_sent",
                        "conflicts_detected",
                        "digest_mismatches",
                        "inbox_dropped",
                        "malformed",
                        "tasks_preempted",
                    )
                },
                **timeline,
                "in_formation": {
                    key: int(sum(v["metrics"].get(key, 0) - b.get(key, 0) for v, b in pairs))
                    for key in counted
                },
                "formation_cpu_s_mean": round(statistics.fmean(formation_cpu), 4),
                "formation_cpu_s_max": round(max(formation_cpu), 4),
                "idle_cpu_per_s_mean": round(statistics.fmean(idle_rate), 4),
                "cpu_window_s": round(cpu_at - announced, 4),
                "one_core_estimate_s": one_core_estimate(max(formation_cpu)),
                "start_s": round(announced - started, 1),
            }
        )
        if repair:
            out.append(_repair(nodes, held_views, tasks, counter, stall_s=stall_s))
    finally:
        counter.close()
        for node in nodes:
            node.close()
    return out


MILESTONES = (
    "opened_at", "bids_sent_at", "all_bids_at", "peer_bids_last_at", "team_award_first_at",
    "team_award_last_at", "holds_sent_at", "all_held_at",
)  # fmt: skip
"""A daemon's way to agreement (its status file's ``formation``), in order."""


PHASES = ("opened", "bids_sent", "all_bids", "team_award_first")
"""The milestones whose phases the timeline splits into wall clock and CPU."""


def _timeline(views: list[dict[str, Any]], announced: float) -> dict[str, Any]:
    """The daemons' formation milestones after the announcement (the earliest and the latest
    daemon's, seconds), the team awards each computed (fewest, most), the live peers each
    counted, how many awarded before every peer's bids came (the holds' wait ran out) and the
    most a peer's bid message waited from being sent to being merged; ``phases_s``: each
    phase between two :data:`PHASES` milestones, its wall clock, the coordinating thread's CPU
    in it and the whole process's (the MQTT client's thread decoding the peers' messages too),
    the fewest and the most of the daemons."""
    marks = [v.get("formation", {}) for v in views]
    out: dict[str, Any] = {}
    for key in MILESTONES:
        times = [m[key] - announced for m in marks if m.get(key) is not None]
        if times:
            out[key.removesuffix("_at")] = [round(min(times), 3), round(max(times), 3)]
    # Each phase's wall clock against the coordinating thread's CPU in it, per daemon (the
    # fewest and the most seconds): what of a phase is work and what is waiting.
    phases: dict[str, dict[str, list[float]]] = {}
    for a, b in itertools.pairwise(PHASES):
        both = [m for m in marks if f"{a}_cpu" in m and f"{b}_cpu" in m]
        walls = [m[f"{b}_at"] - m[f"{a}_at"] for m in both]
        cpus = [m[f"{b}_cpu"] - m[f"{a}_cpu"] for m in both]
        procs = [m.get(f"{b}_pcpu", 0.0) - m.get(f"{a}_pcpu", 0.0) for m in both]
        if walls:
            phases[f"{a}-{b}"] = {
                "wall": [round(min(walls), 3), round(max(walls), 3)],
                "cpu": [round(min(cpus), 4), round(max(cpus), 4)],
                "process_cpu": [round(min(procs), 4), round(max(procs), 4)],
            }
    awards = [int(m.get("team_awards", 0)) for m in marks]
    lags = [m.get("bid_lag_s_max", 0.0) for m in marks]
    peers = [int(m.get("live_peers", 0)) for m in marks]
    return {
        "timeline_s": out,
        "phases_s": phases,
        "team_awards_per_daemon": [min(awards), max(awards)],
        "live_peers_per_daemon": [min(peers), max(peers)],
        "daemons_that_waited_out_bids": sum(1 for m in marks if m.get("rounds_waited_out")),
        "bid_lag_s_max": round(max(lags), 3),
    }


def _repair(
    nodes: list[Node], before: list[dict[str, Any]], tasks: int, counter: Counted,
    *, stall_s: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    teams = before[0]["teams"]
    count = Counter(m[0] for team in teams.values() for m in team["members"])
    victim = max(nodes, key=lambda n: count[n.name])
    survivors = [n for n in nodes if n is not victim]
    if stall_s:
        survivors[0].signal(signal.SIGSTOP)
        try:
            time.sleep(stall_s)
        finally:
            survivors[0].signal(signal.SIGCONT)
    killed = time.time()
    victim.kill()
    deadline = time.monotonic() + 60
    views = None
    while time.monotonic() < deadline:
        views = _teams_agreed(survivors, tasks)
        if views is not None and all(
            m[0] != victim.name for team in views[0]["teams"].values() for m in team["members"]
        ):
            break
        views = None
        time.sleep(0.05)
    if views is None:
        raise SystemExit("bench: the survivors did not repair the teams in 60 s")
    agreed = max(v["award_changed_at"] for v in views)
    after = views[0]["teams"]
    kept = all(
        {tuple(m[:4]) for m in teams[t]["members"] if m[0] != victim.name}
        <= {tuple(m[:4]) for m in after[t]["members"]}
        and after[t]["epoch"] == teams[t]["epoch"]
        for t in teams
    )
    msgs = counter.between(killed, agreed + 0.01, "tasks")
    return {
        "bench": "team_repair",
        "daemons": len(nodes),
        "agents": len(nodes) * int(before[0]["groups"]["grid"]["agents"]),
        "tasks": tasks,
        "slots_vacated": count[victim.name],
        "agreed_after_kill_s": round(agreed - killed, 4),
        "bound_s": WINDOW_S + STATE_EVERY_S,
        "stalled_s": stall_s,
        "within_bound": agreed - killed <= WINDOW_S + STATE_EVERY_S,
        "others_kept_their_slots": kept,
        "repairs": int(min(v["metrics"]["team_repairs"] for v in views)),
        "messages_until_agreed": len(msgs),
        "bytes_until_agreed": sum(n for _, n in msgs),
    }


HOPS = 3
"""Messages in a formation's critical path: the announcement, the bids, the holds."""


def one_core_estimate(cpu_s: float) -> float:
    """The agreement time of a fleet with a core per daemon, computed (not measured): the most
    CPU a daemon spent on the formation, all of it on its own core, plus a tick (20 Hz) per
    message in the critical path, which a daemon reads on its tick; the broker's loopback
    delivery (well under a millisecond on an idle machine) is left out."""
    return round(cpu_s + HOPS / 20, 4)


def slope_rows(
    measured: list[dict[str, Any]], wanted: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """The least-squares line of agreement time over agents, at the sizes not measured."""
    done = {(r["daemons"], r["agents"] // r["daemons"]) for r in measured}
    xs = [r["agents"] for r in measured]
    ys = [r["agreed_after_announce_s"] for r in measured]
    cpus = [r["formation_cpu_s_max"] for r in measured]
    rows: list[dict[str, Any]] = []
    if len(set(xs)) < 2:
        return rows
    slope, intercept = np.polyfit(xs, ys, 1)
    cpu_slope, cpu_intercept = np.polyfit(xs, cpus, 1)
    for daemons, agents in wanted:
        if (daemons, agents) in done:
            continue
        rows.append(
            {
                "bench": "team_formation_slope",
                "daemons": daemons,
                "agents": daemons * agents,
                "tasks": measured[-1]["tasks"],
                "agreed_after_announce_s": round(float(intercept + slope * daemons * agents), 4),
                "from_sizes": sorted(set(xs)),
                "slope_s_per_1000_agents": round(float(slope) * 1000, 4),
                "formation_cpu_s_max": round(
                    float(cpu_intercept + cpu_slope * daemons * agents), 4
                ),
                "cpu_slope_s_per_1000_agents": round(float(cpu_slope) * 1000, 4),
                "one_core_estimate_s": one_core_estimate(
                    float(cpu_intercept + cpu_slope * daemons * agents)
                ),
            }
        )
    return rows


# ------------------------------------------------------------------------------ one process
class _NullLink:
    """What an engine needs of a link, for stepping holders in one process (nothing is sent)."""

    node_id = "bench"
    topics = Topics(FLEET)
    bdseq = 0

    def publish(self, *_args: Any, **_kwargs: Any) -> int:
        return 0

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        del pattern, qos


def localized(agents: int, seed: int) -> tuple[AifAgentGroup, BatchEnv]:
    """Grid agents at random cells, after a few steps to locate themselves."""
    group = AifAgentGroup(GRID, agents, seed=seed)
    env = BatchEnv(GRID, agents, seed=seed)
    for _ in range(4):
        env.step(group.step(env.obs))
    return group, env


def instance_bids(
    group: AifAgentGroup, specs: list[TaskSpec], nodes: int
) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray, np.ndarray]:
    """Bids as ``nodes`` daemons would send them (the group's agents split among them):
    ``(columns (task, role), column, agent, cost)``."""
    columns = [(s.task, r) for s in specs for r in range(len(s.slots()))]
    goals = [s.slots()[r] for s in specs for r in range(len(s.slots()))]
    U = np.stack([task_utility(GRID_CM, g.goal_factor, g.goal_state) for g in goals], axis=1)
    costs = task_costs(group.cm, group.qs, group.G, U, base_utility=group.cm.utility)
    slots = sum(s.size for s in specs)
    k = max(4, min(64, math.ceil(slots / nodes)))
    parts = np.array_split(np.arange(group.n_agents), nodes)
    col, agent, cost = [], [], []
    for rows in parts:
        c, pos, value = select_bids(costs[rows], k)
        col.append(c)
        agent.append(rows[pos])
        cost.append(value.astype(np.float32))
    return columns, np.concatenate(col), np.concatenate(agent), np.concatenate(cost)


GRID_CM = AifAgentGroup(GRID, 1, seed=0).cm


def team_awards(
    specs: list[TaskSpec], columns: list[tuple[str, int]], col: np.ndarray, agent: np.ndarray,
    cost: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """The team award, the slot greedy and scipy's optimum over the same bids."""
    task_index = {s.task: i for i, s in enumerate(specs)}
    roles = RoleTable(
        np.array([task_index[t] for t, _ in columns], np.int64),
        np.array([s.slots()[r].agents for s in specs for r in range(len(s.slots()))], np.int64),
        np.zeros(len(columns), np.int64),
    )
    n_cols = int(agent.max()) + 1
    bids = RoleBids(col.astype(np.int64), agent.astype(np.int64), fixed_point(cost),
                    np.ones(col.size, np.int64), np.zeros(col.size, bool),
                    np.zeros(col.size, np.int64))  # fmt: skip
    members = counted_holds(roles, bids, n_cols)
    chosen = fill(roles, bids, members, np.zeros(n_cols, bool), len(specs))
    # The slot greedy: bids in increasing (cost, role, agent); a bid takes a slot of its role
    # while the role has room and the agent has none.
    room = roles.slots.copy()
    taken = np.zeros(n_cols, bool)
    greedy = np.zeros(col.size, bool)
    for i in np.lexsort((agent, col, cost)).tolist():
        if room[col[i]] and not taken[agent[i]]:
            room[col[i]] -= 1
            taken[agent[i]] = True
            greedy[i] = True
    slot_role = np.repeat(np.arange(len(columns)), roles.slots)
    dense = np.full((slot_role.size, n_cols), np.inf)
    for i in range(col.size):
        dense[slot_role == col[i], agent[i]] = cost[i]
    big = 1e9
    matrix = np.where(np.isfinite(dense), dense, big)
    r, c = linear_sum_assignment(matrix)
    optimum = float(matrix[r, c].sum())
    bound = float(sum(dense[s][np.isfinite(dense[s])].min() for s in range(slot_role.size)))

    def efficiency(total: float) -> float:
        return 1.0 if total == bound else (optimum - bound) / (total - bound)

    award_cost = float(cost[chosen].astype(np.float64).sum())
    greedy_cost = float(cost[greedy].astype(np.float64).sum())
    return {
        "slots": int(roles.slots.sum()),
        "award_filled": int(chosen.sum()),
        "greedy_filled": int(greedy.sum()),
        "optimum_cost": optimum,
        "award_cost": award_cost,
        "greedy_cost": greedy_cost,
        "award_efficiency": efficiency(award_cost),
        "greedy_efficiency": efficiency(greedy_cost),
        "optimum_complete": bool(matrix[r, c].max() < big),
        "chosen": chosen,
        "greedy": greedy,
    }


def bench_formation_cpu(
    root: Path, *, nodes: int, agents: int, tasks: int, seed: int, most_ticks: int = 80
) -> dict[str, Any]:
    """One formation in one process (the in-memory broker, a simulated 10 Hz clock): each node's
    CPU (``process_time`` around its ticks) from the announcement until every node holds the
    same award of whole teams and every member holds its slot, above the CPU of as many idle
    ticks of that node measured just before (its agents ticking, nothing to allocate); and the
    same for ``2 x tasks`` one-agent tasks on a fresh fleet of the same size, the baseline the
    ratio is against. The machine's load barely moves a process's CPU time, unlike the daemons'
    wall clock."""
    from tests.support.coordination_harness import TICK_S, GroupSpec, SimFleet

    settings = CoordinationSettings(
        auction=AuctionSettings(window_s=WINDOW_S, done_belief=None), tick_period_s=TICK_S
    )

    def one(kind: str, sub: Path) -> tuple[list[float], int, int]:
        fleet = SimFleet(
            sub, nodes, {"grid": GroupSpec(GRID, agents, capabilities=("grid",))}, settings
        )
        try:
            fleet.tick(3)  # agents localise themselves before they bid
            idle = [0.0] * nodes
            for _ in range(10):
                for i, node in enumerate(fleet.nodes):
                    t0 = time.process_time()
                    node.tick()
                    idle[i] += time.process_time() - t0
                fleet.clock.now += TICK_S
            if kind == "teams":
                specs = random_team_specs(
                    tasks, 100, sizes=(2, 5), max_roles=3, seed=seed, capability="grid",
                    announced_by="node0",
                )  # fmt: skip
            else:
                specs = random_specs(2 * tasks, 100, capability="grid", announced_by="node0",
                                     seed=seed)  # fmt: skip
            fleet.nodes[0].engine.announce(specs)
            cpu = [0.0] * nodes
            for tick in range(1, most_ticks + 1):
                for i, node in enumerate(fleet.nodes):
                    t0 = time.process_time()
                    node.tick()
                    cpu[i] += time.process_time() - t0
                fleet.clock.now += TICK_S
                if _formed(fleet, kind, len(specs)):
                    refills = sum(n.engine.board.refills for n in fleet.nodes)
                    return (
                        [max(0.0, c - tick * d / 10) for c, d in zip(cpu, idle, strict=True)],
                        tick,
                        refills,
                    )
            raise SystemExit(f"bench: {nodes} nodes did not form {kind} in {most_ticks} ticks")
        finally:
            fleet.close()

    teams_cpu, teams_ticks, refills = one("teams", root / f"cpu-teams-{nodes}x{agents}")
    single_cpu, single_ticks, _ = one("single", root / f"cpu-single-{nodes}x{agents}")
    return {
        "bench": "team_formation_cpu",
        "nodes": nodes,
        "agents": nodes * agents,
        "tasks": tasks,
        "ticks": teams_ticks,
        "cpu_s_per_node_mean": round(statistics.fmean(teams_cpu), 4),
        "cpu_s_per_node_max": round(max(teams_cpu), 4),
        "cpu_s_fleet": round(sum(teams_cpu), 4),
        "refills": refills,
        "single_tasks": 2 * tasks,
        "single_ticks": single_ticks,
        "single_cpu_s_per_node_mean": round(statistics.fmean(single_cpu), 4),
        "teams_over_single": round(sum(teams_cpu) / max(sum(single_cpu), 1e-9), 2),
    }


def _formed(fleet: Any, kind: str, count: int) -> bool:
    """Every node holds the same award of ``count`` tasks, every team whole and every member
    holding its slot (teams), or one holder each (one-agent tasks).

    Read from a copy of each node's board: an award the check computed on the board itself
    would be cached there, and the node's next (timed) tick would not pay for it (nor could a
    team award computed early, from some of the peers' bids, be the last fill a refill reuses,
    so the chain of refills broke where the daemons' does not). The copies cost wall time,
    not the CPU the nodes are timed for."""
    boards = [copy.deepcopy(n.engine.board) for n in fleet.nodes]
    if kind == "single":
        awards = [{t: b.holder for t, b in board.award().items()} for board in boards]
        return len(awards[0]) == count and all(a == awards[0] for a in awards[1:])
    teams = [board.teams() for board in boards]
    return (
        len(teams[0]) == count
        and all(t == teams[0] for t in teams[1:])
        and all(t.vacant == 0 and all(m.held for m in t.members) for t in teams[0].values())
    )


def bench_quality(
    *, instances: int, agents: int, tasks: int, nodes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    team_rows, single_rows = [], []
    for seed in range(instances):
        group, _ = localized(agents, seed)
        specs = random_team_specs(tasks, 100, sizes=(2, 5), max_roles=3, seed=seed,
                                  capability="grid", announced_by="hub")  # fmt: skip
        columns, col, agent, cost = instance_bids(group, specs, nodes)
        team_rows.append(team_awards(specs, columns, col, agent, cost))
        singles = random_specs(tasks * 2, 100, seed=seed, capability="grid", announced_by="hub")
        single_rows.append(single_quality(group, singles, nodes))

    def summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
        values = [r[key] for r in rows]
        return {f"{key}_min": min(values), f"{key}_median": statistics.median(values)}

    team = {
        "bench": "team_quality",
        "instances": instances,
        "agents": agents,
        "nodes": nodes,
        "tasks": tasks,
        "slots_mean": statistics.mean(r["slots"] for r in team_rows),
        "all_teams_formed": all(r["award_filled"] == r["slots"] for r in team_rows),
        **summary(team_rows, "award_efficiency"),
        **summary(team_rows, "greedy_efficiency"),
        "award_cost_over_optimum_max": max(r["award_cost"] - r["optimum_cost"] for r in team_rows),
    }
    single = {
        "bench": "single_quality",
        "instances": instances,
        "agents": agents,
        "nodes": nodes,
        "tasks": tasks * 2,
        **summary(single_rows, "greedy_efficiency"),
        "greedy_optimal_instances": sum(r["greedy_efficiency"] >= 1 - 1e-9 for r in single_rows),
    }
    return team, single


def single_quality(group: AifAgentGroup, specs: list[TaskSpec], nodes: int) -> dict[str, Any]:
    """Today's greedy award of one-agent tasks (the ledger's) against the optimum of its bids."""
    columns, col, agent, cost = instance_bids(group, specs, nodes)
    board = TaskBoard()
    for s in specs:
        board.add_spec(s)
    for c, a, v in zip(col.tolist(), agent.tolist(), cost.tolist(), strict=True):
        board.add_bid(Bid(columns[c][0], 0, "n", "g", a, v, 0, 1))
    greedy = sum(b.cost for b in board.award().values())
    dense = np.full((len(columns), int(agent.max()) + 1), 1e9)
    dense[col, agent] = cost
    r, c = linear_sum_assignment(dense)
    optimum = float(dense[r, c].sum())
    bound = float(dense.min(axis=1).sum())
    eff = 1.0 if greedy == bound else (optimum - bound) / (greedy - bound)
    return {"greedy_efficiency": eff}


def bench_outcome(
    *, instances: int, agents: int, tasks: int, nodes: int, horizon: int
) -> dict[str, Any]:
    """Teams awarded by the team award and by the slot greedy, pursued in the grid world."""
    results: dict[str, list[float]] = {"award": [], "greedy": []}
    complete: dict[str, int] = {"award": 0, "greedy": 0}
    member_steps: dict[str, list[float]] = {"award": [], "greedy": []}
    total = 0
    for seed in range(instances):
        group, _ = localized(agents, 1000 + seed)
        specs = random_team_specs(tasks, 100, sizes=(2, 5), max_roles=3, seed=1000 + seed,
                                  capability="grid", announced_by="hub")  # fmt: skip
        columns, col, agent, cost = instance_bids(group, specs, nodes)
        awards = team_awards(specs, columns, col, agent, cost)
        for name in ("award", "greedy"):
            picked = awards["chosen" if name == "award" else "greedy"]
            done, steps = pursue(
                (agents, 1000 + seed),
                specs,
                columns,
                col=col[picked],
                agent=agent[picked],
                horizon=horizon,
            )
            for team_steps in steps:
                if team_steps is not None:
                    results[name].append(team_steps)
                    complete[name] += 1
            member_steps[name] += done
        total += len(specs)
    return {
        "bench": "team_outcome",
        "instances": instances,
        "agents": agents,
        "tasks": tasks,
        "teams": total,
        "horizon_steps": horizon,
        "done_belief": DONE_BELIEF,
        **{f"{k}_teams_complete": complete[k] for k in complete},
        **{
            f"{k}_team_steps_mean": round(statistics.mean(v), 2) if v else None
            for k, v in results.items()
        },
        **{
            f"{k}_member_steps_mean": round(statistics.mean(v), 2) if v else None
            for k, v in member_steps.items()
        },
    }


def pursue(
    start: tuple[int, int], specs: list[TaskSpec], columns: list[tuple[str, int]],
    *, col: np.ndarray, agent: np.ndarray, horizon: int,
) -> tuple[list[float], list[float | None]]:  # fmt: skip
    """Members pursue their roles' goals from the same start (:func:`localized` of ``start``,
    agents and seed, made again: a group's arrays are bound to its compiled tick, so a copy
    would not step): steps until each member believes it reached its goal, and until a team's
    last member did (None: not within ``horizon``)."""
    group, env = localized(*start)
    engine = CoordinationEngine(
        _NullLink(),
        {"grid": CoordinatedGroup(group=group, capabilities=("grid",))},
        CoordinationSettings(auction=AuctionSettings(done_belief=None, max_held_per_group=4096)),
    )
    prefs = engine.groups["grid"].prefs
    spec_of = {s.task: s for s in specs}
    member_goal: dict[int, tuple[str, int, int]] = {}
    for c, a in zip(col.tolist(), agent.tolist(), strict=True):
        task, role = columns[c]
        spec = spec_of[task]
        goal = spec.slots()[role]
        utility = engine.groups["grid"].utility(spec, 1.0, role)
        prefs.assign(a, spec, 0, utility, key=(goal.goal_factor, goal.goal_state), role=role)
        member_goal[a] = (task, goal.goal_factor, goal.goal_state)
    reached: dict[int, int] = {}
    for step in range(1, horizon + 1):
        env.step(engine.step("grid", env.obs))
        for a, (_, f, s) in member_goal.items():
            if a not in reached and group.qs[f][a, s] >= DONE_BELIEF:
                reached[a] = step
                prefs.release(a)
        if len(reached) == len(member_goal):
            break
    teams: dict[str, list[int | None]] = {}
    for a, (task, _, _) in member_goal.items():
        teams.setdefault(task, []).append(reached.get(a))
    team_steps: list[float | None] = [
        None if None in v or len(v) < spec_of[t].size else float(max(x for x in v if x is not None))
        for t, v in teams.items()
    ]
    team_steps += [None] * (len(specs) - len(teams))
    return [float(v) for v in reached.values()], team_steps


# ------------------------------------------------------------------------------------ main
def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, text.split(",")):
        d, _, a = part.partition("x")
        out.append((int(d), int(a)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale",
        type=_sizes,
        default=_sizes("5x100,5x500,10x500,20x500"),
        help="DAEMONSxAGENTS sizes of the formation runs, the first also repaired",
    )
    parser.add_argument(
        "--fit",
        type=_sizes,
        default=_sizes("20x500"),
        help="sizes a slope row is given for when not measured",
    )
    parser.add_argument(
        "--cpu",
        type=_sizes,
        default=_sizes("5x100,10x100,20x100,5x500,10x500,20x500"),
        help="NODESxAGENTS sizes of the one-process formation CPU rows",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=0.0,
        help="seconds another daemon is stopped (SIGSTOP) just before the repair's kill",
    )
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--skip-daemons", action="store_true", help="only the one-process parts")
    parser.add_argument(
        "--skip-one-process", action="store_true", help="only the daemons' formation and repair"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 daemons of 20 agents, 4 teams, tiny instances: for CI",
    )
    args = parser.parse_args()
    # Dense: the 500 agents and 50 teams (every goal has agents a step or two away);
    # sparse: one agent per cell and 20 teams (about 70 slots), where who goes where matters.
    quality = [
        {"instances": args.instances, "agents": 500, "tasks": args.tasks, "nodes": 5},
        {"instances": args.instances, "agents": 100, "tasks": 20, "nodes": 5},
    ]
    outcome = [
        {"instances": max(2, args.instances // 2), "agents": 100, "tasks": 20, "nodes": 5,
         "horizon": 60},
    ]  # fmt: skip
    if args.smoke:
        args.scale, args.fit, args.tasks, args.cpu = [(2, 20)], [], 4, [(2, 20)]
        quality = [{"instances": 2, "agents": 40, "tasks": 4, "nodes": 2}]
        outcome = [{"instances": 1, "agents": 40, "tasks": 4, "nodes": 2, "horizon": 10}]
    if not args.skip_daemons:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            broker = MosquittoBroker(root / "mosquitto")
            broker.start()
            measured = []
            try:
                for i, (daemons, agents) in enumerate(args.scale):
                    try:
                        rows = bench_daemons(
                            root / f"teams-{daemons}x{agents}", broker, daemons=daemons,
                            agents=agents, tasks=args.tasks, seed=i, repair=i == 0,
                            stall_s=args.stall,
                        )  # fmt: skip
                    except SystemExit as err:  # the machine could not hold it: say so, go on
                        print(json.dumps({"bench": "team_formation_failed", "daemons": daemons,
                                          "agents": daemons * agents, "why": str(err)}),
                              file=sys.stderr, flush=True)  # fmt: skip
                        continue
                    for row in rows:
                        emit(row)
                    measured += [r for r in rows if r["bench"] == "team_formation"]
            finally:
                broker.kill()
            for row in slope_rows(measured, args.fit):
                emit(row)
    if args.skip_one_process:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for i, (nodes, agents) in enumerate(args.cpu):
            emit(bench_formation_cpu(Path(tmp) / str(i), nodes=nodes, agents=agents,
                                     tasks=args.tasks, seed=i))  # fmt: skip
    for sizes in quality:
        team, single = bench_quality(**sizes)
        emit(team)
        emit(single)
    for sizes in outcome:
        emit(bench_outcome(**sizes))


if __name__ == "__main__":
    main()
