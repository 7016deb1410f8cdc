"""The joint small-block path (multi-factor models, blocks of a few agents) against the others.

A group of at most ``SMALL_BLOCK`` agents of a multi-factor model steps on the joint small-block
path (:mod:`edge_agent.aif.kernels.joint_small`). It must give what the general path
(:func:`~edge_agent.aif.kernels.infer_states`, :func:`~edge_agent.aif.kernels.evaluate_policies`,
...) and the state-major block path give: posteriors equal to rounding, actions optimal under the
other path's policy posterior (a near-tie may break either way), through resets mid-run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import agreement, kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.tmaze import tmaze_model

#: Posteriors, G and q_pi: float64 to rounding; float32 (int8 models) to float32 rounding, a
#: little wider because the fixed-point iteration amplifies it.
TOL: dict[Any, dict[str, float]] = {
    np.float64: {"rtol": 1e-9, "atol": 1e-11},
    np.float32: {"rtol": 1e-3, "atol": 1e-5},
}
TIE_TOL = {np.float64: 1e-9, np.float32: agreement.ROUNDING_TOL}
PRECISIONS = {"float64": np.float64, "int8": np.float32}


def grid2_model(height: int = 4, width: int = 5, noise: float = 0.1) -> GenerativeModel:
    """A two-factor grid: row and column factors (stay, -1, +1 each), a noisy cell outcome and
    a goal outcome in the far corner, which the agent prefers."""

    def moves(n: int) -> np.ndarray:
        B = np.zeros((n, n, 3))
        for s in range(n):
            B[s, s, 0] = 1.0
            B[max(s - 1, 0), s, 1] = 1.0
            B[min(s + 1, n - 1), s, 2] = 1.0
        return B

    S = height * width
    A0 = np.full((S, S), noise / (S - 1))
    np.fill_diagonal(A0, 1.0 - noise)
    A1 = np.zeros((2, height, width))
    A1[0] = 1.0
    A1[:, height - 1, width - 1] = [0.0, 1.0]
    D0 = np.full(height, 1.0 / height)
    D1 = np.zeros(width)
    D1[0] = 1.0
    return GenerativeModel.from_arrays(
        [A0.reshape(S, height, width), A1],
        [moves(height), moves(width)],
        [np.zeros(S), np.array([0.0, 3.0])],
        [D0, D1],
    )


MODELS: dict[str, Callable[[], GenerativeModel]] = {"tmaze": tmaze_model, "grid2": grid2_model}


def close(actual: np.ndarray, expected: np.ndarray, dtype: Any, msg: str) -> None:
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(
        actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=msg
    )


def sample_obs(model: GenerativeModel, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One outcome per modality of each agent's joint state ``states (N, F)``."""
    obs = np.zeros((states.shape[0], model.num_modalities), dtype=np.int64)
    for m, a in enumerate(model.A):
        p = a[(slice(None), *states.T)].T  # (N, O_m)
        cdf = np.cumsum(p, axis=1)
        u = rng.random((states.shape[0], 1)) * cdf[:, -1:]
        obs[:, m] = np.minimum((cdf < u).sum(axis=1), a.shape[0] - 1)
    return obs


def move(model: GenerativeModel, states: np.ndarray, actions: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    out = states.copy()
    for f, b in enumerate(model.B):
        p = b[:, states[:, f], actions[:, f]].T
        cdf = np.cumsum(p, axis=1)
        out[:, f] = np.minimum((cdf < rng.random((len(out), 1))).sum(axis=1), b.shape[0] - 1)
    return out


def start_states(model: GenerativeModel, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.choice(len(d), size=n, p=d) for d in model.D], axis=1)


