"""A/B of a node's formation CPU by part, in one process: the harness's 20 x 500 team formation
(bench_coordination_teams.py's ``team_formation_cpu``, the same seed) with the ledger's holders
made as before the batch (tests/support/old_merge.py) and as now, alternated ``--rounds``
times; thread CPU (``time.thread_time``) around the ledger's merge and award methods, per node,
and every node's final award and digest compared between the two. Not a stored benchmark: the
twelfth pass's table in benchmarks/notes/coordination.md.

    python benchmarks/ab_coordination_merge.py [--nodes 20] [--agents 500] [--rounds 3]
        [--warm 3] [--against old|main13|main14|main]

``--against main``: the other side is main before the sixteenth pass (``main15_merge``: a bid
table a task, tests/support/main15); ``--against main14``: main after the fourteenth pass (f08b930d,
``main14_merge``: a table's row replaced or dropped has the digest hash its whole table again,
the team award's rows made a task and a role at a time); ``--against main13``: main's bid
admission and merge before the fourteenth pass (``main_merge``: a table call a task, the digest
hashing new rows later, three calls a task in the admission); the default, the merge before the
twelfth (``old_merge``).

The agents' tick path is pinned (:func:`pin_tick_path`) so that both sides step the same
arithmetic: a group otherwise times its compiled tick against numpy when it is made and keeps
the faster, a choice a loaded machine can flip between two formations, and the two paths agree
only up to rounding, which a near tie between two agents' bids turns into another award.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_coordination_teams as teams

from edge_agent.coordination import (
    auction,
    board_state,
    engine,
    engine_io,
    ledger,
    relay_admission,
)
from edge_agent.core.native_pass import NATIVE_ENV
from tests.support.main15 import board_state as main15_board_state
from tests.support.main15 import ledger as main15_ledger
from tests.support.old_merge import main14_merge, main15_merge, main_merge, old_merge

PARTS: list[tuple[Any, str]] = [
    (engine_io.EngineIO, "_on_bids"),
    (relay_admission.RelayAdmission, "admit_bids"),
    (ledger.TaskBoard, "add_bids"),
    (ledger.TaskBoard, "_holders_of"),
    (board_state.BoardState, "_new_holders"),
    (board_state.BoardState, "teams"),
    (board_state.BoardState, "_team_input"),
    (board_state.BoardState, "_role_bids"),
    (board_state.BoardState, "award"),
    (board_state.BoardState, "_team_view"),
    (board_state, "fill_recorded"),
    (board_state, "refill"),
    (board_state.BoardState, "digest"),
    (board_state.BoardState, "_bids_hashes"),
    (board_state.BoardState, "bid_by_all"),
    (board_state.BoardState, "holds_of"),
    (engine.CoordinationEngine, "_bid"),
    (engine.CoordinationEngine, "_act"),
    (relay_admission.RelayAdmission, "spec_signed"),
    (auction.Auctioneer, "_update_teams"),
]


def timed_parts() -> list[tuple[Any, str]]:
    """:data:`PARTS` where they are, here and in main's ledger before the sixteenth pass
    (tests/support/main15: the other side's boards), under the same labels."""
    twin = {board_state: main15_board_state, board_state.BoardState: main15_board_state.BoardState,
            ledger.TaskBoard: main15_ledger.TaskBoard}  # fmt: skip
    out = []
    for cls, name in PARTS:
        out += [(c, name) for c in (cls, twin.get(cls)) if c is not None and name in c.__dict__]
    return out


TIMING = [True]
"""Off while the formation is checked (on copies of the boards, outside the nodes' ticks)."""


def timed(acc: dict[str, float], label: str, f: Callable[..., Any]) -> Callable[..., Any]:
    depth = [0]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if depth[0] or not TIMING[0]:
            return f(*args, **kwargs)
        depth[0] += 1
        t0 = time.thread_time()
        try:
            return f(*args, **kwargs)
        finally:
            acc[label] += time.thread_time() - t0
            depth[0] -= 1

    return wrapper


def formation(
    root: Path, nodes: int, agents: int, tasks: int, seed: int, *, warm: int = 3
) -> dict[str, Any]:
    """``warm``: the fleet's ticks before the announcement (bench_formation_cpu ticks 3 + 10 idle:
    agents localised longer bid sharper costs, and the award's search is another instance)."""
    from tests.support.coordination_harness import TICK_S, GroupSpec, SimFleet

    acc: dict[str, float] = collections.defaultdict(float)
    saved = [(cls, name, cls.__dict__[name]) for cls, name in timed_parts()]
    settings = teams.CoordinationSettings(
        auction=teams.AuctionSettings(window_s=teams.WINDOW_S, done_belief=None),
        tick_period_s=TICK_S,
    )
    group = GroupSpec(teams.GRID, agents, capabilities=("grid",))
    fleet = SimFleet(root, nodes, {"grid": group}, settings)
    try:
        fleet.tick(warm)
        for cls, name, _f in saved:  # the labels read from the wrappers installed last
            label = f"{getattr(cls, '__qualname__', cls.__name__.rsplit('.', 1)[-1])}.{name}"
            setattr(cls, name, timed(acc, label, getattr(cls, name)))
        specs = teams.random_team_specs(tasks, 100, sizes=(2, 5), max_roles=3, seed=seed,
                                        capability="grid", announced_by="node0")  # fmt: skip
        fleet.nodes[0].engine.announce(specs)
        total = 0.0
        for tick in range(1, 81):  # noqa: B007 (the ticks it took, after the loop)
            for node in fleet.nodes:
                t0 = time.thread_time()
                node.tick()
                total += time.thread_time() - t0
            fleet.clock.now += TICK_S
            TIMING[0] = False
            formed = teams._formed(fleet, "teams", len(specs))
            TIMING[0] = True
            if formed:
                break
        else:
            raise SystemExit("no formation in 80 ticks")
        out = {k: round(v / nodes * 1e3, 2) for k, v in sorted(acc.items())}
        out["ticks (whole, with the idle agents)"] = round(total / nodes * 1e3, 2)
        boards = [n.engine.board for n in fleet.nodes]
        return {"ms_per_node": out, "ticks": tick,
                "result": [(b.digest(), b.teams(), b.award()) for b in boards]}  # fmt: skip
    finally:
        for cls, name, f in saved:
            setattr(cls, name, f)
        fleet.close()


def pin_tick_path() -> None:
    """Every group on one tick path, whatever the machine's load: the compiled tick where it
    can take the group (``EDGE_AGENT_NATIVE_TICK=1``), unless the caller's environment already
    chose; read when a group is made, so before the first formation."""
    os.environ.setdefault(NATIVE_ENV, "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=int, default=3, help="ticks before the announcement")
    parser.add_argument(
        "--against", choices=("old", "main13", "main14", "main"), default="old"
    )
    args = parser.parse_args()
    other = {"old": old_merge, "main13": main_merge, "main14": main14_merge,
             "main": main15_merge}[args.against]  # fmt: skip
    pin_tick_path()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            results = {}
            for which in ("old", "new"):
                sub = Path(tmp) / f"{which}{r}"
                if which == "old":
                    with other():
                        row = formation(sub, args.nodes, args.agents, args.tasks, args.seed,
                                        warm=args.warm)  # fmt: skip
                else:
                    row = formation(sub, args.nodes, args.agents, args.tasks, args.seed,
                                    warm=args.warm)  # fmt: skip
                results[which] = row.pop("result")
                side = which if which == "new" else args.against
                print(json.dumps({"round": r, "holders": side, **row}), flush=True)
            if results["old"] != results["new"]:
                raise SystemExit("the old and the new merge's ledgers differ")
    with open("/proc/loadavg") as f:
        print("load", f.read().split()[:3])


if __name__ == "__main__":
    main()
