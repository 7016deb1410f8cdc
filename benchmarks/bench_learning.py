"""Learning benchmark: what shared-scope Dirichlet learning costs a group's tick.

For each world and agent count, two int8 groups step side by side in one process, in
alternating rounds, on the same observations from the world: an
:class:`~edge_agent.core.agents.AifAgentGroup` on the model the learning group currently infers
with (so both plan with the same tables: a learned ``B`` is denser than a deterministic one,
which changes the planner), and one built with ``learning=`` that learns ``pA`` (and ``pB``
where the row says so) and refreshes its tables every ``refresh_every`` ticks (a group of at
most 128 agents learns a few ticks at a time: ``edge_agent/aif/learning_experience.py``, with
the same counts). The plain group is made
again at the start of every round, on the learning group's tables and beliefs of that moment,
so that both rounds start from the same state and do the same inference and planning work.
One JSON object per line:

* ``plain_agent_steps_per_s``, ``learning_agent_steps_per_s``: agents x ticks / wall time, the
  median over rounds; ``ratio``: the median over rounds of learning time / plain time (the
  target is <= 1.25 for a shared-scope learning step);
* ``refresh_ms``: one refresh after 20 ticks' worth of count updates (the touched columns
  brought into the compiled tables; a learned ``B``'s columns that moved come in with what its
  transitions give, without a compile past its first refresh), the median of a few; its cost
  per tick is ``refresh_ms / refresh_every`` and is included in the learning time;
* ``learner_bytes``: the counts, their prior, masks and deltas (one model's worth, whatever N);
* with ``--count-ops TICKS``: ``plain_numpy_calls``, ``learning_numpy_calls``, the numpy calls
  of one tick of each group (``benchmarks/peers/opcount.py``, the mean over TICKS ticks that do
  not refresh; exact, whatever the machine).

The process runs one thread (``OPENBLAS_NUM_THREADS=1`` is set before numpy is imported).

    python benchmarks/bench_learning.py [--smoke] [--agents 1,1000,10000] [--rounds 5]
        [--count-ops TICKS] [--cases tmaze-A1-every-1,grid-slippery-B0-every-1-dense]

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
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]

class Case(NamedTuple):
    """One row's setting: the world, the tables it learns, how often they follow the counts,
    the learning rate, and where the prior puts counts (``support``: twice the table plus 0.5
    on its support; ``dense``: plus 0.5 on every entry, so a learned ``B`` becomes a dense
    table that normalises to another one at every update; ``reach``: plus 0.5 on every target
    some action reaches from the column's state, a learner that does not know where its moves
    take it: a sparse ``B`` whose touched columns move within that support)."""

    world: str
    tables: tuple[str, ...]
    refresh_every: int
    lr: float
    prior: str = "support"

    @property
    def name(self) -> str:
        """``grid10-B0-every-1``: what ``--cases`` names a case by (``-dense``, ``-reach``: that
        prior)."""
        prior = "" if self.prior == "support" else f"-{self.prior}"
        return f"{self.world}-{''.join(self.tables)}-every-{self.refresh_every}{prior}"


#: The T-maze learns its reward modality; the grid its observation model and its transitions.
#: The last four are the shared rows at pymdp's cadence: the tables follow the counts every
#: tick, learning rate 1 (the T-maze its reward modality, grid10 its transitions; then the
#: slippery grid's transitions from a prior on every entry: each refresh moves the columns the
#: agents' moves touched, which come into the compiled tables without a compile; then grid10's
#: from a prior on every target a move reaches: a sparse B whose moved columns keep their
#: support, refreshed by their weights alone).
CASES = (
    Case("tmaze", ("A1",), 100, 0.01),
    Case("grid10", ("A0",), 100, 0.01),
    Case("grid10", ("A0", "B0"), 100, 0.01),
    Case("tmaze", ("A1",), 1, 1.0),
    Case("grid10", ("B0",), 1, 1.0),
    Case("grid-slippery", ("B0",), 1, 1.0, "dense"),
    Case("grid10", ("B0",), 1, 1.0, "reach"),
)


def counts_for(model: Any, tables: tuple[str, ...], prior: str) -> dict[str, dict[int, Any]]:
    """Weak counts for the named tables: twice the table plus 0.5 on its support (``prior``
    ``support``), on every entry (``dense``) or, for a ``B``, on every target some action
    reaches from the column's state (``reach``)."""
    out: dict[str, dict[int, Any]] = {"A": {}, "B": {}}
    for name in tables:
        kind, index = name[0], int(name[1:])
        table = (model.A if kind == "A" else model.B)[index]
        where: Any = {"support": table > 0, "dense": 1.0}.get(prior)
        if prior == "reach":
            where = table.sum(axis=2, keepdims=True) > 0  # (S, S, 1): every action's column
        out[kind][index] = table * 2.0 + 0.5 * where
    return out


