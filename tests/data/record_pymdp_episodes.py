"""Record pymdp 0.0.7.1 agents in a world that is their model, for ``edge-agent replay``.

Measures how often edge-agent's float64 path and pymdp take different actions, and whether
those are ties. Run it with a Python that has ``inferactively-pymdp==0.0.7.1`` (never the
project venv), then replay the recording with the project::

    python3 -m venv .cache/pymdp-venv
    .cache/pymdp-venv/bin/pip install inferactively-pymdp==0.0.7.1
    .cache/pymdp-venv/bin/python tests/data/record_pymdp_episodes.py examples/grid10.npz rec.npz
    edge-agent replay examples/grid10.npz --recording rec.npz --out out.npz

Each of ``--agents`` episodes is a fresh ``pymdp.agent.Agent`` (default settings, ``policy_len``
from ``--policy-len``) for ``--steps`` steps: the hidden state starts from ``D`` and moves by
``B`` under pymdp's action, the observation is drawn from ``A`` (one factor, one modality).
The recording holds the episodes one after another: ``obs (n*T, 1)``, pymdp's ``actions (n*T,
1)``, ``trial_start`` (true at each episode's first step) and ``q_pi (n*T, P)``. Replay prints
at how many steps pymdp's action is optimal for edge-agent (ties count), how often edge-agent's
own argmax equals it, and how many steps had tied actions.
"""

from __future__ import annotations

import argparse
from importlib import metadata

import numpy as np
from pymdp import utils
from pymdp.agent import Agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".npz with A0, B0, C0, D0 (one factor, one modality)")
    parser.add_argument("out", help="the recording to write (.npz)")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--policy-len", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with np.load(args.model) as data:
        A, B, C, D = (np.asarray(data[k], dtype=np.float64) for k in ("A0", "B0", "C0", "D0"))
    rng = np.random.default_rng(args.seed)
    n, T = args.agents, args.steps
    obs = np.zeros((n * T, 1), dtype=np.int64)
    actions = np.zeros((n * T, 1), dtype=np.int64)
    q_pis = []
    for i in range(n):
        agent = Agent(A=utils.to_obj_array(A), B=utils.to_obj_array(B),
                      C=utils.to_obj_array(C), D=utils.to_obj_array(D),
                      policy_len=args.policy_len)
        state = rng.choice(D.shape[0], p=D)
        for t in range(T):
            row = i * T + t
            obs[row, 0] = rng.choice(A.shape[0], p=A[:, state])
            agent.infer_states([int(obs[row, 0])])
            q_pi, _ = agent.infer_policies()
            actions[row, 0] = int(agent.sample_action()[0])
            q_pis.append(np.asarray(q_pi, dtype=np.float64))
            state = rng.choice(D.shape[0], p=B[:, state, actions[row, 0]])
    trial_start = np.arange(n * T) % T == 0
    np.savez(args.out, obs=obs, actions=actions, trial_start=trial_start, q_pi=np.array(q_pis))
    print(f"{n} pymdp {metadata.version('inferactively-pymdp')} agents x {T} steps "
          f"(policy_len {args.policy_len}) -> {args.out}")


if __name__ == "__main__":
    main()
