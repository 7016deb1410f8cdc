"""Learning deltas benchmark: the bytes a learning group's reports put on the wire per hour.

For the learning worlds (the reversal T-maze learning its reward modality ``pA1``; grid10
learning its moves ``pB0``) with shared and per-agent counts, an
:class:`~edge_agent.core.agents.AifAgentGroup` learns in a closed loop with its world; every
``--report-ticks`` ticks (a report period: ``report_every_s`` at ``--hz``) what it learned is
taken as the daemon takes it (:meth:`~edge_agent.core.learning.GroupLearning.take_increments`) and
made into :class:`~edge_agent.fleet.protocol.LearningDelta` messages as the daemon makes them
(:func:`~edge_agent.fleet.learning_deltas.learning_deltas`), each encoded in its envelope as the
link sends it. One JSON object per line (``"bench": "learning-deltas"``):

* ``bytes_per_report``: the mean over ``--reports`` reports of the encoded bytes of one
  report's messages (payloads; MQTT adds its fixed header and the topic, ~50 bytes a message);
  ``messages_per_report``, ``columns_per_report`` (the columns that moved, of ``columns``),
  ``nonzero_per_report`` (their values not 0; a part sparse within its columns sends 8 bytes
  for each, a dense one 4 for every value of its columns);
* ``bytes_per_hour`` at ``report_every_s`` = ``report_ticks / hz``;
* ``bound_bytes_per_report``: the most one report can be, every column of every learned table
  moved (the bound ``docs/fleet-learning.md`` states: ``4 (rows + 1)`` bytes a column plus the
  envelope), and ``bound_bytes_per_hour``; neither depends on the number of agents (the
  increments are summed over the agents before they are sent);
* ``take_ms``, ``encode_ms``: what one report costs the node (the increments taken, sparse by
  column; the messages made and encoded), the median over the reports.

    python benchmarks/bench_learning_deltas.py [--smoke] [--agents 100,1000] [--hz 10]
        [--report-ticks 600] [--reports 3]

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

#: (world, learned table, its learning rate): the learning worlds of bench_learning_peers.py.
CASES = (("tmaze", "A1", 0.05), ("grid10", "B0", 0.1))
SCOPES = ("shared", "per_agent")


def measure(  # noqa: PLR0917 - one row's whole description
    world: str, table: str, lr: float, scope: str, n: int, report_ticks: int, reports: int,
    hz: float,
) -> dict[str, Any]:
    import numpy as np

    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.core.agents import AifAgentGroup
    from edge_agent.fleet.learning_deltas import ENVELOPE_BYTES, learning_deltas
    from edge_agent.fleet.protocol import DEFAULT_MAX_BYTES, Envelope, encode
    from edge_agent.sim.registry import make_env
    from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv

    env = ReversalTMazeEnv(n, seed=0) if world == "tmaze" else make_env(world, n, seed=0)
    model = env.model
    kind, index = table[0], int(table[1:])
    prior = (model.A if kind == "A" else model.B)[index]
    counts = {index: prior * 2.0 + 0.5 * (prior > 0)}
    settings = LearningSettings(
        lr_pA=lr, lr_pB=lr, scope=scope,  # type: ignore[arg-type]
    )
    spec = LearningSpec(pA=counts if kind == "A" else {}, pB=counts if kind == "B" else {},
                        settings=settings, refresh_every=10)
    precision = "float64" if scope == "per_agent" else "int8"
    group = AifAgentGroup(model, n, learning=spec, precision=precision)  # type: ignore[arg-type]
    obs = env.reset()
    sizes, messages, moved, nonzero, take_ms, encode_ms = [], [], [], [], [], []
    seq = 1
    for _ in range(reports):
        for _ in range(report_ticks):
            starts = getattr(env, "episode_start", None)
            if starts is not None and starts.any():
                group.reset(starts)
            obs = env.step(group.step(obs))
        t0 = time.perf_counter()
        tables = group.learning.take_increments()
        t1 = time.perf_counter()
        deltas = learning_deltas("g", f"{world}@1", "ab" * 32, tables, next_seq=seq,
                                 max_payload_bytes=DEFAULT_MAX_BYTES)
        payloads = [
            encode(Envelope(type="learning", node="pi-0001", seq=d.seq, bdseq=1,
                            ts=time.time(), clock_synced=True, body=d))
            for d in deltas
        ]
        t2 = time.perf_counter()
        seq += len(deltas)
        sizes.append(sum(len(p) for p in payloads))
        messages.append(len(payloads))
        moved.append(sum(len(t.columns) for t in tables))
        nonzero.append(sum(int(np.count_nonzero(t.values)) for t in tables))
        take_ms.append((t1 - t0) * 1e3)
        encode_ms.append((t2 - t1) * 1e3)
    rows = prior.shape[0]
    columns = int(np.prod(prior.shape[1:]))
    bound = 4 * (rows + 1) * columns + ENVELOPE_BYTES
    per_hour = 3600.0 * hz / report_ticks
    mean = statistics.fmean(sizes)
    return {
        "bench": "learning-deltas", "world": world, "learned": table, "scope": scope,
        "agents": n, "hz": hz, "report_ticks": report_ticks,
        "report_every_s": round(report_ticks / hz, 3), "reports": reports,
        "bytes_per_report": round(mean), "messages_per_report": statistics.fmean(messages),
        "columns_per_report": statistics.fmean(moved), "columns": columns,
        "nonzero_per_report": statistics.fmean(nonzero),
        "bytes_per_hour": round(mean * per_hour),
        "bound_bytes_per_report": bound, "bound_bytes_per_hour": round(bound * per_hour),
        "take_ms": round(statistics.median(take_ms), 3),
        "encode_ms": round(statistics.median(encode_ms), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (seconds)")
    parser.add_argument("--agents", default=None, help="comma-separated Ns (100,1000)")
    parser.add_argument("--hz", type=float, default=10.0, help="the tick rate (10)")
    parser.add_argument("--report-ticks", type=int, default=None,
                        help="ticks between two reports (600: report_every_s 60 at 10 Hz)")
    parser.add_argument("--reports", type=int, default=None, help="reports measured (3)")
    args = parser.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported (lazily, above)
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(REPO))
    agents = [int(a) for a in (args.agents or ("10" if args.smoke else "100,1000")).split(",")]
    report_ticks = args.report_ticks or (5 if args.smoke else 600)
    reports = args.reports or (1 if args.smoke else 3)
    for world, table, lr in CASES:
        for scope in SCOPES:
            for n in agents:
                row = measure(world, table, lr, scope, n, report_ticks, reports, args.hz)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