def measure(case: Case, n: int, ticks: int, rounds: int, count_ops: int = 0) -> dict[str, Any]:
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.sim.registry import builtin_model, make_env

    world, tables, lr = case.world, case.tables, case.lr
    refresh_every = min(case.refresh_every, ticks)
    model = builtin_model(world)
    counts = counts_for(model, tables, case.prior)
    spec = LearningSpec(pA=counts["A"], pB=counts["B"], refresh_every=refresh_every,
                        settings=LearningSettings(lr_pA=lr, lr_pB=lr))
    learning = AifAgentGroup(model, n, learning=spec, precision="int8")
    env = make_env(world, n, seed=0)
    # Observations from the world, walked by the learning group once (warm-up, learning on).
    obs_seq = []
    obs = env.reset()
    for _ in range(ticks):
        obs_seq.append(obs.copy())
        obs = env.step(learning.step(obs))
    learning.learning.refresh()
    times: dict[str, list[float]] = {"plain": [], "learning": []}
    for _ in range(rounds):
        # The plain group infers with the tables the learning group infers with now and starts
        # from its beliefs: the two rounds do the same inference and planning work (up to the
        # learning group's refreshes within the round), and differ by the learning.
        state = {k: v.copy() for k, v in learning.state_dict().items()}
        plain = AifAgentGroup(learning.learning.model, n, precision="int8")
        plain.step(obs_seq[0])  # its first step's one-off costs, outside the timing
        plain.load_state_dict(state)
        for name, group in (("plain", plain), ("learning", learning)):
            start = time.perf_counter()
            for o in obs_seq:
                group.step(o)
            times[name].append(time.perf_counter() - start)
    refresh = []
    for _ in range(3):
        # What a refresh brings in: the counts moved by 20 ticks' worth of updates (B: from
        # each tick's posteriors to themselves, under the actions the agents last took).
        for o in obs_seq[:20]:
            learning.learning.learner.learn_A(o, learning.qs)
            learning.learning.learner.learn_B(learning.qs, learning.qs, learning.action)
        start = time.perf_counter()
        learning.learning.refresh()
        _ = learning.cm  # the group takes the refreshed tables (as its next tick would)
        refresh.append(time.perf_counter() - start)
    ratios = [lt / pt for lt, pt in zip(times["learning"], times["plain"], strict=True)]
    steps = n * len(obs_seq)
    ops: dict[str, Any] = {}
    if count_ops:  # after the timings: the counting wrappers slow every call down
        sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
        from opcount import count_numpy_calls

        learning.learning.refresh()  # the counted ticks do not refresh (refresh_every >= count_ops)
        ops["plain_numpy_calls"] = round(count_numpy_calls(
            lambda: plain.step(obs_seq[0]), repeats=count_ops)[0], 1)
        ops["learning_numpy_calls"] = round(count_numpy_calls(
            lambda: learning.step(obs_seq[0]), repeats=count_ops)[0], 1)
    return {
        "bench": "learning",
        "world": world,
        "tables": list(tables),
        "learned": "+".join(tables),
        "scope": "shared",
        "prior": case.prior,
        "refresh_every": refresh_every,
        "lr": lr,
        "agents": n,
        "ticks": len(obs_seq),
        "plain_agent_steps_per_s": round(steps / statistics.median(times["plain"])),
        "learning_agent_steps_per_s": round(steps / statistics.median(times["learning"])),
        "ratio": round(statistics.median(ratios), 3),
        "refresh_ms": round(1e3 * statistics.median(refresh), 2),
        "learner_bytes": learning.learning.learner.nbytes,
        **ops,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (seconds)")
    parser.add_argument("--agents", default=None, help="comma-separated Ns (1,1000,10000)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks per round (200)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (5)")
    parser.add_argument("--count-ops", type=int, default=0, metavar="TICKS",
                        help="after the timings, count the numpy calls of TICKS ticks of each "
                             "group (a tick that does not refresh; 0: do not count)")
    parser.add_argument("--cases", default=None,
                        help="comma-separated cases (all): "
                             + ", ".join(case.name for case in CASES))
    args = parser.parse_args(argv)
    names = [case.name for case in CASES]
    chosen = names if args.cases is None else [c for c in args.cases.split(",") if c]
    for name in chosen:
        if name not in names:
            parser.error(f"unknown case {name!r} (choose from {', '.join(names)})")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported (lazily, above)
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(REPO))
    agents = [int(a) for a in (args.agents or ("1,20" if args.smoke else "1,1000,10000"))
              .split(",")]
    ticks = args.ticks or (10 if args.smoke else 200)
    rounds = args.rounds or (1 if args.smoke else 5)
    for case in CASES:
        if case.name not in chosen:
            continue
        for n in agents:
            print(json.dumps(measure(case, n, ticks, rounds, args.count_ops)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
