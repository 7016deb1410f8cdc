"""Learning against pymdp 0.0.7.1 and 1.0.4: agent-steps/s with learning on, bytes per agent
of per-agent learning, and ticks to re-learn after a reversal.

Same tasks for everyone (``benchmarks/peers/learning.py`` says exactly what a tick is): the
reversal T-maze learning ``pA`` of its reward modality, and grid10 learning ``pB`` of its
moves; every implementation's agents receive the same observations, tick after
tick (drawn once from the world under random actions: open loop, so the inputs do not depend on
who acts). Each implementation runs in its own process on one thread (``OPENBLAS_NUM_THREADS=1``,
XLA without its thread pool), one after the other per case: edge-agent in this venv, the peers in
the venvs ``bench_peers.py`` makes under ``.cache/peers`` (``--no-install``: never make one).

* edge-agent: ``AifAgentGroup`` int8, ``learning=`` of scope ``shared`` (every agent teaches one
  set of counts: the peers have no such scope, their counts are per agent), tables refreshed
  every tick (``refresh 1``, the peers' cadence) and every 100 ticks (``refresh 100``); and
  per-agent ``learning=`` (``float64 per-agent``: each agent its own counts and tables, as the
  peers; ``vs_pymdp_104`` is its like-for-like ratio, ``vs_learning_off`` its rate over the
  same float64 group's without learning, ``float64 learning off``), up to N = 1,000;
* pymdp 0.0.7.1: one ``Agent`` per agent, ``update_A`` each tick, in a Python loop. Its rate does
  not depend on ``N`` (it steps agents one by one), so above ``--max-007`` agents it is measured
  on ``--max-007`` agents and marked ``"extrapolated": true``;
* pymdp 1.0.4: one ``Agent`` with ``batch_size=N``, ``infer_parameters`` each tick, the tick
  jitted (the first tick, the compilation, is reported apart). Not run above ``--max-104-bytes``
  of per-agent state times ``N`` (grid10's per-agent tables at N = 10,000 would take GBs of a
  shared machine): marked ``"skipped"``.

Memory, ``state_bytes_per_agent``: what each agent's learning state holds in arrays (pymdp
0.0.7.1: every array of one ``Agent``; pymdp 1.0.4: every array leaf of the batched agent over
N; edge-agent, on every edge row: what a group learning per agent reserves per agent, its state
with its own learned table, and its float64 counts).

The reversal: ``examples/learning_reversal.py`` (frozen, learning, learning with forgetting),
whose ``ticks_to_relearn`` are printed as they are.

    python benchmarks/bench_learning_peers.py [--agents 1,1000,10000] [--seconds 1]
        [--repeats 3] [--no-install] [--per-agent-only] [--no-reversal] [--smoke]

``--per-agent-only``: the per-agent rows, learning off and the peers (no shared int8 rows);
``--no-reversal``: without the reversal runs.

``--smoke``: edge-agent only, N = 1 and 20, short runs, the reversal at its smoke size: the code
path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import bench_peers  # noqa: E402

WORKER = REPO / "benchmarks" / "peers" / "learning.py"
REVERSAL = REPO / "examples" / "learning_reversal.py"
#: (world, learned table: ``A`` or ``B``, its modality or factor) and the ticks of observations
#: every implementation cycles through.
WORLDS = (("tmaze", "A", 1), ("grid10", "B", 0))
TICKS = 20
EDGE = (("edge-agent int8 refresh 1", 1), ("edge-agent int8 refresh 100", 100))
PER_AGENT = "edge-agent float64 per-agent"
LEARNING_OFF = "edge-agent float64 learning off"
#: The per-agent group (float64, each agent's own tables) runs up to this many agents.
PER_AGENT_MAX = 1000


def write_workload(world: str, kind: str, index: int, n: int, path: Path) -> None:
    from edge_agent.sim.registry import make_env
    from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv

    env = ReversalTMazeEnv(n, seed=0) if world == "tmaze" else make_env(world, n, seed=0)
    model = env.model
    rng = np.random.default_rng(0)
    obs = [env.reset().copy()]
    for _ in range(TICKS - 1):
        actions = np.stack([rng.integers(0, u, n) for u in model.num_controls], axis=1)
        obs.append(env.step(actions).copy())
    arrays = model.to_npz_dict()
    table = (model.A if kind == "A" else model.B)[index]
    arrays[f"p{kind}{index}"] = table * 2.0 + 0.5 * (table > 0)
    arrays["obs"] = np.stack(obs).astype(np.int16)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def run_worker(
    python: Path, impl: str, workload: Path, n: int, args: argparse.Namespace, *,
    refresh_every: int = 1,
) -> dict[str, Any]:
    cmd = [str(python), str(WORKER), impl, str(workload), str(n), "--seconds",
           str(args.seconds), "--repeats", str(args.repeats), "--refresh-every",
           str(refresh_every)]
    env = bench_peers.worker_env("1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                         timeout=3600)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    record: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", default=None, help="comma-separated Ns (1,1000,10000)")
    parser.add_argument("--seconds", type=float, default=None, help="per timed run (1.0)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (3)")
    parser.add_argument("--max-007", type=int, default=100,
                        help="pymdp 0.0.7.1 agents measured at most (its rate is per agent)")
    parser.add_argument("--max-104-bytes", type=int, default=1 << 30,
                        help="pymdp 1.0.4 is not run when N x its state bytes exceed this")
    parser.add_argument("--no-install", action="store_true", help="never create a peer venv")
    parser.add_argument("--per-agent-only", action="store_true",
                        help="no shared int8 rows: per-agent, learning off and the peers")
    parser.add_argument("--no-reversal", action="store_true", help="no reversal runs")
    parser.add_argument("--smoke", action="store_true", help="edge-agent only, tiny, for CI")
    args = parser.parse_args(argv)
    agents = [int(a) for a in (args.agents or ("1,20" if args.smoke else "1,1000,10000"))
              .split(",")]
    args.seconds = args.seconds or (0.05 if args.smoke else 1.0)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    peers: dict[str, Path] = {}
    if not args.smoke:
        for impl in (bench_peers.PYMDP_007, bench_peers.PYMDP_104):
            try:
                peers[impl] = bench_peers.ensure_venv(impl, install=not args.no_install)
            except (RuntimeError, subprocess.CalledProcessError) as err:
                print(json.dumps({"bench": "learning-peers", "impl": impl,
                                  "error": f"cannot install or start: {err}"}), flush=True)
    python = Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        for world, kind, index in WORLDS:
            workload = Path(tmp) / f"{world}.npz"
            write_workload(world, kind, index, max(agents), workload)
            bytes_104: int | None = None
            for n in agents:
                rows: list[tuple[str, dict[str, Any]]] = []
                for impl, every in () if args.per_agent_only else EDGE:
                    rows.append((impl, run_worker(python, "edge-agent int8", workload, n, args,
                                                  refresh_every=every)))
                if n <= PER_AGENT_MAX:
                    rows.append((PER_AGENT, run_worker(python, PER_AGENT, workload, n, args)))
                    rows.append((LEARNING_OFF, run_worker(python, LEARNING_OFF, workload, n,
                                                          args)))
                if bench_peers.PYMDP_007 in peers:
                    probe = min(n, args.max_007)
                    rec = run_worker(peers[bench_peers.PYMDP_007], bench_peers.PYMDP_007,
                                     workload, probe, args)
                    rec["extrapolated"] = probe < n
                    rows.append((bench_peers.PYMDP_007, rec))
                if bench_peers.PYMDP_104 in peers:
                    if bytes_104 is not None and bytes_104 * n > args.max_104_bytes:
                        rows.append((bench_peers.PYMDP_104, {"skipped": True,
                                                             "state_bytes_per_agent": bytes_104}))
                    else:
                        rec = run_worker(peers[bench_peers.PYMDP_104], bench_peers.PYMDP_104,
                                         workload, n, args)
                        bytes_104 = rec.get("state_bytes_per_agent", bytes_104)
                        rows.append((bench_peers.PYMDP_104, rec))
                rates = [r["steps_per_s"] for name, r in rows
                         if name.startswith("pymdp") and "steps_per_s" in r]
                best_peer = max(rates) if rates else None
                by_name = dict(rows)
                for name, rec in rows:
                    # n: the row's agents; measured_n: the agents the worker ran (fewer where
                    # pymdp 0.0.7.1's rate is extrapolated).
                    out = {"bench": "learning-peers", "world": world, "learned": f"{kind}{index}",
                           **rec, "n": n, "measured_n": rec.get("n", n), "impl": name}
                    if best_peer and "steps_per_s" in rec and name.startswith("edge"):
                        out["vs_best_peer"] = round(rec["steps_per_s"] / best_peer, 2)
                    if name == PER_AGENT and "steps_per_s" in rec:
                        for other, field in ((bench_peers.PYMDP_104, "vs_pymdp_104"),
                                             (LEARNING_OFF, "vs_learning_off")):
                            rate = by_name.get(other, {}).get("steps_per_s")
                            if rate:
                                out[field] = round(rec["steps_per_s"] / rate, 2)
                    print(json.dumps(out), flush=True)
    if args.no_reversal:
        return 0
    reversal = [sys.executable, str(REVERSAL), "--out", os.devnull]
    if args.smoke:
        reversal.append("--smoke")
    res = subprocess.run(reversal, capture_output=True, text=True, check=True, timeout=3600)
    for line in res.stdout.splitlines():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
