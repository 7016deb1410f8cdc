"""Write ``tests/data/pymdp_golden.npz``: reference outputs of pymdp 0.0.7.1's numpy ``Agent``.

Run it with a Python that has ``inferactively-pymdp==0.0.7.1`` installed (never the project venv)::

    python3 -m venv .cache/pymdp-venv
    .cache/pymdp-venv/bin/pip install inferactively-pymdp==0.0.7.1
    .cache/pymdp-venv/bin/python tests/data/make_pymdp_golden.py

Every scenario runs a real ``pymdp.agent.Agent`` with its default settings (VANILLA fixed-point
inference with ``num_iter=10, dF_tol=0.001``; ``gamma=16``; utility and state information gain
on; no learning; deterministic action selection from the action marginals) for ``T`` steps of
``infer_states`` -> ``infer_policies`` -> ``sample_action``. The action returned by
``sample_action`` forms the next step's prior inside the agent (``B[f][:, :, a_f] @ qs_f``).

Scenarios (the name is the key prefix):

* ``single``: 1 factor (S=6, U=3), 2 modalities (O=5, 4); A and B with random Dirichlet(0.2)
  columns, C ~ N(0, 6^2), D ~ Dirichlet(2) (non-uniform); policy_len 1; T=10 observations drawn
  at random, independent of the actions. ``multi`` and ``uncontrolled`` are drawn the same way.
* ``single_l2``: the same model and observations, policy_len 2.
* ``multi``: 2 factors (S=3, 4; U=2, 3), 3 modalities (O=4, 3, 5), each A depends on both
  factors; policy_len 1; T=10 random observations.
* ``multi_l2``: the same model and observations, policy_len 2.
* ``uncontrolled``: 2 factors (S=4, 3; U=3, 1: the second factor has a single action), 2
  modalities (O=5, 3), a non-uniform policy prior E; policy_len 1; T=10 random observations.
* ``tmaze``: pymdp's ``TMazeEnv(reward_probs=[0.98, 0.02])`` as both generative process and model,
  C = +3 on reward and -3 on loss (pymdp's T-maze demo), D uniform (the ``Agent`` default),
  ``control_fac_idx=[0]``, policy_len 1, run closed loop against the environment for T=5 steps
  with a seeded ``np.random`` (the environment samples with the global numpy generator).

Keys, for each scenario ``{name}`` (T steps, M modalities, F factors, P policies, L policy_len):

* model: ``A{m}`` (O_m, S_0, ..., S_{F-1}); ``B{f}`` (S_f, S_f, U_f); ``C{m}`` (O_m,) the raw
  preferences handed to pymdp; ``D{f}`` (S_f,); ``E`` (P,) only where pymdp was given one.
* ``policy_len`` 0-d int; ``control_fac_idx`` (K,) int, the agent's controllable factors;
  ``policies`` (P, L, F) int in the agent's enumeration order.
* ``obs`` (T, M) int: the observation given to ``infer_states`` at each step.
* ``prior{f}`` (T, S_f): the empirical prior ``infer_states`` used (D at step 0).
* ``qs{f}`` (T, S_f): the posterior returned by ``infer_states``.
* ``q_pi`` (T, P) and ``G`` (T, P): the two arrays returned by ``infer_policies`` (G is the
  negative expected free energy, higher is better).
* ``action`` (T, F) int: the action returned by ``sample_action``.
* ``margin`` (T, F): best minus second-best normalised action marginal (``inf`` for a factor with
  one action); asserted to exceed ``MIN_ACTION_MARGIN`` so that no implementation can disagree
  with pymdp's ``np.argmax`` through rounding.
* ``fpi_iters`` (T,) int: fixed-point iterations ``run_vanilla_fpi`` ran (0 for one factor,
  where the posterior is computed in closed form).

Top-level ``meta/...`` keys record the pymdp version and the Agent settings read off a constructed
agent (``gamma``, ``alpha``, ``num_iter``, ``dF_tol``, ``use_utility``, ``use_states_info_gain``,
``action_selection``, ``sampling_mode``). The file holds plain arrays only and loads with
``np.load(path, allow_pickle=False)``.

Besides the action margin, the script checks two other places where float rounding could change
a discrete decision: no fixed-point ``dF`` lies within ``MIN_DF_GAP`` of ``dF_tol`` (which would
make the iteration count fragile), and no joint predictive state probability lies within a
relative ``MIN_THRESHOLD_GAP`` of ``exp(-16)``, the cut-off in ``spm_MDP_G``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymdp import control, utils
from pymdp.agent import Agent
from pymdp.envs import TMazeEnv
from pymdp.maths import (
    calc_free_energy,
    get_joint_likelihood,
    softmax,
    spm_cross,
    spm_dot,
    spm_log_obj_array,
    spm_log_single,
)

PYMDP_VERSION = "0.0.7.1"
DEFAULT_OUT = Path(__file__).resolve().parent / "pymdp_golden.npz"
MAX_BYTES = 2_000_000

#: ``(step, previous action or None) -> observation``: how a scenario feeds its agent.
ObsSource = Callable[[int, np.ndarray | None], list[int]]

#: Smallest allowed gap between the best and second-best action marginal.
MIN_ACTION_MARGIN = 1e-6
#: Smallest allowed |dF - dF_tol| for every dF that run_vanilla_fpi compares with dF_tol.
MIN_DF_GAP = 1e-7
#: Smallest allowed |qx - exp(-16)| / exp(-16) for the joint predictive states in spm_MDP_G.
MIN_THRESHOLD_GAP = 1e-6

#: The settings a default-constructed pymdp Agent must have for this golden data to mean anything.
EXPECTED_SETTINGS: dict[str, float | int | bool | str] = {
    "gamma": 16.0,
    "alpha": 16.0,
    "num_iter": 10,
    "dF_tol": 0.001,
    "use_utility": True,
    "use_states_info_gain": True,
    "action_selection": "deterministic",
    "sampling_mode": "marginal",
}

# Arbitrary seeds; with them every guard above holds with room to spare (the script prints
# the smallest margin, dF gap and cut-off gap of each scenario).
SEED_SINGLE = 11
SEED_MULTI = 22
SEED_UNCONTROLLED = 33
SEED_TMAZE = 4

# The random models are sparse on purpose: Dirichlet(0.2) columns in A and B and C ~ N(0, 6^2)
# put likelihoods, predictive states and softmax(C) entries where pymdp's epsilons (1e-16 in
# spm_log_single, the exp(-16) state cut-off in spm_MDP_G) change the outputs by far more than
# the test tolerances, so an implementation that drops or moves one of them fails the tests.
A_CONCENTRATION = 0.2
B_CONCENTRATION = 0.2
C_SCALE = 6.0
SPARSE = {
    "a_concentration": A_CONCENTRATION,
    "b_concentration": B_CONCENTRATION,
    "c_scale": C_SCALE,
}


@dataclass
class Scenario:
    """A model, how to drive it, and what pymdp produced."""

    name: str
    A: list[np.ndarray]
    B: list[np.ndarray]
    C: list[np.ndarray]
    D: list[np.ndarray]
    policy_len: int
    E: np.ndarray | None = None
    control_fac_idx: list[int] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def obj(arrays: list[np.ndarray]) -> np.ndarray:
    """A list of arrays as the numpy object array pymdp expects."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def dirichlet_columns(
    rng: np.random.Generator, shape: tuple[int, ...], concentration: float
) -> np.ndarray:
    """An array whose every column ``[:, j, k, ...]`` is a Dirichlet draw over the first axis."""
    n_cols = int(np.prod(shape[1:]))
    cols = rng.dirichlet(np.full(shape[0], concentration), size=n_cols)  # (n_cols, shape[0])
    return np.ascontiguousarray(cols.T.reshape(shape))


