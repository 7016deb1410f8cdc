"""A/B of the team award's assignment search in one process: the harness's 20 x 500 team
formation (ab_coordination_merge.py's ``formation``, the same seed) with every
:class:`~edge_agent.coordination.assignment.Assignment` searching in Python and in the compiled
library, alternated ``--rounds`` times; thread CPU per node of the assignment's methods, the
ledger's award and merge methods and the nodes' whole ticks (the formation check's ``teams()``
calls on copies of the boards kept out of the timers), and every node's final digest, teams and
award compared between the two. Only the assignment's path differs: the agents' tick path is
pinned on both sides (``ab_coordination_merge.pin_tick_path``: a choice timed when each group
is made could otherwise flip under load, and the two paths agree only up to rounding, which a
near tie between bids turns into another award). Not a stored benchmark: the
thirteenth pass's table in benchmarks/notes/coordination.md.

    python benchmarks/ab_coordination_assignment.py [--nodes 20] [--agents 500] [--rounds 3]
        [--seed 5] [--warm 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab_coordination_merge as ab

from edge_agent.coordination import assignment

ab.PARTS.extend(
    [
        (assignment.Assignment, "add_slots"),
        (assignment.Assignment, "add"),
        (assignment.Assignment, "_search"),
    ]
)


@contextlib.contextmanager
def python_search() -> Iterator[None]:
    """Every Assignment made inside searches in Python (as with no compiler)."""
    saved = assignment._compiled
    assignment._compiled = lambda library: None
    try:
        yield
    finally:
        assignment._compiled = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warm",
        type=int,
        default=3,
        help="ticks before the announcement (bench_formation_cpu: 13)",
    )
    args = parser.parse_args()
    if assignment.unavailable() is not None:
        raise SystemExit(f"no compiled assignment: {assignment.unavailable()}")
    ab.pin_tick_path()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            results: dict[str, Any] = {}
            for which in ("python", "compiled") if r % 2 == 0 else ("compiled", "python"):
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                sub = Path(tmp) / f"{which}{r}"
                with python_search() if which == "python" else contextlib.nullcontext():
                    row = ab.formation(
                        sub, args.nodes, args.agents, args.tasks, args.seed, warm=args.warm
                    )
                results[which] = row.pop("result")
                print(json.dumps({"round": r, "search": which, "load": load, **row}), flush=True)
            if results["python"] != results["compiled"]:
                raise SystemExit("the Python and the compiled search's ledgers differ")
    with open("/proc/loadavg") as f:
        print("load", f.read().split()[:3])


if __name__ == "__main__":
    main()
