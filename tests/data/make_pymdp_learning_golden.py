"""Write ``tests/data/pymdp_learning_golden.npz``: pymdp 0.0.7.1's Dirichlet learning, recorded.

Run it with a Python that has ``inferactively-pymdp==0.0.7.1`` installed (never the project venv)::

    python3 -m venv .cache/pymdp-venv
    .cache/pymdp-venv/bin/pip install inferactively-pymdp==0.0.7.1 'numpy<2'
    .cache/pymdp-venv/bin/python tests/data/make_pymdp_learning_golden.py

Each scenario runs a real ``pymdp.agent.Agent`` with prior counts ``pA``/``pB``/``pD`` and
learning rates for ``T`` steps, in trials: at every step ``infer_states(obs)``, ``update_A(obs)``,
then (from the second step of a trial on) ``update_B(qs_prev)`` with the posterior before this
step's observation (pymdp pairs it with ``agent.action``, the action taken at the previous step),
then ``infer_policies()`` and ``sample_action()``. At the end of each trial ``update_D(qs)`` with
the trial's last posterior, then the next trial starts from ``D``: ``agent.reset()`` and
``agent.action = None`` (pymdp's ``reset`` keeps the last action, whose ``B`` would otherwise form
the first prior of the next trial; edge-agent starts a trial from ``D``). Observations are random,
independent of the actions.

Scenarios:

* ``learn_single``: 1 factor (S=5, U=3), 2 modalities (O=4, 3); ``A0`` has exact zeros where
  ``pA0`` has counts (the first update is masked by ``A0 > 0``, the next ones by ``pA0 > 0``);
  ``pA``, ``pB``, ``pD`` learned with rates 0.7, 0.5, 1.3; policy_len 1; 2 trials of 6 steps.
* ``learn_multi``: 2 factors (S=3, 4; U=2, 3), 3 modalities; modalities 0 and 2 and factor 1
  learned (pymdp's ``modalities_to_learn=[0, 2]``, ``factors_to_learn=[1]``, which selects both
  ``pB`` and ``pD``); policy_len 1; 2 trials of 5 steps. pymdp is given counts equal to the
  table for the tables it does not learn: it replaces every table of a kind with its counts'
  expectation at an update of that kind, learned or not (edge-agent leaves them as given).
* ``learn_novelty``: as ``learn_single`` with ``use_param_info_gain=True`` (the parameter
  information gain of ``pA`` and ``pB`` in the expected free energy); 1 trial of 8 steps.

Keys for ``{name}``: the model ``A{m}``, ``B{f}``, ``C{m}``, ``D{f}``; the prior counts under
pymdp's names ``pA{m}``, ``pB{f}``, ``pD{f}`` (only the learned ones); ``lr_pA``, ``lr_pB``,
``lr_pD``, ``use_param_info_gain`` (0-d); ``obs`` (T, M); ``trial_start`` (T,) bool; ``qs{f}``
(T, S_f), ``q_pi`` (T, P), ``action`` (T, F), ``margin`` (T,) (best minus second-best action
marginal, over ``MIN_ACTION_MARGIN`` so no implementation can disagree through rounding); the
final counts ``final_pA{m}``, ``final_pB{f}``, ``final_pD{f}``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import numpy as np
from make_pymdp_golden import dirichlet_columns, obj, random_obs
from pymdp.agent import Agent

PYMDP_VERSION = "0.0.7.1"
DEFAULT_OUT = Path(__file__).resolve().parent / "pymdp_learning_golden.npz"
MIN_ACTION_MARGIN = 1e-6


def model(
    rng: np.random.Generator, num_obs: list[int], num_states: list[int], num_controls: list[int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    A = [dirichlet_columns(rng, (o, *num_states), 1.0) for o in num_obs]
    B = [
        dirichlet_columns(rng, (s, s, u), 1.0)
        for s, u in zip(num_states, num_controls, strict=True)
    ]
    C = [rng.normal(0.0, 2.0, size=o) for o in num_obs]
    D = [rng.dirichlet(np.full(s, 2.0)) for s in num_states]
    return A, B, C, D


def run(  # noqa: PLR0917 - one scenario's whole description, positional as in main()
    name: str,
    seed: int,
    num_obs: list[int],
    num_states: list[int],
    num_controls: list[int],
    trials: list[int],
    learned_A: list[int],
    learned_factors: list[int],
    lr: tuple[float, float, float],
    novelty: bool,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    A, B, C, D = model(rng, num_obs, num_states, num_controls)
    # Counts: a scaled table plus a little everywhere the table is not 0...
    pA = [a * 4.0 + 0.25 * (a > 0) for a in A]
    pB = [b * 3.0 + 0.5 for b in B]
    pD = [d * 2.0 + 0.1 for d in D]
    # ... and in the first modality, table zeros where the counts are not (the mask's first step).
    A[0][0, 0] = 0.0
    A[0][:, 0] /= A[0][:, 0].sum(axis=0)
    A[0][0, 1] = 0.0
    A[0][:, 1] /= A[0][:, 1].sum(axis=0)
    # pymdp sets every table of a kind to its counts' expectation at an update of that kind,
    # learned or not; edge-agent leaves a table without counts as given. Counts equal to the
    # table for the unlearned ones make the two the same model (docs/learning.md).
    pA = [p if m in learned_A else A[m].copy() for m, p in enumerate(pA)]
    pB = [p if f in learned_factors else B[f].copy() for f, p in enumerate(pB)]
    pD = [p if f in learned_factors else D[f].copy() for f, p in enumerate(pD)]
    agent = Agent(
        A=obj(A), B=obj(B), C=obj(C), D=obj(D),
        pA=obj(pA), pB=obj(pB), pD=obj(pD),
        lr_pA=lr[0], lr_pB=lr[1], lr_pD=lr[2],
        modalities_to_learn=learned_A, factors_to_learn=learned_factors,
        use_param_info_gain=novelty,
    )
    T = sum(trials)
    obs = random_obs(rng, num_obs, T)
    starts = np.zeros(T, dtype=bool)
    starts[np.cumsum([0, *trials[:-1]])] = True
    qs_out: list[list[np.ndarray]] = [[] for _ in num_states]
    q_pi, actions, margins = [], [], []
    for t in range(T):
        if starts[t] and t > 0:
            agent.update_D(agent.qs)  # the finished trial's last posterior
            agent.reset()
            agent.action = None
        qs_prev = [q.copy() for q in agent.qs]
        qs = agent.infer_states([int(o) for o in obs[t]])
        agent.update_A([int(o) for o in obs[t]])
        if not starts[t]:
            agent.update_B(obj(qs_prev))
        pi, _ = agent.infer_policies()
        action = agent.sample_action()
        for f in range(len(num_states)):
            qs_out[f].append(np.array(qs[f], dtype=np.float64))
        q_pi.append(np.asarray(pi, dtype=np.float64).ravel())
        actions.append(np.asarray(action, dtype=np.int64))
        margins.append(action_margin(agent))
    agent.update_D(agent.qs)
    if min(margins) < MIN_ACTION_MARGIN:
        raise RuntimeError(f"{name}: an action margin {min(margins):.3g} is too small; new seed")
    out: dict[str, np.ndarray] = {
        "obs": obs, "trial_start": starts, "q_pi": np.stack(q_pi), "action": np.stack(actions),
        "margin": np.array(margins), "lr_pA": np.array(lr[0]), "lr_pB": np.array(lr[1]),
        "lr_pD": np.array(lr[2]), "use_param_info_gain": np.array(novelty),
    }
    for m in range(len(num_obs)):
        out[f"A{m}"], out[f"C{m}"] = A[m], C[m]
    for f in range(len(num_states)):
        out[f"B{f}"], out[f"D{f}"], out[f"qs{f}"] = B[f], D[f], np.stack(qs_out[f])
    for m in learned_A:
        out[f"pA{m}"], out[f"final_pA{m}"] = pA[m], np.asarray(agent.pA[m], dtype=np.float64)
    for f in learned_factors:
        out[f"pB{f}"], out[f"final_pB{f}"] = pB[f], np.asarray(agent.pB[f], dtype=np.float64)
        out[f"pD{f}"], out[f"final_pD{f}"] = pD[f], np.asarray(agent.pD[f], dtype=np.float64)
    print(f"{name}: T={T}, smallest action margin {min(margins):.3g}")
    return {f"{name}/{k}": v for k, v in out.items()}


def action_margin(agent: Agent) -> float:
    """Best minus second-best action marginal over the controllable factors."""
    margins = []
    for f in agent.control_fac_idx:
        marginal = np.zeros(agent.num_controls[f])
        for p, policy in enumerate(agent.policies):
            marginal[int(policy[0, f])] += float(agent.q_pi[p])
        top = np.sort(marginal)[::-1]
        margins.append(top[0] - top[1])
    return float(min(margins))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    version = importlib.metadata.version("inferactively-pymdp")
    if version != PYMDP_VERSION:
        raise SystemExit(f"needs inferactively-pymdp=={PYMDP_VERSION}, found {version}")
    arrays: dict[str, np.ndarray] = {"meta/pymdp_version": np.array(version)}
    arrays |= run("learn_single", 101, [4, 3], [5], [3], [6, 6], [0, 1], [0],
                  (0.7, 0.5, 1.3), novelty=False)
    arrays |= run("learn_multi", 202, [4, 3, 5], [3, 4], [2, 3], [5, 5], [0, 2], [1],
                  (1.0, 0.8, 0.6), novelty=False)
    arrays |= run("learn_novelty", 303, [4, 3], [5], [3], [8], [0, 1], [0],
                  (0.7, 0.5, 1.3), novelty=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