def random_model(
    rng: np.random.Generator,
    num_obs: list[int],
    num_states: list[int],
    num_controls: list[int],
    *,
    a_concentration: float,
    b_concentration: float,
    c_scale: float,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Random A and B with Dirichlet columns, C ~ N(0, c_scale**2), D ~ Dirichlet(2, ..., 2)."""
    A = [dirichlet_columns(rng, (o, *num_states), a_concentration) for o in num_obs]
    B = [
        dirichlet_columns(rng, (s, s, u), b_concentration)
        for s, u in zip(num_states, num_controls, strict=True)
    ]
    C = [rng.normal(0.0, c_scale, size=o) for o in num_obs]
    D = [rng.dirichlet(np.full(s, 2.0)) for s in num_states]
    return A, B, C, D


def random_obs(rng: np.random.Generator, num_obs: list[int], T: int) -> np.ndarray:
    """(T, M) observation indices drawn uniformly, independent of anything the agent does."""
    return np.stack([rng.integers(0, o, size=T) for o in num_obs], axis=1).astype(np.int64)


def make_agent(sc: Scenario) -> Agent:
    """A pymdp Agent on the scenario's model with default settings, which are then verified."""
    kwargs: dict[str, object] = {"policy_len": sc.policy_len}
    if sc.E is not None:
        kwargs["E"] = sc.E
    if sc.control_fac_idx is not None:
        kwargs["control_fac_idx"] = sc.control_fac_idx
    agent = Agent(A=obj(sc.A), B=obj(sc.B), C=obj(sc.C), D=obj(sc.D), **kwargs)
    settings = agent_settings(agent)
    if settings != EXPECTED_SETTINGS:
        raise RuntimeError(f"pymdp Agent defaults differ from the expected ones: {settings}")
    if agent.inference_algo != "VANILLA":
        raise RuntimeError(f"expected VANILLA inference, got {agent.inference_algo}")
    return agent


def agent_settings(agent: Agent) -> dict[str, float | int | bool | str]:
    return {
        "gamma": agent.gamma,
        "alpha": agent.alpha,
        "num_iter": agent.inference_params["num_iter"],
        "dF_tol": agent.inference_params["dF_tol"],
        "use_utility": agent.use_utility,
        "use_states_info_gain": agent.use_states_info_gain,
        "action_selection": agent.action_selection,
        "sampling_mode": agent.sampling_mode,
    }


def replay_fpi(
    A: np.ndarray, obs: list[int], prior: np.ndarray, num_iter: int, dF_tol: float
) -> tuple[np.ndarray, int, float]:
    """Re-run pymdp's ``run_vanilla_fpi`` step by step to see its convergence decisions.

    Returns ``(qs, iterations, gap)`` where ``gap`` is the smallest ``|dF - dF_tol|`` over every
    ``dF`` the loop compared with ``dF_tol`` (``inf`` if none). The caller checks that ``qs``
    is bit-identical to what the Agent returned, which proves this replay is faithful.
    """
    num_obs = [a.shape[0] for a in A]
    num_states = list(A[0].shape[1:])
    n_factors = len(num_states)
    obs_arr = utils.process_observation(tuple(obs), len(num_obs), num_obs)
    likelihood = spm_log_single(get_joint_likelihood(A, obs_arr, num_states))
    qs = utils.obj_array_uniform(num_states)
    log_prior = spm_log_obj_array(utils.to_obj_array(prior))
    if n_factors == 1:
        return utils.to_obj_array(softmax(spm_dot(likelihood, qs, [0]) + log_prior[0])), 0, np.inf

    prev_vfe = calc_free_energy(qs, log_prior, n_factors)
    dF = 1.0
    compared: list[float] = []
    iterations = 0
    while iterations < num_iter and dF >= dF_tol:
        qs_all = qs[0]
        for f in range(n_factors - 1):
            qs_all = qs_all[..., None] * qs[f + 1]
        LL_tensor = likelihood * qs_all
        for f, qs_f in enumerate(qs):
            qL = np.einsum(LL_tensor, list(range(n_factors)), [f]) / qs_f
            qs[f] = softmax(qL + log_prior[f])
        vfe = calc_free_energy(qs, log_prior, n_factors, likelihood)
        dF = float(np.abs(prev_vfe - vfe).item())
        prev_vfe = vfe
        iterations += 1
        if iterations < num_iter:
            compared.append(dF)
    gap = min((abs(d - dF_tol) for d in compared), default=np.inf)
    return qs, iterations, gap


def threshold_gap(qs: np.ndarray, B: np.ndarray, policies: list[np.ndarray]) -> float:
    """Smallest relative distance of any joint predictive state probability to exp(-16)."""
    cut = np.exp(-16)
    gap = np.inf
    for policy in policies:
        for qs_t in control.get_expected_states(qs, B, policy):
            qx = spm_cross(qs_t)
            gap = min(gap, float(np.min(np.abs(qx - cut)) / cut))
    return gap


def action_marginals(
    q_pi: np.ndarray, policies: list[np.ndarray], num_controls: list[int]
) -> list[np.ndarray]:
    """The normalised marginals pymdp's ``control.sample_action`` takes the argmax of."""
    marginals = [np.zeros(u) for u in num_controls]
    for pol_idx, policy in enumerate(policies):
        for f, a in enumerate(policy[0, :]):
            marginals[f][a] += q_pi[pol_idx]
    return [m / m.sum(axis=0) for m in marginals]


def fixed_obs(obs: np.ndarray) -> ObsSource:
    """Observations read from a (T, M) array, whatever the agent does."""
    return lambda t, _action: [int(o) for o in obs[t]]


def tmaze_obs(env: TMazeEnv) -> ObsSource:
    """Observations produced by the environment: ``reset()`` first, then ``step(action)``."""
    return lambda _t, action: env.reset() if action is None else env.step(action)


def run_agent(sc: Scenario, T: int, next_obs: ObsSource) -> None:
    """Step a fresh agent T times and fill ``sc.arrays``.

    ``next_obs(t, action)`` gives the observation for step ``t``; ``action`` is the one the agent
    took at step ``t - 1`` (``None`` at step 0).
    """
    agent = make_agent(sc)
    num_iter = agent.inference_params["num_iter"]
    dF_tol = agent.inference_params["dF_tol"]
    policies = agent.policies
    F, M, P = len(sc.B), len(sc.A), len(policies)

    obs_log = np.zeros((T, M), dtype=np.int64)
    prior_log = [np.zeros((T, b.shape[0])) for b in sc.B]
    qs_log = [np.zeros((T, b.shape[0])) for b in sc.B]
    q_pi_log = np.zeros((T, P))
    G_log = np.zeros((T, P))
    action_log = np.zeros((T, F), dtype=np.int64)
    margin_log = np.zeros((T, F))
    iters_log = np.zeros(T, dtype=np.int64)
    min_df_gap = np.inf
    min_cut_gap = np.inf

    action: np.ndarray | None = None
    for t in range(T):
        obs_t = [int(o) for o in next_obs(t, action)]
        obs_log[t] = obs_t

        # The prior infer_states is about to use (same expression as Agent.infer_states).
        if agent.action is None:
            prior = agent.D
        else:
            prior = control.get_expected_states(agent.qs, agent.B, agent.action.reshape(1, -1))[0]
        replay_qs, iters, df_gap = replay_fpi(agent.A, obs_t, prior, num_iter, dF_tol)

        qs = agent.infer_states(obs_t)
        q_pi, G = agent.infer_policies()
        action = agent.sample_action()

        for f in range(F):
            if not np.array_equal(replay_qs[f], qs[f]):
                raise RuntimeError(
                    f"{sc.name} step {t}: FPI replay differs from pymdp on factor {f}"
                )
            prior_log[f][t] = prior[f]
            qs_log[f][t] = qs[f]
        q_pi_log[t] = q_pi
        G_log[t] = G
        action_log[t] = action.astype(np.int64)
        if not np.array_equal(action, action.astype(np.int64)):
            raise RuntimeError(f"{sc.name} step {t}: non-integral action {action}")
        iters_log[t] = iters
        min_df_gap = min(min_df_gap, df_gap)
        min_cut_gap = min(min_cut_gap, threshold_gap(qs, agent.B, policies))

        for f, marginal in enumerate(action_marginals(q_pi, policies, agent.num_controls)):
            if int(np.argmax(marginal)) != action_log[t, f]:
                raise RuntimeError(f"{sc.name} step {t}: marginal argmax differs from pymdp action")
            top = np.sort(marginal)[::-1]
            margin_log[t, f] = top[0] - top[1] if top.size > 1 else np.inf

    if np.min(margin_log) <= MIN_ACTION_MARGIN:
        raise RuntimeError(f"{sc.name}: action margin {np.min(margin_log):.3g} is a near-tie")
    if min_df_gap <= MIN_DF_GAP:
        raise RuntimeError(f"{sc.name}: a dF lies {min_df_gap:.3g} from dF_tol")
    if min_cut_gap <= MIN_THRESHOLD_GAP:
        raise RuntimeError(f"{sc.name}: a predictive state lies {min_cut_gap:.3g} from exp(-16)")

    out = sc.arrays
    for m in range(M):
        out[f"A{m}"] = sc.A[m]
        out[f"C{m}"] = sc.C[m]
    for f in range(F):
        out[f"B{f}"] = sc.B[f]
        out[f"D{f}"] = sc.D[f]
        out[f"prior{f}"] = prior_log[f]
        out[f"qs{f}"] = qs_log[f]
    if sc.E is not None:
        out["E"] = sc.E
    out["policy_len"] = np.array(sc.policy_len, dtype=np.int64)
    out["control_fac_idx"] = np.array(agent.control_fac_idx, dtype=np.int64)
    out["policies"] = np.stack(policies).astype(np.int64)
    out["obs"] = obs_log
    out["q_pi"] = q_pi_log
    out["G"] = G_log
    out["action"] = action_log
    out["margin"] = margin_log
    out["fpi_iters"] = iters_log
    print(
        f"{sc.name:>13}: P={P:3d} min margin {np.min(margin_log):.3g}, "
        f"min |dF - tol| {min_df_gap:.3g}, min exp(-16) gap {min_cut_gap:.3g}, "
        f"FPI iterations {iters_log.tolist()}"
    )


def build_scenarios() -> list[Scenario]:
    """Build every scenario and run pymdp on it."""
    scenarios: list[Scenario] = []

    rng = np.random.default_rng(SEED_SINGLE)
    A, B, C, D = random_model(rng, [5, 4], [6], [3], **SPARSE)
    obs = random_obs(rng, [5, 4], 10)
    for name, L in (("single", 1), ("single_l2", 2)):
        sc = Scenario(name, A, B, C, D, policy_len=L)
        run_agent(sc, 10, fixed_obs(obs))
        scenarios.append(sc)

    rng = np.random.default_rng(SEED_MULTI)
    A, B, C, D = random_model(rng, [4, 3, 5], [3, 4], [2, 3], **SPARSE)
    obs = random_obs(rng, [4, 3, 5], 10)
    for name, L in (("multi", 1), ("multi_l2", 2)):
        sc = Scenario(name, A, B, C, D, policy_len=L)
        run_agent(sc, 10, fixed_obs(obs))
        scenarios.append(sc)

    rng = np.random.default_rng(SEED_UNCONTROLLED)
    A, B, C, D = random_model(rng, [5, 3], [4, 3], [3, 1], **SPARSE)
    E = rng.dirichlet(np.full(3, 2.0))  # one entry per policy: U_0 * U_1 = 3 at policy_len 1
    obs = random_obs(rng, [5, 3], 10)
    sc = Scenario("uncontrolled", A, B, C, D, policy_len=1, E=E)
    run_agent(sc, 10, fixed_obs(obs))
    scenarios.append(sc)

    np.random.seed(SEED_TMAZE)  # noqa: NPY002 - TMazeEnv samples with the global numpy generator
    env = TMazeEnv(reward_probs=[0.98, 0.02])
    A_gp = [np.array(a, dtype=np.float64) for a in env.get_likelihood_dist()]
    B_gp = [np.array(b, dtype=np.float64) for b in env.get_transition_dist()]
    C_tm = [np.zeros(a.shape[0]) for a in A_gp]
    C_tm[1][1] = 3.0  # reward
    C_tm[1][2] = -3.0  # loss
    D_tm = [np.full(b.shape[0], 1.0 / b.shape[0]) for b in B_gp]
    sc = Scenario("tmaze", A_gp, B_gp, C_tm, D_tm, policy_len=1, control_fac_idx=[0])
    run_agent(sc, 5, tmaze_obs(env))
    scenarios.append(sc)
    return scenarios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    args = parser.parse_args()

    version = importlib.metadata.version("inferactively-pymdp")
    if version != PYMDP_VERSION:
        raise SystemExit(f"need inferactively-pymdp=={PYMDP_VERSION}, found {version}")

    arrays: dict[str, np.ndarray] = {"meta/pymdp_version": np.array(version)}
    scenarios = build_scenarios()
    settings = agent_settings(make_agent(scenarios[0]))
    for key, value in settings.items():
        arrays[f"meta/{key}"] = np.array(value)
    for sc in scenarios:
        for key, value in sc.arrays.items():
            arrays[f"{sc.name}/{key}"] = value

    np.savez_compressed(args.out, **arrays)  # type: ignore[arg-type]
    with np.load(args.out, allow_pickle=False) as check:
        for key, value in arrays.items():
            if not np.array_equal(check[key], value):
                raise RuntimeError(f"{args.out}: {key} did not round-trip")
    size = args.out.stat().st_size
    if size >= MAX_BYTES:
        raise RuntimeError(f"{args.out} is {size} bytes, limit {MAX_BYTES}")
    print(f"wrote {args.out} ({len(arrays)} arrays, {size} bytes)")


if __name__ == "__main__":
    main()
