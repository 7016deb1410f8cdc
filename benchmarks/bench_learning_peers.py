"""Learning against pymdp 0.0.7.1 and 1.0.4: agent-steps/s with learning on, bytes per agent
of per-agent learning, and ticks to re-learn after a reversal.

Same tasks for everyone (``benchmarks/peers/learning.py`` says exactly what a tick is): the
reversal T-maze learning ``pA`` of its reward modality, and grid10 learning ``pB`` of its
moves. Open loop (the default): every implementation's agents receive the same observations,
tick after tick (drawn once from the world under random actions, so the inputs do not depend on
who acts). ``--closed-loop``: each implementation's agents act in their own copy of the world,
stepped by the actions they chose (``benchmarks/peers/world.py``, one numpy world every process
imports, vectorised over the agents, seed 0: the reversal T-maze's trials of 3 steps, its
rewarded arm swapping every 50 trials, and grid10's respawn after the goal; edge-agent acts in
that world too, not in ``edge_agent.sim``'s); the agents whose episode starts go back to ``D``;
the world's step is inside the timed loop for every implementation (the same work on every
side: ``world_step_timed``), and every row says what its agents achieved (``mean_reward`` on
the T-maze: +1 a reward, -1 a loss, per agent-step; ``reach_rate`` on grid10: goals reached per
agent-step) over the first ``achieved_ticks`` ticks, those that both edge-agent's per-agent
group and pymdp 1.0.4 ran (fewer where the row itself ran fewer): equal up to noise where the
algorithm is the same (a tie broken differently parts two trajectories). Every row has ``loop``
(``open`` or ``closed``); the ratios compare rows of one loop. Each implementation runs in its
own process on one thread (``OPENBLAS_NUM_THREADS=1``, XLA without its thread pool) and on one
CPU, the same for all (``pinned_cpu``: the process and all its threads kept there), one after
the other per case: edge-agent in this venv, the peers in the venvs ``bench_peers.py`` makes
under ``.cache/peers`` (``--no-install``: never make one).

* edge-agent: ``AifAgentGroup`` int8, ``learning=`` of scope ``shared`` (every agent teaches one
  set of counts: the peers have no such scope, their counts are per agent), tables refreshed
  every tick (``refresh 1``, the peers' cadence) and every 100 ticks (``refresh 100``); and
  per-agent ``learning=`` (``float64 per-agent``: each agent its own counts and tables, as the
  peers, the group as a user gets it: on the T-maze (``pA``) and grid10 (``pB``) it steps in
  the compiled pass, its ``stepping`` says which; ``vs_pymdp_104`` is its like-for-like ratio,
  ``vs_learning_off`` its rate over the same float64 group's without learning, ``float64
  learning off``), up to N = 1,000; also ``float64 per-agent numpy``, the same group kept on
  numpy (``EDGE_AGENT_NATIVE_TICK=0``; the per-agent row's ``vs_numpy``); and (without
  ``--per-agent-only``) ``float64 shared refresh 1``, the shared
  group in float64 refreshed every tick as a user gets it (on the T-maze it steps in the
  compiled pass, ``stepping`` says which), with ``vs_pymdp_104`` (not like for like: one set of
  counts), ``vs_int8_refresh_1`` (its rate over the int8 shared group's refreshed every tick)
  and ``vs_learning_off``;
* pymdp 0.0.7.1: one ``Agent`` per agent, ``update_A`` each tick, in a Python loop. Its rate does
  not depend on ``N`` (it steps agents one by one), so above ``--max-007`` agents it is measured
  on ``--max-007`` agents and marked ``"extrapolated": true``;
* pymdp 1.0.4: one ``Agent`` with ``batch_size=N``, ``infer_parameters`` each tick, the tick
  jitted (the first tick, the compilation, is reported apart); it updates every modality's
  counts, and the tick puts the modalities not learned back (the T-maze's location and cue
  stay the model's, as on the other sides). Not run above ``--max-104-bytes``
  of per-agent state times ``N`` (grid10's per-agent tables at N = 10,000 would take GBs of a
  shared machine): marked ``"skipped"``.

Memory, ``state_bytes_per_agent``: what each agent's learning state holds in arrays (pymdp
0.0.7.1: every array of one ``Agent``; pymdp 1.0.4: every array leaf of the batched agent over
N; edge-agent, on every edge row: what a group learning per agent reserves per agent, its state
with its own learned table, and its float64 counts).

``--frozen``: the same worlds, loops and peers with **nobody learning**, the frozen rows (their
``learned`` is ``none``): edge-agent's int8 group without learning (``edge-agent int8 learning
off``, the daemon's everyday group, in the compiled tick or on numpy as it measured faster when
it was made: ``stepping`` says which) and the float64 one (``edge-agent float64 learning off``)
against pymdp 0.0.7.1 and 1.0.4 without counts; ``vs_pymdp_104`` and ``vs_best_peer`` on the
edge rows, and ``vs_pymdp_104_cpu``, the same over each process's CPU time (``cpu_steps_per_s``:
less sensitive to the load of a shared machine than wall time, which the rows of one case, measured
one after the other, do not share). The frozen rows take a third world, grid2f
(``edge_agent.sim.grid2f``: two factors, a cue cell and two goal cells, trials of 5 steps;
``mean_reward`` as on the T-maze), and ``--policy-len 1,2`` measures them at each policy length
(every row says its ``policy_len``): every side plans every pair of actions (pymdp's
``construct_policies``), the expected free energy summed over both steps. Every frozen row says how
its agents plan as read from them (``planning``: the policy set's size and digest, ``gamma``, the
information gains) and ``same_planning``, whether that is the same on every row of its case; and,
per pymdp row of the case, the share of its agents whose first action (every side sees the same
first observations) is optimal within 1e-3 under that peer's posterior over policies
(``first_action_optimal_under_1.0.4``, ``..._0.0.7.1``; :func:`bench_peers.
first_action_agreement`). What the agents achieved is counted over the ticks that the int8 group
and pymdp 1.0.4 both ran.

The reversal: ``examples/learning_reversal.py`` (frozen, learning, learning with forgetting),
whose ``ticks_to_relearn`` are printed as they are.

    python benchmarks/bench_learning_peers.py [--agents 1,1000,10000] [--seconds 1]
        [--repeats 3] [--no-install] [--per-agent-only] [--no-reversal] [--closed-loop]
        [--frozen] [--policy-len 1,2] [--worlds tmaze,grid10,grid2f] [--smoke]

``--per-agent-only``: the per-agent rows, learning off and the peers (no shared int8 rows);
``--no-reversal``: without the reversal runs.

``--smoke``: edge-agent only, N = 1 and 20, short runs, then the per-agent rows and the frozen
rows (policy length 1 and 2) in the closed loop at N = 20, and the reversal at its smoke size:
the code paths, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
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
from peers.world import achieved  # noqa: E402

WORKER = REPO / "benchmarks" / "peers" / "learning.py"
REVERSAL = REPO / "examples" / "learning_reversal.py"
#: (world, learned table: ``A`` or ``B``, its modality or factor) and the ticks of observations
#: every implementation cycles through.
WORLDS = (("tmaze", "A", 1), ("grid10", "B", 0))
#: The frozen rows' worlds: the learning worlds and grid2f (two factors, a cue and two goals;
#: nobody learns there, its ``pB0`` only completes the workload file).
FROZEN_WORLDS = (*WORLDS, ("grid2f", "B", 0))
TICKS = 20
EDGE = (("edge-agent int8 refresh 1", 1), ("edge-agent int8 refresh 100", 100))
PER_AGENT = "edge-agent float64 per-agent"
#: The same group kept on numpy (EDGE_AGENT_NATIVE_TICK=0) where the compiled pass steps it.
PER_AGENT_NUMPY = "edge-agent float64 per-agent numpy"
#: The shared group in float64 refreshed every tick (the compiled pass steps it where it can).
SHARED_FLOAT64 = "edge-agent float64 shared refresh 1"
LEARNING_OFF = "edge-agent float64 learning off"
#: The int8 group without learning (``--frozen``).
INT8_OFF = "edge-agent int8 learning off"
#: The ratios a row states: (the other row, the field its rate over the other's goes to).
RATIOS: dict[str, tuple[tuple[str, str], ...]] = {
    PER_AGENT: ((bench_peers.PYMDP_104, "vs_pymdp_104"), (LEARNING_OFF, "vs_learning_off"),
                (PER_AGENT_NUMPY, "vs_numpy")),
    PER_AGENT_NUMPY: ((bench_peers.PYMDP_104, "vs_pymdp_104"),
                      (LEARNING_OFF, "vs_learning_off")),
    SHARED_FLOAT64: ((bench_peers.PYMDP_104, "vs_pymdp_104"), (EDGE[0][0], "vs_int8_refresh_1"),
                     (LEARNING_OFF, "vs_learning_off")),
    INT8_OFF: ((bench_peers.PYMDP_104, "vs_pymdp_104"), (LEARNING_OFF, "vs_float64")),
}
#: The float64 group without learning against pymdp 1.0.4 in the frozen rows.
FROZEN_RATIOS = {LEARNING_OFF: ((bench_peers.PYMDP_104, "vs_pymdp_104"),)}
#: The per-agent group (float64, each agent's own tables) runs up to this many agents.
PER_AGENT_MAX = 1000


def write_workload(world: str, kind: str, index: int, n: int, path: Path) -> None:
    """The world's model and episode rule (:func:`bench_peers.workload_arrays`; the T-maze's
    reversal), the learned table's prior counts and ``TICKS`` of open-loop observations."""
    from edge_agent.sim import grid2f
    from edge_agent.sim.registry import make_env
    from edge_agent.sim.tmaze import LOSS, REWARD, REWARD_MODALITY
    from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv

    env = ReversalTMazeEnv(n, seed=0) if world == "tmaze" else make_env(world, n, seed=0)
    model = env.model
    rng = np.random.default_rng(0)
    obs = [env.reset().copy()]
    for _ in range(TICKS - 1):
        actions = np.stack([rng.integers(0, u, n) for u in model.num_controls], axis=1)
        obs.append(env.step(actions).copy())
    arrays = bench_peers.workload_arrays(env)
    if isinstance(env, ReversalTMazeEnv):
        arrays.update(reverse_every=np.array(env.reverse_every),
                      reward_modality=np.array(REWARD_MODALITY), reward_outcome=np.array(REWARD),
                      loss_outcome=np.array(LOSS))
    elif world == "grid2f":  # what the agents achieve: rewards less losses, never reversed
        arrays.update(reverse_every=np.array(0), reward_modality=np.array(1),
                      reward_outcome=np.array(grid2f.REWARD), loss_outcome=np.array(grid2f.LOSS))
    table = (model.A if kind == "A" else model.B)[index]
    arrays[f"p{kind}{index}"] = table * 2.0 + 0.5 * (table > 0)
    arrays["obs"] = np.stack(obs).astype(np.int16)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def pin_args() -> list[str]:
    """``--cpu`` for a worker: every implementation's process on the same one CPU, the last this
    process may use, all its threads with it (pymdp 1.0.4's JAX runtime otherwise ran about
    1.15 CPU-seconds a second of wall time under the one-thread flags: a second core's share);
    none where the OS cannot pin."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return ["--cpu", str(max(os.sched_getaffinity(0)))]


def run_worker(
    python: Path, impl: str, workload: Path, n: int, args: argparse.Namespace, *,
    refresh_every: int = 1, closed_loop: bool = False, frozen: bool = False,
    policy_len: int = 1,
) -> dict[str, Any]:
    """One worker's record; frozen, with ``checks`` (its first tick's actions, ``q_pi`` and
    policies, :func:`check_rows`' input)."""
    checks = workload.with_name(f"checks-{impl.replace(' ', '_')}-{n}.npz")
    cmd = [str(python), str(WORKER), impl, str(workload), str(n), "--seconds",
           str(args.seconds), "--repeats", str(args.repeats), *pin_args(), "--refresh-every",
           str(refresh_every), "--policy-len", str(policy_len),
           *(["--closed-loop"] if closed_loop else []),
           *(["--frozen", "--checks", str(checks)] if frozen else [])]
    env = bench_peers.worker_env("1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                         timeout=3600)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    record: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    if checks.exists():
        with np.load(checks) as data:
            record["checks"] = {key: data[key] for key in data.files}
        checks.unlink()
    return record


def check_rows(rows: list[tuple[str, dict[str, Any]]], num_controls: list[int],
               tol: float = 1e-3) -> dict[str, dict[str, Any]]:
    """Per row: whether its agents plan as every other row's of the case do (``same_planning``:
    the same policy set, policy length, gamma and information gains, as each side's agents hold
    them), and, against each pymdp row, the share of its agents whose first action is optimal
    within ``tol`` under that peer's posterior at the first tick (the same observations for
    all; ``first_action_optimal_under_1.0.4`` and ``_0.0.7.1``, over ``..._agents``)."""
    plans = [json.dumps(r["planning"], sort_keys=True) for _, r in rows if "planning" in r]
    peers = {name: r["checks"] for name, r in rows
             if name.startswith("pymdp") and "checks" in r}
    out: dict[str, dict[str, Any]] = {}
    for name, rec in rows:
        found: dict[str, Any] = {}
        if "planning" in rec:
            found["same_planning"] = len(set(plans)) == 1
        mine = rec.get("checks")
        for peer, theirs in peers.items() if mine is not None else ():
            if peer == name:
                continue
            key = "first_action_optimal_under_" + peer.split()[1]
            found[key] = round(bench_peers.first_action_agreement(
                mine["first_actions"], theirs["first_q_pi"], theirs["policies"],
                num_controls, tol), 4)
            found[key + "_agents"] = int(min(theirs["first_q_pi"].shape[0],
                                             mine["first_actions"].shape[0]))
        out[name] = found
    return out


def case_rows(
    workload: Path, n: int, peers: dict[str, Path], args: argparse.Namespace, *,
    closed_loop: bool, per_agent_only: bool, bytes_104: int | None, kind: str,
    frozen: bool = False, policy_len: int = 1,
) -> list[tuple[str, dict[str, Any]]]:
    """Every implementation's record of one world at ``n`` agents, in one loop (open or closed;
    ``bytes_104``: pymdp 1.0.4's state bytes per agent at a smaller ``n``, to skip it above
    ``--max-104-bytes``; ``frozen``: nobody learns; ``policy_len``: frozen only)."""
    python = Path(sys.executable)
    rows: list[tuple[str, dict[str, Any]]] = []

    def run(py: Path, impl: str, agents: int, **kw: Any) -> dict[str, Any]:
        return run_worker(py, impl, workload, agents, args, closed_loop=closed_loop,
                          frozen=frozen, policy_len=policy_len, **kw)

    if frozen:  # nobody learns: edge-agent's int8 and float64 groups, the peers
        rows.append((INT8_OFF, run(python, INT8_OFF, n)))
        rows.append((LEARNING_OFF, run(python, LEARNING_OFF, n)))
    for impl, every in () if per_agent_only or frozen else EDGE:
        rows.append((impl, run(python, "edge-agent int8", n, refresh_every=every)))
    if not per_agent_only and not frozen:
        rows.append((SHARED_FLOAT64, run(python, "edge-agent float64 shared", n)))
    if (n <= PER_AGENT_MAX or not per_agent_only) and not frozen:
        rows.append((LEARNING_OFF, run(python, LEARNING_OFF, n)))
    if n <= PER_AGENT_MAX and not frozen:
        rows.append((PER_AGENT, run(python, PER_AGENT, n)))
        # the compiled pass steps the group (the T-maze's pA, grid10's pB): numpy's rate beside
        rows.append((PER_AGENT_NUMPY, run(python, PER_AGENT_NUMPY, n)))
    if bench_peers.PYMDP_007 in peers:
        probe = min(n, args.max_007)
        rec = run(peers[bench_peers.PYMDP_007], bench_peers.PYMDP_007, probe)
        rec["extrapolated"] = probe < n
        rows.append((bench_peers.PYMDP_007, rec))
    if bench_peers.PYMDP_104 in peers:
        if bytes_104 is not None and bytes_104 * n > args.max_104_bytes:
            rows.append((bench_peers.PYMDP_104, {"skipped": True,
                                                 "state_bytes_per_agent": bytes_104}))
        else:
            rows.append((bench_peers.PYMDP_104, run(peers[bench_peers.PYMDP_104],
                                                    bench_peers.PYMDP_104, n)))
    return rows


def print_rows(world: str, learned: str, n: int, closed_loop: bool,
               rows: list[tuple[str, dict[str, Any]]], *, frozen: bool = False,
               policy_len: int = 1, num_controls: list[int] | None = None) -> None:
    """One JSON line per record, with the ratios against the peers of the same loop, the
    planning checks (:func:`check_rows`, given ``num_controls``) and, in the closed loop, what
    its agents achieved over the ticks that edge-agent's per-agent group (frozen: its int8
    group) and pymdp 1.0.4 both ran (``achieved_ticks``; fewer where the row ran fewer)."""
    edge = INT8_OFF if frozen else PER_AGENT
    scored = [len(r["scores"]) for name, r in rows
              if name in (edge, bench_peers.PYMDP_104) and "scores" in r]
    checks = check_rows(rows, num_controls) if num_controls is not None else {}
    common = min(scored) if scored else None
    rates = [r["steps_per_s"] for name, r in rows
             if name.startswith("pymdp") and "steps_per_s" in r]
    best_peer = max(rates) if rates else None
    by_name = dict(rows)
    for name, rec in rows:
        # n: the row's agents; measured_n: the agents the worker ran (fewer where pymdp
        # 0.0.7.1's rate is extrapolated).
        out = {"bench": "learning-peers", "world": world, "learned": learned, **rec, "n": n,
               "measured_n": rec.get("n", n), "impl": name, "policy_len": policy_len,
               "loop": "closed" if closed_loop else "open", **checks.get(name, {})}
        out.pop("checks", None)
        scores = out.pop("scores", None)
        if closed_loop:
            out["world_step_timed"] = True
        if scores is not None and out.get("score"):
            ticks = len(scores) if common is None else min(common, len(scores))
            out[out.pop("score")] = round(achieved(scores, out["measured_n"], ticks), 4)
            out["achieved_ticks"] = ticks
        if best_peer and "steps_per_s" in rec and name.startswith("edge"):
            out["vs_best_peer"] = round(rec["steps_per_s"] / best_peer, 2)
        ratios = (FROZEN_RATIOS if frozen else RATIOS).get(name, RATIOS.get(name, ()))
        for other, field in ratios if "steps_per_s" in rec else ():
            rate = by_name.get(other, {}).get("steps_per_s")
            if rate:
                out[field] = round(rec["steps_per_s"] / rate, 2)
            cpu = by_name.get(other, {}).get("cpu_steps_per_s")
            if frozen and cpu and rec.get("cpu_steps_per_s"):  # the same over CPU time
                out[field + "_cpu"] = round(rec["cpu_steps_per_s"] / cpu, 2)
        print(json.dumps(out), flush=True)


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
    parser.add_argument("--closed-loop", action="store_true",
                        help="each implementation acts in its own world (its step timed)")
    parser.add_argument("--frozen", action="store_true",
                        help="nobody learns: the frozen rows (int8 and float64 against the peers)")
    parser.add_argument("--worlds", default=None,
                        help="comma-separated worlds to run (tmaze,grid10; frozen: and grid2f)")
    parser.add_argument("--policy-len", default="1",
                        help="comma-separated policy lengths of the frozen rows (1,2)")
    parser.add_argument("--smoke", action="store_true", help="edge-agent only, tiny, for CI")
    args = parser.parse_args(argv)
    policy_lens = [int(p) for p in args.policy_len.split(",")]
    if policy_lens != [1] and not args.frozen:
        parser.error("--policy-len other than 1 is measured frozen only (--frozen)")
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
    # (closed loop, Ns, per-agent rows only, frozen, policy lengths): the smoke run adds the
    # closed loop's per-agent rows and its frozen rows (policy length 1 and 2) at its largest N,
    # for the code paths.
    passes = [(args.closed_loop, agents, args.per_agent_only, args.frozen, policy_lens)]
    if args.smoke and not args.closed_loop:
        passes.append((True, agents[-1:], True, False, [1]))
    if args.smoke and not args.frozen:
        passes.append((True, agents[-1:], True, True, [1, 2]))
    worlds = FROZEN_WORLDS if args.frozen and not args.smoke else WORLDS
    if args.worlds:
        named = args.worlds.split(",")
        unknown = set(named) - {w for w, _, _ in worlds}
        if unknown:
            known = [w for w, _, _ in worlds]
            parser.error(f"--worlds: no world {sorted(unknown)} here (of {known})")
        worlds = tuple(w for w in worlds if w[0] in named)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        for world, kind, index in worlds:
            workload = Path(tmp) / f"{world}.npz"
            write_workload(world, kind, index, max(agents), workload)
            with np.load(workload) as w:
                num_controls = [int(w[f"B{f}"].shape[2]) for f in range(
                    sum(1 for k in w.files if k[0] == "B" and k[1:].isdigit()))]
            for closed_loop, ns, per_agent_only, frozen, lens in passes:
                for policy_len in lens:
                    bytes_104: int | None = None
                    for n in ns:
                        rows = case_rows(workload, n, peers, args, closed_loop=closed_loop,
                                         per_agent_only=per_agent_only, bytes_104=bytes_104,
                                         kind=kind, frozen=frozen, policy_len=policy_len)
                        bytes_104 = dict(rows).get(bench_peers.PYMDP_104, {}).get(
                            "state_bytes_per_agent", bytes_104)
                        print_rows(world, "none" if frozen else f"{kind}{index}", n,
                                   closed_loop, rows, frozen=frozen, policy_len=policy_len,
                                   num_controls=num_controls)
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