def general_step(
    cm: kernels.CompiledModel, obs: np.ndarray, prior: list[np.ndarray], st: AifSettings
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The general path's tick: posterior, G, q_pi and deterministic actions."""
    qs = kernels.infer_states(cm, obs, prior, num_iter=st.num_iter, dF_tol=st.dF_tol)
    ev = kernels.evaluate_policies(
        cm, qs, use_utility=st.use_utility, use_info_gain=st.use_states_info_gain
    )
    q_pi = kernels.policy_posterior(ev.G, cm.lnE, st.gamma)
    actions = kernels.select_actions(
        cm, q_pi, mode="marginal", deterministic=True, alpha=st.alpha,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return qs, ev.G, q_pi, actions


@pytest.mark.parametrize("precision", ["float64", "int8"])
@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("n", [1, 10])
@pytest.mark.parametrize("name", ["tmaze", "grid2"])
def test_joint_path_equals_general_path(name: str, n: int, policy_len: int, precision: str) -> None:
    """Closed loop on the joint path, the general path alongside on the same observations and
    actions; some agents start a new trial mid-run."""
    dtype = PRECISIONS[precision]
    model = MODELS[name]()
    st = AifSettings(policy_len=policy_len)
    group = AifAgentGroup(model, n, settings=st, precision=precision)  # type: ignore[arg-type]
    cm = group.cm
    assert cm.joint is not None
    first = group.stepper.blocks(group.state)[0]
    assert first.blk.joint_small is not None  # the path under test runs
    rng = np.random.default_rng(7)
    states = start_states(model, n, rng)
    prior = [np.array(p) for p in group.prior]
    tie = TIE_TOL[dtype]
    onehot = cm.tree.first_action_onehot
    for step in range(12):
        if step in (4, 9):  # a new trial for some agents (all of them when n == 1)
            restart = np.arange(n) % 2 == 0
            group.reset(restart)
            states[restart] = start_states(model, int(restart.sum()), rng)
            for f, d in enumerate(cm.D):
                prior[f][restart] = d
        obs = sample_obs(model, states, rng)
        actions = group.step(obs).copy()
        qs, G, q_pi, expected = general_step(cm, obs, prior, st)
        msg = f"{name} n={n} L={policy_len} {precision} step {step}"
        for f in range(cm.num_factors):
            close(group.qs[f], qs[f], dtype, f"qs[{f}], {msg}")
        close(group.G, G, dtype, f"G, {msg}")
        close(group.q_pi, q_pi, dtype, f"q_pi, {msg}")
        assert agreement.actions_agree(q_pi, onehot, actions, tol=tie).all(), msg
        assert agreement.actions_agree(group.q_pi, onehot, expected, tol=tie).all(), msg
        # The next prior from the joint path's actions, on the general path's posterior.
        prior = kernels.next_prior(cm, qs, actions, None)
        for f in range(cm.num_factors):
            close(group.prior[f], prior[f], dtype, f"prior[{f}], {msg}")
        states = move(model, states, actions, rng)


@pytest.mark.parametrize("selection", [("stochastic", "marginal"), ("deterministic", "full")])
@pytest.mark.parametrize("precision", ["float64", "int8"])
@pytest.mark.parametrize("name", ["tmaze", "grid2"])
def test_joint_path_equals_block_path_with_history(
    name: str, precision: str, selection: tuple[str, str]
) -> None:
    """Two groups, one on the joint path and one with it switched off (the state-major block
    path): same beliefs, policies and history, with the other ways of selecting actions."""
    dtype = PRECISIONS[precision]
    model = MODELS[name]()
    n = 6
    st = AifSettings(policy_len=2, action_selection=selection[0], sampling_mode=selection[1])
    joint, block = (
        AifAgentGroup(model, n, settings=st, precision=precision, seed=3,  # type: ignore[arg-type]
                      history_capacity=16)
        for _ in range(2)
    )  # fmt: skip
    for rows in block.stepper.blocks(block.state):
        rows.blk.joint_small = None
    rng = np.random.default_rng(11)
    states = start_states(model, n, rng)
    for step in range(10):
        if step == 5:
            restart = np.array([True, False, False, True, False, True])
            for g in (joint, block):
                g.reset(restart)
            states[restart] = start_states(model, int(restart.sum()), rng)
        obs = sample_obs(model, states, rng)
        actions = joint.step(obs).copy()
        other = block.step(obs).copy()
        msg = f"{name} {precision} step {step}"
        for f in range(joint.cm.num_factors):
            close(joint.qs[f], block.qs[f], dtype, f"qs[{f}], {msg}")
        close(joint.q_pi, block.q_pi, dtype, f"q_pi, {msg}")
        if selection[0] == "deterministic":  # many exact ties ("stay, left" = "left, stay")
            onehot = joint.cm.tree.first_action_onehot
            mode: Any = selection[1]
            tie = TIE_TOL[dtype]
            assert agreement.actions_agree(block.q_pi, onehot, actions, tol=tie, mode=mode).all()
            assert agreement.actions_agree(joint.q_pi, onehot, other, tol=tie, mode=mode).all()
        else:  # the same uniform draws: only a draw on a rounding boundary may differ
            assert np.mean(np.all(actions == other, axis=1)) >= 0.8, msg
        block.set_action(actions)  # same trajectory whatever a near-tie drew
        states = move(model, states, actions, rng)
    assert joint.history is not None
    assert block.history is not None
    np.testing.assert_array_equal(joint.history.window("obs"), block.history.window("obs"))
    codes = [h.window("qs").astype(int) for h in (joint.history, block.history)]
    assert np.abs(codes[0] - codes[1]).max() <= 1  # a probability on a rounding boundary


@pytest.mark.parametrize(
    ("use_utility", "use_info_gain", "dF_tol"),
    [(True, False, 1e-3), (False, True, 1e-3), (False, False, 1e-3), (True, True, 2.0)],
)
def test_joint_path_settings(use_utility: bool, use_info_gain: bool, dF_tol: float) -> None:
    """Either term of G alone, neither, and a tolerance above the first change (no iteration:
    the posterior stays uniform, as pymdp's loop leaves it)."""
    model = grid2_model()
    st = AifSettings(
        policy_len=2, use_utility=use_utility, use_states_info_gain=use_info_gain, dF_tol=dF_tol
    )
    group = AifAgentGroup(model, 3, settings=st, precision="float64")
    rng = np.random.default_rng(2)
    states = start_states(model, 3, rng)
    prior = [np.array(p) for p in group.prior]
    for step in range(4):
        obs = sample_obs(model, states, rng)
        actions = group.step(obs).copy()
        qs, G, q_pi, _ = general_step(group.cm, obs, prior, st)
        for f in range(2):
            close(group.qs[f], qs[f], np.float64, f"qs[{f}] step {step}")
        close(group.G, G, np.float64, f"G step {step}")
        close(group.q_pi, q_pi, np.float64, f"q_pi step {step}")
        prior = kernels.next_prior(group.cm, qs, actions, None)
        states = move(model, states, actions, rng)
    if dF_tol > 1:
        np.testing.assert_allclose(group.qs[1], np.full((3, 5), 0.2))


def test_joint_tables_are_built_only_when_they_are_small() -> None:
    """Multi-factor models get the joint tables; a one-factor model and a large model do not,
    and their scratch is counted in the group's budget."""
    group = AifAgentGroup(tmaze_model(), 3)
    assert group.cm.joint is not None
    assert group.cm.nbytes >= group.cm.joint.nbytes > 0
    assert group.scratch_nbytes(3) >= group.stepper.workspace.nbytes  # type: ignore[union-attr]
    big = grid2_model(12, 12)
    assert AifAgentGroup(big, 1, settings=AifSettings(policy_len=2)).cm.joint is None
    one = GenerativeModel.from_arrays([np.eye(3)], [np.stack([np.eye(3)] * 2, axis=2)])
    assert AifAgentGroup(one, 1).cm.joint is None


def test_joint_path_stops_each_agent_where_pymdp_does() -> None:
    """Agents whose free energy settles at different iterations keep the posterior of their own
    last iteration (iterating on would move it by up to 1e-3 here): a block of mixed agents
    equals the general path, and each agent stepped alone."""
    model = grid2_model()  # the noisy cell outcome couples the factors: 4 to 10 iterations
    n = 8
    st = AifSettings(num_iter=10, dF_tol=1e-3)
    together = AifAgentGroup(model, n, settings=st, precision="float64")
    rng = np.random.default_rng(5)
    prior = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
    for f, p in enumerate(prior):
        together.prior[f][...] = p
    obs = sample_obs(model, start_states(model, n, rng), rng)
    together.step(obs)
    expected = kernels.infer_states(together.cm, obs, prior, num_iter=10, dF_tol=1e-3)
    longer = kernels.infer_states(together.cm, obs, prior, num_iter=10, dF_tol=0.0)
    assert np.abs(longer[0] - expected[0]).max() > 1e-4  # stopping early matters
    for f in range(2):
        close(together.qs[f], expected[f], np.float64, f"factor {f}")
    for i in range(n):
        alone = AifAgentGroup(model, 1, settings=st, precision="float64")
        for f, p in enumerate(prior):
            alone.prior[f][...] = p[i]
        alone.step(obs[i : i + 1])
        for f in range(2):
            close(together.qs[f][i], alone.qs[f][0], np.float64, f"agent {i}")
