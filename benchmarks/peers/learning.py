"""One implementation's agents learning ``A`` or ``B`` while they act, timed.

Run by ``bench_learning_peers.py`` with the python of edge-agent's venv or of a pymdp peer venv
(``bench_peers.py`` makes those).

    python learning.py IMPL WORKLOAD.npz N [--seconds S] [--repeats R] [--refresh-every K]
        [--closed-loop] [--frozen] [--policy-len L] [--checks OUT.npz]

``WORKLOAD.npz``: the model (``A0``.., ``B0``.., ``C0``.., ``D0``..), the learned table's counts
(``pA{m}``, one modality ``m``, or ``pB{f}``, one factor ``f``), ``obs`` ``(T, N_max, M)`` and
the world's episode rule (:mod:`peers.world`). Open loop (the default): the agents receive
``obs``, tick after tick (the same inputs for all, whatever they do; no episode starts).
``--closed-loop``: the agents act in their own copy of the world (:class:`peers.world.
ClosedLoopWorld`, ``N`` agents, seed 0, the same numpy code in every implementation's process),
the world stepped by the actions they chose; agents whose episode starts forget their beliefs
first (prior back to ``D``; no ``pB`` update across the start). The world's step is inside the
timed loop for every implementation: the same work on every side. One tick, per agent: infer
states, learn ``pA[m]`` from the outcome and the posterior, or ``pB[f]`` from the posteriors
before and after the agent's last action (from the second tick of an episode on), learning rate
1, plan (one-step policies, utility and state information gain, gamma 16), choose an action
(deterministic, from the action marginals). ``--frozen``: nobody learns (the peers without
counts, edge-agent's groups without ``learning=``), the tick the rest of the same;
``--policy-len 2`` (frozen only): every side plans the policies of two steps (every pair of
actions, pymdp's ``construct_policies``: the same set everywhere), their expected free energy
summed over both steps, the action the first step's marginal:

* ``pymdp 0.0.7.1``: ``N`` ``Agent`` objects with ``pA`` and ``modalities_to_learn=[m]`` (or
  ``pB`` and ``factors_to_learn=[f]``), ``infer_states``, ``update_A`` (or ``update_B``),
  ``infer_policies``, ``sample_action`` one agent after the other (per-agent counts; the table
  follows them every tick);
* ``pymdp 1.0.4``: one ``Agent`` with ``batch_size=N``, ``learn_A=True`` (or ``learn_B=True``:
  the two-frame sequence of posteriors and the last action, ``-1`` at the first tick) (per-agent
  counts, batched), the tick one ``equinox.filter_jit`` call: ``infer_states``,
  ``infer_parameters``, ``infer_policies``, ``sample_action``, ``update_empirical_prior``.
  ``learn_A`` updates every modality's counts (1.0.4 has no choice of modalities): the tick puts
  back the tables and counts of the modalities (factors) not learned, so that they stay the
  model's, as on the other sides;
* ``edge-agent int8``: a :class:`~edge_agent.core.agents.AifAgentGroup` with ``learning=``, scope
  ``shared`` (one set of counts that all ``N`` agents teach), tables refreshed every
  ``--refresh-every`` ticks (1: every tick, as the peers);
* ``edge-agent float64 shared``: the same shared group in float64, stepped in the compiled pass
  where it can (the T-maze's ``pA``, refreshed every tick; ``stepping`` says which);
* ``edge-agent float64 per-agent``: a :class:`~edge_agent.core.agents.AifAgentGroup` learning
  per agent (each agent its own counts and tables, as the peers), stepped in the compiled pass
  where it can (the T-maze's ``pA``; ``stepping`` in the record says which);
* ``edge-agent float64 per-agent numpy``: the same group kept on numpy
  (``EDGE_AGENT_NATIVE_TICK=0``);
* ``edge-agent float64 learning off``: the same group without learning (the model as loaded,
  float64): what learning costs on its own is the ratio of the two;
* ``edge-agent int8 learning off``: the int8 group without learning, the daemon's everyday
  group (in the compiled tick or on numpy, whichever it measured faster when it was made:
  ``stepping`` says which).

After a first tick (JIT compilation for pymdp 1.0.4) and a warm-up tick, ``--repeats`` timed runs
of at least ``--seconds`` (whole ticks) each; prints one JSON line: ``steps_per_s`` (median
agent-steps per second of wall time), ``cpu_steps_per_s`` (the same over the process's CPU time,
all its threads: less sensitive to a shared machine's load than wall time), ``pinned_cpu`` (the
one CPU ``--cpu`` kept the process and all its threads on, or null; ``threads_cpus``: the CPUs
its threads may use, read at the end), ``first_tick_s``,
``loop`` (``open`` or ``closed``), in the closed loop what the agents achieved (``score``,
``mean_reward`` on the T-maze, ``reach_rate`` on grid10, and ``scores``, its sum at every tick:
:class:`peers.world.ClosedLoopWorld`), ``planning``, how the agents plan as read from the agents
themselves (``policy_len``, the number of policies and a digest of the policy set, order aside,
``gamma``, ``use_utility``, ``use_states_info_gain``, ``use_param_info_gain``: equal on every side
of a row), and ``state_bytes_per_agent``, the bytes of the arrays each agent's learning state holds
(pymdp 0.0.7.1: every array of one ``Agent``; pymdp 1.0.4: every array leaf of the batched agent
over ``N``; edge-agent, whatever the row's scope: what a group learning per agent reserves per
agent, its state with its own learned table (and joint-outcome table) plus its counts, as the
memory budget counts them; ``--frozen``: the group's own state per agent). ``--checks OUT.npz``:
the first tick's actions and policy posterior (every implementation sees the same first
observations) and the policies in the implementation's order, written there for the parent's check
(actions optimal under the other side's posterior, :func:`bench_peers.first_action_agreement`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for `peers`

from peers.world import ClosedLoopWorld, load_workload  # noqa: E402

GAMMA = 16.0
NUM_ITER = 10


def load(path: str) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files}
    out: dict[str, Any] = {"obs": arrays.pop("obs")}
    for kind in "ABCD":
        out[kind] = [arrays[f"{kind}{i}"] for i in range(len(arrays)) if f"{kind}{i}" in arrays]
    (key,) = [k for k in arrays if k.startswith(("pA", "pB"))]
    out["kind"], out["m"], out["p"] = key[1], int(key[2:]), arrays[key]
    return out


def _obj_array(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def planning(policies: np.ndarray, policy_len: int, gamma: Any, *, use_utility: Any,
             use_states_info_gain: Any, use_param_info_gain: Any) -> dict[str, Any]:
    """How an implementation's agents plan, as read from them: ``policies`` ``(P, L, F)`` in its
    order (the digest is of the set: the rows sorted), the rest as its agents hold them
    (``gamma`` the same for every agent: one number)."""
    rows = np.asarray(policies, dtype=np.int64).reshape(len(policies), -1)
    ordered = rows[np.lexsort(rows.T[::-1])]
    gammas = np.unique(np.asarray(gamma, dtype=np.float64))
    if gammas.size != 1:
        raise ValueError(f"the agents' gamma differ: {gammas}")
    return {
        "policy_len": int(policy_len), "policies": len(rows),
        "policy_set": hashlib.sha256(np.ascontiguousarray(ordered).tobytes()).hexdigest()[:12],
        "gamma": float(gammas[0]), "use_utility": bool(use_utility),
        "use_states_info_gain": bool(use_states_info_gain),
        "use_param_info_gain": bool(use_param_info_gain),
    }


def _array_bytes(value: Any, seen: set[int]) -> int:
    """Bytes of the numpy arrays reachable from ``value`` (object arrays, lists, dicts)."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return sum(_array_bytes(v, seen) for v in value.ravel())
        return int(value.nbytes)
    if isinstance(value, list | tuple):
        return sum(_array_bytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(_array_bytes(v, seen) for v in value.values())
    return 0


class Pymdp007:
    def __init__(self, w: dict[str, Any], n: int, frozen: bool = False,
                 policy_len: int = 1) -> None:
        from pymdp.agent import Agent

        m, learns_A = w["m"], w["kind"] == "A"
        tables = _obj_array([w["p"] if i == m else a.copy()
                             for i, a in enumerate(w["A" if learns_A else "B"])])
        learning: dict[str, Any] = {} if frozen else (
            {"pA": tables, "modalities_to_learn": [m], "lr_pA": 1.0} if learns_A
            else {"pB": tables, "factors_to_learn": [m], "lr_pB": 1.0})
        self.learns_A, self.frozen = learns_A, frozen
        self.actions = np.zeros((n, len(w["B"])), dtype=np.int64)
        self.agents = [
            Agent(
                A=_obj_array(w["A"]), B=_obj_array(w["B"]), C=_obj_array(w["C"]),
                D=_obj_array(w["D"]), **learning,
                policy_len=policy_len, gamma=GAMMA, use_utility=True,
                use_states_info_gain=True, use_param_info_gain=False,
                action_selection="deterministic",
                sampling_mode="marginal", inference_algo="VANILLA",
                inference_params={"num_iter": NUM_ITER, "dF": 1.0, "dF_tol": 0.001},
            )
            for _ in range(n)
        ]

    def act(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        rows = obs.tolist()
        for i, agent in enumerate(self.agents):
            if start[i]:
                agent.reset()  # beliefs uniform, time 0 ...
                agent.action = None  # ... no last action: the prior is D, no update_B
            qs_prev = agent.qs
            agent.infer_states(rows[i])
            if self.frozen:
                pass
            elif self.learns_A:
                agent.update_A(rows[i])
            elif agent.action is not None:
                agent.update_B(qs_prev)
            agent.infer_policies()
            self.actions[i] = agent.sample_action()
        return self.actions

    def bytes_per_agent(self) -> int:
        return _array_bytes(vars(self.agents[0]), set())

    def policies(self) -> np.ndarray:
        return np.stack([np.asarray(p) for p in self.agents[0].policies]).astype(np.int64)

    def planning(self) -> dict[str, Any]:
        a = self.agents[0]
        return planning(self.policies(), a.policy_len, [x.gamma for x in self.agents],
                        use_utility=a.use_utility, use_states_info_gain=a.use_states_info_gain,
                        use_param_info_gain=a.use_param_info_gain)

    def q_pi(self) -> np.ndarray:
        """``(n, P)``: every agent's posterior over policies at its last tick."""
        return np.stack([np.asarray(a.q_pi, dtype=np.float64) for a in self.agents])


class Pymdp104:
    def __init__(self, w: dict[str, Any], n: int, frozen: bool = False,
                 policy_len: int = 1) -> None:
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        from pymdp.agent import Agent

        m, learns_A = w["m"], w["kind"] == "A"
        self.n = n
        table = "A" if learns_A else "B"
        counts = [jnp.asarray(w["p"] if i == m else a) for i, a in enumerate(w[table])]
        self.agent = Agent(
            A=[jnp.asarray(a) for a in w["A"]], B=[jnp.asarray(b) for b in w["B"]],
            C=[jnp.asarray(c) for c in w["C"]], D=[jnp.asarray(d) for d in w["D"]],
            **({} if frozen else {f"p{table}": counts, f"learn_{table}": True}),
            policy_len=policy_len, gamma=GAMMA, use_utility=True,
            use_states_info_gain=True, use_param_info_gain=False,
            action_selection="deterministic", sampling_mode="marginal", inference_algo="fpi",
            num_iter=NUM_ITER, batch_size=n,
        )
        self.prior = list(self.agent.D)
        # B learning: the last posteriors and action (-1: none yet, pymdp skips the update).
        self.qs_prev = [jnp.broadcast_to(d, (n, d.shape[-1]))[:, None, :] for d in self.agent.D]
        self.action = -jnp.ones((n, len(w["B"])), dtype=jnp.int32)
        self._leaves = jax.tree_util.tree_leaves

        def step(agent: Any, prior: list[Any], obs: Any, start: Any,
                 memory: tuple[list[Any], Any]) -> tuple[Any, ...]:
            qs_prev, last = memory  # B learning: the last posteriors and action
            # Agents starting an episode: prior D, no last action (no B update).
            prior = [jnp.where(start[:, None], d, p) for d, p in zip(agent.D, prior, strict=True)]
            last = jnp.where(start[:, None], -1, last)
            observations = [obs[:, j] for j in range(obs.shape[1])]
            qs = agent.infer_states(observations, prior)
            if frozen:
                q_pi, _neg_efe = agent.infer_policies(qs)
                action = agent.sample_action(q_pi)
                return agent, agent.update_empirical_prior(action, qs), action, qs
            if learns_A:
                learned = agent.infer_parameters(qs, [o[:, None] for o in observations], None)
            else:
                frames = [jnp.concatenate([p, q], axis=1) for p, q in zip(qs_prev, qs, strict=True)]
                learned = agent.infer_parameters(qs, [o[:, None] for o in observations],
                                                 last[:, None, :], beliefs_B=frames)
            # 1.0.4 learns every modality (factor): keep the others the model's.
            tables = [t if i == m else t0 for i, (t, t0) in enumerate(
                zip(getattr(learned, table), getattr(agent, table), strict=True))]
            counts = [c if i == m else c0 for i, (c, c0) in enumerate(
                zip(getattr(learned, f"p{table}"), getattr(agent, f"p{table}"), strict=True))]
            agent = eqx.tree_at(lambda a: (getattr(a, table), getattr(a, f"p{table}")), learned,
                                (tables, counts))
            q_pi, _neg_efe = agent.infer_policies(qs)
            action = agent.sample_action(q_pi)
            return agent, agent.update_empirical_prior(action, qs), action, qs

        self._step = eqx.filter_jit(step)
        # The checks' policy posterior, outside the timed step: from the last tick's posteriors
        # (``qs_prev``, the step's) and the agent as it stepped (frozen: unchanged).
        self._q_pi = eqx.filter_jit(lambda agent, qs: agent.infer_policies(qs)[0])

    def act(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        self.agent, self.prior, self.action, self.qs_prev = self._step(
            self.agent, self.prior, obs.astype(np.int32), start, (self.qs_prev, self.action))
        return np.asarray(self.action).astype(np.int64)  # waits for the device

    def bytes_per_agent(self) -> int:
        leaves = self._leaves(self.agent)
        total = sum(int(getattr(x, "nbytes", 0)) for x in leaves)
        return total // self.n

    def policies(self) -> np.ndarray:
        return np.asarray(self.agent.policies.policy_arr, dtype=np.int64)

    def planning(self) -> dict[str, Any]:
        a = self.agent
        return planning(self.policies(), a.policy_len, np.asarray(a.gamma),
                        use_utility=a.use_utility, use_states_info_gain=a.use_states_info_gain,
                        use_param_info_gain=a.use_param_info_gain)

    def q_pi(self) -> np.ndarray:
        """``(n, P)``: every agent's posterior over policies at its last tick."""
        return np.asarray(self._q_pi(self.agent, self.qs_prev), dtype=np.float64)


class EdgeAgent:
    def __init__(self, w: dict[str, Any], n: int, refresh_every: int, scope: str | None,
                 precision: str = "float64", *, frozen: bool = False,
                 policy_len: int = 1) -> None:
        from edge_agent.aif.learning import LearningSettings, LearningSpec
        from edge_agent.aif.model import GenerativeModel
        from edge_agent.aif.settings import AifSettings
        from edge_agent.core.agents import AifAgentGroup

        model = GenerativeModel.from_arrays(w["A"], w["B"], w["C"], w["D"])
        settings = AifSettings(policy_len=policy_len, gamma=GAMMA, num_iter=NUM_ITER,
                               use_utility=True,
                               use_states_info_gain=True, action_selection="deterministic",
                               sampling_mode="marginal")

        def spec(scope: str) -> LearningSpec:
            return LearningSpec(**{f"p{w['kind']}": {w["m"]: w["p"]}},  # type: ignore[arg-type]
                                refresh_every=refresh_every,
                                settings=LearningSettings(lr_pA=1.0, lr_pB=1.0, scope=scope))  # type: ignore[arg-type]

        self.group = AifAgentGroup(model, n, settings=settings, precision=precision,
                                   learning=None if scope is None else spec(scope))
        # Per-agent learning as a group learning per agent holds it, per agent: the agent's
        # state with its own tables, and its counts (with their flags), whatever the row.
        if frozen:  # nobody learns: the group's own state per agent
            self.per_agent_bytes = self.group.per_agent_nbytes()
            return
        probe = AifAgentGroup(model, 2, settings=settings, learning=spec("per_agent"),
                              precision="float64")
        assert probe.learning is not None
        self.per_agent_bytes = probe.per_agent_nbytes() + sum(
            c.nbytes_per_agent for c in probe.learning.learner.counts)

    def act(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        # (a trial's start in the tick: the group's reset of those agents, done by its pass
        # where it has one)
        return self.group.step(obs, starts=start)

    def bytes_per_agent(self) -> int:
        return self.per_agent_bytes

    def policies(self) -> np.ndarray:
        return np.asarray(self.group.cm.tree.policies, dtype=np.int64)

    def planning(self) -> dict[str, Any]:
        s = self.group.settings
        # (edge-agent has no parameter information gain)
        return planning(self.policies(), s.policy_len, s.gamma, use_utility=s.use_utility,
                        use_states_info_gain=s.use_states_info_gain, use_param_info_gain=False)

    def q_pi(self) -> np.ndarray:
        """``(n, P)``: every agent's posterior over policies at its last tick."""
        return np.array(self.group.q_pi, dtype=np.float64)

    def stepping(self) -> str:
        """What steps the group's agents (``native``: the compiled pass or tick; ``numpy``,
        with why not)."""
        return str(self.group.describe()["stepping"])


#: edge-agent's rows by name: the learning scope (None: learning off).
EDGE_SCOPES: dict[str, str | None] = {
    "edge-agent int8": "shared",
    "edge-agent float64 shared": "shared",
    "edge-agent float64 per-agent": "per_agent",
    "edge-agent float64 per-agent numpy": "per_agent",
    "edge-agent float64 learning off": None,
    "edge-agent int8 learning off": None,
}
#: The int8 rows (the others are float64).
EDGE_INT8 = ("edge-agent int8", "edge-agent int8 learning off")
#: The rows whose group steps with numpy where it could step in the compiled pass.
EDGE_NUMPY = ("edge-agent float64 per-agent numpy",)


class Replay:
    """Open loop: the workload's observations ``(T, N, M)``, tick after tick, whatever the
    actions (no episode starts); :class:`peers.world.ClosedLoopWorld`'s two calls."""

    def __init__(self, obs: np.ndarray) -> None:
        self.obs = obs
        self.tick = 0
        self.start = np.zeros(obs.shape[1], dtype=np.bool_)

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        self.tick = 0
        return self.obs[0], self.start

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        del actions
        self.tick += 1
        return self.obs[self.tick % len(self.obs)], self.start


def threads_cpus() -> list[int] | None:
    """The CPUs any of this process's threads may run on (the union of their masks, read at the
    end of the run: JAX's threads included), or None where the OS does not say."""
    tasks = Path("/proc/self/task")
    if not hasattr(os, "sched_getaffinity") or not tasks.is_dir():
        return None
    cpus: set[int] = set()
    for task in tasks.iterdir():
        try:
            cpus |= os.sched_getaffinity(int(task.name))
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(cpus)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl")
    parser.add_argument("workload")
    parser.add_argument("n", type=int)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--refresh-every", type=int, default=1)
    parser.add_argument("--max-ticks", type=int, default=1_000_000)
    parser.add_argument("--closed-loop", action="store_true",
                        help="act in the world (peers.world), its step timed; else replay obs")
    parser.add_argument("--frozen", action="store_true", help="nobody learns")
    parser.add_argument("--policy-len", type=int, default=1,
                        help="steps of the policies planned (above 1: --frozen only)")
    parser.add_argument("--checks", default=None,
                        help="write the first tick's actions, q_pi and policies to this .npz")
    parser.add_argument("--cpu", type=int, default=None,
                        help="run on this one CPU (os.sched_setaffinity), threads and all")
    args = parser.parse_args()
    if args.cpu is not None:
        # Before anything starts a thread (JAX's runtime does when pymdp 1.0.4 is made; numpy's
        # BLAS has none with OPENBLAS_NUM_THREADS=1): the threads made later inherit the mask.
        os.sched_setaffinity(0, {args.cpu})
    if args.policy_len > 1 and not args.frozen:
        parser.error("--policy-len above 1 is measured frozen only (--frozen)")
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of the libraries must not break the JSON line
    w = load(args.workload)
    world: ClosedLoopWorld | Replay = (
        ClosedLoopWorld(load_workload(args.workload), args.n, seed=0) if args.closed_loop
        else Replay(w["obs"][:, : args.n]))
    t0 = time.perf_counter()
    if args.impl == "pymdp 0.0.7.1":
        impl: Any = Pymdp007(w, args.n, args.frozen, args.policy_len)
    elif args.impl == "pymdp 1.0.4":
        impl = Pymdp104(w, args.n, args.frozen, args.policy_len)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        if args.impl in EDGE_NUMPY:
            os.environ["EDGE_AGENT_NATIVE_TICK"] = "0"  # read when the group is made
        impl = EdgeAgent(w, args.n, args.refresh_every,
                         None if args.frozen else EDGE_SCOPES[args.impl],
                         "int8" if args.impl in EDGE_INT8 else "float64", frozen=args.frozen,
                         policy_len=args.policy_len)
    build_s = time.perf_counter() - t0
    obs, start = world.reset()
    t0 = time.perf_counter()
    actions = impl.act(obs, start)
    first = time.perf_counter() - t0
    if args.checks:  # untimed: the first tick's actions and posterior, the policies
        np.savez(args.checks, first_actions=np.array(actions, dtype=np.int64),
                 first_q_pi=impl.q_pi(), policies=impl.policies())
    obs, start = world.step(actions)
    obs, start = world.step(impl.act(obs, start))  # warm-up
    tick = 2
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        steps = 0
        c0, t0 = time.process_time(), time.perf_counter()
        while True:  # a tick: the agents act, the world (or the replay) steps
            obs, start = world.step(impl.act(obs, start))
            tick += 1
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= args.seconds or steps >= args.max_ticks:
                break
        rates.append(steps * args.n / elapsed)
        cpu = time.process_time() - c0
        cpu_rates.append(steps * args.n / cpu if cpu > 0 else None)
    achieved = ({"score": world.score, "scores": world.scores}
                if isinstance(world, ClosedLoopWorld) else {})
    out.write(json.dumps({
        "impl": args.impl, "n": args.n, "loop": "closed" if args.closed_loop else "open",
        "build_s": round(build_s, 3), "first_tick_s": round(first, 3),
        "steps_per_s": round(statistics.median(rates)), "ticks": tick,
        "cpu_steps_per_s": (round(statistics.median(cpu_rates)) if None not in cpu_rates
                            else None),
        **achieved,
        "state_bytes_per_agent": impl.bytes_per_agent(), "planning": impl.planning(),
        "pinned_cpu": args.cpu, "threads_cpus": threads_cpus(),
        **({"stepping": impl.stepping()} if isinstance(impl, EdgeAgent) else {}),
    }) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
