"""One implementation's agents in the closed loop of :mod:`peers.world`, timed.

An *adapter* wraps ``n`` agents of one implementation behind one call,
``step(obs (n, M) int64, start (n,) bool) -> actions (n, F) int64``: agents whose ``start`` is
True first forget their beliefs (prior back to ``D``), then every agent infers its states from
``obs``, evaluates its policies and commits an action. ``q_pi()`` gives the ``(n, P)`` policy
posterior of the last step and ``policies`` the ``(P, L, F)`` policies in the implementation's
order. Three adapters, each imported only where its package is installed:

* :class:`EdgeAgentAdapter`: an ``edge_agent`` ``AifAgentGroup`` (``int8`` or ``float64``);
* :class:`Pymdp007Adapter`: ``n`` pymdp 0.0.7.1 ``Agent`` objects stepped in a Python loop
  (that version has no batch dimension);
* :class:`Pymdp104Adapter`: one pymdp 1.0.4 JAX ``Agent`` with ``batch_size=n``, the whole step
  (reset of the starting agents, ``infer_states``, ``infer_policies``, ``sample_action``,
  ``update_empirical_prior``) under one ``equinox.filter_jit``.

Settings everywhere (pymdp 0.0.7.1's ``Agent`` defaults): ``gamma`` 16, utility and state
information gain, no parameter information gain, deterministic action selection from the action
marginals, fixed-point inference with at most 10 iterations (``fpi`` in pymdp 1.0.4).

:class:`ClosedLoop` owns the world and an adapter: the first step and a few warm-up steps at
construction, then ``run`` steps on and reports agent-steps/s over the adapter's ``step`` calls
only (the world's step is not timed). The first ``record_steps`` steps' actions are kept.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from peers.world import ClosedLoopWorld, actions_digest

GAMMA = 16.0
NUM_ITER = 10


class Adapter(Protocol):
    policies: np.ndarray

    def step(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray: ...

    def q_pi(self) -> np.ndarray: ...


class EdgeAgentAdapter:
    """An edge-agent group of ``n`` agents (``precision`` int8 or float64), pymdp defaults."""

    def __init__(self, workload: dict[str, Any], n: int, policy_len: int, precision: str):
        from edge_agent.aif.model import GenerativeModel
        from edge_agent.aif.settings import AifSettings
        from edge_agent.core.agents import AifAgentGroup

        model = GenerativeModel.from_arrays(
            workload["A"], workload["B"], workload["C"], workload["D"]
        )
        settings = AifSettings(
            policy_len=policy_len, gamma=GAMMA, num_iter=NUM_ITER, use_utility=True,
            use_states_info_gain=True, action_selection="deterministic", sampling_mode="marginal",
        )
        self.group = AifAgentGroup(model, n, settings=settings, precision=precision)  # type: ignore[arg-type]
        self.policies = np.asarray(self.group.cm.tree.policies, dtype=np.int64)

    def step(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        if start.any():
            self.group.reset(start)
        return self.group.step(obs)

    def q_pi(self) -> np.ndarray:
        return np.array(self.group.q_pi, dtype=np.float64)


def _obj_array(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


class Pymdp007Adapter:
    """``n`` pymdp 0.0.7.1 agents, one Python object each, stepped one after the other."""

    def __init__(self, workload: dict[str, Any], n: int, policy_len: int):
        from pymdp.agent import Agent

        A, B = _obj_array(workload["A"]), _obj_array(workload["B"])
        C, D = _obj_array(workload["C"]), _obj_array(workload["D"])
        self.agents = [
            Agent(
                A=A, B=B, C=C, D=D, policy_len=policy_len, gamma=GAMMA,
                use_utility=True, use_states_info_gain=True, use_param_info_gain=False,
                action_selection="deterministic", sampling_mode="marginal",
                inference_algo="VANILLA", inference_params={"num_iter": NUM_ITER, "dF": 1.0,
                                                            "dF_tol": 0.001},
            )
            for _ in range(n)
        ]
        self.policies = np.stack([np.asarray(p) for p in self.agents[0].policies]).astype(np.int64)
        self.actions = np.zeros((n, len(workload["B"])), dtype=np.int64)

    def step(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        rows = obs.tolist()
        for i, agent in enumerate(self.agents):
            if start[i]:
                agent.reset()  # beliefs uniform, time 0 ...
                agent.action = None  # ... and no last action: the prior is D again
            agent.infer_states(rows[i])
            agent.infer_policies()
            self.actions[i] = agent.sample_action()
        return self.actions

    def q_pi(self) -> np.ndarray:
        return np.stack([np.asarray(a.q_pi, dtype=np.float64) for a in self.agents])


class Pymdp104Adapter:
    """One pymdp 1.0.4 JAX agent with ``batch_size=n``; the step is one jitted function."""

    def __init__(self, workload: dict[str, Any], n: int, policy_len: int):
        import equinox as eqx
        import jax.numpy as jnp
        from pymdp.agent import Agent

        self.agent = Agent(
            A=[jnp.asarray(a) for a in workload["A"]],
            B=[jnp.asarray(b) for b in workload["B"]],
            C=[jnp.asarray(c) for c in workload["C"]],
            D=[jnp.asarray(d) for d in workload["D"]],
            policy_len=policy_len, gamma=GAMMA, use_utility=True, use_states_info_gain=True,
            use_param_info_gain=False, action_selection="deterministic",
            sampling_mode="marginal", inference_algo="fpi", num_iter=NUM_ITER, batch_size=n,
        )
        self.policies = np.asarray(self.agent.policies.policy_arr, dtype=np.int64)
        self.prior = list(self.agent.D)
        self._q_pi: Any = None

        def step(agent: Any, prior: list[Any], obs: Any, start: Any) -> tuple[Any, Any, Any]:
            prior = [jnp.where(start[:, None], d, p) for d, p in zip(agent.D, prior, strict=True)]
            qs = agent.infer_states([obs[:, m] for m in range(obs.shape[1])], prior)
            q_pi, _neg_efe = agent.infer_policies(qs)
            action = agent.sample_action(q_pi)
            return action, agent.update_empirical_prior(action, qs), q_pi

        self._step = eqx.filter_jit(step)

    def step(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        action, self.prior, self._q_pi = self._step(
            self.agent, self.prior, obs.astype(np.int32), start
        )
        return np.asarray(action).astype(np.int64)  # waits for the device

    def q_pi(self) -> np.ndarray:
        return np.asarray(self._q_pi, dtype=np.float64)


def make_adapter(impl: str, workload: dict[str, Any], n: int, policy_len: int) -> Adapter:
    if impl == "edge-agent int8":
        return EdgeAgentAdapter(workload, n, policy_len, "int8")
    if impl == "edge-agent float64":
        return EdgeAgentAdapter(workload, n, policy_len, "float64")
    if impl == "pymdp 0.0.7.1":
        return Pymdp007Adapter(workload, n, policy_len)
    if impl == "pymdp 1.0.4":
        return Pymdp104Adapter(workload, n, policy_len)
    raise ValueError(f"unknown implementation {impl!r}")


class ClosedLoop:
    """The world and one implementation's agents, after the first step and the warm-up.

    ``agents < n`` (a probe): only the first ``agents`` agents act, once, on the world's first
    observation; :meth:`run` is then not available.
    """

    def __init__(
        self, impl: str, workload_path: str, n: int, policy_len: int, *, seed: int, warmup: int,
        record_steps: int, agents: int | None = None,
    ) -> None:
        from peers.world import load_workload

        workload = load_workload(workload_path)
        self.n = n
        self.agents = n if agents is None else agents
        self.world = ClosedLoopWorld(workload, n, seed)
        self.record = np.zeros((record_steps, self.agents, len(workload["B"])), dtype=np.int64)
        self.steps = 0
        t0 = time.perf_counter()
        self.adapter = make_adapter(impl, workload, self.agents, policy_len)
        self.build_s = time.perf_counter() - t0
        obs, start = self.world.reset()
        t0 = time.perf_counter()
        actions = self._act(obs[: self.agents], start[: self.agents])
        self.first_step_s = time.perf_counter() - t0
        self.first_actions = actions.copy()
        self.first_q_pi = self.adapter.q_pi()
        self.warmup_s: list[float] = []
        if self.agents < n:
            return
        self.obs, self.start = self.world.step(actions)
        for _ in range(warmup - 1):
            t0 = time.perf_counter()
            actions = self._act(self.obs, self.start)
            self.warmup_s.append(time.perf_counter() - t0)
            self.obs, self.start = self.world.step(actions)

    def _act(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        actions = self.adapter.step(obs, start)
        if self.steps < self.record.shape[0]:
            self.record[self.steps] = actions
        self.steps += 1
        return actions

    def run(self, min_steps: int, min_seconds: float, max_steps: int) -> dict[str, Any]:
        """Step on until ``min_steps`` and ``min_seconds`` (or ``max_steps``); the rates."""
        if self.agents < self.n:
            raise RuntimeError("a probe loop cannot run")
        wall = cpu = 0.0
        steps = 0
        while steps < max_steps and (steps < min_steps or wall < min_seconds):
            c0, t0 = time.process_time(), time.perf_counter()
            actions = self._act(self.obs, self.start)
            t1, c1 = time.perf_counter(), time.process_time()
            wall += t1 - t0
            cpu += c1 - c0
            steps += 1
            self.obs, self.start = self.world.step(actions)
        return {
            "steps": steps,
            "seconds": wall,
            "steps_per_s": self.n * steps / wall,
            "cpu_steps_per_s": self.n * steps / cpu if cpu > 0 else None,
        }

    def count_calls(self, ticks: int) -> dict[str, Any]:
        """Numpy calls and Python function calls per agents' step over the next ``2 * ticks``
        steps (each counted on every other step; the world's not counted; see
        :mod:`peers.opcount`): the mean totals and the 12 most frequent by name."""
        from peers.opcount import count_numpy_calls, count_python_calls

        total: dict[str, float] = {}
        python: dict[str, float] = {}
        actions: np.ndarray | None = None

        def tick() -> None:
            nonlocal actions
            actions = self.adapter.step(self.obs, self.start)

        for t in range(2 * ticks):  # alternately: numpy calls, then Python calls, of a tick
            counter, into = (count_numpy_calls, total) if t % 2 == 0 else (
                count_python_calls, python
            )
            _, by_name = counter(tick, repeats=1)
            for name, count in by_name.items():
                into[name] = into.get(name, 0.0) + count / ticks
            assert actions is not None
            self.steps += 1
            self.obs, self.start = self.world.step(actions)
        top = sorted(total.items(), key=lambda kv: -kv[1])[:12]
        top_py = sorted(python.items(), key=lambda kv: -kv[1])[:12]
        return {
            "numpy_calls_per_step": round(sum(total.values()), 1),
            "numpy_calls_top": {k: round(v, 1) for k, v in top},
            "python_calls_per_step": round(sum(python.values()), 1),
            "python_calls_top": {k: round(v, 1) for k, v in top_py},
        }

    def summary(self) -> dict[str, Any]:
        """Setup timings and the recorded actions' digest (over the steps actually recorded)."""
        recorded = min(self.steps, self.record.shape[0])
        steady = float(np.median(self.warmup_s)) if self.warmup_s else None
        return {
            "build_s": self.build_s,
            "first_step_s": self.first_step_s,
            "warmup_step_s": steady,
            "recorded_steps": recorded,
            "digest": actions_digest(self.record[:recorded]),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """What the parent checks: first-step actions and ``q_pi``, policies, recorded actions."""
        recorded = min(self.steps, self.record.shape[0])
        return {
            "first_actions": self.first_actions,
            "first_q_pi": self.first_q_pi,
            "policies": self.adapter.policies,
            "actions": self.record[:recorded],
        }
