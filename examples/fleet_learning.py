"""A fleet that learns together, against nodes that learn alone and the frozen model.

Makes the figure of ``docs/fleet-learning.md`` (``docs/fleet-learning.svg``) and prints what it
measured as JSON lines. Five nodes, each an int8 :class:`~edge_agent.core.agents.AifAgentGroup`
of ``--agents`` agents (in one process, no broker), walk
:class:`~edge_agent.sim.grid_slippery.SlipperyGridEnv` (10 x 10: moves slip one time in five and a
2 x 2 inner wall stands where the shipped model, the plain grid, has none), each node from its
own seed, so each sees the cells its few agents walk through. The runs share the seeds:

* ``frozen``: the shipped model, no learning;
* ``alone``: each node learns ``pB0`` (from ``10 * B`` plus ``0.5`` on "the move failed",
  :func:`prior_counts`, so that its agents start from about the shipped model; ``lr_pB =
  --lr``, tables refreshed every 10 ticks) and keeps its counts to itself;
* ``fleet``: the same learning, and every ``--round`` ticks (a round) each node's increments
  since its last report are taken (``take_increments``), made into the messages the daemon
  sends (:func:`~edge_agent.fleet.learning_deltas.learning_deltas`, encoded and decoded as
  envelopes), checked as the hub checks them (``learning.checks.check_tables``) and merged by
  the hub's own ``learning.merge.merge_round`` (its default settings: cap 0.25 per column plus
  5 % of the column's prior mass, leave-one-out score at 5 MADs). Every node then goes on from
  the fleet's counts and nothing else (its counts replaced by the merged ones and its tables
  refreshed from them, as a node that deploys the round's version starts from its counts);
* ``poisoned``: the fleet run with a sixth node whose agents walk the same world but whose
  deltas move every column's mass onto "the move failed" (``s' = s``): as much mass as honest
  experience gives, so the ingestion checks pass it; the merge's score refuses it (counted);
  its curve is the five honest nodes' score.

The score is the world's: goals reached per agent-tick in a round (the ``score`` health measure
of :class:`~edge_agent.sim.gridworld.GridWorldEnv` is goals reached), over the five honest
nodes, averaged over ``--fleets`` fleets of five (each its own seeds; the poisoned node's
refusals are counted over all of them); one round's is noisy, so the curves and the target
take the mean of the last :data:`WINDOW` rounds. ``agent_ticks_to_target`` is the agent-ticks
one node had spent (``agents * ticks``) at the end of the first full window whose mean reached
``--target`` (``null``: none in the run); ``agent_ticks_to_stay`` the same for the window
from which every window to the end of the run is at the target (a noisy early spike does not
count there). The fleet as a whole spent five times that.

The world is grid-slippery and not the reversal T-maze because its truth does not change over
time: counts from every node estimate the same ``B``, so their sum is a better estimate than
any node's own. In the reversal T-maze the rewarded arm swaps: what a fleet should do there is
forget, not pool. The figure is a plain SVG written here (no plotting library needed).

    python examples/fleet_learning.py [--out docs/fleet-learning.svg] [--agents 10]
        [--rounds 40] [--round 20] [--lr 0.05] [--target 0.078] [--fleets 1] [--smoke]

``--smoke``: one fleet, 3 agents a node on a 5 x 5 grid, 3 rounds of 6 ticks: the code path,
for the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the hub's merge
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.fleet.learning_deltas import learning_deltas
from edge_agent.fleet.protocol import DEFAULT_MAX_BYTES, Envelope, LearningDelta, decode, encode
from edge_agent.sim.grid_slippery import DEFAULT_BLOCKED, SlipperyGridEnv
from edge_agent_host.hub.learning.checks import check_tables, dense_increments
from edge_agent_host.hub.learning.merge import MergeSettings, merge_round

CONDITIONS = ("frozen", "alone", "fleet", "poisoned")
COLOURS = {"frozen": "#888888", "alone": "#1f77b4", "fleet": "#d62728", "poisoned": "#ff9f1c"}
NODES = 5
TABLE = "B0"
MOVES = 5  # the grid's actions: B0's last axis
REFRESH_EVERY = 10
MODEL = "grid-slippery@edge-agent-example"
#: Rounds a score is averaged over (the curves and the target: one round's is noisy).
WINDOW = 5


@dataclass
class Node:
    """One node: its agents, their world, and what it reported."""

    name: str
    group: AifAgentGroup
    env: SlipperyGridEnv
    poisoned: bool = False
    obs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seq: int = 1


def prior_counts(B: np.ndarray) -> np.ndarray:
    """``pB0`` the nodes start from: confident in the plain grid (``10 * B``), with room for a
    move that fails (``0.5`` on ``s' = s``: a slip or a wall), and none for anything else."""
    out: np.ndarray = 10.0 * B
    states = np.arange(B.shape[0])
    out[states, states, :] += 0.5
    return out


def make_node(
    i: int,
    condition: str,
    agents: int,
    lr: float,
    *,
    poisoned: bool = False,
    size: int = 10,
    fleet: int = 0,
) -> Node:
    """Node ``i`` of fleet ``fleet`` (its seeds) in ``condition``: ``agents`` agents on a
    ``size`` x ``size`` slippery grid (the default walls on 10 x 10, the middle cell on a
    smaller one)."""
    blocked = DEFAULT_BLOCKED if size == 10 else ((size // 2, size // 2),)
    seed = i + 1000 * fleet
    env = SlipperyGridEnv(agents, seed=100 + seed, height=size, width=size, blocked=blocked)
    model = env.model
    if condition == "frozen":
        group = AifAgentGroup(model, agents, precision="int8", seed=seed)
    else:
        spec = LearningSpec(
            pB={0: prior_counts(model.B[0])},
            settings=LearningSettings(lr_pB=lr),
            refresh_every=REFRESH_EVERY,
        )
        group = AifAgentGroup(model, agents, learning=spec, precision="int8", seed=seed)
    node = Node(f"node-{i}", group, env, poisoned)
    node.obs = env.reset()
    return node


def step_round(node: Node, ticks: int) -> int:
    """``ticks`` ticks of ``node``; the goals its agents reached."""
    before = int(node.env.goals_reached.sum())
    for _ in range(ticks):
        if node.env.episode_start.any():
            node.group.reset(node.env.episode_start)
        node.obs = node.env.step(node.group.step(node.obs))
    return int(node.env.goals_reached.sum()) - before


def report(node: Node) -> list[LearningDelta]:
    """What the node's daemon would send for its increments since its last report, through the
    wire format (encoded and decoded as the hub receives it); a poisoned node moves each
    column's mass onto its own state (every move failed)."""
    tables = node.group.learning.take_increments()
    if node.poisoned:
        tables = [t._replace(values=poison(t.columns, t.values)) for t in tables]
    deltas = learning_deltas(
        "grid", MODEL, "0" * 64, tables, next_seq=node.seq, max_payload_bytes=DEFAULT_MAX_BYTES
    )
    node.seq += len(deltas)
    out = []
    for d in deltas:
        env = Envelope(
            type=LearningDelta.TYPE,
            node=node.name,
            seq=0,
            bdseq=0,
            ts=0.0,
            clock_synced=False,
            body=d,
        )
        body = decode(encode(env)).body
        assert isinstance(body, LearningDelta)
        out.append(body)
    return out


def poison(columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values (k, S)`` of ``B0``'s columns ``(s, u)`` (C order: ``s * U + u``) with each
    column's mass on ``s' = s``."""
    out = np.zeros_like(values)
    states = columns.astype(np.int64) // MOVES
    out[np.arange(len(columns)), states] = values.sum(axis=1)
    return out


def hub_round(
    nodes: list[Node], base: np.ndarray, current: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The hub's side of a round: each node's deltas checked and summed, then merged."""
    shapes = {TABLE: shape}
    stacked = np.zeros((len(nodes), shape[0], int(np.prod(shape[1:]))))
    refused_at_ingest = 0
    experience = 0
    for i, node in enumerate(nodes):
        for delta in report(node):
            if check_tables(delta.tables, shapes) is not None:
                refused_at_ingest += 1
                continue
            stacked[i] += dense_increments(delta.tables, shapes)[TABLE]
            experience += sum(t.experience for t in delta.tables)
    result = merge_round(
        {TABLE: base},
        {TABLE: current},
        {TABLE: stacked.reshape(len(nodes), *shape)},
        MergeSettings(),
    )
    return result.counts[TABLE], {
        "refused_at_ingest": refused_at_ingest,
        "refused": [n.name for n, r in zip(nodes, result.refused, strict=True) if r],
        "capped": [n.name for n, c in zip(nodes, result.capped, strict=True) if c],
        "experience": experience,
        "merged_mass": float(stacked.sum()),  # what the nodes sent
        "accepted_mass": float(result.mass.sum()),
    }


def adopt(node: Node, counts: np.ndarray) -> None:
    """The node goes on from the fleet's counts and nothing else."""
    pB = node.group.learning.learner.pB
    assert pB is not None
    pB.restore(0, counts)
    node.group.learning.refresh()


def run_condition(condition: str, args: argparse.Namespace) -> dict[str, Any]:
    """``args.fleets`` fleets of ``condition`` (each its own seeds): their scores averaged, their
    rounds listed one after the other, their merged mass summed."""
    runs = [run_fleet(condition, args, f) for f in range(args.fleets)]
    out: dict[str, Any] = {"scores": np.mean([r["scores"] for r in runs], axis=0)}
    if "rounds" in runs[0]:
        out["rounds"] = [info for r in runs for info in r["rounds"]]
        out["fleet_mass"] = sum(r["fleet_mass"] for r in runs)
    return out


def run_fleet(condition: str, args: argparse.Namespace, fleet: int) -> dict[str, Any]:
    honest = [
        make_node(i, condition, args.agents, args.lr, size=args.size, fleet=fleet)
        for i in range(NODES)
    ]
    nodes = honest + (
        [
            make_node(
                NODES, condition, args.agents, args.lr, poisoned=True, size=args.size, fleet=fleet
            )
        ]
        if condition == "poisoned"
        else []
    )
    shape = tuple(honest[0].env.model.B[0].shape)
    base = prior_counts(honest[0].env.model.B[0])
    current = base
    scores, rounds = [], []
    for _ in range(args.rounds):
        goals = sum(step_round(n, args.round) for n in nodes[:NODES])
        for n in nodes[NODES:]:
            step_round(n, args.round)
        scores.append(goals / (NODES * args.agents * args.round))
        if condition in ("fleet", "poisoned"):
            current, info = hub_round(nodes, base, current, shape)
            for n in nodes:
                adopt(n, current)
            rounds.append(info)
    out: dict[str, Any] = {"scores": np.array(scores)}
    if rounds:
        out["rounds"] = rounds
        out["fleet_mass"] = float(current.sum() - base.sum())
    return out


def trailing_mean(scores: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Each round's mean score over it and the ``window - 1`` rounds before (fewer at the
    start)."""
    sums = np.cumsum(np.concatenate([[0.0], scores]))
    ends = np.arange(1, len(scores) + 1)
    starts = np.maximum(ends - window, 0)
    out: np.ndarray = (sums[ends] - sums[starts]) / (ends - starts)
    return out


def ticks_to_target(
    scores: np.ndarray, target: float, per_round: int, window: int = WINDOW
) -> int | None:
    """Agent-ticks of one node until the end of the first full window of ``window`` rounds
    whose mean score reached ``target`` (None: none did)."""
    means = trailing_mean(scores, window)[window - 1 :]
    hit = np.flatnonzero(means >= target)
    return None if hit.size == 0 else int(hit[0] + window) * per_round


def ticks_to_stay(
    scores: np.ndarray, target: float, per_round: int, window: int = WINDOW
) -> int | None:
    """Agent-ticks of one node at the end of the full window from which every window's mean
    is at least ``target`` to the end of the run (None: the last one is below it)."""
    means = trailing_mean(scores, window)[window - 1 :]
    below = np.flatnonzero(means < target)
    if below.size and below[-1] == len(means) - 1:
        return None
    first = int(below[-1]) + 1 if below.size else 0
    return (first + window) * per_round


def svg(series: dict[str, np.ndarray], target: float, per_round: int, title: str) -> str:
    """A line chart of the score per round, the target as a dashed line."""
    width, height, left, right, top, bottom = 720, 360, 60, 150, 40, 50
    rounds = len(next(iter(series.values())))
    y_max = float(np.ceil(max(target, *(float(s.max()) for s in series.values())) * 50) / 50)

    def x(r: float) -> float:
        return left + (width - left - right) * r / max(1, rounds - 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (y_max - v) / y_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for tick in np.linspace(0.0, y_max, 6):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}" stroke="#eeeeee"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.3f}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(target):.1f}" '
        f'y2="{y(target):.1f}" stroke="#333333" stroke-dasharray="4 3"/>'
    )
    for r in range(0, rounds, max(1, rounds // 6)):
        parts.append(
            f'<text x="{x(r):.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{(r + 1) * per_round}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
        'text-anchor="middle">agent-ticks per node (dashed: the target score)</text>'
    )
    parts.append(
        f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + height - bottom) / 2})">'
        f"goals per agent-tick (mean of {WINDOW} rounds)</text>"
    )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#333333"/>'
    )
    for i, (name, scores) in enumerate(series.items()):
        points = " ".join(f"{x(r):.1f},{y(float(v)):.1f}" for r, v in enumerate(scores))
        parts.append(
            f'<polyline class="series" data-name="{name}" fill="none" '
            f'stroke="{COLOURS[name]}" stroke-width="1.8" points="{points}"/>'
        )
        ly = top + 16 + 20 * i
        parts.append(
            f'<line x1="{width - right + 12}" x2="{width - right + 36}" y1="{ly}" '
            f'y2="{ly}" stroke="{COLOURS[name]}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 42}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results = {name: run_condition(name, args) for name in CONDITIONS}
    per_round = args.agents * args.round
    title = (
        f"Slippery grid {args.size} x {args.size}, {NODES} nodes of {args.agents} agents: "
        f"lr_pB {args.lr:g}, a round every {args.round} ticks"
    )
    Path(args.out).write_text(
        svg(
            {k: trailing_mean(v["scores"]) for k, v in results.items()},
            args.target,
            per_round,
            title,
        ),
        encoding="utf-8",
    )
    records = {}
    for name, res in results.items():
        scores = res["scores"]
        record: dict[str, Any] = {
            "bench": "fleet-learning",
            "condition": name,
            "nodes": NODES,
            "agents": args.agents,
            "size": args.size,
            "fleets": args.fleets,
            "rounds": args.rounds,
            "round_ticks": args.round,
            "target": args.target,
            "scores": [round(float(s), 4) for s in scores],
            "window_rounds": WINDOW,
            "mean_score_last_quarter": round(float(scores[-max(1, len(scores) // 4) :].mean()), 4),
            "agent_ticks_to_target": ticks_to_target(scores, args.target, per_round),
            "agent_ticks_to_stay": ticks_to_stay(scores, args.target, per_round),
        }
        if "rounds" in res:
            rounds = res["rounds"]
            record["refused_rounds"] = {
                n: sum(n in r["refused"] for r in rounds)
                for n in sorted({n for r in rounds for n in r["refused"]})
            }
            record["capped_rounds"] = {
                n: sum(n in r["capped"] for r in rounds)
                for n in sorted({n for r in rounds for n in r["capped"]})
            }
            record["refused_at_ingest"] = sum(r["refused_at_ingest"] for r in rounds)
            record["accepted_mass"] = round(sum(r["accepted_mass"] for r in rounds), 4)
            record["sent_mass"] = round(sum(r["merged_mass"] for r in rounds), 4)
            record["experience"] = sum(r["experience"] for r in rounds)
            record["fleet_mass"] = round(res["fleet_mass"], 4)
        records[name] = record
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="docs/fleet-learning.svg", help="the SVG to write")
    parser.add_argument("--agents", type=int, default=10, help="agents per node")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--round", type=int, default=20, help="ticks per round")
    parser.add_argument("--lr", type=float, default=0.05, help="lr_pB")
    parser.add_argument(
        "--target", type=float, default=0.078, help="the score (goals per agent-tick) to reach"
    )
    parser.add_argument("--size", type=int, default=10, help="the grid's side")
    parser.add_argument(
        "--fleets",
        type=int,
        default=3,
        help="fleets of five nodes (seed sets) the scores are averaged over",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run, for the tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.agents, args.rounds, args.round, args.size, args.fleets = 3, 3, 6, 5, 1
    for record in run(args).values():
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
